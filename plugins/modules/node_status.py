#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_status
short_description: Read one node's IPsec mesh state and say what is wrong with it
version_added: 0.1.0
description:
  - Reads, on the node and without changing anything, the IKE and CHILD SAs (C(swanctl --raw)), the XFRM error
    counters, the state of the pod network's units, the guards (the C(check) verbs of the node program
    C(k8s-ipsec-node) for the bridge, the firewall and the tunnels) and the lifetime of the node's certificate and of
    the cluster CA, and compares them with the node's plan.
  - A module of this collection because Ansible has none that reads strongSwan's SAs as data or judges them
    against a plan; it reads them in one run instead of a command and a parse per peer.
  - Never fails because of what it finds; every problem is returned with where it is and the likely fix, so a
    playbook can print all of them and fail afterwards.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - k8s_ipsec.cni.mesh.read_only
options:
  peers:
    description: This node's peers from the plan (C(network_plan_node.peers)); C(name) and C(connection) are used.
    type: list
    elements: dict
    required: true
  units:
    description: Units that must be active.
    type: list
    elements: str
    default: []
  guarded_units:
    description:
      - Units that must be active and whose C(ExecStart) command, with C(check) for its last word, must pass;
        what the check prints is reported.
    type: list
    elements: str
    default: []
  node:
    description: The node's name in the returned table lines.
    type: str
    required: true
  certificates:
    description: PEM certificates whose remaining lifetime is reported, by label (for example C(node), C(ca)).
    type: dict
    default: {}
  expiry_days:
    description: A certificate with fewer days left than this is reported as a problem.
    type: int
    default: 30
  controller_time:
    description:
      - The controller's clock (seconds since the epoch) when the task was sent; the node's clock is compared with
        it. The offset includes the time the module takes to start, a few seconds at most.
    type: float
  max_clock_offset:
    description:
      - An offset from O(controller_time) larger than this many seconds is reported as a problem, as certificates are
        checked against the clock.
    type: int
    default: 60
requirements:
  - swanctl on the node; cryptography when O(certificates) is given
"""

EXAMPLES = r"""
---
- name: Read this node's mesh state
  k8s_ipsec.cni.node_status:
    peers: "{{ network_plan_node.peers }}"
    node: "{{ inventory_hostname }}"
    units: [strongswan.service]
    guarded_units: [k8s-ipsec-cni0.service]
    certificates:
      node: /etc/swanctl/x509/k8s-ipsec.crt
  register: status
"""

RETURN = r"""
peers:
  description: Per peer, its IKE and CHILD SA state, algorithms, ages and traffic counters.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: n2, connection: peer2-n2, ike_state: ESTABLISHED, ike_sas: 1, child_sas: 1, child_state: INSTALLED,
       ike_algorithms: AES_GCM_16-256/PRF_HMAC_SHA2_384/CURVE_25519, esp_algorithms: "ESP:AES_GCM_16-256",
       established_seconds: 70, installed_seconds: 72, bytes_in: 0, bytes_out: 0, packets_in: 0, packets_out: 0}
units:
  description: The active state of each unit.
  returned: always
  type: dict
  sample: {strongswan.service: active}
guards:
  description: Per guarded unit, C(ok) or what its program's check printed.
  returned: always
  type: dict
  sample: {k8s-ipsec-cni0.service: ok}
certificates:
  description: Per label, the certificate's subject and days left (negative when expired).
  returned: always
  type: dict
  sample: {node: {subject: CN=n1, days_left: 824}}
xfrm_errors:
  description: The XFRM error counters of the node that are not zero.
  returned: always
  type: dict
  sample: {XfrmInNoStates: 3}
clock_offset_s:
  description: The node's clock minus O(controller_time), in seconds; null without O(controller_time).
  returned: always
  type: float
  sample: 0.8
lines:
  description: The state as table lines, one per peer and one for the node.
  returned: always
  type: list
  elements: str
problem_lines:
  description: The problems as lines, "node, where, what -> fix".
  returned: always
  type: list
  elements: str
problems:
  description: Every problem found, each with C(where), C(what) and C(fix).
  returned: always
  type: list
  elements: dict
  sample:
    - {where: peer2-n2, what: "peer2-n2: 0 IKE_SAs (0 ESTABLISHED), expected exactly 1",
       fix: "check strongSwan on this node and on n2 (journalctl -u strongswan); swanctl --initiate --child peer2-n2"}
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._status import (
    certificate_state,
    parse_swanctl,
    parse_xfrm_stat,
    peer_problems,
    problem_lines,
    status_lines,
)

try:
    import cryptography  # noqa: F401  pylint: disable=unused-import

    HAS_CRYPTOGRAPHY = True  # certificate_state needs it
except ImportError:
    HAS_CRYPTOGRAPHY = False


