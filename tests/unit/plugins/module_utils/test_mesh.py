"""The pure planning logic: subnets, the full mesh, and the rejection of bad inventories."""

import ipaddress
import re

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._mesh import (
    KUBE_PROXY_MARK_BITS,
    InventoryError,
    mesh_peers,
    network_plan,
    pair_key,
    pod_subnets,
)
from hypothesis import given, settings
from hypothesis import strategies as st


def vagrant_nodes():
    return [
        {"name": "kube-node1", "address": "192.168.64.10", "index": 1},
        {"name": "kube-node2", "address": "192.168.64.20", "index": 2},
        {"name": "kube-node3", "address": "192.168.64.30", "index": 3},
    ]


def test_vagrant_inventory_gets_the_original_subnets():
    assert pod_subnets(vagrant_nodes()) == {
        "kube-node1": {"index": 1, "subnet": "10.128.1.0/24", "gateway": "10.128.1.1"},
        "kube-node2": {"index": 2, "subnet": "10.128.2.0/24", "gateway": "10.128.2.1"},
        "kube-node3": {"index": 3, "subnet": "10.128.3.0/24", "gateway": "10.128.3.1"},
    }


def test_vagrant_inventory_gets_the_original_three_pairs():
    pairs = {
        frozenset((node["name"], peer["name"]))
        for node in vagrant_nodes()
        for peer in mesh_peers(vagrant_nodes(), node["name"])
    }
    assert pairs == {
        frozenset(("kube-node1", "kube-node2")),
        frozenset(("kube-node1", "kube-node3")),
        frozenset(("kube-node2", "kube-node3")),
    }


def test_peer_entry_describes_both_ends():
    peers = mesh_peers(vagrant_nodes(), "kube-node2")
    assert [p["name"] for p in peers] == ["kube-node1", "kube-node3"]
    to_node1 = peers[0]
    assert to_node1["local_address"] == "192.168.64.20"
    assert to_node1["remote_address"] == "192.168.64.10"
    assert to_node1["local_subnet"] == "10.128.2.0/24"
    assert to_node1["remote_subnet"] == "10.128.1.0/24"
    assert to_node1["interface"] == "k8s-ipsec1"
    assert to_node1["initiator"] is False
    assert peers[1]["initiator"] is True


def test_indexes_are_given_so_removing_a_node_renumbers_nobody():
    before = pod_subnets(vagrant_nodes())
    after = pod_subnets([n for n in vagrant_nodes() if n["name"] != "kube-node2"])
    assert after == {k: v for k, v in before.items() if k != "kube-node2"}


def test_other_cluster_cidr_and_prefix():
    nodes = [{"name": "a", "address": "172.16.0.1", "index": 0}, {"name": "b", "address": "172.16.0.2", "index": 5}]
    subnets = pod_subnets(nodes, cluster_cidr="10.0.0.0/8", node_prefix=26, service_cidr="172.20.0.0/16")
    assert subnets["b"] == {"index": 5, "subnet": "10.0.1.64/26", "gateway": "10.0.1.65"}


def test_index_given_as_digit_string_from_extra_vars_is_accepted():
    nodes = vagrant_nodes()
    nodes[0]["index"] = "1"
    assert pod_subnets(nodes)["kube-node1"]["subnet"] == "10.128.1.0/24"


def test_keys_are_clear_of_kube_proxy_marks_and_unique():
    keys = {pair_key(a, b) for a in range(300) for b in range(a + 1, 300)}
    assert len(keys) == 300 * 299 // 2
    assert all(key and not key & KUBE_PROXY_MARK_BITS and key < 2**32 for key in keys)


def test_long_fqdn_host_names_give_short_valid_interfaces_and_safe_connections():
    long_name = "node-with-a-very-long-name-01.example.internal"
    nodes = [
        {"name": long_name, "address": "192.0.2.1", "index": 254},
        {"name": long_name.replace("01", "02"), "address": "192.0.2.2", "index": 255},
    ]
    (peer,) = mesh_peers(nodes, long_name)
    assert len(peer["interface"]) <= 15 and re.fullmatch(r"[A-Za-z0-9_-]+", peer["interface"])
    assert re.fullmatch(r"[A-Za-z0-9_-]+", peer["connection"])


