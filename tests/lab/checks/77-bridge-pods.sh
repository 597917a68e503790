# shellcheck shell=bash
# 77-bridge-pods: the bridge deleted under running pods. With the lab's CRI pods on n1 attached to it (a1, and a
# second pod b1 made for this check and removed afterwards), `ip link del <bridge>` on n1; the guard makes it again
# and puts the pods' veths back on it. n2 pings every pod of n1 every 0.2 s: each must answer again within 10 s (the
# figure: the longest gap between replies), while a capture on br0 counts cleartext pod packets (must be 0), and
# the node's own bridge check (the program behind the plan's bridge unit) passes afterwards.

need_pods
c77_ok=y c77_fig=
b1=$(L 1 "$RUNTIME pod-down b1 >/dev/null 2>&1; $RUNTIME pod-up b1" 2>/dev/null) || { b1='' c77_fig+="no pod b1; "; }
# every lab pod of n1 that is ready and has an address: "<pod> <ip>"
c77_pods=$(L 1 "$RUNTIME list" 2>/dev/null | awk '$2 == "SANDBOX_READY" && $3 != "-" { print $1, $3 }') || true
c77_n=$(grep -c . <<<"$c77_pods" || true)
((c77_n >= 1)) || c77_ok=n
guard=$(L 1 'systemctl is-active k8s-ipsec-guard' 2>/dev/null) || c77_ok=n

c77_ips=$(awk '{ print $2 }' <<<"$c77_pods" | paste -sd' ' -)
c77_answer() { L 2 "for ip in $c77_ips; do ping -n -q -c 1 -W 1 \$ip >/dev/null || exit 1; done" 2>/dev/null; }
# the measurement means something only if every pod answers n2 before the fault
c77_answer || { c77_ok=n c77_fig+="not every pod answered n2 before the fault; "; }
L 2 "IPS='$c77_ips' bash -s" <<'EOS' || true
rm -rf /run/lab77; mkdir -p /run/lab77
for ip in $IPS; do
  setsid ping -n -D -i 0.2 -W 1 "$ip" >"/run/lab77/$ip.log" 2>&1 </dev/null & echo $! >"/run/lab77/$ip.pid"
done
EOS
sleep 3
capture_start bridge-pods
L 1 "ip link del '$BRIDGE'" || c77_ok=n
t=$SECONDS
# until every pod answers n2 again (one ping each), for at most 30 s
until c77_answer; do
  ((SECONDS - t < 30)) || break
done
sleep 1
# per pod: "<ip> <longest gap between replies, the end counted as a reply> <replies before the longest gap>"
# shellcheck disable=SC2016 # expanded on n2
gaps=$(L 2 'bash -s' <<'EOS'
end=$(date +%s.%N)
for f in /run/lab77/*.pid; do kill -INT "$(cat "$f")" 2>/dev/null; done
sleep 1
for f in /run/lab77/*.log; do
  ip=${f##*/}; ip=${ip%.log}
  awk -F'[][]' -v ip="$ip" -v end="$end" '/bytes from/ { t = $2 + 0; n++; if (p && t - p > gap) { gap = t - p; before = n - 1 }; p = t }
    END { if (end - p > gap) { gap = end - p; before = n }; printf "%s %.1f %d\n", ip, gap, before }' "$f"
done
rm -rf /run/lab77
EOS
) || true
read -r _ clear < <(capture_stop)
((clear == 0)) || c77_ok=n
worst=0
while read -r ip gap before; do
  [[ -n $ip ]] || continue
  # a reply before the fault, then none for longer than 10 s (or none after it): not repaired in time
  if ((before == 0)) || awk -v g="$gap" 'BEGIN { exit !(g > 10) }'; then c77_ok=n; fi
  awk -v g="$gap" -v w="$worst" 'BEGIN { exit !(g > w) }' && worst=$gap
  c77_fig+="$(awk -v ip="$ip" '$2 == ip { print $1 }' <<<"$c77_pods") $ip gap ${gap}s; "
done <<<"$gaps"
[[ -n $gaps ]] || c77_ok=n
t=$SECONDS
until c77_check=$(part_check 1 bridge 2>&1); do
  ((SECONDS - t < 10)) || { c77_ok=n; break; }
  sleep 1
done
c77_fig="guard $guard; $c77_n pods on n1, longest outage ${worst}s (<= 10 s): ${c77_fig}$clear cleartext pod packets on br0; bridge check: ${c77_check:-passes}"

# leave n1 as the next checks want it: b1 gone; a1 made again unless its server answers
[[ -z $b1 ]] || L 1 "$RUNTIME pod-down b1" >/dev/null 2>&1 || ts "$CHECK: pod b1 not removed"
unset 'POD_IP[1]'
need_pods
record "" "$([[ $c77_ok = y ]] && echo PASS || echo FAIL)" "$c77_fig"
