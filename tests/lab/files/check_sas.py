# Checks one node's strongSwan state for the lab's e2e test (runs on the controller, python3 only).
#
# stdin: `swanctl --list-conns --raw`, a line "=====SAS=====", then `swanctl --list-sas --raw` of one node.
# usage: python3 check_sas.py <expected number of peers>
# Passes when every connection (one per peer) has exactly one ESTABLISHED IKE_SA with an AES_GCM_16-256 proposal
# and a modern DH group (CURVE_25519 or ECP_*), and exactly one INSTALLED CHILD_SA with ESP AES_GCM_16-256.
# Prints one line: "ok <n> peers ..." or the problems found; exit status 0 or 1.
# The parsing and the rules are the collection's own (plugins/module_utils/_status.py, as the verify playbook uses).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "plugins" / "module_utils"))
from _status import parse_swanctl, peer_problems  # noqa: E402


def check(text, peers):
    conns, sas = parse_swanctl(text)
    summary, found = peer_problems(conns, sas, conns)
    problems = [text for _where, text in found]
    if len(conns) != peers:
        problems.insert(0, f"{len(conns)} connections loaded, expected {peers}")
    if problems:
        print("; ".join(problems))
        return 1
    ike = "|".join(sorted({entry["ike_algorithms"] for entry in summary.values()}))
    esp = "|".join(sorted({entry["esp_algorithms"] for entry in summary.values()}))
    print(f"ok {len(conns)} peers, IKE {ike}, {esp}")
    return 0


if __name__ == "__main__":
    sys.exit(check(sys.stdin.read(), int(sys.argv[1])))