BAD_INVENTORIES = [
    ("missing index", lambda n: n[1].pop("index"), ["kube-node2", "no k8s_ipsec_node_index"]),
    ("null index", lambda n: n[1].update(index=None), ["kube-node2", "no k8s_ipsec_node_index"]),
    ("duplicate index", lambda n: n[2].update(index=1), ["kube-node1", "kube-node3", "share k8s_ipsec_node_index 1"]),
    ("negative index", lambda n: n[0].update(index=-1), ["kube-node1", "-1", "negative"]),
    ("float index", lambda n: n[0].update(index=1.5), ["kube-node1", "1.5", "not an integer"]),
    ("word index", lambda n: n[0].update(index="one"), ["kube-node1", "'one'", "not an integer"]),
    ("boolean index", lambda n: n[0].update(index=True), ["kube-node1", "True", "not an integer"]),
    ("index beyond capacity", lambda n: n[0].update(index=256), ["kube-node1", "256", "does not fit"]),
    (
        "duplicate name",
        lambda n: n[1].update(name="kube-node1", address="192.168.64.99", index=9),
        ["kube-node1", "listed twice"],
    ),
    ("empty name", lambda n: n[0].update(name="  "), ["node #0", "empty name"]),
    ("missing name", lambda n: n[0].pop("name"), ["node #0", "empty name"]),
    (
        "duplicate address",
        lambda n: n[2].update(address="192.168.64.10"),
        ["kube-node1", "kube-node3", "192.168.64.10"],
    ),
    (
        "address not an IP",
        lambda n: n[0].update(address="kube-node1.example"),
        ["kube-node1", "kube-node1.example", "not an IP address"],
    ),
    ("missing address", lambda n: n[0].pop("address"), ["kube-node1", "None", "not an IP address"]),
    ("IPv6 underlay", lambda n: n[0].update(address="2001:db8::1"), ["kube-node1", "2001:db8::1", "IPv4"]),
    (
        "underlay inside cluster CIDR",
        lambda n: n[1].update(address="10.128.7.7"),
        ["kube-node2", "10.128.7.7", "inside cluster_cidr"],
    ),
    ("node is not a mapping", lambda n: n.__setitem__(1, "kube-node2"), ["node #1", "not a mapping"]),
    # Names become controller file names, certificate subjects and command-line words.
    ("name climbing out of a folder", lambda n: n[0].update(name="../ca"), ["'../ca'", "a node name must be"]),
    ("name with a slash", lambda n: n[0].update(name="pki/ca"), ["'pki/ca'", "a node name must be"]),
    ("name with a space", lambda n: n[0].update(name="kube node1"), ["'kube node1'", "a node name must be"]),
    ("name starting with a dot", lambda n: n[0].update(name=".hidden"), ["'.hidden'", "a node name must be"]),
    ("name starting with a dash", lambda n: n[0].update(name="-n1"), ["'-n1'", "a node name must be"]),
    ("name too long", lambda n: n[0].update(name="n" * 64), ["'" + "n" * 64 + "'", "1 to 63"]),
    ("names equal but for case", lambda n: n[1].update(name="KUBE-NODE1"), ["kube-node1", "KUBE-NODE1", "case"]),
    (
        "underlay inside service CIDR",
        lambda n: n[1].update(address="10.96.0.10"),
        ["kube-node2", "10.96.0.10", "inside service_cidr"],
    ),
    ("loopback underlay", lambda n: n[0].update(address="127.0.0.1"), ["kube-node1", "127.0.0.1", "loopback"]),
    ("multicast underlay", lambda n: n[0].update(address="224.0.0.5"), ["kube-node1", "224.0.0.5", "multicast"]),
    ("unspecified underlay", lambda n: n[0].update(address="0.0.0.0"), ["kube-node1", "0.0.0.0", "unspecified"]),
    ("broadcast underlay", lambda n: n[0].update(address="255.255.255.255"), ["kube-node1", "255.255.255.255"]),
]


@pytest.mark.parametrize("case, mutate, expected", BAD_INVENTORIES, ids=[c[0] for c in BAD_INVENTORIES])
def test_bad_node_is_rejected_naming_host_and_value(case, mutate, expected):
    nodes = vagrant_nodes()
    mutate(nodes)
    with pytest.raises(InventoryError) as error:
        pod_subnets(nodes)
    for fragment in expected:
        assert fragment in str(error.value), case
    with pytest.raises(InventoryError):
        mesh_peers(nodes, "kube-node3" if case != "duplicate name" else "kube-node1")


