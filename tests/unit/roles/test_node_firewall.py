"""k8s-ipsec-node firewall: the table inet k8s-ipsec it loads through the nftables JSON API and the chain it appends to
iptables' FORWARD, for real in a private network namespace (unshare -n), with packets where that is cheap; and the
strongSwan unit's IKE hold, a rule of the same table.
"""

import copy
import ipaddress
import re

import pytest
from node_program import FIREWALL, HOLD, IKE, TUNNELS, NodeNetns, load

node = load()


def settings(tmp_path, masquerade="yes", peers=TUNNELS):
    (tmp_path / "tunnels").write_text(peers)
    text = FIREWALL.format(peers=tmp_path / "tunnels").replace("MASQUERADE=yes", "MASQUERADE=" + masquerade)
    (tmp_path / "firewall").write_text(text)
    return node.firewall_settings(str(tmp_path / "firewall"))


# ---------------------------------------------------------------- the rules, as data


def test_each_peer_subnet_is_admitted_only_through_its_own_tunnel(tmp_path):
    sets = node.nft_ruleset(settings(tmp_path))[1]
    assert sets["peer_subnets"]["type"] == ["ifname", "ipv4_addr"]
    assert sets["peer_subnets"]["elem"] == [
        {"concat": ["k8s-ipsec2", {"prefix": {"addr": "10.128.2.0", "len": 24}}]},
        {"concat": ["k8s-ipsec3", {"prefix": {"addr": "10.128.3.0", "len": 24}}]},
    ]


def test_the_pods_are_masqueraded_only_when_the_settings_say_so(tmp_path):
    masqueraded = [rule for rule in node.nft_ruleset(settings(tmp_path))[2] if rule["chain"] == "outbound-nat"]
    assert [expr for expr in masqueraded[0]["expr"] if "masquerade" in expr] == [{"masquerade": None}]
    assert len(masqueraded) == 1
    assert not [rule for rule in node.nft_ruleset(settings(tmp_path, "no"))[2] if rule["chain"] == "outbound-nat"]


def test_the_rules_only_drop_and_every_chain_accepts_by_default(tmp_path):
    """Nobody else's traffic is let through by this table: other tables' drops still decide."""
    chains, _sets, rules = node.nft_ruleset(settings(tmp_path))
    assert {chain["policy"] for chain in chains.values()} == {"accept"}
    verdicts = [expr for rule in rules for expr in rule["expr"] if "match" not in expr]
    assert {next(iter(verdict)) for verdict in verdicts} == {"drop", "masquerade"}


def test_the_ike_hold_is_in_the_rules_only_while_held(tmp_path):
    rules = node.nft_ruleset(settings(tmp_path), hold=True)[2]
    assert [rule for rule in rules if rule.get("comment") == "k8s-ipsec-ike-hold"] == [node.ike_hold_rule()]
    assert not [rule for rule in node.nft_ruleset(settings(tmp_path))[2] if "comment" in rule]


@pytest.fixture
def wanted(tmp_path):
    return node.nft_ruleset(settings(tmp_path))


def live(wanted):
    return copy.deepcopy(wanted)


def test_the_table_as_loaded_has_no_differences(wanted):
    assert node.nft_differences(wanted, live(wanted)) == []


def test_the_peers_subnets_may_be_listed_in_any_order(wanted):
    listed = live(wanted)
    listed[1]["peer_subnets"]["elem"].reverse()
    assert node.nft_differences(wanted, listed) == []


def test_each_difference_is_one_line_per_chain_or_set(wanted):
    listed = live(wanted)
    listed[0]["forward"]["policy"] = "drop"
    listed[0]["extra"] = {"type": "filter", "hook": "output", "prio": 0, "policy": "accept"}
    del listed[0]["outbound-nat"]
    inbound = [rule for rule in listed[2] if rule["chain"] == "inbound"]
    inbound[0]["expr"], inbound[1]["expr"] = inbound[1]["expr"], inbound[0]["expr"]  # the same rules, another order
    listed[1]["peer_subnets"]["elem"].pop()
    assert node.nft_differences(wanted, listed) == [
        "chain extra of table inet k8s-ipsec differs from the settings",
        "chain forward of table inet k8s-ipsec differs from the settings",
        "the rules of chain inbound in table inet k8s-ipsec differ from the settings",
        "chain outbound-nat of table inet k8s-ipsec differs from the settings",
        "set peer_subnets of table inet k8s-ipsec does not hold exactly the peers' subnets",
    ]
    listed[1]["peer_subnets"]["flags"] = []
    assert (
        node.nft_differences(wanted, listed)[-1] == "set peer_subnets of table inet k8s-ipsec differs from the settings"
    )
    del listed[1]["peer_subnets"]
    assert (
        node.nft_differences(wanted, listed)[-1] == "set peer_subnets of table inet k8s-ipsec differs from the settings"
    )


