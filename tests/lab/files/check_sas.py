# Checks one node's strongSwan state for the lab's e2e test (runs on the controller, python3 only).
#
# stdin: `swanctl --list-conns --raw`, a line "=====SAS=====", then `swanctl --list-sas --raw` of one node.
# usage: python3 check_sas.py <expected number of peers>
# Passes when every connection (one per peer) has exactly one ESTABLISHED IKE_SA with an AES_GCM_16-256 proposal
# and a modern DH group (CURVE_25519 or ECP_*), and exactly one INSTALLED CHILD_SA with ESP AES_GCM_16-256.
# Prints one line: "ok <n> peers ..." or the problems found; exit status 0 or 1.
import re
import sys

# swanctl --raw prints vici messages on one line each: "name {", "key=value", "key=[items]", "}". Values may hold
# spaces ("class=public key"), so a value runs up to the next "key=", "name {" or "}".
_NAME = r"[^\s={}\[\]]+"
_TOKEN = re.compile(
    r"\s*(?:(?P<close>\})"
    r"|(?P<section>%s)\s\{"
    r"|(?P<key>%s)=(?:\[(?P<list>[^\]]*)\]|(?P<value>.*?)(?=\s+%s(?:=|\s\{)|\s*\}|\s*$)))" % (_NAME, _NAME, _NAME)
)
_EVENT = re.compile(r"^(list-sa|list-conn) event \{(.*)\}\s*$")


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


def parse(text):
    """(connection names, [{conn, state, algs, children: [{state, protocol, algs}]}]) from the two raw listings."""
    conns, sas = [], []
    for line in text.splitlines():
        m = _EVENT.match(line.strip())
        if not m:
            continue
        for name, entry in parse_message(m.group(2)).items():
            if m.group(1) == "list-conn":
                conns.append(name)
                continue
            children = [
                {"state": c.get("state"), "protocol": c.get("protocol"), "algs": _algs(c)}
                for c in entry.get("child-sas", {}).values()
            ]
            sas.append(
                {
                    "conn": name,
                    "state": entry.get("state"),
                    "algs": "%s/%s/%s" % (_algs(entry), entry.get("prf-alg"), entry.get("dh-group")),
                    "children": children,
                }
            )
    return conns, sas


def _algs(entry):
    return "%s-%s" % (entry.get("encr-alg"), entry.get("encr-keysize"))


IKE_ALG = re.compile(r"^AES_GCM_16-256/PRF_[A-Z0-9_]+/(CURVE_25519|ECP_\d+)$")
ESP_ALG = "AES_GCM_16-256"


def check(text, peers):
    conns, sas = parse(text)
    problems = []
    if len(conns) != peers:
        problems.append(f"{len(conns)} connections loaded, expected {peers}")
    ike_algs, esp_algs = set(), set()
    for conn in conns:
        mine = [sa for sa in sas if sa["conn"] == conn]
        established = [sa for sa in mine if sa["state"] == "ESTABLISHED"]
        if len(mine) != 1 or len(established) != 1:
            problems.append(f"{conn}: {len(mine)} IKE_SAs ({len(established)} ESTABLISHED), expected exactly 1")
            continue
        sa = established[0]
        if not IKE_ALG.match(sa["algs"]):
            problems.append(f"{conn}: IKE proposal {sa['algs']}")
        ike_algs.add(sa["algs"])
        installed = [c for c in sa["children"] if c["state"] == "INSTALLED"]
        if len(sa["children"]) != 1 or len(installed) != 1:
            states = ",".join(str(c["state"]) for c in sa["children"]) or "none"
            problems.append(f"{conn}: CHILD_SAs {states}, expected exactly 1 INSTALLED")
            continue
        child = installed[0]
        if child["protocol"] != "ESP" or child["algs"] != ESP_ALG:
            problems.append(f"{conn}: CHILD_SA {child['protocol']} {child['algs']}")
        esp_algs.add(f"{child['protocol']}:{child['algs']}")
    strays = sorted({sa["conn"] for sa in sas} - set(conns))
    if strays:
        problems.append(f"IKE_SAs of unknown connections: {strays}")
    if problems:
        print("; ".join(problems))
        return 1
    print(f"ok {len(conns)} peers, IKE {'|'.join(sorted(ike_algs))}, {'|'.join(sorted(esp_algs))}")
    return 0


if __name__ == "__main__":
    sys.exit(check(sys.stdin.read(), int(sys.argv[1])))
