#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_units
short_description: Enable and start a role's systemd units in one module run
version_added: 0.1.0
description:
  - Reads the units' state with one C(systemctl show), then enables, disables, restarts and starts those that need it,
    with one C(systemctl) call per action for all of them.
  - C(systemctl enable) reloads the whole service manager, which costs seconds, or tens of seconds on small or
    emulated nodes. Enabling a role's units together costs that once, and it stands in for an asked-for daemon reload.
  - A unit systemd does not know fails the task, naming it, before anything is changed. In check mode it is reported
    as what would be enabled and started, since the task that writes its file did not write it either.
  - Its action plugin first reads the states with one shell command on the node and returns unchanged, without
    running the module, when no C(systemctl) call is needed (never when O(daemon_reload) is true). A module run costs
    seconds of CPU on small or emulated nodes, a shell command a fraction of one.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  units:
    description: The units, in the order systemd is given them. Started together, they start in the order their own
      C(After=) lines give.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The unit's name; without a suffix, C(.service) is meant.
        type: str
        required: true
      enabled:
        description: Whether it starts at boot; left as it is when not given.
        type: bool
      state:
        description:
          - C(started) starts it if it is not running; C(restarted) restarts it, and always counts as a change.
          - C(reloaded) reloads it when it runs (restarts it when it has no reload) and starts it when it does not
            (C(systemctl reload-or-restart)); it always counts as a change. For a handler that applies changed
            settings without dropping what the unit holds.
          - Left as it is when not given; the unit's files are still looked at for a daemon reload.
        type: str
        choices: [started, restarted, reloaded]
  daemon_reload:
    description:
      - Reload the service manager first, for unit files changed earlier in the play. Skipped when an enable or
        disable runs, since those reload it themselves.
      - It is also reloaded, asked or not, when systemd says a listed unit's file or drop-in changed since it read
        it (C(NeedDaemonReload)); a drop-in in a folder that did not exist then is not noticed, so ask for it.
      - Not counted as a change.
    type: bool
    default: false
"""

EXAMPLES = r"""
---
- name: Create the tunnel devices now and at every boot
  k8s_ipsec.cni.node_units:
    units:
      - name: k8s-ipsec-tunnels.service
        enabled: true
        state: started
    daemon_reload: "{{ tunnel_files is changed }}"

- name: Start strongSwan and the mesh keeper's timer now and at every boot
  k8s_ipsec.cni.node_units:
    units:
      - {name: strongswan.service, enabled: true, state: started}
      - {name: k8s-ipsec-keeper.timer, enabled: true, state: started}
"""

RETURN = r"""
enabled:
  description: The units enabled (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [k8s-ipsec-cni0.service]
disabled:
  description: The units disabled.
  returned: always
  type: list
  elements: str
  sample: []
started:
  description: The units started.
  returned: always
  type: list
  elements: str
  sample: [k8s-ipsec-tunnels.service]
restarted:
  description: The units restarted.
  returned: always
  type: list
  elements: str
  sample: []
reloaded:
  description: The units reloaded, or started when they were not running.
  returned: always
  type: list
  elements: str
  sample: [k8s-ipsec-firewall.service]
daemon_reloaded:
  description: Whether the service manager was reloaded (by a call of its own, or by an enable or disable).
  returned: always
  type: bool
  sample: true
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._units import (
    ACTIONS,
    SHOW_PROPERTIES,
    commands,
    parse_show,
    plan_units,
    reloads_manager,
    wanted_units,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            units=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    name=dict(type="str", required=True),
                    enabled=dict(type="bool"),
                    state=dict(type="str", choices=["started", "restarted", "reloaded"]),
                ),
            ),
            daemon_reload=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    systemctl = module.get_bin_path("systemctl", required=True)
    try:
        wanted = wanted_units(module.params["units"])
    except ValueError as e:
        module.fail_json(msg="nothing changed: %s" % e)
    names = [w["name"] for w in wanted]
    rc, out, err = module.run_command([systemctl, "show", "--property=" + SHOW_PROPERTIES, "--"] + names)
    if rc != 0:
        module.fail_json(msg="nothing changed: systemctl show failed: %s" % (err.strip() or out.strip()))
    try:
        todo = plan_units(wanted, parse_show(out, len(names)), module.check_mode)
    except ValueError as e:
        module.fail_json(msg="nothing changed: %s" % e)
    calls = commands(todo, module.params["daemon_reload"])
    done = []
    for call in [] if module.check_mode else calls:
        rc, out, err = module.run_command([systemctl] + call)
        if rc != 0:
            module.fail_json(
                msg="systemctl %s failed: %s (done before it: %s). Read journalctl -u <unit> on the node, mend it, "
                "and run again." % (" ".join(call), err.strip() or out.strip(), "; ".join(done) or "nothing"),
                rc=rc,
            )
        done.append(" ".join(call))
    module.exit_json(
        changed=any(todo[action[0]] for action in ACTIONS),
        enabled=todo["enable"],
        disabled=todo["disable"],
        started=todo["start"],
        restarted=todo["restart"],
        reloaded=todo["reload"],
        daemon_reloaded=reloads_manager(calls),
    )


if __name__ == "__main__":
    main()
