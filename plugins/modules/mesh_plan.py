#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mesh_plan
short_description: Compute the whole IPsec pod network plan from the inventory in one run
version_added: 0.1.0
description:
  - Validates the inventory of the IPsec pod network once and returns everything the roles need about every
    node, namely its index, underlay address, pod subnet, gateway, prefix length and tunnels (as
    M(k8s_ipsec.cni.mesh_peers) lists them), and the cluster-wide values (networks, pod MTU, tunnel device
    prefix).
  - One run on the controller replaces one M(k8s_ipsec.cni.mesh_peers) run per node; its time grows with the
    number of tunnels, not with the number of module runs.
  - Runs on the controller and changes nothing; bad input fails before any node is touched, with every problem
    named by host and value.
  - A module of this collection because Ansible has no planner of subnets and pairwise tunnel keys; it is plain
    Python on the controller, unit-tested without Ansible.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - k8s_ipsec.cni.mesh.read_only
  - k8s_ipsec.cni.mesh
  - k8s_ipsec.cni.mesh.tunnel
options:
  underlay_mtu:
    description: MTU of the network between the nodes.
    type: int
    default: 1500
  ipsec_overhead:
    description:
      - Bytes reserved for ESP tunnel encapsulation; pods, the bridge and the tunnels get O(underlay_mtu) minus this.
      - The result must be at least 576.
    type: int
    default: 80
  controller_addresses:
    description:
      - Addresses the controller reaches the nodes from, where known. Each must lie outside O(cluster_cidr) and
        O(service_cidr), since the nodes' rules drop such sources arriving from the underlay.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
---
- name: Plan the whole pod network once
  k8s_ipsec.cni.mesh_plan:
    nodes:
      - {name: kube-node1, address: 192.168.64.10, index: 1}
      - {name: kube-node2, address: 192.168.64.20, index: 2}
      - {name: kube-node3, address: 192.168.64.30, index: 3}
  delegate_to: localhost
  run_once: true
  register: plan

- name: Show node 2's tunnels
  ansible.builtin.debug:
    msg: "{{ plan.plan.peers['kube-node2'] | map(attribute='interface') }}"
"""

RETURN = r"""
plan:
  description: The pod network plan.
  returned: success
  type: dict
  contains:
    cluster_cidr:
      description: The cluster's pod network.
      type: str
      sample: 10.128.0.0/16
    service_cidr:
      description: The Kubernetes service network.
      type: str
      sample: 10.96.0.0/12
    node_prefix:
      description: Prefix length of every node's pod subnet.
      type: int
      sample: 24
    tunnel_prefix:
      description: Prefix of every tunnel device name.
      type: str
      sample: k8s-ipsec
    mtu:
      description: MTU of the pods, the bridge and the tunnel devices.
      type: int
      sample: 1420
    nodes:
      description: Every node by inventory name.
      type: dict
      contains:
        name:
          description: The inventory name.
          type: str
        index:
          description: The node index.
          type: int
        address:
          description: The underlay address.
          type: str
        subnet:
          description: The node's pod subnet.
          type: str
        gateway:
          description: The first address of the subnet, carried by the node's bridge.
          type: str
        prefix_length:
          description: Prefix length of the subnet.
          type: int
      sample:
        kube-node1: {name: kube-node1, index: 1, address: 192.168.64.10, subnet: 10.128.1.0/24,
                     gateway: 10.128.1.1, prefix_length: 24}
    peers:
      description:
        - Every node's tunnels by inventory name, each list as M(k8s_ipsec.cni.mesh_peers) returns it for that node.
      type: dict
      sample:
        kube-node1:
          - name: kube-node2
            index: 2
            local_address: 192.168.64.10
            remote_address: 192.168.64.20
            local_subnet: 10.128.1.0/24
            remote_subnet: 10.128.2.0/24
            connection: peer2-kube-node2
            interface: k8s-ipsec2
            key: 2
            initiator: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._mesh import (
    DEFAULT_IPSEC_OVERHEAD,
    DEFAULT_UNDERLAY_MTU,
    InventoryError,
    inventory_argument_spec,
    network_plan,
    tunnel_argument_spec,
)


def main():
    argument_spec = inventory_argument_spec()
    argument_spec.update(tunnel_argument_spec())
    argument_spec.update(
        underlay_mtu=dict(type="int", default=DEFAULT_UNDERLAY_MTU),
        ipsec_overhead=dict(type="int", default=DEFAULT_IPSEC_OVERHEAD),
        controller_addresses=dict(type="list", elements="str", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        plan = network_plan(
            params["nodes"],
            params["cluster_cidr"],
            params["node_prefix"],
            params["service_cidr"],
            params["tunnel_prefix"],
            params["underlay_mtu"],
            params["ipsec_overhead"],
            params["controller_addresses"],
        )
    except InventoryError as exc:
        module.fail_json(msg=str(exc), problems=exc.problems)
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
