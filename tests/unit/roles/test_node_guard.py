"""k8s-ipsec-node guard: for real in a private network namespace (unshare -n), woken by real netlink events and
`nft monitor`, restoring the bridge and the firewall with the program itself.

The guard runs either as its command (`guard run`, as its unit runs it) or, to count its passes, in a thread of a
driver (GUARD) that wraps Node.restore.
"""

import json
import subprocess

import pytest
from node_program import PROGRAM, STATUS_LIB, SYSTEM_PYTHON, NodeNetns

# Runs Guard.run in a thread while shell steps act on the node, each followed by a wait (at least its seconds, then
# until the guard has been quiet for a while); prints, as JSON, each step's output, what the guard logged and which
# passes it made (the parts each restore looked at) during the step.
GUARD = """
import importlib.util, json, os, signal, subprocess, sys, threading, time
spec = importlib.util.spec_from_file_location("k8s_ipsec_node", sys.argv[1])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
options, steps = json.loads(sys.argv[2]), json.loads(sys.argv[3])
quiet = options.pop("quiet")
log, passes, errors, last_pass = [], [], [], [0.0]


class Counting(node.Node):
    def restore(self, parts, log=print):
        passes.append(list(parts))
        try:
            return super().restore(parts, log)
        finally:
            last_pass[0] = time.monotonic()


stop = threading.Event()


def guard():
    try:
        node.Guard(Counting(), log=log.append, **options).run(stop.is_set)
    except Exception as err:
        errors.append("%s: %s" % (type(err).__name__, err))


thread = threading.Thread(target=guard, daemon=True)
thread.start()
results = []
for command, seconds in steps:
    seen_log, seen_passes = len(log), len(passes)
    out = subprocess.run(["sh", "-c", command], check=True, stdout=subprocess.PIPE, text=True).stdout
    time.sleep(seconds)
    # and until the guard has made no pass for `quiet` seconds (5 s at most): a slow machine takes longer
    deadline = time.monotonic() + 5
    while time.monotonic() - last_pass[0] < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
    results.append({"out": out, "log": log[seen_log:], "passes": passes[seen_passes:]})
stop.set()
subprocess.run(["ip", "addr", "add", "127.0.0.2/8", "dev", "lo"], check=True)  # an event: the guard sees stop
thread.join(10)
stopped = not thread.is_alive()
# The guard's nft monitor, should the guard not have stopped it: children of this process only.
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/stat" % pid) as stat:
            if pid.isdigit() and int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                os.kill(int(pid), signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        pass
print(json.dumps({"steps": results, "errors": errors, "stopped": stopped}))
"""


