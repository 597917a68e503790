"""The data path as rendered for 3- and 4-node plans and both tunnel types: swanctl.conf, secrets, conflist, charon
settings, the scripts' settings, and the static scripts run against a stand-in `ip` that records what they would do."""

import ipaddress
import itertools
import json
import os
import re
import subprocess

import pytest
import yaml
from ansible_cli import ROOT
from netns import in_netns

TUNNEL_TYPES = ["xfrm", "vti"]
TUNNEL_MODULES = {"xfrm": "xfrm_interface", "vti": "ip_vti"}

SCRIPTS = {
    "k8s-ipsec-keeper": ROOT / "roles/strongswan/files/k8s-ipsec-keeper",
    "k8s-ipsec-cni0": ROOT / "roles/cni_bridge/files/k8s-ipsec-cni0",
    "k8s-ipsec-firewall": ROOT / "roles/forward_rules/files/k8s-ipsec-firewall",
    "k8s-ipsec-tunnels": ROOT / "roles/strongswan/files/k8s-ipsec-tunnels",
}


def parse_strongswan(text):
    """strongSwan's settings syntax (swanctl.conf, strongswan.conf) as nested dicts."""
    root = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            section = {}
            stack[-1][line[:-1].strip()] = section
            stack.append(section)
        elif line == "}":
            stack.pop()
        else:
            key, value = line.split("=", 1)
            stack[-1][key.strip()] = value.strip()
    assert len(stack) == 1, "unbalanced braces"
    return root


@pytest.fixture(params=["three_nodes", "four_nodes"])
def cluster(request):
    """(rendered files, {host: plan node}) for both layouts."""
    rendered = request.getfixturevalue(request.param)
    hosts = sorted(p.name for p in rendered.out.iterdir() if (p / "computed.json").exists())
    return rendered, {host: rendered.computed(host)["plan_node"] for host in hosts}


@pytest.fixture(params=TUNNEL_TYPES)
def tunnel_type(request):
    return request.param


def connections(rendered, host, name="swanctl.conf"):
    return parse_strongswan(rendered.text(host, name))["connections"]


def pairs(plans):
    """(a, b, a's peer entry for b, b's peer entry for a) for every pair of nodes."""
    peer = {(host, p["name"]): p for host, plan in plans.items() for p in plan["peers"]}
    return [(a, b, peer[(a, b)], peer[(b, a)]) for a, b in itertools.combinations(sorted(plans), 2)]


def child(conn):
    (settings,) = conn["children"].values()
    return settings


def test_every_node_has_one_connection_per_peer(cluster):
    rendered, plans = cluster
    for host, plan in plans.items():
        conns = connections(rendered, host)
        assert sorted(conns) == sorted(p["connection"] for p in plan["peers"])
        assert len(conns) == len(plans) - 1


INITIATOR_ACTIONS = {"start_action": "trap|start", "close_action": "start", "dpd_action": "restart"}
RESPONDER_ACTIONS = {"start_action": "trap", "close_action": "none", "dpd_action": "clear"}


def test_exactly_one_end_of_every_pair_starts_the_tunnel(cluster, tunnel_type):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        starts = [
            child(connections(rendered, host, f"swanctl-{tunnel_type}.conf")[peer["connection"]])["start_action"]
            for host, peer in ((a, peer_of_a), (b, peer_of_b))
        ]
        assert sorted(starts) == ["trap", "trap|start"], (a, b)
        assert [s == "trap|start" for s in starts] == [peer_of_a["initiator"], peer_of_b["initiator"]], (a, b)


def test_initiator_restarts_and_both_ends_trap(cluster, tunnel_type):
    """No keeper timer: trap policies on both ends, restarts on the initiator end only."""
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        for host, peer in ((a, peer_of_a), (b, peer_of_b)):
            conn = connections(rendered, host, f"swanctl-{tunnel_type}.conf")[peer["connection"]]
            actions = {key: child(conn)[key] for key in INITIATOR_ACTIONS}
            assert actions == (INITIATOR_ACTIONS if peer["initiator"] else RESPONDER_ACTIONS), (host, peer["name"])
            assert conn["unique"] == "replace"
            assert conn.get("keyingtries") == ("0" if peer["initiator"] else None), (host, peer["name"])


def test_default_tunnel_type_is_the_roles_default(cluster):
    rendered, plans = cluster
    default = yaml.safe_load((ROOT / "roles/strongswan/defaults/main.yml").read_text())["strongswan_tunnel_type"]
    assert default in TUNNEL_TYPES
    for host in plans:
        for name in ("swanctl.conf", "k8s-ipsec-tunnels.default", "modules-load.conf"):
            typed = name.replace(".", f"-{default}.", 1)
            assert rendered.text(host, name) == rendered.text(host, typed), (host, name)


