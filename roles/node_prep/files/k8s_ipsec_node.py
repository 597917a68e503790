# Managed by k8s_ipsec.cni (role node_prep): the node side of the IPsec pod network, installed as
# /usr/local/sbin/k8s-ipsec-node. One program for the units, the guard, the keeper and reset.
"""k8s-ipsec-node: the pod bridge, the tunnel devices, the firewall, the guard and the keeper of one node.

usage: k8s-ipsec-node cni0|tunnels|firewall apply|check|remove
       k8s-ipsec-node firewall hold|release
       k8s-ipsec-node guard run|check
       k8s-ipsec-node keeper keep|prune|creds|reauth [<peer address>]
       k8s-ipsec-node metrics show

Links, addresses and routes are read and written through netlink (pyroute2), the rules through the nftables JSON
API (python3-nftables), strongSwan's state through `swanctl --raw` and the collection's vici parser. Every read
takes each kind of kernel object once and compares with dictionaries, so apply and check are linear in peers.
check prints one line per difference from the settings and exits 1 when there is any. With K8S_IPSEC_METRICS_FILE
set, the guard also writes the node's metrics there for node_exporter's textfile collector (docs/metrics.md);
metrics show prints them.
"""

import contextlib
import errno
import fcntl
import functools
import hashlib
import ipaddress
import json
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import time

CNI0_CONFIG = "/etc/default/k8s-ipsec-cni0"
TUNNELS_CONFIG = "/etc/default/k8s-ipsec-tunnels"
FIREWALL_CONFIG = "/etc/default/k8s-ipsec-firewall"
# Where the roles install the collection's pure-Python helpers the node uses (the swanctl --raw parser, metrics).
LIB_DIR = "/usr/local/lib/k8s-ipsec"
# What the guard and the keeper counted, for the metrics: {key: count} in JSON, gone at reboot like the counters of
# the kernel.
STATE_DIR = "/run/k8s-ipsec"
# The node's certificate and the cluster CA, under /etc/swanctl, for the metrics.
CERTIFICATES = {"node": "x509/k8s-ipsec.crt", "ca": "x509ca/k8s-ipsec-ca.crt"}
# The CNI results cache libcni (containerd, CRI-O) writes: the pods' host-side interfaces, by container.
CNI_CACHE_DIR = "/var/lib/cni/results"
NFT_TABLE = "k8s-ipsec"
FORWARD_CHAIN = "K8S-IPSEC-FORWARD"
# The comment on our jump in iptables' FORWARD: the jump of earlier versions had none and stood first.
FORWARD_JUMP_COMMENT = "k8s-ipsec"
IKE_HOLD_COMMENT = "k8s-ipsec-ike-hold"
# Chains of the shell firewall this program replaced, removed on the first apply: table, hook chain, chain.
LEGACY_CHAINS = (
    ("raw", "PREROUTING", "K8S-IPSEC-INBOUND"),
    ("mangle", "POSTROUTING", "K8S-IPSEC-FAILCLOSED"),
    ("nat", "POSTROUTING", "K8S-IPSEC-MASQUERADE"),
)
# The CNI bridge plugin's macspoofchk (the conflist turns it on) keeps its per-pod chains in this table and leaves
# the table, with an empty base chain, after the last pod: firewall remove takes it away when nothing else is in it.
MACSPOOFCHK_TABLE = ("bridge", "nat")
AF_INET = socket.AF_INET
IFF_UP = 0x1
RT_TABLE_MAIN = 254


class SettingsError(Exception):
    """A settings file that cannot be used: the message names the file and the field."""


class Failure(Exception):
    """An action that did not succeed: the message says what to do next."""


# ---------------------------------------------------------------- settings


_ASSIGNMENT = re.compile(r"([A-Z][A-Z0-9_]*)=(.*)")


def parse_settings(text, path):
    """KEY=value lines as the roles render them (values may be single-quoted over several lines); comments skipped."""
    values, lines, number = {}, text.split("\n"), 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if not line or line.startswith("#"):
            continue
        match = _ASSIGNMENT.fullmatch(line)
        if not match:
            raise SettingsError("%s, line %d: not a KEY=value line: %r" % (path, number, line))
        key, value = match.groups()
        if value.startswith("'"):
            value = value[1:]
            while "'" not in value:
                if number >= len(lines):
                    raise SettingsError("%s: the quoted value of %s is not closed" % (path, key))
                value += "\n" + lines[number]
                number += 1
            value, rest = value.split("'", 1)
            if rest.strip():
                raise SettingsError("%s: %s has text after its closing quote" % (path, key))
        values[key] = value
    return values


def read_settings(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_settings(handle.read(), path)
    except OSError as err:
        raise SettingsError("%s: cannot read the settings: %s" % (path, err.strerror)) from None


def _field(values, path, key, convert=str, default=None):
    if key not in values or values[key] == "":
        if default is not None:
            return default
        raise SettingsError("%s: %s is missing" % (path, key))
    try:
        return convert(values[key])
    except ValueError as err:
        raise SettingsError("%s: %s=%r is not valid: %s" % (path, key, values[key], err)) from None


def _mtu(text):
    mtu = int(text)
    if not 576 <= mtu <= 65535:
        raise ValueError("an MTU is 576 to 65535")
    return mtu


def _network(text):
    return ipaddress.IPv4Network(text, strict=True)


def _ifname(text):
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", text):
        raise ValueError("not an interface name")
    return text


def _yes_no(text):
    if text not in ("yes", "no"):
        raise ValueError("use yes or no")
    return text == "yes"


def cni0_settings(path):
    values = read_settings(path)
    address = _field(values, path, "ADDRESS", ipaddress.IPv4Interface)
    return {
        "bridge": _field(values, path, "BRIDGE", _ifname),
        "address": address,
        "mtu": _field(values, path, "MTU", _mtu),
        "cluster_cidr": _field(values, path, "CLUSTER_CIDR", _network),
    }


def parse_peers(text, prefix, path):
    """The PEERS lines: device local-address remote-address key remote-subnet connection role."""
    peers = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = "%s: PEERS line %d (%r)" % (path, number, line.strip())
        if len(fields) != 7:
            raise SettingsError("%s: 7 fields expected (device local remote key subnet connection role)" % where)
        device, local, remote, key, subnet, connection, role = fields
        if not re.fullmatch(re.escape(prefix) + r"[0-9]+", device):
            raise SettingsError("%s: the device is not %s<number>" % (where, prefix))
        try:
            peer = {
                "device": device,
                "local": ipaddress.IPv4Address(local),
                "remote": ipaddress.IPv4Address(remote),
                "key": int(key),
                "subnet": ipaddress.IPv4Network(subnet),
                "connection": connection,
                "initiator": role == "initiator",
            }
        except ValueError as err:
            raise SettingsError("%s: %s" % (where, err)) from None
        if not 0 < peer["key"] < 2**32:
            raise SettingsError("%s: the key is 1 to 4294967295" % where)
        if role not in ("initiator", "responder"):
            raise SettingsError("%s: the role is initiator or responder" % where)
        peers.append(peer)
    seen = set()
    for peer in peers:
        for field in ("device", "key", "subnet", "connection"):
            if (field, peer[field]) in seen:
                raise SettingsError("%s: PEERS: %s %s appears twice" % (path, field, peer[field]))
            seen.add((field, peer[field]))
    return peers


def tunnels_settings(path):
    values = read_settings(path)
    prefix = _field(values, path, "PREFIX", _ifname)
    tunnel_type = values.get("TYPE") or "vti"  # settings written before TYPE existed describe VTI devices
    if tunnel_type not in ("xfrm", "vti"):
        raise SettingsError("%s: TYPE=%s: use xfrm or vti" % (path, tunnel_type))
    return {
        "node": values.get("NODE") or socket.gethostname(),
        "index": values.get("INDEX", ""),
        "prefix": prefix,
        "type": tunnel_type,
        "mtu": _field(values, path, "MTU", _mtu),
        "source": _field(values, path, "SOURCE", ipaddress.IPv4Address),
        "peers": parse_peers(values.get("PEERS", ""), prefix, path),
    }


def firewall_settings(path):
    values = read_settings(path)
    tunnels = _field(values, path, "TUNNELS", str)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,14}\+", tunnels):
        raise SettingsError("%s: TUNNELS=%r: the tunnel prefix followed by +" % (path, tunnels))
    pod_subnet = _field(values, path, "POD_SUBNET", _network)
    settings = {
        "bridge": _field(values, path, "BRIDGE", _ifname),
        "tunnel_prefix": tunnels[:-1],
        "cluster_cidr": _field(values, path, "CLUSTER_CIDR", _network),
        "service_cidr": _field(values, path, "SERVICE_CIDR", _network),
        "pod_subnet": pod_subnet,
        "gateway": _field(values, path, "GATEWAY", ipaddress.IPv4Address, default=next(pod_subnet.hosts())),
        "masquerade": _field(values, path, "MASQUERADE", _yes_no),
        "peers": [],
    }
    # Without the tunnel settings no peer's subnet is admitted yet: its traffic is dropped, never let through.
    peers_file = values.get("PEERS_FILE")
    if peers_file and os.path.exists(peers_file):
        settings["peers"] = parse_peers(
            read_settings(peers_file).get("PEERS", ""), settings["tunnel_prefix"], peers_file
        )
    return settings


