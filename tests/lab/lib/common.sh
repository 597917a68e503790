# shellcheck shell=bash
# Helpers shared by tests/lab/e2e.sh and its checks (tests/lab/checks/*.sh, sourced by the runner).
# Expects from the runner: LABSH, LOGDIR, ROOT, HERE, N, SETTLE, RUNTIME, BRIDGE, T0 and a loaded plan (lib/plan.sh).

ts() { printf '[e2e %s +%ss] %s\n' "$(date +%T)" "$((SECONDS - T0))" "$*"; }

# Every row is named by the check that records it: the runner sets CHECK to the file's name without .sh (e.g.
# 40-reach-esp) before it sources checks/<CHECK>.sh, and to lab-up, converge, plan or platform for its own rows.
CHECK=
RESULTS=()
FAILED=0
row_name() { # row_name [what]: "<check>: <what>", or "<check>" alone; "e2e" outside any check
  printf '%s' "${CHECK:-e2e}${1:+: $1}"
}
record() { # record <what> <PASS|FAIL> <figure>: a row "<check>: <what>" ("" for <what>: the check's name alone)
  local name
  name=$(row_name "$1")
  RESULTS+=("$name|$2|$3")
  [[ $2 = PASS ]] || FAILED=1
  ts "$name: $2 -- $3"
}
all_passed() { ((FAILED == 0)); }

