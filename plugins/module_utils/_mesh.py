# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure planning logic for the IPsec pod network: per-node subnets and the full-mesh peer list.

No Ansible imports: the modules are thin shells over these functions, and the unit tests call them directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

DEFAULT_CLUSTER_CIDR = "10.128.0.0/16"
DEFAULT_NODE_PREFIX = 24
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"

# kube-proxy marks packets with 0x4000 (masquerade) and 0x8000 (drop); a pair's key becomes the xfrm mark of its SAs
# with VTI devices (the if_id with XFRM interfaces), so those two bits are kept clear by spreading the pair number
# around them.
KUBE_PROXY_MARK_BITS = 0x4000 | 0x8000
_LOW_KEY_BITS = 14
_MAX_PAIR_NUMBER = (1 << 30) - 1

# Tunnel devices are named <prefix><peer index>. The prefix is this project's own, so the sweep of stale tunnels
# never touches an operator's vti*/ipsec* devices.
DEFAULT_TUNNEL_PREFIX = "k8s-ipsec"
_TUNNEL_PREFIX = re.compile(r"[A-Za-z](?:[A-Za-z0-9_-]*[A-Za-z_-])?")
_IFNAMSIZ = 15
DEFAULT_UNDERLAY_MTU = 1500
# ESP in tunnel mode: outer IPv4 20, ESP header 8, IV 8, padding and trailer up to 5, AES-GCM ICV 16, UDP
# encapsulation 8 behind NAT; rounded up for headroom.
DEFAULT_IPSEC_OVERHEAD = 80
# The smallest datagram every IPv4 host must accept: a pod MTU below it breaks ordinary traffic.
_MIN_POD_MTU = 576
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
# A node's name becomes file names on the controller (its issued certificate), a certificate subject, swanctl and
# kubeadm configuration and command lines: DNS-label-like, so it can never climb out of a folder or split a word.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_MAX_NODE_NAME = 63


def inventory_argument_spec():
    """The options the computing modules share (a plain dict: AnsibleModule's argument_spec format)."""
    return dict(
        nodes=dict(type="list", elements="dict", required=True),
        cluster_cidr=dict(type="str", default=DEFAULT_CLUSTER_CIDR),
        node_prefix=dict(type="int", default=DEFAULT_NODE_PREFIX),
        service_cidr=dict(type="str", default=DEFAULT_SERVICE_CIDR),
    )


def tunnel_argument_spec():
    """The option of the modules that name tunnel devices."""
    return dict(tunnel_prefix=dict(type="str", default=DEFAULT_TUNNEL_PREFIX))


class InventoryError(ValueError):
    """The inventory cannot describe a valid mesh. The message names every offending host and value."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("invalid k8s_ipsec inventory: " + "; ".join(self.problems))


class Node:
    __slots__ = ("name", "address", "index")

    def __init__(self, name, address, index):
        self.name = name
        self.address = address
        self.index = index


def _parse_index(raw):
    """Return an int index, or None when raw is not a whole number (booleans and floats included)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw.strip()):
        return int(raw.strip())
    return None


def _parse_network(value, what, problems):
    try:
        network = ipaddress.ip_network(str(value), strict=True)
    except ValueError as exc:
        problems.append("%s %r is not a valid network in CIDR notation (%s)" % (what, value, exc))
        return None
    if network.version != 4:
        problems.append("%s %r must be IPv4: the tunnels carry IPv4" % (what, value))
        return None
    return network


def _parse_prefix(node_prefix, cluster, problems):
    prefix = _parse_index(node_prefix)
    if prefix is None:
        problems.append("node_prefix %r is not an integer" % (node_prefix,))
        return None
    if cluster is not None and not cluster.prefixlen < prefix <= 30:
        problems.append(
            "node_prefix /%d must be longer than the cluster CIDR /%d and at most /30" % (prefix, cluster.prefixlen)
        )
        return None
    return prefix


def _check_tunnel_prefix(tunnel_prefix, problems):
    prefix = "" if tunnel_prefix is None else str(tunnel_prefix)
    if not _TUNNEL_PREFIX.fullmatch(prefix) or len(prefix) >= _IFNAMSIZ:
        problems.append(
            "tunnel_prefix %r must start with a letter, hold only letters, digits, '_' and '-', not end with a digit "
            "and leave room for the index in %d characters" % (tunnel_prefix, _IFNAMSIZ)
        )
        return None
    return prefix


