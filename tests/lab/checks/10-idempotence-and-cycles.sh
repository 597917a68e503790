# shellcheck shell=bash
# 10-idempotence-and-cycles: a second site.yml run changes nothing, then pod ADD/DEL cycles on n1.
# The cycles go through the CNI stand-in (the same plugins and conflist as containerd runs; the CRI cycles are in
# 20-pods), with host-local cut down to the 4 addresses after the gateway: 40 cycles hand out every address ten times,
# so a DEL that leaks would exhaust it.
# They run after the converge, not beside it: every task of the converge waits for its slowest node, and the cycles
# beside it made the converge about 150 s slower than the two one after the other (534 s against 380 + 50 s).

ts "$CHECK: a second site.yml run"
t=$SECONDS
playbook converge2 site.yml >/dev/null || true
recap=$(sed -n '/^PLAY RECAP/,$p' "$LOGDIR/converge2.log" | grep -E '^\S+ +: ok=' || true)
changed=$(awk '{for (k = 1; k <= NF; k++) if ($k ~ /^(changed|failed|unreachable)=/) printf "%s:%s ", $1, $k}' <<<"$recap")
if [[ -n $recap ]] && [[ $(grep -c ' ok=' <<<"$recap") -ge $N ]] && ! grep -qE '(changed|failed|unreachable)=[1-9]' <<<"$recap"; then
  record "second site.yml run changed=0" PASS "$(awk '{printf "%s %s, ", $1, $4}' <<<"$recap")in $((SECONDS - t)) s"
else
  record "second site.yml run changed=0" FAIL "${changed:-no PLAY RECAP} (converge2.log)"
fi

ts "$CHECK: $CYCLES CNI ADD/DEL cycles on n1"
t=$SECONDS
if L 1 "$CNI_STANDIN cycle $CYCLES --pool 4 && $CNI_STANDIN add probe7 && $CNI_STANDIN del probe7" \
  >"$LOGDIR/cycles.log" 2>&1; then
  record "$CYCLES CNI ADD/DEL cycles (n1)" PASS "$(head -n1 "$LOGDIR/cycles.log"), then ADD got $(sed -n 2p "$LOGDIR/cycles.log"): pool not exhausted, $((SECONDS - t)) s"
else
  record "$CYCLES CNI ADD/DEL cycles (n1)" FAIL "$(tail -n 2 "$LOGDIR/cycles.log" | tr '\n' ' ') after $((SECONDS - t)) s"
fi
