"""Runs Ansible's own command-line tools from the repo, with the repo's ansible.cfg, as a user would."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run_ansible(tool, *args, env_extra=None):
    """Run .venv/bin/<tool> with args in the repo root; returns the CompletedProcess (text output)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env.update(env_extra or {})
    return subprocess.run(
        [str(BIN / tool), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