def validate_nodes(
    nodes,
    cluster_cidr=DEFAULT_CLUSTER_CIDR,
    node_prefix=DEFAULT_NODE_PREFIX,
    service_cidr=DEFAULT_SERVICE_CIDR,
    tunnel_prefix=DEFAULT_TUNNEL_PREFIX,
    problems=None,
    controller_addresses=(),
):
    """Check the whole inventory at once; return (nodes, cluster network, node prefix) or raise InventoryError.

    Every problem found is reported, each naming its host and value, so one run tells the operator
    everything to fix. `problems` may carry problems the caller found in its own options. `controller_addresses`,
    where known, must lie outside the cluster and service networks too: the nodes' rules drop such sources.
    """
    problems = list(problems or [])
    cluster = _parse_network(cluster_cidr, "cluster_cidr", problems)
    service = _parse_network(service_cidr, "service_cidr", problems)
    prefix = _parse_prefix(node_prefix, cluster, problems)
    device_prefix = _check_tunnel_prefix(tunnel_prefix, problems)
    if cluster is not None and service is not None and cluster.overlaps(service):
        problems.append("cluster_cidr %s overlaps service_cidr %s" % (cluster, service))
    capacity = 1 << (prefix - cluster.prefixlen) if cluster is not None and prefix is not None else None
    for raw in controller_addresses or ():
        problems.extend(_controller_problems(raw, cluster, service))

    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise InventoryError(problems + ["no nodes: group k8s_cluster is empty or missing"])

    parsed = []
    by_name, by_address, by_index = {}, {}, {}
    for position, raw in enumerate(nodes):
        if not isinstance(raw, dict):
            problems.append("node #%d is not a mapping with name, address and index: %r" % (position, raw))
            continue
        name = raw.get("name")
        name = "" if name is None else str(name).strip()
        if not name:
            problems.append("node #%d has an empty name" % position)
            continue
        if len(name) > _MAX_NODE_NAME or not _NODE_NAME.match(name):
            problems.append(
                "host %r: a node name must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or "
                "digit (it names files, certificates and configuration)" % (name, _MAX_NODE_NAME)
            )
            continue
        if name.lower() in by_name:
            other = by_name[name.lower()]
            problems.append(
                "host %s is listed twice" % name
                if other == name
                else "hosts %s and %s differ only in case" % (other, name)
            )
            continue
        by_name[name.lower()] = name

        address_raw = raw.get("address")
        address = None
        try:
            address = ipaddress.ip_address(str(address_raw).strip())
        except ValueError:
            problems.append(
                "host %s: address %r (ansible_host or k8s_ipsec_address) is not an IP address" % (name, address_raw)
            )
        if address is not None:
            if address.version != 4:
                problems.append("host %s: address %s must be IPv4 for the tunnels" % (name, address))
            elif address.is_loopback or address.is_multicast or address.is_unspecified or address.is_reserved:
                problems.append(
                    "host %s: underlay address %s cannot be a node's (loopback, multicast, unspecified "
                    "or reserved)" % (name, address)
                )
            elif cluster is not None and address in cluster:
                problems.append("host %s: underlay address %s lies inside cluster_cidr %s" % (name, address, cluster))
            elif service is not None and address in service:
                problems.append("host %s: underlay address %s lies inside service_cidr %s" % (name, address, service))
            elif address in by_address:
                problems.append("hosts %s and %s share the address %s" % (by_address[address], name, address))
            else:
                by_address[address] = name

        index_raw = raw.get("index")
        index = _parse_index(index_raw)
        if index_raw is None:
            problems.append("host %s has no k8s_ipsec_node_index" % name)
        elif index is None:
            problems.append("host %s: k8s_ipsec_node_index %r is not an integer" % (name, index_raw))
        elif index < 0:
            problems.append("host %s: k8s_ipsec_node_index %d is negative" % (name, index))
        elif capacity is not None and index >= capacity:
            problems.append(
                "host %s: k8s_ipsec_node_index %d does not fit: cluster_cidr %s holds %d /%d subnets (0..%d)"
                % (name, index, cluster, capacity, prefix, capacity - 1)
            )
        elif index in by_index:
            problems.append("hosts %s and %s share k8s_ipsec_node_index %d" % (by_index[index], name, index))
        else:
            by_index[index] = name
            if _pair_number(index, index + 1) > _MAX_PAIR_NUMBER:
                problems.append(
                    "host %s: k8s_ipsec_node_index %d is too large for the tunnel key space" % (name, index)
                )
            elif device_prefix is not None and len(interface_name(device_prefix, index)) > _IFNAMSIZ:
                problems.append(
                    "host %s: k8s_ipsec_node_index %d gives the tunnel device name %s, longer than %d characters "
                    "(shorten tunnel_prefix)" % (name, index, interface_name(device_prefix, index), _IFNAMSIZ)
                )
        parsed.append(Node(name, address, index))

    if problems:
        raise InventoryError(problems)
    return parsed, cluster, prefix