def test_fqdn_and_underscore_names_are_accepted():
    nodes = vagrant_nodes()
    nodes[0]["name"] = "kube-node1.example.com"
    nodes[1]["name"] = "kube_node2"
    assert list(pod_subnets(nodes))[:2] == ["kube-node1.example.com", "kube_node2"]


@pytest.mark.parametrize(
    "controller, expected",
    [
        (["10.128.0.5"], "controller address 10.128.0.5 lies inside cluster_cidr 10.128.0.0/16"),
        (["10.100.0.1"], "controller address 10.100.0.1 lies inside service_cidr 10.96.0.0/12"),
        (["ctl.example"], "controller address 'ctl.example' is not an IP address"),
    ],
)
def test_a_controller_address_the_nodes_would_drop_is_rejected(controller, expected):
    with pytest.raises(InventoryError) as error:
        network_plan(vagrant_nodes(), controller_addresses=controller)
    assert expected in str(error.value)
    assert network_plan(vagrant_nodes(), controller_addresses=["192.168.64.1", "2001:db8::1"])["nodes"]


def test_plan_holds_every_node_and_the_same_peers_as_mesh_peers():
    plan = network_plan(vagrant_nodes())
    assert plan["cluster_cidr"] == "10.128.0.0/16" and plan["service_cidr"] == "10.96.0.0/12"
    assert plan["mtu"] == 1420 and plan["node_prefix"] == 24 and plan["tunnel_prefix"] == "k8s-ipsec"
    assert plan["nodes"]["kube-node2"] == {
        "name": "kube-node2",
        "index": 2,
        "address": "192.168.64.20",
        "subnet": "10.128.2.0/24",
        "gateway": "10.128.2.1",
        "prefix_length": 24,
    }
    for node in vagrant_nodes():
        assert plan["peers"][node["name"]] == mesh_peers(vagrant_nodes(), node["name"])


def test_plan_takes_the_tunnel_prefix_and_mtu():
    plan = network_plan(vagrant_nodes(), tunnel_prefix="ipsec-", underlay_mtu=9000, ipsec_overhead=100)
    assert plan["mtu"] == 8900
    assert [p["interface"] for p in plan["peers"]["kube-node1"]] == ["ipsec-2", "ipsec-3"]


BAD_PLAN_OPTIONS = [
    ("prefix ending in a digit", {"tunnel_prefix": "vti0"}, ["tunnel_prefix 'vti0'", "not end with a digit"]),
    ("prefix with a space", {"tunnel_prefix": "k8s ipsec"}, ["tunnel_prefix 'k8s ipsec'"]),
    ("empty prefix", {"tunnel_prefix": ""}, ["tunnel_prefix ''"]),
    ("prefix too long", {"tunnel_prefix": "a-very-long-prefix"}, ["tunnel_prefix 'a-very-long-prefix'"]),
    ("MTU too small", {"underlay_mtu": 600}, ["underlay_mtu 600 minus ipsec_overhead 80", "below 576"]),
    ("overhead negative", {"ipsec_overhead": -1}, ["ipsec_overhead -1"]),
    ("MTU not a number", {"underlay_mtu": "jumbo"}, ["underlay_mtu 'jumbo'"]),
]


@pytest.mark.parametrize("case, options, expected", BAD_PLAN_OPTIONS, ids=[c[0] for c in BAD_PLAN_OPTIONS])
def test_bad_plan_option_is_rejected_naming_the_value(case, options, expected):
    with pytest.raises(InventoryError) as error:
        network_plan(vagrant_nodes(), **options)
    for fragment in expected:
        assert fragment in str(error.value), case


def test_device_name_too_long_for_an_index_names_the_host():
    nodes = vagrant_nodes()
    nodes[2]["index"] = 40000
    with pytest.raises(InventoryError, match=r"host kube-node3: .* 40000 .*tunnel-prefix40000.* longer than 15"):
        network_plan(
            nodes,
            cluster_cidr="10.0.0.0/8",
            node_prefix=28,
            service_cidr="172.20.0.0/16",
            tunnel_prefix="tunnel-prefix",
        )


def test_plan_problems_are_reported_with_the_inventory_problems():
    nodes = vagrant_nodes()
    nodes[0]["index"] = -1
    with pytest.raises(InventoryError) as error:
        network_plan(nodes, underlay_mtu=100)
    assert len(error.value.problems) == 2