# ---------------------------------------------------------------- netlink


def sysctl_path(family, device, name):
    return "/proc/sys/net/%s/conf/%s/%s" % (family, device, name)


def read_sysctl(path):
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def write_sysctl(path, value):
    """Writes a sysctl unless it already holds the value. Without IPv6 in the kernel, IPv6 is off already."""
    current = read_sysctl(path)
    if current == value or (current is None and "/ipv6/" in path):
        return
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value)


def ipv6_off(device):
    """What is wrong with IPv6 on a device of ours: it must be disabled (no address, no router advertisements)."""
    value = read_sysctl(sysctl_path("ipv6", device, "disable_ipv6"))
    if value not in (None, "1"):
        return ["%s has IPv6 enabled" % device]
    return []


# Netlink dumps, read with the standard library's AF_NETLINK socket: the checks compare a handful of attributes per
# object, and decoding every attribute of every link into pyroute2's message objects costs about 1 ms per link on a
# real CPU and 50 times that on the lab's emulated one (measured), which would make a check at 1,000 peers take
# minutes. pyroute2 makes every change and delivers the events.
NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_GETROUTE = 16, 18, 20, 22, 24, 26
_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")
_U32 = struct.Struct("=I")
_BE32 = struct.Struct(">I")


def _attrs(data, offset, end):
    """{type: (start, end)} of the netlink attributes in data[offset:end] (nested flag bits masked)."""
    found = {}
    while offset + 4 <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = (offset + 4, offset + length)
        offset += (length + 3) & ~3
    return found