def test_forward_accepts_the_pods_and_the_tunnels_traffic_in_iptables_save_form(tmp_path):
    assert node.forward_accepts(settings(tmp_path)) == [
        "-A K8S-IPSEC-FORWARD -o cni0 -j ACCEPT",
        "-A K8S-IPSEC-FORWARD -i cni0 -j ACCEPT",
        "-A K8S-IPSEC-FORWARD -d 10.128.0.0/16 -o k8s-ipsec+ -j ACCEPT",
    ]


def test_a_32_is_written_as_nft_lists_it():
    assert node._net(ipaddress.IPv4Network("10.128.1.7/32")) == "10.128.1.7"


# ---------------------------------------------------------------- for real


@pytest.fixture
def netns(tmp_path):
    return NodeNetns(tmp_path)


# Our table (reloaded whole, it is listed after the tables made since) and iptables' rules.
RULES = "nft list table inet k8s-ipsec; iptables-save | grep -v '^#'"
# Every rule and chain declaration of iptables (iptables-nft keeps tables it once used, empty).
IPTABLES = "iptables-save | grep -E '^-A |^:[^ ]+ - ' || true"


def test_apply_loads_the_table_and_the_forward_chain_and_check_agrees(netns):
    results = netns.steps(
        "node firewall check",
        "node firewall apply",
        "node firewall check",
        "nft list table inet k8s-ipsec",
        "iptables -S FORWARD; iptables -S K8S-IPSEC-FORWARD",
    )
    assert results[0] == (
        1,
        "table inet k8s-ipsec is missing\n"
        "the iptables chain K8S-IPSEC-FORWARD is missing\n"
        "iptables' FORWARD does not jump to K8S-IPSEC-FORWARD\n",
    )
    assert results[1:3] == [(0, ""), (0, "")]
    table = [line.strip() for line in results[3][1].splitlines()]
    for line in [
        '"k8s-ipsec3" . 10.128.3.0/24 }',
        "type filter hook prerouting priority raw; policy accept;",
        'iifname "cni0" ip saddr != 10.128.1.0/24 drop',
        'iifname "cni0" ip saddr 10.128.1.1 drop',
        'iifname "k8s-ipsec*" iifname . ip saddr != @peer_subnets drop',
        'oifname != "cni0" oifname != "k8s-ipsec*" ip daddr 10.128.0.0/16 rt ipsec missing drop',
        "ip saddr 10.128.0.0/16 ip daddr != 10.128.0.0/16 masquerade",
    ]:
        assert line in table, line
    assert results[4][1].splitlines() == [
        "-P FORWARD ACCEPT",
        "-A FORWARD -m comment --comment k8s-ipsec -j K8S-IPSEC-FORWARD",
        "-N K8S-IPSEC-FORWARD",
        "-A K8S-IPSEC-FORWARD -o cni0 -j ACCEPT",
        "-A K8S-IPSEC-FORWARD -i cni0 -j ACCEPT",
        "-A K8S-IPSEC-FORWARD -d 10.128.0.0/16 -o k8s-ipsec+ -j ACCEPT",
    ]


def test_the_command_applies_and_checks_as_the_unit_runs_it(netns):
    out = netns.run("node firewall apply; node firewall apply; node firewall check && echo clean")
    assert out == "clean\n"


def test_apply_twice_changes_nothing(netns):
    results = netns.steps("node firewall apply", RULES, "node firewall apply", RULES)
    assert results[2] == (0, "")
    assert results[3] == results[1]


ELEMENT = "'{ \"k8s-ipsec2\" . 10.128.2.0/24 }'"


def sorted_elements(ruleset):
    """A listing with each set's elements in one order."""
    return re.sub(
        r"elements = \{([^}]*)\}",
        lambda m: "elements = {%s}" % ", ".join(sorted(e.strip() for e in m.group(1).split(","))),
        ruleset,
    )


