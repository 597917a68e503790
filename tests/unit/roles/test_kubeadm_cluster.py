"""The kubeadm role's init and joins with several control planes, run by Ansible on local hosts against a
stand-in kubeadm that logs its calls: one certificate key per run, uploaded once, never on a command line;
control planes join one at a time; no bootstrap token is left behind."""

import json
import os
import re

import pytest
import yaml
from ansible_cli import run_ansible
from conftest import PLAYBOOK

CLUSTER_TASKS = PLAYBOOK.with_name("kubeadm_cluster.yml")
CERT_KEY = "c" * 64
TOKEN_ID = "abcdef"

FAKE_KUBEADM = r"""#!/bin/sh
# Stand-in for kubeadm: logs "<start> <end> <args>" and keeps a copy of every --config it is given.
start=$(date +%s.%N)
case "$*" in
  "certs certificate-key") echo "$CERT_KEY" ;;
  "token create"*) echo "kubeadm join 10.128.1.1:6443 --token $TOKEN_ID.0123456789abcdef" \
    "--discovery-token-ca-cert-hash sha256:$(printf '%064d' 0)" ;;
  init\ --config*|join\ --config*) sleep 1 ;;
esac
case "$*" in
  *--config*)
    cfg=$(echo "$*" | sed 's/.*--config \([^ ]*\).*/\1/')
    cp "$cfg" "$LOG_DIR/$(basename "$(dirname "$cfg")")-$(basename "$cfg")" ;;
esac
echo "$start $(date +%s.%N) $*" >> "$LOG_DIR/calls.log"
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Four local hosts: cp1 (first control plane, not yet initialised), cp2 and cp3 (control planes), w1."""
    tmp = tmp_path_factory.mktemp("kubeadm")
    bin_dir, log_dir, state = tmp / "bin", tmp / "log", tmp / "state"
    for path in (bin_dir, log_dir, state):
        path.mkdir()
    (bin_dir / "kubeadm").write_text(FAKE_KUBEADM)
    (bin_dir / "kubeadm").chmod(0o755)
    hosts = {"cp1": 1, "cp2": 2, "cp3": 3, "w1": 4}
    inventory = {
        "k8s_cluster": {
            "hosts": {
                name: {"ansible_host": f"192.168.64.{index * 10}", "k8s_ipsec_node_index": index}
                for name, index in hosts.items()
            },
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        },
        "kube_control_plane": {"hosts": {"cp1": None, "cp2": None, "cp3": None}},
    }
    (tmp / "hosts.yml").write_text(yaml.safe_dump(inventory))
    host_path = "{{ test_dir }}/{{ inventory_hostname }}"
    extra = {
        "test_dir": str(state),
        "__kubeadm_kubelet_conf_path": f"{host_path}/kubelet.conf",
        "__kubeadm_join_config": f"{host_path}/kubeadm-join.yaml",
        "__kubeadm_upload_config": f"{host_path}/kubeadm-upload-certs.yaml",
        "__kubeadm_init_config": f"{host_path}/kubeadm-init.yaml",
        "__kubeadm_admin_conf": f"{host_path}/admin.conf",
    }
    (tmp / "extra.json").write_text(json.dumps(extra))
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LOG_DIR": str(log_dir),
        "CERT_KEY": CERT_KEY,
        "TOKEN_ID": TOKEN_ID,
    }
    proc = run_ansible(
        "ansible-playbook", "-i", str(tmp / "hosts.yml"), "-e", f"@{tmp / 'extra.json'}", str(CLUSTER_TASKS),
        env_extra=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = []
    for line in (log_dir / "calls.log").read_text().splitlines():
        start, end, args = line.split(" ", 2)
        calls.append((float(start), float(end), args))
    configs = {path.name: path.read_text() for path in log_dir.glob("*.yaml")}
    return {"calls": calls, "configs": configs, "state": state, "output": proc.stdout}


def args_of(cluster, prefix):
    return [c for c in cluster["calls"] if c[2].startswith(prefix)]


def test_cluster_is_initialised_once_and_its_bootstrap_token_deleted(cluster):
    (init,) = args_of(cluster, "init --config")
    init_config = yaml.safe_load_all(cluster["configs"]["cp1-kubeadm-init.yaml"])
    token = next(doc for doc in init_config if doc["kind"] == "InitConfiguration")["bootstrapTokens"][0]["token"]
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token)
    deletes = [c[2] for c in args_of(cluster, "token delete")]
    assert f"token delete {token.split('.')[0]}" in deletes


def test_one_certificate_key_per_run_uploaded_once_before_the_control_planes_join(cluster):
    assert len(args_of(cluster, "certs certificate-key")) == 1
    (upload,) = args_of(cluster, "init phase upload-certs --upload-certs --config")
    joins = [c for c in args_of(cluster, "join --config") if "/cp" in c[2]]
    assert len(joins) == 2 and all(upload[1] <= join[0] for join in joins)
    docs = list(yaml.safe_load_all(cluster["configs"]["cp1-kubeadm-upload-certs.yaml"]))
    assert docs[0]["certificateKey"] == CERT_KEY


def test_the_certificate_key_never_appears_on_a_command_line_or_in_the_output(cluster):
    assert not [c for c in cluster["calls"] if CERT_KEY in c[2]]
    assert CERT_KEY not in cluster["output"]


def test_control_planes_join_one_at_a_time_with_the_key_and_workers_without(cluster):
    joins = sorted((c for c in args_of(cluster, "join --config") if "/cp" in c[2]), key=lambda c: c[0])
    assert joins[0][1] <= joins[1][0], "two control planes joined at once"
    for host in ("cp2", "cp3"):
        join = yaml.safe_load(cluster["configs"][f"{host}-kubeadm-join.yaml"])
        assert join["controlPlane"]["certificateKey"] == CERT_KEY
    assert "controlPlane" not in yaml.safe_load(cluster["configs"]["w1-kubeadm-join.yaml"])


def test_every_join_token_is_deleted_and_no_secret_file_is_left(cluster):
    assert len(args_of(cluster, "token create")) == 3
    assert [c[2] for c in args_of(cluster, "token delete")].count(f"token delete {TOKEN_ID}") == 3
    leftovers = [p.name for p in cluster["state"].rglob("*") if p.name.startswith(("kubeadm-join", "kubeadm-upload"))]
    assert leftovers == []