def test_keys_are_equal_at_both_ends_and_one_per_pair(cluster, tunnel_type):
    """mark_in/mark_out for VTI devices, if_id_in/if_id_out for XFRM interfaces: the pair's key at both ends."""
    rendered, plans = cluster
    name = f"swanctl-{tunnel_type}.conf"
    used, unused = (("if_id_in", "if_id_out"), ("mark_in", "mark_out"))[:: 1 if tunnel_type == "xfrm" else -1]
    key_of_pair = {}
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = child(connections(rendered, a, name)[peer_of_a["connection"]])
        cb = child(connections(rendered, b, name)[peer_of_b["connection"]])
        assert ca[used[0]] == ca[used[1]] == cb[used[0]] == cb[used[1]] == str(peer_of_a["key"]), (a, b)
        assert not set(unused) & (set(ca) | set(cb)), (a, b)
        key_of_pair[(a, b)] = ca[used[0]]
    assert len(set(key_of_pair.values())) == len(key_of_pair)
    for host in plans:
        keys = [child(c)[used[0]] for c in connections(rendered, host, name).values()]
        assert len(set(keys)) == len(keys)
        assert all(not int(key) & 0xC000 for key in keys), "kube-proxy's mark bits"


def test_marks_are_equal_at_both_ends_and_unique_per_node(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = child(connections(rendered, a, "swanctl-vti.conf")[peer_of_a["connection"]])
        cb = child(connections(rendered, b, "swanctl-vti.conf")[peer_of_b["connection"]])
        assert ca["mark_in"] == ca["mark_out"] == cb["mark_in"] == cb["mark_out"], (a, b)
    for host in plans:
        marks = [child(c)["mark_in"] for c in connections(rendered, host, "swanctl-vti.conf").values()]
        assert len(set(marks)) == len(marks)
        assert all(not int(mark) & 0xC000 for mark in marks), "kube-proxy's mark bits"


def test_only_the_tunnel_bindings_differ_between_the_types(cluster):
    rendered, plans = cluster
    for host in plans:
        xfrm, vti = (connections(rendered, host, f"swanctl-{t}.conf") for t in ("xfrm", "vti"))
        for conn in xfrm:
            for settings in (child(xfrm[conn]), child(vti[conn])):
                for key in ("if_id_in", "if_id_out", "mark_in", "mark_out"):
                    settings.pop(key, None)
        assert xfrm == vti


def test_each_type_loads_its_own_kernel_module(cluster, tunnel_type):
    rendered, plans = cluster
    for host in plans:
        lines = rendered.text(host, f"modules-load-{tunnel_type}.conf").splitlines()
        assert lines[0].startswith("# Managed by k8s_ipsec.cni (role strongswan)")
        assert lines[1:] == [TUNNEL_MODULES[tunnel_type]]
    node_prep = yaml.safe_load((ROOT / "roles/node_prep/defaults/main.yml").read_text())["node_prep_kernel_modules"]
    assert not set(TUNNEL_MODULES.values()) & set(node_prep)


def test_traffic_selectors_and_identities_are_mirrored(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = connections(rendered, a)[peer_of_a["connection"]]
        cb = connections(rendered, b)[peer_of_b["connection"]]
        assert child(ca)["local_ts"] == child(cb)["remote_ts"] == plans[a]["subnet"]
        assert child(ca)["remote_ts"] == child(cb)["local_ts"] == plans[b]["subnet"]
        assert ca["local_addrs"] == cb["remote_addrs"] == ca["local"]["id"] == cb["remote"]["id"]
        assert ca["remote_addrs"] == cb["local_addrs"] == plans[b]["address"]


def test_psk_secrets_are_shared_by_both_ends_and_differ_between_pairs(cluster):
    rendered, plans = cluster
    secret_of = {}
    for host in plans:
        secrets = parse_strongswan(rendered.text(host, "swanctl-secrets.conf"))["secrets"]
        for entry in secrets.values():
            secret_of[(entry["id-local"], entry["id-remote"])] = entry["secret"]
        conns = connections(rendered, host, "swanctl-psk.conf")
        assert {c["local"]["auth"] for c in conns.values()} == {"psk"}
    for (local, remote), secret in secret_of.items():
        assert secret_of[(remote, local)] == secret
        assert len(secret.strip('"')) == 64
    assert len(set(secret_of.values())) == len(secret_of) // 2


def test_psk_files_are_named_by_the_pairs_indexes(cluster):
    rendered, plans = cluster
    indexes = sorted(plan["index"] for plan in plans.values())
    expected = {f"pair-{a}-{b}" for a, b in itertools.combinations(indexes, 2)}
    assert {path.name for path in (rendered.out / "pki" / "psk").iterdir()} == expected


def test_conflist_uses_the_plan(cluster):
    rendered, plans = cluster
    for host, plan in plans.items():
        conflist = json.loads(rendered.text(host, "conflist.json"))
        bridge = conflist["plugins"][0]
        assert bridge["ipMasq"] is False and bridge["bridge"] == "cni0"
        assert bridge["ipam"]["ranges"] == [[{"subnet": plan["subnet"], "gateway": plan["gateway"]}]]
        assert bridge["ipam"]["dataDir"].startswith("/run/")
        assert bridge["mtu"] == rendered.computed(host)["plan_cluster"]["mtu"]


def test_charon_installs_no_routes_and_keeps_forecast_off(cluster):
    rendered, plans = cluster
    charon = parse_strongswan(rendered.text(next(iter(plans)), "charon.conf"))["charon"]
    assert charon["install_routes"] == "no"
    # strongSwan 6.0 defaults to make-before-break reauthentication, 5.9 does not: the same on both.
    assert charon["make_before_break"] == "yes"
    assert {charon["plugins"][name]["load"] for name in ("forecast", "farp", "bypass-lan")} == {"no"}


def read_settings(rendered, host, name):
    """A rendered settings file, sourced by sh, as a dict of its variables."""
    proc = subprocess.run(
        ["sh", "-c", '. "$1"; for v in BRIDGE ADDRESS MTU CLUSTER_CIDR TUNNELS MASQUERADE PREFIX SOURCE TYPE PEERS '
         'PEERS_FILE; do eval "printf \'%s=%s\\0\' $v \\"\\${$v-}\\""; done', "sh", str(rendered.out / host / name)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if item)


def test_script_settings_are_the_plan(cluster, tunnel_type):
    rendered, plans = cluster
    for host, plan in plans.items():
        whole = rendered.computed(host)["plan_cluster"]
        cni0 = read_settings(rendered, host, "k8s-ipsec-cni0.default")
        assert cni0["ADDRESS"] == "%s/%d" % (plan["gateway"], plan["prefix_length"])
        assert cni0["MTU"] == str(whole["mtu"]) and cni0["CLUSTER_CIDR"] == whole["cluster_cidr"]
        firewall = read_settings(rendered, host, "k8s-ipsec-firewall.default")
        assert firewall["TUNNELS"] == whole["tunnel_prefix"] + "+"
        assert firewall["CLUSTER_CIDR"] == whole["cluster_cidr"] and firewall["MASQUERADE"] == "yes"
        # The firewall reads the peers from the tunnel settings: one file names them (see peers.yml).
        assert firewall["PEERS_FILE"] == "/etc/default/k8s-ipsec-tunnels" and not firewall["PEERS"]
        tunnels = read_settings(rendered, host, f"k8s-ipsec-tunnels-{tunnel_type}.default")
        assert tunnels["SOURCE"] == plan["gateway"] and tunnels["PREFIX"] == whole["tunnel_prefix"]
        assert tunnels["TYPE"] == tunnel_type
        lines = [line.split() for line in tunnels["PEERS"].splitlines() if line.strip()]
        assert lines == [
            [
                p["interface"],
                p["local_address"],
                p["remote_address"],
                str(p["key"]),
                p["remote_subnet"],
                p["connection"],
                "initiator" if p["initiator"] else "responder",
            ]
            for p in plan["peers"]
        ]


def test_units_are_ordered_by_the_plans_unit_names(cluster):
    rendered, plans = cluster
    host = next(iter(plans))
    units = rendered.computed(host)["plan_cluster"]["units"]
    tunnels = rendered.text(host, "k8s-ipsec-tunnels.service").splitlines()
    assert f"PartOf={units['bridge']}" in tunnels and f"Requires={units['bridge']}" in tunnels
    dropin = rendered.text(host, "strongswan-dropin.conf").splitlines()
    assert f"After={units['bridge']} {units['tunnels']} {units['firewall']}" in dropin


def run(*command, env=None):
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_static_scripts_pass_shellcheck(name):
    proc = run("shellcheck", "-s", "sh", str(SCRIPTS[name]))
    assert proc.returncode == 0, proc.stdout


def test_rendered_settings_pass_shellcheck(cluster):
    rendered, plans = cluster
    files = [str(rendered.out / host / f"{name}.default") for host in plans for name in SCRIPTS if "keeper" not in name]
    files += [str(rendered.out / host / f"k8s-ipsec-tunnels-{t}.default") for host in plans for t in TUNNEL_TYPES]
    # SC2034 (assigned but unused): these files only define variables, for the scripts that source them.
    proc = run("shellcheck", "-s", "sh", "-e", "SC2034", *files)
    assert proc.returncode == 0, proc.stdout


FAKE_IP = """#!/bin/sh
# Stand-in for ip(8): logs every call and answers the read-only ones from the node described in $FAKE_STATE:
# link/<name> is what `ip -d -o link show <name>` prints (a device exists when its file does), addr the node's
# address lines, ifaddr/<device> a device's addresses, routes the routing table. Nothing is ever changed.
echo "ip $*" >> "$FAKE_LOG"
case "$*" in
  "-o link show type "*)
    for f in "$FAKE_STATE"/link/*; do if [ -e "$f" ]; then grep -F "    $5 " "$f" || true; fi; done ;;
  "link show "*) [ -e "$FAKE_STATE/link/$3" ]; exit ;;
  "-d -o link show") cat "$FAKE_STATE"/link/* 2>/dev/null || true ;;
  "-d -o link show "*) cat "$FAKE_STATE/link/$5" 2>/dev/null; exit ;;
  "-4 -o addr show") cat "$FAKE_STATE"/ifaddr/* 2>/dev/null || true ;;
  "-4 -o addr show dev "*) cat "$FAKE_STATE/ifaddr/$6" 2>/dev/null || true ;;
  "-4 -o route show") cat "$FAKE_STATE/routes" ;;
  "-4 -o route show exact "*) awk -v s="$6" '$1 == s' "$FAKE_STATE/routes" ;;
esac
exit 0
"""

UNDERLAY = "eth1"  # what an XFRM interface of an earlier version was created on


def xfrm_line(number, name, key, underlay="NONE", mtu=1420, up=True):
    """`ip -d -o link show` of an XFRM interface, as iproute2 6.1 prints it (if_id in hex)."""
    flags = "NOARP,UP,LOWER_UP" if up else "NOARP"
    return (
        f"{number}: {name}@{underlay}: <{flags}> mtu {mtu} qdisc noqueue state UNKNOWN mode DEFAULT group default "
        "qlen 1000\\    link/none  promiscuity 0 allmulti 0 minmtu 68 maxmtu 65535 \\    "
        f"xfrm if_id {key:#x} addrgenmode eui64 numtxqueues 1 numrxqueues 1 gso_max_size 65536 gso_max_segs 65535"
    )


def vti_line(number, name, key, local, remote, mtu=1420, up=True):
    """`ip -d -o link show` of a VTI device, as iproute2 6.1 prints it (keys as dotted quads)."""
    flags = "POINTOPOINT,NOARP,UP,LOWER_UP" if up else "POINTOPOINT,NOARP"
    dotted = ipaddress.IPv4Address(key)
    return (
        f"{number}: {name}@NONE: <{flags}> mtu {mtu} qdisc noqueue state UNKNOWN mode DEFAULT group default "
        f"qlen 1000\\    link/ipip {local} peer {remote} promiscuity 0 allmulti 0 minmtu 0 maxmtu 0 \\    "
        f"vti remote {remote} local {local} ikey {dotted} okey {dotted} addrgenmode eui64 numtxqueues 1"
    )


class Node:
    """The node the stand-in `ip` describes (see FAKE_IP), written under tmp_path/state."""

    def __init__(self, tmp_path, rendered, host, tunnel_type):
        self.plan = rendered.computed(host)["plan_node"]
        self.cluster = rendered.computed(host)["plan_cluster"]
        self.settings = rendered.out / host / f"k8s-ipsec-tunnels-{tunnel_type}.default"
        self.tunnel_type = tunnel_type
        self.tmp_path = tmp_path
        self.state = tmp_path / "state"
        for folder in ("link", "ifaddr"):
            (self.state / folder).mkdir(parents=True, exist_ok=True)
        (self.state / "routes").write_text("")
        self.number = 10

    @property
    def prefix(self):
        return self.cluster["tunnel_prefix"]

    @property
    def peers(self):
        return self.plan["peers"]

    def link(self, name, line):
        (self.state / "link" / name).write_text(line + "\n")

    def tunnel(self, peer, tunnel_type=None, **changes):
        """The peer's device as apply leaves it, of tunnel_type (default: the settings' type)."""
        self.number += 1
        fields = {"key": peer["key"], "mtu": self.cluster["mtu"], **changes}
        if (tunnel_type or self.tunnel_type) == "xfrm":
            line = xfrm_line(self.number, peer["interface"], **fields)
        else:
            line = vti_line(self.number, peer["interface"], local=peer["local_address"],
                            remote=peer["remote_address"], **fields)  # fmt: skip
        self.link(peer["interface"], line)

    def healthy(self, tunnel_type=None):
        """Every peer's device, address and route as apply leaves them."""
        routes = []
        for peer in self.peers:
            self.tunnel(peer, tunnel_type)
            device, gateway = peer["interface"], self.plan["gateway"]
            (self.state / "ifaddr" / device).write_text(
                f"{self.number}: {device}    inet {gateway}/32 scope global {device}\\       valid_lft forever\n"
            )
            routes.append(f"{peer['remote_subnet']} dev {device} scope link src {gateway}")
        (self.state / "routes").write_text("".join(line + "\n" for line in routes))
        return self

    def other(self, name, tunnel_type, key=99):
        """Somebody else's device (or a stale one of ours) of either kind."""
        self.number += 1
        if tunnel_type == "xfrm":
            self.link(name, xfrm_line(self.number, name, key))
        else:
            self.link(name, vti_line(self.number, name, key, "192.0.2.1", "192.0.2.2"))

    def run(self, verb="apply"):
        """(status, output, calls) of `k8s-ipsec-tunnels <verb>` on this node."""
        bin_dir = self.tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "ip").write_text(FAKE_IP)
        (bin_dir / "sysctl").write_text('#!/bin/sh\necho "sysctl $*" >> "$FAKE_LOG"\n')
        for tool in ("ip", "sysctl"):
            (bin_dir / tool).chmod(0o755)
        log = self.tmp_path / "calls.log"
        log.write_text("")
        env = dict(
            os.environ,
            PATH=f"{bin_dir}:{os.environ['PATH']}",
            FAKE_LOG=str(log),
            FAKE_STATE=str(self.state),
            K8S_IPSEC_TUNNELS_CONFIG=str(self.settings),
        )
        proc = run("sh", str(SCRIPTS["k8s-ipsec-tunnels"]), verb, env=env)
        return proc.returncode, proc.stdout + proc.stderr, log.read_text().splitlines()

    def apply(self):
        status, output, calls = self.run("apply")
        assert status == 0, output
        return calls


def link_changes(calls):
    return [c for c in calls if re.match(r"ip link (add|del|change) ", c)]


def node_of(cluster, tmp_path, tunnel_type, pick=max):
    """The node with the highest (or lowest) index, with the settings of tunnel_type."""
    rendered, plans = cluster
    return Node(tmp_path, rendered, pick(plans, key=lambda h: plans[h]["index"]), tunnel_type)


@pytest.fixture
def last_node(cluster, tunnel_type, tmp_path):
    return node_of(cluster, tmp_path, tunnel_type)


@pytest.fixture
def first_node(cluster, tunnel_type, tmp_path):
    return node_of(cluster, tmp_path, tunnel_type, min)


@pytest.fixture
def xfrm_node(cluster, tmp_path):
    return node_of(cluster, tmp_path, "xfrm")


OPERATORS = {
    "vti": ["vti0", "vti2", "ip_vti0", "{prefix}x", "{prefix}2b", "ipsec7"],
    "xfrm": ["xfrm0", "xfrm3", "ipsec9", "{prefix}y", "{prefix}3c"],
}


def test_tunnel_sweep_removes_only_stale_devices_of_our_prefix(last_node):
    node = last_node.healthy()
    stale = [f"{node.prefix}{node.plan['index'] + 100}", f"{node.prefix}{node.plan['index'] + 101}"]
    node.other(stale[0], "vti")
    node.other(stale[1], "xfrm")
    for kind, names in OPERATORS.items():
        for name in names:
            node.other(name.format(prefix=node.prefix), kind)
    calls = node.apply()
    deleted = [c.split()[-1] for c in calls if c.startswith("ip link del ")]
    assert sorted(deleted) == sorted(stale)
    for peer in node.peers:
        assert f"ip route replace {peer['remote_subnet']} dev {peer['interface']} src {node.plan['gateway']}" in calls
        if node.tunnel_type == "vti":
            assert any(c.startswith(f"ip link change {peer['interface']} type vti ") for c in calls)
    assert "ip -o link show type vti" in calls and "ip -o link show type xfrm" in calls


def test_tunnel_remove_deletes_every_device_of_ours_and_nobody_elses(last_node):
    node = last_node.healthy()
    stale = f"{node.prefix}{node.plan['index'] + 100}"
    node.other(stale, "xfrm")
    for kind, names in OPERATORS.items():
        for name in names:
            node.other(name.format(prefix=node.prefix), kind)
    status, output, calls = node.run("remove")
    assert status == 0, output
    deleted = [c.split()[-1] for c in calls if c.startswith("ip link del ")]
    assert sorted(deleted) == sorted([p["interface"] for p in node.peers] + [stale])
    assert link_changes(calls) == [f"ip link del {d}" for d in deleted]


def test_tunnel_script_creates_missing_devices_with_the_pair_key(first_node):
    node = first_node
    calls = node.apply()
    for peer in node.peers:
        if node.tunnel_type == "vti":
            expected = "ip link add {interface} type vti local {local_address} remote {remote_address} key {key}"
            assert expected.format(**peer) in calls
            assert f"sysctl -qw net.ipv4.conf.{peer['interface']}.disable_policy=1" in calls
        else:
            assert f"ip link add {peer['interface']} type xfrm if_id {peer['key']}" in calls
        assert f"ip link set {peer['interface']} mtu {node.cluster['mtu']} up" in calls
        assert f"ip addr replace {node.plan['gateway']}/32 dev {peer['interface']}" in calls
    assert not [c for c in calls if c.startswith("ip link del ")]
    if node.tunnel_type == "xfrm":
        # No VTI device, and no disable_policy: the SAs' policies carry the interface ID.
        assert not [c for c in calls if " type vti " in c or c.startswith("sysctl")]


def test_apply_on_a_node_as_it_leaves_it_recreates_nothing(last_node):
    node = last_node.healthy()
    changes = link_changes(node.apply())
    if node.tunnel_type == "xfrm":
        assert changes == []
    else:  # VTI devices get their endpoints and key set in place
        expected = "ip link change {interface} type vti local {local_address} remote {remote_address} key {key}"
        assert changes == [expected.format(**peer) for peer in node.peers]


def test_switching_the_tunnel_type_replaces_our_devices_of_the_other_kind(last_node):
    node = last_node
    other = "vti" if node.tunnel_type == "xfrm" else "xfrm"
    node.healthy(other)
    calls = node.apply()
    for peer in node.peers:
        device = peer["interface"]
        removed = calls.index(f"ip link del {device}")
        added = next(i for i, c in enumerate(calls) if c.startswith(f"ip link add {device} type {node.tunnel_type} "))
        assert removed < added
    assert not [c for c in calls if c.startswith("ip link change ")]


def test_an_xfrm_interface_on_an_underlay_device_is_kept(xfrm_node):
    """Created with `dev` by an earlier version: still right (no underlay is needed, none is checked)."""
    node = xfrm_node.healthy()
    peer = node.peers[0]
    node.tunnel(peer, underlay=UNDERLAY)
    assert link_changes(node.apply()) == []
    assert node.run("check")[:2] == (0, "")


def test_an_xfrm_interface_needs_no_address_on_the_underlay(xfrm_node):
    """At boot the tunnels unit runs before the underlay has its address: the stand-in node has none at all."""
    status, output, calls = xfrm_node.run("apply")
    assert status == 0, output
    assert not [c for c in calls if c.startswith("ip -o -4 addr show to ")]


def test_check_passes_on_a_node_as_apply_leaves_it(last_node):
    status, output, calls = last_node.healthy().run("check")
    assert (status, output) == (0, "")
    assert link_changes(calls) == []


def break_node(node, drift):
    """Make the node differ from the settings in one way; returns the line check must print."""
    peer = node.peers[0]
    device, key = peer["interface"], peer["key"]
    other = "vti" if node.tunnel_type == "xfrm" else "xfrm"
    if drift == "missing":
        (node.state / "link" / device).unlink()
        return f"tunnel {device} is missing"
    if drift == "other kind":
        node.tunnel(peer, other)
        if node.tunnel_type == "xfrm":
            return f"tunnel {device} is not an XFRM interface with if_id {key:#x}"
        return f"tunnel {device} is not a VTI device from {peer['local_address']} to {peer['remote_address']}"
    if drift == "other key":
        node.tunnel(peer, key=key + 1)
        if node.tunnel_type == "xfrm":
            return f"tunnel {device} is not an XFRM interface with if_id {key:#x}"
        return f"tunnel {device} does not use key {key}"
    if drift == "down":
        node.tunnel(peer, up=False)
        return f"tunnel {device} is down"
    if drift == "no address":
        (node.state / "ifaddr" / device).unlink()
        return f"tunnel {device} lacks {node.plan['gateway']}/32"
    if drift == "route elsewhere":
        routes = (node.state / "routes").read_text()
        (node.state / "routes").write_text(routes.replace(f" dev {device} ", " dev eth0 "))
        return f"route {peer['remote_subnet']} dev {device} src {node.plan['gateway']} is missing"
    if drift == "stale of the other kind":
        stale = f"{node.prefix}{node.plan['index'] + 100}"
        node.other(stale, other)
        return f"tunnel {stale} is stale"
    raise AssertionError(drift)


@pytest.mark.parametrize(
    "drift", ["missing", "other kind", "other key", "down", "no address", "route elsewhere", "stale of the other kind"]
)
def test_check_reports_what_differs(last_node, drift):
    node = last_node.healthy()
    expected = break_node(node, drift)
    status, output = node.run("check")[:2]
    assert status == 1
    assert expected in output.splitlines(), output


def test_check_compares_the_if_id_in_hex_as_ip_prints_it(xfrm_node):
    node = xfrm_node.healthy()
    peer = max(node.peers, key=lambda p: p["key"])
    line = (node.state / "link" / peer["interface"]).read_text()
    assert f" if_id {peer['key']:#x} " in line
    (node.state / "link" / peer["interface"]).write_text(line.replace(f"{peer['key']:#x}", str(peer["key"])))
    status, output = node.run("check")[:2]
    assert status == 1 and f"tunnel {peer['interface']} is not an XFRM interface" in output


# The keeper's view of a node with three peers: it starts the tunnels to b and c, d starts the one to it.
THREE_PEERS = (
    "PEERS='\n"
    "k8s-ipsec2 a b 3 10.128.2.0/24 peer2-n2 initiator\n"
    "k8s-ipsec3 a c 5 10.128.3.0/24 peer3-n3 initiator\n"
    "k8s-ipsec4 a d 9 10.128.4.0/24 peer4-n4 responder\n'\n"
)


def test_the_keeper_only_initiates_what_this_end_starts(tmp_path):
    """The keeper re-initiates a down tunnel of the initiator end, never one of the responder end or one that is up."""
    calls = tmp_path / "calls"
    swanctl = tmp_path / "swanctl"
    swanctl.write_text(
        "#!/bin/sh\n"
        'case "$1" in --list-sas) echo "list-sa event {peer3-n3 {state=ESTABLISHED}}" ;; '
        f'*) echo "$*" >>{calls} ;; esac\n'
    )
    swanctl.chmod(0o755)
    settings = tmp_path / "tunnels"
    settings.write_text(THREE_PEERS)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "K8S_IPSEC_TUNNELS_CONFIG": str(settings)}
    subprocess.run(["sh", str(SCRIPTS["k8s-ipsec-keeper"])], env=env, check=True)
    assert calls.read_text().splitlines() == ["--initiate --child peer2-n2 --timeout 15"]


def test_prune_closes_only_our_ike_sas_of_peers_that_left(tmp_path):
    """After a reload, the IKE_SAs of connections no longer in the peers are closed; peers and others are kept."""
    calls = tmp_path / "calls"
    swanctl = tmp_path / "swanctl"
    listing = "\n".join(
        f"list-sa event {{{name} {{uniqueid=1 state=ESTABLISHED child-sas {{{name}-1 {{state=INSTALLED}}}}}}}}"
        for name in ("peer2-n2", "peer4-n4", "peer4-n4", "operator-vpn")
    )
    swanctl.write_text(f'#!/bin/sh\ncase "$1" in --list-sas) echo \'{listing}\' ;; *) echo "$*" >>{calls} ;; esac\n')
    swanctl.chmod(0o755)
    settings = tmp_path / "tunnels"
    settings.write_text(
        "PEERS='\n"
        "k8s-ipsec2 a b 3 10.128.2.0/24 peer2-n2 initiator\n"
        "k8s-ipsec3 a c 5 10.128.3.0/24 peer3-n3 responder\n'\n"
    )
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "K8S_IPSEC_TUNNELS_CONFIG": str(settings)}
    out = subprocess.run(["sh", str(SCRIPTS["k8s-ipsec-keeper"]), "prune"], env=env, check=True, capture_output=True)
    assert calls.read_text().splitlines() == ["--terminate --ike peer4-n4 --force --timeout 10"]
    assert out.stdout.decode() == "closing peer4-n4: no longer a peer\n"


