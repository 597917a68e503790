"""The units' plan: what a role's node_units task enables, starts and restarts, and with which systemctl calls."""

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._units import (
    commands,
    parse_show,
    plan_units,
    reloads_manager,
    settled,
    show_command,
    wanted_units,
)

SHOW = """LoadState=loaded
ActiveState=inactive
UnitFileState=disabled

LoadState=loaded
ActiveState=active
UnitFileState=enabled

LoadState=not-found
ActiveState=inactive
UnitFileState=
"""


def test_wanted_units_adds_the_service_suffix_and_keeps_order():
    wanted = wanted_units([{"name": "k8s-ipsec-cni0"}, {"name": "k8s-ipsec-keeper.timer", "enabled": True}])
    assert wanted == [
        {"name": "k8s-ipsec-cni0.service", "enabled": None, "state": None},
        {"name": "k8s-ipsec-keeper.timer", "enabled": True, "state": None},
    ]


def test_wanted_units_names_every_bad_entry_at_once():
    with pytest.raises(ValueError) as e:
        wanted_units([{"name": "a.service"}, {"name": "a"}, {"name": "../x"}, {"name": "b", "state": "stopped"}])
    assert str(e.value) == (
        "a.service: given twice; '../x': not a unit name such as k8s-ipsec-cni0.service; "
        "b.service: state 'stopped' is not started, restarted or reloaded"
    )


def test_parse_show_reads_one_block_per_unit_in_order():
    states = parse_show(SHOW, 3)
    assert [s["LoadState"] for s in states] == ["loaded", "loaded", "not-found"]
    assert states[1] == {"LoadState": "loaded", "ActiveState": "active", "UnitFileState": "enabled"}
    with pytest.raises(ValueError, match="described 3 units, 2 were asked for"):
        parse_show(SHOW, 2)


def test_plan_enables_and_starts_only_what_is_not_yet():
    wanted = wanted_units(
        [{"name": "a", "enabled": True, "state": "started"}, {"name": "b", "enabled": True, "state": "started"}]
    )
    todo = plan_units(wanted, parse_show(SHOW, 3)[:2])
    assert todo == {
        "enable": ["a.service"],
        "disable": [],
        "start": ["a.service"],
        "restart": [],
        "reload": [],
        "daemon_reload": False,
    }


def test_plan_restarts_always_and_disables_an_enabled_unit():
    wanted = wanted_units([{"name": "a", "state": "restarted"}, {"name": "b", "enabled": False}])
    assert plan_units(wanted, parse_show(SHOW, 3)[:2]) == {
        "enable": [],
        "disable": ["b.service"],
        "start": [],
        "restart": ["a.service"],
        "reload": [],
        "daemon_reload": False,
    }


def test_plan_reloads_running_and_stopped_units_alike_and_notices_edited_unit_files():
    edited = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nNeedDaemonReload=yes\n"
    wanted = wanted_units([{"name": "a", "state": "reloaded"}, {"name": "b", "state": "reloaded"}, {"name": "e"}])
    todo = plan_units(wanted, parse_show(SHOW, 3)[:2] + parse_show(edited, 1))
    assert todo["reload"] == ["a.service", "b.service"]
    assert todo["daemon_reload"] is True
    # nothing asked of e: its edited file alone is a daemon-reload, not a change of any unit
    assert commands(todo, False) == [["daemon-reload"], ["reload-or-restart", "--", "a.service", "b.service"]]


def test_plan_leaves_a_unit_alone_when_nothing_is_asked():
    assert not any(plan_units(wanted_units([{"name": "a"}]), parse_show(SHOW, 3)[:1]).values())
    assert commands(plan_units(wanted_units([{"name": "a"}]), parse_show(SHOW, 3)[:1]), False) == []


def test_plan_refuses_a_unit_systemd_does_not_know_except_in_check_mode():
    wanted = wanted_units([{"name": "a", "enabled": True}, {"name": "c", "enabled": True, "state": "started"}])
    states = [parse_show(SHOW, 3)[0], parse_show(SHOW, 3)[2]]
    with pytest.raises(ValueError, match=r"^systemd does not know c.service: write the unit file first"):
        plan_units(wanted, states)
    todo = plan_units(wanted, states, check_mode=True)
    assert todo["enable"] == ["a.service", "c.service"] and todo["start"] == ["c.service"]


@pytest.mark.parametrize(
    ("todo", "reload", "calls"),
    [
        ({"enable": [], "disable": [], "start": [], "restart": [], "reload": []}, False, []),
        ({"enable": [], "disable": [], "start": [], "restart": [], "reload": []}, True, [["daemon-reload"]]),
        # enable reloads the manager itself: no second reload
        (
            {"enable": ["a", "b"], "disable": [], "start": ["a"], "restart": ["c"], "reload": ["f"]},
            True,
            [
                ["enable", "--", "a", "b"],
                ["restart", "--", "c"],
                ["reload-or-restart", "--", "f"],
                ["start", "--", "a"],
            ],
        ),
        ({"enable": [], "disable": ["d"], "start": [], "restart": [], "reload": []}, True, [["disable", "--", "d"]]),
    ],
)
def test_commands_run_one_call_per_action_and_fold_the_reload_into_enable(todo, reload, calls):
    assert commands(todo, reload) == calls
    # every case but the empty plan reloads the manager: by a call of its own, or through enable or disable
    assert reloads_manager(calls) is bool(calls)


def test_a_restart_or_start_alone_does_not_reload_the_manager():
    assert reloads_manager([["restart", "--", "a.service"], ["start", "--", "b.service"]]) is False


def test_settled_only_when_no_systemctl_call_is_left():
    wanted = wanted_units([{"name": "a", "enabled": True, "state": "started"}, {"name": "b.timer"}])
    running = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nNeedDaemonReload=no\n\n"
    assert show_command(wanted).startswith("systemctl show --property=" + "LoadState,")
    assert settled(wanted, running * 2) is True
    assert settled(wanted, running.replace("=active", "=failed") + running) is False
    assert settled(wanted, running.replace("=enabled", "=disabled") + running) is False
    # an edited unit file is re-read by the module, even when nothing else changes
    assert settled(wanted, running + running.replace("=no", "=yes")) is False
    # a unit systemd does not know, and output that does not describe every unit
    assert settled(wanted, running + "LoadState=not-found\n") is False
    assert settled(wanted, running) is False
