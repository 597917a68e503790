"""Benchmark of the planning logic: prints figures, asserts nothing about time.

For 10, 100 and 1,000 nodes: the subnets, one node's peer list through mesh_peers (validation included, as the
module does it per node), and every node's peer list from a single validation.
"""

import ipaddress
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collections"))

from ansible_collections.k8s_ipsec.cni.plugins.module_utils._mesh import (  # noqa: E402
    mesh_peers,
    peers_of,
    plan_mesh,
    pod_subnets,
)

CLUSTER, SERVICES = "100.64.0.0/10", "10.96.0.0/12"


def inventory(count):
    base = ipaddress.ip_address("172.16.0.1")
    return [{"name": "node-%04d.example.internal" % i, "address": str(base + i), "index": i} for i in range(count)]


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main():
    print("%7s %12s %18s %22s %16s" % ("nodes", "subnets", "one node's peers", "every node's peers", "per node"))
    for count in (10, 100, 1000):
        nodes = inventory(count)
        t_subnets = timed(lambda nodes=nodes: pod_subnets(nodes, CLUSTER, 24, SERVICES))[0]
        t_one = timed(lambda nodes=nodes: mesh_peers(nodes, nodes[-1]["name"], CLUSTER, 24, SERVICES))[0]

        def every(nodes=nodes):
            plan = plan_mesh(nodes, CLUSTER, 24, SERVICES)
            return sum(len(peers_of(plan, node["name"])) for node in nodes)

        t_all, entries = timed(every)
        assert entries == count * (count - 1)
        print(
            "%7d %10.1f ms %15.2f ms %19.1f ms %13.3f ms"
            % (count, t_subnets * 1e3, t_one * 1e3, t_all * 1e3, t_all * 1e3 / count)
        )


if __name__ == "__main__":
    main()
