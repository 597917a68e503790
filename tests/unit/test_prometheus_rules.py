"""The alerting rules shipped for the nodes' metrics (roles/metrics/files/k8s-ipsec-rules.yml), checked and
unit-tested by promtool (tests/unit/prometheus/k8s-ipsec-rules-test.yml)."""

import shutil
import subprocess

import pytest
from ansible_cli import BIN, ROOT

RULES = ROOT / "roles/metrics/files/k8s-ipsec-rules.yml"
RULES_TEST = ROOT / "tests/unit/prometheus/k8s-ipsec-rules-test.yml"


def find_promtool():
    """The venv's promtool (`make tools` puts it there), else one on PATH; the test fails, not skips, without one:
    CI runs it."""
    for candidate in dict.fromkeys((BIN / "promtool", ROOT / ".venv/bin/promtool")):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(f"promtool is neither in {BIN} nor on PATH: run `make tools` (it installs .venv/bin/promtool)")
    return found


def run_promtool(*args):
    result = subprocess.run(
        [find_promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"promtool {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


def test_rules_are_valid():
    run_promtool("check", "rules", str(RULES))


def test_rules_unit_tests_pass():
    run_promtool("test", "rules", str(RULES_TEST))
