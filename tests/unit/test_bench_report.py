"""tests/bench/report.py, the Markdown report and plots of `make bench`, from sample results: the figures asserted
are the samples' own, never a timer's."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPORT_PY = Path(__file__).resolve().parents[2] / "tests/bench/report.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_report_module():
    # tests/bench is not a package and "report" is too common a name to put its folder on sys.path.
    spec = importlib.util.spec_from_file_location("bench_report", REPORT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load_report_module()

SAMPLES = {
    "meta.txt": """\
date=2026-03-01T12:00:00Z
commit=abc1234+dirty
host_cpu=AMD EPYC 7B13 64-Core Processor
lab_cpu=QEMU TCG (emulated)
emulated=yes
platform=Debian GNU/Linux 13 (trixie), kernel 6.12.x, strongSwan 6.0.1
nodes=3
command=make bench
runner=ci box 7
""",
    "plan.txt": """\
# command: make bench-plan
nodes=100 pure_ms=8.456 ansible_s=2.91 noop_s=2.10
nodes=10 pure_ms=0.834 ansible_s=2.41 noop_s=2.10
nodes=1000 pure_ms=95.1
""",
    "node.txt": """\
peers=10 apply_s=5.10 check_s=1.91

# a comment between records
peers=100 apply_s=48.26 check_s=12.04
peers=1000 apply_s=512.7 check_s=130.2
guard_idle_s=300 cpu_s=6.4,5.7,6.1
""",
    "playbooks.txt": """\
playbook=site-first strategy=linear seconds=777 changed=n1:40,n2:40,n3:40 rc=0
playbook=site-first strategy=mitogen seconds=300 changed=n1:40,n2:40,n3:40 rc=0
playbook=site-noop strategy=linear seconds=90 changed=n1:0,n2:0,n3:0 rc=0
playbook=site-noop strategy=mitogen seconds=30 changed=n1:0,n2:0,n3:0 rc=0
playbook=add-node strategy=linear seconds=160 changed=n1:3,n2:3,n3:3,n4:40 rc=0 members_s=40 new_node_s=120
playbook=add-node strategy=mitogen seconds=80 changed=n1:3,n2:3,n3:3,n4:40 rc=0 members_s=20 new_node_s=60
playbook=rotate-certs strategy=linear seconds=200 changed=n1:5,n2:5,n3:5 rc=0
playbook=rotate-certs strategy=mitogen seconds=1 rc=4
playbook=reset-all strategy=mitogen seconds=50 changed=n1:9,n2:9,n3:9 rc=0
""",
    "recovery.txt": """\
fault=restart-strongswan-responder node=n3 gap_s=1.2 lost=3 sent=400 back_s=12
fault=device-deleted node=n2 gap_s=4.56 lost=9 sent=400
fault=disk-full node=n1 gap_s=0 lost=0 sent=400 back_s=0.5
cleartext=0 esp=123456 capture=br0
""",
    "throughput.txt": """\
proposal=aes256gcm16-x25519 streams=1 tunnel_mbps=95.2 underlay_mbps=410.0
proposal=aes256gcm16-x25519 streams=4 tunnel_mbps=180.44 underlay_mbps=900.0
proposal=aes128-sha256-modp3072 streams=1 tunnel_mbps=40.0 underlay_mbps=400.0
""",
}

SECTION_FILES = ("plan.txt", "node.txt", "playbooks.txt", "recovery.txt", "throughput.txt")
PLOTS = ("plan.png", "node-program.png", "playbooks.png", "recovery.png", "throughput.png")


def make_results(folder, leave_out=(), replace=None):
    folder.mkdir(parents=True)
    for name, text in {**SAMPLES, **(replace or {})}.items():
        if name not in leave_out:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def run_report(tmp_path, **results_options):
    results = make_results(tmp_path / "results", **results_options)
    out = tmp_path / "docs/benchmarks.md"
    written = report.write_report(results, out, tmp_path / "docs/benchmarks")
    return out.read_text(encoding="utf-8"), written


def section(text, heading):
    """One section's text, from its heading to the next."""
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def table_rows(text):
    """The cells of every table row in text, header and rule lines included."""
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in text.splitlines() if line[:1] == "|"]


