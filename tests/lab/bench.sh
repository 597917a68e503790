#!/usr/bin/env bash
# make bench: one run, one report. Measures, side by side on this machine, and writes docs/benchmarks.md with its
# plots (tests/bench/report.py) from the figures left in .bench/results/:
#   1 plan        tests/bench/plan.py: mesh_plan for 10, 100, 1000 nodes, pure and through Ansible, against a
#                 do-nothing module
#   2 node        tests/lab/bench_node.sh: the node program's apply and check for 10, 100, 1000 peers on n1, and the
#                 guard's CPU time over BENCH_GUARD_IDLE idle seconds on every node
#   3 playbooks   every playbook, timed with Ansible's own strategy (linear) and with mitogen's
#   4 recovery    tests/lab/bench/10-recovery.sh: lost pings and the longest gap for each fault, cleartext counted
#   5 throughput  tests/lab/bench/20-throughput.sh: iperf3 pod to pod over the tunnel against the underlay
# With no lab up it boots a lab of 3 fresh nodes (tests/lab/lab.sh) and stops it at the end; a lab that is up (3
# nodes, converged or not) is used and left up, converged, with 3 nodes. Figures are printed, never asserted: the
# exit status is 1 only when a step failed (its figures are then missing or marked failed in the report).
#
# env: BENCH_SECTIONS     which sections to run (default plan,node,playbooks,recovery,throughput)
#      BENCH_KEEP=1       keep the figures of the sections not run now (default: start from an empty results folder)
#      BENCH_PLAYBOOKS    which part of the playbooks section: all (default), 3-nodes, or 4th-node (its lines
#                         replace those of an earlier run's, with BENCH_KEEP=1)
#      BENCH_GUARD_IDLE   idle seconds for the guard's CPU time (default 300)
#      BENCH_LAB_KEEP=1   leave a lab this run booted up afterwards
#      BENCH_RESULTS      the results folder (default .bench/results)
#      LAB_SUITE, LAB_AUTH, LAB_TUNNEL_TYPE: as tests/lab/lab.sh takes them
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LABSH=$HERE/lab.sh
PY=$ROOT/.venv/bin/python
SECTIONS=${BENCH_SECTIONS:-plan,node,playbooks,recovery,throughput}
RESULTS=${BENCH_RESULTS:-$ROOT/.bench/results}
GUARD_IDLE=${BENCH_GUARD_IDLE:-300}
LOGDIR=$ROOT/.lab/logs/bench-$(date +%Y%m%d-%H%M%S)
NODES=3
export BENCH_RESULTS=$RESULTS

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
wants() { [[ ,$SECTIONS, = *,$1,* ]]; }

for s in ${SECTIONS//,/ }; do
  case $s in plan | node | playbooks | recovery | throughput) ;; *) die "BENCH_SECTIONS: no section '$s'" ;; esac
done
[[ $GUARD_IDLE =~ ^[0-9]+$ ]] || die "BENCH_GUARD_IDLE=$GUARD_IDLE: a number of seconds"
PLAYBOOKS_PART=${BENCH_PLAYBOOKS:-all}
case $PLAYBOOKS_PART in all | 3-nodes | 4th-node) ;; *) die "BENCH_PLAYBOOKS=$PLAYBOOKS_PART: all, 3-nodes or 4th-node" ;; esac
part() { [[ $PLAYBOOKS_PART = all || $PLAYBOOKS_PART = "$1" ]]; }
[[ -x $PY ]] || die "no $PY: run make setup (make bench does)"
exec </dev/null # ssh must never eat the script's stdin

BOOTED=0
FAILED=0
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  local rc=$?
  if ((BOOTED)) && [[ ${BENCH_LAB_KEEP:-0} != 1 ]]; then
    log "stopping the lab this run booted"
    "$LABSH" down >&2 || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS" "$LOGDIR"