FAKE_CHARON = """#!/bin/sh
# swanctl as charon answers it, make-before-break: --rekey --reauth of an IKE_SA makes a new one (uniqueid + 10) and
# deletes the old; every call is logged.
state={state}
echo "$*" >>{state}/calls
case "$1" in
  --load-creds) echo "loaded certificate from /etc/swanctl/x509/k8s-ipsec.crt" ;;
  --list-sas)
    for sa in {state}/sa.*; do if [ -f "$sa" ]; then cat "$sa"; fi; done
    ;;
  --rekey)
    id=$3
    for sa in {state}/sa.*; do
      grep -q "uniqueid=$id " "$sa" || continue
      sed "s/uniqueid=$id /uniqueid=$((id + 10)) /; s/established=[0-9]*/established=0/" "$sa" >"$sa.new"
      mv "$sa.new" "$sa"
    done
    ;;
esac
"""


@pytest.fixture
def charon(tmp_path):
    """A node with three peers: it starts peer2-n2 and peer3-n3, peer4-n4 starts the other."""
    fake = tmp_path / "bin" / "swanctl"
    fake.parent.mkdir()
    fake.write_text(FAKE_CHARON.format(state=tmp_path))
    fake.chmod(0o755)
    settings = tmp_path / "tunnels"
    settings.write_text(THREE_PEERS)

    def sa(name, uniqueid):
        (tmp_path / f"sa.{name}").write_text(
            f"list-sa event {{{name} {{uniqueid={uniqueid} version=2 state=ESTABLISHED local-host=a "
            f"established=500 rekey-time=13000 child-sas {{{name}-{uniqueid + 1} {{name={name} "
            f"uniqueid={uniqueid + 1} state=INSTALLED established=500 }}}}}}}}\n"
        )

    (tmp_path / "swanctl" / "x509").mkdir(parents=True)
    (tmp_path / "swanctl" / "x509" / "k8s-ipsec.crt").write_text("issued\n")

    def keeper(*verb, timeout="90"):
        env = {
            "PATH": f"{fake.parent}:/usr/bin:/bin",
            "K8S_IPSEC_TUNNELS_CONFIG": str(settings),
            "K8S_IPSEC_CREDS_LOADED": str(tmp_path / "run" / "loaded"),
            "K8S_IPSEC_SWANCTL_DIR": str(tmp_path / "swanctl"),
            "REAUTH_TIMEOUT": timeout,
            "REAUTH_FIRST_LOOK": "0",
        }
        run = subprocess.run(
            ["sh", str(SCRIPTS["k8s-ipsec-keeper"]), *verb], env=env, capture_output=True, text=True, check=False
        )
        return run.returncode, run.stdout, run.stderr

    def calls():
        path = tmp_path / "calls"
        return [c for c in path.read_text().splitlines() if not c.startswith("--list-sas")] if path.exists() else []

    return sa, keeper, calls


