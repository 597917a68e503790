# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A node's mesh state as data, and what is wrong with it: strongSwan's `swanctl --raw` listings, XFRM error
counters, the guards' checks and certificate lifetimes, compared with the node's plan.

No Ansible imports: the node_status module feeds command output in; the lab's SA check reuses the parser.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# swanctl --raw prints vici messages on one line each: "name {", "key=value", "key=[items]", "}". Values may hold
# spaces ("class=public key"), so a value runs up to the next "key=", "name {" or "}".
_NAME = r"[^\s={}\[\]]+"
_TOKEN = re.compile(
    r"\s*(?:(?P<close>\})"
    r"|(?P<section>%s)\s\{"
    r"|(?P<key>%s)=(?:\[(?P<list>[^\]]*)\]|(?P<value>.*?)(?=\s+%s(?:=|\s\{)|\s*\}|\s*$)))" % (_NAME, _NAME, _NAME)
)
_EVENT = re.compile(r"^(list-sa|list-conn) event \{(.*)\}\s*$")

IKE_ALGORITHMS = re.compile(r"^AES_GCM_16-256/PRF_[A-Z0-9_]+/(CURVE_25519|ECP_\d+)$")
ESP_ALGORITHMS = "AES_GCM_16-256"


def parse_message(body):
    """One vici message body ("name {...} ...") as nested dicts; lists stay as their raw text."""
    root, stack, pos = {}, [], 0
    current = root
    while pos < len(body):
        if not body[pos:].strip():
            break
        m = _TOKEN.match(body, pos)
        if not m:
            raise ValueError("cannot parse swanctl output at: %r" % body[pos : pos + 60])
        pos = m.end()
        if m.group("close"):
            current = stack.pop()
        elif m.group("section"):
            section = {}
            current[m.group("section")] = section
            stack.append(current)
            current = section
        elif m.group("list") is not None:
            current[m.group("key")] = m.group("list")
        else:
            current[m.group("key")] = m.group("value")
    if stack:
        raise ValueError("unbalanced braces in swanctl output")
    return root


def _algorithms(entry):
    return "%s-%s" % (entry.get("encr-alg"), entry.get("encr-keysize"))


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_swanctl(text):
    """(connection names, IKE_SAs) from `swanctl --list-conns --raw` and/or `swanctl --list-sas --raw` output."""
    conns, sas = [], []
    for line in text.splitlines():
        m = _EVENT.match(line.strip())
        if not m:
            continue
        for name, entry in parse_message(m.group(2)).items():
            if m.group(1) == "list-conn":
                conns.append(name)
                continue
            children = []
            for child in entry.get("child-sas", {}).values():
                children.append(
                    {
                        "uniqueid": child.get("uniqueid"),
                        "state": child.get("state"),
                        "protocol": child.get("protocol"),
                        "algorithms": _algorithms(child),
                        "installed_seconds": _int(child.get("install-time")),
                        "rekey_in_seconds": _int(child.get("rekey-time")),
                        "bytes_in": _int(child.get("bytes-in")),
                        "bytes_out": _int(child.get("bytes-out")),
                        "packets_in": _int(child.get("packets-in")),
                        "packets_out": _int(child.get("packets-out")),
                    }
                )
            sas.append(
                {
                    "connection": name,
                    "uniqueid": entry.get("uniqueid"),
                    "state": entry.get("state"),
                    "initiator": entry.get("initiator") == "yes",
                    "algorithms": "%s/%s/%s" % (_algorithms(entry), entry.get("prf-alg"), entry.get("dh-group")),
                    "established_seconds": _int(entry.get("established")),
                    "rekey_in_seconds": _int(entry.get("rekey-time")),
                    "children": children,
                }
            )
    return conns, sas


