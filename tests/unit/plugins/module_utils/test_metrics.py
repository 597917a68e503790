"""The mesh as Prometheus metrics: values from a real swanctl listing, the text format promtool accepts, and rekeys
told from re-authentications."""

import shutil
import subprocess
from pathlib import Path

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._metrics import SaEvents, mesh_metrics
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._status import parse_swanctl

ROOT = Path(__file__).resolve().parents[4]
# What swanctl --list-sas --raw printed on node 1 of the lab (strongSwan 6.0): IKE_SAs to peer2-n2 and peer3-n3.
LISTING = (ROOT / "tests/unit/lab/fixtures/n1-3nodes-6.0.txt").read_text()
PEERS = [
    {"name": "n2", "address": "192.168.100.12", "connection": "peer2-n2", "device": "k8s-ipsec2"},
    {"name": "n3", "address": "192.168.100.13", "connection": "peer3-n3", "device": "k8s-ipsec3"},
    {"name": "n4", "address": "192.168.100.14", "connection": "peer4-n4", "device": "k8s-ipsec4"},
]
NODE = {"name": "n1", "index": 1, "tunnel_type": "xfrm"}


def promtool():
    found = ROOT / ".venv/bin/promtool"
    return str(found) if found.exists() else shutil.which("promtool")


def samples(text):
    """{'name{labels}': value} of the exposition."""
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}


def render(sas=None, links=None, events=None):
    return mesh_metrics(
        NODE,
        PEERS,
        parse_swanctl(LISTING)[1] if sas is None else sas,
        links if links is not None else {"k8s-ipsec2": {"rx_bytes": 1500, "tx_bytes": 3000, "rx_packets": 10}},
        {"XfrmInNoStates": 0, "XfrmAcquireError": 4},
        {"node": 1800000000.0, "ca": 2100000000},
        {"repairs": {"firewall": 2}, "failures": {}},
        {"initiate": 1},
        events or {"peer2-n2": {"ike": 1, "child": 3, "reauth": 2}},
    )


def test_each_peer_has_its_sa_state_ages_traffic_and_proposal():
    got = samples(render())
    n2 = 'peer="n2",peer_address="192.168.100.12"'
    n4 = 'peer="n4",peer_address="192.168.100.14"'
    assert got['k8s_ipsec_node_info{node="n1",index="1",tunnel_type="xfrm"}'] == 1
    assert got["k8s_ipsec_peer_ike_sa_established{%s}" % n2] == 1
    assert got["k8s_ipsec_peer_child_sa_installed{%s}" % n2] == 1
    # peer4-n4 has no SA in the listing: down, and no proposal
    assert got["k8s_ipsec_peer_ike_sa_established{%s}" % n4] == 0
    assert got["k8s_ipsec_peer_child_sa_installed{%s}" % n4] == 0
    assert got["k8s_ipsec_peer_ike_sa_age_seconds{%s}" % n2] == 365
    assert got['k8s_ipsec_peer_child_sa_info{%s,proposal="AES_GCM_16-256"}' % n2] == 1
    assert not any(key.startswith("k8s_ipsec_peer_child_sa_info{%s" % n4) for key in got)
    assert got["k8s_ipsec_peer_receive_bytes_total{%s}" % n2] == 1500
    assert got["k8s_ipsec_peer_transmit_packets_total{%s}" % n2] == 0
    # no device, no traffic series (a missing device is not 0 bytes)
    assert not any(key.startswith('k8s_ipsec_peer_receive_bytes_total{peer="n3"') for key in got)
    assert got['k8s_ipsec_peer_rekeys_total{%s,sa="child"}' % n2] == 3
    assert got["k8s_ipsec_peer_reauthentications_total{%s}" % n2] == 2
    assert got['k8s_ipsec_peer_rekeys_total{%s,sa="ike"}' % n4] == 0


