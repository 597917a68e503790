"""The two modules run by Ansible itself on localhost: arguments, results, failures and the plan playbook."""

import json
import os

import pytest
from ansible_cli import run_ansible


def adhoc(module, arguments, check=False, env=None, extra=()):
    extra = [*extra, "--check"] if check else list(extra)
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
            **(env or {}),
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


def test_node_files_writes_only_what_differs_and_check_mode_writes_nothing(tmp_path):
    unit, script = tmp_path / "etc" / "unit.service", tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    files = {
        "files": [
            {"path": str(unit), "content": "[Unit]\n"},
            {"path": str(script), "content": "#!/bin/sh\n", "mode": "0755"},
        ]
    }
    rc, result = adhoc("k8s_ipsec.cni.node_files", files, check=True)
    assert rc == 0 and result["changed"] is True
    assert result["changes"] == {str(unit): ["created"], str(script): ["mode"]}
    assert not unit.exists()

    rc, result = adhoc("k8s_ipsec.cni.node_files", files)
    assert rc == 0 and result["changed_paths"] == [str(unit), str(script)]
    assert unit.read_text() == "[Unit]\n" and os.access(script, os.X_OK)

    rc, result = adhoc("k8s_ipsec.cni.node_files", files)
    assert rc == 0 and result["changed"] is False and result["changed_paths"] == []


# A Python that fails at once: a task that still succeeds never started a module on the node.
NO_PYTHON = ("-e", "ansible_python_interpreter=/bin/false")


def test_node_files_reads_a_node_already_as_wanted_without_python(tmp_path):
    script = tmp_path / "script"
    files = {
        "files": [{"path": str(script), "content": "#!/bin/sh\n", "mode": "0755"}],
        "absent": [str(tmp_path / "x")],
    }
    rc, result = adhoc("k8s_ipsec.cni.node_files", files, extra=NO_PYTHON)
    assert rc != 0 and not script.exists()

    assert adhoc("k8s_ipsec.cni.node_files", files)[0] == 0
    rc, result = adhoc("k8s_ipsec.cni.node_files", files, extra=NO_PYTHON)
    assert rc == 0 and result["changed"] is False and result["changes"] == {}

    # every difference the module writes is one the read sees: content, mode, a file that must go
    for spoil in (
        lambda: script.write_text("#!/bin/sh\n# edited\n"),
        lambda: script.chmod(0o644),
        (tmp_path / "x").touch,
    ):
        spoil()
        assert adhoc("k8s_ipsec.cni.node_files", files, extra=NO_PYTHON)[0] != 0
        rc, result = adhoc("k8s_ipsec.cni.node_files", files)
        assert rc == 0 and result["changed"] is True


def test_node_files_refuses_a_bad_entry_before_writing_any(tmp_path):
    good = tmp_path / "good"
    rc, result = adhoc(
        "k8s_ipsec.cni.node_files",
        {"files": [{"path": str(good), "content": "x"}, {"path": str(tmp_path / "bad"), "content": "", "mode": "9"}]},
    )
    assert rc != 0
    assert result["msg"].startswith("nothing written: ") and "bad: mode '9'" in result["msg"]
    assert not good.exists()


# systemd as node_units sees it: units known by a file each in the state folder, enabled, active and edited (its file
# changed since the last daemon-reload) by marker files.
FAKE_SYSTEMCTL = """#!/bin/sh
state={state}
echo "$*" >>"$state/calls"
action=$1; shift
units=$(for arg; do case $arg in -*) ;; *) echo "$arg" ;; esac; done)
case $action in
  show)
    for unit in $units; do
      if [ -e "$state/$unit" ]; then load=loaded; else load=not-found; fi
      if [ -e "$state/$unit.active" ]; then active=active; else active=inactive; fi
      if [ -e "$state/$unit.enabled" ]; then file=enabled; else file=disabled; fi
      if [ -e "$state/$unit.edited" ]; then edited=yes; else edited=no; fi
      printf 'LoadState=%s\\nActiveState=%s\\nUnitFileState=%s\\nNeedDaemonReload=%s\\n\\n' \\
        "$load" "$active" "$file" "$edited"
    done ;;
  daemon-reload) rm -f "$state"/*.edited ;;
  enable) rm -f "$state"/*.edited; for unit in $units; do touch "$state/$unit.enabled"; done ;;
  start|restart|reload-or-restart) for unit in $units; do touch "$state/$unit.active"; done ;;
esac
"""


