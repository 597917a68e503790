"""k8s-ipsec-node (roles/node_prep/files/k8s_ipsec_node.py): its settings and command line, the pod bridge for real
in a private network namespace (unshare -n), the tunnel devices against a stand-in kernel (this kernel has neither
XFRM interfaces nor VTI devices), and the keeper against stand-ins of charon.

The firewall is in test_node_firewall.py, the guard in test_node_guard.py.
"""

import copy
import errno
import ipaddress
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from ansible_cli import ROOT
from node_program import CNI0, FIREWALL, PROGRAM, STATUS_LIB, SYSTEM_PYTHON, TUNNELS, NodeNetns, cache_entry, load
from node_program import require_system_modules as _require_system_modules

node = load()


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- the program itself


def test_the_program_says_who_manages_it_and_runs_with_debians_python():
    header = PROGRAM.read_text().splitlines()[0]
    assert re.match(r"# Managed by k8s_ipsec\.cni \(role node_prep\)", header)
    # installed with Debian's python3 for its interpreter
    tasks = (ROOT / "roles/node_prep/tasks/main.yml").read_text()
    assert "content: \"{{ '#!/usr/bin/python3\\n' ~ lookup('ansible.builtin.file', 'k8s_ipsec_node.py'" in tasks


@pytest.mark.parametrize("args", [[], ["cni0"], ["cni0", "start"], ["bridge", "apply"], ["keeper", "keep", "extra"]])
def test_a_wrong_command_line_prints_the_usage_and_exits_2(args):
    proc = subprocess.run([sys.executable, str(PROGRAM), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: k8s-ipsec-node cni0|tunnels|firewall apply|check|remove")
    assert proc.stdout == ""


# ---------------------------------------------------------------- settings


def peer_fields(peers):
    return [
        (p["device"], str(p["local"]), str(p["remote"]), p["key"], str(p["subnet"]), p["connection"], p["initiator"])
        for p in peers
    ]


PEERS = [
    ("k8s-ipsec2", "192.168.64.10", "192.168.64.20", 3, "10.128.2.0/24", "peer2-n2", True),
    ("k8s-ipsec3", "192.168.64.10", "192.168.64.30", 5, "10.128.3.0/24", "peer3-n3", False),
]


def test_settings_are_read_as_the_roles_render_them(tmp_path):
    tunnels_path = write(tmp_path, "tunnels", TUNNELS)
    cni0 = node.cni0_settings(write(tmp_path, "cni0", CNI0))
    assert cni0 == {
        "bridge": "cni0",
        "address": ipaddress.IPv4Interface("10.128.1.1/24"),
        "mtu": 1420,
        "cluster_cidr": ipaddress.IPv4Network("10.128.0.0/16"),
    }
    tunnels = node.tunnels_settings(tunnels_path)
    assert (tunnels["prefix"], tunnels["type"], tunnels["mtu"], str(tunnels["source"])) == (
        "k8s-ipsec",
        "xfrm",
        1420,
        "10.128.1.1",
    )
    assert peer_fields(tunnels["peers"]) == PEERS
    firewall = node.firewall_settings(write(tmp_path, "firewall", FIREWALL.format(peers=tunnels_path)))
    assert firewall["tunnel_prefix"] == "k8s-ipsec" and firewall["masquerade"] is True
    assert str(firewall["pod_subnet"]) == "10.128.1.0/24" and str(firewall["gateway"]) == "10.128.1.1"
    # One list of peers: the firewall admits the subnets of the tunnel settings' peers.
    assert peer_fields(firewall["peers"]) == PEERS


def test_tunnel_settings_without_type_describe_vti_devices_as_before_type_existed(tmp_path):
    assert node.tunnels_settings(write(tmp_path, "tunnels", TUNNELS.replace("TYPE=xfrm\n", "")))["type"] == "vti"


def test_the_gateway_defaults_to_the_first_address_of_the_pod_subnet(tmp_path):
    text = FIREWALL.format(peers=tmp_path / "tunnels").replace("GATEWAY=10.128.1.1\n", "")
    assert str(node.firewall_settings(write(tmp_path, "firewall", text))["gateway"]) == "10.128.1.1"


def test_without_the_tunnel_settings_the_firewall_admits_no_peer(tmp_path):
    settings = node.firewall_settings(write(tmp_path, "firewall", FIREWALL.format(peers=tmp_path / "absent")))
    assert settings["peers"] == []


def test_a_quoted_value_may_span_lines_and_comments_are_skipped():
    text = "# a comment\n\nA=1\n  B='x\ny'\nC=''\nD=a b\n"
    assert node.parse_settings(text, "f") == {"A": "1", "B": "x\ny", "C": "", "D": "a b"}


BAD_SETTINGS = [
    ("cni0", CNI0.replace("MTU=1420\n", ""), "MTU is missing"),
    ("cni0", CNI0.replace("MTU=1420", "MTU="), "MTU is missing"),
    ("cni0", CNI0.replace("MTU=1420", "MTU=9000000"), "MTU='9000000' is not valid: an MTU is 576 to 65535"),
    ("cni0", CNI0.replace("MTU=1420", "MTU=big"), "MTU='big' is not valid"),
    ("cni0", CNI0.replace("/24", "/33"), "ADDRESS='10.128.1.1/33' is not valid"),
    ("cni0", CNI0.replace("CLUSTER_CIDR=10.128.0.0", "CLUSTER_CIDR=10.128.1.0"), "CLUSTER_CIDR='10.128.1.0/16'"),
    ("cni0", CNI0.replace("BRIDGE=cni0", "BRIDGE=a-name-too-long-for-linux"), "BRIDGE='a-name-too-long-for-linux'"),
    ("cni0", CNI0 + "bridge = cni0\n", "line 7: not a KEY=value line: 'bridge = cni0'"),
    ("tunnels", TUNNELS.replace("TYPE=xfrm", "TYPE=gre"), "TYPE=gre: use xfrm or vti"),
    ("tunnels", TUNNELS.replace("SOURCE=10.128.1.1\n", ""), "SOURCE is missing"),
    ("tunnels", TUNNELS.replace("responder\n'", "responder\n"), "the quoted value of PEERS is not closed"),
    ("tunnels", TUNNELS.replace("responder\n'", "responder\n' x"), "PEERS has text after its closing quote"),
    ("tunnels", TUNNELS.replace(" 3 10.128.2.0/24", " 10.128.2.0/24"), "7 fields expected"),
    ("tunnels", TUNNELS.replace("k8s-ipsec2 ", "ipsec2 "), "the device is not k8s-ipsec<number>"),
    ("tunnels", TUNNELS.replace("192.168.64.20", "192.168.64"), "Expected 4 octets in '192.168.64'"),
    ("tunnels", TUNNELS.replace(" 3 10.128.2.0/24", " 0 10.128.2.0/24"), "the key is 1 to 4294967295"),
    ("tunnels", TUNNELS.replace(" 3 10.128.2.0/24", " three 10.128.2.0/24"), "invalid literal for int()"),
    ("tunnels", TUNNELS.replace("10.128.2.0/24", "10.128.2.1/24"), "10.128.2.1/24 has host bits set"),
    ("tunnels", TUNNELS.replace("initiator", "starter"), "the role is initiator or responder"),
    ("tunnels", TUNNELS.replace(" 5 10.128.3.0/24", " 3 10.128.3.0/24"), "PEERS: key 3 appears twice"),
    ("tunnels", TUNNELS.replace("10.128.3.0/24", "10.128.2.0/24"), "PEERS: subnet 10.128.2.0/24 appears twice"),
    ("tunnels", TUNNELS.replace("k8s-ipsec3 ", "k8s-ipsec2 "), "PEERS: device k8s-ipsec2 appears twice"),
    ("firewall", FIREWALL.replace("k8s-ipsec+", "k8s-ipsec"), "TUNNELS='k8s-ipsec': the tunnel prefix followed by +"),
    (
        "firewall",
        FIREWALL.replace("MASQUERADE=yes", "MASQUERADE=true"),
        "MASQUERADE='true' is not valid: use yes or no",
    ),
    ("firewall", FIREWALL.replace("POD_SUBNET=10.128.1.0/24\n", ""), "POD_SUBNET is missing"),
    ("firewall", FIREWALL.replace("GATEWAY=10.128.1.1", "GATEWAY=gw"), "GATEWAY='gw' is not valid"),
]


@pytest.mark.parametrize(
    "part, text, message", BAD_SETTINGS, ids=[f"{part}: {message}" for part, _text, message in BAD_SETTINGS]
)
def test_a_bad_settings_file_is_refused_naming_the_file_and_the_field(tmp_path, part, text, message):
    peers = write(tmp_path, "peers", TUNNELS)
    path = write(tmp_path, f"{part}.default", text.replace("{peers}", peers))
    with pytest.raises(node.SettingsError) as raised:
        getattr(node, f"{part}_settings")(path)
    assert re.match(re.escape(path) + "[:,] ", str(raised.value)), raised.value
    assert message in str(raised.value)


def test_a_bad_peers_line_is_refused_naming_the_tunnel_settings_and_the_line(tmp_path):
    peers = write(tmp_path, "tunnels", TUNNELS.replace(" 5 10.128.3.0/24", " 10.128.3.0/24"))
    with pytest.raises(node.SettingsError) as raised:
        node.firewall_settings(write(tmp_path, "firewall", FIREWALL.format(peers=peers)))
    message = str(raised.value)
    assert message.startswith(peers + ": PEERS line ")
    assert "'k8s-ipsec3 192.168.64.10 192.168.64.30 10.128.3.0/24 peer3-n3 responder'" in message
    assert "7 fields expected (device local remote key subnet connection role)" in message


def test_an_unreadable_settings_file_is_refused_naming_it(tmp_path):
    with pytest.raises(node.SettingsError, match=r"/absent: cannot read the settings: No such file or directory"):
        node.cni0_settings(str(tmp_path / "absent"))


@pytest.fixture
def netns(tmp_path):
    """A node's settings and runners of the program in a fresh network namespace (see node_program.NodeNetns)."""
    return NodeNetns(tmp_path)


NOTHING = 'ip -o link | grep -v " lo:" || true; nft list ruleset; iptables-save | grep "^-" || true'


@pytest.mark.parametrize(
    "part, setting, bad, message",
    [
        ("cni0", "cni0", ("MTU=1420", "MTU=1420x"), "cni0.default: MTU='1420x' is not valid"),
        ("tunnels", "no_tunnels", ("TYPE=xfrm", "TYPE=ipip"), "no-tunnels.default: TYPE=ipip: use xfrm or vti"),
        ("firewall", "firewall", ("TUNNELS=k8s-ipsec+", "TUNNELS="), "firewall.default: TUNNELS is missing"),
        ("firewall", "tunnels", (" 3 10.128.2.0/24", " 10.128.2.0/24"), "tunnels.default: PEERS line 2"),
    ],
)
def test_with_a_bad_settings_file_apply_exits_2_and_changes_nothing(netns, part, setting, bad, message):
    path = getattr(netns, setting)
    path.write_text(path.read_text().replace(*bad))
    out = netns.run(
        f"""
        node {part} apply 2>&1 || echo "status $?"
        node {part} check 2>&1 || echo "status $?"
        {NOTHING}
        """
    )
    lines = out.splitlines()
    assert lines[:2] == lines[2:4], out
    assert message in lines[0] and lines[0].endswith("; nothing was changed"), out
    assert lines[1] == "status 2"
    assert lines[4:] == [], "something was changed"


# ---------------------------------------------------------------- the pod bridge


def test_the_bridge_mac_is_fixed_by_the_gateway_address():
    assert node.bridge_mac(ipaddress.IPv4Address("10.128.1.1")) == "0a:58:0a:80:01:01"
    assert node.bridge_mac(ipaddress.IPv4Address("10.200.12.1")) == "0a:58:0a:c8:0c:01"


def test_the_pods_interfaces_are_read_from_the_cni_results_cache(tmp_path):
    cache = tmp_path / "results"
    cache.mkdir()
    (cache / "k8s-pod-network-aaa-eth0").write_text(cache_entry("veth1111", container="aaa"))
    (cache / "k8s-pod-network-bbb-eth0").write_text(cache_entry("veth2222", container="bbb"))
    # another network's pod (another bridge), a result without interfaces, a file being written, not JSON at all
    (cache / "other-ccc-eth0").write_text(cache_entry("veth3333", bridge="docker0", container="ccc"))
    (cache / "k8s-pod-network-ddd-eth0").write_text('{"kind":"cniCacheV1","result":{}}')
    (cache / "k8s-pod-network-eee-eth0").write_text('{"kind":"cniCacheV1","result":{"interf')
    (cache / "README").write_text("not json\n")
    (cache / "subdir").mkdir()
    assert node.pod_interfaces("cni0", str(cache)) == {"veth1111", "veth2222"}
    assert node.pod_interfaces("docker0", str(cache)) == {"veth3333"}
    assert node.pod_interfaces("cni0", str(tmp_path / "absent")) == set()


def test_cni0_apply_builds_the_bridge_the_pods_need_and_check_agrees(netns):
    """The command as the unit runs it."""
    out = netns.run(
        """
        node cni0 check || echo "status $?"
        node cni0 apply
        node cni0 check && echo clean
        ip -o link show cni0; ip -o -4 addr show dev cni0; ip -o route show table main
        cat /proc/sys/net/ipv6/conf/cni0/disable_ipv6
        """
    )
    before, after = out.split("clean\n")
    assert before.splitlines() == [
        "bridge cni0 is missing",
        "the unreachable route for 10.128.0.0/16 is missing",
        "status 1",
    ]
    link, addr, *routes, ipv6 = after.splitlines()
    assert " mtu 1420 " in link and "link/ether 0a:58:0a:80:01:01 " in link and ",UP" in link
    assert " inet 10.128.1.1/24 " in addr
    # Other nodes' pod subnets are unreachable until their tunnel routes exist: no cleartext leaves by default.
    assert routes[0].startswith("unreachable 10.128.0.0/16 ")
    assert routes[1].startswith("10.128.1.0/24 dev cni0 proto kernel scope link src 10.128.1.1")
    assert ipv6 == "1"


STATE = "ip -o link show cni0; ip -o addr show dev cni0; ip route show table all"


def test_cni0_apply_twice_changes_nothing(netns):
    (_applied, first), second, (_again, unchanged) = netns.steps("node cni0 apply", STATE, "node cni0 apply", STATE)[1:]
    assert second == (0, "")
    assert unchanged == first


@pytest.mark.parametrize(
    "drift, reported",
    [
        ("ip link set cni0 down", "bridge cni0 is down"),
        ("ip link set cni0 mtu 1500", "bridge cni0 does not have MTU 1420"),
        ("ip link set cni0 address 02:00:00:00:00:01", "bridge cni0 does not have MAC 0a:58:0a:80:01:01"),
        ("ip addr del 10.128.1.1/24 dev cni0", "bridge cni0 lacks 10.128.1.1/24"),
        ("ip route del unreachable 10.128.0.0/16", "the unreachable route for 10.128.0.0/16 is missing"),
        # a route that would let other nodes' pod traffic out in cleartext instead
        ("ip route replace 10.128.0.0/16 dev cni0", "the unreachable route for 10.128.0.0/16 is missing"),
        ("sysctl -qw net.ipv6.conf.cni0.disable_ipv6=0", "cni0 has IPv6 enabled"),
    ],
)
def test_cni0_check_reports_drift_and_apply_repairs_it(netns, drift, reported):
    results = netns.steps(
        "node cni0 apply", STATE, drift, "node cni0 check", "node cni0 apply", "node cni0 check", STATE
    )
    assert results[2] == (0, ""), "the drift"
    assert results[3] == (1, reported + "\n")
    assert results[5] == (0, "")
    assert results[6] == results[1]


# Two pods on the bridge, as the bridge plugin attaches them (hairpin mode on), and a veth of somebody else's.
PODS = [
    "node cni0 apply",
    "for n in 1 2; do ip link add veth$n mtu 1420 type veth peer name pod$n; ip link set veth$n master cni0 up; "
    "ip link set veth$n type bridge_slave hairpin on; done",
    "ip link add vethx mtu 1420 type veth peer name other",
]
PORTS = (
    'for n in 1 2 x; do ip -d -o link show veth$n | grep -o "veth$n@[a-z0-9]*\\|master cni0\\|hairpin on" | xargs; done'
)
ATTACHED = "veth1@pod1 master cni0 hairpin on\nveth2@pod2 master cni0 hairpin on\nvethx@other\n"


def test_the_bridge_deleted_under_its_pods_comes_back_with_its_mac_and_their_interfaces(netns):
    netns.pod("c1", "veth1")
    netns.pod("c2", "veth2")
    netns.pod("c3", "veth3")  # a pod whose interface is gone
    results = netns.steps(
        *PODS,
        "node cni0 check",
        PORTS,
        "ip link del cni0",
        "node cni0 check",
        "node cni0 apply",
        "node cni0 check",
        "ip -o link show cni0 | grep -o 'link/ether [0-9a-f:]*'",
        PORTS,
    )
    assert results[3:5] == [(0, ""), (0, ATTACHED)]
    assert results[6] == (
        1,
        "bridge cni0 is missing\npod interface veth1 is not on cni0\npod interface veth2 is not on cni0\n",
    )
    # One apply: the same MAC (the pods' ARP entries stay right) and the pods' interfaces on it again.
    assert results[8] == (0, "")
    assert results[9:] == [(0, "link/ether 0a:58:0a:80:01:01\n"), (0, ATTACHED)]


def test_the_bridge_keeps_its_mtu_when_its_last_pod_leaves(netns):
    """A bridge without ports has the kernel's MTU (1500) unless its own was set: pods come and go all day."""
    netns.pod("c1", "veth1")
    leave = "ip link del veth1 && ip link del veth2"
    results = netns.steps(
        *PODS, leave, "node cni0 check", *PODS[1:], "ip link del cni0", "node cni0 apply", leave, "node cni0 check"
    )
    assert results[4] == (0, ""), "after the pods of a bridge made by apply left"
    assert results[-1] == (0, ""), "after the pods of a bridge made again under them left"


def test_a_bridge_made_again_by_somebody_else_is_reported_without_the_pods_and_they_are_put_back(netns):
    """The bridge plugin makes cni0 again at the next pod's start: empty, with a MAC and IPv6 of its own."""
    netns.pod("c1", "veth1")
    netns.pod("c2", "veth2")
    results = netns.steps(
        *PODS,
        "ip link del cni0 && ip link add cni0 mtu 1420 type bridge && ip addr add 10.128.1.1/24 dev cni0 && "
        "ip link set cni0 up",
        "node cni0 check",
        "node cni0 apply",
        "node cni0 check",
        PORTS,
    )
    assert results[3][0] == 0, results[3]
    assert results[4] == (
        1,
        "bridge cni0 does not have MAC 0a:58:0a:80:01:01\n"
        "cni0 has IPv6 enabled\n"
        "pod interface veth1 is not on cni0\n"
        "pod interface veth2 is not on cni0\n",
    )
    assert results[6:] == [(0, ""), (0, ATTACHED)]


def test_cni0_remove_leaves_the_network_as_it_was_and_may_run_again(netns):
    state = "ip -o link; ip route show table all"
    results = netns.steps(state, "node cni0 apply", "node cni0 remove", "node cni0 remove", state)
    assert results[1:4] == [(0, "")] * 3
    assert results[4] == results[0]


def test_another_device_named_like_the_bridge_is_left_for_the_operator(netns):
    results = netns.steps(
        "ip link add cni0 type veth peer name other", "node cni0 check", "node cni0 apply", "ip -d -o link show cni0"
    )
    assert results[1] == (1, "cni0 is not a bridge (veth)\n")
    assert results[2] == (
        1,
        "k8s-ipsec-node cni0 apply: cni0 exists and is not a bridge: delete it (ip link del cni0) and apply again\n",
    )
    assert " veth " in results[3][1]


def test_tunnels_without_peers_apply_and_check_pass(netns):
    results = netns.steps("node tunnels apply", "node tunnels check", "ip -o link | grep -vc ' lo:'")
    assert results == [(0, ""), (0, ""), (1, "0\n")]


# ---------------------------------------------------------------- the tunnels, against a stand-in kernel


class NetlinkError(Exception):
    def __init__(self, code):
        super().__init__(os.strerror(code))
        self.code = code


class FakeKernel:
    """The node's links, addresses and routes in the form Kernel reads them, and the netlink calls (IPRoute's) that
    change them; every change is recorded as a line like `ip` would take it."""

    def __init__(self):
        self.links, self.addresses, self.routes, self.calls = {}, set(), {}, []
        self.next_index = 10

    def read(self):
        """A Kernel: one reading of links, addresses and routes."""
        links = copy.deepcopy(self.links)
        by_index = {link["index"]: link for link in links.values()}
        return SimpleNamespace(
            links=links, by_index=by_index, addresses=set(self.addresses), routes=copy.deepcopy(self.routes)
        )

    def device(self, name, kind, up=True, mtu=1420, **data):
        self.next_index += 1
        link = {"index": self.next_index, "name": name, "kind": kind, "up": up, "mtu": mtu, "master": None}
        link["mac"] = None
        link.update(data)
        self.links[name] = link
        return link

    def name(self, index):
        return next(link["name"] for link in self.links.values() if link["index"] == index)

    # IPRoute

    def link(self, command, **kw):
        if command == "add":
            if kw["kind"] == "xfrm":
                same = [link for link in self.links.values() if link.get("if_id") == kw["xfrm_if_id"]]
                data, shown = {"if_id": kw["xfrm_if_id"]}, "if_id %d" % kw["xfrm_if_id"]
            else:
                vti = (kw["vti_local"], kw["vti_remote"], kw["vti_ikey"], kw["vti_okey"])
                same = [link for link in self.links.values() if link.get("vti") == vti]
                data, shown = {"vti": vti}, "local %s remote %s ikey %d okey %d" % vti
            if same or kw["ifname"] in self.links:
                raise NetlinkError(errno.EEXIST)
            self.calls.append("link add %s type %s %s" % (kw["ifname"], kw["kind"], shown))
            self.device(kw["ifname"], kw["kind"], up=False, mtu=1500, **data)
        elif command == "set":
            link = self.links[self.name(kw["index"])]
            self.calls.append("link set %s mtu %d %s" % (link["name"], kw["mtu"], kw["state"]))
            link.update(mtu=kw["mtu"], up=kw["state"] == "up")
        elif command == "del":
            name = self.name(kw["index"])
            self.calls.append("link del %s" % name)
            del self.links[name]
            self.addresses = {a for a in self.addresses if a[0] != kw["index"]}
            for dst in list(self.routes):
                self.routes[dst] = [r for r in self.routes[dst] if r["oif"] != kw["index"]]
                if not self.routes[dst]:
                    del self.routes[dst]
        elif command == "get":
            if kw["ifname"] not in self.links:
                raise NetlinkError(errno.ENODEV)
            return [{"index": self.links[kw["ifname"]]["index"]}]
        else:
            raise AssertionError(command)

    def addr(self, command, index, address, prefixlen):
        assert command == "replace"
        self.calls.append("addr replace %s/%d dev %s" % (address, prefixlen, self.name(index)))
        self.addresses.add((index, address, prefixlen))

    def route(self, command, dst, oif, prefsrc):
        assert command == "replace"
        self.calls.append("route replace %s dev %s src %s" % (dst, self.name(oif), prefsrc))
        self.routes[dst] = [{"type": 1, "oif": oif, "src": prefsrc}]


@pytest.fixture
def sysctls(tmp_path, monkeypatch):
    """The tunnels' sysctls as files under tmp_path/sysctl/<family>/<device>/<name> (none exist at first, as for a
    device the kernel does not have yet); returns a reader and writer of one."""
    root = tmp_path / "sysctl"

    def path(family, device, name):
        (root / family / device).mkdir(parents=True, exist_ok=True)
        return str(root / family / device / name)

    monkeypatch.setattr(node, "sysctl_path", path)

    def sysctl(family, device, name, value=None):
        file = root / family / device / name
        if value is not None:
            path(family, device, name)
            file.write_text(value + "\n")
        return file.read_text().strip() if file.exists() else None

    return sysctl


@pytest.fixture(params=["xfrm", "vti"])
def tunnels(request, tmp_path, sysctls):
    """The Tunnels of the node of TUNNELS with the settings' TYPE xfrm or vti."""
    path = write(tmp_path, "tunnels", TUNNELS.replace("TYPE=xfrm", "TYPE=" + request.param))
    return node.Tunnels(node.tunnels_settings(path))


def test_tunnels_apply_creates_each_peers_device_with_the_pairs_key_and_check_agrees(tunnels, sysctls):
    kernel = FakeKernel()
    assert tunnels.problems(kernel.read()) == ["tunnel k8s-ipsec2 is missing", "tunnel k8s-ipsec3 is missing"]
    done = tunnels.apply(kernel, kernel.read())
    assert done == ["created tunnel k8s-ipsec2", "created tunnel k8s-ipsec3"]
    if tunnels.s["type"] == "xfrm":
        created = ["link add k8s-ipsec2 type xfrm if_id 3", "link add k8s-ipsec3 type xfrm if_id 5"]
    else:
        created = [
            "link add k8s-ipsec2 type vti local 192.168.64.10 remote 192.168.64.20 ikey 3 okey 3",
            "link add k8s-ipsec3 type vti local 192.168.64.10 remote 192.168.64.30 ikey 5 okey 5",
        ]
    for device, subnet, add in zip(
        ("k8s-ipsec2", "k8s-ipsec3"), ("10.128.2.0/24", "10.128.3.0/24"), created, strict=True
    ):
        assert kernel.calls[:4] == [
            add,
            f"link set {device} mtu 1420 up",
            # the gateway address: what traffic leaving through the tunnel is masqueraded to, inside the selectors
            f"addr replace 10.128.1.1/32 dev {device}",
            f"route replace {subnet} dev {device} src 10.128.1.1",
        ]
        del kernel.calls[:4]
        # The SAs' policies match on the underlay: VTI devices take the decrypted packets without a policy check.
        assert sysctls("ipv4", device, "disable_policy") == ("1" if tunnels.s["type"] == "vti" else None)
    assert kernel.calls == []
    assert tunnels.problems(kernel.read()) == []
    assert tunnels.apply(kernel, kernel.read()) == [] and kernel.calls == [], "a second apply changes nothing"


def break_tunnels(kernel, tunnel_type, drift, sysctls):
    """Makes the healthy node differ from the settings in one way; returns the line check must print."""
    link = kernel.links["k8s-ipsec2"]
    other = "vti" if tunnel_type == "xfrm" else "xfrm"
    expected_kind = (
        "tunnel k8s-ipsec2 is not an XFRM interface with if_id 0x3"
        if tunnel_type == "xfrm"
        else "tunnel k8s-ipsec2 is not a VTI device from 192.168.64.10 to 192.168.64.20"
    )
    if drift == "missing":
        kernel.link("del", index=link["index"])
        return "tunnel k8s-ipsec2 is missing"
    if drift == "down":
        link["up"] = False
        return "tunnel k8s-ipsec2 is down"
    if drift == "mtu":
        link["mtu"] = 1500
        return "tunnel k8s-ipsec2 does not have MTU 1420"
    if drift == "no address":
        kernel.addresses.discard((link["index"], "10.128.1.1", 32))
        return "tunnel k8s-ipsec2 lacks 10.128.1.1/32"
    if drift == "route elsewhere":
        kernel.routes["10.128.2.0/24"] = [{"type": 1, "oif": 1, "src": "192.168.64.10"}]
        return "route 10.128.2.0/24 dev k8s-ipsec2 src 10.128.1.1 is missing"
    if drift == "ipv6":
        sysctls("ipv6", "k8s-ipsec2", "disable_ipv6", "0")
        return "k8s-ipsec2 has IPv6 enabled"
    if drift == "other kind":
        link.pop("if_id", None)
        link.pop("vti", None)
        link.update(
            kind=other, **({"if_id": 3} if other == "xfrm" else {"vti": ("192.168.64.10", "192.168.64.20", 3, 3)})
        )
        return expected_kind
    if drift == "other key":
        if tunnel_type == "xfrm":
            link["if_id"] = 4
            return expected_kind
        link["vti"] = ("192.168.64.10", "192.168.64.20", 4, 4)
        return "tunnel k8s-ipsec2 does not use key 3"
    if drift == "other endpoints":
        link["vti"] = ("192.168.64.10", "192.168.64.99", 3, 3)
        return expected_kind
    if drift == "policy checked":
        sysctls("ipv4", "k8s-ipsec2", "disable_policy", "0")
        return "tunnel k8s-ipsec2 does not have disable_policy set"
    if drift == "stale":
        kernel.device("k8s-ipsec9", other, **({"if_id": 9} if other == "xfrm" else {"vti": ("a", "b", 9, 9)}))
        return "tunnel k8s-ipsec9 is stale"
    raise AssertionError(drift)


DRIFTS = ["missing", "down", "mtu", "no address", "route elsewhere", "ipv6", "other kind", "other key", "stale"]
# VTI devices only: an XFRM interface has no endpoints, and its SAs' policies carry the interface ID.
VTI_DRIFTS = ["other endpoints", "policy checked"]


@pytest.mark.parametrize(
    "tunnel_type, drift", [("xfrm", d) for d in DRIFTS] + [("vti", d) for d in DRIFTS + VTI_DRIFTS]
)
def test_tunnels_check_reports_drift_and_apply_repairs_it(tmp_path, sysctls, tunnel_type, drift):
    path = write(tmp_path, "tunnels", TUNNELS.replace("TYPE=xfrm", "TYPE=" + tunnel_type))
    tunnels = node.Tunnels(node.tunnels_settings(path))
    kernel = FakeKernel()
    tunnels.apply(kernel, kernel.read())
    kernel.calls.clear()
    reported = break_tunnels(kernel, tunnels.s["type"], drift, sysctls)
    assert tunnels.problems(kernel.read()) == [reported]
    tunnels.apply(kernel, kernel.read())
    assert tunnels.problems(kernel.read()) == []
    # Only the drifted device was touched; its peer's device stayed as it was.
    assert not [call for call in kernel.calls if "k8s-ipsec3" in call]


def test_switching_the_tunnel_type_replaces_the_devices_of_the_other_kind(tmp_path, sysctls):
    kernel = FakeKernel()
    node.Tunnels(node.tunnels_settings(write(tmp_path, "t", TUNNELS))).apply(kernel, kernel.read())
    kernel.calls.clear()
    vti = node.Tunnels(node.tunnels_settings(write(tmp_path, "t", TUNNELS.replace("TYPE=xfrm", "TYPE=vti"))))
    assert vti.problems(kernel.read()) == [
        "tunnel k8s-ipsec2 is not a VTI device from 192.168.64.10 to 192.168.64.20",
        "tunnel k8s-ipsec2 does not have disable_policy set",
        "tunnel k8s-ipsec3 is not a VTI device from 192.168.64.10 to 192.168.64.30",
        "tunnel k8s-ipsec3 does not have disable_policy set",
    ]
    vti.apply(kernel, kernel.read())
    links = [call for call in kernel.calls if call.startswith("link add") or call.startswith("link del")]
    assert [call.split(" type ")[0] for call in links] == [
        "link del k8s-ipsec2",
        "link add k8s-ipsec2",
        "link del k8s-ipsec3",
        "link add k8s-ipsec3",
    ]
    assert vti.problems(kernel.read()) == []


# Devices that are not ours: other prefixes, and names of our prefix not followed by a number only.
OTHERS = ["vti0", "ip_vti0", "xfrm0", "ipsec7", "k8s-ipsecx", "k8s-ipsec2b", "k8s-ipsec"]


def other_devices(kernel):
    for number, name in enumerate(OTHERS):
        if number % 2:
            kernel.device(name, "xfrm", if_id=100 + number)
        else:
            kernel.device(name, "vti", vti=("192.0.2.1", "192.0.2.2", 100 + number, 100 + number))
    kernel.device("k8s-ipsec8", "dummy")  # ours by name, but no tunnel: not a device this program makes


def test_apply_deletes_stale_devices_of_ours_of_either_kind_and_nobody_elses(tunnels):
    kernel = FakeKernel()
    other_devices(kernel)
    kernel.device("k8s-ipsec9", "xfrm", if_id=9)
    kernel.device("k8s-ipsec11", "vti", vti=("192.168.64.10", "192.168.64.110", 11, 11))
    assert tunnels.problems(kernel.read())[-2:] == ["tunnel k8s-ipsec11 is stale", "tunnel k8s-ipsec9 is stale"]
    done = tunnels.apply(kernel, kernel.read())
    assert done[-2:] == ["deleted stale tunnel k8s-ipsec11", "deleted stale tunnel k8s-ipsec9"]
    assert [call for call in kernel.calls if call.startswith("link del")] == [
        "link del k8s-ipsec11",
        "link del k8s-ipsec9",
    ]
    assert set(OTHERS) | {"k8s-ipsec8"} < set(kernel.links)
    assert tunnels.problems(kernel.read()) == []


def test_remove_deletes_every_device_of_ours_listed_or_not_and_nobody_elses(tunnels):
    kernel = FakeKernel()
    tunnels.apply(kernel, kernel.read())
    other_devices(kernel)
    kernel.device("k8s-ipsec9", "xfrm", if_id=9)
    kernel.calls.clear()
    tunnels.remove(kernel, kernel.read())
    assert sorted(kernel.calls) == ["link del k8s-ipsec2", "link del k8s-ipsec3", "link del k8s-ipsec9"]
    assert sorted(kernel.links) == sorted(OTHERS + ["k8s-ipsec8"])
    assert kernel.routes == {} and kernel.addresses == set()


def test_a_device_of_another_name_holding_the_key_is_named_in_the_failure(tunnels):
    kernel = FakeKernel()
    if tunnels.s["type"] == "xfrm":
        kernel.device("ipsec-old", "xfrm", if_id=3)
    else:
        kernel.device("ipsec-old", "vti", vti=("192.168.64.10", "192.168.64.20", 3, 3))
    with pytest.raises(node.Failure) as raised:
        tunnels.apply(kernel, kernel.read())
    kind = tunnels.s["type"]
    assert str(raised.value) == (
        f"cannot create k8s-ipsec2: another {kind} device with key 3 exists under another name; delete it "
        f"(ip -d link show type {kind}) and apply again"
    )


# What the program asks pyroute2 to create is encoded as the kernel takes it, and read back (as the kernel reports
# the device) it is what check wants: run with Debian's python3, whose pyroute2 encodes and decodes the messages.
ROUND_TRIP = """
import importlib.util, json, sys
from pyroute2 import IPRoute

spec = importlib.util.spec_from_file_location("k8s_ipsec_node", sys.argv[1])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
result = {}
for kind in ("xfrm", "vti"):
    tunnels = node.Tunnels(node.tunnels_settings(sys.argv[2 if kind == "xfrm" else 3]))
    ipr, sent = IPRoute(), []
    # The creations are recorded; asked for the index of a link by name, the "kernel" answers 7.
    ipr.nlm_request = lambda msg, **kwargs: (sent.append(msg) or []) if kwargs.get("msg_type") == 16 else [{"index": 7}]
    for peer in tunnels.s["peers"]:
        tunnels._create(ipr, peer)
    ipr.close()
    links = []
    for msg in sent:
        # As the kernel reports the device: the same attributes, in a dump answer's bytes, parsed as check does.
        msg["index"], msg["flags"] = 7, 1
        msg.encode()
        links.append(node._parse_link(bytes(msg.data), 16, len(msg.data)))
    result[kind] = [
        [link["name"], link["kind"], tunnels.device_problems(link, peer)]
        for link, peer in zip(links, tunnels.s["peers"])
    ]
print(json.dumps(result))
"""


def test_the_devices_apply_asks_for_are_the_ones_check_wants(tmp_path):
    _require_system_modules()
    xfrm = write(tmp_path, "xfrm", TUNNELS)
    vti = write(tmp_path, "vti", TUNNELS.replace("TYPE=xfrm", "TYPE=vti"))
    proc = subprocess.run(
        ["unshare", "-n", SYSTEM_PYTHON, "-c", ROUND_TRIP, str(PROGRAM), xfrm, vti],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        kind: [["k8s-ipsec2", kind, []], ["k8s-ipsec3", kind, []]] for kind in ("xfrm", "vti")
    }


# ---------------------------------------------------------------- the keeper


# A node with three peers: it starts the tunnels to peers 2 and 3, peer 4 starts the one to it.
KEEPER_PEERS = """\
k8s-ipsec2 192.168.64.10 192.168.64.20 3 10.128.2.0/24 peer2-n2 initiator
k8s-ipsec3 192.168.64.10 192.168.64.30 5 10.128.3.0/24 peer3-n3 initiator
k8s-ipsec4 192.168.64.10 192.168.64.40 9 10.128.4.0/24 peer4-n4 responder
"""


def sa(name, uniqueid, state="ESTABLISHED", child="INSTALLED"):
    """An IKE_SA as swanctl --list-sas --raw lists it, parsed."""
    children = {f"{name}-{uniqueid + 1}": {"name": name, "uniqueid": str(uniqueid + 1), "state": child}}
    return {"uniqueid": str(uniqueid), "version": "2", "state": state, "child-sas": children}


class Charon:
    """charon as swanctl and its listing see it. --rekey --reauth of an IKE_SA makes a new one (uniqueid + 10),
    installed after `delay` looks at the listing, and then deletes the old (make-before-break)."""

    def __init__(self, sas, delay=0, refuse=False, comes_up=True):
        self.sas, self.delay, self.refuse, self.comes_up = sas, delay, refuse, comes_up
        self.events, self.pending = [], []

    def swanctl(self, *args):
        self.events.append(" ".join(args))
        if args[0] == "--rekey":
            if self.refuse:
                return 1
            self.pending.append((args[2], self.delay))
        return 0

    def read_sas(self):
        self.events.append("look")
        waiting = []
        for old, looks in self.pending:
            if looks > 0 or not self.comes_up:
                waiting.append((old, looks - 1))
                continue
            for name, entries in self.sas.items():
                if any(entry["uniqueid"] == old for entry in entries):
                    self.sas[name] = [sa(name, int(old) + 10)]
        self.pending = waiting
        return copy.deepcopy(self.sas)


@pytest.fixture
def keeper():
    settings = {"peers": node.parse_peers(KEEPER_PEERS, "k8s-ipsec", "tunnels")}

    def make(charon):
        log, sleeps = [], []
        kept = node.Keeper(settings, sas_reader=charon.read_sas, swanctl=charon.swanctl, log=log.append)
        return kept, log, sleeps

    return make


def test_keep_initiates_only_the_down_tunnels_this_end_starts(keeper):
    charon = Charon({"peer3-n3": [sa("peer3-n3", 1)]})
    kept, log = keeper(charon)[:2]
    kept.keep(charon.read_sas())
    # peer2-n2 is down and started here; peer3-n3 is up; peer4-n4's end starts its own.
    assert charon.events == ["look", "--initiate --child peer2-n2 --timeout 15"]
    assert log == []


def test_prune_closes_only_the_ike_sas_of_our_connections_no_longer_peers(keeper):
    sas = {
        "peer2-n2": [sa("peer2-n2", 1)],
        "peer5-n5": [sa("peer5-n5", 3), sa("peer5-n5", 5)],
        "operator-vpn": [sa("operator-vpn", 7)],
        "peer6-old": [sa("peer6-old", 9, state="CONNECTING")],
    }
    charon = Charon(sas)
    kept, log = keeper(charon)[:2]
    kept.prune(charon.read_sas())
    assert charon.events[1:] == [
        "--terminate --ike peer5-n5 --force --timeout 10",
        "--terminate --ike peer6-old --force --timeout 10",
    ]
    assert log == ["closing peer5-n5: no longer a peer", "closing peer6-old: no longer a peer"]


def established(*names):
    return {name: [sa(name, number * 2 + 1)] for number, name in enumerate(names)}


def test_reauth_renews_each_sa_this_node_starts_one_at_a_time(keeper):
    charon = Charon(established("peer2-n2", "peer3-n3", "peer4-n4"), delay=1)
    kept, log, sleeps = keeper(charon)
    assert kept.reauth(charon.read_sas(), sleep=sleeps.append) is True
    # Make-before-break, one pair at a time: the next pair's only once this one's new SA is installed.
    assert charon.events[1:] == [
        "--rekey --ike-id 1 --reauth",
        "look",
        "look",
        "--rekey --ike-id 3 --reauth",
        "look",
        "look",
    ]
    assert log == ["re-authenticated peer2-n2 in 3 s", "re-authenticated peer3-n3 in 3 s"]
    # the first look only after 2 s: each swanctl start takes CPU from charon while it installs the new SA
    assert sleeps == [2.0, 1, 2.0, 1]


def test_reauth_towards_one_peer_renews_only_that_pair_and_never_one_the_other_end_starts(keeper):
    charon = Charon(established("peer2-n2", "peer3-n3", "peer4-n4"))
    kept, log, sleeps = keeper(charon)
    assert kept.reauth(charon.read_sas(), remote="192.168.64.30", sleep=sleeps.append) is True
    assert [e for e in charon.events if e != "look"] == ["--rekey --ike-id 3 --reauth"]
    assert log == ["re-authenticated peer3-n3 in 2 s"]
    assert kept.reauth(charon.read_sas(), remote="192.168.64.40", sleep=sleeps.append) is True
    assert [e for e in charon.events if e != "look"] == ["--rekey --ike-id 3 --reauth"]


def test_reauth_skips_a_pair_without_an_established_sa(keeper):
    charon = Charon({"peer2-n2": [sa("peer2-n2", 1, state="CONNECTING")]})
    kept, log, sleeps = keeper(charon)
    assert kept.reauth(charon.read_sas(), sleep=sleeps.append) is True
    assert charon.events == ["look"] and log == []


def test_reauth_refused_by_charon_fails_naming_the_pair_and_goes_on(keeper):
    charon = Charon(established("peer2-n2", "peer3-n3"), refuse=True)
    kept, log, sleeps = keeper(charon)
    assert kept.reauth(charon.read_sas(), sleep=sleeps.append) is False
    assert log == [
        "peer2-n2: swanctl --rekey --reauth refused; journalctl -u strongswan says why",
        "peer3-n3: swanctl --rekey --reauth refused; journalctl -u strongswan says why",
    ]
    assert sleeps == []


def test_reauth_whose_new_sa_does_not_come_up_fails_after_the_timeout_keeping_the_old(keeper):
    charon = Charon(established("peer2-n2"), comes_up=False)
    kept, log, sleeps = keeper(charon)
    assert kept.reauth(charon.read_sas(), timeout=30, sleep=sleeps.append) is False
    assert log == [
        "peer2-n2: not re-authenticated after 30 s; the old SA stays until the new one is up: "
        "journalctl -u strongswan says why"
    ]
    assert sum(sleeps) == 30
    assert charon.sas["peer2-n2"][0]["uniqueid"] == "1"


# swanctl for the command line: logs its arguments to calls; --list-sas prints the listing (fails without charon),
# --load-creds fails when the file refuse exists.
SWANCTL = """#!/bin/sh
echo "$*" >>"{dir}/calls"
case "$1" in
  --list-sas) [ -e "{dir}/listing" ] || exit 1; cat "{dir}/listing" ;;
  --load-creds) [ ! -e "{dir}/refuse" ] || {{ echo "no private key found" >&2; exit 1; }} ;;
esac
"""
# What swanctl --list-sas --raw printed on node 1 of the lab (strongSwan 6.0): IKE_SAs to peer2-n2 and peer3-n3.
LAB_LISTING = (ROOT / "tests/unit/lab/fixtures/n1-3nodes-6.0.txt").read_text().split("=====SAS=====\n")[1]


@pytest.fixture
def keeper_cli(tmp_path):
    """Runs `k8s-ipsec-node keeper <verb>` (no pyroute2 needed) with a stand-in swanctl; returns (status, stdout,
    stderr, swanctl's calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "swanctl").write_text(SWANCTL.format(dir=tmp_path))
    (bin_dir / "swanctl").chmod(0o755)
    (tmp_path / "swanctl" / "x509").mkdir(parents=True)
    (tmp_path / "swanctl" / "x509" / "k8s-ipsec.crt").write_text("issued\n")

    def run(*args, peers=KEEPER_PEERS, part="keeper"):
        (tmp_path / "tunnels").write_text(TUNNELS.split("PEERS=", maxsplit=1)[0] + f"PEERS='\n{peers}'\n")
        calls = tmp_path / "calls"
        calls.write_text("")
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "K8S_IPSEC_TUNNELS_CONFIG": str(tmp_path / "tunnels"),
            "K8S_IPSEC_LIB": str(STATUS_LIB),
            "K8S_IPSEC_SWANCTL_DIR": str(tmp_path / "swanctl"),
            "K8S_IPSEC_CREDS_LOADED": str(tmp_path / "run" / "k8s-ipsec" / "credentials.loaded"),
            "K8S_IPSEC_STATE_DIR": str(tmp_path / "run" / "k8s-ipsec"),
            "K8S_IPSEC_XFRM_STAT": str(tmp_path / "xfrm_stat"),
        }
        proc = subprocess.run(
            [sys.executable, str(PROGRAM), part, *args], env=env, capture_output=True, text=True, check=False
        )
        listed = [c for c in calls.read_text().splitlines() if c != "--list-sas --raw"]
        return proc.returncode, proc.stdout, proc.stderr, listed

    return run


def test_keeper_keep_reads_charons_listing_and_initiates_what_is_down(keeper_cli, tmp_path):
    (tmp_path / "listing").write_text(LAB_LISTING)
    # Up: peer2-n2 and peer3-n3. Down: peer4-n4, started by this end, then by the other end.
    starts_all = KEEPER_PEERS.replace("responder", "initiator")
    assert keeper_cli("keep", peers=starts_all) == (0, "", "", ["--initiate --child peer4-n4 --timeout 15"])
    assert keeper_cli("keep") == (0, "", "", [])


def test_keeper_prune_closes_the_sas_of_a_node_removed_from_the_mesh(keeper_cli, tmp_path):
    (tmp_path / "listing").write_text(LAB_LISTING)
    status, out, err, calls = keeper_cli("prune", peers=KEEPER_PEERS.replace("peer3-n3", "peer5-n5"))
    assert (status, out, err) == (0, "closing peer3-n3: no longer a peer\n", "")
    assert calls == ["--terminate --ike peer3-n3 --force --timeout 10"]


def test_the_keeper_does_nothing_while_charon_is_not_running(keeper_cli):
    # the credentials too: charon loads them when it starts
    for verb in ("keep", "prune", "reauth", "creds"):
        assert keeper_cli(verb) == (0, "", "", []), verb


def test_keeper_refuses_bad_tunnel_settings(keeper_cli, tmp_path):
    (tmp_path / "listing").write_text(LAB_LISTING)
    status, _out, err, calls = keeper_cli("keep", peers="k8s-ipsec2 192.168.64.10 192.168.64.20 3\n")
    assert status == 2 and "PEERS line 2" in err and "nothing was changed" in err
    assert calls == []


def test_creds_load_again_only_when_a_credential_file_changed(keeper_cli, tmp_path):
    (tmp_path / "listing").write_text(LAB_LISTING)
    assert keeper_cli("creds") == (0, "credentials reloaded\n", "", ["--load-creds --clear --noprompt"])
    assert keeper_cli("creds") == (0, "", "", [])
    (tmp_path / "swanctl" / "x509" / "k8s-ipsec.crt").write_text("renewed\n")
    assert keeper_cli("creds")[:2] == (0, "credentials reloaded\n")
    (tmp_path / "swanctl" / "x509" / "k8s-ipsec.crt").rename(tmp_path / "swanctl" / "x509" / "node.crt")
    assert keeper_cli("creds")[:2] == (0, "credentials reloaded\n"), "a renamed file is a change"


def test_creds_refused_by_charon_fail_and_are_tried_again_next_time(keeper_cli, tmp_path):
    (tmp_path / "listing").write_text(LAB_LISTING)
    (tmp_path / "refuse").write_text("")
    status, out, err, calls = keeper_cli("creds")
    assert (status, out) == (1, "")
    assert err == "k8s-ipsec-node keeper creds: swanctl --load-creds failed: no private key found\n"
    (tmp_path / "refuse").unlink()
    assert keeper_cli("creds") == (0, "credentials reloaded\n", "", ["--load-creds --clear --noprompt"])


# ---------------------------------------------------------------- the kernel, read


# The program reads its dumps with the standard library's netlink socket; pyroute2, which decodes everything, must
# read the same links, addresses and routes from the same namespace.
KERNEL_READS = """
import importlib.util, json, socket, sys
from pyroute2 import IPRoute

spec = importlib.util.spec_from_file_location("k8s_ipsec_node", sys.argv[1])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
ipr = IPRoute()
ipr.link("add", ifname="cni0", kind="bridge", address="0a:58:0a:80:01:01")
bridge = ipr.link("get", ifname="cni0")[0]["index"]
ipr.link("set", index=bridge, mtu=1400, state="up")
ipr.link("add", ifname="vethp1", kind="veth", peer="vethp1b")
veth = ipr.link("get", ifname="vethp1")[0]["index"]
ipr.link("set", index=veth, master=bridge, state="up")
ipr.addr("add", index=bridge, address="10.128.1.1", prefixlen=24)
ipr.addr("add", index=veth, address="10.128.1.1", prefixlen=32)
ipr.route("add", dst="10.128.2.0/24", oif=veth, prefsrc="10.128.1.1")
ipr.route("add", dst="10.128.0.0/16", type="unreachable")
ipr.route("add", dst="10.200.0.0/16", oif=veth, table=100)
kernel = node.Kernel()
links = {}
for msg in ipr.get_links():
    info = msg.get_attr("IFLA_LINKINFO")
    links[msg.get_attr("IFLA_IFNAME")] = {
        "index": msg["index"], "name": msg.get_attr("IFLA_IFNAME"), "up": bool(msg["flags"] & 1),
        "mtu": msg.get_attr("IFLA_MTU"), "master": msg.get_attr("IFLA_MASTER"), "mac": msg.get_attr("IFLA_ADDRESS"),
        "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
    }
addresses = sorted([m["index"], m.get_attr("IFA_LOCAL"), m["prefixlen"]] for m in ipr.get_addr(family=socket.AF_INET))
routes = sorted(
    ["%s/%d" % (m.get_attr("RTA_DST") or "0.0.0.0", m["dst_len"]), m["type"], m.get_attr("RTA_OIF"),
     m.get_attr("RTA_PREFSRC")] for m in ipr.get_routes(family=socket.AF_INET, table=254)
)
print(json.dumps({
    "links": [links, kernel.links],
    "addresses": [addresses, sorted(list(a) for a in kernel.addresses)],
    "routes": [routes, sorted([dst, r["type"], r["oif"], r["src"]] for dst, rs in kernel.routes.items() for r in rs)],
}))
"""


def test_the_kernel_reading_sees_what_pyroute2_sees(tmp_path):
    _require_system_modules()
    proc = subprocess.run(
        ["unshare", "-n", SYSTEM_PYTHON, "-c", KERNEL_READS, str(PROGRAM)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    read = json.loads(proc.stdout)
    pyroute2_links, links = read["links"]
    assert set(links) == set(pyroute2_links) == {"lo", "cni0", "vethp1", "vethp1b"}
    for name, link in pyroute2_links.items():
        assert {key: links[name][key] for key in link} == link
    assert links["cni0"]["kind"] == "bridge" and links["vethp1"]["master"] == links["cni0"]["index"]
    assert read["addresses"][0] == read["addresses"][1]
    assert read["routes"][0] == read["routes"][1]
    assert ["10.128.0.0/16", 7, None, None] in read["routes"][1]
    assert not any(route[0] == "10.200.0.0/16" for route in read["routes"][1])


def test_an_apply_waits_while_another_one_changes_the_node(tmp_path):
    # The guard's repair and a unit's apply both find a new peer's device missing: the second waits for the first,
    # then finds it made, instead of failing on "exists".
    out = NodeNetns(tmp_path).run(
        """
        flock "$K8S_IPSEC_LOCK" sleep 3 &
        sleep 0.5
        status=0; timeout 1 /usr/bin/python3 "$PROGRAM" cni0 apply || status=$?
        echo "while locked: $status $(ip link show cni0 >/dev/null 2>&1 && echo made || echo none)"
        wait
        node cni0 apply && node cni0 check && echo "after: clean"
        """,
        env={"PROGRAM": str(PROGRAM)},
    )
    assert out.splitlines() == ["while locked: 124 none", "after: clean"]


def test_metrics_show_prints_the_sas_counters_and_certificates_as_prometheus_text(keeper_cli, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from pki_helpers import issue, make_ca

    (tmp_path / "listing").write_text(LAB_LISTING)
    (tmp_path / "xfrm_stat").write_text("XfrmInError             \t0\nXfrmInNoStates          \t7\n")
    ca, ca_key = make_ca()
    cert = issue(ca, ca_key)
    (tmp_path / "swanctl" / "x509" / "k8s-ipsec.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    starts_all = KEEPER_PEERS.replace("responder", "initiator")
    # the keeper brings peer4-n4 up: one action counted
    assert keeper_cli("keep", peers=starts_all)[3] == ["--initiate --child peer4-n4 --timeout 15"]
    status, out, err, _calls = keeper_cli("show", peers=starts_all, part="metrics")
    assert (status, err) == (0, "")
    lines = set(out.splitlines())
    n2 = 'peer="n2",peer_address="192.168.64.20"'
    assert "k8s_ipsec_peer_ike_sa_established{%s} 1" % n2 in lines
    assert 'k8s_ipsec_peer_child_sa_installed{peer="n4",peer_address="192.168.64.40"} 0' in lines
    assert 'k8s_ipsec_xfrm_errors_total{counter="XfrmInNoStates"} 7' in lines
    assert 'k8s_ipsec_xfrm_errors_total{counter="XfrmInError"} 0' in lines
    assert 'k8s_ipsec_keeper_actions_total{action="initiate"} 1' in lines
    expiry = int(cert.not_valid_after_utc.timestamp())
    assert 'k8s_ipsec_certificate_expiry_timestamp_seconds{certificate="node"} %d' % expiry in lines
    # no CA file: no CA series
    assert not any('certificate="ca"' in line for line in lines)
    # the node's name and index come from the tunnel settings when the role wrote them, else the host name
    assert any(line.startswith('k8s_ipsec_node_info{node="') and 'tunnel_type="xfrm"' in line for line in lines)


def test_metrics_show_without_charon_reports_every_pair_down(keeper_cli):
    status, out, _err, _calls = keeper_cli("show", part="metrics")
    assert status == 0
    ups = [line for line in out.splitlines() if line.startswith("k8s_ipsec_peer_ike_sa_established{")]
    assert len(ups) == 3 and all(line.endswith(" 0") for line in ups)
