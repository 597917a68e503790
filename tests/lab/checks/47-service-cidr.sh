# shellcheck shell=bash
# 47-service-cidr: a ClusterIP is for the cluster, not for the underlay. On n1 a ClusterIP (inside the plan's service
# CIDR) is written as kube-proxy writes it: a service chain jumped to first from nat PREROUTING and OUTPUT, the
# masquerade mark for sources outside the cluster CIDR, DNAT to pod a2 (on n2), MASQUERADE of marked packets, and
# kube-proxy's FORWARD accepts. The outsider (a host on the underlay, not in the inventory) routes the service CIDR
# via n1 and asks the ClusterIP: it gets no answer and nothing arrives in pod a2 (a capture inside a2 counts). Pod
# a1 and n1's host still reach the service: a2 answers them (with a1's own address, and n1's gateway address).

need_pods
"$LABSH" outsider up
C47_OUT_IP=$("$LABSH" outsider exec ip -4 -o addr show dev eth0 | awk '{ sub(/\/.*/, "", $4); print $4 }')
C47_SVC=$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_network(sys.argv[1])[47])' "$(plan_get service_cidr)")
c47_ok=y

# kube-proxy's chains (iptables mode), one service: prepended jumps, mark for masquerade, DNAT, forward accepts
L 1 "SVC=$C47_SVC EP=${POD_IP[2]}:8080 CLUSTER=$(plan_cluster_cidr) bash -s" <<'EOS' || c47_ok=n
set -e
for c in LAB47-SERVICES LAB47-SVC LAB47-MARK-MASQ LAB47-POSTROUTING; do iptables -w -t nat -N "$c"; done
iptables -w -t nat -A LAB47-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
iptables -w -t nat -A LAB47-SERVICES -d "$SVC/32" -p tcp --dport 80 -j LAB47-SVC
iptables -w -t nat -A LAB47-SVC ! -s "$CLUSTER" -d "$SVC/32" -p tcp --dport 80 -j LAB47-MARK-MASQ
iptables -w -t nat -A LAB47-SVC -p tcp -j DNAT --to-destination "$EP"
iptables -w -t nat -I PREROUTING 1 -j LAB47-SERVICES
iptables -w -t nat -I OUTPUT 1 -j LAB47-SERVICES
iptables -w -t nat -A LAB47-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
iptables -w -t nat -A LAB47-POSTROUTING -j MARK --set-xmark 0x4000/0x0
iptables -w -t nat -A LAB47-POSTROUTING -j MASQUERADE --random-fully
iptables -w -t nat -I POSTROUTING 1 -j LAB47-POSTROUTING
iptables -w -N LAB47-FORWARD
iptables -w -A LAB47-FORWARD -m conntrack --ctstate INVALID -j DROP
iptables -w -A LAB47-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
iptables -w -A LAB47-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
iptables -w -I FORWARD 1 -j LAB47-FORWARD
EOS

# ---- the outsider: the service CIDR routed via n1, TCP to the ClusterIP; a capture in a2 counts what arrives
"$LABSH" outsider exec ip route replace "$(plan_get service_cidr)" via "$(plan_address 1)"
ns_capture_start 2 pod-a2 c47 'tcp dst port 8080'
c47_out=$("$LABSH" outsider exec curl -s -m 5 "http://$C47_SVC/" 2>/dev/null) || c47_out="no answer"
"$LABSH" outsider exec curl -s -m 5 "http://$C47_SVC/" >/dev/null 2>&1 || true # a second connection, a new SYN
ns_capture_stop 2 c47
c47_in=$(ns_capture_count 2 c47 'tcp dst port 8080')
"$LABSH" outsider exec ip route del "$(plan_get service_cidr)" 2>/dev/null || true
[[ $c47_out = "no answer" && $c47_in = 0 ]] || c47_ok=n

# ---- from pod a1 (PREROUTING on cni0) and from n1's host (OUTPUT); a host connects only with a route to the
# ClusterIP: a real node has its default route, the lab's get one (to the outsider) for this part
c47_pod=$(L 1 "ip netns exec pod-a1 curl -s -m 10 http://$C47_SVC/" 2>/dev/null) || c47_pod="no answer"
c47_route=$(L 1 'ip -4 route show default' 2>/dev/null) || true
[[ -n $c47_route ]] || L 1 "ip route add default via $C47_OUT_IP" || true
c47_host=$(L 1 "curl -s -m 10 http://$C47_SVC/" 2>/dev/null) || c47_host="no answer"
[[ -n $c47_route ]] || L 1 "ip route del default via $C47_OUT_IP" || true
[[ $c47_pod = "pod=a2 client=${POD_IP[1]}" && $c47_host = "pod=a2 client=$(plan_gateway 1)" ]] || c47_ok=n

L 1 'bash -s' <<'EOS' || c47_ok=n
iptables -w -t nat -D PREROUTING -j LAB47-SERVICES
iptables -w -t nat -D OUTPUT -j LAB47-SERVICES
iptables -w -t nat -D POSTROUTING -j LAB47-POSTROUTING
iptables -w -D FORWARD -j LAB47-FORWARD
for c in LAB47-SERVICES LAB47-SVC LAB47-MARK-MASQ LAB47-POSTROUTING; do iptables -w -t nat -F "$c"; done
for c in LAB47-SERVICES LAB47-SVC LAB47-MARK-MASQ LAB47-POSTROUTING; do iptables -w -t nat -X "$c"; done
iptables -w -F LAB47-FORWARD && iptables -w -X LAB47-FORWARD
EOS
"$LABSH" outsider down
record "" "$([[ $c47_ok = y ]] && echo PASS || echo FAIL)" \
  "ClusterIP $C47_SVC -> a2 on n1 (kube-proxy style): outsider '$c47_out', $c47_in packets arrived in a2; a1 '$c47_pod'; n1 '$c47_host'"
