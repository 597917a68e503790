# shellcheck shell=bash
# 80-reboot: n2 reboots; its bridge, rules, tunnels and units come back as the plan says, then the SAs and the pods,
# and a pod ADD works after the reboot (host-local's leases were under /run).

need_pods
t=$SECONDS
reboot_node 2 || true # units_ok and the SAs below tell a node that did not come back
t_ssh=$((SECONDS - t))
until unit_state 2 || ((SECONDS - t > 480)); do sleep 2; done
t_units=$((SECONDS - t))
units_ok=$(unit_state 2 && echo y || echo n)
pods_left=$(L 2 'ip netns list | grep -c "^pod-" || true')
r=PASS
[[ $units_ok = y ]] || r=FAIL
settle_sas "after reboot (n2)" || r=FAIL
t_sas=$((SECONDS - t))
if pod_up 2; then add_ok=y; else add_ok=n; fi
reach "after reboot (n2)" 60 || r=FAIL
t_reach=$((SECONDS - t))
record "reboot n2" "$r" "ssh ${t_ssh}s, cni0+FORWARD+vti ${t_units}s (ok: $units_ok), SAs ${t_sas}s, pods reachable ${t_reach}s; pods left after reboot: $pods_left"
if [[ $add_ok = y ]]; then
  record "pod ADD after reboot (n2)" PASS "pod a2 re-added: ${POD_IP[2]} (host-local dataDir under /run)"
else
  record "pod ADD after reboot (n2)" FAIL "CNI ADD failed after reboot"
fi
