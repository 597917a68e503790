# shellcheck shell=bash
# make bench, section 5 (tunnel throughput), sourced by tests/lab/e2e.sh --running --checks-dir tests/lab/bench:
# iperf3 TCP from pod a1 (n1) to pod a2 (n2) through the tunnel, and from n1 to n2 over the underlay, 1 and 4
# streams, first with the role's default ESP proposals, then with the original demo's (AES-CBC-128 with
# HMAC-SHA256), rendered by site.yml --tags strongswan and taken up by restarting strongSwan on every node; the
# defaults are put back the same way at the end. Each pair of figures is measured back to back.
# Writes $BENCH_RESULTS/throughput.txt: "proposal=<ESP algorithms of the SA> streams=<n> tunnel_mbps=<x>
# underlay_mbps=<y>".
: "${BENCH_RESULTS:?set by tests/lab/bench.sh}"
THROUGHPUT_OUT=$BENCH_RESULTS/throughput.txt
THROUGHPUT_SECONDS=${BENCH_IPERF_SECONDS:-10}
DEMO_ESP=aes128-sha256-modp2048
echo "# command: make bench (tests/lab/bench/20-throughput.sh, run by tests/lab/e2e.sh --running)" >"$THROUGHPUT_OUT"

need_pods

# iperf_mbps <netns on n1 or host> <server address on n2> <netns on n2 or host> <streams>: received Mbit/s
iperf_mbps() {
  local pre_c=() pre_s=()
  [[ $1 = host ]] || pre_c=(ip netns exec "$1")
  [[ $3 = host ]] || pre_s=(ip netns exec "$3")
  L 2 "${pre_s[*]} iperf3 -s -1 -D -B $2 --logfile /run/k8s-ipsec-bench-iperf.log" || return 1
  sleep 1
  L 1 "${pre_c[*]} iperf3 -J -c $2 -t $THROUGHPUT_SECONDS -P $4" >"$LOGDIR/iperf-$1-$4.json" || return 1
  python3 -c 'import json, sys; print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))' \
    <"$LOGDIR/iperf-$1-$4.json"
}

# the ESP algorithms of n1's installed CHILD_SA towards n2, read with the collection's own swanctl --raw parser, e.g.
# AES_GCM_16-256 or AES_CBC-128-HMAC_SHA2_256_128
esp_of_pair() {
  L 1 'swanctl --list-sas --raw' | PYTHONPATH=$ROOT/plugins/module_utils python3 -c '
import re, sys
from _status import parse_message
for line in sys.stdin:
    m = re.match(r"list-sa event \{(.*)\}$", line.strip())
    for name, ike in parse_message(m.group(1)).items() if m else ():
        for child in ike.get("child-sas", {}).values() if name == sys.argv[1] else ():
            if child.get("state") == "INSTALLED":
                keys = ("encr-alg", "encr-keysize", "integ-alg")
                print("-".join(child[k] for k in keys if k in child))
                sys.exit(0)
sys.exit(1)
' "$(plan_conn 1 2)"
}

measure() { # measure <label>: both paths, 1 and 4 streams, for the proposal now in use
  local esp streams tunnel underlay r=PASS
  esp=$(esp_of_pair) || esp=
  [[ -n $esp ]] || { esp=unknown; r=FAIL; }
  for streams in 1 4; do
    tunnel=$(iperf_mbps "pod-a1" "${POD_IP[2]}" "pod-a2" "$streams") || { tunnel=failed; r=FAIL; }
    underlay=$(iperf_mbps host "$(plan_address 2)" host "$streams") || { underlay=failed; r=FAIL; }
    echo "proposal=$esp streams=$streams tunnel_mbps=$tunnel underlay_mbps=$underlay" >>"$THROUGHPUT_OUT"
    record "$1, $streams stream(s)" "$r" "ESP $esp: pod to pod $tunnel Mbit/s, underlay $underlay Mbit/s"
  done
}

# restart_all: strongSwan restarted on every node, so every SA is made anew with the proposals now loaded
restart_all() {
  local i
  for ((i = 1; i <= N; i++)); do L "$i" 'systemctl restart strongswan' || true; done
}

# demo_up: the pods reach each other again and n1's SA to n2 carries the demo's algorithms (settle_sas would not do:
# it holds every SA to the role's AES-GCM policy, as verify.yml does)
demo_up() {
  local t0=$SECONDS esp
  reach "ESP $DEMO_ESP" 60 || return 1
  until esp=$(esp_of_pair) && [[ $esp = AES_CBC-128-HMAC_SHA2_256* ]]; do
    ((SECONDS - t0 < 60)) || { record "SA with ESP $DEMO_ESP" FAIL "n1's SA to n2: ${esp:-none}"; return 1; }
    sleep 3
  done
}

measure "default ESP proposal"
if playbook bench-esp-demo site.yml --tags strongswan -e "{\"strongswan_esp_proposals\": [\"$DEMO_ESP\"]}" >/dev/null &&
  restart_all && demo_up; then
  measure "ESP $DEMO_ESP (the original demo's)"
else
  record "ESP $DEMO_ESP" FAIL "not rendered or not up, see bench-esp-demo.log"
fi
playbook bench-esp-default site.yml --tags strongswan >/dev/null || record "ESP defaults back" FAIL "see bench-esp-default.log"
restart_all
recover "ESP defaults back"
