"""The guard script for real, in a private network namespace of its own (unshare -n): real `ip monitor` and
`xtables-monitor` wake it; the bridge, tunnels and firewall scripts it calls are stand-ins that log each call.

Needs root and iptables (make tools installs it); nothing outside the namespace is touched.
"""

import textwrap

import pytest
from ansible_cli import ROOT
from netns import in_netns

SCRIPT = ROOT / "roles/guard/files/k8s-ipsec-guard"
# A stand-in for k8s-ipsec-<part>: logs "<part> <verb>"; its check fails while the file drift-<part> exists, and
# its apply removes that file.
PART = """\
part=${0##*/k8s-ipsec-}
echo "$part $1" >>"$GUARD_DIR/calls"
case $1 in
  check) [ ! -e "$GUARD_DIR/drift-$part" ] || { echo "$part is off"; exit 1; } ;;
  apply) rm -f "$GUARD_DIR/drift-$part" ;;
esac"""


def stand_in(folder, name, script):
    """A shell program named <name> in <folder>; returns the folder as a PATH prefix."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)
    return f"{folder}:"


@pytest.fixture
def guard(tmp_path):
    """Runs the guard in a fresh network namespace while a shell snippet acts on it, then stops it; returns
    (what the guard printed, the calls it made, in order)."""
    sbin = tmp_path / "sbin"
    for part in ("cni0", "tunnels", "firewall"):
        stand_in(sbin, f"k8s-ipsec-{part}", PART)

    def run(snippet, interval=1, path_first="", expect_status=0):
        # setsid: the guard leads its own process group, so its watchers stop with it.
        script = textwrap.dedent(
            f"""\
            set -eu
            PATH={path_first}$PATH setsid bash {SCRIPT} run >{tmp_path}/out 2>&1 &
            guard=$!
            sleep 2
            {textwrap.indent(textwrap.dedent(snippet), "            ").strip()}
            kill -- -$guard 2>/dev/null || true
            wait $guard || echo "guard status $?" >>{tmp_path}/out
            """
        )
        env = {
            "GUARD_DIR": str(tmp_path),
            "K8S_IPSEC_SBIN": str(sbin),
            "K8S_IPSEC_GUARD_INTERVAL": str(interval),
            "K8S_IPSEC_GUARD_RECHECK": "60",
        }
        in_netns(script, env, expect_status)
        calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
        return (tmp_path / "out").read_text(), calls

    return run


FIRST_PASS = ["cni0 check", "tunnels check", "firewall check"]


def test_changes_wake_the_guard_and_nothing_is_read_without_them(guard):
    out, calls = guard(
        """
        sleep 3
        ip link set lo up
        sleep 2
        iptables -N PROBE
        sleep 2
        """
    )
    # A 1 s interval over 9 s would have read the firewall 9 times: its changes are watched instead.
    assert calls == [*FIRST_PASS, "cni0 check", "tunnels check", "firewall check"], out


def test_drifted_firewall_is_restored_when_its_rules_change(guard, tmp_path):
    out, calls = guard(
        f"""
        touch {tmp_path}/drift-firewall
        iptables -N PROBE
        sleep 2
        """
    )
    assert calls == [*FIRST_PASS, "firewall check", "firewall apply"], out
    assert "k8s-ipsec-firewall drifted: firewall is off\nk8s-ipsec-firewall restored\n" in out


def test_without_firewall_events_the_rules_are_read_every_interval(guard, tmp_path):
    legacy = stand_in(tmp_path / "legacy", "iptables", 'echo "iptables v1.8.9 (legacy)"')
    out, calls = guard("sleep 4", path_first=legacy)
    assert calls[:3] == FIRST_PASS, out
    assert calls.count("firewall check") >= 4, calls
    assert "cni0 check" not in calls[3:], calls


def test_a_watcher_that_ends_ends_the_guard_for_systemd_to_start_again(guard, tmp_path):
    broken = stand_in(tmp_path / "broken", "xtables-monitor", "exit 1")
    out, _calls = guard("sleep 1", path_first=broken)
    assert "an event watcher ended; exiting so that systemd starts the guard again" in out
    assert "guard status 1" in out
