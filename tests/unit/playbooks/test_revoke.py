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
    # psk-next: the next secrets of a rotation that stopped part-way
    for folder in ("psk", "psk-next"):
        (tmp_path / folder).mkdir()
        for pair in ("pair-1-2", "pair-1-3", "pair-2-3", "pair-3-12"):
            (tmp_path / folder / pair).write_text("secret\n")
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


def crl_number_and_issuer_key(path):
    """The cRLNumber and authorityKeyIdentifier strongSwan needs to pick the CRL (cluster_crl's unit tests say why)."""
    crl = x509.load_pem_x509_crl(path.read_bytes())
    return (
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number,
        crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier,
    )


def ca_key_identifier(pki_dir):
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    return x509.SubjectKeyIdentifier.from_public_key(ca.public_key()).digest


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
    assert crl_number_and_issuer_key(pki_dir / "crl.pem") == (1, ca_key_identifier(pki_dir))
    # the node's copy is the controller's CRL
    assert (work / "node-b.crl").read_bytes() == (pki_dir / "crl.pem").read_bytes()
    proc = revoke(work, pki_dir, ["a", "d"])
    assert proc.returncode == 0, proc.stdout
    assert crl_serials(pki_dir / "crl.pem") == {serials["c"], serials["a"]}
    assert crl_number_and_issuer_key(pki_dir / "crl.pem")[0] == 2
    assert "d: no copy of its certificate" in proc.stdout


def test_psk_mode_deletes_only_the_removed_nodes_pair_secrets(pki, tmp_path):
    pki_dir = pki[0]
    proc = revoke(tmp_path, pki_dir, ["c"], auth="psk")
    assert proc.returncode == 0, proc.stdout
    for folder in ("psk", "psk-next"):
        assert sorted(p.name for p in (pki_dir / folder).iterdir()) == ["pair-1-2"]
    assert not (pki_dir / "crl.pem").exists()


def record_new_certificates(tmp_path, pki_dir, new, signing_ca="ca"):
    """The strongswan role's issued.yml as pki.yml runs it after signing: new maps a host to its new certificate's
    PEM (None: its certificate did not change)."""
    tasks = [
        {
            "name": "The signing task's result",
            "ansible.builtin.set_fact": {
                "__strongswan_node_cert": {
                    "changed": "{{ __new[inventory_hostname] is not none }}",
                    "certificate": "{{ __new[inventory_hostname] or lookup('file', __record, rstrip=false) }}",
                },
            },
            "vars": {"__record": "{{ strongswan_pki_dir }}/issued/{{ inventory_hostname }}.crt"},
        },
        {
            "name": "Record",
            "ansible.builtin.import_role": {"name": "k8s_ipsec.cni.strongswan", "tasks_from": "issued.yml"},
        },
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": tasks}]))
    inventory = {
        "all": {
            "hosts": {name: {} for name in new},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    variables = {"ansible_become": False, "strongswan_pki_dir": str(pki_dir), "__new": new,
                 "__strongswan_signing_ca": signing_ca, "strongswan_ca_common_name": CA_NAME}  # fmt: skip
    (tmp_path / "extra.json").write_text(json.dumps(variables))
    return run_ansible(
        "ansible-playbook", "-i", str(tmp_path / "hosts.yml"), "-e", f"@{tmp_path / 'extra.json'}",
        str(tmp_path / "play.yml"),
    )  # fmt: skip


def test_a_reissued_certificate_revokes_the_one_it_replaces_and_each_is_kept_by_serial(pki, tmp_path):
    pki_dir, serials = pki
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    new = {name: issue(name, CA_NAME, ec.generate_private_key(ec.SECP256R1()), ca_key) for name in ("a", "d")}
    pem = {name: cert.public_bytes(serialization.Encoding.PEM).decode() for name, cert in new.items()}
    work = tmp_path / "run"
    work.mkdir()
    (pki_dir / "issued" / "serials").mkdir()
    # a: renewed (its old certificate on record); d: a first certificate; b: unchanged
    b_before = (pki_dir / "issued" / "b.crt").read_bytes()
    proc = record_new_certificates(work, pki_dir, {"a": pem["a"], "d": pem["d"], "b": None})
    assert proc.returncode == 0, proc.stdout
    crl = x509.load_pem_x509_crl((pki_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes()).public_key())
    assert crl_serials(pki_dir / "crl.pem") == {serials["a"]}
    for name in ("a", "d"):
        assert (pki_dir / "issued" / f"{name}.crt").read_text() == pem[name]
        assert (pki_dir / "issued" / "serials" / f"{new[name].serial_number:x}.crt").read_text() == pem[name]
    assert (pki_dir / "issued" / "b.crt").read_bytes() == b_before
    assert crl_number_and_issuer_key(pki_dir / "crl.pem") == (1, ca_key_identifier(pki_dir))
    # a second run with nothing new leaves the CRL as it is
    crl_before = (pki_dir / "crl.pem").read_bytes()
    proc = record_new_certificates(work, pki_dir, {"a": None, "b": None})
    assert proc.returncode == 0, proc.stdout
    assert (pki_dir / "crl.pem").read_bytes() == crl_before


def test_a_rollover_to_a_new_ca_revokes_nothing(pki, tmp_path):
    pki_dir = pki[0]
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    cert = issue("a", CA_NAME, ec.generate_private_key(ec.SECP256R1()), ca_key)
    (pki_dir / "issued" / "serials").mkdir()
    work = tmp_path / "run"
    work.mkdir()
    new = {"a": cert.public_bytes(serialization.Encoding.PEM).decode()}
    proc = record_new_certificates(work, pki_dir, new, signing_ca="ca-next")
    assert proc.returncode == 0, proc.stdout
    assert not (pki_dir / "crl.pem").exists()
    assert (pki_dir / "issued" / "a.crt").read_text() == new["a"]
