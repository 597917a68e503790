"""playbooks/internal/preflight.yml on local hosts: a renumbered node, or certified nodes without the CA on the
controller, stop the run before any change, with the host, the old and the new value, and what to do."""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from ansible_cli import run_ansible


@pytest.fixture
def cluster(tmp_path):
    """Hosts a (index 1) and b (index 2) on local connections; each keeps its files under tmp_path/<host>."""

    def run(recorded=None, certified=(), ca=True, extra=None, node_ca=None, issued=(), limit=None, host_vars=None):
        inventory = {
            "k8s_cluster": {
                "hosts": {
                    "a": {"ansible_host": "192.168.64.10", "k8s_ipsec_node_index": 1},
                    "b": {"ansible_host": "192.168.64.20", "k8s_ipsec_node_index": 2},
                },
                "vars": {"ansible_connection": "local"},
            }
        }
        # Each host's Python starts in its own folder, where a relative path points: also when a task is delegated
        # to it (a delegated task is still templated with the delegating host's name).
        for host in ("a", "b"):
            (tmp_path / host).mkdir(exist_ok=True)
            python = tmp_path / f"python-{host}"
            python.write_text(f'#!/bin/sh\ncd "{tmp_path / host}" && exec {sys.executable} "$@"\n')
            python.chmod(0o755)
            inventory["k8s_cluster"]["hosts"][host]["ansible_python_interpreter"] = str(python)
        pki = tmp_path / "pki"
        pki.mkdir(exist_ok=True)
        if ca:
            (pki / "ca.key").write_text("a stand-in CA key\n")
            (pki / "ca.crt").write_text("the cluster CA\n")
        for host, text in (node_ca or {}).items():
            (tmp_path / host).mkdir(exist_ok=True)
            (tmp_path / host / "ca.crt").write_text(text)
        for host in issued:
            (pki / "issued").mkdir(exist_ok=True)
            (pki / "issued" / f"{host}.crt").write_text("a copy of the certificate issued to it\n")
        for host, values in (host_vars or {}).items():
            inventory["k8s_cluster"]["hosts"][host].update(values)
        for host, index in (recorded or {}).items():
            (tmp_path / host).mkdir(exist_ok=True)
            (tmp_path / host / "bridge.default").write_text(f"INDEX={index}\nBRIDGE=cni0\n")
        for host in certified:
            (tmp_path / host).mkdir(exist_ok=True)
            (tmp_path / host / "node.crt").write_text("a stand-in certificate\n")
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
        variables = {
            "ansible_become": False,
            "strongswan_pki_dir": str(pki),
            "__network_plan_index_record": str(tmp_path / "{{ inventory_hostname }}" / "bridge.default"),
            "__strongswan_cert_path": str(tmp_path / "{{ inventory_hostname }}" / "node.crt"),
            "__strongswan_ca_path": "ca.crt",
            **(extra or {}),
        }
        (tmp_path / "extra.json").write_text(json.dumps(variables))
        proc = run_ansible(
            "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
            *(["--limit", limit] if limit else []), "playbooks/internal/preflight.yml",
        )  # fmt: skip
        after = sorted(str(p) for p in tmp_path.rglob("*") if p.name not in ("hosts.yml", "extra.json"))
        assert after == before, "the preflight changed files"
        return proc

    return run


def test_nodes_as_recorded_pass(cluster):
    proc = cluster(recorded={"a": 1, "b": 2}, certified=("a", "b"))
    assert proc.returncode == 0, proc.stdout
    assert "changed=0" in proc.stdout


def test_new_nodes_without_records_pass(cluster):
    proc = cluster(ca=False)
    assert proc.returncode == 0, proc.stdout


def test_a_renumbered_node_stops_the_run_naming_host_and_both_indexes(cluster):
    proc = cluster(recorded={"a": 1, "b": 5})
    assert proc.returncode != 0
    assert "host b was built as node index 5" in proc.stdout
    assert "now gives k8s_ipsec_node_index 2" in proc.stdout
    assert "Put k8s_ipsec_node_index 5 back" in proc.stdout