def fake_systemctl(tmp_path, *units):
    state = tmp_path / "systemd"
    state.mkdir()
    for unit in units:
        (state / unit).touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL.format(state=state))
    (bin_dir / "systemctl").chmod(0o755)
    return state / "calls", {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_node_units_enables_and_starts_in_one_call_each_and_then_changes_nothing(tmp_path):
    calls, env = fake_systemctl(tmp_path, "a.service", "b.timer")
    units = {"units": [{"name": "a", "enabled": True, "state": "started"}, {"name": "b.timer", "enabled": True}]}
    units["daemon_reload"] = True
    show = "show --property=LoadState,ActiveState,UnitFileState,NeedDaemonReload -- a.service b.timer"

    rc, result = adhoc("k8s_ipsec.cni.node_units", units, check=True, env=env)
    assert rc == 0 and result["changed"] is True and result["enabled"] == ["a.service", "b.timer"]
    assert calls.read_text().splitlines() == [show]

    rc, result = adhoc("k8s_ipsec.cni.node_units", units, env=env)
    assert rc == 0 and result["started"] == ["a.service"]
    # the enable reloads the manager: no daemon-reload of its own
    assert calls.read_text().splitlines()[1:] == [show, "enable -- a.service b.timer", "start -- a.service"]

    rc, result = adhoc("k8s_ipsec.cni.node_units", units, env=env)
    assert rc == 0 and result["changed"] is False
    assert calls.read_text().splitlines()[4:] == [show, "daemon-reload"]


def test_node_units_reloads_what_runs_starts_what_does_not_and_rereads_an_edited_unit_first(tmp_path):
    calls, env = fake_systemctl(tmp_path, "a.service", "b.service", "a.service.active", "a.service.edited")
    units = {"units": [{"name": "a", "state": "reloaded"}, {"name": "b", "state": "reloaded"}]}
    rc, result = adhoc("k8s_ipsec.cni.node_units", units, env=env)
    assert rc == 0 and result["changed"] is True
    assert result["reloaded"] == ["a.service", "b.service"] and result["daemon_reloaded"] is True
    # the action's read, then the module's own
    assert calls.read_text().splitlines()[2:] == ["daemon-reload", "reload-or-restart -- a.service b.service"]
    assert (tmp_path / "systemd/b.service.active").exists()

    # a unit only looked at: its edited file is re-read, and that is no change
    (tmp_path / "systemd/a.service.edited").touch()
    rc, result = adhoc("k8s_ipsec.cni.node_units", {"units": [{"name": "a"}]}, env=env)
    assert rc == 0 and result["changed"] is False and result["daemon_reloaded"] is True
    assert calls.read_text().splitlines()[-1] == "daemon-reload"


def test_node_units_refuses_an_unknown_unit_before_changing_any(tmp_path):
    calls, env = fake_systemctl(tmp_path, "a.service")
    units = {"units": [{"name": "a", "enabled": True}, {"name": "gone", "enabled": True}]}
    rc, result = adhoc("k8s_ipsec.cni.node_units", units, env=env)
    assert rc != 0
    assert result["msg"] == (
        "nothing changed: systemd does not know gone.service: write the unit file first (the role's earlier task), "
        "then run again"
    )
    # the action's read, then the module's own, and nothing else
    assert [c.split()[0] for c in calls.read_text().splitlines()] == ["show", "show"]


def test_node_units_reads_units_already_as_wanted_without_python(tmp_path):
    calls, env = fake_systemctl(tmp_path, "a.service")
    units = {"units": [{"name": "a", "enabled": True, "state": "started"}]}
    assert adhoc("k8s_ipsec.cni.node_units", units, env=env, extra=NO_PYTHON)[0] != 0
    assert adhoc("k8s_ipsec.cni.node_units", units, env=env)[0] == 0
    rc, result = adhoc("k8s_ipsec.cni.node_units", units, env=env, extra=NO_PYTHON)
    assert rc == 0 and result["changed"] is False and result["started"] == []
    assert calls.read_text().splitlines()[-1].startswith("show ")

    # a unit stopped behind the role's back is started again, through the module
    (tmp_path / "systemd/a.service.active").unlink()
    assert adhoc("k8s_ipsec.cni.node_units", units, env=env, extra=NO_PYTHON)[0] != 0
    rc, result = adhoc("k8s_ipsec.cni.node_units", units, env=env)
    assert rc == 0 and result["started"] == ["a.service"]
