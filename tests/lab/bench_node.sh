#!/usr/bin/env bash
# make bench-node: what the node program (roles/node_prep/files/k8s_ipsec_node.py) costs on a lab node as the mesh
# grows. On n1, inside a network namespace of its own (nothing of the node's own network is touched), with settings
# files written for K peers (XFRM interfaces, as TYPE=xfrm), it times `cni0 apply; tunnels apply; firewall apply`
# from an empty namespace, then the three checks, and prints one line per size:
#   peers=<K> apply_s=<X> check_s=<Y>
# With BENCH_GUARD_IDLE=<seconds> it first reads the guard's CPU time (systemd's CPUUsageNSec of k8s-ipsec-guard) on
# every node before and after that many idle seconds of a converged lab, and prints
#   guard_idle_s=<S> cpu_s=<n1>,<n2>,<n3>
# The lab is booted when none is up (converged only when the guard is measured) and stopped again afterwards; a
# lab that was up stays up.
#
# env: BENCH_PEERS        the sizes (default "10 100 1000")
#      BENCH_GUARD_IDLE   seconds of idle guard to measure (default 0: skipped)
#      BENCH_NODE_PROGRAM the program to time (default roles/node_prep/files/k8s_ipsec_node.py)
# Exit status 1 when an apply fails or a check right after the applies reports a difference (its time is printed
# all the same, and what differed goes to stderr).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LABSH=$HERE/lab.sh
PROGRAM=${BENCH_NODE_PROGRAM:-$ROOT/roles/node_prep/files/k8s_ipsec_node.py}
SIZES=${BENCH_PEERS:-10 100 1000}
GUARD_IDLE=${BENCH_GUARD_IDLE:-0}
NODES=3

log() { printf '[bench-node %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BOOTED=0
cleanup() {
  local rc=$?
  # an interrupted run leaves the program running on the node: it ends with its namespace
  # shellcheck disable=SC2016 # expanded on the node
  "$LABSH" ssh 1 'pids=$(ip netns pids k8s-ipsec-bench 2>/dev/null); [ -z "$pids" ] || kill $pids
    ip netns del k8s-ipsec-bench 2>/dev/null; rm -rf /run/k8s-ipsec-bench' >/dev/null 2>&1 || true
  if ((BOOTED)); then
    log "stopping the lab this run booted"
    "$LABSH" down >&2 || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -r $PROGRAM ]] || die "no program $PROGRAM"
[[ $GUARD_IDLE =~ ^[0-9]+$ ]] || die "BENCH_GUARD_IDLE=$GUARD_IDLE: a number of seconds"
for k in $SIZES; do
  if ! [[ $k =~ ^[1-9][0-9]*$ ]] || ((k > 1000)); then die "BENCH_PEERS: $k is not 1..1000"; fi
done
exec </dev/null # ssh must never eat the script's stdin

# the nodes that answer on ssh (lab.sh status: "n<i> <address> pid <pid> ssh ok")
nodes_ok() { "$LABSH" status 2>/dev/null | awk '$1 ~ /^n[0-9]+$/ && $NF == "ok" && $(NF - 1) == "ssh" { n++ } END { print n + 0 }'; }

need=1
((GUARD_IDLE == 0)) || need=$NODES
up=$(nodes_ok)
((up == 0 || up >= need)) || die "the lab has $up node(s) up; $need needed (tests/lab/lab.sh up $NODES)"
if ((up == 0)); then
  # the guard only runs on a converged lab; the program alone only needs to be copied
  converge=0
  ((GUARD_IDLE == 0)) || converge=1
  # n1 alone for the program; the mesh of $NODES for the guard
  log "no lab up: booting $need node(s) (LAB_CONVERGE=$converge)"
  BOOTED=1
  LAB_CONVERGE=$converge "$LABSH" up "$need" >&2
fi

# ---------------------------------------------------------------- the guard, idle

if ((GUARD_IDLE > 0)); then
  # shellcheck disable=SC2016 # expanded on the node
  cpu_ns() { "$LABSH" ssh "$1" 'systemctl is-active -q k8s-ipsec-guard && systemctl show -P CPUUsageNSec k8s-ipsec-guard'; }
  declare -A before=()
  for ((i = 1; i <= NODES; i++)); do
    before[$i]=$(cpu_ns "$i") || die "n$i: k8s-ipsec-guard is not running (a converged lab is needed)"
    [[ ${before[$i]} =~ ^[0-9]+$ ]] || die "n$i: no CPU accounting for k8s-ipsec-guard (${before[$i]})"
  done
  log "guard: idle for $GUARD_IDLE s"
  sleep "$GUARD_IDLE"
  cpu=
  for ((i = 1; i <= NODES; i++)); do
    after=$(cpu_ns "$i") || die "n$i: k8s-ipsec-guard stopped while idle"
    cpu+=$(awk -v a="$after" -v b="${before[$i]}" 'BEGIN { printf "%.3f", (a - b) / 1e9 }'),
  done
  echo "guard_idle_s=$GUARD_IDLE cpu_s=${cpu%,}"