def netlink_dump(msg_type, header):
    """The payloads (bytes, start, end) of every answer to one dump request."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        request = _NLMSGHDR.pack(_NLMSGHDR.size + len(header), msg_type, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + header
        sock.send(request)
        while True:
            data = sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind = _NLMSGHDR.unpack_from(data, offset)[:2]
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
                    raise OSError(-code, "netlink dump %d: %s" % (msg_type, os.strerror(-code)))
                yield data, offset + _NLMSGHDR.size, offset + length
                offset += (length + 3) & ~3


def _string(data, span):
    return data[span[0] : span[1]].split(b"\0", 1)[0].decode()


def _address(data, span):
    return socket.inet_ntoa(data[span[0] : span[0] + 4])


def _parse_link(data, start, end):
    index, flags = _IFINFOMSG.unpack_from(data, start)[2:4]
    attrs = _attrs(data, start + _IFINFOMSG.size, end)
    link = {"index": index, "name": None, "kind": None, "up": bool(flags & IFF_UP), "mtu": None, "master": None}
    if 3 in attrs:  # IFLA_IFNAME
        link["name"] = _string(data, attrs[3])
    if 4 in attrs:  # IFLA_MTU
        link["mtu"] = _U32.unpack_from(data, attrs[4][0])[0]
    if 10 in attrs:  # IFLA_MASTER
        link["master"] = _U32.unpack_from(data, attrs[10][0])[0]
    mac = attrs.get(1)  # IFLA_ADDRESS
    link["mac"] = ":".join("%02x" % b for b in data[mac[0] : mac[1]]) if mac else None
    if 18 in attrs:  # IFLA_LINKINFO: IFLA_INFO_KIND, IFLA_INFO_DATA
        info = _attrs(data, *attrs[18])
        link["kind"] = _string(data, info[1]) if 1 in info else None
        extra = _attrs(data, *info[2]) if 2 in info else {}
        if link["kind"] == "xfrm":
            link["if_id"] = _U32.unpack_from(data, extra[2][0])[0] if 2 in extra else None
        elif link["kind"] == "vti":
            link["vti"] = (
                _address(data, extra[4]) if 4 in extra else None,  # IFLA_VTI_LOCAL
                _address(data, extra[5]) if 5 in extra else None,  # IFLA_VTI_REMOTE
                _BE32.unpack_from(data, extra[2][0])[0] if 2 in extra else None,  # IFLA_VTI_IKEY
                _BE32.unpack_from(data, extra[3][0])[0] if 3 in extra else None,  # IFLA_VTI_OKEY
            )
    return link


class Kernel:
    """The node's links, IPv4 addresses and main-table IPv4 routes, each read with one netlink dump."""

    def __init__(self):
        self.links, self.by_index = {}, {}
        for data, start, end in netlink_dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            link = _parse_link(data, start, end)
            self.links[link["name"]] = link
            self.by_index[link["index"]] = link
        self.addresses = set()
        for data, start, end in netlink_dump(RTM_GETADDR, _IFADDRMSG.pack(AF_INET, 0, 0, 0, 0)):
            family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, start)
            attrs = _attrs(data, start + _IFADDRMSG.size, end)
            span = attrs.get(2) or attrs.get(1)  # IFA_LOCAL, else IFA_ADDRESS
            if family == AF_INET and span:
                self.addresses.add((index, _address(data, span), prefixlen))
        self.routes = {}
        for data, start, end in netlink_dump(RTM_GETROUTE, _RTMSG.pack(AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            family, dst_len, _src_len, _tos, table, _protocol, _scope, kind, _flags = _RTMSG.unpack_from(data, start)
            attrs = _attrs(data, start + _RTMSG.size, end)
            if 15 in attrs:  # RTA_TABLE: the table's full number
                table = _U32.unpack_from(data, attrs[15][0])[0]
            if family != AF_INET or table != RT_TABLE_MAIN:
                continue
            dst = "%s/%d" % (_address(data, attrs[1]) if 1 in attrs else "0.0.0.0", dst_len)  # RTA_DST
            self.routes.setdefault(dst, []).append(
                {
                    "type": kind,
                    "oif": _U32.unpack_from(data, attrs[4][0])[0] if 4 in attrs else None,  # RTA_OIF
                    "src": _address(data, attrs[7]) if 7 in attrs else None,  # RTA_PREFSRC
                }
            )


def link_index(ipr, name):
    """One link's index, asked by name (pyroute2's link_lookup would read every link)."""
    return ipr.link("get", ifname=name)[0]["index"]


def open_netlink():
    from pyroute2 import IPRoute  # pylint: disable=import-outside-toplevel

    return IPRoute()


# ---------------------------------------------------------------- the pod bridge


def bridge_mac(gateway):
    """A fixed, locally administered MAC from the gateway address: a re-created bridge keeps the pods' ARP entries."""
    return "0a:58:" + ":".join("%02x" % byte for byte in gateway.packed)


def pod_interfaces(bridge, cache_dir=CNI_CACHE_DIR):
    """The pods' host-side interfaces of this bridge, from libcni's results cache (one file per attachment)."""
    names = set()
    try:
        entries = os.listdir(cache_dir)
    except OSError:
        return names
    for entry in entries:
        try:
            with open(os.path.join(cache_dir, entry), encoding="utf-8") as handle:
                cached = json.load(handle)
        except (OSError, ValueError):
            continue
        interfaces = (cached.get("result") or {}).get("interfaces") or []
        if not any(i.get("name") == bridge and not i.get("sandbox") for i in interfaces):
            continue
        names.update(i["name"] for i in interfaces if i.get("name") and i["name"] != bridge and not i.get("sandbox"))
    return names


class Bridge:
    def __init__(self, settings, cache_dir=CNI_CACHE_DIR):
        self.s = settings
        self.cache_dir = cache_dir
        self.mac = bridge_mac(settings["address"].ip)

    def problems(self, kernel, extra_ports=()):
        s, name = self.s, self.s["bridge"]
        link = kernel.links.get(name)
        found = []
        if link is None:
            found.append("bridge %s is missing" % name)
        elif link["kind"] != "bridge":
            return ["%s is not a bridge (%s)" % (name, link["kind"])]
        else:
            if not link["up"]:
                found.append("bridge %s is down" % name)
            if link["mtu"] != s["mtu"]:
                found.append("bridge %s does not have MTU %d" % (name, s["mtu"]))
            if link["mac"] != self.mac:
                found.append("bridge %s does not have MAC %s" % (name, self.mac))
            address = s["address"]
            if (link["index"], str(address.ip), address.network.prefixlen) not in kernel.addresses:
                found.append("bridge %s lacks %s" % (name, address))
            found.extend(ipv6_off(name))
        for port in sorted(self.detached_ports(kernel, extra_ports)):
            found.append("pod interface %s is not on %s" % (port, name))
        if not any(r["type"] == 7 for r in kernel.routes.get(str(s["cluster_cidr"]), [])):
            found.append("the unreachable route for %s is missing" % s["cluster_cidr"])
        return found

    def detached_ports(self, kernel, extra_ports=()):
        bridge = kernel.links.get(self.s["bridge"])
        index = bridge["index"] if bridge else None
        wanted = pod_interfaces(self.s["bridge"], self.cache_dir) | set(extra_ports)
        # Without the bridge (deleted, and about to be created again) no port is on it: every one is detached.
        return {
            name for name in wanted if name in kernel.links and (index is None or kernel.links[name]["master"] != index)
        }

    def ports(self, kernel):
        bridge = kernel.links.get(self.s["bridge"])
        if bridge is None:
            return set()
        return {link["name"] for link in kernel.links.values() if link["master"] == bridge["index"]}

    def apply(self, ipr, kernel, extra_ports=()):
        s, name = self.s, self.s["bridge"]
        done = []
        link = kernel.links.get(name)
        if link is not None and link["kind"] != "bridge":
            raise Failure("%s exists and is not a bridge: delete it (ip link del %s) and apply again" % (name, name))
        if link is None:
            # The MTU set after creation, not given to it: only a changed MTU is the bridge's own, kept when its last
            # port leaves (one given at creation follows the ports, and is 1500 again without any).
            ipr.link("add", ifname=name, kind="bridge", address=self.mac)
            ipr.link("set", index=link_index(ipr, name), mtu=s["mtu"])
            done.append("created bridge %s" % name)
        index = link_index(ipr, name)
        # Ports first: a bridge takes the smallest MTU of its ports until its own is set.
        detached = sorted(self.detached_ports(kernel, extra_ports))
        for port in detached:
            # The bridge plugin's hairpinMode, as the port had it (mode 1 = hairpin).
            ipr.link("set", index=kernel.links[port]["index"], master=index)
            ipr.brport("set", index=kernel.links[port]["index"], mode=1)
            done.append("attached pod interface %s to %s" % (port, name))
        if link is None or detached or link["mtu"] != s["mtu"] or link["mac"] != self.mac or not link["up"]:
            ipr.link("set", index=index, mtu=s["mtu"], address=self.mac, state="up")
        write_sysctl(sysctl_path("ipv6", name, "disable_ipv6"), "1")
        address = s["address"]
        if link is None or (index, str(address.ip), address.network.prefixlen) not in kernel.addresses:
            ipr.addr("replace", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        # Pod subnets of other nodes are reachable only through their tunnel routes (more specific); without one,
        # this route answers "unreachable" instead of letting cleartext pod traffic follow the default route.
        if not any(r["type"] == 7 for r in kernel.routes.get(str(s["cluster_cidr"]), [])):
            ipr.route("replace", dst=str(s["cluster_cidr"]), type="unreachable")
        return done

    def remove(self, ipr, kernel):
        if self.s["bridge"] in kernel.links:
            ipr.link("del", index=kernel.links[self.s["bridge"]]["index"])
        for _route in kernel.routes.get(str(self.s["cluster_cidr"]), []):
            try:
                ipr.route("del", dst=str(self.s["cluster_cidr"]), type="unreachable")
            except Exception as err:  # pylint: disable=broad-except
                if getattr(err, "code", None) != errno.ESRCH:
                    raise


# ---------------------------------------------------------------- the tunnels


class Tunnels:
    def __init__(self, settings):
        self.s = settings

    def ours(self, name):
        prefix = self.s["prefix"]
        return name.startswith(prefix) and name[len(prefix) :].isdigit()

    def device_problems(self, link, peer):
        """What is wrong with an existing device itself: another kind than TYPE, or other attributes."""
        name = peer["device"]
        if self.s["type"] == "xfrm":
            if link["kind"] != "xfrm" or link.get("if_id") != peer["key"]:
                return ["tunnel %s is not an XFRM interface with if_id %#x" % (name, peer["key"])]
            return []
        if link["kind"] != "vti":
            return ["tunnel %s is not a VTI device from %s to %s" % (name, peer["local"], peer["remote"])]
        local, remote, ikey, okey = link["vti"]
        if (local, remote) != (str(peer["local"]), str(peer["remote"])):
            return ["tunnel %s is not a VTI device from %s to %s" % (name, peer["local"], peer["remote"])]
        if (ikey, okey) != (peer["key"], peer["key"]):
            return ["tunnel %s does not use key %d" % (name, peer["key"])]
        return []

    def stale(self, kernel):
        wanted = {peer["device"] for peer in self.s["peers"]}
        return sorted(
            name
            for name, link in kernel.links.items()
            if link["kind"] in ("xfrm", "vti") and self.ours(name) and name not in wanted
        )

    def _route_ok(self, kernel, peer, index):
        return any(
            r["type"] == 1 and r["oif"] == index and r["src"] == str(self.s["source"])
            for r in kernel.routes.get(str(peer["subnet"]), [])
        )

    def problems(self, kernel):
        found, source = [], str(self.s["source"])
        for peer in self.s["peers"]:
            name = peer["device"]
            link = kernel.links.get(name)
            if link is None:
                found.append("tunnel %s is missing" % name)
                continue
            found.extend(self.device_problems(link, peer))
            if not link["up"]:
                found.append("tunnel %s is down" % name)
            if link["mtu"] != self.s["mtu"]:
                found.append("tunnel %s does not have MTU %d" % (name, self.s["mtu"]))
            if (link["index"], source, 32) not in kernel.addresses:
                found.append("tunnel %s lacks %s/32" % (name, source))
            if not self._route_ok(kernel, peer, link["index"]):
                found.append("route %s dev %s src %s is missing" % (peer["subnet"], name, source))
            found.extend(ipv6_off(name))
            if self.s["type"] == "vti" and read_sysctl(sysctl_path("ipv4", name, "disable_policy")) != "1":
                found.append("tunnel %s does not have disable_policy set" % name)
        found.extend("tunnel %s is stale" % name for name in self.stale(kernel))
        return found

    def _create(self, ipr, peer):
        name = peer["device"]
        try:
            if self.s["type"] == "xfrm":
                # No underlay device: the SAs' addresses route the ESP packets.
                ipr.link("add", ifname=name, kind="xfrm", xfrm_if_id=peer["key"])
            else:
                ipr.link(
                    "add",
                    ifname=name,
                    kind="vti",
                    vti_local=str(peer["local"]),
                    vti_remote=str(peer["remote"]),
                    vti_ikey=peer["key"],
                    vti_okey=peer["key"],
                )
        except Exception as err:  # pylint: disable=broad-except
            if getattr(err, "code", None) == errno.EEXIST:
                raise Failure(
                    "cannot create %s: another %s device with key %d exists under another name; delete it "
                    "(ip -d link show type %s) and apply again" % (name, self.s["type"], peer["key"], self.s["type"])
                ) from None
            raise
        return link_index(ipr, name)

    def apply(self, ipr, kernel):
        done, source = [], str(self.s["source"])
        for peer in self.s["peers"]:
            name = peer["device"]
            link = kernel.links.get(name)
            if link is not None and self.device_problems(link, peer):
                # A device of an earlier TYPE, or other attributes (an XFRM if_id cannot be changed).
                ipr.link("del", index=link["index"])
                link = None
            if link is None:
                index = self._create(ipr, peer)
                done.append("created tunnel %s" % name)
            else:
                index = link["index"]
            if link is None or not link["up"] or link["mtu"] != self.s["mtu"]:
                ipr.link("set", index=index, mtu=self.s["mtu"], state="up")
            write_sysctl(sysctl_path("ipv6", name, "disable_ipv6"), "1")
            if self.s["type"] == "vti":
                # The SAs' own policies are matched on the underlay; the decrypted packets arrive on the device.
                write_sysctl(sysctl_path("ipv4", name, "disable_policy"), "1")
            # The gateway address on the device: what MASQUERADE picks for traffic leaving through it (kube-proxy's
            # NodePort SNAT, host clients of services), so that it stays inside the traffic selectors.
            if link is None or (index, source, 32) not in kernel.addresses:
                ipr.addr("replace", index=index, address=source, prefixlen=32)
            # Host-originated traffic to remote pods leaves from the gateway address, inside the traffic selectors.
            if link is None or not self._route_ok(kernel, peer, index):
                ipr.route("replace", dst=str(peer["subnet"]), oif=index, prefsrc=source)
        for name in self.stale(kernel):
            ipr.link("del", index=kernel.links[name]["index"])
            done.append("deleted stale tunnel %s" % name)
        return done

    def remove(self, ipr, kernel):
        """Every device of ours, of either kind, listed or not; their routes go with them."""
        for name, link in kernel.links.items():
            if link["kind"] in ("xfrm", "vti") and self.ours(name):
                ipr.link("del", index=link["index"])


# ---------------------------------------------------------------- the firewall


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key):
    return {"meta": {"key": key}}


def _ip(field):
    return {"payload": {"protocol": "ip", "field": field}}


def _net(network):
    """A network as nft lists it: a /32 is a plain address."""
    if network.prefixlen == 32:
        return str(network.network_address)
    return {"prefix": {"addr": str(network.network_address), "len": network.prefixlen}}


DROP = {"drop": None}
CHAINS = {
    # Before conntrack and DNAT: raw priority.
    "inbound": {"type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"},
    "input": {"type": "filter", "hook": "input", "prio": 0, "policy": "accept"},
    "forward": {"type": "filter", "hook": "forward", "prio": 0, "policy": "accept"},
    # Last look before a packet leaves: mangle priority, after routing and the XFRM lookup.
    "failclosed": {"type": "filter", "hook": "postrouting", "prio": -150, "policy": "accept"},
    "outbound-nat": {"type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"},
}


def ike_hold_rule():
    """A peer's IKE_SA_INIT request: UDP to port 500 whose responder SPI (bytes 8-15 of the IKE header, after the
    8-byte UDP header) is still zero. Replies to charon's own requests carry a responder SPI and pass."""
    return {
        "chain": "input",
        "comment": IKE_HOLD_COMMENT,
        "expr": [
            _match({"payload": {"protocol": "udp", "field": "dport"}}, 500),
            _match({"payload": {"base": "th", "offset": 128, "len": 64}}, 0),
            DROP,
        ],
    }


def nft_ruleset(s, hold=False):
    """The table inet k8s-ipsec: drop-only security rules at fixed hook priorities, plus the pods' masquerade.

    Returns (chains, sets, rules) in the form `nft -j list table` prints them, so check compares like with like.
    """
    bridge, tunnels = s["bridge"], s["tunnel_prefix"] + "*"
    cluster, services = _net(s["cluster_cidr"]), _net(s["service_cidr"])
    iif, oif = _meta("iifname"), _meta("oifname")
    chains = CHAINS
    sets = {
        "peer_subnets": {
            "type": ["ifname", "ipv4_addr"],
            "flags": ["interval"],
            "elem": [{"concat": [p["device"], _net(p["subnet"])]} for p in s["peers"]],
        }
    }
    not_local = [_match(iif, "lo", "!="), _match(iif, bridge, "!=")]
    ipv6 = _match(_meta("nfproto"), "ipv6")
    rules = [
        # A pod sends only from its node's pod subnet, never as the gateway or as anybody else.
        ("inbound", [_match(iif, bridge), _match(_ip("saddr"), _net(s["pod_subnet"]), "!="), DROP]),
        ("inbound", [_match(iif, bridge), _match(_ip("saddr"), str(s["gateway"])), DROP]),
        # A tunnel carries only its peer's pod subnet (one lookup, whatever the number of peers).
        (
            "inbound",
            [
                _match(iif, tunnels),
                _match({"concat": [iif, _ip("saddr")]}, "@peer_subnets", "!="),
                DROP,
            ],
        ),
        # Cluster sources and destinations arrive only from the pods and the tunnels.
        ("inbound", not_local + [_match(iif, tunnels, "!="), _match(_ip("saddr"), cluster), DROP]),
        ("inbound", not_local + [_match(iif, tunnels, "!="), _match(_ip("daddr"), cluster), DROP]),
        # Service addresses are the pods' and the node's own: from anywhere else they go before any DNAT.
        ("inbound", not_local + [_match(_ip("daddr"), services), DROP]),
        # IPv4 only: no IPv6 from or to the pods and the tunnels until dual-stack exists.
        ("inbound", [_match(iif, bridge), ipv6, DROP]),
        ("inbound", [_match(iif, tunnels), ipv6, DROP]),
        ("forward", [_match(oif, bridge), ipv6, DROP]),
        ("forward", [_match(oif, tunnels), ipv6, DROP]),
        # Forwarded cluster traffic leaves only to the pods or through a tunnel; nothing forwards to a service
        # address that was not translated.
        (
            "forward",
            [_match(oif, bridge, "!="), _match(oif, tunnels, "!="), _match(_ip("daddr"), cluster), DROP],
        ),
        ("forward", [_match(_ip("daddr"), services), DROP]),
        # Fail closed: untranslated service traffic never leaves, and cluster traffic leaves unencrypted only to the
        # pods or through a tunnel device (whose SAs encrypt it).
        ("failclosed", [_match(oif, "lo", "!="), _match(_ip("daddr"), services), DROP]),
        (
            "failclosed",
            [
                _match(oif, bridge, "!="),
                _match(oif, tunnels, "!="),
                _match(_ip("daddr"), cluster),
                _match({"rt": {"key": "ipsec"}}, False),
                DROP,
            ],
        ),
    ]
    rules = [{"chain": chain, "expr": expr} for chain, expr in rules]
    if hold:
        rules.append(ike_hold_rule())
    if s["masquerade"]:
        rules.append(
            {
                "chain": "outbound-nat",
                "expr": [
                    _match(_ip("saddr"), cluster),
                    _match(_ip("daddr"), cluster, "!="),
                    {"masquerade": None},
                ],
            }
        )
    return chains, sets, rules


def nft_load_commands(s, hold=False):
    """One transaction that replaces the table whole: nobody sees it half-loaded or unhooked."""
    chains, sets, rules = nft_ruleset(s, hold)
    table = {"family": "inet", "name": NFT_TABLE}
    commands = [{"add": {"table": table}}, {"delete": {"table": table}}, {"add": {"table": table}}]
    for name, chain in chains.items():
        commands.append({"add": {"chain": dict(family="inet", table=NFT_TABLE, name=name, **chain)}})
    for name, nft_set in sets.items():
        spec = {k: v for k, v in nft_set.items() if k != "elem" or v}
        commands.append({"add": {"set": dict(family="inet", table=NFT_TABLE, name=name, **spec)}})
    for rule in rules:
        commands.append({"add": {"rule": dict(family="inet", table=NFT_TABLE, **rule)}})
    return {"nftables": commands}


def nft_listed(listing):
    """(chains, sets, rules) of `nft -j list table`, without handles and counters, in the form of nft_ruleset."""
    chains, sets, rules = {}, {}, []
    for item in listing.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            chains[chain["name"]] = {k: chain.get(k) for k in ("type", "hook", "prio", "policy")}
        elif "set" in item:
            nft_set = item["set"]
            sets[nft_set["name"]] = {
                "type": nft_set.get("type"),
                "flags": nft_set.get("flags"),
                "elem": nft_set.get("elem", []),
            }
        elif "rule" in item:
            rule = item["rule"]
            entry = {"chain": rule["chain"], "expr": [e for e in rule["expr"] if "counter" not in e]}
            if "comment" in rule:
                entry["comment"] = rule["comment"]
            rules.append(entry)
    return chains, sets, rules


def _keyed_elements(elements):
    """A set's elements by a key that does not depend on their order or on nft's key order."""
    return {json.dumps(e, sort_keys=True): e for e in elements}


def _nft_compare(wanted, live):
    """How two (chains, sets, rules) triples differ: (lines for chains, rules and set types that differ, names of
    the sets that differ only in their elements)."""
    shape, elements = [], []
    (w_chains, w_sets, w_rules), (l_chains, l_sets, l_rules) = wanted, live
    for name in sorted(set(w_chains) | set(l_chains)):
        if w_chains.get(name) != l_chains.get(name):
            shape.append("chain %s of table inet %s differs from the settings" % (name, NFT_TABLE))
            continue
        if [r for r in w_rules if r["chain"] == name] != [r for r in l_rules if r["chain"] == name]:
            shape.append("the rules of chain %s in table inet %s differ from the settings" % (name, NFT_TABLE))
    for name in sorted(set(w_sets) | set(l_sets)):
        want, have = w_sets.get(name), l_sets.get(name)
        if want is None or have is None or want["type"] != have["type"] or want["flags"] != have["flags"]:
            shape.append("set %s of table inet %s differs from the settings" % (name, NFT_TABLE))
        elif set(_keyed_elements(want["elem"])) != set(_keyed_elements(have["elem"])):
            elements.append(name)
    return shape, elements


def nft_differences(wanted, live):
    """What differs between two (chains, sets, rules) triples, one line per chain or set."""
    shape, elements = _nft_compare(wanted, live)
    return shape + [
        "set %s of table inet %s does not hold exactly the peers' subnets" % (name, NFT_TABLE) for name in elements
    ]


def nft_changes(s, listing, hold=False):
    """The commands that bring the live table (a listing, or None) to the settings. When only the peers changed, just
    the set's elements are added and deleted: a packet of an existing peer never meets a table being replaced."""
    if listing is None:
        return nft_load_commands(s, hold)["nftables"]
    wanted, live = nft_ruleset(s, hold), nft_listed(listing)
    shape, elements = _nft_compare(wanted, live)
    if shape:
        return nft_load_commands(s, hold)["nftables"]
    w_sets, l_sets = wanted[1], live[1]
    commands = []
    for name in elements:
        want, have = _keyed_elements(w_sets[name]["elem"]), _keyed_elements(l_sets[name]["elem"])
        target = {"family": "inet", "table": NFT_TABLE, "name": name}
        extra, missing = sorted(set(have) - set(want)), sorted(set(want) - set(have))
        if extra:
            commands.append({"delete": {"element": dict(target, elem=[have[key] for key in extra])}})
        if missing:
            commands.append({"add": {"element": dict(target, elem=[want[key] for key in missing])}})
    return commands


def forward_accepts(s):
    """What a DROP-policy FORWARD must accept for pods and tunnels: rules in iptables-save's form. They sit in a chain
    appended to FORWARD, after everybody else's rules, so kube-proxy's and policy engines' drops decide first."""
    return [
        "-A %s -o %s -j ACCEPT" % (FORWARD_CHAIN, s["bridge"]),
        "-A %s -i %s -j ACCEPT" % (FORWARD_CHAIN, s["bridge"]),
        "-A %s -d %s -o %s+ -j ACCEPT" % (FORWARD_CHAIN, s["cluster_cidr"], s["tunnel_prefix"]),
    ]


FORWARD_JUMP = ["FORWARD", "-m", "comment", "--comment", FORWARD_JUMP_COMMENT, "-j", FORWARD_CHAIN]


def forward_chain_rules():
    """The rules of our iptables chain in iptables-save's form, or None when the chain is missing."""
    proc = run(["iptables", "-w", "-S", FORWARD_CHAIN], check=False)
    if proc.returncode != 0:
        return None
    return [line for line in proc.stdout.splitlines() if line.startswith("-A ")]


def run(argv, stdin=None, check=True):
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise Failure("%s failed (status %d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))
    return proc


class Nft:
    """The nftables JSON API (libnftables through python3-nftables)."""

    def __init__(self):
        from nftables import Nftables  # pylint: disable=import-outside-toplevel

        self.nft = Nftables()
        self.nft.set_json_output(True)
        self.nft.set_handle_output(True)

    def cmd(self, payload, what):
        rc, output, error = self.nft.json_cmd(payload)
        if rc != 0:
            raise Failure("nft could not %s: %s" % (what, (error or "").strip()))
        return output

    def table(self, family="inet", name=NFT_TABLE):
        """The listing of a table (ours by default), or None when there is none."""
        listing = {"nftables": [{"list": {"table": {"family": family, "name": name}}}]}
        rc, output, _error = self.nft.json_cmd(listing)
        return output if rc == 0 else None


def macspoofchk_only(listing):
    """Whether a table listing holds nothing but what the bridge plugin's macspoofchk makes."""
    for item in listing.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]["name"]
            if chain != "PREROUTING" and not chain.startswith("cni-br-iface-"):
                return False
        elif "rule" in item:
            if not str(item["rule"].get("comment", "")).startswith("macspoofchk-"):
                return False
        elif "metainfo" not in item and "table" not in item:
            return False
    return True


def _hold_handles(listing):
    return [
        item["rule"]["handle"]
        for item in (listing or {}).get("nftables", [])
        if "rule" in item and item["rule"].get("comment") == IKE_HOLD_COMMENT
    ]


def strongswan_starting():
    return run(["systemctl", "is-active", "strongswan.service"], check=False).stdout.strip() == "activating"


class Firewall:
    def __init__(self, settings):
        self.s = settings

    def problems(self, nft):
        found = []
        listing = nft.table()
        if listing is None:
            found.append("table inet %s is missing" % NFT_TABLE)
        else:
            live = nft_listed(listing)
            held = any(r.get("comment") == IKE_HOLD_COMMENT for r in live[2])
            if held and not strongswan_starting():
                found.append("the IKE hold is in place while strongSwan is not starting")
            live = (live[0], live[1], [r for r in live[2] if r.get("comment") != IKE_HOLD_COMMENT])
            found.extend(nft_differences(nft_ruleset(self.s), live))
        have = forward_chain_rules()
        if have is None:
            found.append("the iptables chain %s is missing" % FORWARD_CHAIN)
        elif have != forward_accepts(self.s):
            found.append("the iptables chain %s differs from the settings" % FORWARD_CHAIN)
        if run(["iptables", "-w", "-C"] + FORWARD_JUMP, check=False).returncode != 0:
            found.append("iptables' FORWARD does not jump to %s" % FORWARD_CHAIN)
        return found

    def apply(self, nft):
        listing = nft.table()
        # The hold stays only while strongSwan starts (its unit releases it); a left-over one goes.
        hold = bool(_hold_handles(listing)) and strongswan_starting()
        commands = nft_changes(self.s, listing, hold)
        if commands:
            nft.cmd({"nftables": commands}, "load table inet %s" % NFT_TABLE)
        if forward_chain_rules() != forward_accepts(self.s):
            restore = "*filter\n:%s - [0:0]\n%s\nCOMMIT\n" % (FORWARD_CHAIN, "\n".join(forward_accepts(self.s)))
            # --noflush: declaring our chain flushes just it, atomically; every other rule stays as it is.
            run(["iptables-restore", "-w", "--noflush"], stdin=restore)
        # The jump of earlier versions (first in FORWARD, no comment) goes; ours is appended once and never moved.
        while run(["iptables", "-w", "-D", "FORWARD", "-j", FORWARD_CHAIN], check=False).returncode == 0:
            pass
        if run(["iptables", "-w", "-C"] + FORWARD_JUMP, check=False).returncode != 0:
            run(["iptables", "-w", "-A"] + FORWARD_JUMP)
        remove_legacy_chains()

    def remove(self, nft):
        if nft.table() is not None:
            nft.cmd({"nftables": [{"delete": {"table": {"family": "inet", "name": NFT_TABLE}}}]}, "delete the table")
        for argv in (["-D", "FORWARD", "-j", FORWARD_CHAIN], ["-D"] + FORWARD_JUMP):
            while run(["iptables", "-w"] + argv, check=False).returncode == 0:
                pass
        if run(["iptables", "-w", "-F", FORWARD_CHAIN], check=False).returncode == 0:
            run(["iptables", "-w", "-X", FORWARD_CHAIN])
        remove_legacy_chains()
        family, name = MACSPOOFCHK_TABLE
        spoofcheck = nft.table(family, name)
        if spoofcheck is not None and macspoofchk_only(spoofcheck):
            table = {"family": family, "name": name}
            nft.cmd(
                {"nftables": [{"delete": {"table": table}}]}, "delete the bridge plugin's table %s %s" % (family, name)
            )

    @staticmethod
    def hold(nft):
        """strongSwan's start: peers' new IKE_SAs are dropped until swanctl has loaded the connections."""
        if _hold_handles(nft.table()):
            return
        table = {"family": "inet", "name": NFT_TABLE}
        commands = [
            {"add": {"table": table}},
            {"add": {"chain": dict(family="inet", table=NFT_TABLE, name="input", **CHAINS["input"])}},
            {"add": {"rule": dict(family="inet", table=NFT_TABLE, **ike_hold_rule())}},
        ]
        nft.cmd({"nftables": commands}, "add the IKE hold")

    @staticmethod
    def release(nft):
        for handle in _hold_handles(nft.table()):
            rule = {"family": "inet", "table": NFT_TABLE, "chain": "input", "handle": handle}
            nft.cmd({"nftables": [{"delete": {"rule": rule}}]}, "release the IKE hold")


def remove_legacy_chains():
    for table, hook, chain in LEGACY_CHAINS:
        if run(["iptables", "-w", "-t", table, "-S", chain], check=False).returncode != 0:
            continue
        while run(["iptables", "-w", "-t", table, "-D", hook, "-j", chain], check=False).returncode == 0:
            pass
        run(["iptables", "-w", "-t", table, "-F", chain])
        run(["iptables", "-w", "-t", table, "-X", chain])


# ---------------------------------------------------------------- the parts, as the units and the guard run them


def config(name, default):
    return os.environ.get(name, default)


def load_part(part):
    if part == "cni0":
        return Bridge(
            cni0_settings(config("K8S_IPSEC_CNI0_CONFIG", CNI0_CONFIG)), config("K8S_IPSEC_CNI_CACHE", CNI_CACHE_DIR)
        )
    if part == "tunnels":
        return Tunnels(tunnels_settings(config("K8S_IPSEC_TUNNELS_CONFIG", TUNNELS_CONFIG)))
    return Firewall(firewall_settings(config("K8S_IPSEC_FIREWALL_CONFIG", FIREWALL_CONFIG)))


@contextlib.contextmanager
def changing():
    """One writer at a time: a unit's apply and the guard's repair would otherwise both create what they both found
    missing (a peer added while the guard passes), and one of them fail. Each reads the kernel after the lock."""
    with open(os.environ.get("K8S_IPSEC_LOCK", "/run/k8s-ipsec-node.lock"), "w", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _state_path(name):
    return os.path.join(config("K8S_IPSEC_STATE_DIR", STATE_DIR), name + ".json")


def _update_state(name, change):
    """Applies change(dict) to the JSON record `name` under an exclusive lock; returns the new record. A record that
    cannot be read or written is never a reason to fail what is being counted."""
    path = _state_path(name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return {}
    with os.fdopen(fd, "r+", encoding="ascii") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            record = json.loads(handle.read() or "{}")
        except ValueError:
            record = {}
        change(record)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record, sort_keys=True))
    return record


def count(name, key):
    """Adds one to counter `key` of record `name` (guard repairs, keeper actions) for the metrics."""
    _update_state(name, lambda record: record.__setitem__(key, record.get(key, 0) + 1))


def counts(name):
    try:
        with open(_state_path(name), encoding="ascii") as handle:
            return json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}


class Node:
    """The parts of one node with one netlink socket and one nftables context, as the guard keeps them."""

    ADDRESSING = ("cni0", "tunnels")  # dependency order: the tunnel routes use the bridge's address

    def __init__(self, ipr=None, nft=None):
        self.ipr = ipr
        self.nft = nft
        self.seen_ports = set()

    def _ipr(self):
        if self.ipr is None:
            self.ipr = open_netlink()
        return self.ipr

    def _nft(self):
        if self.nft is None:
            self.nft = Nft()
        return self.nft

    def problems(self, part, obj):
        if part == "firewall":
            return obj.problems(self._nft())
        kernel = Kernel()
        if part == "cni0":
            ports = obj.ports(kernel)
            found = obj.problems(kernel, self.seen_ports)
            self.seen_ports = ports or self.seen_ports
            return found
        return obj.problems(kernel)

    def apply(self, part, obj):
        with changing():
            if part == "firewall":
                obj.apply(self._nft())
                return []
            kernel = Kernel()
            if part == "cni0":
                return obj.apply(self._ipr(), kernel, self.seen_ports)
            return obj.apply(self._ipr(), kernel)

    def remove(self, part, obj):
        with changing():
            if part == "firewall":
                obj.remove(self._nft())
            else:
                obj.remove(self._ipr(), Kernel())

    def restore(self, parts, log=print):
        """Checks each part and re-applies the ones that drifted, logging what was found and done. True when all
        were as wanted."""
        clean = True
        for part in parts:
            try:
                obj = load_part(part)
                found = self.problems(part, obj)
                if not found:
                    continue
                clean = False
                log("k8s-ipsec-node %s drifted: %s" % (part, "; ".join(found)))
                done = self.apply(part, obj)
                log("k8s-ipsec-node %s restored%s" % (part, (": " + "; ".join(done)) if done else ""))
                count("guard-repairs", part)
            except (SettingsError, Failure) as err:
                clean = False
                log("k8s-ipsec-node %s could not be restored: %s" % (part, err))
                count("guard-failures", part)
            except Exception as err:  # pylint: disable=broad-except
                clean = False
                log("k8s-ipsec-node %s could not be restored: %s: %s" % (part, type(err).__name__, err))
                count("guard-failures", part)
        return clean


# ---------------------------------------------------------------- the guard


RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40


class Guard:
    """Watches netlink and nftables events; a burst of them leads to one pass over what it may have touched, and
    every `recheck` seconds everything is read in case an event was missed. Idle, it waits in select()."""

    def __init__(self, node, recheck=60.0, interval=None, quiet=0.3, burst=2.0, log=print, metrics=None):
        self.node = node
        # a MetricsWriter, or None: no metrics
        self.metrics = metrics
        self.recheck = recheck
        # Rules of iptables' legacy backend announce no changes: then the firewall is read every `interval` s.
        self.interval = interval
        self.quiet = quiet
        self.burst = burst
        self.log = log

    def run(self, stop=None):
        from pyroute2 import IPRoute  # pylint: disable=import-outside-toplevel

        events = IPRoute()
        events.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE)
        monitor = subprocess.Popen(  # pylint: disable=consider-using-with
            ["nft", "monitor"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        selector = selectors.DefaultSelector()
        selector.register(events.fileno(), selectors.EVENT_READ, "net")
        selector.register(monitor.stdout.fileno(), selectors.EVENT_READ, "fw")
        parts = self.node.ADDRESSING + ("firewall",)
        self.node.restore(parts, self.log)
        self._metrics(True)
        next_full = time.monotonic() + self.recheck
        next_fw = time.monotonic() + (self.interval or self.recheck)
        try:
            while stop is None or not stop():
                due = min(next_full, next_fw, self.metrics.due if self.metrics else next_full)
                touched = self._wait(selector, events, monitor, due - time.monotonic())
                now = time.monotonic()
                clean = True
                if now >= next_full:
                    clean = self.node.restore(parts, self.log)
                    next_full = now + self.recheck
                    next_fw = now + (self.interval or self.recheck)
                else:
                    if "net" in touched:
                        clean = self.node.restore(self.node.ADDRESSING, self.log)
                    if "fw" in touched or (self.interval and now >= next_fw):
                        clean = self.node.restore(("firewall",), self.log) and clean
                        next_fw = now + (self.interval or self.recheck)
                # a repair changes the counters and the state: written at once
                self._metrics(not clean or ("net" in touched))
        finally:
            monitor.terminate()
            monitor.wait()
            events.close()

    def _metrics(self, changed):
        if self.metrics is not None and (changed or time.monotonic() >= self.metrics.due):
            self.metrics.write()

    def _wait(self, selector, events, monitor, timeout):
        """Waits for the first event, then gathers the burst (until `quiet` s pass without one, `burst` s at most);
        returns which sources spoke."""
        touched = set()
        deadline = None
        while True:
            if deadline is None:
                wait = max(timeout, 0.0)
            else:
                wait = min(self.quiet, deadline - time.monotonic())
                if wait <= 0:
                    return touched
            ready = selector.select(wait)
            if not ready:
                return touched
            for key, _events in ready:
                if key.data == "net":
                    try:
                        events.get()
                    except OSError:  # ENOBUFS: events were lost, which is what the pass that follows is for
                        pass
                elif not os.read(monitor.stdout.fileno(), 65536):
                    raise Failure("nft monitor ended; exiting so that systemd starts the guard again")
                touched.add(key.data)
            if deadline is None:
                deadline = time.monotonic() + self.burst


# ---------------------------------------------------------------- the keeper


def swanctl_sas(parse_message):
    """{connection: [IKE_SA dicts]} from `swanctl --list-sas --raw` (vici messages as data)."""
    proc = run(["swanctl", "--list-sas", "--raw"], check=False)
    if proc.returncode != 0:
        return None
    sas = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("list-sa event {"):
            continue
        for name, entry in parse_message(line[len("list-sa event {") : -1]).items():
            sas.setdefault(name, []).append(entry)
    return sas


def _lib(name):
    """One of the collection's helpers installed beside the program (_status, _metrics)."""
    directory = os.environ.get("K8S_IPSEC_LIB", LIB_DIR)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return __import__(name)


def _status_parser():
    return _lib("_status").parse_message


class Keeper:
    def __init__(self, settings, sas_reader=None, swanctl=None, log=print):
        self.s = settings
        self.read_sas = sas_reader or (lambda: swanctl_sas(_status_parser()))
        self.swanctl = swanctl or (lambda *args: run(["swanctl"] + list(args), check=False).returncode)
        self.log = log

    def keep(self, sas):
        """Re-initiates the tunnels this node starts when they are down (an idle one whose initiator gave up)."""
        for peer in self.s["peers"]:
            if peer["initiator"] and peer["connection"] not in sas:
                count("keeper-actions", "initiate")
                self.swanctl("--initiate", "--child", peer["connection"], "--timeout", "15")

    def prune(self, sas):
        """Closes the IKE_SAs of this collection's connections that are no longer peers (a node removed)."""
        wanted = {peer["connection"] for peer in self.s["peers"]}
        for name in sorted(sas):
            if re.fullmatch(r"peer[0-9]+-[A-Za-z0-9_.-]+", name) and name not in wanted:
                self.log("closing %s: no longer a peer" % name)
                count("keeper-actions", "close")
                self.swanctl("--terminate", "--ike", name, "--force", "--timeout", "10")

    def reauth(self, sas, remote=None, first_look=2.0, timeout=90.0, sleep=time.sleep):
        """Re-authenticates the IKE_SAs this node starts, one at a time and make-before-break."""
        failed = False
        for peer in self.s["peers"]:
            if not peer["initiator"] or (remote and str(peer["remote"]) != remote):
                continue
            name = peer["connection"]
            old = next((sa["uniqueid"] for sa in sas.get(name, []) if sa.get("state") == "ESTABLISHED"), None)
            if old is None:
                continue
            count("keeper-actions", "reauthenticate")
            if self.swanctl("--rekey", "--ike-id", old, "--reauth") != 0:
                self.log("%s: swanctl --rekey --reauth refused; journalctl -u strongswan says why" % name)
                failed = True
                continue
            # No look before the exchange has had time to finish: each swanctl start takes CPU from charon.
            waited = first_look
            sleep(first_look)
            while True:
                now = (self.read_sas() or {}).get(name, [])
                if all(sa.get("uniqueid") != old for sa in now) and any(
                    sa.get("state") == "ESTABLISHED"
                    and any(c.get("state") == "INSTALLED" for c in (sa.get("child-sas") or {}).values())
                    for sa in now
                ):
                    self.log("re-authenticated %s in %g s" % (name, waited))
                    break
                if waited >= timeout:
                    self.log(
                        "%s: not re-authenticated after %g s; the old SA stays until the new one is up: "
                        "journalctl -u strongswan says why" % (name, waited)
                    )
                    failed = True
                    break
                sleep(1)
                waited += 1
        return not failed


# ---------------------------------------------------------------- metrics


def link_counters(devices):
    """{device: {rx_bytes, tx_bytes, rx_packets, tx_packets}} of the devices that exist."""
    found = {}
    for device in devices:
        base = "/sys/class/net/%s/statistics/" % device
        try:
            values = {}
            for key in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
                with open(base + key, encoding="ascii") as handle:
                    values[key] = int(handle.read())
        except (OSError, ValueError):
            continue
        found[device] = values
    return found


def node_metrics(settings, sa_events=None):
    """The node's metrics as Prometheus text (docs/metrics.md), read with the parsers verify.yml uses."""
    status, metrics = _lib("_status"), _lib("_metrics")
    try:
        proc = run(["swanctl", "--list-sas", "--raw"], check=False)
        sas = status.parse_swanctl(proc.stdout)[1] if proc.returncode == 0 else []
    except OSError:  # no swanctl: no SA
        sas = []
    if sa_events is not None:
        events = sa_events.observe(sas)
        _update_state("sa-events", lambda record: (record.clear(), record.update(events)))
    else:
        events = counts("sa-events")
    try:
        with open(config("K8S_IPSEC_XFRM_STAT", "/proc/net/xfrm_stat"), encoding="ascii") as handle:
            xfrm = status.parse_xfrm_stat(handle.read(), keep_zero=True)
    except OSError:
        xfrm = {}
    certificates = {}
    for label, path in CERTIFICATES.items():
        try:
            certificates[label] = status.certificate_state(
                os.path.join(config("K8S_IPSEC_SWANCTL_DIR", "/etc/swanctl"), path)
            )["not_after"]
        except (OSError, ValueError, ImportError):  # psk mode has none
            continue
    peers = [
        {
            # connections are named peer<index>-<inventory name> (the plan)
            "name": peer["connection"].split("-", 1)[-1],
            "address": str(peer["remote"]),
            "connection": peer["connection"],
            "device": peer["device"],
        }
        for peer in settings["peers"]
    ]
    return metrics.mesh_metrics(
        {"name": settings["node"], "index": settings["index"], "tunnel_type": settings["type"]},
        peers,
        sas,
        link_counters([peer["device"] for peer in peers]),
        xfrm,
        certificates,
        {"repairs": counts("guard-repairs"), "failures": counts("guard-failures")},
        counts("keeper-actions"),
        events,
    )


class MetricsWriter:
    """The guard's metrics file: written whole and renamed into place, so the textfile collector never reads half."""

    def __init__(self, path, interval=15.0, log=print):
        self.path = path
        self.interval = interval
        self.log = log
        self.events = None
        self.due = 0.0
        self.failing = False

    def write(self):
        self.due = time.monotonic() + self.interval
        try:
            if self.events is None:
                self.events = _lib("_metrics").SaEvents(counts("sa-events"))
            text = node_metrics(tunnels_settings(config("K8S_IPSEC_TUNNELS_CONFIG", TUNNELS_CONFIG)), self.events)
            directory = os.path.dirname(self.path) or "."
            os.makedirs(directory, exist_ok=True)
            temporary = os.path.join(directory, ".%s.%d" % (os.path.basename(self.path), os.getpid()))
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.path)
            if self.failing:
                self.log("k8s-ipsec-node metrics written again to %s" % self.path)
            self.failing = False
        except Exception as err:  # pylint: disable=broad-except
            if not self.failing:  # once, not every interval
                self.log("k8s-ipsec-node metrics not written to %s: %s: %s" % (self.path, type(err).__name__, err))
            self.failing = True


def creds_digest(directory):
    digest = hashlib.sha256()
    for root, _dirs, files in sorted(os.walk(directory)):
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(path.encode() + b"\0")
            with open(path, "rb") as handle:
                digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()


def creds(directory, loaded_record):
    """Loads the credentials again when their files changed since the last load, dropping the replaced ones."""
    digest = creds_digest(directory)
    try:
        with open(loaded_record, encoding="ascii") as handle:
            if handle.read().strip() == digest:
                return False
    except OSError:
        pass
    proc = run(["swanctl", "--load-creds", "--clear", "--noprompt"], check=False)
    if proc.returncode != 0:
        raise Failure("swanctl --load-creds failed: %s" % (proc.stdout + proc.stderr).strip())
    os.makedirs(os.path.dirname(loaded_record), exist_ok=True)
    with open(loaded_record, "w", encoding="ascii") as handle:
        handle.write(digest + "\n")
    print("credentials reloaded")
    count("keeper-actions", "reload_credentials")
    return True


# ---------------------------------------------------------------- command line


USAGE = __doc__.split("\n\n", 2)[1]


def main(argv):
    if len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    part, verb, rest = argv[0], argv[1], argv[2:]
    try:
        if part in ("cni0", "tunnels", "firewall") and verb in ("apply", "check", "remove") and not rest:
            node, obj = Node(), load_part(part)
            if verb == "check":
                found = node.problems(part, obj)
                for line in found:
                    print(line)
                return 1 if found else 0
            getattr(node, verb)(part, obj)
            return 0
        if part == "firewall" and verb in ("hold", "release") and not rest:
            with changing():
                getattr(Firewall, verb)(Nft())
            return 0
        if part == "guard" and verb in ("run", "check") and not rest:
            node = Node()
            if verb == "check":
                return 0 if node.restore(Node.ADDRESSING + ("firewall",)) else 1
            legacy = "legacy" in run(["iptables", "-V"], check=False).stdout
            log = functools.partial(print, flush=True)
            metrics_file = os.environ.get("K8S_IPSEC_METRICS_FILE")
            guard = Guard(
                node,
                recheck=float(os.environ.get("K8S_IPSEC_GUARD_RECHECK", "60")),
                interval=float(os.environ.get("K8S_IPSEC_GUARD_INTERVAL", "5")) if legacy else None,
                log=log,
                metrics=MetricsWriter(metrics_file, float(os.environ.get("K8S_IPSEC_METRICS_INTERVAL", "15")), log=log)
                if metrics_file
                else None,
            )
            guard.run()
            return 1
        if part == "metrics" and verb == "show" and not rest:
            sys.stdout.write(node_metrics(tunnels_settings(config("K8S_IPSEC_TUNNELS_CONFIG", TUNNELS_CONFIG))))
            return 0
        if part == "keeper" and verb in ("keep", "prune", "creds", "reauth") and len(rest) <= (verb == "reauth"):
            keeper = Keeper(tunnels_settings(config("K8S_IPSEC_TUNNELS_CONFIG", TUNNELS_CONFIG)))
            sas = keeper.read_sas()
            if sas is None:  # charon is not running: nothing to keep, and it loads the credentials when it starts
                return 0
            if verb == "creds":
                creds(
                    os.environ.get("K8S_IPSEC_SWANCTL_DIR", "/etc/swanctl"),
                    os.environ.get("K8S_IPSEC_CREDS_LOADED", "/run/k8s-ipsec/credentials.loaded"),
                )
                return 0
            if verb == "reauth":
                return 0 if keeper.reauth(sas, rest[0] if rest else None) else 1
            getattr(keeper, verb)(sas)
            return 0
    except SettingsError as err:
        print("k8s-ipsec-node: %s; nothing was changed" % err, file=sys.stderr)
        return 2
    except Failure as err:
        print("k8s-ipsec-node %s %s: %s" % (part, verb, err), file=sys.stderr)
        return 1
    except OSError as err:  # pyroute2's NetlinkError among them
        print("k8s-ipsec-node %s %s: %s: %s" % (part, verb, type(err).__name__, err), file=sys.stderr)
        return 1
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
