#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pod_subnets
short_description: Compute each node's pod subnet and cni0 gateway from the inventory
version_added: 0.1.0
description:
  - Validates the inventory of the IPsec pod network and gives every node the subnet its index owns
    in O(cluster_cidr), and the gateway address its C(cni0) bridge carries.
  - Runs on the controller and changes nothing; bad input fails before any node is touched.
  - A module of this collection because Ansible's subnet filters compute one subnet and do not validate the
    inventory as a whole (duplicate indexes, overlaps with the underlay).
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - k8s_ipsec.cni.mesh.read_only
  - k8s_ipsec.cni.mesh
"""

EXAMPLES = r"""
---
- name: Compute the pod subnets of the whole cluster
  k8s_ipsec.cni.pod_subnets:
    nodes:
      - {name: kube-node1, address: 192.168.64.10, index: 1}
      - {name: kube-node2, address: 192.168.64.20, index: 2}
  delegate_to: localhost
  run_once: true
  register: plan

- name: Show node 2's gateway
  ansible.builtin.debug:
    msg: "{{ plan.subnets['kube-node2'].gateway }}"
"""

RETURN = r"""
subnets:
  description: One entry per node, keyed by node name.
  returned: success
  type: dict
  sample:
    kube-node1: {index: 1, subnet: 10.128.1.0/24, gateway: 10.128.1.1}
    kube-node2: {index: 2, subnet: 10.128.2.0/24, gateway: 10.128.2.1}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._mesh import (
    InventoryError,
    inventory_argument_spec,
    pod_subnets,
)


def main():
    module = AnsibleModule(argument_spec=inventory_argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        subnets = pod_subnets(params["nodes"], params["cluster_cidr"], params["node_prefix"], params["service_cidr"])
    except InventoryError as exc:
        module.fail_json(msg=str(exc), problems=exc.problems)
    module.exit_json(changed=False, subnets=subnets)


if __name__ == "__main__":
    main()
