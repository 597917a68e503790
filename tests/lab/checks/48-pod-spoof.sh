# shellcheck shell=bash
# 48-pod-spoof: a pod sends only from its own address. Pod a1 on n1 hands its node raw UDP frames (send_raw.py in its
# namespace, to the bridge's MAC) with a source that is not its own: (1) n2's underlay address, to the outsider on
# the underlay; (2) an address of n2's pod subnet, to pod a3; (3) n1's gateway address, to a3 and to the outsider.
# Captures on the outsider and inside a3 count what arrives: nothing may. The same frames from a1's own address
# (the control) arrive at both. The spoofs are sent twice: with n1's kernel settings as the roles leave them, and
# with the kernel's own source checks off on n1 (rp_filter 0, as other network components set it, and accept_local 1
# on the bridge, without which the kernel drops a local source itself), so that the firewall alone must stop them.

need_pods
"$LABSH" outsider up
C48_OUT_IP=$("$LABSH" outsider exec ip -4 -o addr show dev eth0 | awk '{ sub(/\/.*/, "", $4); print $4 }')
C48_FORGED=$(python3 -c 'import ipaddress, sys; print(ipaddress.ip_network(sys.argv[1])[78])' "$(plan_subnet 2)")
C48_MAC=$(L 1 "cat /sys/class/net/$BRIDGE/address")
L 1 'cat >/root/send_raw.py' <"$HERE/files/send_raw.py"
# "<label> <source> <destination> <port>": one UDP port per case and phase, so each is counted on its own
c48_cases() { # c48_cases <phase digit>
  echo "underlay-src $(plan_address 2) $C48_OUT_IP 40${1}01"
  echo "n2-pod-src $C48_FORGED ${POD_IP[3]} 40${1}02"
  echo "gateway-src $(plan_gateway 1) ${POD_IP[3]} 40${1}03"
  echo "gateway-src $(plan_gateway 1) $C48_OUT_IP 40${1}04"
}
c48_send() { # c48_send <label> <src> <dst> <port>
  L 1 "ip netns exec pod-a1 python3 /root/send_raw.py eth0 $C48_MAC $2 $3 udp $4 3" >/dev/null || ts "$CHECK: $1 not sent"
}

outsider_capture_start c48-outsider 'udp and portrange 40001-40999'
ns_capture_start 3 pod-a3 c48 'udp and portrange 40001-40999'
# (lists, not loops over a pipe: ssh would read the rest of it)
mapfile -t c48_phase1 < <(c48_cases 1)
mapfile -t c48_phase2 < <(c48_cases 2)
for c in "${c48_phase1[@]}"; do read -r label src dst port <<<"$c" && c48_send "$label" "$src" "$dst" "$port"; done
# phase 2: the kernel's checks off on n1 (rp_filter 0 on all, default and the bridge; accept_local 1 on the bridge)
c48_off="net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.$BRIDGE.rp_filter=0"
c48_off+=" net.ipv4.conf.$BRIDGE.accept_local=1"
# the values before, as "key=value" words for sysctl -w
c48_was=$(L 1 "for kv in $c48_off; do k=\${kv%=*}; echo \"\$k=\$(sysctl -n \$k)\"; done" | paste -sd' ' -) || true
L 1 "sysctl -qw $c48_off" || true
for c in "${c48_phase2[@]}"; do read -r label src dst port <<<"$c" && c48_send "$label" "$src" "$dst" "$port"; done
[[ -z $c48_was ]] || L 1 "sysctl -qw $c48_was" || true
# the control: a1's own address, to a3 and to the outsider (which sees it masqueraded to n1's address)
c48_send control "${POD_IP[1]}" "${POD_IP[3]}" 40905
c48_send control "${POD_IP[1]}" "$C48_OUT_IP" 40906
ns_capture_stop 3 c48
outsider_capture_stop

c48_ok=y c48_fig=
for phase in 1 2; do
  c48_fig+="$([[ $phase = 1 ]] && echo "as built" || echo "rp_filter 0, accept_local 1"):"
  declare -n cases=c48_phase$phase
  for c in "${cases[@]}"; do
    read -r label _ dst port <<<"$c"
    if [[ $dst = "$C48_OUT_IP" ]]; then got=$(outsider_capture_count "udp dst port $port"); else got=$(ns_capture_count 3 c48 "udp dst port $port"); fi
    ((got == 0)) || c48_ok=n
    c48_fig+=" $label->$([[ $dst = "$C48_OUT_IP" ]] && echo outsider || echo a3) $got/3"
  done
  unset -n cases
  c48_fig+="; "
done
ctl_a3=$(ns_capture_count 3 c48 'udp dst port 40905')
ctl_out=$(outsider_capture_count 'udp dst port 40906')
((ctl_a3 > 0 && ctl_out > 0)) || c48_ok=n
"$LABSH" outsider down
record "" "$([[ $c48_ok = y ]] && echo PASS || echo FAIL)" \
  "arrived of sent: ${c48_fig}control from a1's own address: a3 $ctl_a3/3, outsider $ctl_out/3"