def prose(text):
    """Text with its line breaks and runs of spaces as single spaces: the report wraps sentences at 120 columns."""
    return " ".join(text.split())


def row_of(text, first_cell):
    matches = [row for row in table_rows(text) if row[0] == first_cell]
    assert len(matches) == 1, f"expected one row {first_cell!r}, got {matches} in:\n{text}"
    return matches[0]


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    return run_report(tmp_path_factory.mktemp("full"))


def test_stamp_comes_from_meta(full_report):
    text = full_report[0]
    assert text.startswith("# Benchmarks\n")
    for line in (
        "- Date: 2026-03-01T12:00:00Z",
        "- Commit: abc1234+dirty",
        "- Host CPU: AMD EPYC 7B13 64-Core Processor",
        "- Lab CPU: QEMU TCG (emulated), emulated: yes",
        "- Platform: Debian GNU/Linux 13 (trixie), kernel 6.12.x, strongSwan 6.0.1",
        "- Made by: `make bench`",
        "- runner: ci box 7",
    ):
        assert line in text.splitlines()
    assert "printed, never asserted" in prose(text)
    # Prose is wrapped like the other docs; tables and images are not.
    assert all(len(line) <= 120 for line in text.splitlines() if not line.startswith(("|", "![")))


def test_sections_in_order(full_report):
    text = full_report[0]
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## 1. Plan",
        "## 2. Node program",
        "## 3. Playbooks",
        "## 4. Recovery",
        "## 5. Tunnel throughput",
    ]
    assert "Not measured in this run" not in text


def test_plan_table(full_report):
    plan = section(full_report[0], "## 1. Plan")
    assert "Made by: `make bench-plan`" in plan
    # Sorted by nodes; the share is ansible_s - noop_s; a row without Ansible figures has dashes.
    assert [row[0] for row in table_rows(plan)[2:]] == ["10", "100", "1000"]
    assert row_of(plan, "10") == ["10", "0.83", "2.4", "2.1", "0.3"]
    assert row_of(plan, "100") == ["100", "8.46", "2.9", "2.1", "0.8"]
    assert row_of(plan, "1000") == ["1000", "95.10", "—", "—", "—"]
    assert "![Planning time by number of nodes](benchmarks/plan.png)" in plan


def test_node_program_table_and_guard(full_report):
    node = section(full_report[0], "## 2. Node program")
    assert "Made by: `make bench`" in node
    assert row_of(node, "10") == ["10", "5.1", "1.9"]
    assert row_of(node, "100") == ["100", "48.3", "12.0"]
    # 100 s and more: whole seconds.
    assert row_of(node, "1000") == ["1000", "513", "130"]
    assert "over 300 s of an idle" in prose(node)
    assert row_of(node, "node 1") == ["node 1", "6.4", "2.13%"]
    assert row_of(node, "node 2") == ["node 2", "5.7", "1.90%"]
    assert row_of(node, "node 3") == ["node 3", "6.1", "2.03%"]
    assert "(benchmarks/node-program.png)" in node


def test_playbooks_table(full_report):
    playbooks = section(full_report[0], "## 3. Playbooks")
    assert "on the lab's 3 nodes" in prose(playbooks)
    names = [row[0] for row in table_rows(playbooks)[2:]]
    # The order of the labels, whatever the file's; the missing ones have no row.
    assert names == [
        "site.yml, first converge",
        "site.yml, again (no change)",
        "rotate.yml (certs)",
        "add_node.yml (1 node)",
        "add_node.yml: members' part",
        "add_node.yml: new node's part",
        "reset.yml (every node)",
    ]
    assert row_of(playbooks, "site.yml, first converge") == [
        "site.yml, first converge",
        "777",
        "300",
        "2.59",
        "n1 40, n2 40, n3 40",
        "n1 40, n2 40, n3 40",
    ]
    assert row_of(playbooks, "site.yml, again (no change)")[1:4] == ["90.0", "30.0", "3.00"]
    assert row_of(playbooks, "rotate.yml (certs)")[1:5] == ["200", "failed (rc 4)", "—", "n1 5, n2 5, n3 5"]
    assert row_of(playbooks, "add_node.yml: members' part")[1:] == ["40.0", "20.0", "2.00", "—", "—"]
    assert row_of(playbooks, "add_node.yml: new node's part")[1:] == ["120", "60.0", "2.00", "—", "—"]
    assert row_of(playbooks, "reset.yml (every node)")[1:4] == ["—", "50.0", "—"]
    assert "(benchmarks/playbooks.png)" in playbooks


