# Sends hand-made IPv4 or IPv6 packets straight onto an Ethernet link (AF_PACKET), whatever the routing table says:
# how the lab's outsider and a misbehaving mesh node put cleartext with a forged pod source on the underlay, and how
# a pod sends with a source that is not its own (or IPv6 where the pod network carries none).
#
# usage: python3 send_raw.py <interface> <dst mac> <src ip> <dst ip> <tcp|udp> <dst port> [count]
#        (IPv6 when the addresses are IPv6 ones)
# Needs root (CAP_NET_RAW); python3 only.
import socket
import struct
import sys


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src, dst, proto, payload):
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        0x4B1D,
        0,
        64,
        proto,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src, dst, proto, payload):
    return (
        struct.pack("!IHBB", 6 << 28, len(payload), proto, 64)
        + socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + payload
    )


def transport(kind, src, dst, dport):
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    pseudo = socket.inet_pton(family, src) + socket.inet_pton(family, dst)
    if kind == "udp":
        body = b"k8s-ipsec outsider probe"
        segment = struct.pack("!HHHH", 40000, dport, 8 + len(body), 0) + body
        proto = socket.IPPROTO_UDP
    else:  # a TCP SYN
        segment = struct.pack("!HHIIBBHHH", 40000, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
        proto = socket.IPPROTO_TCP
    if family == socket.AF_INET6:  # RFC 8200 8.1: upper-layer length and next header, as 32-bit fields
        total = checksum(pseudo + struct.pack("!IxxxB", len(segment), proto) + segment)
    else:
        total = checksum(pseudo + struct.pack("!BBH", 0, proto, len(segment)) + segment)
    offset = 6 if kind == "udp" else 16
    return proto, segment[:offset] + struct.pack("!H", total) + segment[offset + 2 :]


def main(interface, dst_mac, src, dst, kind, dport, count=3):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((interface, 0))
    src_mac = sock.getsockname()[4]
    proto, segment = transport(kind, src, dst, int(dport))
    if ":" in src:
        ethertype, packet = 0x86DD, ipv6(src, dst, proto, segment)
    else:
        ethertype, packet = 0x0800, ipv4(src, dst, proto, segment)
    frame = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + struct.pack("!H", ethertype) + packet
    for _copy in range(int(count)):
        sock.send(frame)
    print("sent %s %s %s -> %s:%s via %s" % (count, kind, src, dst, dport, interface))


if __name__ == "__main__":
    main(*sys.argv[1:])