def main():
    node_time = time.time()
    module = AnsibleModule(
        argument_spec=dict(
            peers=dict(type="list", elements="dict", required=True),
            node=dict(type="str", required=True),
            units=dict(type="list", elements="str", default=[]),
            guarded_units=dict(type="list", elements="str", default=[]),
            certificates=dict(type="dict", default={}),
            expiry_days=dict(type="int", default=30),
            controller_time=dict(type="float"),
            max_clock_offset=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    problems = []

    def problem(where, what, fix):
        problems.append({"where": where, "what": what, "fix": fix})

    rc, out, err = module.run_command(["swanctl", "--list-conns", "--raw"])
    rc2, out2, err2 = module.run_command(["swanctl", "--list-sas", "--raw"])
    peers = []
    if rc or rc2:
        problem("strongswan", "swanctl cannot reach charon: %s" % (err or err2).strip(), "systemctl restart strongswan")
        conns, sas = [], []
    else:
        conns, sas = parse_swanctl(out + "\n" + out2)
    by_connection = {peer["connection"]: peer["name"] for peer in params["peers"]}
    summary, sa_problems = peer_problems(conns, sas, list(by_connection))
    for connection, name in by_connection.items():
        peers.append(dict(name=name, connection=connection, **summary[connection]))
    for connection, text in sa_problems:
        if connection in by_connection:
            fix = "check strongSwan here and on %s (journalctl -u strongswan), then swanctl --initiate --child %s" % (
                by_connection[connection],
                connection,
            )
        else:
            fix = "swanctl --load-all reloads this node's connections from /etc/swanctl"
        problem(connection, text, fix)

    units = {}
    for unit in params["guarded_units"] + params["units"]:
        _rc, state, _err = module.run_command(["systemctl", "is-active", unit])
        units[unit] = state.strip() or "unknown"
        if units[unit] != "active":
            problem(unit, "%s is %s" % (unit, units[unit]), "systemctl status %s; journalctl -u %s" % (unit, unit))

    guards = {}
    for unit in params["guarded_units"]:
        # The unit's own command with "check" for its last word:
        # ExecStart={ path=... ; argv[]=<program> <part> apply ; ... }
        _rc, exec_start, _err = module.run_command(["systemctl", "show", "-P", "ExecStart", unit])
        argv = exec_start.split("argv[]=", 1)[-1].split(" ;", 1)[0].split() if "argv[]=" in exec_start else []
        if not argv:
            guards[unit] = "no program found"
            problem(unit, "%s has no ExecStart program" % unit, "re-run the role that installs %s" % unit)
            continue
        rc, out, err = module.run_command(argv[:-1] + ["check"])
        guards[unit] = "ok" if rc == 0 else (out + err).strip()
        if rc != 0:
            problem(
                unit,
                guards[unit].replace("\n", "; "),
                "systemctl reload %s (or re-run its role); journalctl -u k8s-ipsec-guard says why the guard did not"
                % unit,
            )

    certificates = {}
    if params["certificates"] and not HAS_CRYPTOGRAPHY:
        problem("certificates", "python3-cryptography is missing on the node", "apt-get install python3-cryptography")
    elif params["certificates"]:
        for label, path in params["certificates"].items():
            try:
                state = certificate_state(path)
                certificates[label] = {"subject": state["subject"], "days_left": state["days_left"]}
            except (OSError, ValueError) as exc:
                problem(label, "cannot read %s: %s" % (path, exc), "re-run the strongswan role")
                continue
            days = certificates[label]["days_left"]
            if days < params["expiry_days"]:
                problem(
                    label,
                    "the %s certificate %s expires in %d days" % (label, path, days),
                    "re-run the strongswan role to re-issue it",
                )

    clock_offset = None
    if params["controller_time"] is not None:
        clock_offset = round(node_time - params["controller_time"], 1)
        if abs(clock_offset) > params["max_clock_offset"]:
            problem(
                "clock",
                "the clock is %.0f s %s the controller's"
                % (abs(clock_offset), "ahead of" if clock_offset > 0 else "behind"),
                "synchronise it (timedatectl set-ntp true; timedatectl timesync-status)",
            )

    try:
        with open("/proc/net/xfrm_stat") as handle:
            xfrm_errors = parse_xfrm_stat(handle.read())
    except OSError:
        xfrm_errors = {}

    state = dict(
        peers=peers,
        units=units,
        guards=guards,
        certificates=certificates,
        xfrm_errors=xfrm_errors,
        clock_offset_s=clock_offset,
        problems=problems,
    )
    module.exit_json(
        changed=False,
        lines=status_lines(params["node"], state),
        problem_lines=problem_lines(params["node"], problems),
        **state,
    )


if __name__ == "__main__":
    main()
