# shellcheck shell=bash
# 49-ipv6: the pod network carries IPv4 only. (1) On every node the bridge and the tunnel devices hold no IPv6
# address and have disable_ipv6=1. (2) On n1, with IPv6 on in two pods there (a1 and a second pod b1, made through
# the CRI like the others and removed afterwards; IPv4 between them works), a1's IPv6 gets nowhere: not to b1's
# link-local address, not to the bridge's (the EUI-64 of its MAC), no answer to all-nodes (ff02::1) but a1's own,
# and not off the node: with IPv6 forwarding on n1 (as a dual-stack underlay would have it) and an IPv6 route to the
# outsider, raw UDP frames from a1 to the outsider's IPv6 address do not arrive there, while n1's own do.

need_pods
c49_ok=y c49_fig=

# ---- (1) every node: no IPv6 on the bridge and the tunnels
c49_bad=
for ((i = 1; i <= N; i++)); do
  devs=$BRIDGE
  for j in $(plan_peers "$i"); do devs+=" $(plan_iface "$i" "$j")"; done
  # shellcheck disable=SC2016 # expanded on the node
  out=$(L "$i" "DEVS='$devs' bash -s" <<'EOS'
for d in $DEVS; do
  a=$(ip -6 -o addr show dev "$d" 2>/dev/null | awk '{ print $4 }' | paste -sd, -)
  [ -z "$a" ] || echo "$d has $a"
  v=$(cat "/proc/sys/net/ipv6/conf/$d/disable_ipv6" 2>/dev/null)
  [ "$v" = 1 ] || echo "$d disable_ipv6=${v:-missing}"
done
EOS
  ) || out="n$i unreadable"
  [[ -z $out ]] || c49_bad+="n$i: ${out//$'\n'/, }; "
done
[[ -z $c49_bad ]] || c49_ok=n
c49_bad=${c49_bad%; }
c49_fig+="bridge+tunnels: ${c49_bad:-no IPv6 on $N nodes}; "

# ---- (2) IPv6 from pod a1
b1=$(L 1 "$RUNTIME pod-down b1 >/dev/null 2>&1; $RUNTIME pod-up b1" 2>/dev/null) || b1=
if [[ -z $b1 ]]; then
  c49_ok=n c49_fig+="second pod b1 on n1 could not be made: same-node part not run; "
fi
# IPv6 on in the pods (a pod may turn it on in its own namespace); "<pod> <link-local> <disable_ipv6 before>"
# shellcheck disable=SC2016 # expanded on the node
c49_ll=$(L 1 "PODS='a1${b1:+ b1}' bash -s" <<'EOS'
for p in $PODS; do
  was=$(ip netns exec "pod-$p" sysctl -n net.ipv6.conf.eth0.disable_ipv6)
  ip netns exec "pod-$p" sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0
  for k in $(seq 50); do
    ll=$(ip -n "pod-$p" -6 -o addr show dev eth0 scope link | grep -v tentative | awk '{ sub(/\/.*/, "", $4); print $4 }')
    [ -n "$ll" ] && break
    sleep 0.1
  done
  echo "$p ${ll:-none} $was"
done
EOS
) || true
ll_a1=$(awk '$1 == "a1" { print $2 }' <<<"$c49_ll")
ll_b1=$(awk '$1 == "b1" { print $2 }' <<<"$c49_ll")
[[ $ll_a1 = fe80:* ]] || { c49_ok=n c49_fig+="a1 got no IPv6 link-local address; "; }
mac=$(L 1 "cat /sys/class/net/$BRIDGE/address")
ll_gw=$(python3 -c 'import ipaddress, sys
b = bytes.fromhex(sys.argv[1].replace(":", "")); b = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
print(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + b))' "$mac")
c49_ping() { # c49_ping <target>: "ok" when pod a1's ping got an answer
  L 1 "ip netns exec pod-a1 ping -n -q -c 3 -i 0.3 -W 1 $1" >/dev/null 2>&1 && echo ok || echo fail
}
if [[ -n $b1 ]]; then
  v4=$(c49_ping "$b1")
  [[ $v4 = ok ]] || c49_ok=n
  v6=$(c49_ping "${ll_b1:-fe80::1}%eth0")
  [[ $v6 = fail && $ll_b1 = fe80:* ]] || c49_ok=n
  c49_fig+="a1->b1 IPv4 $v4, IPv6 link-local ${ll_b1:-none} $v6; "
fi
gw6=$(c49_ping "$ll_gw%eth0")
[[ $gw6 = fail ]] || c49_ok=n
# every answer to all-nodes but a1's own
others=$(L 1 "ip netns exec pod-a1 ping -n -i 0.3 -w 2 ff02::1%eth0" 2>/dev/null |
  awk -v self="$ll_a1" '/bytes from/ { a = $4; sub(/%.*/, "", a); sub(/:$/, "", a); if (a != self) print a }' |
  sort -u | paste -sd, -) || true
[[ -z $others ]] || c49_ok=n
c49_fig+="a1->bridge $ll_gw $gw6; ff02::1 answered by: ${others:-nobody else}; "

# ---- off the node: forwarding on, a route to the outsider's IPv6 address; a1 sends raw frames, n1 its own (control)
"$LABSH" outsider up
"$LABSH" outsider exec ip -6 addr add fd00:49::250/64 dev eth0 nodad
fwd=$(L 1 'sysctl -n net.ipv6.conf.all.forwarding') || fwd=0
L 1 "sysctl -qw net.ipv6.conf.all.forwarding=1; ip -6 addr add fd00:49::11/64 dev eth0 nodad" || true
L 1 'cat >/root/send_raw.py' <"$HERE/files/send_raw.py"
outsider_capture_start c49-outsider 'ip6 and udp'
L 1 "ip netns exec pod-a1 python3 /root/send_raw.py eth0 $mac fd00:49:1::2 fd00:49::250 udp 40491 3" >/dev/null || true
L 1 "python3 -c 'import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for _ in range(3): s.sendto(b\"n1\", (\"fd00:49::250\", 40493))'" || true
outsider_capture_stop
off=$(outsider_capture_count 'udp dst port 40491')
ctl=$(outsider_capture_count 'udp dst port 40493')
((off == 0 && ctl > 0)) || c49_ok=n
c49_fig+="off-node: $off/3 of a1's arrived at the outsider (n1's own: $ctl/3)"
L 1 "ip -6 addr del fd00:49::11/64 dev eth0; sysctl -qw net.ipv6.conf.all.forwarding=$fwd" || true
"$LABSH" outsider down

# ---- restore: a1's IPv6 setting, b1 gone
was_a1=$(awk '$1 == "a1" { print $3 }' <<<"$c49_ll")
L 1 "ip netns exec pod-a1 sysctl -qw net.ipv6.conf.eth0.disable_ipv6=${was_a1:-0}" || true
[[ -z $b1 ]] || L 1 "$RUNTIME pod-down b1" >/dev/null 2>&1 || ts "$CHECK: pod b1 not removed"
record "" "$([[ $c49_ok = y ]] && echo PASS || echo FAIL)" "$c49_fig"
