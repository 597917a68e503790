# Checks one node's strongSwan state for the lab's e2e test (runs on the controller, python3 only).
#
# stdin: `swanctl --list-conns`, a line "=====SAS=====", then `swanctl --list-sas` of one node.
# usage: python3 check_sas.py <expected number of peers>
# Passes when every connection (one per peer) has exactly one ESTABLISHED IKE_SA with an AES_GCM_16 proposal and a
# modern DH group (CURVE_25519 or ECP_*), and exactly one INSTALLED CHILD_SA with ESP AES_GCM_16-256.
# Prints one line: "ok <n> peers ..." or the problems found; exit status 0 or 1.
import re
import sys

IKE_ALG = re.compile(r"^AES_GCM_16-256/PRF_[A-Z0-9_]+/(CURVE_25519|ECP_\d+)$")
ESP_ALG = re.compile(r"ESP:AES_GCM_16-256(/|$|,)")
IKE_LINE = re.compile(r"^(\S+): #(\d+), (\w+), IKEv(\d)")
CHILD_LINE = re.compile(r"^  (\S+): #(\d+), reqid \d+, (\w+), (\w+), (.*)$")


def parse(text):
    conns_text, _sep, sas_text = text.partition("=====SAS=====")
    conns = [m.group(1) for m in re.finditer(r"^(\S+): IKEv", conns_text, re.M)]
    sas = []
    ike = None
    for line in sas_text.splitlines():
        m = IKE_LINE.match(line)
        if m:
            ike = {"conn": m.group(1), "state": m.group(3), "version": m.group(4), "algs": None, "children": []}
            sas.append(ike)
            continue
        if ike is None:
            continue
        if ike["algs"] is None and re.match(r"^  [A-Z0-9_]+-\d+/", line):
            ike["algs"] = line.strip()
            continue
        m = CHILD_LINE.match(line)
        if m:
            ike["children"].append({"name": m.group(1), "state": m.group(3), "mode": m.group(4), "algs": m.group(5)})
    return conns, sas


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
        if not sa["algs"] or not IKE_ALG.match(sa["algs"]):
            problems.append(f"{conn}: IKE proposal {sa['algs']}")
        ike_algs.add(sa["algs"])
        installed = [c for c in sa["children"] if c["state"] == "INSTALLED"]
        if len(sa["children"]) != 1 or len(installed) != 1:
            states = ",".join(c["state"] for c in sa["children"]) or "none"
            problems.append(f"{conn}: CHILD_SAs {states}, expected exactly 1 INSTALLED")
            continue
        if not ESP_ALG.search(installed[0]["algs"]):
            problems.append(f"{conn}: CHILD_SA {installed[0]['algs']}")
        esp_algs.add(installed[0]["algs"].split(",")[0])
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
