"""Our modules run by Ansible itself on localhost: arguments, results, failures and the plan playbook."""

import json

import pytest
from ansible_cli import run_ansible
from cryptography import x509
from pki_helpers import issue, key_pem, make_ca, pem


def adhoc(module, arguments, check=False, diff=False):
    extra = (["--check"] if check else []) + (["--diff"] if diff else [])
    proc = run_ansible(
        "ansible",
        "localhost",
        "-c",
        "local",
        "-m",
        module,
        "-a",
        json.dumps(arguments),
        *extra,
        env_extra={
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        },
    )
    output = json.loads(proc.stdout)
    return proc.returncode, output["plays"][0]["tasks"][0]["hosts"]["localhost"]


NODES = [
    {"name": "kube-node1", "address": "192.168.64.10", "index": 1},
    {"name": "kube-node2", "address": "192.168.64.20", "index": 2},
    {"name": "kube-node3", "address": "192.168.64.30", "index": 3},
]


def test_pod_subnets_module_returns_subnets_and_changes_nothing():
    rc, result = adhoc("k8s_ipsec.cni.pod_subnets", {"nodes": NODES}, check=True)
    assert rc == 0
    assert result["changed"] is False
    assert result["subnets"]["kube-node3"] == {"index": 3, "subnet": "10.128.3.0/24", "gateway": "10.128.3.1"}


def test_mesh_peers_module_returns_the_contract_keys():
    rc, result = adhoc("k8s_ipsec.cni.mesh_peers", {"nodes": NODES, "node": "kube-node3"})
    assert rc == 0
    assert [p["name"] for p in result["peers"]] == ["kube-node1", "kube-node2"]
    assert set(result["peers"][0]) >= {
        "name",
        "local_address",
        "remote_address",
        "local_subnet",
        "remote_subnet",
        "connection",
        "interface",
        "key",
    }


def test_mesh_plan_module_returns_every_node_and_its_peers_in_one_run():
    rc, result = adhoc("k8s_ipsec.cni.mesh_plan", {"nodes": NODES, "underlay_mtu": 1400}, check=True)
    assert rc == 0
    assert result["changed"] is False
    plan = result["plan"]
    assert plan["mtu"] == 1320 and plan["tunnel_prefix"] == "k8s-ipsec"
    assert plan["nodes"]["kube-node2"]["gateway"] == "10.128.2.1"
    assert [p["interface"] for p in plan["peers"]["kube-node2"]] == ["k8s-ipsec1", "k8s-ipsec3"]
    single = adhoc("k8s_ipsec.cni.mesh_peers", {"nodes": NODES, "node": "kube-node2"})[1]
    assert plan["peers"]["kube-node2"] == single["peers"]


def test_mesh_plan_module_rejects_a_bad_tunnel_prefix():
    rc, result = adhoc("k8s_ipsec.cni.mesh_plan", {"nodes": NODES, "tunnel_prefix": "vti0"})
    assert rc != 0
    assert "tunnel_prefix 'vti0'" in result["msg"]


def test_module_failure_names_the_host_and_value():
    bad = [dict(node) for node in NODES]
    bad[1]["index"] = 1
    rc, result = adhoc("k8s_ipsec.cni.mesh_peers", {"nodes": bad, "node": "kube-node1"})
    assert rc != 0
    assert result["failed"] is True
    assert "hosts kube-node1 and kube-node2 share k8s_ipsec_node_index 1" in result["msg"]


