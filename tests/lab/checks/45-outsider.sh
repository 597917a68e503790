# shellcheck shell=bash
# 45-outsider, trust boundaries: a host on the lab bridge that is not in the inventory (tests/lab/lab.sh outsider)
# (a) cannot reach a pod directly, (b) cannot deliver TCP or UDP with a forged pod source (neither can a mesh node
# sending cleartext on the underlay), (c) never sees untranslated service traffic leave a node that has a default
# route; while (d) a NodePort written the way kube-proxy writes it delivers its requests to a pod on that node and
# to a pod on another node, and (e) pods reach it through masquerade. What arrives inside the target pods is
# counted by a capture in each of them.

need_pods
"$LABSH" outsider up
OUT() { "$LABSH" outsider exec "$@"; }
OUTSIDER_IP=$(OUT ip -4 -o addr show dev eth0 | awk '{ sub(/\/.*/, "", $4); print $4 }')
L 3 'cat >/root/send_raw.py' <"$HERE/files/send_raw.py"
FORGED=$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_network(sys.argv[1])[77])' "$(plan_subnet 3)")

pod_capture() { # pod_capture <i> start|stop: tcpdump inside pod a<i>; stop prints what arrived from the outsider
  if [[ $2 = start ]]; then
    L "$1" "rm -f /run/outsider.pcap; ip netns exec pod-a$1 tcpdump -i eth0 -n -U -w /run/outsider.pcap 'ip and not icmp' \
      >/dev/null 2>&1 & echo \$! >/run/outsider.pid; sleep 1"
  else
    L "$1" "sleep 1; kill -INT \$(cat /run/outsider.pid); sleep 1
      tcpdump -n -r /run/outsider.pcap 'src host $OUTSIDER_IP or src host $FORGED' 2>/dev/null | wc -l"
  fi
}

# ---- (a) direct TCP, (b) forged sources: nothing may arrive in a1 or a2
for i in 1 2; do
  OUT ip route replace "$(plan_subnet "$i")" via "$(plan_address "$i")"
  pod_capture "$i" start
done
direct=0
for i in 1 2; do
  if OUT curl -s -m 3 "http://${POD_IP[$i]}:8080/" >/dev/null; then direct=$((direct + 1)); fi
done
sent=0
for i in 1 2; do
  mac=$(L "$i" 'cat /sys/class/net/eth0/address')
  for proto in tcp udp; do
    OUT python3 "$HERE/files/send_raw.py" eth0 "$mac" "$FORGED" "${POD_IP[$i]}" "$proto" 8080 3 >/dev/null && sent=$((sent + 3))
  done
  # n3 is a mesh node: its own pod source sent in clear on the underlay instead of through the tunnel
  L 3 "python3 /root/send_raw.py eth0 $mac $FORGED ${POD_IP[$i]} udp 8080 3" >/dev/null && sent=$((sent + 3))
done
arrived=0
for i in 1 2; do
  got=$(pod_capture "$i" stop) || true
  [[ $got =~ ^[0-9]+$ ]] || { ts "no capture from pod a$i: $got"; got=999; }
  arrived=$((arrived + got))
  OUT ip route del "$(plan_subnet "$i")" 2>/dev/null || true
done
if ((direct == 0)); then r=PASS; else r=FAIL; fi
record "TCP to pods" "$r" "$direct/2 answered"
if ((arrived == 0 && sent > 0)); then r=PASS; else r=FAIL; fi
record "forged pod source" "$r" "$sent TCP/UDP with source $FORGED (outsider and n3 on the underlay), $arrived arrived in a1/a2"

# ---- (c) untranslated service traffic with a default route on n1: nothing on br0
SERVICE_IP=$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_network(sys.argv[1])[10])' "$(plan_get service_cidr)")
L 1 "ip route replace default via $OUTSIDER_IP"
capture_start service
L 1 "S=$SERVICE_IP bash -s" <<'EOS' || true
for pre in "ip netns exec pod-a1" ""; do
  $pre ping -n -q -c 2 -W 1 "$S" >/dev/null 2>&1
  $pre bash -c 'echo query >/dev/udp/$0/53' "$S" 2>/dev/null
  $pre curl -s -m 2 "http://$S/" >/dev/null 2>&1
