#!/usr/bin/env bash
# End-to-end test of the collection on the lab (issue 4): boot 3 QEMU nodes, converge site.yml, then prove the data
# path with the checks in tests/lab/checks/ (sourced in their numbered order), print a results table and tear the
# lab down. Every row of the table starts with the name of the check file that recorded it (40-reach-esp: ...).
# Exit status 1 when any check fails.
#
# usage: tests/lab/e2e.sh [--running] [--only <checks>] [--checks-dir <dir>] [--list]
#   --running        use the running, converged lab (tests/lab/lab.sh up): no boot, converge or teardown
#   --only <checks>  comma-separated check numbers or names, e.g. 30,40 or 40-reach-esp (default: all; E2E_ONLY)
#   --checks-dir <dir>  the checks to take instead of tests/lab/checks (make bench's are in tests/lab/bench)
#   --list           list the checks and exit
# env:   E2E_KEEP=1    leave the lab running afterwards (then: tests/lab/lab.sh down)
#        E2E_CYCLES    pod ADD/DEL cycles of 10-idempotence-and-cycles through the CNI stand-in, with host-local
#                      cut down to a pool of 4 addresses (default 40: a DEL leaking even 1 address in 10 would
#                      exhaust it)
#        E2E_CRI_CYCLES  pod sandboxes made and removed through containerd's CRI in 20-pods (default 5)
#        E2E_SETTLE    seconds the SAs may take to settle (default 240)
#        E2E_PLAN      a plan JSON to use instead of writing one with playbooks/show_plan.yml
#        LAB_SUITE=bookworm  Debian 12 nodes instead of 13; LAB_TUNNEL_TYPE=vti|xfrm, LAB_AUTH=psk (see lab.sh)
# Logs: .lab/logs/e2e-<time>/ (ansible runs, the plan, captures, probes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LABSH=$HERE/lab.sh
LAB_NODES=3 # the checks use n1..n3 in set roles (n3 restarted, n2 rebooted, ...)
# shellcheck disable=SC2034 # used by the checks
CYCLES=${E2E_CYCLES:-40}
# shellcheck disable=SC2034 # used by the checks
CRI_CYCLES=${E2E_CRI_CYCLES:-5}
SETTLE=${E2E_SETTLE:-240}
RUNNING=0
ONLY=${E2E_ONLY:-}
ONLY_HIT=
CHECKS_DIR=$HERE/checks

usage() { sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2; }
while (($#)); do
  case $1 in
    --running) RUNNING=1 ;;
    --only) ONLY=${2:?--only needs a list}; shift ;;
    --only=*) ONLY=${1#--only=} ;;
    --checks-dir) CHECKS_DIR=$(cd "${2:?--checks-dir needs a folder}" && pwd); shift ;;
    --list) for f in "$CHECKS_DIR"/[0-9][0-9]-*.sh; do f=${f##*/}; echo "${f%.sh}"; done; exit 0 ;;
    *) usage ;;
  esac
  shift
done

