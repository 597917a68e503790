#!/usr/bin/env bash
# make bench-playbooks: what the playbooks cost on the lab with Ansible's own strategy and with mitogen's, in one lab
# run (the machine is shared and noisy: ratios are only fair side by side). It boots a lab of 3 nodes without
# converging it, then runs, timing each:
#   site.yml (first converge) and site.yml again (no-op) without mitogen; the no-op with mitogen;
#   reset.yml on every node, then site.yml (first converge) with mitogen;
#   a 4th node: add_node.yml with mitogen, remove_node.yml and reset.yml, then add_node.yml without mitogen.
# It prints one line per run, `playbook=<name> strategy=<linear|mitogen> seconds=<S> changed=<per node>`, and stops
# the lab. Figures only: nothing is asserted but that every playbook succeeds (exit status 1 otherwise).
# A lab already up is refused: the runs start from fresh nodes.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LABSH=$HERE/lab.sh
LOGDIR=$ROOT/.lab/logs/bench-playbooks
NODES=3

log() { printf '[bench-playbooks %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

BOOTED=0
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  if ((BOOTED)); then
    log "stopping the lab"
    "$LABSH" down >&2 || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
exec </dev/null # ssh must never eat the script's stdin

"$LABSH" status 2>/dev/null | grep -q '^n[0-9]' && die "a lab is up: stop it first (tests/lab/lab.sh down)"
mkdir -p "$LOGDIR"
log "booting $NODES nodes (not converged)"
BOOTED=1
LAB_CONVERGE=0 "$LABSH" up "$NODES" >"$LOGDIR/lab-up.log" 2>&1 || die "lab.sh up failed ($LOGDIR/lab-up.log)"

FAILED=0
run() { # run <label> <mitogen 0|1> <playbook> [args]: times one playbook and prints its line
  local label=$1 mitogen=$2 t rc=0 changed strategy=linear
  shift 2
  ((mitogen)) && strategy=mitogen
  t=$SECONDS
  LAB_MITOGEN=$mitogen "$LABSH" play "$@" >"$LOGDIR/$label-$strategy.log" 2>&1 || rc=$?
  changed=$(sed -n 's/^\(n[0-9]*\) *: .*changed=\([0-9]*\) .*/\1:\2/p' "$LOGDIR/$label-$strategy.log" | paste -sd, -)
  echo "playbook=$label strategy=$strategy seconds=$((SECONDS - t)) changed=${changed:-?}"
  ((rc == 0)) || { FAILED=1; log "$label ($strategy) failed: $LOGDIR/$label-$strategy.log"; }
}

run site-first 0 site.yml
run site-noop 0 site.yml
run site-noop 1 site.yml
run reset-all 1 playbooks/reset.yml -e node=all
run site-first 1 site.yml
log "booting n$((NODES + 1)) (not converged)"
LAB_CONVERGE=0 "$LABSH" up $((NODES + 1)) >"$LOGDIR/lab-up-4.log" 2>&1 || die "lab.sh up $((NODES + 1)) failed"
run add-node 1 playbooks/add_node.yml -e node=n$((NODES + 1))
run remove-node 1 playbooks/remove_node.yml -e node=n$((NODES + 1))
run reset-node 1 playbooks/reset.yml -e node=n$((NODES + 1))
run add-node 0 playbooks/add_node.yml -e node=n$((NODES + 1))
exit "$FAILED"
