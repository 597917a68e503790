# shellcheck shell=bash
# 36-check-diff: site.yml --check --diff tells the truth. On n2 one managed file drifts (a line appended to the
# sysctl file) and one unit stops (the keeper's timer); the dry run over every node reports exactly those two tasks
# as changed on n2, nothing on the others, shows the file's diff and changes nothing on the node; a normal run with
# --limit n2 then repairs both.

drift_file=/etc/sysctl.d/90-k8s-ipsec.conf
drift_line="# drift made by $CHECK"
drift_unit=k8s-ipsec-keeper.timer
# The two tasks that own them, as the default callback names them.
want_changed="n2|k8s_ipsec.cni.node_prep : Load the kernel modules at boot, and persist the sysctls
n2|k8s_ipsec.cni.strongswan : Start strongSwan, and the mesh keeper on its timer, now and at every boot"

node_drifted() { # exit 0 when n2 still has both drifts
  L 2 "grep -qxF '$drift_line' $drift_file && ! systemctl is-active --quiet $drift_unit"
}

changed_tasks() { # changed_tasks <log>: "<host>|<task>" for every task or handler a host reported changed
  awk '/^(TASK|RUNNING HANDLER) \[/ { task = $0; sub(/^[^[]*\[/, "", task); sub(/\] \**$/, "", task) }
       match($0, /^changed: \[[^]]+\]/) { print substr($0, 11, RLENGTH - 11) "|" task }' "$1" | sort -u
}

L 2 "echo '$drift_line' >>$drift_file && systemctl stop $drift_unit" || true
t=$SECONDS
if node_drifted && playbook check-diff site.yml --check --diff >/dev/null; then
  got=$(changed_tasks "$LOGDIR/check-diff.log")
  if [[ $got != "$want_changed" ]]; then
    r=FAIL fig="changed tasks: ${got//$'\n'/; } (want only the sysctl file and the timer on n2; check-diff.log)"
  elif ! grep -qxF -- "+$drift_line" "$LOGDIR/check-diff.log" && ! grep -qxF -- "-$drift_line" "$LOGDIR/check-diff.log"; then
    r=FAIL fig="the diff does not show the drifted line of $drift_file (check-diff.log)"
  elif ! node_drifted; then
    r=FAIL fig="--check changed n2 (the drifted line or the stopped timer is gone)"
  else
    r=PASS fig="n2: 2 tasks changed (sysctl file with its diff, keeper timer), others 0, node untouched, $((SECONDS - t)) s"
  fi
else
  r=FAIL fig="the drift could not be made, or site.yml --check --diff failed (check-diff.log)"
fi
record "site.yml --check --diff reports exactly the drift" "$r" "$fig"

t=$SECONDS
if playbook check-diff-repair site.yml --limit n2 >/dev/null &&
  L 2 "! grep -qxF '$drift_line' $drift_file && systemctl is-active --quiet $drift_unit"; then
  record "a normal run repairs it" PASS "n2's sysctl file and keeper timer back in $((SECONDS - t)) s"
else
  record "a normal run repairs it" FAIL "the drift stays on n2 after site.yml --limit n2 (check-diff-repair.log)"
  L 2 "sed -i '\\|^$drift_line\$|d' $drift_file; systemctl start $drift_unit" || true
fi
