#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_crl
short_description: Revoke certificates in the cluster CRL, in the form strongSwan consults
version_added: 0.2.0
description:
  - Adds serials to the cluster CA's certificate revocation list and signs it again. Serials already listed stay,
    with their revocation dates; nothing is ever taken out.
  - Every CRL it writes carries an authorityKeyIdentifier (the CA's subjectKeyIdentifier) and a cRLNumber, one
    higher at each signing, as RFC 5280 requires. strongSwan looks up the CRL of a certificate by its issuer's key
    identifier, so a CRL without that extension is loaded by the nodes but never consulted.
  - It signs again when a serial is new, when the CRL at hand lacks either extension (as CRLs written by earlier
    versions of this collection do), or when less than half of O(next_update_days) is left before its next update.
    Otherwise it changes nothing.
  - Refuses a CRL that another CA signed, and a CA key that does not belong to the CA certificate.
  - Runs on the controller (delegated to localhost), where the CA key is.
  - A module of this collection because M(community.crypto.x509_crl) writes neither an authorityKeyIdentifier nor a
    cRLNumber.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  path:
    description: The CRL, in PEM form. Created when missing.
    type: path
    required: true
  ca_certificate_path:
    description: The cluster CA's certificate.
    type: path
    required: true
  ca_privatekey_path:
    description: The cluster CA's private key, unencrypted, which signs the CRL.
    type: path
    required: true
  revoked_serials:
    description: Serial numbers of certificates to revoke.
    type: list
    elements: int
    default: []
  revoked_certificates:
    description: Paths of certificates to revoke. Each must have been issued by the CA.
    type: list
    elements: path
    default: []
  next_update_days:
    description: The CRL's validity, in days from its signing.
    type: int
    default: 3650
requirements:
  - cryptography
seealso:
  - module: community.crypto.x509_crl
"""

EXAMPLES = r"""
---
- name: Revoke the certificate a node held before its renewal
  k8s_ipsec.cni.cluster_crl:
    path: "{{ strongswan_pki_dir }}/crl.pem"
    ca_certificate_path: "{{ strongswan_pki_dir }}/ca.crt"
    ca_privatekey_path: "{{ strongswan_pki_dir }}/ca.key"
    revoked_serials: [246813579]
    mode: "0644"
  delegate_to: localhost

- name: Revoke a removed node's certificate from the controller's copy
  k8s_ipsec.cni.cluster_crl:
    path: "{{ strongswan_pki_dir }}/crl.pem"
    ca_certificate_path: "{{ strongswan_pki_dir }}/ca.crt"
    ca_privatekey_path: "{{ strongswan_pki_dir }}/ca.key"
    revoked_certificates:
      - "{{ strongswan_pki_dir }}/issued/kube-node4.crt"
  delegate_to: localhost
"""

RETURN = r"""
serials:
  description: Every serial the CRL revokes, in ascending order.
  returned: success
  type: list
  elements: int
  sample: [246813579, 1357924680]
added:
  description: The serials this run revoked.
  returned: success
  type: list
  elements: int
  sample: [1357924680]
crl_number:
  description: The CRL's cRLNumber, after this run; null for a CRL at hand without one that was left as it is.
  returned: success
  type: int
  sample: 4
reasons:
  description: Why the CRL was signed again; empty when nothing changed.
  returned: success
  type: list
  elements: str
  sample: ["revokes 51d83a4b"]
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._crl import (
    HAS_CRYPTOGRAPHY,
    CrlError,
    certificate_serial,
    cluster_crl,
)


def _read(module, path, what):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        module.fail_json(msg="cannot read %s %s: %s" % (what, path, to_native(exc)))


def _serial_lines(serials):
    return "".join("%x\n" % serial for serial in serials)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            ca_certificate_path=dict(type="path", required=True),
            ca_privatekey_path=dict(type="path", required=True),
            revoked_serials=dict(type="list", elements="int", default=[]),
            revoked_certificates=dict(type="list", elements="path", default=[]),
            next_update_days=dict(type="int", default=3650),
        ),
        supports_check_mode=True,
        add_file_common_args=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"))
    params = module.params
    path = params["path"]
    ca_cert_pem = _read(module, params["ca_certificate_path"], "the CA certificate")
    ca_key_pem = _read(module, params["ca_privatekey_path"], "the CA key")
    current = _read(module, path, "the CRL") if os.path.exists(path) else None
    try:
        serials = list(params["revoked_serials"])
        for cert_path in params["revoked_certificates"]:
            try:
                serials.append(certificate_serial(_read(module, cert_path, "the certificate"), ca_cert_pem))
            except CrlError as exc:
                raise CrlError("cannot revoke %s: %s" % (cert_path, exc)) from exc
        result = cluster_crl(current, ca_cert_pem, ca_key_pem, serials, params["next_update_days"])
    except CrlError as exc:
        module.fail_json(msg="%s: %s" % (path, exc))

    pem = result["pem"]
    changed = result["changed"]
    if changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            module.fail_json(msg="%s: the folder %s does not exist" % (path, directory))
        tmp = os.path.join(module.tmpdir, "crl.pem")
        with open(tmp, "wb") as handle:
            handle.write(pem)
        module.atomic_move(tmp, path)
    file_args = module.load_file_common_arguments(params)
    if not module.check_mode or os.path.exists(path):
        changed = module.set_fs_attributes_if_different(file_args, changed)
    diff = {
        "before": _serial_lines(sorted(set(result["serials"]) - set(result["added"]))) if current else "",
        "after": _serial_lines(result["serials"]),
        "before_header": "%s (revoked serials)" % path,
        "after_header": "%s (revoked serials)" % path,
    }
    module.exit_json(
        changed=changed,
        diff=diff,
        serials=result["serials"],
        added=result["added"],
        crl_number=result["crl_number"],
        reasons=result["reasons"],
    )


if __name__ == "__main__":
    main()
