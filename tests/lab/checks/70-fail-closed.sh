# shellcheck shell=bash
# 70-fail-closed: without the SAs (strongSwan stopped on n3) or without the tunnel device (n1's to n2 deleted) pod traffic
# is dropped, never sent in clear; afterwards everything recovers.

need_pods
L 3 'systemctl stop strongswan' || true
sleep 2
stopped_probes() { # every other node's pod and host -> a3, and a3 -> every other pod
  local k
  for ((k = 1; k <= N; k++)); do
    ((k == 3)) && continue
    echo "$k a$k->a3 pod-a$k ${POD_IP[3]}"
    echo "$k n$k->a3 host ${POD_IP[3]}"
    echo "3 a3->a$k pod-a3 ${POD_IP[$k]}"
  done
}
# not in a pipe: failclosed records into this shell
failclosed "strongswan stopped on n3" < <(stopped_probes)
L 3 'systemctl start strongswan' || true
recover "after strongswan start (n3)" || true

dev=$(plan_iface 1 2)
# The guard would put the device back within a second: this part proves what happens while it is gone.
L 1 "systemctl stop k8s-ipsec-guard; ip link del '$dev'" || true
failclosed "$dev deleted on n1" <<EOS
1 a1->a2 pod-a1 ${POD_IP[2]}
1 n1->a2 host ${POD_IP[2]}
2 a2->a1 pod-a2 ${POD_IP[1]}
EOS
L 1 "systemctl reload '$(plan_unit tunnels)'; systemctl start k8s-ipsec-guard" || true
recover "after tunnels reload (n1)" || true