def test_reauth_renews_each_sa_this_node_starts_one_at_a_time(charon):
    sa, keeper, calls = charon
    sa("peer2-n2", 1)
    sa("peer3-n3", 3)
    sa("peer4-n4", 5)
    status, out, _err = keeper("reauth")
    assert status == 0
    assert calls() == ["--rekey --ike-id 1 --reauth", "--rekey --ike-id 3 --reauth"]
    assert out.splitlines() == ["re-authenticated peer2-n2 in 0 s", "re-authenticated peer3-n3 in 0 s"]


def test_reauth_towards_one_peer_renews_only_that_pair(charon):
    """A responder end's new certificate: its peer, the initiator, re-authenticates just the pair between them."""
    sa, keeper, calls = charon
    sa("peer2-n2", 1)
    sa("peer3-n3", 3)
    status, out, _err = keeper("reauth", "c")
    assert status == 0
    assert calls() == ["--rekey --ike-id 3 --reauth"]
    assert out == "re-authenticated peer3-n3 in 0 s\n"
    # towards a peer this end does not start: nothing (its initiator does it)
    assert keeper("reauth", "d")[:2] == (0, "")


def test_creds_loads_again_only_when_a_credential_file_changed(charon, tmp_path):
    keeper, calls = charon[1:]
    assert keeper("creds")[:2] == (0, "credentials reloaded\n")
    assert keeper("creds")[:2] == (0, "")
    (tmp_path / "swanctl" / "x509" / "k8s-ipsec.crt").write_text("renewed\n")
    assert keeper("creds")[:2] == (0, "credentials reloaded\n")
    assert calls() == ["--load-creds --clear --noprompt"] * 2


