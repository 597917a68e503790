# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment:
    # The inventory options both computing modules share.
    DOCUMENTATION = r"""
options:
  nodes:
    description:
      - Every node of the cluster, normally built from group C(k8s_cluster) of the inventory, not from
        gathered facts, so the result is the same under C(--limit).
      - Each item is a mapping with C(name) (the inventory hostname), C(address) (the IPv4 underlay
        address, from C(k8s_ipsec_address), else C(ansible_host)) and C(index) (C(k8s_ipsec_node_index)).
      - Index N owns the N-th subnet of O(cluster_cidr); indexes are given, never derived, so adding or
        removing a node never renumbers another.
      - The whole list is validated at once; every problem is reported with its host and value.
    type: list
    elements: dict
    required: true
  cluster_cidr:
    description: The IPv4 pod network of the whole cluster.
    type: str
    default: 10.128.0.0/16
  node_prefix:
    description: Prefix length of each node's pod subnet; must be longer than O(cluster_cidr)'s and at most 30.
    type: int
    default: 24
  service_cidr:
    description: The Kubernetes service network; must not overlap O(cluster_cidr).
    type: str
    default: 10.96.0.0/12
"""

    # The option of the modules that name tunnel devices.
    TUNNEL = r"""
options:
  tunnel_prefix:
    description:
      - Tunnel devices are named this prefix followed by the peer's index, for example C(k8s-ipsec2).
      - It is this collection's own prefix, so removing the tunnels of nodes that left never touches an
        operator's C(vti*) or C(ipsec*) devices. It must start with a letter, not end with a digit, and
        leave room for the largest index within 15 characters.
    type: str
    default: k8s-ipsec
"""

    # What every module of this collection is: read-only, so check mode is full support and there is no diff.
    READ_ONLY = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""