def test_recovery_table_a_row_per_fault(full_report):
    recovery = section(full_report[0], "## 4. Recovery")
    assert [row[0] for row in table_rows(recovery)[2:]] == [
        "strongSwan restarted (responder)",
        "tunnel device deleted",
        "disk-full",  # unknown to the report: shown by its key
    ]
    assert row_of(recovery, "strongSwan restarted (responder)") == [
        "strongSwan restarted (responder)",
        "n3",
        "1.2",
        "3 / 400",
        "12.0",
    ]
    assert row_of(recovery, "tunnel device deleted") == ["tunnel device deleted", "n2", "4.6", "9 / 400", "—"]
    assert (
        "Cleartext pod packets on the underlay during these faults: 0 (of 123456 ESP packets, captured on br0)."
        in prose(recovery)
    )
    assert "(benchmarks/recovery.png)" in recovery


def test_throughput_table_and_emulation_warning(full_report):
    throughput = section(full_report[0], "## 5. Tunnel throughput")
    rows = table_rows(throughput)[2:]
    assert rows == [
        ["`aes256gcm16-x25519`", "1", "95.2", "410.0", "23.2%"],
        ["`aes256gcm16-x25519`", "4", "180.4", "900.0", "20.0%"],
        ["`aes128-sha256-modp3072` (the original demo's AES-CBC-128/HMAC-SHA256)", "1", "40.0", "400.0", "10.0%"],
    ]
    assert report.EMULATED_WARNING in prose(throughput)
    assert prose(throughput).index(report.EMULATED_WARNING) > prose(throughput).index("| `aes128-sha256")
    assert "(benchmarks/throughput.png)" in throughput


def test_plots_are_png(full_report):
    text, written = full_report
    assert written[0].name == "benchmarks.md"
    assert sorted(path.name for path in written[1:]) == sorted(PLOTS)
    for path in written[1:]:
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, path
        assert len(data) > 5000, f"{path} is only {len(data)} bytes"
        assert f"(benchmarks/{path.name})" in text


def test_same_results_same_bytes(full_report, tmp_path):
    first = full_report[1]
    second = run_report(tmp_path)[1]
    for before, after in zip(first, second, strict=True):
        assert before.read_bytes() == after.read_bytes(), f"{after.name} differs between two runs"


def test_png_has_no_software_or_date(full_report):
    for path in full_report[1][1:]:
        data = path.read_bytes()
        assert b"matplotlib" not in data.lower()
        assert b"tIME" not in data


@pytest.mark.parametrize(
    ("missing", "heading", "plot"),
    [
        ("plan.txt", "## 1. Plan", "plan.png"),
        ("node.txt", "## 2. Node program", "node-program.png"),
        ("playbooks.txt", "## 3. Playbooks", "playbooks.png"),
        ("recovery.txt", "## 4. Recovery", "recovery.png"),
        ("throughput.txt", "## 5. Tunnel throughput", "throughput.png"),
    ],
)
def test_missing_section_file_is_not_measured(tmp_path, missing, heading, plot):
    # A plot left by an earlier run must go, or the folder would show figures the report does not.
    stale = tmp_path / "docs/benchmarks" / plot
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    text, written = run_report(tmp_path, leave_out=(missing,))
    missing_section = section(text, heading)
    assert "Not measured in this run." in missing_section.splitlines()
    assert not table_rows(missing_section)
    assert plot not in missing_section
    assert not stale.exists()
    assert plot not in [path.name for path in written]
    # The other sections still have their tables.
    for other in ("## 1. Plan", "## 2. Node program", "## 3. Playbooks", "## 4. Recovery", "## 5. Tunnel throughput"):
        if other != heading:
            assert table_rows(section(text, other)), other