done
true
EOS
sleep 1
capture_kill
leaked=$(tcpdump -n -r "$CAP_FILE" "ip and net $(plan_get service_cidr)" 2>/dev/null | wc -l)
L 1 'ip route del default' || true
if ((leaked == 0)); then r=PASS; else r=FAIL; fi
record "service CIDR untranslated" "$r" "pod and host ping/UDP/TCP to $SERVICE_IP with a default route: $leaked packets on br0"

# ---- (d) a NodePort on n1 as kube-proxy writes it: to a2 (on n2) and to a1 (on n1)
L 1 "A=$(plan_address 1) P1=${POD_IP[1]} P2=${POD_IP[2]} bash -s" <<'EOS'
set -e
iptables -w -t nat -N TEST-NODEPORTS
iptables -w -t nat -A PREROUTING -d "$A" -j TEST-NODEPORTS
for rule in "30080 $P2" "30081 $P1"; do
  set -- $rule
  iptables -w -t nat -A TEST-NODEPORTS -p tcp --dport "$1" -j MARK --set-xmark 0x4000/0x4000
  iptables -w -t nat -A TEST-NODEPORTS -p tcp --dport "$1" -j DNAT --to-destination "$2:8080"
done
iptables -w -t nat -N TEST-POSTROUTING
iptables -w -t nat -A POSTROUTING -j TEST-POSTROUTING
iptables -w -t nat -A TEST-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
iptables -w -t nat -A TEST-POSTROUTING -j MARK --set-xmark 0x4000/0x0
iptables -w -t nat -A TEST-POSTROUTING -j MASQUERADE --random-fully
iptables -w -N TEST-FORWARD
iptables -w -A FORWARD -j TEST-FORWARD
iptables -w -A TEST-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
iptables -w -A TEST-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
EOS
gw1=$(plan_gateway 1)
remote=$(OUT curl -s -m 10 "http://$(plan_address 1):30080/" || echo "no answer")
local_=$(OUT curl -s -m 10 "http://$(plan_address 1):30081/" || echo "no answer")
L 1 "A=$(plan_address 1) bash -s" <<'EOS' || true
iptables -w -t nat -D PREROUTING -d "$A" -j TEST-NODEPORTS
iptables -w -t nat -D POSTROUTING -j TEST-POSTROUTING
iptables -w -D FORWARD -j TEST-FORWARD
for c in TEST-NODEPORTS TEST-POSTROUTING; do iptables -w -t nat -F "$c"; iptables -w -t nat -X "$c"; done
iptables -w -F TEST-FORWARD; iptables -w -X TEST-FORWARD
EOS
if [[ $remote = "pod=a2 client=$gw1" && $local_ = "pod=a1 client=$gw1" ]]; then r=PASS; else r=FAIL; fi
record "NodePort on n1 (kube-proxy style)" "$r" "to a2 on n2: '$remote'; to a1 on n1: '$local_'"

# ---- (e) pods reach the outsider through masquerade
# shellcheck disable=SC2016 # expanded by that sh
OUT sh -c 'echo $$ >/run/k8s-ipsec-outsider-http.pid; exec python3 -m http.server 8081 --bind "$0" >/dev/null 2>&1' \
  "$OUTSIDER_IP" &
http_pid=$!
sleep 2
out_ok=0
for i in 1 2 3; do
  if L "$i" "ip netns exec pod-a$i curl -s -m 5 -o /dev/null -w '%{http_code}' http://$OUTSIDER_IP:8081/" | grep -q 200; then
    out_ok=$((out_ok + 1))
  fi
done
kill "$(cat /run/k8s-ipsec-outsider-http.pid)" 2>/dev/null || true
wait "$http_pid" 2>/dev/null || true
rm -f /run/k8s-ipsec-outsider-http.pid
if ((out_ok == 3)); then r=PASS; else r=FAIL; fi
record "pods -> outsider (masquerade)" "$r" "$out_ok/3 pods got HTTP 200 from $OUTSIDER_IP"
"$LABSH" outsider down
