"""The strongswan role's revoke.yml on the controller, as playbooks/remove_node.yml runs it: the removed node's
certificate, from the controller's copy, goes into the cluster CRL signed by the CA; earlier entries stay; a node
without a copy is named; psk pair secrets of the removed node are deleted and no others."""

import datetime
import json

import pytest
import yaml
from ansible_cli import run_ansible
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CA_NAME = "k8s_ipsec cluster CA"


def issue(subject, issuer, key, issuer_key, ca=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def pki(tmp_path):
    """A cluster CA and copies of the certificates it issued to a, b and c, as pki.yml keeps them."""
    ca_key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "ca.key").write_bytes(
        ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ca = issue(CA_NAME, CA_NAME, ca_key, ca_key, ca=True)
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "issued").mkdir()
    serials = {}
    for name in ("a", "b", "c"):
        cert = issue(name, CA_NAME, ec.generate_private_key(ec.SECP256R1()), ca_key)
        (tmp_path / "issued" / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        serials[name] = cert.serial_number
    (tmp_path / "psk").mkdir()
    for pair in ("pair-1-2", "pair-1-3", "pair-2-3", "pair-3-12"):
        (tmp_path / "psk" / pair).write_text("secret\n")
    return tmp_path, serials


def revoke(tmp_path, pki_dir, nodes, auth="pubkey"):
    (tmp_path / "play.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Revoke as remove_node.yml does",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Revoke",
                            "ansible.builtin.import_role": {
                                "name": "k8s_ipsec.cni.strongswan",
                                "tasks_from": "revoke.yml",
                            },
                            "vars": {"strongswan_revoked_nodes": nodes},
                        },
                        # strongSwan's reload needs systemd: the play ends before its handler
                        {"name": "End before the handlers", "ansible.builtin.meta": "end_play"},
                    ],
                }
            ]
        )
    )
    inventory = {
        "all": {
            "hosts": {"b": {"k8s_ipsec_node_index": 2}, "c": {"k8s_ipsec_node_index": 3}, "d": {}},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    variables = {
        "ansible_become": False,
        "strongswan_pki_dir": str(pki_dir),
        "strongswan_auth": auth,
        "__strongswan_crl_path": str(tmp_path / "node-{{ inventory_hostname }}.crl"),
    }
    (tmp_path / "extra.json").write_text(json.dumps(variables))
    return run_ansible(
        "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
        "--limit", "b", str(tmp_path / "play.yml"),
    )  # fmt: skip


def crl_serials(path):
    return {entry.serial_number for entry in x509.load_pem_x509_crl(path.read_bytes())}


def test_removed_nodes_are_revoked_in_a_crl_the_ca_signed_and_earlier_entries_stay(pki, tmp_path):
    pki_dir, serials = pki
    work = tmp_path / "run"
    work.mkdir()
    proc = revoke(work, pki_dir, ["c"])
    assert proc.returncode == 0, proc.stdout
    crl = x509.load_pem_x509_crl((pki_dir / "crl.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    assert crl.is_signature_valid(ca.public_key())
    assert crl_serials(pki_dir / "crl.pem") == {serials["c"]}
    # the node's copy is the controller's CRL
    assert (work / "node-b.crl").read_bytes() == (pki_dir / "crl.pem").read_bytes()
    proc = revoke(work, pki_dir, ["a", "d"])
    assert proc.returncode == 0, proc.stdout
    assert crl_serials(pki_dir / "crl.pem") == {serials["c"], serials["a"]}
    assert "d: no copy of its certificate" in proc.stdout


def test_psk_mode_deletes_only_the_removed_nodes_pair_secrets(pki, tmp_path):
    pki_dir = pki[0]
    proc = revoke(tmp_path, pki_dir, ["c"], auth="psk")
    assert proc.returncode == 0, proc.stdout
    assert sorted(p.name for p in (pki_dir / "psk").iterdir()) == ["pair-1-2"]
    assert not (pki_dir / "crl.pem").exists()
