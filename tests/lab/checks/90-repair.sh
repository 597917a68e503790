# shellcheck shell=bash
# 90-repair: on n3, delete the bridge, the FORWARD chain and the nftables table; re-running the cni_bridge and
# forward_rules roles (site.yml --limit n3 --tags cni_bridge,forward_rules) repairs them, then a new pod, the SAs
# and reachability are back.

need_pods
# The guard would repair both within seconds: this check proves that re-running the roles does.
L 3 "systemctl stop k8s-ipsec-guard; ip link del '$BRIDGE'
  iptables -w -D FORWARD -m comment --comment k8s-ipsec -j K8S-IPSEC-FORWARD; iptables -w -F K8S-IPSEC-FORWARD
  iptables -w -X K8S-IPSEC-FORWARD; nft delete table inet k8s-ipsec" || true
broken=$(L 3 "ip link show '$BRIDGE' >/dev/null 2>&1 && echo $BRIDGE-still-there
  iptables -w -S K8S-IPSEC-FORWARD >/dev/null 2>&1 && echo chain-still-there
  nft list table inet k8s-ipsec >/dev/null 2>&1 && echo table-still-there; true")
t=$SECONDS
ok=y
playbook repair site.yml --limit n3 --tags cni_bridge,forward_rules || ok=n
L 3 "systemctl start k8s-ipsec-guard; $RUNTIME pod-down a3" >/dev/null 2>&1 || true
pod_up 3 || ok=n
recover "after repair (n3)" || ok=n
if [[ $ok = y && -z $broken ]] && unit_state 3; then
  record "repair n3 (cni0 + FORWARD)" PASS "site.yml --tags, pods, SAs and reach back in $((SECONDS - t)) s"
else
  record "repair n3 (cni0 + FORWARD)" FAIL "site.yml --tags ok: $ok; breakage: ${broken:-done}; units: $(unit_state 3 && echo ok || echo missing)"
fi