def test_empty_results_folder(tmp_path):
    text, written = run_report(tmp_path, leave_out=("meta.txt", *SECTION_FILES))
    assert text.count("Not measured in this run.") == 5
    assert "- Date: unknown" in text.splitlines()
    assert "- Lab CPU: unknown, emulated: unknown" in text.splitlines()
    assert report.EMULATED_WARNING not in prose(text)
    assert [path.name for path in written] == ["benchmarks.md"]


@pytest.mark.parametrize(
    ("name", "text", "line", "complaint"),
    [
        ("plan.txt", "nodes=10 pure_ms=0.8\nnodes=100 pure_ms\n", 2, "expected key=value"),
        ("node.txt", "# command: x\n\npeers=10 apply_s=fast check_s=1\n", 3, "apply_s=fast is not a number"),
        ("node.txt", "peers=10 apply_s=1 check_s=1\nguard_idle_s=0 cpu_s=1,2\n", 2, "guard_idle_s must be more"),
        ("node.txt", "guard_idle_s=300 cpu_s=1,,2\n", 1, "cpu_s=1,,2 is not a comma-separated list"),
        ("recovery.txt", "fault=reboot node=n1 lost=0 sent=10\n", 1, "no gap_s="),
        ("playbooks.txt", "playbook=site-first strategy=free seconds=1\n", 1, "strategy=free"),
        ("throughput.txt", "proposal=x streams=1.5 tunnel_mbps=1 underlay_mbps=2\n", 1, "not a whole number"),
        ("meta.txt", "date=today\nno equals sign here\n", 2, "expected key=value"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, name, text, line, complaint):
    results = make_results(tmp_path / "results", replace={name: text})
    with pytest.raises(report.MalformedResults) as raised:
        report.write_report(results, tmp_path / "docs/benchmarks.md", tmp_path / "docs/benchmarks")
    message = str(raised.value)
    assert message.startswith(f"{results / name}:{line}: "), message
    assert complaint in message
    # Nothing half-made: every file is read before the first plot is drawn.
    assert not (tmp_path / "docs").exists()


def test_cli_writes_and_prints_paths(tmp_path):
    results = make_results(tmp_path / "results", leave_out=("playbooks.txt", "recovery.txt", "throughput.txt"))
    out, plots = tmp_path / "site/bench.md", tmp_path / "site/img"
    result = subprocess.run(
        [sys.executable, str(REPORT_PY), "--results", str(results), "--out", str(out), "--plots", str(plots)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(out), str(plots / "plan.png"), str(plots / "node-program.png")]
    assert "(img/plan.png)" in out.read_text(encoding="utf-8")


def test_cli_malformed_line_exits_2(tmp_path):
    results = make_results(tmp_path / "results", replace={"node.txt": "peers=10 apply_s=1 check_s=1\npeers=x\n"})
    result = subprocess.run(
        # Every path given: a bug past the parsing must not write into the checkout's docs/.
        [
            sys.executable,
            str(REPORT_PY),
            *("--results", str(results), "--out", str(tmp_path / "out.md"), "--plots", str(tmp_path / "plots")),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert f"{results / 'node.txt'}:2: " in result.stderr
    assert "peers=x is not a whole number" in result.stderr
    assert not (tmp_path / "out.md").exists()
    assert not (tmp_path / "plots").exists()


def test_no_emulation_warning_on_real_cpus(tmp_path):
    meta = SAMPLES["meta.txt"].replace("emulated=yes", "emulated=no").replace("QEMU TCG (emulated)", "host")
    text = run_report(tmp_path, replace={"meta.txt": meta})[0]
    assert table_rows(section(text, "## 5. Tunnel throughput"))
    assert "emulated" not in prose(section(text, "## 5. Tunnel throughput"))
