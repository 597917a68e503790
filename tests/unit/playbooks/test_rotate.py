"""The strongswan role's rotate.yml, as playbooks/rotate.yml runs it: a rotation the authentication mode cannot do
stops the run on every node, naming the host and the variable, before anything is changed."""

import json

import pytest
import yaml
from ansible_cli import run_ansible


def rotate(tmp_path, auth, what):
    (tmp_path / "play.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Rotate as rotate.yml does",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Rotate",
                            "ansible.builtin.import_role": {
                                "name": "k8s_ipsec.cni.strongswan",
                                "tasks_from": "rotate.yml",
                            },
                        }
                    ],
                }
            ]
        )
    )
    inventory = {
        "all": {
            "hosts": {"a": {}, "b": {}},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    pki_dir = tmp_path / "pki"
    (pki_dir / "psk").mkdir(parents=True)
    (pki_dir / "psk" / "pair-1-2").write_text("secret\n")
    variables = {
        "ansible_become": False,
        "strongswan_pki_dir": str(pki_dir),
        "strongswan_auth": auth,
        "strongswan_rotate": what,
    }
    (tmp_path / "extra.json").write_text(json.dumps(variables))
    proc = run_ansible(
        "ansible-playbook",
        "-i",
        str(tmp_path / "hosts.yml"),
        "-e",
        f"@{tmp_path / 'extra.json'}",
        str(tmp_path / "play.yml"),
    )
    return proc, pki_dir


@pytest.mark.parametrize(
    ("auth", "what", "allowed"),
    [("pubkey", "psk", "certs, ca"), ("psk", "ca", "psk"), ("pubkey", "everything", "certs, ca")],
)
def test_a_rotation_the_mode_cannot_do_stops_before_any_change(tmp_path, auth, what, allowed):
    proc, pki_dir = rotate(tmp_path, auth, what)
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    for host in ("a", "b"):
        assert f"host {host}: strongswan_rotate (-e rotate=) is '{what}'; with strongswan_auth {auth}" in said
    assert f"it is one of {allowed}. Nothing was changed." in said
    assert sorted(str(p.relative_to(pki_dir)) for p in pki_dir.rglob("*")) == ["psk", "psk/pair-1-2"]


def test_rotate_refuses_a_limit_before_touching_any_node(tmp_path):
    inventory = {
        "k8s_cluster": {
            "hosts": {
                "a": {"ansible_host": "192.0.2.1", "k8s_ipsec_node_index": 1},
                "b": {"ansible_host": "192.0.2.2", "k8s_ipsec_node_index": 2},
            }
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    # unreachable addresses: anything that touched a node would fail as unreachable
    proc = run_ansible("ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "--limit", "a", "playbooks/rotate.yml")
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    assert "rotate.yml rotates the credentials of every node together and takes no --limit (a given)" in said
    assert "UNREACHABLE" not in proc.stdout


def test_rotate_without_a_limit_goes_on_to_the_nodes(tmp_path):
    # ssh to a closed port on loopback: the run reaches the nodes and fails there, at once
    hosts = {name: {"ansible_host": "127.0.0.1", "ansible_port": 1, "k8s_ipsec_address": f"192.0.2.{i}",
                    "k8s_ipsec_node_index": i} for i, name in ((1, "a"), (2, "b"))}  # fmt: skip
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"k8s_cluster": {"hosts": hosts}}))
    proc = run_ansible("ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "playbooks/rotate.yml")
    assert "takes no --limit" not in proc.stdout
    assert "Check that no --limit splits the cluster's credentials" in proc.stdout
    assert "UNREACHABLE" in proc.stdout
