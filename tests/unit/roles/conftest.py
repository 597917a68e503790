"""Fixtures of the role tests: the roles' real templates rendered by Ansible with a real plan, for 3 and 4 nodes."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from ansible_cli import run_ansible

PLAYBOOK = Path(__file__).with_name("render_templates.yml")

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "0123456789abcdef" * 4
CERT_KEY = "f" * 64
KUBEADM_VERSION = "v1.36.4"


def render(tmp_path, nodes, control_planes, extra=None):
    """Write an inventory of `nodes` (name -> index), run the render playbook, return a reader of its output."""
    inventory = {
        "k8s_cluster": {
            "hosts": {
                name: {
                    "ansible_host": f"192.168.64.{index * 10}",
                    "k8s_ipsec_node_index": index,
                    "ansible_connection": "local",
                    "ansible_python_interpreter": sys.executable,
                }
                for name, index in nodes.items()
            }
        },
        "kube_control_plane": {"hosts": {name: None for name in control_planes}},
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory, sort_keys=False))
    out = tmp_path / "out"
    extra_vars = {
        "render_dir": str(out),
        "test_kubeadm_version": KUBEADM_VERSION,
        "test_token": TOKEN,
        "test_ca_cert_hash": CA_HASH,
        "test_certificate_key": CERT_KEY,
        **(extra or {}),
    }
    (tmp_path / "extra.json").write_text(json.dumps(extra_vars))
    proc = run_ansible(
        "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}", str(PLAYBOOK)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    class Rendered:
        """The rendered files: out/<host>/<name>."""

        @staticmethod
        def text(host, name):
            return (out / host / name).read_text()

        @staticmethod
        def docs(host, name):
            return {doc["kind"]: doc for doc in yaml.safe_load_all(Rendered.text(host, name)) if doc}

        @staticmethod
        def computed(host):
            return json.loads(Rendered.text(host, "computed.json"))

    Rendered.out = out
    return Rendered


THREE = {"kube-node1": 1, "kube-node2": 2, "kube-node3": 3}


@pytest.fixture(scope="session")
def three_nodes(tmp_path_factory):
    """The Vagrant layout: three nodes, kube-node1 the only control plane, every default untouched."""
    return render(tmp_path_factory.mktemp("three"), THREE, ["kube-node1"])


@pytest.fixture(scope="session")
def four_nodes(tmp_path_factory):
    """Four nodes with two control planes, another pod CIDR and a pinned patch release."""
    nodes = {"alpha": 4, "bravo": 7, "charlie": 9, "delta": 12}
    return render(
        tmp_path_factory.mktemp("four"),
        nodes,
        ["bravo", "alpha"],
        {
            "network_plan_cluster_cidr": "10.200.0.0/16",
            "network_plan_service_cidr": "172.20.0.0/16",
            "kubeadm_kubernetes_version": "1.36.2",
            "kubeadm_api_server_cert_sans": ["api.example.test"],
        },
    )


@pytest.fixture(autouse=True)
def node_state_dir(tmp_path, monkeypatch):
    """The node program counts repairs and keeper actions in /run/k8s-ipsec on a node; here in the test's folder."""
    monkeypatch.setenv("K8S_IPSEC_STATE_DIR", str(tmp_path / "node-state"))
    return tmp_path / "node-state"
