#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mesh_peers
short_description: Compute one node's IPsec full-mesh peers from the inventory
version_added: 0.1.0
description:
  - Validates the inventory of the IPsec pod network and returns one entry per other node of O(node) with
    the addresses and subnets of both ends, the swanctl connection name, the tunnel device name and the
    key of the pair (the XFRM interface ID, or the VTI key and xfrm mark, of its tunnel devices).
  - The key is the same at both ends of a pair, unique on each node and clear of the mark bits kube-proxy
    uses (0x4000, 0x8000). Connection and interface names are unique on each node; interface names are
    valid Linux device names of at most 15 characters whatever the host names.
  - Runs on the controller and changes nothing; bad input fails before any node is touched.
  - To plan every node at once, as the roles do, use M(k8s_ipsec.cni.mesh_plan), which validates the inventory once
    instead of once per node.
  - A module of this collection because Ansible has no planner of pairwise tunnel names and keys.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - k8s_ipsec.cni.mesh.read_only
  - k8s_ipsec.cni.mesh
  - k8s_ipsec.cni.mesh.tunnel
options:
  node:
    description: The inventory name of the node whose peers are wanted; must be one of O(nodes).
    type: str
    required: true
"""

EXAMPLES = r"""
---
- name: Compute this node's tunnels
  k8s_ipsec.cni.mesh_peers:
    nodes:
      - {name: kube-node1, address: 192.168.64.10, index: 1}
      - {name: kube-node2, address: 192.168.64.20, index: 2}
      - {name: kube-node3, address: 192.168.64.30, index: 3}
    node: "{{ inventory_hostname }}"
  delegate_to: localhost
  register: mesh
"""

RETURN = r"""
peers:
  description: One entry per other node, ordered by the peer's index.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The peer's inventory name.
      type: str
      sample: kube-node2
    index:
      description: The peer's node index.
      type: int
      sample: 2
    local_address:
      description: This node's underlay address.
      type: str
      sample: 192.168.64.10
    remote_address:
      description: The peer's underlay address.
      type: str
      sample: 192.168.64.20
    local_subnet:
      description: This node's pod subnet.
      type: str
      sample: 10.128.1.0/24
    remote_subnet:
      description: The peer's pod subnet, routed through the tunnel.
      type: str
      sample: 10.128.2.0/24
    connection:
      description: The swanctl connection (and child) name for this peer.
      type: str
      sample: peer2-kube-node2
    interface:
      description: The tunnel device for this peer (O(tunnel_prefix) and the peer's index).
      type: str
      sample: k8s-ipsec2
    key:
      description: The pair's key (XFRM interface ID, or VTI key and xfrm mark); equal at both ends.
      type: int
      sample: 2
    initiator:
      description: Whether this end starts the IKE_SA (the lower index of the pair does).
      type: bool
      sample: true
  sample:
    - name: kube-node2
      index: 2
      local_address: 192.168.64.10
      remote_address: 192.168.64.20
      local_subnet: 10.128.1.0/24
      remote_subnet: 10.128.2.0/24
      connection: peer2-kube-node2
      interface: k8s-ipsec2
      key: 3
      initiator: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._mesh import (
    InventoryError,
    inventory_argument_spec,
    mesh_peers,
    tunnel_argument_spec,
)


def main():
    argument_spec = inventory_argument_spec()
    argument_spec.update(tunnel_argument_spec())
    argument_spec["node"] = dict(type="str", required=True)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        peers = mesh_peers(
            params["nodes"],
            params["node"],
            params["cluster_cidr"],
            params["node_prefix"],
            params["service_cidr"],
            params["tunnel_prefix"],
        )
    except InventoryError as exc:
        module.fail_json(msg=str(exc), problems=exc.problems)
    module.exit_json(changed=False, peers=peers)


if __name__ == "__main__":
    main()
