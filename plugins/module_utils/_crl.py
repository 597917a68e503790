# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster CRL: the serials the cluster CA revoked, signed by it, in the form strongSwan finds.

strongSwan looks a certificate's CRL up by its issuer's subjectKeyIdentifier (revocation_validator.c) and a CRL
matches that only through its authorityKeyIdentifier (x509_crl.c has_issuer); RFC 5280 5.2.1 and 5.2.3 require both
that extension and a cRLNumber. A CRL without them is loaded but never consulted, so every CRL made here has both.

No Ansible imports. Needs the `cryptography` library on the controller (community.crypto needs it too).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

# not datetime.UTC: modules also run on Python 3.8 to 3.10
UTC = datetime.timezone.utc  # noqa: UP017

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_CRYPTOGRAPHY = False


class CrlError(Exception):
    """The CRL cannot be made as asked; the message says why and what to do."""


def _utc(value):
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _next_update(crl):
    return _utc(crl.next_update_utc if hasattr(crl, "next_update_utc") else crl.next_update)


def _revocation_date(entry):
    return _utc(entry.revocation_date_utc if hasattr(entry, "revocation_date_utc") else entry.revocation_date)


def _extension(owner, oid_class):
    try:
        return owner.extensions.get_extension_for_class(oid_class).value
    except x509.ExtensionNotFound:
        return None


def authority_key_identifier(ca_cert):
    """The authorityKeyIdentifier naming `ca_cert`: its subjectKeyIdentifier, or one derived from its key."""
    ski = _extension(ca_cert, x509.SubjectKeyIdentifier)
    if ski is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())


def _signature_hash(ca_key):
    return None if isinstance(ca_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def _public_bytes(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_ca(ca_cert_pem, ca_key_pem):
    """The CA certificate and key, checked to belong together."""
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise CrlError("the CA certificate cannot be read: %s" % exc) from exc
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CrlError("the CA key cannot be read: %s" % exc) from exc
    if _public_bytes(ca_key.public_key()) != _public_bytes(ca_cert.public_key()):
        raise CrlError("the CA key does not belong to the CA certificate; restore the pair that signed the cluster")
    return ca_cert, ca_key


def read_crl(crl_pem, ca_cert):
    """The CRL at hand as (entries {serial: revocation date}, cRLNumber or None, the CRL), checked against the CA.

    A CRL another CA signed stops here: its serials mean nothing under this CA, and replacing it silently would
    hide that the CA changed under it.
    """
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise CrlError("the CRL cannot be read (%s); move it away to start a new one" % exc) from exc
    if crl.issuer != ca_cert.subject or not crl.is_signature_valid(ca_cert.public_key()):
        raise CrlError(
            "the CRL was not signed by this CA (issuer %s); a CA rollover retires it, so move it away only if this "
            "CA is the cluster's" % crl.issuer.rfc4514_string()
        )
    entries = {entry.serial_number: _revocation_date(entry) for entry in crl}
    number = _extension(crl, x509.CRLNumber)
    return entries, (number.crl_number if number is not None else None), crl


def refresh_reasons(crl, ca_cert, number, added, now, next_update_days):
    """Why the CRL at hand must be signed again; empty when it is current."""
    reasons = []
    if added:
        reasons.append("revokes %s" % ", ".join("%x" % serial for serial in sorted(added)))
    if _extension(crl, x509.AuthorityKeyIdentifier) != authority_key_identifier(ca_cert):
        reasons.append("names no authorityKeyIdentifier of this CA, so strongSwan never consults it")
    if number is None:
        reasons.append("has no cRLNumber")
    # half its period left: signed again long before a node could find it out of date
    if _next_update(crl) - now < datetime.timedelta(days=next_update_days) / 2:
        reasons.append("is valid until %s only" % _next_update(crl).isoformat())
    return reasons


def sign_crl(ca_cert, ca_key, entries, number, now, next_update_days):
    """A CRL listing `entries` ({serial: revocation date}), numbered `number`, signed now; PEM bytes."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=next_update_days))
        .add_extension(authority_key_identifier(ca_cert), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in sorted(entries):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(entries[serial]).build()
        )
    return builder.sign(ca_key, _signature_hash(ca_key)).public_bytes(serialization.Encoding.PEM)


def cluster_crl(current_pem, ca_cert_pem, ca_key_pem, serials, next_update_days, now=None):
    """The cluster CRL after revoking `serials`: entries already listed stay, with their dates.

    Returns a dict: `changed`, `reasons` (why it changed), `pem` (the CRL to write when changed, else the current
    one), `serials` (every revoked serial, sorted), `added` (the serials new in it) and `crl_number`.
    """
    if next_update_days < 1:
        raise CrlError("next_update_days must be at least 1, got %s" % next_update_days)
    now = (now or datetime.datetime.now(UTC)).replace(microsecond=0)
    ca_cert, ca_key = load_ca(ca_cert_pem, ca_key_pem)
    if current_pem:
        entries, number, crl = read_crl(current_pem, ca_cert)
    else:
        entries, number, crl = {}, None, None
    added = sorted(set(serials) - set(entries))
    if crl is None:
        reasons = ["does not exist yet"]
    else:
        reasons = refresh_reasons(crl, ca_cert, number, added, now, next_update_days)
    result = {"changed": bool(reasons), "reasons": reasons, "added": added, "crl_number": number}
    if reasons:
        entries.update(dict.fromkeys(added, now))
        result["crl_number"] = (number or 0) + 1
        result["pem"] = sign_crl(ca_cert, ca_key, entries, result["crl_number"], now, next_update_days)
    else:
        result["pem"] = current_pem
    result["serials"] = sorted(entries)
    return result


def certificate_serial(cert_pem, ca_cert_pem):
    """The serial of a certificate the CA issued; a certificate of another issuer cannot be revoked here."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError as exc:
        raise CrlError("the certificate cannot be read: %s" % exc) from exc
    issuer_key = _extension(cert, x509.AuthorityKeyIdentifier)
    if cert.issuer != ca_cert.subject or (
        issuer_key is not None and issuer_key.key_identifier != authority_key_identifier(ca_cert).key_identifier
    ):
        raise CrlError("it was not issued by this CA (issuer %s)" % cert.issuer.rfc4514_string())
    return cert.serial_number