def peer_problems(conns, sas, expected):
    """Compare the SAs with the expected connections.

    Returns ({connection: summary}, [(connection, problem)]): exactly one ESTABLISHED IKE_SA with AES-GCM-256 and a
    modern DH group, and exactly one INSTALLED ESP CHILD_SA with AES-GCM-256, per expected connection.
    """
    problems, summary = [], {}
    for conn in expected:
        mine = [sa for sa in sas if sa["connection"] == conn]
        established = [sa for sa in mine if sa["state"] == "ESTABLISHED"]
        entry = {"ike_sas": len(mine), "ike_state": mine[0]["state"] if mine else "NONE", "child_sas": 0}
        summary[conn] = entry
        if conn not in conns:
            problems.append((conn, "connection %s is not loaded" % conn))
        if len(mine) != 1 or len(established) != 1:
            problems.append(
                (conn, "%s: %d IKE_SAs (%d ESTABLISHED), expected exactly 1" % (conn, len(mine), len(established)))
            )
            continue
        sa = established[0]
        installed = [c for c in sa["children"] if c["state"] == "INSTALLED"]
        entry.update(
            ike_algorithms=sa["algorithms"],
            established_seconds=sa["established_seconds"],
            initiator=sa["initiator"],
            child_sas=len(sa["children"]),
            child_state=sa["children"][0]["state"] if sa["children"] else "NONE",
        )
        if not IKE_ALGORITHMS.match(sa["algorithms"]):
            problems.append((conn, "%s: IKE proposal %s" % (conn, sa["algorithms"])))
        if len(sa["children"]) != 1 or len(installed) != 1:
            states = ",".join(str(c["state"]) for c in sa["children"]) or "none"
            problems.append((conn, "%s: CHILD_SAs %s, expected exactly 1 INSTALLED" % (conn, states)))
            continue
        child = installed[0]
        entry.update(
            esp_algorithms="%s:%s" % (child["protocol"], child["algorithms"]),
            installed_seconds=child["installed_seconds"],
            rekey_in_seconds=child["rekey_in_seconds"],
            bytes_in=child["bytes_in"],
            bytes_out=child["bytes_out"],
            packets_in=child["packets_in"],
            packets_out=child["packets_out"],
        )
        if child["protocol"] != "ESP" or child["algorithms"] != ESP_ALGORITHMS:
            problems.append((conn, "%s: CHILD_SA %s %s" % (conn, child["protocol"], child["algorithms"])))
    strays = sorted({sa["connection"] for sa in sas} - set(expected))
    if strays:
        problems.append(("strongswan", "IKE_SAs of connections not in the plan: %s" % ", ".join(strays)))
    return summary, problems


def parse_xfrm_stat(text, keep_zero=False):
    """/proc/net/xfrm_stat as {counter: value}; only the counters that are not zero unless `keep_zero`."""
    counters = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and (keep_zero or int(parts[1])):
            counters[parts[0]] = int(parts[1])
    return counters


def certificate_state(path):
    """The subject, the expiry (Unix time) and the whole days left of the PEM certificate at `path`.

    Needs python3-cryptography (the strongswan role installs it on the nodes); raises ImportError without it.
    """
    import datetime  # pylint: disable=import-outside-toplevel

    from cryptography import x509  # pylint: disable=import-outside-toplevel

    with open(path, "rb") as handle:
        cert = x509.load_pem_x509_certificate(handle.read())
    utc = datetime.timezone.utc  # noqa: UP017 - also Python 3.8 to 3.10
    not_after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=utc)
    left = not_after - datetime.datetime.now(utc)
    return {"subject": cert.subject.rfc4514_string(), "days_left": left.days, "not_after": not_after.timestamp()}


def _or_dash(value):
    return "-" if value is None else value


def status_lines(node, state):
    """One line per peer and one for the node, for an operator's table."""
    lines = []
    for p in state["peers"]:
        lines.append(
            "%s -> %s: IKE %s x%d %s up %ss | CHILD %s x%d %s in %sB/%sp out %sB/%sp"
            % (
                node,
                p["name"],
                p["ike_state"],
                p["ike_sas"],
                p.get("ike_algorithms", "-"),
                _or_dash(p.get("established_seconds")),
                p.get("child_state", "NONE"),
                p["child_sas"],
                p.get("esp_algorithms", "-"),
                _or_dash(p.get("bytes_in")),
                _or_dash(p.get("packets_in")),
                _or_dash(p.get("bytes_out")),
                _or_dash(p.get("packets_out")),
            )
        )
    certificates = ", ".join("%s %d days" % (k, v["days_left"]) for k, v in sorted(state["certificates"].items()))
    errors = " ".join("%s=%d" % item for item in sorted(state["xfrm_errors"].items()))
    down = [unit for unit, active in sorted(state["units"].items()) if active != "active"]
    drifted = [unit for unit, result in sorted(state["guards"].items()) if result != "ok"]
    lines.append(
        "%s: certificates %s | xfrm errors %s | units %s | guards %s"
        % (
            node,
            certificates or "-",
            errors or "none",
            "not active: " + ", ".join(down) if down else "ok",
            "drifted: " + ", ".join(drifted) if drifted else "ok",
        )
    )
    return lines


def problem_lines(node, problems):
    return ["%s, %s: %s -> %s" % (node, p["where"], p["what"], p["fix"]) for p in problems]
