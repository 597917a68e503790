"""The strongswan role's ca.yml on the controller: the cluster CA is valid from strongswan_cert_backdate_minutes back,
so a node whose clock runs behind the controller's still accepts it (and what it signs) at once."""

import datetime
import json

import yaml
from ansible_cli import run_ansible
from cryptography import x509


def make_ca(tmp_path, extra):
    (tmp_path / "play.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Create the CA as pki.yml does",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "CA",
                            "ansible.builtin.import_role": {"name": "k8s_ipsec.cni.strongswan", "tasks_from": "ca.yml"},
                            "vars": {"__strongswan_ca_file": "ca"},
                        }
                    ],
                }
            ]
        )
    )
    inventory = {
        "all": {
            "hosts": {"b": {}},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    variables = {"ansible_become": False, "strongswan_pki_dir": str(tmp_path / "pki"), **extra}
    (tmp_path / "pki").mkdir()
    (tmp_path / "extra.json").write_text(json.dumps(variables))
    proc = run_ansible(
        "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
        str(tmp_path / "play.yml"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    return x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.crt").read_bytes())


def test_the_ca_is_valid_from_an_hour_back_by_default(tmp_path):
    before = datetime.datetime.now(datetime.UTC)
    ca = make_ca(tmp_path, {})
    back = before - ca.not_valid_before_utc
    assert datetime.timedelta(minutes=59) <= back <= datetime.timedelta(minutes=61), back


def test_the_backdating_is_a_variable(tmp_path):
    before = datetime.datetime.now(datetime.UTC)
    ca = make_ca(tmp_path, {"strongswan_cert_backdate_minutes": 5})
    back = before - ca.not_valid_before_utc
    assert datetime.timedelta(minutes=4) <= back <= datetime.timedelta(minutes=6), back
