"""playbooks/add_node.yml and remove_node.yml on local hosts: a bad -e node stops the run before any change, with
the variable, the host and what to do; the plan of a removal leaves the leaving nodes out of every other node's
peers. The runs that change nodes are the lab's (tests/lab/checks/95-add-remove-reset.sh)."""

import json

import pytest
import yaml
from ansible_cli import run_ansible

HOSTS = {"a": ("192.168.64.10", 1), "b": ("192.168.64.20", 2), "c": ("192.168.64.30", 3)}


@pytest.fixture
def playbook(tmp_path):
    """Runs a playbook against hosts a, b and c on local connections, with extra vars; checks that no file changed."""
    inventory = {
        "k8s_cluster": {
            "hosts": {name: {"ansible_host": ip, "k8s_ipsec_node_index": i} for name, (ip, i) in HOSTS.items()},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "pki").mkdir()

    def run(name, **extra):
        variables = {"ansible_become": False, "strongswan_pki_dir": str(tmp_path / "pki"), **extra}
        (tmp_path / "extra.json").write_text(json.dumps(variables))
        before = sorted(str(p) for p in tmp_path.rglob("*"))
        proc = run_ansible(
            "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}", name
        )
        after = sorted(str(p) for p in tmp_path.rglob("*") if p.name != "plan.json")
        assert after == before, "the run changed files"
        return proc

    return run


@pytest.mark.parametrize("book", ["playbooks/add_node.yml", "playbooks/remove_node.yml"])
@pytest.mark.parametrize(
    "node, message",
    [
        (None, "no node named: pass the"),
        (" , ", "no node named: pass the"),
        ("c,zz", "node zz: not in the inventory group k8s_cluster"),
        ("a,b,c", "every node of k8s_cluster is named in node (a, b, c)"),
    ],
)
def test_a_bad_node_list_stops_the_run_before_any_change(playbook, book, node, message):
    proc = playbook(book, **({} if node is None else {"node": node}))
    assert proc.returncode != 0
    assert message in proc.stdout
    assert "Nothing was changed." in proc.stdout
    # Stopped in the first play: the plan never ran.
    assert "Validate the inventory and compute the plan" not in proc.stdout


def test_the_last_node_cannot_be_removed_and_all_cannot_be_added(playbook):
    assert "run playbooks/reset.yml on it instead" in playbook("playbooks/remove_node.yml", node="a,b,c").stdout
    assert "to build them all, run site.yml" in playbook("playbooks/add_node.yml", node=["a", "b", "c"]).stdout


def test_the_plan_of_a_removal_leaves_the_leaving_node_out(playbook, tmp_path):
    plan_json = tmp_path / "plan.json"
    proc = playbook("playbooks/show_plan.yml", network_plan_leaving=["b"], network_plan_json=str(plan_json))
    assert proc.returncode == 0, proc.stdout
    plan = json.loads(plan_json.read_text())
    assert sorted(plan["nodes"]) == ["a", "c"]
    assert [p["name"] for p in plan["peers"]["a"]] == ["c"]
    assert [p["name"] for p in plan["peers"]["c"]] == ["a"]