@pytest.mark.parametrize(
    "drift, reported",
    [
        ("nft flush chain inet k8s-ipsec inbound", ["the rules of chain inbound in table inet k8s-ipsec differ"]),
        (
            "nft insert rule inet k8s-ipsec forward accept",
            ["the rules of chain forward in table inet k8s-ipsec differ"],
        ),
        (
            "nft 'chain inet k8s-ipsec failclosed { policy drop; }'",
            ["chain failclosed of table inet k8s-ipsec differs"],
        ),
        ("nft delete chain inet k8s-ipsec input", ["chain input of table inet k8s-ipsec differs"]),
        ("nft delete table inet k8s-ipsec", ["table inet k8s-ipsec is missing"]),
        (f"nft delete element inet k8s-ipsec peer_subnets {ELEMENT}", ["set peer_subnets of table inet k8s-ipsec"]),
        # another subnet let in through a peer's tunnel
        (
            "nft add element inet k8s-ipsec peer_subnets '{ \"k8s-ipsec2\" . 10.128.9.0/24 }'",
            ["set peer_subnets of table inet k8s-ipsec does not hold exactly the peers' subnets"],
        ),
        ("iptables -F K8S-IPSEC-FORWARD", ["the iptables chain K8S-IPSEC-FORWARD differs from the settings"]),
        ("iptables -I K8S-IPSEC-FORWARD -j DROP", ["the iptables chain K8S-IPSEC-FORWARD differs from the settings"]),
        (
            "iptables -D FORWARD -m comment --comment k8s-ipsec -j K8S-IPSEC-FORWARD",
            ["iptables' FORWARD does not jump to K8S-IPSEC-FORWARD"],
        ),
        (
            "nft flush ruleset",
            [
                "table inet k8s-ipsec is missing",
                "the iptables chain K8S-IPSEC-FORWARD is missing",
                "iptables' FORWARD does not jump to K8S-IPSEC-FORWARD",
            ],
        ),
    ],
)
def test_check_reports_drift_and_apply_repairs_it(netns, drift, reported):
    results = netns.steps(
        "node firewall apply", RULES, drift, "node firewall check", "node firewall apply", "node firewall check", RULES
    )
    assert results[2] == (0, ""), "the drift"
    status, out = results[3]
    assert status == 1
    assert len(out.splitlines()) == len(reported), out
    for line, start in zip(out.splitlines(), reported, strict=True):
        assert line.startswith(start), out
    assert results[4:6] == [(0, ""), (0, "")]
    # The same ruleset; a set's re-added elements may be listed in another order.
    assert sorted_elements(results[6][1]) == sorted_elements(results[1][1])
    assert results[6][0] == results[1][0]


def forward(results):
    return [line for line in results[1].splitlines() if line.startswith("-A FORWARD")]


OUR_JUMP = "-A FORWARD -m comment --comment k8s-ipsec -j K8S-IPSEC-FORWARD"


def test_our_jump_is_appended_once_after_the_operators_rules_and_never_moved(netns):
    results = netns.steps(
        "iptables -I FORWARD 1 -j REJECT",
        "node firewall apply",
        "iptables -A FORWARD -m comment --comment operator -j ACCEPT",
        "node firewall apply",
        "node firewall check",
        "iptables -S FORWARD",
    )
    assert results[3:5] == [(0, ""), (0, "")]
    # kube-proxy's and the policy engines' rules decide first; ours accepts what is left for the pods and tunnels.
    assert forward(results[5]) == [
        "-A FORWARD -j REJECT --reject-with icmp-port-unreachable",
        OUR_JUMP,
        "-A FORWARD -m comment --comment operator -j ACCEPT",
    ]


LEGACY = [
    # What the shell firewall of earlier versions left: its jumps first in their hooks, its four chains.
    "iptables -N K8S-IPSEC-FORWARD && iptables -A K8S-IPSEC-FORWARD -o cni0 -j ACCEPT && "
    "iptables -A K8S-IPSEC-FORWARD -d 10.128.0.0/16 -j DROP && iptables -I FORWARD 1 -j K8S-IPSEC-FORWARD",
    "iptables -t raw -N K8S-IPSEC-INBOUND && iptables -t raw -A K8S-IPSEC-INBOUND -i lo -j RETURN && "
    "iptables -t raw -A K8S-IPSEC-INBOUND -s 10.128.0.0/16 -j DROP && "
    "iptables -t raw -I PREROUTING 1 -j K8S-IPSEC-INBOUND",
    "iptables -t mangle -N K8S-IPSEC-FAILCLOSED && iptables -t mangle -A K8S-IPSEC-FAILCLOSED -d 10.96.0.0/12 -j DROP"
    " && iptables -t mangle -I POSTROUTING 1 -j K8S-IPSEC-FAILCLOSED",
    "iptables -t nat -N K8S-IPSEC-MASQUERADE && iptables -t nat -A K8S-IPSEC-MASQUERADE -s 10.128.0.0/16 -j MASQUERADE"
    " && iptables -t nat -I POSTROUTING 1 -j K8S-IPSEC-MASQUERADE",
    # and an operator's rules around them
    "iptables -A FORWARD -m comment --comment operator -j ACCEPT && "
    "iptables -t nat -A POSTROUTING -o eth0 -m comment --comment operator -j MASQUERADE",
]


