"""The firewall script for real, with iptables, in a private network namespace of its own (unshare -n).

Needs root and iptables (make tools installs it); nothing outside the namespace is touched.
"""

import textwrap

import pytest
from ansible_cli import ROOT
from netns import in_netns

SCRIPT = ROOT / "roles/forward_rules/files/k8s-ipsec-firewall"
SETTINGS = """\
BRIDGE=cni0
TUNNELS=k8s-ipsec+
CLUSTER_CIDR=10.128.0.0/16
SERVICE_CIDR=10.96.0.0/12
POD_SUBNET=10.128.1.0/24
MASQUERADE=yes
PEERS_FILE={peers}
"""
# The tunnel settings the peers come from (role strongswan): device local remote key subnet connection role.
TUNNELS = """\
PREFIX=k8s-ipsec
PEERS='
k8s-ipsec2 192.168.64.10 192.168.64.20 3 10.128.2.0/24 peer2-n2 initiator
k8s-ipsec3 192.168.64.10 192.168.64.30 5 10.128.3.0/24 peer3-n3 initiator
'
"""


@pytest.fixture
def netns(tmp_path):
    """Runs a shell snippet in a fresh network namespace with the firewall script as `fw`; returns its output."""
    settings = tmp_path / "firewall.default"
    peers = tmp_path / "tunnels.default"
    settings.write_text(SETTINGS.format(peers=peers))
    peers.write_text(TUNNELS)

    def run(snippet, expect_status=0):
        script = f'set -eu\nfw() {{ sh {SCRIPT} "$@"; }}\n{textwrap.dedent(snippet)}'
        return in_netns(script, {"K8S_IPSEC_FIREWALL_CONFIG": str(settings)}, expect_status)

    return run


def rules(saved, chain):
    return [line for line in saved.splitlines() if line.startswith(f"-A {chain} ")]


def test_apply_loads_every_chain_jumped_to_first_and_check_agrees(netns):
    saved = netns(
        """
        iptables -A FORWARD -j ACCEPT -m comment --comment operator
        fw apply
        fw check
        iptables-save
        """
    )
    assert rules(saved, "FORWARD")[0] == "-A FORWARD -j K8S-IPSEC-FORWARD"
    assert "-A FORWARD -m comment --comment operator -j ACCEPT" in saved
    assert rules(saved, "PREROUTING")[0] == "-A PREROUTING -j K8S-IPSEC-INBOUND"
    inbound = rules(saved, "K8S-IPSEC-INBOUND")
    assert inbound[:4] == [
        "-A K8S-IPSEC-INBOUND -i lo -j RETURN",
        "-A K8S-IPSEC-INBOUND -s 10.128.1.0/24 -i cni0 -j RETURN",
        "-A K8S-IPSEC-INBOUND -s 10.128.2.0/24 -i k8s-ipsec2 -j RETURN",
        "-A K8S-IPSEC-INBOUND -s 10.128.3.0/24 -i k8s-ipsec3 -j RETURN",
    ]
    assert "-A K8S-IPSEC-INBOUND -s 10.128.0.0/16 -j DROP" in inbound
    assert inbound[-1] == "-A K8S-IPSEC-INBOUND -d 10.128.0.0/16 -j DROP"
    assert "-A K8S-IPSEC-FAILCLOSED -d 10.96.0.0/12 -j DROP" in rules(saved, "K8S-IPSEC-FAILCLOSED")


def test_apply_twice_changes_nothing(netns):
    out = netns(
        """
        fw apply; iptables-save | grep -v '^#' > /tmp/first.$$
        fw apply; iptables-save | grep -v '^#' | diff /tmp/first.$$ - && echo same
        rm -f /tmp/first.$$
        """
    )
    assert out.strip() == "same"


@pytest.mark.parametrize(
    "drift, reported",
    [
        ("iptables -t raw -F K8S-IPSEC-INBOUND", "chain raw K8S-IPSEC-INBOUND differs"),
        ("iptables -I FORWARD 1 -j ACCEPT", "the jump FORWARD -> K8S-IPSEC-FORWARD is not the first rule"),
        ("iptables -t mangle -D POSTROUTING -j K8S-IPSEC-FAILCLOSED", "POSTROUTING -> K8S-IPSEC-FAILCLOSED"),
        ("iptables -t nat -A K8S-IPSEC-MASQUERADE -j ACCEPT", "chain nat K8S-IPSEC-MASQUERADE differs"),
        # the same rules in another order: the spoofing drop would come before the pods' own source
        (
            "iptables -t raw -D K8S-IPSEC-INBOUND 2 && "
            "iptables -t raw -A K8S-IPSEC-INBOUND -s 10.128.1.0/24 -i cni0 -j RETURN",
            "chain raw K8S-IPSEC-INBOUND differs",
        ),
        ("nft flush ruleset 2>/dev/null || iptables -t raw -F", "K8S-IPSEC-INBOUND"),
    ],
)
def test_check_reports_drift_and_apply_repairs_it(netns, drift, reported):
    out = netns(
        f"""
        fw apply
        {drift}
        if fw check; then echo "check missed it"; exit 1; fi
        fw apply
        fw check && echo repaired
        iptables-save | grep -c -- '-j K8S-IPSEC-FORWARD$'
        """
    )
    assert reported in out
    assert out.splitlines()[-2:] == ["repaired", "1"]


def test_a_new_peer_in_the_tunnel_settings_is_admitted_on_apply_and_a_missing_list_admits_none(netns, tmp_path):
    out = netns(
        f"""
        fw apply
        sed -i "/^k8s-ipsec3 /a k8s-ipsec4 192.168.64.10 192.168.64.40 7 10.128.4.0/24 peer4-n4 responder" \\
          {tmp_path}/tunnels.default
        if fw check; then echo "check missed the new peer"; exit 1; fi
        fw apply
        fw check && echo admitted
        iptables-save -t raw | grep -c -- '-i k8s-ipsec4 -j RETURN'
        rm {tmp_path}/tunnels.default
        fw apply
        iptables-save -t raw | grep -c -- '-i k8s-ipsec[0-9]* -j RETURN' || true
        """
    )
    assert out.splitlines()[-3:] == ["admitted", "1", "0"]


def test_remove_takes_out_our_jumps_and_chains_and_nothing_else(netns):
    out = netns(
        """
        # the rules and the chains of their own (iptables-nft keeps empty tables once they were used)
        rules() { iptables-save | grep -E '^-A |^:[^ ]+ - ' || true; }
        iptables -A FORWARD -j ACCEPT -m comment --comment operator
        rules > /tmp/before.$$
        fw apply
        rules | grep -c K8S-IPSEC
        fw remove
        fw remove
        rules | diff /tmp/before.$$ - && echo as-before
        rm -f /tmp/before.$$
        """
    )
    assert int(out.splitlines()[0]) > 10
    assert out.splitlines()[1:] == ["as-before"]
