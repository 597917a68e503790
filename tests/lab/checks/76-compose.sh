# shellcheck shell=bash
# 76-compose: our rules compose with other engines' rules in iptables' FORWARD. A NetworkPolicy engine inserts, first
# in n1's FORWARD, a REJECT for one pod pair (a1 -> a2), and a conntrack engine an INVALID-state DROP before it.
# After 60 s with the guard running both are still the first rules (nothing of ours was moved above them), the pair
# is still refused (curl: connection refused, i.e. by that REJECT) while a1 -> a3 works; once the REJECT is removed,
# a1 -> a2 works again.

need_pods
C76_REJECT="-s ${POD_IP[1]}/32 -d ${POD_IP[2]}/32 -j REJECT"
C76_INVALID="-m conntrack --ctstate INVALID -j DROP"

c76_http() { # c76_http <target ip>: "<curl status> <body>" of pod a1's request
  L 1 "b=\$(ip netns exec pod-a1 curl -s -m 5 http://$1:8080/); echo \"\$b status=\$?\"" 2>/dev/null || echo "no answer"
}

c76_fig='' c76_ok=y
guard=$(L 1 'systemctl is-active k8s-ipsec-guard' 2>/dev/null) || c76_ok=n
c76_fig+="guard ${guard:-?}; "
before=$(c76_http "${POD_IP[2]}")
[[ $before = "pod=a2 client=${POD_IP[1]} status=0" ]] || { c76_ok=n c76_fig+="a1->a2 before: '$before'; "; }

# INVALID first, then the REJECT: the order an engine that inserts them one after the other leaves
L 1 "iptables -w -I FORWARD 1 $C76_REJECT && iptables -w -I FORWARD 1 $C76_INVALID" || c76_ok=n
first=$(L 1 'iptables -w -S FORWARD | sed -n 2,3p') || true
ts "$CHECK: rules inserted first in n1's FORWARD; waiting 60 s with the guard running"
sleep 60
now=$(L 1 'iptables -w -S FORWARD | sed -n 2,3p') || true
if [[ -n $first && $now = "$first" ]]; then
  c76_fig+="INVALID drop and REJECT still the first two rules after 60 s; "
else
  c76_ok=n c76_fig+="first rules after 60 s: '${now//$'\n'/; }' (inserted: '${first//$'\n'/; }'); "
fi
pair=$(c76_http "${POD_IP[2]}")
other=$(c76_http "${POD_IP[3]}")
# curl's status 7: the connection was refused (the REJECT's ICMP port unreachable), not timed out or let through
[[ $pair = " status=7" ]] || c76_ok=n
[[ $other = "pod=a3 client=${POD_IP[1]} status=0" ]] || c76_ok=n
c76_fig+="a1->a2 '${pair# }', a1->a3 '$other'; "

L 1 "iptables -w -D FORWARD $C76_REJECT; iptables -w -D FORWARD $C76_INVALID" || c76_ok=n
t=$SECONDS
until after=$(c76_http "${POD_IP[2]}") && [[ $after = "pod=a2 client=${POD_IP[1]} status=0" ]]; do
  ((SECONDS - t < 20)) || { c76_ok=n; break; }
  sleep 2
done
c76_fig+="REJECT removed: a1->a2 '$after'"
record "" "$([[ $c76_ok = y ]] && echo PASS || echo FAIL)" "$c76_fig"
