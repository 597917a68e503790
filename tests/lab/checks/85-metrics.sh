# shellcheck shell=bash
# 85-metrics: the mesh as Prometheus metrics (metrics_enabled, docs/metrics.md). From the lab bridge, as a Prometheus
# server would, every node's node_exporter (:9100/metrics) serves one up-pair series per peer, all at 1, and the
# node's info; promtool accepts the guard's file. Then the pair n1-n2 goes down (its IKE blocked on n2, the SAs
# terminated): n1's series for n2 falls to 0 within the guard's interval, and comes back to 1, with one more
# re-authentication counted, once IKE is let through again.
# A lab with LAB_METRICS=0 has no metrics: the check says so and passes.

if ! grep -q '^ *metrics_enabled: true' "$ROOT/.lab/inventory/hosts.yml"; then
  record "" PASS "skipped: metrics_enabled is off (LAB_METRICS=0)"
  return 0
fi
scrape() { "$LABSH" exec curl -s -m 5 "http://$(plan_address "$1"):9100/metrics" 2>/dev/null || true; }
# value <i> <metric> <peer>: the sample of node i's metric for that peer ("" when absent)
value() { scrape "$1" | awk -v m="$2{peer=\"$3\"," 'index($0, m) == 1 {print $NF; exit}'; }
wait_value() { # wait_value <i> <metric> <peer> <value> <seconds>: prints the seconds it took, or fails
  local t=$SECONDS
  while ((SECONDS - t < $5)); do
    [[ $(value "$1" "$2" "$3") = "$4" ]] && { echo $((SECONDS - t)); return 0; }
    sleep 1
  done
  return 1
}

ok=y
per=
for ((i = 1; i <= N; i++)); do
  text=$(scrape "$i")
  up=$(grep -c '^k8s_ipsec_peer_child_sa_installed{.* 1$' <<<"$text" || true)
  series=$(grep -c '^k8s_ipsec_peer_child_sa_installed{' <<<"$text" || true)
  # node_exporter sorts the labels
  info=$(grep '^k8s_ipsec_node_info{' <<<"$text" | grep "node=\"n$i\"" | grep -c "index=\"$i\"" || true)
  per+="n$i: $up/$series up, info $info; "
  ((up == N - 1 && series == N - 1 && info == 1)) || ok=n
done
L 1 "cat /var/lib/prometheus/node-exporter/k8s_ipsec.prom" >"$LOGDIR/n1-k8s_ipsec.prom" 2>/dev/null || ok=n
if lint=$("$ROOT/.venv/bin/promtool" check metrics <"$LOGDIR/n1-k8s_ipsec.prom" 2>&1) && [[ -z $lint ]]; then
  lint="promtool clean"
else
  ok=n lint="promtool: ${lint:-missing}"
fi

# the pair n1-n2 down: n2 drops n1's IKE, then both ends' SAs go
n1=$(plan_address 1) conn=$(plan_conn 1 2)
reauths=$(value 1 k8s_ipsec_peer_reauthentications_total n2)
L 2 "nft add table inet lab-block && nft add chain inet lab-block in '{ type filter hook input priority -300; }' &&
  nft add rule inet lab-block in ip saddr $n1 udp dport '{ 500, 4500 }' drop" || ok=n
L 1 "swanctl --terminate --ike $conn --force --timeout 5" >/dev/null 2>&1 || true
L 2 "swanctl --terminate --ike $(plan_conn 2 1) --force --timeout 5" >/dev/null 2>&1 || true
down_s=$(wait_value 1 k8s_ipsec_peer_child_sa_installed n2 0 40) || { ok=n down_s=never; }
L 2 "nft delete table inet lab-block" || ok=n
L 1 "swanctl --initiate --child $conn --timeout 30" >/dev/null 2>&1 || true
up_s=$(wait_value 1 k8s_ipsec_peer_child_sa_installed n2 1 40) || { ok=n up_s=never; }
reauths_after=$(value 1 k8s_ipsec_peer_reauthentications_total n2)
((${reauths_after:-0} > ${reauths:-0})) || ok=n
recover "after the pair n1-n2 came back" || ok=n
record "node_exporter serves the mesh" "$([[ $ok = y ]] && echo PASS || echo FAIL)" \
  "${per}${lint}; n1's series for n2 at 0 after ${down_s} s down, at 1 ${up_s} s after IKE was let through; re-authentications counted ${reauths:-?} -> ${reauths_after:-?}"
