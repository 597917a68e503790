"""The raw swanctl parser and the lab's SA check, against real `swanctl --raw` output captured on the lab (3 nodes:
strongSwan 5.9.8 with VTI devices on Debian 12, 6.0.1 with XFRM interfaces on Debian 13) and broken variants."""

import importlib.util
import re
from pathlib import Path

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._status import parse_message, parse_swanctl

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
_spec = importlib.util.spec_from_file_location("check_sas", HERE.parents[1] / "lab/files/check_sas.py")
check_sas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_sas)


def node(i, version="5.9"):
    return (FIXTURES / (f"n{i}-3nodes.txt" if version == "5.9" else f"n{i}-3nodes-{version}.txt")).read_text()


def run(text, peers, capsys):
    status = check_sas.check(text, peers)
    return status, capsys.readouterr().out.strip()


@pytest.mark.parametrize("version", ["5.9", "6.0"])
@pytest.mark.parametrize("i", [1, 2, 3])
def test_a_healthy_node_passes_with_its_algorithms(i, version, capsys):
    status, out = run(node(i, version), 2, capsys)
    assert status == 0
    assert out == "ok 2 peers, IKE AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519, ESP:AES_GCM_16-256"


@pytest.mark.parametrize("version", ["5.9", "6.0"])
def test_connections_and_sas_are_read_as_data(version):
    conns, sas = parse_swanctl(node(1, version))
    assert conns == ["peer2-n2", "peer3-n3"]
    states = sorted((sa["connection"], sa["state"], sa["initiator"]) for sa in sas)
    assert states == [("peer2-n2", "ESTABLISHED", True), ("peer3-n3", "ESTABLISHED", True)]
    (child,) = next(sa for sa in sas if sa["connection"] == "peer2-n2")["children"]
    assert (child["state"], child["protocol"], child["algorithms"]) == ("INSTALLED", "ESP", "AES_GCM_16-256")
    assert isinstance(child["bytes_in"], int) and child["rekey_in_seconds"] > 0


def test_values_with_spaces_and_lists_are_kept_whole():
    line = next(line for line in node(3).splitlines() if line.startswith("list-conn event"))
    body = line[len("list-conn event {") : line.rindex("}")]
    conn = parse_message(body)["peer1-n1"]
    assert conn["local-1"]["class"] == "public key"
    assert conn["remote-1"]["cacerts"] == "CN=k8s_ipsec cluster CA"
    assert conn["children"]["peer1-n1"]["remote-ts"] == "10.128.1.0/24"


def sa_lines(text):
    """The IKE_SA lines, the one of peer2-n2 (n1's first peer) first."""
    lines = [line for line in text.splitlines() if line.startswith("list-sa event")]
    return sorted(lines, key=lambda line: "peer2-n2 {" not in line)


def test_a_second_ike_sa_for_a_pair_fails(capsys):
    text = node(1)
    duplicate = sa_lines(text)[0].replace("uniqueid=1 ", "uniqueid=9 ")
    status, out = run(text + "\n" + duplicate + "\n", 2, capsys)
    assert status == 1
    assert "peer2-n2: 2 IKE_SAs (2 ESTABLISHED), expected exactly 1" in out


def test_a_missing_sa_fails(capsys):
    text = node(2)
    status, out = run(text.replace(sa_lines(text)[0], ""), 2, capsys)
    assert status == 1
    assert re.search(r"peer\d-n\d: 0 IKE_SAs \(0 ESTABLISHED\)", out)


def test_an_sa_still_connecting_fails(capsys):
    status, out = run(node(3).replace("state=ESTABLISHED", "state=CONNECTING", 1), 2, capsys)
    assert status == 1 and "1 IKE_SAs (0 ESTABLISHED)" in out


def test_two_child_sas_fail(capsys):
    text = node(1)
    line = sa_lines(text)[0]
    child = re.search(r"(peer2-n2-1 \{.*?\})\}\}\}$", line).group(1)
    doubled = line.replace(child, child + " " + child.replace("peer2-n2-1 {", "peer2-n2-7 {"))
    status, out = run(text.replace(line, doubled), 2, capsys)
    assert status == 1 and "peer2-n2: CHILD_SAs INSTALLED,INSTALLED, expected exactly 1 INSTALLED" in out


def test_weak_algorithms_fail(capsys):
    weak = (
        node(1)
        .replace("dh-group=CURVE_25519", "dh-group=MODP_1024", 1)
        .replace("encr-alg=AES_GCM_16 encr-keysize=256 bytes-in", "encr-alg=AES_CBC encr-keysize=128 bytes-in", 1)
    )
    status, out = run(weak, 2, capsys)
    assert status == 1
    assert "IKE proposal AES_GCM_16-256/PRF_HMAC_SHA2_384/MODP_1024" in out
    assert "CHILD_SA ESP AES_CBC-128" in out


def test_wrong_number_of_connections_fails(capsys):
    status, out = run(node(1), 3, capsys)
    assert status == 1 and "2 connections loaded, expected 3" in out


def test_garbage_is_an_error_not_a_pass():
    with pytest.raises(ValueError):
        parse_swanctl("list-sa event {peer2-n2 {state=ESTABLISHED child-sas {x {state=INSTALLED}}\n")
