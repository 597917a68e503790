# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the cluster CA signs: a node's CSR must ask for exactly that node's identity and nothing more.

No Ansible imports. Needs the `cryptography` library on the controller (community.crypto needs it too).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

try:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the module
    HAS_CRYPTOGRAPHY = False


def _key_problem(key, curve):
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return "its key is %s, expected an EC key on %s" % (type(key).__name__.lstrip("_"), curve)
    if key.curve.name != curve:
        return "its key is on curve %s, expected %s" % (key.curve.name, curve)
    return None


def node_csr_problems(csr_pem, name, address, curve="secp256r1"):
    """Every reason not to sign `csr_pem` for node `name` at underlay `address`; an empty list means sign it.

    The CSR must be well signed, carry exactly one subject alternative name, IP:<address>, ask for no CA
    rights (no basicConstraints CA:TRUE, no keyCertSign/cRLSign usage), name the node as its subject CN and
    hold an EC key on `curve`, as the nodes generate them.
    """
    problems = []
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    except ValueError as exc:
        return ["it is not a PEM certificate signing request (%s)" % exc]
    if not csr.is_signature_valid:
        problems.append("its signature does not match its key")

    expected = ipaddress.ip_address(str(address))
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = ["IP:%s" % ip for ip in san.get_values_for_type(x509.IPAddress)]
        names += ["DNS:%s" % dns for dns in san.get_values_for_type(x509.DNSName)]
        names += ["email:%s" % mail for mail in san.get_values_for_type(x509.RFC822Name)]
        names += ["URI:%s" % uri for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]
        others = len(list(san)) - len(names)
        if others:
            names.append("%d name(s) of other kinds" % others)
    except x509.ExtensionNotFound:
        names = []
    if names != ["IP:%s" % expected]:
        problems.append("it asks for the names %s, expected exactly IP:%s" % (", ".join(names) or "(none)", expected))

    try:
        constraints = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            problems.append("it asks to be a CA (basicConstraints CA:TRUE)")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = csr.extensions.get_extension_for_class(x509.KeyUsage).value
        if usage.key_cert_sign or usage.crl_sign:
            problems.append("it asks for certificate or CRL signing (keyUsage)")
    except x509.ExtensionNotFound:
        pass

    common_names = [attr.value for attr in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if common_names != [name]:
        problems.append("its subject CN is %s, expected %s" % (", ".join(common_names) or "(none)", name))

    key_problem = _key_problem(csr.public_key(), curve)
    if key_problem:
        problems.append(key_problem)
    return problems
