"""Benchmark of the network plan: the pure planning call beside ansible-playbook running it, on 10 to 1,000 nodes.

For each size one line on stdout, e.g. ``nodes=10 pure_ms=0.83 ansible_s=2.41 noop_s=2.10``:

- pure_ms: network_plan() called as the mesh_plan module calls it, best of 3;
- ansible_s: wall time of ansible-playbook running one k8s_ipsec.cni.mesh_plan task on localhost, median of 3 (of 1
  from 1,000 nodes on, where one run takes minutes: the returned plan grows with the square of the nodes);
- noop_s: the same playbook with the do-nothing module library/bench_noop.py given the same arguments, as many runs,
  so ansible_s minus noop_s is what planning and returning the plan cost through Ansible.

Prints figures, asserts nothing about time. Progress goes to stderr; a failed run exits with status 1.
Usage: .venv/bin/python tests/bench/plan.py [--sizes 10,100,1000] [--out FILE]
"""

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parents[1]
sys.path.insert(0, str(REPO_ROOT / "collections"))

from ansible_collections.k8s_ipsec.cni.plugins.module_utils._mesh import (  # noqa: E402
    DEFAULT_IPSEC_OVERHEAD,
    DEFAULT_TUNNEL_PREFIX,
    DEFAULT_UNDERLAY_MTU,
    network_plan,
)

# 1,000 /24 subnets do not fit the default /16 pod network.
CLUSTER_CIDR, NODE_PREFIX, SERVICE_CIDR = "100.64.0.0/10", 24, "10.96.0.0/12"
RUNS = 3
LARGE = 1000  # from here on a single timed pair: each mesh_plan run takes minutes
HEADER = "# command: tests/bench/plan.py"


def inventory(count):
    base = ipaddress.ip_address("172.16.0.1")
    return [{"name": "node-%04d.example.internal" % i, "address": str(base + i), "index": i} for i in range(count)]


def progress(message):
    print(message, file=sys.stderr, flush=True)


def timed_plan(nodes):
    """The seconds network_plan() takes with the arguments mesh_plan passes it, and the plan."""
    start = time.perf_counter()
    plan = network_plan(
        nodes,
        CLUSTER_CIDR,
        NODE_PREFIX,
        SERVICE_CIDR,
        DEFAULT_TUNNEL_PREFIX,
        DEFAULT_UNDERLAY_MTU,
        DEFAULT_IPSEC_OVERHEAD,
        [],
    )
    return time.perf_counter() - start, plan


def pure_ms(nodes):
    # Best of 3: the planning is deterministic CPU work, so the fastest run is the one the machine disturbed least.
    # One plan at a time: at 1,000 nodes each holds a million tunnels.
    best = float("inf")
    for _attempt in range(RUNS):
        seconds, plan = timed_plan(nodes)
        best = min(best, seconds)
    count = len(nodes)
    tunnels = sum(len(peers) for peers in plan["peers"].values())
    if len(plan["nodes"]) != count or tunnels != count * (count - 1):
        sys.exit("network_plan for %d nodes returned %d nodes and %d tunnels" % (count, len(plan["nodes"]), tunnels))
    return best * 1e3


def write_playbook(path, module, nodes_file, checked_count=None):
    """One play on localhost with one task; with checked_count, also an assert on the plan's size (untimed run)."""
    task = {
        "name": "Run %s" % module,
        module: {
            # The nodes come from the vars file, the rest as the roles would pass them.
            "nodes": "{{ bench_nodes }}",
            "cluster_cidr": CLUSTER_CIDR,
            "node_prefix": NODE_PREFIX,
            "service_cidr": SERVICE_CIDR,
        },
    }
    tasks = [task]
    if checked_count is not None:
        task["register"] = "planned"
        tasks.append(
            {
                "name": "Check the plan has every node",
                "ansible.builtin.assert": {
                    "that": [
                        "planned.plan.nodes | length == %d" % checked_count,
                        "planned.plan.peers | length == %d" % checked_count,
                    ]
                },
            }
        )
    play = {
        "name": "Benchmark %s" % module,
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars_files": [str(nodes_file)],
        "tasks": tasks,
    }
    # JSON is YAML: no YAML library needed, and nothing for yamllint in the repository.
    path.write_text(json.dumps([play], indent=1))
    return path


def ansible_playbook_command():
    # The ansible-playbook of the Python running this script, which is also the modules' interpreter.
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if not found:
        sys.exit("ansible-playbook not found beside %s nor on PATH" % sys.executable)
    return [found, "-i", "localhost,", "-e", "ansible_python_interpreter=%s" % sys.executable]


def ansible_environment():
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        # Plain Ansible whatever the configuration says: the figures are those of the stock linear strategy.
        ANSIBLE_STRATEGY="linear",
        ANSIBLE_LIBRARY=str(BENCH_DIR / "library"),
        ANSIBLE_NOCOLOR="1",
    )
    return env


def run_playbook(command, playbook, env):
    """Seconds of wall time; stdout is captured to keep the report clean, and shown with stderr on failure."""
    start = time.perf_counter()
    result = subprocess.run(
        command + [str(playbook)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(
            "%s failed with status %d\n--- stdout\n%s--- stderr\n%s"
            % (playbook.name, result.returncode, result.stdout, result.stderr)
        )
    return elapsed


def measure(count, workdir, command, env):
    nodes = inventory(count)
    progress("nodes=%d: pure planning" % count)
    pure = pure_ms(nodes)

    nodes_file = workdir / ("nodes-%d.json" % count)
    nodes_file.write_text(json.dumps({"bench_nodes": nodes}))
    mesh = write_playbook(workdir / ("mesh-%d.yml" % count), "k8s_ipsec.cni.mesh_plan", nodes_file)
    noop = write_playbook(workdir / ("noop-%d.yml" % count), "ansible.legacy.bench_noop", nodes_file)
    checked = write_playbook(workdir / ("check-%d.yml" % count), "k8s_ipsec.cni.mesh_plan", nodes_file, count)

    # Untimed: proves the module returns the whole plan, and warms the caches the timed runs would otherwise pay for.
    progress("nodes=%d: checking mesh_plan's result" % count)
    run_playbook(command, checked, env)

    # Alternating, so drift in the machine's load hits both playbooks alike.
    times = {mesh: [], noop: []}
    runs = RUNS if count < LARGE else 1
    for run in range(1, runs + 1):
        for playbook in (mesh, noop):
            times[playbook].append(run_playbook(command, playbook, env))
            progress("nodes=%d: %s run %d/%d: %.2f s" % (count, playbook.stem, run, runs, times[playbook][-1]))
    return "nodes=%d pure_ms=%.2f ansible_s=%.2f noop_s=%.2f" % (
        count,
        pure,
        statistics.median(times[mesh]),
        statistics.median(times[noop]),
    )


def sizes(text):
    try:
        counts = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("expected node counts separated by commas, got %r" % text) from None
    if any(count < 2 for count in counts):
        raise argparse.ArgumentTypeError("a mesh needs at least 2 nodes")
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=[10, 100, 1000], help="node counts (default: 10,100,1000)")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args()

    command, env = ansible_playbook_command(), ansible_environment()
    lines = [HEADER]
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as workdir:
        for count in args.sizes:
            lines.append(measure(count, Path(workdir), command, env))
            print(lines[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
