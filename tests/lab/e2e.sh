#!/usr/bin/env bash
# End-to-end test of the collection on the lab (issue 4): boot 3 QEMU nodes, converge site.yml, then prove the data
# path with ten checks, print a results table, tear the lab down (always). Exit status 1 when any check fails.
#
# usage: tests/lab/e2e.sh          (make e2e)
# env:   E2E_KEEP=1    leave the lab running afterwards (then: tests/lab/lab.sh down)
#        E2E_CYCLES    pod ADD/DEL cycles of check 7 (default 300)
#        E2E_SETTLE    seconds the SAs may take to settle (default 240)
# Logs: .lab/logs/e2e-<time>/ (ansible runs, captures, probes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LABSH=$HERE/lab.sh
NS=k8sipsec-lab
N=3
CYCLES=${E2E_CYCLES:-300}
SETTLE=${E2E_SETTLE:-240}
LOGDIR=$ROOT/.lab/logs/e2e-$(date +%Y%m%d-%H%M%S)
RUNTIME="python3 /root/cni_runtime.py"
CLUSTER_NET=10.128.0.0/16
exec </dev/null # ssh must never eat the script's stdin
mkdir -p "$LOGDIR" "$ROOT/.lab/cp"
LAB_SSH_CONTROL_DIR=$(mktemp -d "$ROOT/.lab/cp/XXXXXX")
export LAB_SSH_CONTROL_DIR

T0=$SECONDS
ts() { printf '[e2e %s +%ss] %s\n' "$(date +%T)" "$((SECONDS - T0))" "$*"; }

RESULTS=()
FAILED=0
record() { # record <check> <PASS|FAIL> <figure>
  RESULTS+=("$1|$2|$3")
  [[ $2 = PASS ]] || FAILED=1
  ts "check $1: $2 -- $3"
}

CAP_PID=
CYC_PID=
TABLE_DONE=0
print_table() {
  local row c r f
  ((TABLE_DONE)) && return 0
  TABLE_DONE=1
  echo
  echo "================ e2e results ($((SECONDS - T0)) s, logs in ${LOGDIR#"$ROOT"/}) ================"
  printf '%-34s %-5s %s\n' check result figure
  for row in "${RESULTS[@]}"; do
    IFS='|' read -r c r f <<<"$row"
    printf '%-34s %-5s %s\n' "$c" "$r" "$f"
  done
  echo "=================================================================================="
}

