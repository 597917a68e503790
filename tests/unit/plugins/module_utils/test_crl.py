"""The cluster CRL: signed by the CA, found by strongSwan through its authorityKeyIdentifier, entries never lost."""

import datetime

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._crl import CrlError, certificate_serial, cluster_crl
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pki_helpers import DAYS, NOW, issue, key_pem, make_ca, pem


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def run(ca, current, serials, now=NOW, days=DAYS):
    cert, key = ca
    return cluster_crl(current, pem(cert), key_pem(key), serials, days, now=now)


def load(result):
    return x509.load_pem_x509_crl(result["pem"])


def test_a_new_crl_is_signed_by_the_ca_and_names_it_as_strongswan_looks_it_up(ca):
    result = run(ca, None, [0x51D83A4B, 7])
    assert result["changed"] and result["reasons"] == ["does not exist yet"]
    crl = load(result)
    assert crl.is_signature_valid(ca[0].public_key())
    assert crl.issuer == ca[0].subject
    # revocation_validator.c asks for the CRL by the issuer's subjectKeyIdentifier; x509_crl.c matches it only
    # against the CRL's authorityKeyIdentifier
    ski = ca[0].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ski
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert {entry.serial_number for entry in crl} == {0x51D83A4B, 7}
    assert result["serials"] == [7, 0x51D83A4B] and result["added"] == [7, 0x51D83A4B]
    assert crl.next_update_utc == NOW + datetime.timedelta(days=DAYS)


def test_the_same_serials_again_change_nothing(ca):
    first = run(ca, None, [7])
    again = run(ca, first["pem"], [7], now=NOW + datetime.timedelta(days=30))
    assert not again["changed"] and again["reasons"] == []
    assert again["pem"] == first["pem"] and again["crl_number"] == 1 and again["added"] == []


def test_a_new_serial_is_added_numbered_one_higher_and_earlier_entries_keep_their_dates(ca):
    first = run(ca, None, [7])
    later = NOW + datetime.timedelta(days=3)
    second = run(ca, first["pem"], [9], now=later)
    assert second["changed"] and second["reasons"] == ["revokes 9"]
    crl = load(second)
    assert {entry.serial_number: entry.revocation_date_utc for entry in crl} == {7: NOW, 9: later}
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert second["serials"] == [7, 9] and second["added"] == [9]


def old_style_crl(ca, serials):
    """A CRL as community.crypto.x509_crl wrote it before 0.2.0: no authorityKeyIdentifier, no cRLNumber."""
    cert, key = ca
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(NOW)
        .next_update(NOW + datetime.timedelta(days=DAYS))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
        )
    return pem(builder.sign(key, hashes.SHA256()))


def test_a_crl_of_an_earlier_version_is_signed_again_with_what_strongswan_needs(ca):
    result = run(ca, old_style_crl(ca, [5, 6]), [], now=NOW + datetime.timedelta(days=1))
    assert result["changed"]
    assert result["reasons"] == [
        "names no authorityKeyIdentifier of this CA, so strongSwan never consults it",
        "has no cRLNumber",
    ]
    crl = load(result)
    assert {entry.serial_number for entry in crl} == {5, 6}
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert result["crl_number"] == 1


def test_a_crl_is_signed_again_when_half_its_validity_is_gone(ca):
    first = run(ca, None, [7], days=10)
    assert not run(ca, first["pem"], [], now=NOW + datetime.timedelta(days=4), days=10)["changed"]
    late = run(ca, first["pem"], [], now=NOW + datetime.timedelta(days=6), days=10)
    assert late["changed"] and late["reasons"][0].startswith("is valid until")
    assert load(late).next_update_utc == NOW + datetime.timedelta(days=16)
    assert late["serials"] == [7]


def test_a_ca_without_a_subject_key_identifier_gets_one_derived_from_its_key():
    bare = make_ca(ski=False)
    crl = load(run(bare, None, [3]))
    expected = x509.SubjectKeyIdentifier.from_public_key(bare[1].public_key()).digest
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == expected


def test_a_crl_of_another_ca_is_refused(ca):
    other = make_ca()
    with pytest.raises(CrlError, match="not signed by this CA"):
        run(ca, run(other, None, [1])["pem"], [2])
    # same name, other key: a rollover's old CRL
    with pytest.raises(CrlError, match="not signed by this CA"):
        run(ca, old_style_crl(make_ca(), [1]), [2])


def test_a_ca_key_of_another_ca_is_refused(ca):
    with pytest.raises(CrlError, match="does not belong to the CA certificate"):
        cluster_crl(None, pem(ca[0]), key_pem(make_ca()[1]), [1], DAYS)


def test_garbage_is_refused_with_what_to_do(ca):
    with pytest.raises(CrlError, match="move it away"):
        run(ca, b"not a crl", [1])
    with pytest.raises(CrlError, match="at least 1"):
        run(ca, None, [1], days=0)


def test_a_certificate_is_revoked_by_its_serial_only_when_the_ca_issued_it(ca):
    cert = issue(*ca)
    assert certificate_serial(pem(cert), pem(ca[0])) == cert.serial_number
    # same issuer name, another key: the authorityKeyIdentifier tells them apart
    stranger = issue(*make_ca())
    with pytest.raises(CrlError, match="not issued by this CA"):
        certificate_serial(pem(stranger), pem(ca[0]))
