# shellcheck shell=bash
# make bench, section 4 (recovery), sourced by tests/lab/e2e.sh --running --checks-dir tests/lab/bench: for each
# fault, a pod pings a pod of another node every 0.2 s from 2 s before the fault until the SAs have settled and every
# pod is reachable again; the longest gap between replies and the lost pings are the outage the fault caused. A
# capture on the lab bridge runs through every fault: pod packets seen there in cleartext are counted.
# Writes $BENCH_RESULTS/recovery.txt: "fault=<key> node=n<i> gap_s=<s> lost=<n> sent=<n> back_s=<s>" per fault, then
# "cleartext=<packets> esp=<packets> capture=br0".
: "${BENCH_RESULTS:?set by tests/lab/bench.sh}"
RECOVERY_OUT=$BENCH_RESULTS/recovery.txt
echo "# command: make bench (tests/lab/bench/10-recovery.sh, run by tests/lab/e2e.sh --running)" >"$RECOVERY_OUT"

need_pods
capture_start bench-recovery

# bench_fault <key> <node> <pinging pod's node> <pinged pod's node> <command on the node (- for reboot)>
bench_fault() {
  local key=$1 node=$2 from=$3 to=$4 t back gap lost sent r=PASS
  outage_start "$from" "$to"
  sleep 2
  t=$SECONDS
  if [[ $key = reboot ]]; then
    bench_reboot "$node" || r=FAIL
  else
    L "$node" "$5" >/dev/null 2>&1 || true
  fi
  recover "after $key" || r=FAIL
  back=$((SECONDS - t))
  read -r gap lost _ < <(outage_stop "$from")
  sent=${lost#*/}
  lost=${lost%/*}
  echo "fault=$key node=n$node gap_s=${gap%s} lost=$lost sent=$sent back_s=$back" >>"$RECOVERY_OUT"
  record "$key (n$node)" "$r" "a$from->a$to longest gap ${gap}, lost $lost/$sent; SAs and pods back in $back s"
}

# After a reboot the node's own units bring back cni0, the rules, the tunnels and strongSwan; the pod is made again
# as kubelet would make it (host-local's leases were under /run, so it gets its address back).
bench_reboot() {
  local node=$1 t=$SECONDS
  reboot_node "$node" || true # the units, the SAs and the pod below tell a node that did not come back
  until unit_state "$node" || ((SECONDS - t > 480)); do sleep 2; done
  pod_up "$node"
}

conn12=$(plan_conn 1 2)
conn32=$(plan_conn 3 2)
dev12=$(plan_iface 1 2)
bench_fault restart-strongswan-responder 3 1 3 'systemctl restart strongswan'
bench_fault restart-strongswan-initiator 1 1 2 'systemctl restart strongswan'
bench_fault terminate-ike-initiator 1 1 2 "swanctl --terminate --ike '$conn12' --timeout 10"
bench_fault terminate-ike-responder 3 2 3 "swanctl --terminate --ike '$conn32' --timeout 10"
bench_fault charon-stopped-10s 2 1 2 'systemctl stop strongswan; sleep 10; systemctl start strongswan'
# The next five are the guard's to repair (k8s-ipsec-guard), without Ansible.
bench_fault device-deleted 1 1 2 "ip link del '$dev12'"
bench_fault address-deleted 1 1 2 "ip addr del $(plan_gateway 1)/$(plan_prefix 1) dev '$BRIDGE'"
bench_fault route-deleted 1 1 2 "ip route del $(plan_remote_subnet 1 2) dev '$dev12'"
bench_fault firewall-flushed 2 1 2 'nft flush ruleset'
bench_fault cni0-deleted 2 1 2 "ip link del '$BRIDGE'"
bench_fault reboot 2 1 2 -

read -r esp clear < <(capture_stop)
echo "cleartext=$clear esp=$esp capture=br0" >>"$RECOVERY_OUT"
if ((clear == 0)); then r=PASS; else r=FAIL; fi
record "cleartext during the faults" "$r" "$clear cleartext pod packets, $esp ESP packets on br0"