def test_reauth_fails_naming_the_pair_whose_new_sa_did_not_come_up(charon, tmp_path):
    """The peer refuses the new IKE_SA: the old one stays (make-before-break) and the keeper says which, and where."""
    sa, keeper, calls = charon
    sa("peer2-n2", 1)
    fake = tmp_path / "bin" / "swanctl"
    fake.write_text(fake.read_text().replace("  --rekey)", "  --rekey-refused)"))
    status, out, err = keeper("reauth", timeout="2")
    assert status == 1 and out == ""
    assert "peer2-n2: not re-authenticated after 2 s" in err and "journalctl -u strongswan" in err
    assert calls() == ["--rekey --ike-id 1 --reauth"]


def test_static_scripts_say_who_manages_them():
    for path in SCRIPTS.values():
        header = path.read_text().splitlines()[1]
        assert re.match(r"# Managed by k8s_ipsec\.cni \(role \w+\)", header), path


def test_bridge_remove_deletes_the_bridge_and_the_unreachable_route_for_real(tmp_path):
    """k8s-ipsec-cni0 apply, then remove twice, with real ip in a private network namespace: nothing is left."""
    settings = tmp_path / "cni0.default"
    settings.write_text("INDEX=1\nBRIDGE=cni0\nADDRESS=10.128.1.1/24\nMTU=1420\nCLUSTER_CIDR=10.128.0.0/16\n")
    script = SCRIPTS["k8s-ipsec-cni0"]
    out = in_netns(
        f"set -e; ip link set lo up; before=$(ip -o link; ip route show table all)\n"
        f"sh {script} apply; sh {script} check; ip -o link show cni0 >/dev/null && echo built\n"
        f"sh {script} remove; sh {script} remove\n"
        f'[ "$(ip -o link; ip route show table all)" = "$before" ] && echo as-before\n',
        {"K8S_IPSEC_CNI0_CONFIG": str(settings)},
    )
    assert out.splitlines() == ["built", "as-before"]