BAD_NETWORKS = [
    ("invalid cluster CIDR", {"cluster_cidr": "10.128.0.0/33"}, ["cluster_cidr", "10.128.0.0/33"]),
    ("cluster CIDR with host bits", {"cluster_cidr": "10.128.0.1/16"}, ["cluster_cidr", "10.128.0.1/16"]),
    ("cluster CIDR not an address", {"cluster_cidr": "pods"}, ["cluster_cidr", "'pods'"]),
    ("IPv6 cluster CIDR", {"cluster_cidr": "fd00::/48"}, ["cluster_cidr", "IPv4"]),
    ("node prefix equal to cluster's", {"node_prefix": 16}, ["node_prefix /16", "longer than the cluster CIDR /16"]),
    ("node prefix shorter than cluster's", {"node_prefix": 12}, ["node_prefix /12"]),
    ("node prefix too long", {"node_prefix": 31}, ["node_prefix /31", "at most /30"]),
    ("node prefix not a number", {"node_prefix": "wide"}, ["node_prefix 'wide'", "not an integer"]),
    ("cluster overlaps services", {"service_cidr": "10.128.0.0/12"}, ["overlaps", "10.128.0.0/12"]),
    ("invalid service CIDR", {"service_cidr": "10.96.0.0/40"}, ["service_cidr", "10.96.0.0/40"]),
]


@pytest.mark.parametrize("case, options, expected", BAD_NETWORKS, ids=[c[0] for c in BAD_NETWORKS])
def test_bad_network_option_is_rejected_naming_the_value(case, options, expected):
    with pytest.raises(InventoryError) as error:
        pod_subnets(vagrant_nodes(), **options)
    for fragment in expected:
        assert fragment in str(error.value), case


def test_empty_inventory_is_rejected():
    with pytest.raises(InventoryError, match="no nodes"):
        pod_subnets([])


def test_unknown_node_is_rejected_listing_the_known_ones():
    with pytest.raises(InventoryError, match=r"'kube-node9' is not in the inventory.*kube-node1, kube-node2"):
        mesh_peers(vagrant_nodes(), "kube-node9")


def test_every_problem_is_reported_at_once():
    nodes = vagrant_nodes()
    nodes[0]["index"] = -4
    nodes[2]["address"] = "nowhere"
    with pytest.raises(InventoryError) as error:
        pod_subnets(nodes)
    assert len(error.value.problems) == 2


@st.composite
def inventories(draw):
    prefix = draw(st.integers(min_value=20, max_value=28))
    capacity = 1 << (prefix - 16)
    indexes = draw(st.lists(st.integers(0, capacity - 1), min_size=1, max_size=40, unique=True))
    names = draw(
        st.lists(
            # the names the plan accepts: DNS-label-like
            st.from_regex(r"[a-z0-9][a-z0-9._-]{0,59}", fullmatch=True),
            min_size=len(indexes),
            max_size=len(indexes),
            unique=True,
        )
    )
    nodes = [
        {"name": name, "address": str(ipaddress.ip_address("172.16.0.1") + position), "index": index}
        for position, (name, index) in enumerate(zip(names, indexes, strict=True))
    ]
    return nodes, prefix


@settings(max_examples=150, deadline=None)
@given(inventories())
def test_mesh_is_complete_mirrored_and_names_are_unique(inventory):
    nodes, prefix = inventory
    subnets = pod_subnets(nodes, node_prefix=prefix)
    by_node = {node["name"]: mesh_peers(nodes, node["name"], node_prefix=prefix) for node in nodes}
    networks = [ipaddress.ip_network(entry["subnet"]) for entry in subnets.values()]
    assert all(not a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    for name, peers in by_node.items():
        assert {p["name"] for p in peers} == {n["name"] for n in nodes} - {name}
        assert len({p["connection"] for p in peers}) == len(peers)
        assert len({p["interface"] for p in peers}) == len(peers)
        assert len({p["key"] for p in peers}) == len(peers)
        for peer in peers:
            assert len(peer["interface"]) <= 15
            assert not peer["key"] & KUBE_PROXY_MARK_BITS
            mirror = next(p for p in by_node[peer["name"]] if p["name"] == name)
            assert mirror["key"] == peer["key"]
            assert mirror["local_address"] == peer["remote_address"]
            assert mirror["remote_address"] == peer["local_address"]
            assert mirror["local_subnet"] == peer["remote_subnet"] == subnets[peer["name"]]["subnet"]
            assert mirror["remote_subnet"] == peer["local_subnet"] == subnets[name]["subnet"]
            assert mirror["initiator"] != peer["initiator"]