TABLE_DONE=0
print_table() {
  local row c r f w=34
  ((TABLE_DONE)) && return 0
  TABLE_DONE=1
  for row in "${RESULTS[@]}"; do
    c=${row%%|*}
    ((${#c} <= w)) || w=${#c}
  done
  echo
  echo "================ e2e results ($((SECONDS - T0)) s, logs in ${LOGDIR#"$ROOT"/}) ================"
  printf '%-*s %-5s %s\n' "$w" check result figure
  for row in "${RESULTS[@]}"; do
    IFS='|' read -r c r f <<<"$row"
    printf '%-*s %-5s %s\n' "$w" "$c" "$r" "$f"
  done
  echo "=================================================================================="
  # CI shows only the last lines of a run: the failed checks are repeated where they are seen.
  for row in "${RESULTS[@]}"; do
    IFS='|' read -r c r f <<<"$row"
    [[ $r = PASS ]] || printf 'FAILED: %s -- %s\n' "$c" "$f"
  done
}

L() { "$LABSH" ssh "$@"; }

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

conflist_bridge() { # conflist_bridge <i>: the bridge that the plan's conflist on node i attaches pods to
  L "$1" "cat '$(plan_get cni_conflist)'" | python3 -c '
import json, sys
print(next(p["bridge"] for p in json.load(sys.stdin)["plugins"] if p["type"] == "bridge"))'
}

# ---------------------------------------------------------------- SAs (30-sas, 99-final-sas, after every fault)

sa_state() { # sa_state <i>: one line from check_sas.py; status 0 when node i is as expected
  local peers
  peers=$(plan_peers "$1" | wc -w)
  L "$1" 'swanctl --list-conns --raw 2>/dev/null; echo =====SAS=====; swanctl --list-sas --raw 2>/dev/null' 2>/dev/null |
    python3 "$HERE/files/check_sas.py" "$peers"
}

settle_sas() { # settle_sas <label>: wait until every node passes; records the row "<check>: SAs <label>"
  local t0=$SECONDS i out bad
  while :; do
    bad=
    for ((i = 1; i <= N; i++)); do
      out=$(sa_state "$i") || bad+="n$i: $out; "
    done
    [[ -z $bad ]] && break
    if ((SECONDS - t0 >= SETTLE)); then
      record "SAs $1" FAIL "not settled after $((SECONDS - t0)) s: $bad"
      for ((i = 1; i <= N; i++)); do L "$i" 'swanctl --list-sas' >"$LOGDIR/sas-$1-n$i.txt" 2>&1 || true; done
      return 1
    fi
    sleep 3
  done
  record "SAs $1" PASS "settled in $((SECONDS - t0)) s; n1 $(sa_state 1)"
}

# shellcheck disable=SC2016 # expanded on the node
ike_ids() { # ike_ids <i>: "<connection> <IKE uniqueid>" of node i's IKE_SAs, sorted
  L "$1" 'swanctl --list-sas --raw 2>/dev/null |
    sed -n "s/^list-sa event {\(peer[0-9]*-[^ ]*\) {uniqueid=\([0-9]*\) .*/\1 \2/p" | sort' 2>/dev/null
}

# ---------------------------------------------------------------- pods

declare -A POD_IP=()

pod_up() { # pod_up <i>: make pod a<i> on node i with its HTTP server
  local ip
  ip=$(L "$1" "$RUNTIME pod-up a$1") || { ts "pod a$1 on n$1: ADD failed"; return 1; }
  POD_IP[$1]=$ip
  ts "pod a$1 on n$1: ${POD_IP[$1]}"
}

pod_ensure() { # pod_ensure <i>: reuse pod a<i> when its server answers on the node, else (re)make it
  local ip
  ip=$(L "$1" "POD=a$1 bash -s" <<'EOS'
ip=$(ip -n "pod-$POD" -4 -o addr show dev eth0 2>/dev/null | awk '{ sub(/\/.*/, "", $4); print $4; exit }')
[ -n "$ip" ] && curl -s -m 5 "http://$ip:8080/" | grep -q "^pod=$POD " && echo "$ip"
EOS
  ) || true
  if [[ -n $ip ]]; then
    POD_IP[$1]=$ip
    ts "pod a$1 on n$1: ${POD_IP[$1]} (running)"
    return 0
  fi
  L "$1" "$RUNTIME pod-down a$1" >/dev/null 2>&1 || true # leftovers of a broken pod
  pod_up "$1"
}

pods_ensure() { # pods_ensure <i>...: pod_ensure on those nodes at once (each node makes its own pod)
  local i ip dir pids=()
  dir=$(mktemp -d)
  for i in "$@"; do
    (
      pod_ensure "$i" >"$dir/$i.log" 2>&1 || true
      echo "${POD_IP[$i]:-}" >"$dir/$i.ip"
    ) &
    pids+=($!)
  done
  wait "${pids[@]}" # only these: captures and pingers may run in the background
  for i in "$@"; do
    cat "$dir/$i.log"
    ip=$(cat "$dir/$i.ip")
    [[ -z $ip ]] || POD_IP[$i]=$ip
  done
  rm -rf "$dir"
}

need_pods() { # every node has its pod (from an earlier check of this run, or found or made now)
  local i missing=()
  for ((i = 1; i <= N; i++)); do
    [[ -n ${POD_IP[$i]:-} ]] || missing+=("$i")
  done
  ((${#missing[@]} == 0)) || pods_ensure "${missing[@]}"
}

# ---------------------------------------------------------------- reachability (40-reach-esp, after every fault)

# probe lines for node <i>: "<label> <netns-or-host> <target ip> <expected body>"
probes_for() {
  local i=$1 j
  for ((j = 1; j <= N; j++)); do
    ((j == i)) && continue
    echo "a$i->a$j pod-a$i ${POD_IP[$j]:-} pod=a$j client=${POD_IP[$i]:-}"
  done
  for ((j = 1; j <= N; j++)); do
    echo "n$i->a$j host ${POD_IP[$j]:-} pod=a$j client=$(plan_gateway "$i")"
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

reach() { # reach <label> [retry seconds]: records the row "<check>: reach <label>"; retries while the data path settles
  local t0=$SECONDS
  until reach_probe "$1"; do
    if ((SECONDS - t0 >= ${2:-0})); then
      record "reach $1" FAIL "$REACH_FIG"
      return 1
    fi
    sleep 3
  done
  record "reach $1" PASS "$REACH_FIG (after $((SECONDS - t0)) s)"
}

recover() { # recover <label>: the SAs settle and every pod is reachable again (settle_sas and reach)
  local rc=0
  settle_sas "$1" || rc=1
  reach "$1" 60 || rc=1
  return "$rc"
}

# ---------------------------------------------------------------- reboot (80-reboot, make bench's recovery)

reboot_node() { # reboot_node <i>: reboots node i; returns once it answers from a new boot (status 1 after 420 s)
  local boot_id id t=$SECONDS
  boot_id=$(L "$1" 'cat /proc/sys/kernel/random/boot_id')
  "$LABSH" ssh-close "$1"
  LAB_SSH_CONTROL_DIR='' timeout 15 "$LABSH" ssh "$1" 'systemctl reboot' >/dev/null 2>&1 || true
  "$LABSH" ssh-close "$1"
  while ((SECONDS - t <= 420)); do
    # no shared connection while the node goes down: a master to the old boot would make the next calls hang
    id=$(LAB_SSH_CONTROL_DIR='' timeout 10 "$LABSH" ssh "$1" 'cat /proc/sys/kernel/random/boot_id' 2>/dev/null || true)
    [[ -z $id || $id = "$boot_id" ]] || return 0
    sleep 2
  done
  return 1
}

# ---------------------------------------------------------------- lost pings during a fault

outage_start() { # outage_start <i> <j>: pod a<i> pings pod a<j> every 0.2 s, in the background on node i
  L "$1" "rm -f /run/k8s-ipsec-lab-ping.log; ip netns exec pod-a$1 setsid ping -n -D -i 0.2 -W 1 ${POD_IP[$2]} \
    >/run/k8s-ipsec-lab-ping.log 2>&1 </dev/null & echo \$! >/run/k8s-ipsec-lab-ping.pid" || true
}

# Lost: the requests without a reply below the last one answered (each named with the time of the reply before it),
# not the one still in flight when the pinger is stopped, which ping's own summary counts as lost.
outage_stop() { # outage_stop <i>: stops the pinger of node i; prints "<longest gap between replies>s <lost>/<sent>"
  # shellcheck disable=SC2016 # expanded on the node
  L "$1" 'kill -INT "$(cat /run/k8s-ipsec-lab-ping.pid)" 2>/dev/null; sleep 1
    awk -F"[][]" '"'"'/bytes from/ { t = $2 + 0; if (p && t - p > gap) gap = t - p; p = t
        if (match($0, /icmp_seq=[0-9]+/)) { s = substr($0, RSTART + 9, RLENGTH - 9) + 0; got[s] = t; if (s > top) top = s } }
      / packets transmitted/ { split($0, a, " "); sent = a[1] }
      END { lost = 0; which = ""
        for (s = 1; s <= top; s++) if (s in got) last = got[s]; else { lost++; if (lost <= 5) which = which sprintf(" seq %d after %.1f", s, last) }
        printf "%.1fs %d/%d%s\n", gap, lost, sent, which }'"'"' /run/k8s-ipsec-lab-ping.log' 2>/dev/null || echo "?s ?/?"
}

# ---------------------------------------------------------------- captures on br0 (40-reach-esp, 70-fail-closed, ...)

tcpdump_listening() { # tcpdump_listening <its log>: returns once tcpdump says it listens (5 s at most)
  local k
  for ((k = 0; k < 50; k++)); do
    grep -q 'listening on' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
}

CAP_PID=
capture_start() { # capture_start <name>: tcpdump on br0 (inside the namespace), SSH excluded
  CAP_FILE=$LOGDIR/$1.pcap
  # tcpdump runs behind lab.sh: its pid file lets capture_kill send SIGINT to tcpdump itself
  # shellcheck disable=SC2016 # expanded by that sh
  "$LABSH" exec sh -c 'echo $$ >"$0.pid" && exec tcpdump -Z root -i br0 -n -U -s 128 -w "$0" "not tcp port 22"' \
    "$CAP_FILE" 2>"$LOGDIR/$1.tcpdump.log" &
  CAP_PID=$!
  tcpdump_listening "$LOGDIR/$1.tcpdump.log"
}

capture_kill() { # ends the capture (tcpdump writes its buffer on SIGINT)
  [[ -n $CAP_PID ]] || return 0
  if [[ -s $CAP_FILE.pid ]]; then kill -INT "$(<"$CAP_FILE.pid")" 2>/dev/null || true; fi
  wait "$CAP_PID" 2>/dev/null || true
  rm -f "$CAP_FILE.pid"
  CAP_PID=
}

capture_stop() { # prints "<esp packets> <cleartext pod packets>"
  sleep 1
  capture_kill
  local esp clear
  esp=$(tcpdump -n -r "$CAP_FILE" esp 2>/dev/null | wc -l)
  # any packet whose outer IP header carries a pod address is cleartext pod traffic
  clear=$(tcpdump -n -r "$CAP_FILE" "ip and net $(plan_cluster_cidr)" 2>/dev/null | tee "$CAP_FILE.cleartext.txt" | wc -l)
  echo "$esp $clear"
}

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
    record "dropped with $label" PASS "$total/$total probes dropped, $clear cleartext pod packets on br0"
  else
    record "dropped with $label" FAIL "$answered/$total probes answered, $clear cleartext pod packets (failclosed-$label.pcap)"
  fi
}

# ---------------------------------------------------------------- node state (80-reboot, 90-repair)

# unit_state <i>: status 0 when node i is as the plan says: the plan's units and strongswan.service active, each
# unit's own script passes its `check` (bridge, rules, tunnels against the node's settings), the bridge holds the
# plan's gateway/prefix and every peer's subnet is routed through the plan's device. What differs goes to the log.
unit_state() {
  local i=$1 j units routes=
  units="$(plan_unit bridge) $(plan_unit firewall) $(plan_unit tunnels)"
  for j in $(plan_peers "$i"); do routes+="$(plan_remote_subnet "$i" "$j"),$(plan_iface "$i" "$j") "; done
  L "$i" "UNITS='$units' BR='$BRIDGE' GW='$(plan_gateway "$i")/$(plan_prefix "$i")' ROUTES='$routes' bash -s" \
    >"$LOGDIR/unit_state-n$i.txt" 2>&1 <<'EOS'
set -u
rc=0
for u in $UNITS strongswan.service; do
  systemctl is-active -q "$u" || { echo "$u: $(systemctl is-active "$u")"; rc=1; }
done
for u in $UNITS; do
  # the unit's command with "check" for "apply", e.g. k8s-ipsec-node cni0 apply -> k8s-ipsec-node cni0 check
  argv=$(systemctl show -P ExecStart "$u" | sed -n 's/.*argv\[\]=\([^;]*\) apply ;.*/\1/p')
  ${argv:-false} check || { echo "$u: ${argv:-no ExecStart} check failed"; rc=1; }
done
ip -4 -o addr show dev "$BR" 2>/dev/null | grep -q " inet $GW " || { echo "bridge $BR lacks $GW"; rc=1; }
for r in $ROUTES; do
  subnet=${r%,*} dev=${r#*,}
  ip -4 -o route show exact "$subnet" | grep -q "^$subnet dev $dev " || { echo "no route $subnet dev $dev"; rc=1; }
done
exit "$rc"
EOS
}

# ---------------------------------------------------------------- the node's own checks

# part_check <i> <bridge|firewall|tunnels>: on node i, the check of the program behind the plan's unit: its
# ExecStart with the last word "apply" turned into "check" (k8s-ipsec-cni0 apply, or k8s-ipsec-node cni0 apply).
# Prints what differs; status 1 on drift.
part_check() {
  # shellcheck disable=SC2016 # expanded on the node
  L "$1" "U='$(plan_unit "$2")' bash -s" <<'EOS'
argv=$(systemctl show -P ExecStart "$U" | sed -n 's/.*argv\[\]=\([^;]*\) ;.*/\1/p')
case "$argv" in *" apply") ;; *) echo "$U: no ExecStart ending in apply (${argv:-none})"; exit 1 ;; esac
${argv% apply} check
EOS
}

# ---------------------------------------------------------------- captures in a pod or on the outsider

# ns_capture_start <i> <netns> <name> <filter>: tcpdump on eth0 inside namespace <netns> of node i (a pod's
# pod-<pod>), into /run/lab-<name>.pcap there; returns once it listens.
ns_capture_start() {
  L "$1" "rm -f /run/lab-$3.pcap /run/lab-$3.log; ip netns exec '$2' tcpdump -i eth0 -n -U -w /run/lab-$3.pcap '$4' \
    >/dev/null 2>/run/lab-$3.log </dev/null & echo \$! >/run/lab-$3.pid
    for k in \$(seq 50); do grep -q 'listening on' /run/lab-$3.log && break; sleep 0.1; done"
}

# ns_capture_stop <i> <name>: ends it (tcpdump writes its buffer on SIGINT)
ns_capture_stop() { L "$1" "sleep 1; kill -INT \$(cat /run/lab-$2.pid) 2>/dev/null; sleep 1; rm -f /run/lab-$2.pid" || true; }

# ns_capture_count <i> <name> <filter>: the packets of the stopped capture that match; 999 when it cannot be read
ns_capture_count() {
  local n
  n=$(L "$1" "tcpdump -n -r /run/lab-$2.pcap '$3' 2>/dev/null | grep -c -E ' IP6? ' || true") || true
  [[ $n =~ ^[0-9]+$ ]] && echo "$n" || echo 999
}

OUTSIDER_CAP_PID=
# outsider_capture_start <name> <filter>: tcpdump on the outsider's eth0 (tests/lab/lab.sh outsider), to the logs
outsider_capture_start() {
  OUTSIDER_CAP=$LOGDIR/$1.pcap
  # shellcheck disable=SC2016 # expanded by that sh
  "$LABSH" outsider exec sh -c 'echo $$ >"$0.pid" && exec tcpdump -i eth0 -n -U -w "$0" "$1"' "$OUTSIDER_CAP" "$2" \
    2>"$LOGDIR/$1.tcpdump.log" &
  OUTSIDER_CAP_PID=$!
  tcpdump_listening "$LOGDIR/$1.tcpdump.log"
}

outsider_capture_stop() {
  [[ -n $OUTSIDER_CAP_PID ]] || return 0
  sleep 1
  if [[ -s $OUTSIDER_CAP.pid ]]; then kill -INT "$(<"$OUTSIDER_CAP.pid")" 2>/dev/null || true; fi
  wait "$OUTSIDER_CAP_PID" 2>/dev/null || true
  rm -f "$OUTSIDER_CAP.pid"
  OUTSIDER_CAP_PID=
}

outsider_capture_count() { # outsider_capture_count <filter>: packets of the stopped capture that match
  tcpdump -n -r "$OUTSIDER_CAP" "$1" 2>/dev/null | grep -c -E ' IP6? ' || true
}