def test_node_counters_cover_every_part_and_action_even_at_zero():
    got = samples(render())
    assert got['k8s_ipsec_xfrm_errors_total{counter="XfrmAcquireError"}'] == 4
    assert got['k8s_ipsec_xfrm_errors_total{counter="XfrmInNoStates"}'] == 0
    assert got['k8s_ipsec_guard_repairs_total{part="firewall"}'] == 2
    assert got['k8s_ipsec_guard_repairs_total{part="cni0"}'] == 0
    assert got['k8s_ipsec_guard_repair_failures_total{part="tunnels"}'] == 0
    assert got['k8s_ipsec_keeper_actions_total{action="initiate"}'] == 1
    assert got['k8s_ipsec_keeper_actions_total{action="reload_credentials"}'] == 0
    assert got['k8s_ipsec_certificate_expiry_timestamp_seconds{certificate="node"}'] == 1800000000
    assert got['k8s_ipsec_certificate_expiry_timestamp_seconds{certificate="ca"}'] == 2100000000


def test_without_charon_every_pair_is_down():
    got = samples(render(sas=[], links={}, events={}))
    assert {v for k, v in got.items() if k.startswith("k8s_ipsec_peer_ike_sa_established")} == {0}
    assert {v for k, v in got.items() if k.startswith("k8s_ipsec_peer_child_sa_installed")} == {0}


def test_label_values_are_escaped():
    text = mesh_metrics({"name": 'odd"name\\', "index": 2, "tunnel_type": "vti"}, [], [], {}, {}, {}, {}, {}, {})
    assert 'k8s_ipsec_node_info{node="odd\\"name\\\\",index="2",tunnel_type="vti"} 1' in text


def test_promtool_accepts_the_exposition(tmp_path):
    tool = promtool()
    assert tool, "promtool is missing: run make tools"
    proc = subprocess.run([tool, "check", "metrics"], input=render(), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # promtool's lint prints nothing for a clean exposition
    assert proc.stdout + proc.stderr == ""


def ike(connection, uniqueid, children, state="ESTABLISHED"):
    return {
        "connection": connection,
        "uniqueid": str(uniqueid),
        "state": state,
        "children": [{"uniqueid": str(child), "state": "INSTALLED"} for child in children],
    }


@pytest.mark.parametrize(
    "before, after, expected",
    [
        # the same SAs: nothing happened
        ([ike("c", 1, [2])], [ike("c", 1, [2])], {"ike": 0, "child": 0, "reauth": 0}),
        # a new CHILD_SA under the same IKE_SA
        ([ike("c", 1, [2])], [ike("c", 1, [3])], {"ike": 0, "child": 1, "reauth": 0}),
        # a new IKE_SA that took the CHILD_SA over
        ([ike("c", 1, [2])], [ike("c", 4, [2])], {"ike": 1, "child": 0, "reauth": 0}),
        # a new IKE_SA with a new CHILD_SA: re-authentication (make-before-break shows both for a moment)
        ([ike("c", 1, [2])], [ike("c", 1, [2]), ike("c", 5, [6])], {"ike": 0, "child": 0, "reauth": 1}),
        ([ike("c", 1, [2]), ike("c", 5, [6])], [ike("c", 5, [6])], {"ike": 0, "child": 0, "reauth": 0}),
        ([ike("c", 1, [2])], [ike("c", 5, [6])], {"ike": 0, "child": 0, "reauth": 1}),
        # the pair came back after being down
        ([], [ike("c", 7, [8])], {"ike": 0, "child": 0, "reauth": 1}),
        ([ike("c", 1, [2], state="CONNECTING")], [ike("c", 7, [8])], {"ike": 0, "child": 0, "reauth": 1}),
    ],
)
def test_rekeys_and_reauthentications_are_told_apart(before, after, expected):
    events = SaEvents()
    assert events.observe(before) == {}, "the first reading counts nothing"
    assert events.observe(after)["c"] == expected


def test_the_first_reading_counts_nothing_and_counts_carry_over_a_restart():
    events = SaEvents({"c": {"ike": 2, "child": 5, "reauth": 1}})
    assert events.observe([ike("c", 9, [10])])["c"] == {"ike": 2, "child": 5, "reauth": 1}