if [[ ${BENCH_KEEP:-0} != 1 ]]; then rm -f "$RESULTS"/*.txt; fi
for s in ${SECTIONS//,/ }; do
  if [[ $s = playbooks && $PLAYBOOKS_PART = 4th-node && -f $RESULTS/$s.txt ]]; then
    sed -i -E '/^playbook=(add|remove|reset)-node /d' "$RESULTS/$s.txt"
  elif [[ $s = playbooks && $PLAYBOOKS_PART = 3-nodes && -f $RESULTS/$s.txt ]]; then
    sed -i -E '/^playbook=/{/^playbook=(add|remove|reset)-node /!d}' "$RESULTS/$s.txt"
  else
    rm -f "$RESULTS/$s.txt"
  fi
done
commit=$(git -C "$ROOT" rev-parse --short HEAD)
git -C "$ROOT" diff --quiet HEAD -- . ':!docs/benchmarks.md' ':!docs/benchmarks' || commit+=+dirty
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [[ -s $RESULTS/meta.txt ]]; then
  # figures kept from an earlier run (BENCH_KEEP=1): its stamp stays, and this run is named beside it
  reruns=$(grep -c '^rerun_' "$RESULTS/meta.txt" || true)
  echo "rerun_$((reruns + 1))=$now at $commit: BENCH_SECTIONS=$SECTIONS BENCH_PLAYBOOKS=$PLAYBOOKS_PART" >>"$RESULTS/meta.txt"
else
  {
    echo "date=$now"
    echo "commit=$commit"
    echo "host_cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1) ($(nproc) cores)"
    echo "command=make bench (BENCH_SECTIONS=$SECTIONS)"
  } >"$RESULTS/meta.txt"
fi

# ---------------------------------------------------------------- 1 plan (the controller alone)

if wants plan; then
  log "1 plan: tests/bench/plan.py"
  "$PY" "$ROOT/tests/bench/plan.py" --out "$RESULTS/plan.txt" || { FAILED=1; log "plan: failed"; }
fi

# ---------------------------------------------------------------- the lab

nodes_ok() { "$LABSH" status 2>/dev/null | awk '$1 ~ /^n[0-9]+$/ && $NF == "ok" && $(NF - 1) == "ssh" { n++ } END { print n + 0 }'; }
converged() { # every node runs the guard, which only a converge installs
  local i
  for ((i = 1; i <= NODES; i++)); do "$LABSH" ssh "$i" 'systemctl is-active -q k8s-ipsec-guard' || return 1; done
}

FAILED_PLAYS=()
play() { # play <label> <mitogen 0|1> <playbook> [args]: times one playbook, appends its line to playbooks.txt
  local label=$1 mitogen=$2 t rc=0 changed strategy=linear extra='' logf
  shift 2
  ((mitogen)) && strategy=mitogen
  logf=$LOGDIR/$label-$strategy.log
  t=$(date +%s.%N)
  LAB_MITOGEN=$mitogen "$LABSH" play "$@" >"$logf" 2>&1 || rc=$?
  if ((rc == 4)); then
    # A node unreachable (ssh timing out on the loaded, emulated CPUs): every playbook checks all nodes before it
    # changes any, so it is run once more, as an operator would, and timed again; the line says so.
    log "$label ($strategy): a node was unreachable (exit 4); running it once more"
    mv "$logf" "$logf.unreachable"
    extra+=" attempts=2"
    rc=0
    t=$(date +%s.%N)
    LAB_MITOGEN=$mitogen "$LABSH" play "$@" >"$logf" 2>&1 || rc=$?
  fi
  t=$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  changed=$(sed -n 's/^\(n[0-9]*\) *: .*changed=\([0-9]*\) .*/\1:\2/p' "$logf" | paste -sd, -)
  [[ $label != add-node ]] || extra+=" $(add_node_parts "$logf")"
  echo "playbook=$label strategy=$strategy seconds=$t changed=${changed:--} rc=$rc$extra" | tee -a "$RESULTS/playbooks.txt"
  ((rc == 0)) || { FAILED=1; FAILED_PLAYS+=("$label/$strategy"); log "$label ($strategy) failed: $logf"; }
  return "$rc"
}