def _controller_problems(raw, cluster, service):
    try:
        address = ipaddress.ip_address(str(raw).strip())
    except ValueError:
        return ["controller address %r is not an IP address" % (raw,)]
    for network, what in ((cluster, "cluster_cidr"), (service, "service_cidr")):
        if network is not None and address.version == network.version and address in network:
            return [
                "controller address %s lies inside %s %s: the nodes would drop its traffic" % (address, what, network)
            ]
    return []


def _subnet(cluster, prefix, index):
    size = 1 << (32 - prefix)
    return ipaddress.ip_network((int(cluster.network_address) + index * size, prefix))


def pod_subnets(
    nodes, cluster_cidr=DEFAULT_CLUSTER_CIDR, node_prefix=DEFAULT_NODE_PREFIX, service_cidr=DEFAULT_SERVICE_CIDR
):
    """Map each node name to {index, subnet, gateway}: index N owns the N-th /node_prefix of the cluster CIDR."""
    plan = plan_mesh(nodes, cluster_cidr, node_prefix, service_cidr)
    return {name: {key: facts[key] for key in ("index", "subnet", "gateway")} for name, facts in plan.facts.items()}


def _pair_number(a, b):
    """A distinct positive integer for each unordered pair of distinct indexes (triangular numbering)."""
    low, high = min(a, b), max(a, b)
    return high * (high - 1) // 2 + low + 1


def pair_key(a, b):
    """The key of the pair {a, b}, its XFRM interface ID or VTI key and mark: equal at both ends, unique per pair,
    kube-proxy bits clear."""
    number = _pair_number(a, b)
    low = number & ((1 << _LOW_KEY_BITS) - 1)
    high = number >> _LOW_KEY_BITS
    return low | (high << (_LOW_KEY_BITS + 2))


def interface_name(tunnel_prefix, peer_index):
    """Tunnel device for the peer: unique per node because indexes are, and short whatever the host names."""
    return "%s%d" % (tunnel_prefix, peer_index)


def connection_name(peer_name, peer_index):
    """swanctl connection name: readable, limited to [A-Za-z0-9_-], unique per node through the peer index."""
    safe = _UNSAFE_NAME_CHARS.sub("_", peer_name)[:40]
    return "peer%d-%s" % (peer_index, safe)


def mesh_peers(
    nodes,
    node,
    cluster_cidr=DEFAULT_CLUSTER_CIDR,
    node_prefix=DEFAULT_NODE_PREFIX,
    service_cidr=DEFAULT_SERVICE_CIDR,
    tunnel_prefix=DEFAULT_TUNNEL_PREFIX,
):
    """The tunnels `node` needs: one entry per other node, ordered by the peer's index."""
    return peers_of(plan_mesh(nodes, cluster_cidr, node_prefix, service_cidr, tunnel_prefix), node)


