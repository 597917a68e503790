# shellcheck shell=bash
# 75-guards, guards that stay: with the guard running (k8s-ipsec-guard.service), (a) nftables.service started on n2
# after our rules were loaded (its "flush ruleset" wipes every table) and (b) the gateway address deleted from n1's
# tunnel device to n2 (the kernel then drops the tunnel's route) are noticed and repaired without Ansible; the time
# until the node's own checks pass again is the figure, and br0 carries no cleartext meanwhile.

need_pods
guard_fig() { # guard_fig <i> <part> <since>: seconds until k8s-ipsec-<part> check passes, and what the guard logged
  local t0=$SECONDS
  until L "$1" "/usr/local/sbin/k8s-ipsec-node $2 check" >/dev/null 2>&1; do
    ((SECONDS - t0 < 60)) || { echo "not repaired after 60 s"; return 1; }
    sleep 0.5
  done
  echo "repaired in $((SECONDS - t0)) s, guard logged: $(L "$1" "journalctl -q -o cat -u k8s-ipsec-guard --since '$3' | grep -c restored") restore(s)"
}

active=0
for ((i = 1; i <= N; i++)); do
  if L "$i" 'systemctl is-active -q k8s-ipsec-guard'; then active=$((active + 1)); fi
done
if ((active == N)); then r=PASS; else r=FAIL; fi
record "guard running" "$r" "$active/$N nodes"

capture_start guards
since=$(L 2 'date "+%Y-%m-%d %H:%M:%S"')
L 2 'systemctl start nftables' || true
if fig=$(guard_fig 2 firewall "$since"); then r=PASS; else r=FAIL; fi
L 2 'systemctl stop nftables' || true # its stop flushes again: the guard repairs that too
fig2=$(guard_fig 2 firewall "$since") || r=FAIL
record "nftables.service started (n2)" "$r" "$fig; after its stop: $fig2"

since=$(L 1 'date "+%Y-%m-%d %H:%M:%S"')
dev=$(plan_iface 1 2)
L 1 "ip addr del $(plan_gateway 1)/32 dev '$dev'" || true
if fig=$(guard_fig 1 tunnels "$since"); then r=PASS; else r=FAIL; fi
reach "after guard repairs (n1, n2)" 30 || r=FAIL
read -r _ clear < <(capture_stop)
((clear == 0)) || r=FAIL
record "address deleted from $dev (n1)" "$r" "$fig; $clear cleartext pod packets on br0 during both"
