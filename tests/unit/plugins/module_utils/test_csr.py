"""The CA signs only what a node may ask for: forged CSRs are refused, each with the reason."""

import ipaddress

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._csr import node_csr_problems
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NAME, ADDRESS = "kube-node1", "192.168.64.10"
OWN_ADDRESS = (ipaddress.ip_address(ADDRESS),)


def csr(
    key=None,
    name=NAME,
    sans=OWN_ADDRESS,
    dns=(),
    ca=None,
    key_usage=None,
):
    """A CSR as the node makes it, with the given parts forged."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    names = [x509.IPAddress(ip) for ip in sans] + [x509.DNSName(d) for d in dns]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage:
        builder = builder.add_extension(key_usage, critical=True)
    request = builder.sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def usage(cert_sign):
    flags = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    flags.update(digital_signature=True, key_cert_sign=cert_sign)
    return x509.KeyUsage(**flags)


def test_the_nodes_own_csr_is_signed():
    assert node_csr_problems(csr(ca=False, key_usage=usage(False)), NAME, ADDRESS) == []


FORGED = [
    ("another node's address", dict(sans=(ipaddress.ip_address("192.168.64.20"),)), "IP:192.168.64.20, expected"),
    (
        "its own and another address",
        dict(sans=(ipaddress.ip_address(ADDRESS), ipaddress.ip_address("192.168.64.20"))),
        "IP:192.168.64.10, IP:192.168.64.20",
    ),
    ("an extra DNS name", dict(dns=("api.example.test",)), "DNS:api.example.test"),
    ("no name at all", dict(sans=()), "(none), expected exactly IP:192.168.64.10"),
    ("a pod address", dict(sans=(ipaddress.ip_address("10.128.1.1"),)), "IP:10.128.1.1"),
    ("CA rights", dict(ca=True), "basicConstraints CA:TRUE"),
    ("certificate signing", dict(key_usage=usage(True)), "certificate or CRL signing"),
    ("another node's name", dict(name="kube-node2"), "subject CN is kube-node2"),
    ("an RSA key", dict(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)), "expected an EC key"),
    ("another curve", dict(key=ec.generate_private_key(ec.SECP384R1())), "curve secp384r1, expected secp256r1"),
]


@pytest.mark.parametrize("case, forged, reason", FORGED, ids=[c[0] for c in FORGED])
def test_a_forged_csr_is_refused_with_the_reason(case, forged, reason):
    problems = node_csr_problems(csr(**forged), NAME, ADDRESS)
    assert len(problems) == 1, problems
    assert reason in problems[0], case


def test_a_csr_whose_signature_does_not_match_is_refused():
    der = bytearray(x509.load_pem_x509_csr(csr().encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0xFF  # inside the signature, the last field of the request
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    assert any("signature" in p for p in node_csr_problems(tampered, NAME, ADDRESS))


def test_garbage_is_refused():
    assert node_csr_problems("not a csr", NAME, ADDRESS)[0].startswith("it is not a PEM certificate signing request")