def peers_of(plan, node):
    """mesh_peers over a plan from plan_mesh: validate once, then list any node's peers in time linear in N."""
    local = plan.by_name.get(node)
    if local is None:
        raise InventoryError(["node %r is not in the inventory (known: %s)" % (node, ", ".join(sorted(plan.by_name)))])
    me = plan.facts[local.name]
    peers = []
    for peer in plan.ordered:
        if peer is local:
            continue
        other = plan.facts[peer.name]
        peers.append(
            {
                "name": peer.name,
                "index": peer.index,
                "local_address": me["address"],
                "remote_address": other["address"],
                "local_subnet": me["subnet"],
                "remote_subnet": other["subnet"],
                "connection": other["connection"],
                "interface": other["interface"],
                "key": pair_key(local.index, peer.index),
                # Exactly one end of a pair starts the tunnel, so a pair never holds two IKE_SAs.
                "initiator": local.index < peer.index,
            }
        )
    return peers


class _Plan:
    """A validated inventory with what every peer entry repeats computed once per node, not once per pair."""

    def __init__(self, parsed, cluster, prefix, tunnel_prefix):
        self.cluster = cluster
        self.prefix = prefix
        self.tunnel_prefix = tunnel_prefix
        self.ordered = sorted(parsed, key=lambda n: n.index)
        self.by_name = {n.name: n for n in parsed}
        self.facts = {}
        for n in parsed:
            subnet = _subnet(cluster, prefix, n.index)
            self.facts[n.name] = {
                "name": n.name,
                "index": n.index,
                "address": str(n.address),
                "subnet": str(subnet),
                "gateway": str(subnet.network_address + 1),
                "prefix_length": prefix,
                "connection": connection_name(n.name, n.index),
                "interface": interface_name(tunnel_prefix, n.index),
            }


def plan_mesh(
    nodes,
    cluster_cidr=DEFAULT_CLUSTER_CIDR,
    node_prefix=DEFAULT_NODE_PREFIX,
    service_cidr=DEFAULT_SERVICE_CIDR,
    tunnel_prefix=DEFAULT_TUNNEL_PREFIX,
    problems=None,
    controller_addresses=(),
):
    """Validate the inventory once and precompute what every peer entry repeats."""
    parsed, cluster, prefix = validate_nodes(
        nodes, cluster_cidr, node_prefix, service_cidr, tunnel_prefix, problems, controller_addresses
    )
    return _Plan(parsed, cluster, prefix, tunnel_prefix)


def _pod_mtu(underlay_mtu, ipsec_overhead, problems):
    underlay, overhead = _parse_index(underlay_mtu), _parse_index(ipsec_overhead)
    if underlay is None or overhead is None or overhead < 0:
        problems.append(
            "underlay_mtu %r and ipsec_overhead %r must be whole numbers, the overhead not negative"
            % (underlay_mtu, ipsec_overhead)
        )
        return None
    if underlay - overhead < _MIN_POD_MTU:
        problems.append(
            "underlay_mtu %d minus ipsec_overhead %d leaves pods an MTU of %d, below %d"
            % (underlay, overhead, underlay - overhead, _MIN_POD_MTU)
        )
        return None
    return underlay - overhead


_NODE_KEYS = ("name", "index", "address", "subnet", "gateway", "prefix_length")


def network_plan(
    nodes,
    cluster_cidr=DEFAULT_CLUSTER_CIDR,
    node_prefix=DEFAULT_NODE_PREFIX,
    service_cidr=DEFAULT_SERVICE_CIDR,
    tunnel_prefix=DEFAULT_TUNNEL_PREFIX,
    underlay_mtu=DEFAULT_UNDERLAY_MTU,
    ipsec_overhead=DEFAULT_IPSEC_OVERHEAD,
    controller_addresses=(),
):
    """The whole plan from one validation: cluster-wide values, every node, every node's peers.

    This is the contract the roles read: nothing they need is derived again in a template.
    """
    problems = []
    mtu = _pod_mtu(underlay_mtu, ipsec_overhead, problems)
    plan = plan_mesh(nodes, cluster_cidr, node_prefix, service_cidr, tunnel_prefix, problems, controller_addresses)
    return {
        "cluster_cidr": str(plan.cluster),
        "service_cidr": str(ipaddress.ip_network(str(service_cidr))),
        "node_prefix": plan.prefix,
        "tunnel_prefix": plan.tunnel_prefix,
        "mtu": mtu,
        "nodes": {name: {key: facts[key] for key in _NODE_KEYS} for name, facts in plan.facts.items()},
        "peers": {node.name: peers_of(plan, node.name) for node in plan.ordered},
    }
