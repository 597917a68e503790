"""playbooks/verify.yml on three local hosts whose swanctl, systemctl and guard programs are stand-ins replaying
what the lab's nodes printed: the table, the JSON, and a failure that names what, where and the fix."""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from ansible_cli import run_ansible

FIXTURES = Path(__file__).parents[1] / "lab" / "fixtures"

SWANCTL = """#!/bin/sh
# replays the node's captured listing: conns before the marker, SAs after it
case "$1" in
  --list-conns) sed '/^=====SAS=====$/,$d' "$FAKE_DIR/$FAKE_NODE.swanctl" ;;
  --list-sas) sed '1,/^=====SAS=====$/d' "$FAKE_DIR/$FAKE_NODE.swanctl" ;;
esac
"""
SYSTEMCTL = """#!/bin/sh
case "$1" in
  is-active) if [ -e "$FAKE_DIR/$FAKE_NODE.down-$2" ]; then echo inactive; exit 3; fi; echo active ;;
  show) echo "{ path=$FAKE_DIR/guard ; argv[]=$FAKE_DIR/guard apply ; }" ;;
esac
"""
GUARD = """#!/bin/sh
if [ -e "$FAKE_DIR/$FAKE_NODE.drift" ]; then echo "bridge cni0 lacks 10.128.1.1/24"; exit 1; fi
"""
PYTHON = """#!/bin/sh
FAKE_NODE={node} FAKE_DIR={fake} PATH={fake}/bin:$PATH exec {python} "$@"
"""


@pytest.fixture
def verify(tmp_path):
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    for name, text in (("bin/swanctl", SWANCTL), ("bin/systemctl", SYSTEMCTL), ("guard", GUARD)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    hosts = {}
    for i in (1, 2, 3):
        node = f"n{i}"
        (fake / f"{node}.swanctl").write_text((FIXTURES / f"n{i}-3nodes.txt").read_text())
        interpreter = fake / f"python-{node}"
        interpreter.write_text(PYTHON.format(node=node, fake=fake, python=sys.executable))
        interpreter.chmod(0o755)
        hosts[node] = {
            "ansible_host": f"192.168.100.1{i}",
            "k8s_ipsec_node_index": i,
            "ansible_python_interpreter": str(interpreter),
        }
    inventory = {"k8s_cluster": {"hosts": hosts, "vars": {"ansible_connection": "local"}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))

    def run(*marks, **variables):
        for mark in marks:
            (fake / mark).touch()
        extra = {"ansible_become": False, "verify_certificates": {}, "verify_json": str(tmp_path / "state.json")}
        extra.update(variables)
        (tmp_path / "extra.json").write_text(json.dumps(extra))
        proc = run_ansible(
            "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
            "playbooks/verify.yml",
        )  # fmt: skip
        state = json.loads((tmp_path / "state.json").read_text())
        return proc, state

    return run


def test_a_healthy_mesh_prints_one_line_per_peer_and_passes(verify):
    proc, state = verify()
    assert proc.returncode == 0, proc.stdout
    assert "n1 -> n2: IKE ESTABLISHED x1 AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519" in proc.stdout
    assert "| CHILD INSTALLED x1 ESP:AES_GCM_16-256 in 0B/0p out 0B/0p" in proc.stdout
    assert "n3: certificates - | xfrm errors" in proc.stdout and "| units ok | guards ok" in proc.stdout
    assert sorted(state) == ["n1", "n2", "n3"]
    assert [p["name"] for p in state["n2"]["peers"]] == ["n1", "n3"]
    assert state["n2"]["problems"] == []


def test_drift_and_a_stopped_unit_fail_naming_node_what_and_fix(verify):
    proc, state = verify("n2.drift", "n3.down-k8s-ipsec-guard.service")
    assert proc.returncode != 0
    assert "n2, k8s-ipsec-cni0.service: bridge cni0 lacks 10.128.1.1/24 -> systemctl reload k8s-ipsec-cni0.service" in (
        proc.stdout
    )
    assert "n3, k8s-ipsec-guard.service: k8s-ipsec-guard.service is inactive -> systemctl status" in proc.stdout
    assert state["n1"]["problems"] == []
    assert "guards drifted: k8s-ipsec-cni0.service" in proc.stdout


def test_a_missing_sa_names_the_peer_and_the_way_back(verify, tmp_path):
    listing = tmp_path / "fake" / "n1.swanctl"
    lines = listing.read_text().splitlines()
    listing.write_text("\n".join(line for line in lines if not line.startswith("list-sa event {peer3-n3")) + "\n")
    proc, state = verify()
    assert proc.returncode != 0
    assert (
        "n1, peer3-n3: peer3-n3: 0 IKE_SAs (0 ESTABLISHED), expected exactly 1 -> check strongSwan here and on n3"
        in (proc.stdout)
    )
    assert {p["name"]: p["ike_state"] for p in state["n1"]["peers"]} == {"n2": "ESTABLISHED", "n3": "NONE"}


def test_a_node_clock_far_from_the_controllers_is_named_with_the_fix(verify):
    proc, state = verify()
    assert all(abs(node["clock_offset_s"]) < 60 for node in state.values())
    # the controller's clock an hour ahead, as the nodes would see it: every node is an hour behind
    proc, state = verify(__verify_controller_time="{{ now(utc=true).timestamp() + 3600 }}")
    assert proc.returncode != 0
    assert re.search(r"n2, clock: the clock is 3[56]\d\d s behind the controller's -> synchronise it", proc.stdout)
    assert all(-3700 < node["clock_offset_s"] < -3500 for node in state.values())