# add_node.yml's two parts, from the profile_tasks lines (cumulative time at each task's start) of its log: from the
# members' play to the play after it, and from there to the end.
add_node_parts() {
  awk '
    function secs(s, a) { split(s, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
    /^PLAY \[/ { play = $0; if (seen_members && !next_play) want_next = 1; if (play ~ /Give the members the new peers/) want_members = 1 }
    /\([0-9]+:[0-9]+:[0-9.]+\) +[0-9]+:[0-9]+:[0-9.]+ \*+ *$/ {
      cum = secs($(NF - 1)); last = cum
      if (want_members) { members = cum; want_members = 0; seen_members = 1 }
      else if (want_next) { next_play = cum; want_next = 0 }
    }
    END { if (seen_members && next_play) printf "members_s=%.1f new_node_s=%.1f", next_play - members, last - next_play }
  ' "$1"
}

need_lab=0
for s in node playbooks recovery throughput; do wants "$s" && need_lab=1; done
if ((need_lab)); then
  up=$(nodes_ok)
  if ((up == 0)); then
    log "no lab up: booting $NODES fresh nodes"
    BOOTED=1
    LAB_CONVERGE=0 "$LABSH" up "$NODES" >"$LOGDIR/lab-up.log" 2>&1 || die "lab.sh up failed ($LOGDIR/lab-up.log)"
    was_converged=0
  elif ((up == NODES)); then
    was_converged=0
    converged && was_converged=1
    log "using the lab that is up ($up nodes, converged: $was_converged)"
  else
    die "the lab has $up nodes up; $NODES needed (tests/lab/lab.sh up $NODES)"
  fi
  # shellcheck disable=SC2016 # expanded on the node
  grep -q '^lab_cpu=' "$RESULTS/meta.txt" || {
    echo "lab_cpu=$("$LABSH" ssh 1 'sed -n "s/^model name[[:space:]]*: //p" /proc/cpuinfo | head -n1') (QEMU -accel tcg, 1 per node)"
    echo "emulated=yes"
    # the package's version: swanctl --version needs a running charon, and the nodes may not be converged yet
    echo "platform=$("$LABSH" ssh 1 '. /etc/os-release
      echo "$PRETTY_NAME, kernel $(uname -r), strongSwan $(dpkg-query -W -f "\${Version}" charon-systemd)"')"
    echo "nodes=$NODES"
  } >>"$RESULTS/meta.txt"

  # -------------------------------------------------------------- 3 playbooks, on 3 nodes
  [[ -s $RESULTS/playbooks.txt ]] || ! wants playbooks ||
    echo "# command: make bench (tests/lab/bench.sh: tests/lab/lab.sh play, LAB_MITOGEN=0 and 1)" >"$RESULTS/playbooks.txt"
  if wants playbooks && part 3-nodes; then
    log "3 playbooks: 3 nodes (logs in $LOGDIR)"
    did_reset=0
    if ((was_converged)); then play reset-all 1 playbooks/reset.yml -e node=all && did_reset=1; fi
    play site-first 0 site.yml || die "site.yml failed: the lab is not converged"
    play site-noop 0 site.yml || true
    play site-noop 1 site.yml || true
    if [[ ${LAB_AUTH:-pubkey} = psk ]]; then
      play rotate-psk 0 playbooks/rotate.yml || true
      play rotate-psk 1 playbooks/rotate.yml || true
    else
      play rotate-certs 0 playbooks/rotate.yml || true
      play rotate-certs 1 playbooks/rotate.yml || true
      play rotate-ca 0 playbooks/rotate.yml -e rotate=ca || true
      play rotate-ca 1 playbooks/rotate.yml -e rotate=ca || true
    fi
    ((did_reset)) || play reset-all 1 playbooks/reset.yml -e node=all || true
    play site-first 1 site.yml || die "site.yml (mitogen) failed: the lab is not converged"
  elif ! converged; then
    log "converging the lab (site.yml, not timed)"
    "$LABSH" play site.yml >"$LOGDIR/converge.log" 2>&1 || die "site.yml failed ($LOGDIR/converge.log)"
  fi

  # -------------------------------------------------------------- 2 node program
  if wants node; then
    log "2 node program: tests/lab/bench_node.sh, guard idle $GUARD_IDLE s"
    out=$(BENCH_GUARD_IDLE=$GUARD_IDLE "$HERE/bench_node.sh" 2>>"$LOGDIR/bench-node.log") || { FAILED=1; log "bench_node.sh failed"; }
    { echo "# command: make bench (BENCH_GUARD_IDLE=$GUARD_IDLE tests/lab/bench_node.sh)"; echo "$out"; } >"$RESULTS/node.txt"
    echo "$out"
  fi

  # -------------------------------------------------------------- 4 recovery, 5 throughput (e2e's helpers)
  only=
  wants recovery && only+=10,
  wants throughput && only+=20,
  if [[ -n $only ]]; then
    log "4/5 recovery, throughput: tests/lab/e2e.sh --running --checks-dir tests/lab/bench --only ${only%,}"
    "$HERE/e2e.sh" --running --checks-dir "$HERE/bench" --only "${only%,}" || { FAILED=1; log "recovery/throughput: a step failed"; }
  fi

  # -------------------------------------------------------------- 3 playbooks, a 4th node
  if wants playbooks && part 4th-node; then
    new=$((NODES + 1))
    log "3 playbooks: n$new added, removed and reset, with each strategy"
    if LAB_CONVERGE=0 "$LABSH" up "$new" >"$LOGDIR/lab-up-$new.log" 2>&1; then
      for mitogen in 1 0; do
        play add-node "$mitogen" playbooks/add_node.yml -e "node=n$new" || true
        play remove-node "$mitogen" playbooks/remove_node.yml -e "node=n$new" || true
        play reset-node "$mitogen" playbooks/reset.yml -e "node=n$new" || true
      done
    else
      FAILED=1
      log "lab.sh up $new failed ($LOGDIR/lab-up-$new.log)"
    fi
    LAB_CONVERGE=0 "$LABSH" up "$NODES" >"$LOGDIR/lab-down-$new.log" 2>&1 || log "lab.sh up $NODES (stopping n$new) failed"
  fi
fi

# ---------------------------------------------------------------- the report

"$PY" "$ROOT/tests/bench/report.py" --results "$RESULTS" --out "$ROOT/docs/benchmarks.md" \
  --plots "$ROOT/docs/benchmarks" || FAILED=1
((${#FAILED_PLAYS[@]} == 0)) || log "failed playbooks: ${FAILED_PLAYS[*]}"
((FAILED == 0)) || log "some steps failed: their figures are missing or marked failed; logs in $LOGDIR"
exit "$FAILED"
