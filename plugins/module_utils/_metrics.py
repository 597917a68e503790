# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One node's mesh as Prometheus metrics, in the text format node_exporter's textfile collector reads.

The node program (`k8s-ipsec-node metrics`, and its guard) feeds in what it read with _status.py's parsers, the
same that the node_status module (playbooks/verify.yml) uses; docs/metrics.md lists the metrics. No Ansible imports.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

GUARD_PARTS = ("cni0", "tunnels", "firewall")
KEEPER_ACTIONS = ("initiate", "close", "reauthenticate", "reload_credentials")


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels):
    if not labels:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (key, _escape(value)) for key, value in labels)


def _number(value):
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))


class Exposition:
    """Metric families in the order they are added, rendered as the Prometheus text format (version 0.0.4)."""

    def __init__(self, prefix="k8s_ipsec_"):
        self.prefix = prefix
        self.families = []

    def add(self, name, kind, text, samples):
        """samples: [(((label, value), ...), number)]; a family without samples is still declared."""
        self.families.append((self.prefix + name, kind, text, samples))

    def render(self):
        lines = []
        for name, kind, text, samples in self.families:
            lines.append("# HELP %s %s" % (name, text))
            lines.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                lines.append("%s%s %s" % (name, _labels(labels), _number(value)))
        return "\n".join(lines) + "\n"


def _established(sa):
    return sa.get("state") == "ESTABLISHED"


def _installed_children(sa):
    return [child for child in sa.get("children", []) if child.get("state") == "INSTALLED"]


def sa_reading(sas):
    """{connection: {established IKE_SA id: {its installed CHILD_SA ids}}} from parse_swanctl's IKE_SAs."""
    reading = {}
    for sa in sas:
        ikes = reading.setdefault(sa["connection"], {})
        if _established(sa):
            ikes[sa.get("uniqueid")] = {child.get("uniqueid") for child in _installed_children(sa)}
    return reading


class SaEvents:
    """Rekeys and re-authentications per connection, told from successive readings of the SAs.

    A new IKE_SA that holds a CHILD_SA of the last reading is an IKE rekey (strongSwan moves the CHILD_SAs over);
    a new IKE_SA with only new CHILD_SAs is a new authentication (a re-authentication, make-before-break or not, or
    the pair coming back up); a new CHILD_SA under a known IKE_SA is a CHILD rekey. Two events between readings
    count as one.
    """

    def __init__(self, counts=None):
        self.last = None
        self.counts = counts or {}

    def observe(self, sas):
        reading = sa_reading(sas)
        if self.last is not None:
            for connection, ikes in reading.items():
                counts = self.counts.setdefault(connection, {"ike": 0, "child": 0, "reauth": 0})
                last = self.last.get(connection, {})
                last_children = set().union(*last.values()) if last else set()
                for ike_id, children in ikes.items():
                    if ike_id in last:
                        if children - last[ike_id]:
                            counts["child"] += 1
                    elif children & last_children:
                        counts["ike"] += 1
                    else:
                        counts["reauth"] += 1
        self.last = reading
        return self.counts


def _peer_labels(peer):
    return (("peer", peer["name"]), ("peer_address", peer["address"]))


def _age(sa, key):
    value = sa.get(key)
    return value if isinstance(value, int) else 0


