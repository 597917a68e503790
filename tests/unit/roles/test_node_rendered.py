"""The roles' rendered files as the node program meets them: the settings it reads, and the strongSwan unit's IKE
hold run for real in a private network namespace (unshare -n). The rendering (conftest) is test_data_path.py's."""

import ipaddress
import re

import pytest
from node_program import HOLD, IKE, NodeNetns, load

node = load()


@pytest.fixture(params=["three_nodes", "four_nodes"])
def rendered(request):
    return request.getfixturevalue(request.param)


def hosts(rendered):
    return sorted(path.name for path in rendered.out.iterdir() if (path / "computed.json").exists())


def peers(entries):
    return [
        (p["device"], str(p["local"]), str(p["remote"]), p["key"], str(p["subnet"]), p["connection"], p["initiator"])
        for p in entries
    ]


def test_the_program_reads_the_rendered_settings_as_the_plan_says(rendered, tmp_path):
    for host in hosts(rendered):
        plan, whole = rendered.computed(host)["plan_node"], rendered.computed(host)["plan_cluster"]
        out = rendered.out / host
        assert node.cni0_settings(str(out / "k8s-ipsec-cni0.default")) == {
            "bridge": "cni0",
            "address": ipaddress.IPv4Interface(f"{plan['gateway']}/{plan['prefix_length']}"),
            "mtu": whole["mtu"],
            "cluster_cidr": ipaddress.IPv4Network(whole["cluster_cidr"]),
        }
        keys = ("interface", "local_address", "remote_address", "key", "remote_subnet", "connection", "initiator")
        planned = [tuple(p[key] for key in keys) for p in plan["peers"]]
        for tunnel_type in ("xfrm", "vti"):
            tunnels = node.tunnels_settings(str(out / f"k8s-ipsec-tunnels-{tunnel_type}.default"))
            assert (tunnels["type"], tunnels["prefix"], tunnels["mtu"], str(tunnels["source"])) == (
                tunnel_type,
                whole["tunnel_prefix"],
                whole["mtu"],
                plan["gateway"],
            )
            assert peers(tunnels["peers"]) == planned, (host, tunnel_type)
            # the metrics name the node by its inventory name and index
            assert (tunnels["node"], tunnels["index"]) == (host, str(plan["index"]))
        # The firewall reads its peers from the tunnel settings, installed as /etc/default/k8s-ipsec-tunnels.
        text = (out / "k8s-ipsec-firewall.default").read_text()
        assert re.search(r"^PEERS_FILE=/etc/default/k8s-ipsec-tunnels$", text, re.M)
        installed = tmp_path / f"{host}-firewall.default"
        installed.write_text(text.replace("/etc/default/k8s-ipsec-tunnels", str(out / "k8s-ipsec-tunnels.default")))
        firewall = node.firewall_settings(str(installed))
        assert (str(firewall["pod_subnet"]), str(firewall["gateway"]), firewall["tunnel_prefix"]) == (
            plan["subnet"],
            plan["gateway"],
            whole["tunnel_prefix"],
        )
        assert (str(firewall["cluster_cidr"]), str(firewall["service_cidr"])) == (
            whole["cluster_cidr"],
            whole["service_cidr"],
        )
        assert peers(firewall["peers"]) == planned


def test_the_strongswan_unit_holds_peers_ike_sas_until_its_connections_load(three_nodes, tmp_path):
    text = three_nodes.text("kube-node1", "strongswan-dropin.conf")
    commands = {}
    for setting, command in re.findall(r"^(ExecStart\w+|ExecStop\w+)=-?(.*)$", text, re.M):
        commands.setdefault(setting, []).append(command.replace("/usr/local/sbin/k8s-ipsec-node", "node"))
    assert commands == {
        "ExecStartPre": ["node firewall hold"],
        "ExecStartPost": ["node firewall release"],
        "ExecStopPost": ["node firewall release"],
    }
    netns = NodeNetns(tmp_path)
    netns.strongswan_state.write_text("activating\n")
    pre, post, stop = commands["ExecStartPre"][0], commands["ExecStartPost"][0], commands["ExecStopPost"][0]
    results = netns.steps(pre, pre, HOLD, IKE, post, HOLD, IKE, pre, stop, HOLD)
    # Twice, as after a failed start that systemd retries: one rule. Only the peer's request is dropped.
    assert results[2:4] == [(0, "1\n"), (0, "reply\n")]
    assert results[5:7] == [(0, "0\n"), (0, "request reply\n")]
    assert results[9] == (0, "0\n")