# The checks to run: checks/NN-name.sh, all or those named by --only (NN, NN-name or NN-name.sh).
CHECKS=()
for f in "$CHECKS_DIR"/[0-9][0-9]-*.sh; do
  b=${f##*/}
  b=${b%.sh}
  if [[ -z $ONLY ]]; then CHECKS+=("$f"); fi
  for w in ${ONLY//,/ }; do
    if [[ $b = "${w%.sh}" || $b = "${w%.sh}"-* ]]; then CHECKS+=("$f"); ONLY_HIT+=" ${w%.sh} "; break; fi
  done
done
for w in ${ONLY//,/ }; do
  [[ ${ONLY_HIT-} = *" ${w%.sh} "* ]] || { echo "e2e: no check $w (see --list)" >&2; exit 2; }
done

LOGDIR=$ROOT/.lab/logs/e2e-$(date +%Y%m%d-%H%M%S)
exec </dev/null # ssh must never eat the script's stdin
mkdir -p "$LOGDIR" "$ROOT/.lab/cp"
LAB_SSH_CONTROL_DIR=$(mktemp -d "$ROOT/.lab/cp/XXXXXX")
export LAB_SSH_CONTROL_DIR
T0=$SECONDS
N=
BRIDGE=
RUNTIME=
CNI_STANDIN=

# shellcheck source=tests/lab/lib/plan.sh
source "$HERE/lib/plan.sh"
# shellcheck source=tests/lab/lib/common.sh
source "$HERE/lib/common.sh"

cleanup() {
  local rc=$? s
  set +e
  capture_kill
  outsider_capture_stop
  # the row names the check (or the runner's step) that was running
  ((rc == 0)) || { ((${#RESULTS[@]} > 0)) && ! all_passed; } || RESULTS+=("$(row_name aborted)|FAIL|status $rc")
  CHECK=
  print_table
  for s in "$LAB_SSH_CONTROL_DIR"/n*; do [[ -S $s ]] && "$LABSH" ssh-close "${s##*/n}"; done
  rm -rf "$LAB_SSH_CONTROL_DIR"
  if ((RUNNING)); then
    ts "--running: the lab stays as it is"
  elif [[ ${E2E_KEEP:-0} = 1 ]]; then
    ts "E2E_KEEP=1: lab left running; stop it with tests/lab/lab.sh down"
  else
    ts "teardown"
    "$LABSH" down
  fi
  ts "e2e total $((SECONDS - T0)) s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the lab

# The runner's own rows are named by its steps: lab-up, converge, plan and platform.
CONVERGE_S=
if ((!RUNNING)); then
  CHECK=lab-up
  ts "lab up: $LAB_NODES nodes (image, boot)"
  if ! LAB_CONVERGE=0 "$LABSH" up "$LAB_NODES" 2>&1 | tee "$LOGDIR/lab-up.log"; then
    record "" FAIL "see $LOGDIR/lab-up.log"
    exit 1
  fi
  ts "nodes reachable"
  CHECK=converge
  t=$SECONDS
  if ! playbook converge site.yml; then
    record "" FAIL "site.yml: status != 0, see converge.log"
    exit 1
  fi
  CONVERGE_S=$((SECONDS - t))
  ts "site.yml converged in $CONVERGE_S s"
fi

# Every address, subnet, device, connection and unit the checks use comes from the plan.
CHECK=plan
PLAN_JSON=${E2E_PLAN:-$LOGDIR/plan.json}
if [[ -z ${E2E_PLAN:-} ]] &&
  ! playbook show_plan playbooks/show_plan.yml -e "network_plan_json=$PLAN_JSON" >/dev/null; then
  record "" FAIL "show_plan.yml failed, see show_plan.log"
  exit 1
fi
if ! plan_load "$PLAN_JSON"; then
  record "" FAIL "cannot read $PLAN_JSON"
  exit 1
fi
N=$(plan_node_count)
if ((N < LAB_NODES)); then
  record "" FAIL "$N nodes in the plan, the checks need n1..n$LAB_NODES"
  exit 1
fi
# Pods are made by containerd through the CRI, as kubelet makes them. The CNI stand-in only runs the bulk ADD/DEL
# cycles of 10-idempotence-and-cycles: it calls the same plugins with the same conflist, and costs a fraction of a
# sandbox per cycle.
RUNTIME="python3 /root/cri_pods.py"
# shellcheck disable=SC2034 # used by the checks
CNI_STANDIN="python3 /root/cni_runtime.py --conflist $(plan_get cni_conflist)"
for ((i = 1; i <= N; i++)); do
  L "$i" 'cat >/root/cri_pods.py' <"$HERE/files/cri_pods.py"
  L "$i" 'cat >/root/cni_runtime.py' <"$HERE/files/cni_runtime.py"
done
if ! BRIDGE=$(conflist_bridge 1); then
  record "" FAIL "no bridge in n1:$(plan_get cni_conflist)"
  exit 1
fi
ts "plan: $N nodes, cluster $(plan_cluster_cidr), bridge $BRIDGE; checks: ${CHECKS[*]##*/}"
# What this run ran on: the results table names it, so figures are never mixed up between platforms.
CHECK=platform
record "" PASS "$(L 1 'bash -s' <<'EOS'
. /etc/os-release
type=$(sed -n 's/^TYPE=//p' /etc/default/k8s-ipsec-tunnels)
echo "$PRETTY_NAME, kernel $(uname -r), strongSwan $(swanctl --version | awk '{print $NF}')," \
  "containerd $(containerd --version | awk '{print $3}'), tunnels ${type:-vti}"
EOS
)"

# ---------------------------------------------------------------- the checks

for f in "${CHECKS[@]}"; do
  CHECK=${f##*/}
  CHECK=${CHECK%.sh} # the rows this file records start with its name, e.g. "40-reach-esp: br0 capture: ESP only"
  ts "---- $CHECK"
  # shellcheck source=/dev/null
  source "$f"
done
CHECK=

[[ -z $CONVERGE_S ]] || ts "lab figures: converge ${CONVERGE_S}s"
print_table
all_passed || exit 1
ts "E2E PASSED"