def run_guard(netns, steps, **options):
    """Runs the guard in a thread in a fresh network namespace through the steps [(shell command, seconds to wait
    after it)]; returns, for each step, its output, what the guard logged and the passes it made. Each step waits
    also until the guard has made no pass for `quiet` seconds (0: just the step's seconds)."""
    options = {"recheck": 3600, "quiet": 0.8, **options}
    proc = subprocess.run(
        ["unshare", "-n", SYSTEM_PYTHON, "-c", GUARD, str(PROGRAM), json.dumps(options), json.dumps(steps)],
        env=netns.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["errors"] == [] and result["stopped"], result
    return result["steps"]


# Until the guard's first pass and the events of its own changes have passed (half a second on a small machine).
SETTLE = ("ip link set lo up", 0.5)
ADDRESSING = ["cni0", "tunnels"]
EVERYTHING = ["cni0", "tunnels", "firewall"]
QUIET = {"log": [], "passes": [], "out": ""}
ELEMENT = "'{ \"k8s-ipsec3\" . 10.128.3.0/24 }'"
PORT = "ip -d -o link show veth1 | grep -o 'master cni0 \\|hairpin on' | xargs"
# One guard watching one node, through these steps: name, shell command, seconds to wait after it.
WATCHED = [
    ("settle", *SETTLE),
    ("pod", "ip link add veth1 mtu 1420 type veth peer name pod1 && ip link set veth1 master cni0 up", 0.5),
    ("idle", "true", 2.0),
    ("bridge deleted", "ip link del cni0", 0.5),
    ("pod after", PORT, 0),
    ("pod detached", "ip link set veth1 nomaster", 0.5),
    ("pod attached", PORT, 0),
    ("table flushed", "nft flush table inet k8s-ipsec", 0.5),
    ("table deleted", "nft delete table inet k8s-ipsec", 0.5),
    ("peer deleted", f"nft delete element inet k8s-ipsec peer_subnets {ELEMENT}", 0.5),
    ("jump deleted", "iptables -D FORWARD -m comment --comment k8s-ipsec -j K8S-IPSEC-FORWARD", 0.5),
    ("idle again", "true", 1.0),
]


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """What happened at each step of WATCHED, by its name."""
    steps = run_guard(NodeNetns(tmp_path_factory.mktemp("watched")), [step[1:] for step in WATCHED])
    return {watched[0]: result for watched, result in zip(WATCHED, steps, strict=True)}


def test_the_first_pass_builds_everything_and_then_the_guard_is_idle(watched):
    settle = watched["settle"]
    assert settle["passes"][0] == EVERYTHING
    assert settle["log"][1] == "k8s-ipsec-node cni0 restored: created bridge cni0"
    assert settle["log"][3] == "k8s-ipsec-node firewall restored"
    # The events of its own changes lead to one more look at what they touched, which finds nothing.
    assert len(settle["log"]) == 4, settle["log"]
    # With nothing changing, the guard reads nothing: no pass at all.
    assert watched["idle"] == QUIET
    assert watched["idle again"] == QUIET


def test_a_new_pod_is_looked_at_and_left_as_it_is(watched):
    assert watched["pod"]["log"] == []
    assert set(map(tuple, watched["pod"]["passes"])) == {tuple(ADDRESSING)}


def test_a_deleted_bridge_is_restored_with_its_pods_within_a_second(watched):
    deleted = watched["bridge deleted"]
    assert deleted["log"] == [
        "k8s-ipsec-node cni0 drifted: bridge cni0 is missing; pod interface veth1 is not on cni0",
        "k8s-ipsec-node cni0 restored: created bridge cni0; attached pod interface veth1 to cni0",
    ]
    # Only the addressing is read after a link, address or route change: not the firewall.
    assert set(map(tuple, deleted["passes"])) == {tuple(ADDRESSING)}, deleted["passes"]
    assert watched["pod after"]["out"] == "master cni0 hairpin on\n"


def test_a_pod_interface_taken_off_the_bridge_is_put_back(watched):
    assert watched["pod detached"]["log"] == [
        "k8s-ipsec-node cni0 drifted: pod interface veth1 is not on cni0",
        "k8s-ipsec-node cni0 restored: attached pod interface veth1 to cni0",
    ]
    assert watched["pod attached"]["out"] == "master cni0 hairpin on\n"


@pytest.mark.parametrize(
    "step, found",
    [
        ("table flushed", "the rules of chain failclosed in table inet k8s-ipsec differ from the settings; "),
        ("table deleted", "table inet k8s-ipsec is missing"),
        ("peer deleted", "set peer_subnets of table inet k8s-ipsec does not hold exactly the peers' subnets"),
        ("jump deleted", "iptables' FORWARD does not jump to K8S-IPSEC-FORWARD"),
    ],
)
def test_drifted_rules_are_restored_within_a_second_and_only_the_firewall_is_read(watched, step, found):
    drifted = watched[step]
    assert drifted["log"][0].startswith("k8s-ipsec-node firewall drifted: " + found), drifted["log"]
    assert drifted["log"][1:] == ["k8s-ipsec-node firewall restored"]
    assert set(map(tuple, drifted["passes"])) == {("firewall",)}, drifted["passes"]


@pytest.fixture
def netns(tmp_path):
    return NodeNetns(tmp_path)


def test_where_rule_changes_are_not_announced_the_firewall_is_read_every_interval(netns):
    """iptables' legacy backend announces no changes: the guard reads the rules every interval seconds instead."""
    idle = run_guard(netns, [("ip link set lo up", 1.0), ("true", 2.3)], interval=1.0, quiet=0)[1]
    assert idle["log"] == []
    assert idle["passes"] in ([["firewall"]] * 2, [["firewall"]] * 3), idle["passes"]


def test_everything_is_read_every_recheck_seconds_in_case_an_event_was_missed(netns):
    idle = run_guard(netns, [("ip link set lo up", 1.0), ("true", 2.3)], recheck=1.0, quiet=0)[1]
    assert idle["log"] == []
    assert idle["passes"] in ([EVERYTHING] * 2, [EVERYTHING] * 3), idle["passes"]


def test_the_guard_command_restores_a_deleted_bridge_and_says_so(netns):
    """`guard run` as its unit runs it (its log is the journal)."""
    netns.pod("c1", "veth1")
    out = netns.run(
        f"""
        setsid {SYSTEM_PYTHON} {PROGRAM} guard run > "$DIR/log" 2>&1 &
        guard=$!
        sleep 1.5
        ip link add veth1 mtu 1420 type veth peer name pod1
        ip link set veth1 master cni0 up
        sleep 1
        ip link del cni0
        sleep 1.2
        node cni0 check && echo clean
        kill -- -$guard
        cat "$DIR/log"
        """,
        env={"DIR": str(netns.dir), "K8S_IPSEC_GUARD_RECHECK": "3600"},
    )
    lines = out.splitlines()
    assert lines[0] == "clean"
    assert lines[1:3] == [
        "k8s-ipsec-node cni0 drifted: bridge cni0 is missing; the unreachable route for 10.128.0.0/16 is missing",
        "k8s-ipsec-node cni0 restored: created bridge cni0",
    ]
    assert lines[-2:] == [
        "k8s-ipsec-node cni0 drifted: bridge cni0 is missing; pod interface veth1 is not on cni0",
        "k8s-ipsec-node cni0 restored: created bridge cni0; attached pod interface veth1 to cni0",
    ]


def test_guard_check_restores_once_and_says_whether_anything_had_drifted(netns):
    results = netns.steps("node guard check", "node guard check", "node cni0 check", "node firewall check")
    assert results[0][0] == 1
    assert "k8s-ipsec-node firewall restored\n" in results[0][1]
    assert results[1:] == [(0, ""), (0, ""), (0, "")]


def test_when_nft_monitor_ends_the_guard_exits_for_systemd_to_start_it_again(netns):
    (netns.bin / "nft").write_text("#!/bin/sh\nexit 0\n")
    (netns.bin / "nft").chmod(0o755)
    out = netns.run('node guard run 2>&1 || echo "status $?"', env={"K8S_IPSEC_GUARD_RECHECK": "3600"})
    assert out.splitlines()[-2:] == [
        "k8s-ipsec-node guard run: nft monitor ended; exiting so that systemd starts the guard again",
        "status 1",
    ]


def test_the_guard_writes_the_metrics_file_whole_and_again_after_a_repair(netns):
    """With K8S_IPSEC_METRICS_FILE (the metrics role sets it), `guard run` keeps node_exporter's textfile current."""
    out = netns.run(
        f"""
        setsid {SYSTEM_PYTHON} {PROGRAM} guard run > "$DIR/log" 2>&1 &
        guard=$!
        sleep 1.5
        cp "$DIR/metrics/k8s_ipsec.prom" "$DIR/first.prom"
        ip link del cni0
        sleep 1.2
        kill -- -$guard
        ls -A "$DIR/metrics"
        stat -c %a "$DIR/metrics/k8s_ipsec.prom"
        """,
        env={
            "DIR": str(netns.dir),
            "K8S_IPSEC_GUARD_RECHECK": "3600",
            "K8S_IPSEC_METRICS_FILE": str(netns.dir / "metrics" / "k8s_ipsec.prom"),
            "K8S_IPSEC_METRICS_INTERVAL": "3600",
            "K8S_IPSEC_LIB": str(STATUS_LIB),
            "K8S_IPSEC_STATE_DIR": str(netns.dir / "state"),
        },
    )
    # only the file: the temporary one was renamed into place
    assert out.splitlines() == ["k8s_ipsec.prom", "644"], (netns.dir / "log").read_text()
    first = (netns.dir / "first.prom").read_text().splitlines()
    last = (netns.dir / "metrics" / "k8s_ipsec.prom").read_text().splitlines()
    # the guard's first pass built the bridge; the deleted bridge is the second repair, written at once
    assert 'k8s_ipsec_guard_repairs_total{part="cni0"} 1' in first
    assert 'k8s_ipsec_guard_repairs_total{part="cni0"} 2' in last
    # the tunnel settings of this namespace list no peer (the host kernel has no XFRM devices)
    assert any(line.startswith('k8s_ipsec_node_info{node="') for line in last)
    assert not any(line.startswith("k8s_ipsec_peer_ike_sa_established{") for line in last)