def test_reset_removes_the_paths_that_exist_names_them_and_then_finds_nothing(tmp_path):
    """The reset role's one-run removal: files, links (even dangling) and trees go; missing paths are no change."""
    remove = yaml.safe_load((ROOT / "roles/reset/vars/main.yml").read_text())["__reset_remove"]
    (tmp_path / "unit").write_text("x")
    (tmp_path / "tree" / "leases").mkdir(parents=True)
    (tmp_path / "tree" / "leases" / "10.128.1.2").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    paths = [str(tmp_path / name) for name in ("unit", "missing", "tree", "dangling", "name with space")]

    def run():
        return subprocess.run(["sh", "-c", remove, "remove", *paths], check=True, capture_output=True, text=True)

    assert run().stdout.splitlines() == [paths[0], paths[2], paths[3]]
    assert list(tmp_path.iterdir()) == []
    assert run().stdout == ""


def test_reset_stops_installed_units_that_are_enabled_or_running_in_order(tmp_path):
    """The reset role's one-run stop: units it installed and that are enabled or active are disabled with --now, in
    the given order (the guard first); units not installed, or installed but idle, are left alone."""
    stop = yaml.safe_load((ROOT / "roles/reset/vars/main.yml").read_text())["__reset_stop_units"]
    units, bin_dir = tmp_path / "units", tmp_path / "bin"
    units.mkdir()
    bin_dir.mkdir()
    for unit in ("guard.service", "keeper.timer", "idle.service", "tunnels.service"):
        (units / unit).write_text("[Unit]\n")
    # enabled: guard, tunnels; active: keeper.timer; idle.service neither; bridge.service not installed
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  is-enabled) case "$2" in guard.service|tunnels.service) echo enabled ;;\n'
        "    *) echo disabled; exit 1 ;; esac ;;\n"
        '  -q) [ "$3" = keeper.timer ] ;;\n'
        '  disable) echo "$4" >> "%s" ;;\n'
        "esac\n" % (tmp_path / "calls")
    )
    systemctl.chmod(0o755)
    names = ["guard.service", "keeper.timer", "idle.service", "tunnels.service", "bridge.service"]
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]))
    out = subprocess.run(
        ["sh", "-c", stop, "stop", str(units), *names], check=True, capture_output=True, text=True, env=env
    ).stdout
    assert out.splitlines() == ["guard.service", "keeper.timer", "tunnels.service"]
    assert (tmp_path / "calls").read_text().splitlines() == ["guard.service", "keeper.timer", "tunnels.service"]