def mesh_metrics(node, peers, sas, links, xfrm, certificates, guard, keeper, events):
    """The node's metrics as Prometheus text.

    node: {name, index, tunnel_type}; peers: [{name, address, connection, device}]; sas: parse_swanctl's IKE_SAs
    (empty when charon does not answer); links: {device: {rx_bytes, tx_bytes, rx_packets, tx_packets}}; xfrm:
    {counter: value}; certificates: {label: expiry as Unix time}; guard: {"repairs"|"failures": {part: count}};
    keeper: {action: count}; events: SaEvents.counts.
    """
    out = Exposition()
    out.add(
        "node_info",
        "gauge",
        "The node's name, index (its pod subnet) and tunnel type; always 1.",
        [((("node", node["name"]), ("index", node["index"]), ("tunnel_type", node["tunnel_type"])), 1)],
    )
    by_connection = {}
    for sa in sas:
        by_connection.setdefault(sa["connection"], []).append(sa)
    ike_up, child_up, ike_age, child_age, info = [], [], [], [], []
    traffic = {key: [] for key in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}
    rekeys, reauths = [], []
    for peer in peers:
        labels = _peer_labels(peer)
        established = [sa for sa in by_connection.get(peer["connection"], []) if _established(sa)]
        # the newest first: during a make-before-break re-authentication two are up for a moment
        established.sort(key=lambda sa: _age(sa, "established_seconds"))
        children = [child for sa in established for child in _installed_children(sa)]
        children.sort(key=lambda child: _age(child, "installed_seconds"))
        ike_up.append((labels, 1 if established else 0))
        child_up.append((labels, 1 if children else 0))
        ike_age.append((labels, _age(established[0], "established_seconds") if established else 0))
        child_age.append((labels, _age(children[0], "installed_seconds") if children else 0))
        for proposal in sorted({child.get("algorithms") for child in children}):
            info.append((labels + (("proposal", proposal),), 1))
        counters = links.get(peer["device"])
        if counters is not None:
            for key in traffic:
                traffic[key].append((labels, counters.get(key, 0)))
        counts = events.get(peer["connection"], {})
        rekeys.append((labels + (("sa", "ike"),), counts.get("ike", 0)))
        rekeys.append((labels + (("sa", "child"),), counts.get("child", 0)))
        reauths.append((labels, counts.get("reauth", 0)))
    out.add("peer_ike_sa_established", "gauge", "1 when an IKE_SA with the peer is ESTABLISHED.", ike_up)
    out.add("peer_child_sa_installed", "gauge", "1 when an ESP CHILD_SA with the peer is INSTALLED.", child_up)
    out.add("peer_ike_sa_age_seconds", "gauge", "Seconds since the IKE_SA was established; 0 without one.", ike_age)
    out.add("peer_child_sa_age_seconds", "gauge", "Seconds since the CHILD_SA was installed; 0 without one.", child_age)
    out.add("peer_child_sa_info", "gauge", "The ESP proposal of each installed CHILD_SA; always 1.", info)
    for key, name, text in (
        ("rx_bytes", "peer_receive_bytes_total", "Bytes received from the peer through its tunnel device."),
        ("tx_bytes", "peer_transmit_bytes_total", "Bytes sent to the peer through its tunnel device."),
        ("rx_packets", "peer_receive_packets_total", "Packets received from the peer through its tunnel device."),
        ("tx_packets", "peer_transmit_packets_total", "Packets sent to the peer through its tunnel device."),
    ):
        out.add(name, "counter", text, traffic[key])
    out.add("peer_rekeys_total", "counter", "Rekeys of the pair's IKE_SA or CHILD_SA seen by the guard.", rekeys)
    out.add(
        "peer_reauthentications_total",
        "counter",
        "New authentications of the pair (re-authentication or re-establishment) seen by the guard.",
        reauths,
    )
    out.add(
        "xfrm_errors_total",
        "counter",
        "The kernel's XFRM error counters (/proc/net/xfrm_stat).",
        [((("counter", name),), value) for name, value in sorted(xfrm.items())],
    )
    for key, name, text in (
        ("repairs", "guard_repairs_total", "Drifts the guard found and repaired, by part."),
        ("failures", "guard_repair_failures_total", "Repairs the guard could not make, by part."),
    ):
        counts = guard.get(key, {})
        out.add(name, "counter", text, [((("part", part),), counts.get(part, 0)) for part in GUARD_PARTS])
    out.add(
        "keeper_actions_total",
        "counter",
        "What the keeper did since boot, by action.",
        [((("action", action),), keeper.get(action, 0)) for action in KEEPER_ACTIONS],
    )
    out.add(
        "certificate_expiry_timestamp_seconds",
        "gauge",
        "When the node's certificate and the cluster CA expire, as Unix time.",
        [((("certificate", label),), certificates[label]) for label in sorted(certificates)],
    )
    return out.render()
