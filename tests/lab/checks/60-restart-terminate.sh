# shellcheck shell=bash
# Check 5: after a strongSwan restart (n3) and after terminating one IKE_SA (n1's to n2), the SAs and every pod
# come back by themselves.

need_pods
t=$SECONDS
L 3 'systemctl restart strongswan' || true
if recover "after restart (n3)"; then r=PASS; else r=FAIL; fi
record "5 restart strongswan (n3)" "$r" "SAs and pods back in $((SECONDS - t)) s"

conn=$(plan_conn 1 2)
t=$SECONDS
L 1 "swanctl --terminate --ike '$conn' --timeout 10" >/dev/null 2>&1 || true
if recover "after terminate (n1)"; then r=PASS; else r=FAIL; fi
record "5 terminate --ike $conn (n1)" "$r" "SAs and pods back in $((SECONDS - t)) s"
