"""Runs a shell script in a private network namespace of its own (unshare -n), as root: iptables and links
changed there never touch the machine."""

import subprocess

PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def in_netns(script, env=None, expect_status=0):
    """Runs `script` with sh -c in a fresh network namespace; asserts its exit status and returns its output."""
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", script],
        env={"PATH": PATH, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == expect_status, proc.stdout + proc.stderr
    return proc.stdout
