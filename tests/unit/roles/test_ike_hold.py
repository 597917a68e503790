"""The strongSwan drop-in's IKE hold, rendered by Ansible and run for real with iptables in a private network
namespace (unshare -n): while charon loads its connections, a peer's IKE_SA_INIT request is dropped (answered, it
would get NO_PROPOSAL_CHOSEN, which the peer does not retry), replies to this node's own requests pass, and the
hold is gone once the connections are loaded or the unit stops.

Needs root and iptables (make tools installs it); nothing outside the namespace is touched.
"""

import re
import shlex

import pytest
from netns import in_netns

# Sends one IKE_SA_INIT request (responder SPI zero) and one reply (responder SPI set) to 127.0.0.1:500.
SEND = """python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
spi_i, spi_r, header = bytes(range(1, 9)), bytes(range(9, 17)), bytes([33, 0x20, 34])
s.sendto(spi_i + bytes(8) + header + bytes([0x08]) + bytes(8), ("127.0.0.1", 500))
s.sendto(spi_i + spi_r + header + bytes([0x20]) + bytes(8), ("127.0.0.1", 500))
'"""


@pytest.fixture(scope="module")
def commands(three_nodes):
    """ExecStartPre, ExecStartPost and ExecStopPost of the drop-in as shell commands, by setting."""
    text = three_nodes.text("kube-node1", "strongswan-dropin.conf")
    found = {}
    for setting, command in re.findall(r"^(Exec\w+)=-?/bin/sh -c '(.*)'$", text, re.M):
        found.setdefault(setting, []).append(command)
    return found


def hold_rules(saved):
    return [line for line in saved.splitlines() if "k8s-ipsec-ike-hold" in line]


def test_the_hold_is_set_before_charon_starts_and_lifted_after_its_connections_load(commands):
    assert set(commands) == {"ExecStartPre", "ExecStartPost", "ExecStopPost"}
    (pre,) = commands["ExecStartPre"]
    (post,) = commands["ExecStartPost"]
    (stop,) = commands["ExecStopPost"]
    # Twice, as after a failed start that systemd retries: still one rule.
    out = in_netns(
        "set -eu\nip link set lo up\n"
        f"sh -c {shlex.quote(pre)}\nsh -c {shlex.quote(pre)}\niptables -S INPUT\necho --\n{SEND}\n"
        f"iptables -L INPUT -v -x -n\necho --\nsh -c {shlex.quote(post)}\niptables -S INPUT\necho --\n"
        f"sh -c {shlex.quote(pre)}\nsh -c {shlex.quote(stop)}\niptables -S INPUT"
    )
    held, counted, lifted, stopped = out.split("--\n")
    assert len(hold_rules(held)) == 1
    assert held.splitlines()[1].startswith("-A INPUT -p udp"), "the hold must come first in INPUT"
    # Of the two packets, only the request was dropped: the reply went on.
    (counter,) = hold_rules(counted)
    assert counter.split()[0] == "1"
    assert hold_rules(lifted) == []
    assert hold_rules(stopped) == []
