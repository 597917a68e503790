# shellcheck shell=bash
# Check 10: a second site.yml run changes nothing; then check 7 (part 1): pod ADD/DEL cycles on n1.
# The cycles go through the CNI stand-in (the same plugins and conflist as containerd runs; the CRI cycles are in check
# 20). They take minutes on the emulated CPU, so they run in the background, niced, while the later checks run (they
# only add and remove veths on the bridge and leases under /run, which no check counts); cycles_record, after the last
# check, waits for them and records the result.

t=$SECONDS
playbook converge2 site.yml >/dev/null || true
recap=$(sed -n '/^PLAY RECAP/,$p' "$LOGDIR/converge2.log" | grep -E '^\S+ +: ok=' || true)
changed=$(awk '{for (k = 1; k <= NF; k++) if ($k ~ /^(changed|failed|unreachable)=/) printf "%s:%s ", $1, $k}' <<<"$recap")
if [[ -n $recap ]] && [[ $(grep -c ' ok=' <<<"$recap") -ge $N ]] && ! grep -qE '(changed|failed|unreachable)=[1-9]' <<<"$recap"; then
  record "10 second run changed=0" PASS "$(awk '{printf "%s %s, ", $1, $4}' <<<"$recap")in $((SECONDS - t)) s"
else
  record "10 second run changed=0" FAIL "${changed:-no PLAY RECAP} (converge2.log)"
fi

ts "check 7: $CYCLES CNI ADD/DEL cycles on n1 (background, recorded after the last check)"
T7=$SECONDS
L 1 "nice -n 19 $CNI_STANDIN cycle $CYCLES && $CNI_STANDIN add probe7 && $CNI_STANDIN del probe7" \
  >"$LOGDIR/cycles.log" 2>&1 &
CYC_PID=$!

cycles_record() {
  if wait "$CYC_PID"; then
    record "7 $CYCLES ADD/DEL cycles (n1)" PASS "$(head -n1 "$LOGDIR/cycles.log"), then ADD got $(sed -n 2p "$LOGDIR/cycles.log"): pool not exhausted"
  else
    record "7 $CYCLES ADD/DEL cycles (n1)" FAIL "$(tail -n 2 "$LOGDIR/cycles.log" | tr '\n' ' ') after $((SECONDS - T7)) s"
  fi
  CYC_PID=
}