def test_certified_nodes_without_the_ca_stop_the_run(cluster):
    proc = cluster(certified=("b",), ca=False)
    assert proc.returncode != 0
    assert "b hold a certificate of the cluster CA, but this controller has no CA key" in proc.stdout
    assert "strongswan_new_ca=true" in proc.stdout


def test_a_new_ca_is_an_explicit_choice(cluster):
    assert cluster(certified=("b",), ca=False, extra={"strongswan_new_ca": True}).returncode == 0


def test_psk_mode_needs_no_ca(cluster):
    assert cluster(certified=("a",), ca=False, extra={"strongswan_auth": "psk"}).returncode == 0


def test_nodes_trusting_the_controllers_ca_pass(cluster):
    proc = cluster(certified=("a", "b"), node_ca={"a": "the cluster CA\n", "b": "the cluster CA\n"})
    assert proc.returncode == 0, proc.stdout


def test_a_node_trusting_another_ca_stops_the_run(cluster, tmp_path):
    proc = cluster(certified=("a", "b"), node_ca={"a": "the cluster CA\n", "b": "another cluster's CA\n"})
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    assert f"host b trusts another CA than {tmp_path}/pki/ca.crt. Nothing was changed." in said
    assert "set strongswan_pki_dir to the folder of this cluster's ca.crt" in said


def test_a_node_outside_the_limit_is_read_too(cluster):
    proc = cluster(node_ca={"a": "the cluster CA\n", "b": "another cluster's CA\n"}, limit="a")
    assert proc.returncode != 0
    assert "host b trusts another CA" in proc.stdout


def test_an_unreachable_certified_node_outside_the_limit_stops_the_run(cluster):
    # b's ssh goes to a closed port on loopback: refused at once
    unreachable = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
                   "k8s_ipsec_address": "192.168.64.20"}  # fmt: skip
    proc = cluster(node_ca={"a": "the cluster CA\n"}, issued=("b",), limit="a", host_vars={"b": unreachable})
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    assert "host b holds a certificate of the cluster CA but its CA cannot be read" in said
    assert "playbooks/remove_node.yml" in said


def test_an_unreachable_node_never_certified_has_nothing_to_check(cluster):
    unreachable = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
                   "k8s_ipsec_address": "192.168.64.20"}  # fmt: skip
    proc = cluster(node_ca={"a": "the cluster CA\n"}, limit="a", host_vars={"b": unreachable})
    assert proc.returncode == 0, proc.stdout


def pki_dir_of(tmp_path, inventory_dir):
    """strongswan_pki_dir as the strongswan role's defaults compute it for an inventory in inventory_dir."""
    inventory_dir.mkdir(parents=True, exist_ok=True)
    (inventory_dir / "hosts.yml").write_text(yaml.safe_dump({"k8s_cluster": {"hosts": {"a": {}}}}))
    defaults = Path(__file__).parents[3] / "roles" / "strongswan" / "defaults" / "main.yml"
    play = [{"hosts": "a", "gather_facts": False, "vars_files": [str(defaults)],
             "tasks": [{"ansible.builtin.debug": {"msg": "pki={{ strongswan_pki_dir }}"}}]}]  # fmt: skip
    (tmp_path / "pki-dir.yml").write_text(yaml.safe_dump(play))
    proc = run_ansible("ansible-playbook", "-i", str(inventory_dir / "hosts.yml"), str(tmp_path / "pki-dir.yml"))
    assert proc.returncode == 0, proc.stdout
    return re.search(r"pki=(\S+)", proc.stdout).group(1)


def test_the_default_pki_folder_is_one_per_inventory(tmp_path):
    first = pki_dir_of(tmp_path, tmp_path / "cluster-a")
    assert first == pki_dir_of(tmp_path, tmp_path / "cluster-a")
    second = pki_dir_of(tmp_path, tmp_path / "cluster-b")
    assert first != second
    assert re.fullmatch(r".*/\.local/share/k8s_ipsec/cluster-[0-9a-f]{8}", first), first