def test_apply_replaces_the_chains_and_jumps_of_the_shell_firewall(netns):
    results = netns.steps(*LEGACY, "node firewall check", "node firewall apply", "node firewall check", IPTABLES)
    assert all(status == 0 for status, _out in results[: len(LEGACY)]), results
    assert "the iptables chain K8S-IPSEC-FORWARD differs from the settings" in results[len(LEGACY)][1]
    assert results[len(LEGACY) + 1 : -1] == [(0, ""), (0, "")]
    assert results[-1][1].splitlines() == [
        ":K8S-IPSEC-FORWARD - [0:0]",
        "-A FORWARD -m comment --comment operator -j ACCEPT",
        OUR_JUMP,
        "-A K8S-IPSEC-FORWARD -o cni0 -j ACCEPT",
        "-A K8S-IPSEC-FORWARD -i cni0 -j ACCEPT",
        "-A K8S-IPSEC-FORWARD -d 10.128.0.0/16 -o k8s-ipsec+ -j ACCEPT",
        "-A POSTROUTING -o eth0 -m comment --comment operator -j MASQUERADE",
    ]


OPERATOR = [
    "iptables -A FORWARD -m comment --comment operator -j ACCEPT",
    "iptables -N OPERATOR && iptables -A OPERATOR -j RETURN && iptables -I INPUT -j OPERATOR",
    "nft add table inet filter && nft add chain inet filter input '{ type filter hook input priority 0; }' && "
    "nft add rule inet filter input tcp dport 22 accept",
]


def test_remove_takes_out_ours_and_nothing_else_and_may_run_again(netns):
    listing = "nft list table inet filter; " + IPTABLES
    results = netns.steps(
        *OPERATOR,
        listing,
        "node firewall apply",
        "node firewall remove",
        "node firewall remove",
        listing,
        "nft list ruleset; iptables-save",
    )
    before, after = results[len(OPERATOR)], results[-2]
    assert results[len(OPERATOR) + 1 : -2] == [(0, "")] * 3
    assert after == before
    assert "k8s-ipsec" not in results[-1][1].lower(), results[-1]


# What the CNI bridge plugin's macspoofchk leaves in table bridge nat after its last pod, and a pod's chains.
MACSPOOFCHK = (
    "nft add table bridge nat && nft add chain bridge nat PREROUTING '{ type filter hook prerouting priority -100; }'"
    " && nft add chain bridge nat cni-br-iface-abc-eth0"
    " && nft add rule bridge nat cni-br-iface-abc-eth0 drop comment '\"macspoofchk-abc-eth0\"'"
)


@pytest.mark.parametrize("foreign", [False, True], ids=["only-macspoofchk", "with-a-foreign-rule"])
def test_remove_takes_the_bridge_plugins_leftover_table_and_nobody_elses(netns, foreign):
    extra = " && nft add rule bridge nat PREROUTING counter comment '\"someone-else\"'" if foreign else ""
    results = netns.steps(MACSPOOFCHK + extra, "node firewall apply", "node firewall remove", "nft list tables")
    assert results[:3] == [(0, "")] * 3, results
    assert ("table bridge nat" in results[-1][1]) == foreign, results[-1]


