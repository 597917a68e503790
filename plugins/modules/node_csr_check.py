#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_csr_check
short_description: Check a node's certificate signing request before the cluster CA signs it
version_added: 0.1.0
description:
  - Fails unless the CSR asks for exactly the node's own identity. Its signature must match its key, its only
    subject alternative name must be C(IP:<address>), it must not ask for CA rights (basicConstraints CA:TRUE,
    keyCertSign or cRLSign), its subject CN must be the node's name, and its key must be an EC key on O(curve).
  - A node therefore cannot obtain a certificate for another node's address, nor one that could sign others.
  - Runs on the controller (delegated to localhost), where the CA key is, and changes nothing.
  - A module of this collection because M(community.crypto.openssl_csr_info) reads a CSR but does not judge it
    against the identity a node may ask for.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - k8s_ipsec.cni.mesh.read_only
options:
  csr:
    description: The CSR in PEM form, as the node produced it.
    type: str
    required: true
  name:
    description: The node's inventory name, expected as the subject CN.
    type: str
    required: true
  address:
    description: The node's underlay address from the plan, expected as the only subject alternative name.
    type: str
    required: true
  curve:
    description: The elliptic curve the node's key must use.
    type: str
    default: secp256r1
requirements:
  - cryptography
"""

EXAMPLES = r"""
---
- name: Check this node's CSR before signing it
  k8s_ipsec.cni.node_csr_check:
    csr: "{{ node_csr.csr }}"
    name: "{{ inventory_hostname }}"
    address: "{{ network_plan_node.address }}"
  delegate_to: localhost
"""

RETURN = r"""
problems:
  description: Every reason not to sign the CSR; empty on success (the module fails otherwise).
  returned: always
  type: list
  elements: str
  sample: ["it asks for the names IP:192.168.64.10, IP:192.168.64.20, expected exactly IP:192.168.64.10"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._csr import HAS_CRYPTOGRAPHY, node_csr_problems


def main():
    module = AnsibleModule(
        argument_spec=dict(
            csr=dict(type="str", required=True),
            name=dict(type="str", required=True),
            address=dict(type="str", required=True),
            curve=dict(type="str", default="secp256r1"),
        ),
        supports_check_mode=True,
    )
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"))
    params = module.params
    problems = node_csr_problems(params["csr"], params["name"], params["address"], params["curve"])
    if problems:
        module.fail_json(
            msg="refusing to sign the CSR of %s: %s" % (params["name"], "; ".join(problems)), problems=problems
        )
    module.exit_json(changed=False, problems=[])


if __name__ == "__main__":
    main()
