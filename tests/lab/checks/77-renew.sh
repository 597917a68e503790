# shellcheck shell=bash
# Check 14 (renew and rotate, issue 11): playbooks/strongswan.yml with a renewal window longer than the certificates'
# lifetime re-issues every node certificate now; the initiators re-authenticate their IKE_SAs one at a time,
# make-before-break. Continuous pings between pods on different nodes count what is lost meanwhile.

need_pods
serials() { local i; for ((i = 1; i <= N; i++)); do L "$i" 'openssl x509 -noout -serial -in /etc/swanctl/x509/k8s-ipsec.crt'; done; }
before=$(serials)
pingers=()
for ((i = 1; i <= N; i++)); do
  j=$((i % N + 1))
  L "$i" "ip netns exec pod-a$i ping -q -i 0.2 ${POD_IP[$j]} >/run/renew-ping.log 2>&1 & echo \$! >/run/renew-ping.pid"
  pingers+=("a$i->a$j")
done
t=$SECONDS
ok=y
playbook renew playbooks/strongswan.yml -e strongswan_cert_renew_days=100000 >/dev/null || ok=n
run_s=$((SECONDS - t))
sleep 5 # the last re-authentication settles under the pings too
lost=0 sent=0
for ((i = 1; i <= N; i++)); do
  # shellcheck disable=SC2016 # expanded on the node
  summary=$(L "$i" 'kill -INT $(cat /run/renew-ping.pid); sleep 1; grep "packets transmitted" /run/renew-ping.log') || summary=
  read -r tx rx < <(awk '{print $1, $4}' <<<"$summary")
  sent=$((sent + ${tx:-0}))
  lost=$((lost + ${tx:-0} - ${rx:-0}))
done
after=$(serials)
changed=$(diff <(echo "$before") <(echo "$after") | grep -c '^>' || true)
settle_sas "after renewal" || ok=n
# nodes whose re-authentication handler ran (the initiator ends: every node but the highest index)
reauth=$(sed -n '/Re-authenticate the tunnels this node starts/,/^$/p' "$LOGDIR/renew.log" | grep -c '^changed:' || true)
if [[ $ok = y && $changed = "$N" && $lost = 0 && $sent -gt 0 ]]; then r=PASS; else r=FAIL; fi
record "14 certificates renewed (all nodes)" "$r" \
  "$changed/$N new serials, $reauth initiator nodes re-authenticated, $lost of $sent pings lost (${pingers[*]}), playbook ${run_s} s"