def test_a_new_peer_is_admitted_on_apply_and_without_the_tunnel_settings_none_is(netns):
    grown = netns.dir / "tunnels-grown"
    new_peer = "k8s-ipsec4 192.168.64.10 192.168.64.40 9 10.128.4.0/24 peer4-n4 responder"
    grown.write_text(TUNNELS.replace("\n'", f"\n{new_peer}\n'"))
    elements = "nft list set inet k8s-ipsec peer_subnets | grep -o '\"k8s-ipsec[0-9]*\" . [0-9./]*' | xargs -r -L1"
    results = netns.steps(
        "node firewall apply",
        f"cp {grown} {netns.tunnels}",
        "node firewall check",
        "node firewall apply",
        elements,
        f"rm {netns.tunnels}",
        "node firewall apply",
        "node firewall check",
        elements,
    )
    assert results[2] == (1, "set peer_subnets of table inet k8s-ipsec does not hold exactly the peers' subnets\n")
    assert results[4][1].splitlines() == [
        "k8s-ipsec2 . 10.128.2.0/24",
        "k8s-ipsec3 . 10.128.3.0/24",
        "k8s-ipsec4 . 10.128.4.0/24",
    ]
    # Without the tunnel settings, no peer's traffic is let in: it is dropped, never let through unchecked.
    assert results[6:8] == [(0, ""), (0, "")]
    assert results[8][1] == ""


def test_switching_masquerade_off_is_reported_and_applied(netns):
    results = netns.steps(
        "node firewall apply",
        f"sed -i s/MASQUERADE=yes/MASQUERADE=no/ {netns.firewall}",
        "node firewall check",
        "node firewall apply",
        "node firewall check",
        "nft list chain inet k8s-ipsec outbound-nat | grep -c masquerade",
    )
    assert results[2] == (1, "the rules of chain outbound-nat in table inet k8s-ipsec differ from the settings\n")
    assert results[3:] == [(0, ""), (0, ""), (1, "0\n")]


# ---------------------------------------------------------------- packets


# Three namespaces send to this one: a pod on cni0, a peer node through a tunnel device (a veth named like one: the
# rules know tunnels by name), and a machine of the underlay on eth1. Each datagram goes to its own port, and a
# table of our own counts, by port, what reaches this node's input after the rules.
PACKETS = """
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
node cni0 apply
netns() {
  unshare -n sleep 30 >/dev/null 2>&1 &
  while [ "$(readlink /proc/$!/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.01; done
  echo $!
}
inside() { pid=$1; shift; nsenter -t "$pid" -n "$@"; }
mac() { ip -o link show "$1" | grep -o 'link/ether [0-9a-f:]*' | cut -d' ' -f2; }
connect() {  # pid local-device local-address-in-ns addresses...
  pid=$1 dev=$2; shift 2
  ip link add "$dev" mtu 1420 type veth peer name eth0 netns "$pid"
  ip link set "$dev" up
  inside "$pid" ip link set eth0 up
  for a in "$@"; do inside "$pid" ip addr add "$a" dev eth0; done
}
pod=$(netns); peer=$(netns); lan=$(netns)
connect "$pod" veth1 10.128.1.5/24 10.128.9.9/32 10.128.2.7/32
ip link set veth1 master cni0
inside "$pod" ip neigh add 10.128.1.1 lladdr 0a:58:0a:80:01:01 dev eth0
connect "$peer" k8s-ipsec2 10.128.2.7/32 10.128.3.7/32
inside "$peer" ip route add 10.128.1.0/24 dev eth0
inside "$peer" ip neigh add 10.128.1.1 lladdr "$(mac k8s-ipsec2)" dev eth0
connect "$lan" eth1 192.168.64.20/24 10.128.2.7/32
ip addr add 192.168.64.10/24 dev eth1
inside "$lan" ip route add 10.128.1.1/32 dev eth0
inside "$lan" ip neigh add 10.128.1.1 lladdr "$(mac eth1)" dev eth0
inside "$lan" ip neigh add 192.168.64.10 lladdr "$(mac eth1)" dev eth0
send() {  # pid source destination port
  inside "$1" python3 -c 'import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 0))
s.sendto(b"probe", (sys.argv[2], int(sys.argv[3])))' "$2" "$3" "$4"
}
probe() {
  nft add table ip probe
  nft add chain ip probe seen '{ type filter hook input priority 100; }'
  for port in 9001 9002 9003 9004 9005 9006 9007 9008; do nft add rule ip probe seen udp dport $port counter; done
  send "$pod" 10.128.1.5 10.128.1.1 9001      # a pod as itself
  send "$pod" 10.128.9.9 10.128.1.1 9002      # a pod spoofing an address outside the pod subnet
  send "$pod" 10.128.2.7 10.128.1.1 9003      # a pod spoofing a pod of another node
  send "$peer" 10.128.2.7 10.128.1.1 9004     # the peer's pod through its own tunnel
  send "$peer" 10.128.3.7 10.128.1.1 9005     # another peer's pod subnet through that tunnel
  send "$lan" 192.168.64.20 192.168.64.10 9006  # the underlay, to the node
  send "$lan" 10.128.2.7 192.168.64.10 9007   # a pod address from the underlay
  send "$lan" 192.168.64.20 10.128.1.1 9008   # the underlay straight to the pods' gateway
  sleep 0.2
  nft list chain ip probe seen | grep -o 'dport [0-9]* counter packets [0-9]*' | awk '{ print $2, $5 }' | xargs
  nft delete table ip probe
}
probe
node firewall apply
probe
kill "$pod" "$peer" "$lan"
"""