def test_show_plan_over_the_vagrant_inventory_prints_the_original_pairs():
    proc = run_ansible("ansible-playbook", "-i", "inventory/vagrant/hosts.yml", "playbooks/show_plan.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for pair in ("kube-node1 <-> kube-node2", "kube-node1 <-> kube-node3", "kube-node2 <-> kube-node3"):
        assert pair in proc.stdout
    for subnet in ("10.128.1.0/24", "10.128.2.0/24", "10.128.3.0/24"):
        assert subnet in proc.stdout


@pytest.mark.parametrize("role", ["cni_bridge", "forward_rules", "strongswan", "containerd", "kubeadm"])
def test_a_role_run_without_the_plan_stops_before_any_task(tmp_path, role):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("k8s_cluster:\n  hosts:\n    a:\n      ansible_host: 192.168.64.10\n")
    playbook = tmp_path / "role.yml"
    playbook.write_text(f"- hosts: k8s_cluster\n  gather_facts: false\n  roles:\n    - role: k8s_ipsec.cni.{role}\n")
    proc = run_ansible("ansible-playbook", "-i", str(inventory), str(playbook))
    assert proc.returncode != 0
    # The argument check is the role's first task: it fails on the missing plan (or on defaults that read it).
    assert f"TASK [k8s_ipsec.cni.{role} : Validating arguments against arg spec 'main'" in proc.stdout
    assert "ok=0" in proc.stdout and "network_plan_cluster" in proc.stdout
    assert "UNREACHABLE" not in proc.stdout


@pytest.mark.parametrize(
    "host_vars, message",
    [
        ("ansible_host: 192.168.64.20\n      k8s_ipsec_node_index: 1", "share k8s_ipsec_node_index 1"),
        ("ansible_host: 192.168.64.20", "host b has no k8s_ipsec_node_index"),
        ("ansible_host: b.example\n      k8s_ipsec_node_index: 2", "host b: address 'b.example'"),
        (
            "ansible_host: 192.168.64.20\n      k8s_ipsec_address: 10.128.9.9\n      k8s_ipsec_node_index: 2",
            "host b: underlay address 10.128.9.9 lies inside",
        ),
        ("ansible_host: 10.96.0.10\n      k8s_ipsec_node_index: 2", "host b: underlay address 10.96.0.10 lies inside"),
    ],
)
def test_site_rejects_a_bad_inventory_before_touching_any_node(tmp_path, host_vars, message):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "k8s_cluster:\n  hosts:\n    a:\n      ansible_host: 192.168.64.10\n      k8s_ipsec_node_index: 1\n"
        "    b:\n      " + host_vars + "\n"
    )
    # Unreachable hosts: if anything but the controller-side plan ran, the failure would be "unreachable".
    proc = run_ansible("ansible-playbook", "-i", str(inventory), "site.yml")
    assert proc.returncode != 0
    assert message in proc.stdout
    assert "unreachable=1" not in proc.stdout and "UNREACHABLE" not in proc.stdout


def test_cluster_crl_module_tells_the_truth_in_check_mode_then_writes_once(tmp_path):
    ca, ca_key = make_ca()
    (tmp_path / "ca.crt").write_bytes(pem(ca))
    (tmp_path / "ca.key").write_bytes(key_pem(ca_key))
    node = issue(ca, ca_key)
    (tmp_path / "node.crt").write_bytes(pem(node))
    crl = tmp_path / "crl.pem"
    arguments = {
        "path": str(crl),
        "ca_certificate_path": str(tmp_path / "ca.crt"),
        "ca_privatekey_path": str(tmp_path / "ca.key"),
        "revoked_serials": [7],
        "revoked_certificates": [str(tmp_path / "node.crt")],
        "mode": "0640",
    }
    rc, result = adhoc("k8s_ipsec.cni.cluster_crl", arguments, check=True, diff=True)
    assert rc == 0 and result["changed"] is True, result
    assert result["added"] == sorted([7, node.serial_number])
    assert result["diff"]["after"] == "".join("%x\n" % serial for serial in result["added"])
    assert not crl.exists()
    rc, result = adhoc("k8s_ipsec.cni.cluster_crl", arguments)
    assert rc == 0 and result["changed"] is True and result["crl_number"] == 1, result
    assert {entry.serial_number for entry in x509.load_pem_x509_crl(crl.read_bytes())} == {7, node.serial_number}
    assert crl.stat().st_mode & 0o777 == 0o640
    written = crl.read_bytes()
    rc, result = adhoc("k8s_ipsec.cni.cluster_crl", arguments, check=True)
    assert rc == 0 and result["changed"] is False and result["serials"] == sorted([7, node.serial_number])
    rc, result = adhoc("k8s_ipsec.cni.cluster_crl", arguments)
    assert rc == 0 and result["changed"] is False and crl.read_bytes() == written
    # a certificate of another CA is named in the failure, and nothing is written
    stranger = issue(*make_ca())
    (tmp_path / "stranger.crt").write_bytes(pem(stranger))
    rc, result = adhoc(
        "k8s_ipsec.cni.cluster_crl", dict(arguments, revoked_certificates=[str(tmp_path / "stranger.crt")])
    )
    assert rc != 0 and "stranger.crt: it was not issued by this CA" in result["msg"]
    assert crl.read_bytes() == written