cleanup() {
  local rc=$?
  set +e
  if [[ -n $CAP_PID ]]; then kill -INT "$CAP_PID" 2>/dev/null; wait "$CAP_PID" 2>/dev/null; fi
  if [[ -n $CYC_PID ]]; then kill "$CYC_PID" 2>/dev/null; wait "$CYC_PID" 2>/dev/null; fi
  ((rc == 0)) || [[ ${#RESULTS[@]} -gt 0 && $FAILED = 1 ]] || RESULTS+=("e2e script|FAIL|aborted with status $rc")
  print_table
  if [[ ${E2E_KEEP:-0} = 1 ]]; then
    ts "E2E_KEEP=1: lab left running; stop it with tests/lab/lab.sh down"
  else
    ts "teardown"
    "$LABSH" down
  fi
  ts "e2e total $((SECONDS - T0)) s"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

L() { "$LABSH" ssh "$@"; }
pod_gw() { echo "10.128.$1.1"; }
declare -A POD_IP=()

# ---------------------------------------------------------------- helpers

sa_state() { # sa_state <i>: one line from check_sas.py; status 0 when node i is as expected
  L "$1" 'swanctl --list-conns 2>/dev/null; echo =====SAS=====; swanctl --list-sas 2>/dev/null' 2>/dev/null |
    python3 "$HERE/files/check_sas.py" $((N - 1))
}

settle_sas() { # settle_sas <label>: wait until every node passes; records check 1 (<label>)
  local t0=$SECONDS i out bad
  while :; do
    bad=
    for ((i = 1; i <= N; i++)); do
      out=$(sa_state "$i") || bad+="n$i: $out; "
    done
    [[ -z $bad ]] && break
    if ((SECONDS - t0 >= SETTLE)); then
      record "1 SAs $1" FAIL "not settled after $((SECONDS - t0)) s: $bad"
      for ((i = 1; i <= N; i++)); do L "$i" 'swanctl --list-sas' >"$LOGDIR/sas-$1-n$i.txt" 2>&1 || true; done
      return 1
    fi
    sleep 3
  done
  record "1 SAs $1" PASS "settled in $((SECONDS - t0)) s; n1 $(sa_state 1)"
}

pod_up() { # pod_up <i>: pod a<i> on node i with its HTTP server
  local ip
  ip=$(L "$1" "$RUNTIME pod-up a$1") || { ts "pod a$1 on n$1: ADD failed"; return 1; }
  POD_IP[$1]=$ip
  ts "pod a$1 on n$1: ${POD_IP[$1]}"
}

# probe lines for node <i>: "<label> <netns-or-host> <target ip> <expected body>"
probes_for() {
  local i=$1 j
  for ((j = 1; j <= N; j++)); do
    ((j == i)) && continue
    echo "a$i->a$j pod-a$i ${POD_IP[$j]} pod=a$j client=${POD_IP[$i]}"
  done
  for ((j = 1; j <= N; j++)); do
    echo "n$i->a$j host ${POD_IP[$j]} pod=a$j client=$(pod_gw "$i")"
  done
}

# Runs the probes on node i in parallel: ping (any of 3 answered) and one HTTP GET each.
# Prints "<label> ping=<ok|fail> http=<body>" per probe.
run_probes() { # run_probes <i> <wait seconds> <probe lines on stdin>
  local i=$1 w=$2 probes
  probes=$(base64 -w0)
  L "$i" "W=$w P=$probes bash -s" <<'EOS'
set -u
tmp=$(mktemp -d)
k=0
while read -r label where ip _; do
  k=$((k + 1))
  if [ "$where" = host ]; then pre=""; else pre="ip netns exec $where"; fi
  (
    if $pre ping -n -q -c 3 -i 0.3 -W "$W" "$ip" >/dev/null 2>&1; then p=ok; else p=fail; fi
    b=$($pre curl -s -m "$((W * 2))" "http://$ip:8080/" 2>/dev/null) || b="error"
    echo "$label ping=$p http=$b"
  ) >"$tmp/$k" &
done < <(echo "$P" | base64 -d)
wait
cat "$tmp"/* 2>/dev/null
rm -rf "$tmp"
EOS
}

reach_probe() { # reach_probe <label>: every pod -> every remote pod, every node -> every pod; sets REACH_FIG
  local i out line label expect ok=0 total=0 bad=
  for ((i = 1; i <= N; i++)); do
    out=$(probes_for "$i" | run_probes "$i" 3) || true
    echo "$out" >>"$LOGDIR/probes-${1// /_}.txt"
    while read -r label _ _ expect; do
      total=$((total + 1))
      line=$(grep -m1 "^$label " <<<"$out" || true)
      if [[ $line = "$label ping=ok http=$expect" ]]; then ok=$((ok + 1)); else bad+="${line:-$label no answer}; "; fi
    done < <(probes_for "$i")
  done
  if ((ok == total)); then
    REACH_FIG="$ok/$total ping+HTTP ok, every pod saw the asker's own address"
    return 0
  fi
  REACH_FIG="$ok/$total ok: $bad"
  return 1
}

reach() { # reach <label> [retry seconds]: records check 2 (<label>); retries while the data path settles
  local t0=$SECONDS
  until reach_probe "$1"; do
    if ((SECONDS - t0 >= ${2:-0})); then
      record "2 reach $1" FAIL "$REACH_FIG"
      return 1
    fi
    sleep 3
  done
  record "2 reach $1" PASS "$REACH_FIG (after $((SECONDS - t0)) s)"
}

recover() { # recover <label>: the SAs settle and every pod is reachable again (checks 1 and 2)
  local rc=0
  settle_sas "$1" || rc=1
  reach "$1" 60 || rc=1
  return "$rc"
}

capture_start() { # capture_start <name>: tcpdump on br0 (inside the namespace), SSH excluded
  CAP_FILE=$LOGDIR/$1.pcap
  ip netns exec "$NS" tcpdump -Z root -i br0 -n -U -s 128 -w "$CAP_FILE" 'not tcp port 22' 2>"$LOGDIR/$1.tcpdump.log" &
  CAP_PID=$!
  local k
  for ((k = 0; k < 50; k++)); do
    grep -q 'listening on' "$LOGDIR/$1.tcpdump.log" 2>/dev/null && return 0
    sleep 0.1
  done
}

capture_stop() { # prints "<esp packets> <cleartext pod packets>"
  sleep 1
  kill -INT "$CAP_PID" 2>/dev/null || true
  wait "$CAP_PID" 2>/dev/null || true
  CAP_PID=
  local esp clear
  esp=$(tcpdump -n -r "$CAP_FILE" esp 2>/dev/null | wc -l)
  # any packet whose outer IP header carries a pod address is cleartext pod traffic
  clear=$(tcpdump -n -r "$CAP_FILE" "ip and net $CLUSTER_NET" 2>/dev/null | tee "$CAP_FILE.cleartext.txt" | wc -l)
  echo "$esp $clear"
}

unit_state() { # unit_state <i>: ok when cni0, the FORWARD jump and every tunnel device are back
  L "$1" "ip -4 -o addr show dev cni0 | grep -q ' $(pod_gw "$1")/24 ' &&
    iptables -w -C FORWARD -j K8S-IPSEC-FORWARD &&
    systemctl is-active -q k8s-ipsec-cni0.service k8s-ipsec-tunnels.service k8s-ipsec-firewall.service strongswan.service &&
    for j in \$(seq 1 $N); do [ \$j = $1 ] || ip -o route show dev vti\$j | grep -q 10.128.\$j.0/24 || exit 1; done" \
    >/dev/null 2>&1
}

playbook() { # playbook <log name> <playbook> [args]: runs it in the namespace, output to the log
  local name=$1 rc=0
  shift
  "$LABSH" play "$@" >"$LOGDIR/$name.log" 2>&1 || rc=$?
  sed -n '/^PLAY RECAP/,$p' "$LOGDIR/$name.log"
  if ((rc != 0)); then
    ts "$name failed (status $rc); last lines of $LOGDIR/$name.log:"
    tail -n 40 "$LOGDIR/$name.log"
  fi
  return "$rc"
}

# ---------------------------------------------------------------- the lab

ts "lab up: $N nodes (image, boot)"
if ! LAB_CONVERGE=0 "$LABSH" up "$N" 2>&1 | tee "$LOGDIR/lab-up.log"; then
  record "lab up" FAIL "see $LOGDIR/lab-up.log"
  exit 1
fi
ts "nodes reachable"

t=$SECONDS
if ! playbook converge site.yml; then
  record "converge site.yml" FAIL "status != 0, see converge.log"
  exit 1
fi
CONVERGE_S=$((SECONDS - t))
ts "site.yml converged in $CONVERGE_S s"

# ---------------------------------------------------------------- check 7 (part 1): ADD/DEL cycles, on n1 itself
# They take minutes on the emulated CPU: they run in the background while check 10 converges a second time (neither
# touches what the other does: the cycles only add and remove veths on cni0 and leases under /run).
L 1 'cat >/root/cni_runtime.py' <"$HERE/files/cni_runtime.py"
ts "check 7: $CYCLES pod ADD/DEL cycles on n1 (background)"
T7=$SECONDS
L 1 "$RUNTIME cycle $CYCLES && $RUNTIME add probe7 && $RUNTIME del probe7" >"$LOGDIR/cycles.log" 2>&1 &
CYC_PID=$!

# ---------------------------------------------------------------- check 10: idempotence (right after converging)
t=$SECONDS
playbook converge2 site.yml >/dev/null || true
recap=$(sed -n '/^PLAY RECAP/,$p' "$LOGDIR/converge2.log" | grep -E '^\S+ +: ok=' || true)
changed=$(awk '{for (k = 1; k <= NF; k++) if ($k ~ /^(changed|failed|unreachable)=/) printf "%s:%s ", $1, $k}' <<<"$recap")
if [[ -n $recap ]] && [[ $(grep -c ' ok=' <<<"$recap") -ge $N ]] && ! grep -qE '(changed|failed|unreachable)=[1-9]' <<<"$recap"; then
  record "10 second run changed=0" PASS "$(awk '{printf "%s %s, ", $1, $4}' <<<"$recap")in $((SECONDS - t)) s"
else
  record "10 second run changed=0" FAIL "${changed:-no PLAY RECAP} (converge2.log)"
fi

if wait "$CYC_PID"; then
  record "7 $CYCLES ADD/DEL cycles (n1)" PASS "$(head -n1 "$LOGDIR/cycles.log"), then ADD got $(sed -n 2p "$LOGDIR/cycles.log"): pool not exhausted"
else
  record "7 $CYCLES ADD/DEL cycles (n1)" FAIL "$(tail -n 2 "$LOGDIR/cycles.log" | tr '\n' ' ') after $((SECONDS - T7)) s"
fi
CYC_PID=

# ---------------------------------------------------------------- pods
for ((i = 1; i <= N; i++)); do
  L "$i" 'cat >/root/cni_runtime.py' <"$HERE/files/cni_runtime.py"
  pod_up "$i" || true
done

# ---------------------------------------------------------------- check 1 (initial), 2 and 3
settle_sas initial || true
capture_start reach
reach initial 30 || true
read -r esp clear < <(capture_stop)
if ((esp > 0 && clear == 0)); then
  record "3 br0 capture: ESP only" PASS "$esp ESP packets, $clear cleartext pod packets"
else
  record "3 br0 capture: ESP only" FAIL "$esp ESP packets, $clear cleartext pod packets (reach.pcap)"
fi

# ---------------------------------------------------------------- check 8: 10 MiB between pods on different nodes
ok8=0
fig8=
for ((i = 1; i <= N; i++)); do
  j=$((i % N + 1))
  out=$(L "$i" "ip netns exec pod-a$i curl -s -o /dev/null -m 120 -w '%{http_code} %{size_download} %{time_total}' \
    http://${POD_IP[$j]}:8080/blob" 2>&1) || true
  read -r code size secs <<<"$out"
  if [[ $code = 200 && $size = 10485760 ]]; then ok8=$((ok8 + 1)); fi
  fig8+="a$i<-a$j ${size:-?}B ${secs:-?}s; "
done
if ((ok8 == N)); then record "8 10 MiB pod transfer" PASS "$fig8"; else record "8 10 MiB pod transfer" FAIL "$fig8"; fi

# ---------------------------------------------------------------- check 5: strongSwan restart, IKE terminate
t=$SECONDS
L 3 'systemctl restart strongswan' || true
if recover "after restart (n3)"; then r=PASS; else r=FAIL; fi
record "5 restart strongswan (n3)" "$r" "SAs and pods back in $((SECONDS - t)) s"

conn=$(L 1 'swanctl --list-conns 2>/dev/null' | awk -F: '/^[^ ].*: IKEv2/ {print $1; exit}' || true)
t=$SECONDS
L 1 "swanctl --terminate --ike '$conn' --timeout 10" >/dev/null 2>&1 || true
if recover "after terminate (n1)"; then r=PASS; else r=FAIL; fi
record "5 terminate --ike $conn (n1)" "$r" "SAs and pods back in $((SECONDS - t)) s"

# ---------------------------------------------------------------- check 6: fail-closed
failclosed() { # failclosed <label> <probe lines "<node> <label> <netns|host> <ip>">: every probe must fail, 0 cleartext
  local label=$1 lines node nodes out answered=0 total=0 esp clear
  lines=$(cat)
  capture_start "failclosed-$label"
  mapfile -t nodes < <(awk '{print $1}' <<<"$lines" | sort -u)
  for node in "${nodes[@]}"; do
    out=$(awk -v n="$node" '$1 == n {print $2, $3, $4, "-"}' <<<"$lines" | run_probes "$node" 2) || true
    echo "$out" >>"$LOGDIR/probes-failclosed-$label.txt"
    total=$((total + $(grep -c . <<<"$out")))
    answered=$((answered + $(grep -c -E 'ping=ok|http=pod=' <<<"$out" || true)))
  done
  read -r esp clear < <(capture_stop)
  if ((answered == 0 && clear == 0 && total > 0)); then
    record "6 fail-closed: $label" PASS "$total/$total probes dropped, $clear cleartext pod packets on br0"
  else
    record "6 fail-closed: $label" FAIL "$answered/$total probes answered, $clear cleartext pod packets (failclosed-$label.pcap)"
  fi
}

L 3 'systemctl stop strongswan' || true
sleep 2
failclosed "strongswan stopped on n3" <<EOF
1 a1->a3 pod-a1 ${POD_IP[3]}
1 n1->a3 host ${POD_IP[3]}
2 a2->a3 pod-a2 ${POD_IP[3]}
2 n2->a3 host ${POD_IP[3]}
3 a3->a1 pod-a3 ${POD_IP[1]}
3 a3->a2 pod-a3 ${POD_IP[2]}
EOF
L 3 'systemctl start strongswan' || true
recover "after strongswan start (n3)" || true

L 1 'ip link del vti2' || true
failclosed "vti2 deleted on n1" <<EOF
1 a1->a2 pod-a1 ${POD_IP[2]}
1 n1->a2 host ${POD_IP[2]}
2 a2->a1 pod-a2 ${POD_IP[1]}
EOF
L 1 'systemctl restart k8s-ipsec-tunnels.service' || true
recover "after tunnels restart (n1)" || true

# ---------------------------------------------------------------- check 4: reboot n2 (and check 7, part 2)
boot_id=$(L 2 'cat /proc/sys/kernel/random/boot_id')
"$LABSH" ssh-close 2
t=$SECONDS
LAB_SSH_CONTROL_DIR='' timeout 15 "$LABSH" ssh 2 'systemctl reboot' >/dev/null 2>&1 || true
"$LABSH" ssh-close 2
while :; do
  # no shared connection while the node goes down: a master to the old boot would make the next calls hang
  id=$(LAB_SSH_CONTROL_DIR='' timeout 10 "$LABSH" ssh 2 'cat /proc/sys/kernel/random/boot_id' 2>/dev/null || true)
  [[ -n $id && $id != "$boot_id" ]] && break
  if ((SECONDS - t > 420)); then break; fi
  sleep 2
done
t_ssh=$((SECONDS - t))
until unit_state 2 || ((SECONDS - t > 480)); do sleep 2; done
t_units=$((SECONDS - t))
units_ok=$(unit_state 2 && echo y || echo n)
pods_left=$(L 2 'ip netns list | grep -c "^pod-" || true')
r4=PASS
[[ $units_ok = y ]] || r4=FAIL
settle_sas "after reboot (n2)" || r4=FAIL
t_sas=$((SECONDS - t))
if pod_up 2; then add_ok=y; else add_ok=n; fi
reach "after reboot (n2)" 60 || r4=FAIL
t_reach=$((SECONDS - t))
record "4 reboot n2" "$r4" "ssh ${t_ssh}s, cni0+FORWARD+vti ${t_units}s (ok: $units_ok), SAs ${t_sas}s, pods reachable ${t_reach}s; pods left after reboot: $pods_left"
if [[ $add_ok = y ]]; then
  record "7 ADD after reboot (n2)" PASS "pod a2 re-added: ${POD_IP[2]} (host-local dataDir under /run)"
else
  record "7 ADD after reboot (n2)" FAIL "CNI ADD failed after reboot"
fi

# ---------------------------------------------------------------- check 9: repair cni0 and the FORWARD rules on n3
L 3 'ip link del cni0; iptables -w -D FORWARD -j K8S-IPSEC-FORWARD; iptables -w -F K8S-IPSEC-FORWARD; iptables -w -X K8S-IPSEC-FORWARD' || true
broken=$(L 3 'ip link show cni0 >/dev/null 2>&1 && echo cni0-still-there; iptables -w -S K8S-IPSEC-FORWARD >/dev/null 2>&1 && echo chain-still-there; true')
t=$SECONDS
ok9=y
playbook repair-cni_bridge playbooks/cni_bridge.yml --limit n3 || ok9=n
playbook repair-forward_rules playbooks/forward_rules.yml --limit n3 || ok9=n
L 3 "$RUNTIME pod-down a3" >/dev/null 2>&1 || true
pod_up 3 || ok9=n
recover "after repair (n3)" || ok9=n
if [[ $ok9 = y && -z $broken ]] && unit_state 3; then
  record "9 repair n3 (cni0 + FORWARD)" PASS "playbooks, pods, SAs and reach back in $((SECONDS - t)) s"
else
  record "9 repair n3 (cni0 + FORWARD)" FAIL "playbooks ok: $ok9; breakage: ${broken:-done}; units: $(unit_state 3 && echo ok || echo missing)"
fi

# ---------------------------------------------------------------- check 1 (final)
settle_sas final || true

ts "lab figures: converge ${CONVERGE_S}s"
print_table
((FAILED == 0)) || exit 1
ts "E2E PASSED"