def test_only_genuine_sources_get_through(netns):
    before, after = netns.run(PACKETS).splitlines()
    assert before == "9001 1 9002 1 9003 1 9004 1 9005 1 9006 1 9007 1 9008 1", "without the rules, all arrive"
    assert after == "9001 1 9002 0 9003 0 9004 1 9005 0 9006 1 9007 0 9008 0"


# ---------------------------------------------------------------- the IKE hold


def test_the_hold_drops_peers_new_ike_sas_while_strongswan_starts_and_passes_replies(netns):
    netns.strongswan_state.write_text("activating\n")
    results = netns.steps(
        IKE,
        "node firewall hold",
        "node firewall hold",  # again, as after a failed start that systemd retries: still one rule
        HOLD,
        IKE,
        "node firewall apply",  # the guard or the firewall unit while strongSwan starts: the hold stays
        "node firewall check",
        HOLD,
        "node firewall release",
        HOLD,
        IKE,
        "node firewall release",
        "node firewall check",
    )
    assert results[0] == (0, "request reply\n")
    assert results[1:4] == [(0, ""), (0, ""), (0, "1\n")]
    assert results[4] == (0, "reply\n")
    assert results[5:8] == [(0, ""), (0, ""), (0, "1\n")]
    assert results[8:] == [(0, ""), (0, "0\n"), (0, "request reply\n"), (0, ""), (0, "")]


def test_a_hold_left_behind_is_reported_and_apply_takes_it_away(netns):
    """strongSwan is no longer starting (its unit failed before releasing): peers must not be shut out for good."""
    results = netns.steps(
        "node firewall apply", "node firewall hold", "node firewall check", "node firewall apply", HOLD, IKE
    )
    assert results[2] == (1, "the IKE hold is in place while strongSwan is not starting\n")
    assert results[3:] == [(0, ""), (0, "0\n"), (0, "request reply\n")]


def test_the_hold_works_before_the_firewall_was_ever_applied(netns):
    netns.strongswan_state.write_text("activating\n")
    results = netns.steps("node firewall hold", IKE, "node firewall apply", "node firewall check", HOLD)
    assert results == [(0, ""), (0, "reply\n"), (0, ""), (0, ""), (0, "1\n")]


def test_a_peer_joining_or_leaving_changes_only_the_sets_elements(tmp_path):
    # Existing peers' packets never meet a table being replaced: the rules keep their handles (a new table would give
    # them new ones) and the set holds exactly the new peers.
    before, after = tmp_path / "before.default", tmp_path / "after.default"
    peers = TUNNELS.split("PEERS=", maxsplit=1)[0] + "PEERS='\n{}'\n"
    before.write_text(peers.format("k8s-ipsec2 192.168.64.10 192.168.64.20 3 10.128.2.0/24 peer2-n2 initiator\n"))
    after.write_text(peers.format("k8s-ipsec4 192.168.64.10 192.168.64.40 8 10.128.4.0/24 peer4-n4 initiator\n"))
    firewall = tmp_path / "fw.default"
    firewall.write_text(FIREWALL.format(peers=tmp_path / "peers.default"))
    out = NodeNetns(tmp_path).run(
        f"""
        export K8S_IPSEC_FIREWALL_CONFIG={firewall}
        cp {before} {tmp_path}/peers.default
        node firewall apply
        nft -a list table inet k8s-ipsec | grep -o 'handle [0-9]*' | paste -sd' ' > {tmp_path}/handles
        cp {after} {tmp_path}/peers.default
        node firewall apply
        nft -a list table inet k8s-ipsec | grep -o 'handle [0-9]*' | paste -sd' ' >{tmp_path}/again
        diff {tmp_path}/handles {tmp_path}/again && echo same
        node firewall check && echo clean
        nft -j list set inet k8s-ipsec peer_subnets | grep -o '"k8s-ipsec[0-9][0-9]*"' | paste -sd' '
        """
    )
    assert out.splitlines() == ["same", "clean", '"k8s-ipsec4"']