fi

# ---------------------------------------------------------------- apply and check, K peers

"$LABSH" ssh 1 'mkdir -p /run/k8s-ipsec-bench && cat >/run/k8s-ipsec-bench/k8s-ipsec-node' <"$PROGRAM"
status=0
for k in $SIZES; do
  # shellcheck disable=SC2016 # expanded on the node
  out=$("$LABSH" ssh 1 "K=$k bash -s" <<'EOS'
set -eu
ns=k8s-ipsec-bench dir=/run/k8s-ipsec-bench
ip netns del "$ns" 2>/dev/null || true
ip netns add "$ns"
ip -n "$ns" link set lo up
# the underlay: this node's address on a device of the namespace, the peers' behind it
ip -n "$ns" link add underlay0 type dummy
ip -n "$ns" addr add 172.16.0.1/16 dev underlay0
ip -n "$ns" link set underlay0 up
rm -rf "$dir/cache" && mkdir -p "$dir/cache"
# This node is index 1 (10.128.1.0/24); peer j = 2..K+1 owns the j-th /24 of 10.128.0.0/14 (1024 of them), device
# k8s-ipsec<j>, key j, underlay address 172.16.0.0 + j: the formats the roles render (roles/*/templates/*.default.j2).
python3 - "$K" "$dir" <<'PY'
import ipaddress, sys

k, d = int(sys.argv[1]), sys.argv[2]
cluster = ipaddress.ip_network("10.128.0.0/14")
subnets = list(cluster.subnets(new_prefix=24))
peers = "".join(
    "k8s-ipsec%d 172.16.0.1 %s %d %s peer%d-n%d initiator\n"
    % (j, ipaddress.ip_address("172.16.0.0") + j, j, subnets[j], j, j)
    for j in range(2, k + 2)
)
files = {
    "cni0": "INDEX=1\nBRIDGE=cni0\nADDRESS=10.128.1.1/24\nMTU=1420\nCLUSTER_CIDR=%s\n" % cluster,
    "tunnels": "PREFIX=k8s-ipsec\nTYPE=xfrm\nMTU=1420\nSOURCE=10.128.1.1\nPEERS='\n%s'\n" % peers,
    "firewall": "BRIDGE=cni0\nTUNNELS=k8s-ipsec+\nCLUSTER_CIDR=%s\nSERVICE_CIDR=10.96.0.0/12\n"
    "POD_SUBNET=10.128.1.0/24\nGATEWAY=10.128.1.1\nMASQUERADE=yes\nPEERS_FILE=%s/tunnels\n" % (cluster, d),
}
for name, text in files.items():
    with open("%s/%s" % (d, name), "w") as f:
        f.write(text)
PY
export K8S_IPSEC_CNI0_CONFIG=$dir/cni0 K8S_IPSEC_TUNNELS_CONFIG=$dir/tunnels K8S_IPSEC_FIREWALL_CONFIG=$dir/firewall
# no pods in this namespace: an empty CNI results cache, not the node's
export K8S_IPSEC_CNI_CACHE=$dir/cache
node() { ip netns exec "$ns" python3 "$dir/k8s-ipsec-node" "$@" </dev/null; } # stdin is this script
rc=0
t0=$(date +%s.%N)
for part in cni0 tunnels firewall; do node "$part" apply >&2 || { echo "$part apply failed" >&2; rc=1; }; done
t1=$(date +%s.%N)
for part in cni0 tunnels firewall; do node "$part" check >"$dir/check-$part" 2>&1 || rc=1; done
t2=$(date +%s.%N)
for part in cni0 tunnels firewall; do
  [ ! -s "$dir/check-$part" ] || { echo "$part check after apply:"; head -n 5 "$dir/check-$part"; } >&2
done
awk -v k="$K" -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "peers=%d apply_s=%.2f check_s=%.2f\n", k, b - a, c - b }'
ip netns del "$ns"
exit "$rc"
EOS
  ) || status=1
  if [[ -n $out ]]; then echo "$out"; else log "peers=$k: no result"; fi
done
((status == 0)) # status 1 when a size failed
