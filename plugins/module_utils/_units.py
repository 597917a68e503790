# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A role's systemd units, enabled and started in one pass: one state query, then one systemctl call per action.

`systemctl enable` reloads the whole manager, which took 10-50 s per call on the lab's emulated nodes; one enable
for all of a role's units, standing in for the explicit reload too, costs that once. No Ansible imports; the
node_units module is the thin wrapper.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shlex

SHOW_PROPERTIES = "LoadState,ActiveState,UnitFileState,NeedDaemonReload"
STATES = (None, "started", "restarted", "reloaded")
# ActiveState values that count as started: a unit on its way up is not started a second time.
RUNNING = ("active", "activating", "reloading")
# UnitFileState values systemctl enable does not change.
ENABLED = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient")


def wanted_units(items):
    """Validate the wanted units (mappings with name, enabled and state) into a list of dicts.
    Raises ValueError naming every bad entry at once."""
    wanted, problems, seen = [], [], set()
    for item in items:
        name = item.get("name") or ""
        if not name or "/" in name or name.startswith("-"):
            problems.append("%r: not a unit name such as k8s-ipsec-cni0.service" % name)
            continue
        if "." not in name:
            name += ".service"
        if name in seen:
            problems.append("%s: given twice" % name)
            continue
        seen.add(name)
        state = item.get("state")
        if state not in STATES:
            problems.append("%s: state %r is not started, restarted or reloaded" % (name, state))
            continue
        enabled = item.get("enabled")
        wanted.append({"name": name, "enabled": None if enabled is None else bool(enabled), "state": state})
    if problems:
        raise ValueError("; ".join(problems))
    return wanted


def parse_show(text, count):
    """`systemctl show --property=... u1 u2 ...` output: one dict per unit, in the order they were asked for."""
    blocks = [{}]
    for line in text.splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, value = line.split("=", 1) if "=" in line else (line, "")
        blocks[-1][key] = value
    blocks = [b for b in blocks if b]
    if len(blocks) != count:
        raise ValueError("systemctl show described %d units, %d were asked for" % (len(blocks), count))
    return blocks


def plan_units(wanted, states, check_mode=False):
    """What to do so that the units are as wanted, given their `systemctl show` states (same order):
    a dict of unit lists, enable, disable, start, restart and reload (reload-or-restart, which starts a unit that
    is not running), and under "daemon_reload" whether systemd says a unit's files changed since it read them. A unit
    systemd does not know is an error naming it, except in check mode, where the task that writes its file has not
    written it either."""
    todo = {"enable": [], "disable": [], "start": [], "restart": [], "reload": [], "daemon_reload": False}
    missing = []
    for index, want in enumerate(wanted):
        name, state = want["name"], states[index]
        known = state.get("LoadState") not in ("not-found", None)
        if not known and not check_mode:
            missing.append(name)
            continue
        file_state = state.get("UnitFileState", "") if known else ""
        if want["enabled"] is True and file_state not in ENABLED:
            todo["enable"].append(name)
        if want["enabled"] is False and file_state in ("enabled", "enabled-runtime"):
            todo["disable"].append(name)
        # An edited unit file or drop-in (a new drop-in folder is not noticed: the role asks for the reload then).
        if state.get("NeedDaemonReload") == "yes":
            todo["daemon_reload"] = True
        if want["state"] == "restarted":
            todo["restart"].append(name)
        elif want["state"] == "reloaded":
            todo["reload"].append(name)
        elif want["state"] == "started" and (not known or state.get("ActiveState") not in RUNNING):
            todo["start"].append(name)
    if missing:
        raise ValueError(
            "systemd does not know %s: write the unit file first (the role's earlier task), then run again"
            % ", ".join(missing)
        )
    return todo


# plan_units' unit lists, in the order they run, with the systemctl verb of each.
ACTIONS = (
    ("disable", "disable"),
    ("enable", "enable"),
    ("restart", "restart"),
    ("reload", "reload-or-restart"),
    ("start", "start"),
)


def commands(todo, daemon_reload):
    """The systemctl calls that carry out a plan, in order. enable and disable reload the manager themselves, so a
    daemon-reload (asked for, or needed by a unit whose files changed) is only a call of its own when neither runs."""
    calls = []
    if (daemon_reload or todo.get("daemon_reload")) and not (todo["enable"] or todo["disable"]):
        calls.append(["daemon-reload"])
    for key, verb in ACTIONS:
        if todo[key]:
            calls.append([verb, "--"] + todo[key])
    return calls


def reloads_manager(calls):
    """Whether these systemctl calls reload the service manager: a daemon-reload, or an enable or disable."""
    return any(call[0] in ("daemon-reload", "enable", "disable") for call in calls)


def show_command(wanted):
    """The shell command that reads the wanted units' states, as the module reads them."""
    names = " ".join(shlex.quote(w["name"]) for w in wanted)
    return "systemctl show --property=%s -- %s 2>/dev/null" % (SHOW_PROPERTIES, names)


def settled(wanted, show_text, check_mode=False):
    """Whether the units, as `systemctl show` describes them, are already as wanted: no systemctl call to make.
    False whenever in doubt (a unit systemd does not know, output that does not parse): the module then decides."""
    try:
        todo = plan_units(wanted, parse_show(show_text, len(wanted)), check_mode)
    except ValueError:
        return False
    return not commands(todo, False)
