"""Turns the results of `make bench` (.bench/results) into docs/benchmarks.md and its plots (docs/benchmarks/*.png).

Every results file is optional: a section without its file says "Not measured in this run" instead of a table. The
report depends only on the files it reads, never on the clock, so the same results give the same bytes.

    python tests/bench/report.py [--results DIR] [--out FILE] [--plots DIR]
"""

import argparse
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import matplotlib
import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RESULTS = ROOT / ".bench/results"
DEFAULT_OUT = ROOT / "docs/benchmarks.md"
DEFAULT_PLOTS = ROOT / "docs/benchmarks"

NOT_MEASURED = "Not measured in this run."
DEFAULT_COMMAND = "make bench"
COMMAND_PREFIX = "# command:"
NO_FIGURE = "—"
LINE_WIDTH = 120  # as the repository's other docs

EMULATED_WARNING = (
    "The lab's CPUs are emulated (QEMU TCG): every instruction, the cipher's included, is translated in software, so "
    "these ratios say little about real hardware; measure on your own machines."
)

# The stamp's known keys in the order shown; any other key of meta.txt follows them.
STAMP_KEYS = {
    "date": "Date",
    "commit": "Commit",
    "host_cpu": "Host CPU",
    "lab_cpu": "Lab CPU",
    "platform": "Platform",
    "nodes": "Lab nodes",
    "command": "Made by",
}

PLAYBOOK_NAMES = {
    "site-first": "site.yml, first converge",
    "site-noop": "site.yml, again (no change)",
    "rotate-certs": "rotate.yml (certs)",
    "rotate-ca": "rotate.yml -e rotate=ca",
    "rotate-psk": "rotate.yml -e rotate=psk",
    "add-node": "add_node.yml (1 node)",
    "remove-node": "remove_node.yml (1 node)",
    "reset-node": "reset.yml (1 node)",
    "reset-all": "reset.yml (every node)",
}
STRATEGIES = ("linear", "mitogen")

FAULT_NAMES = {
    "restart-strongswan-responder": "strongSwan restarted (responder)",
    "restart-strongswan-initiator": "strongSwan restarted (initiator)",
    "terminate-ike-initiator": "IKE_SA terminated (initiator)",
    "terminate-ike-responder": "IKE_SA terminated (responder)",
    "charon-stopped-10s": "charon stopped 10 s",
    "device-deleted": "tunnel device deleted",
    "address-deleted": "cni0 address deleted",
    "route-deleted": "route to a peer deleted",
    "firewall-flushed": "firewall flushed (nft flush ruleset)",
    "cni0-deleted": "cni0 deleted",
    "reboot": "node rebooted",
}

# The original demo's suite: as a proposal (aes128-sha256, maybe with a DH group after it), or as the bench reads
# it off the installed SA (AES_CBC-128-HMAC_SHA2_256_128).
ORIGINAL_DEMO_PROPOSALS = ("aes128-sha256", "AES_CBC-128-HMAC_SHA2_256")

PLOT_NAMES = ("plan.png", "node-program.png", "playbooks.png", "recovery.png", "throughput.png")


class MalformedResults(Exception):
    """A results file that cannot be read; the message starts with file:line."""


class Record(NamedTuple):
    where: str  # "file:line", for errors about this record's values
    fields: dict


class Section(NamedTuple):
    command: str
    records: list


# Reading


def read_meta(path):
    """meta.txt: `key=value` a line, the value being the rest of the line (CPU models have spaces)."""
    if not path.is_file():
        return {}
    meta = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or not key or " " in key:
            raise MalformedResults(f"{path}:{number}: expected key=value, got {line!r}")
        if key in meta:
            raise MalformedResults(f"{path}:{number}: {key} is given twice")
        meta[key] = value.strip()
    return meta


def read_section(path):
    """A section's file: records of space-separated key=value pairs; None when the run did not make the file."""
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    command = DEFAULT_COMMAND
    if lines and lines[0].startswith(COMMAND_PREFIX):
        command = lines[0][len(COMMAND_PREFIX) :].strip() or DEFAULT_COMMAND
    records = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        fields = {}
        for pair in line.split():
            key, equals, value = pair.partition("=")
            if not equals or not key:
                raise MalformedResults(f"{where}: expected key=value, got {pair!r}")
            if key in fields:
                raise MalformedResults(f"{where}: {key} is given twice")
            fields[key] = value
        records.append(Record(where, fields))
    return Section(command, records)


def value(record, key, convert=float, required=True):
    """A record's field as a number; errors name the record's file and line, since the bench wrote it."""
    if key not in record.fields:
        if required:
            raise MalformedResults(f"{record.where}: no {key}= in this record")
        return None
    text = record.fields[key]
    try:
        return convert(text)
    except ValueError:
        kind = "a whole number" if convert is int else "a number"
        raise MalformedResults(f"{record.where}: {key}={text} is not {kind}") from None


def numbers(record, key):
    """A comma-separated list of numbers, e.g. the guard's CPU seconds per node."""
    text = value(record, key, str)
    try:
        return [float(item) for item in text.split(",")]
    except ValueError:
        raise MalformedResults(f"{record.where}: {key}={text} is not a comma-separated list of numbers") from None


# Formatting


def seconds(figure):
    if figure is None:
        return NO_FIGURE
    rounded = round(figure, 1)
    # Past 100 s the tenth is noise between runs.
    return f"{figure:.0f}" if abs(rounded) >= 100 else f"{rounded:.1f}"


def milliseconds(figure):
    return f"{figure:.2f}"


def mbits(figure):
    return f"{figure:.1f}"


def percent(figure, decimals=1):
    return f"{figure:.{decimals}f}%"


def cell(text):
    return str(text).replace("|", "\\|")


def table(header, rows, align):
    """A Markdown pipe table; align is one letter a column, l or r."""
    rule = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule[letter] for letter in align) + "|"]
    lines += ["| " + " | ".join(cell(text) for text in row) + " |" for row in rows]
    return lines


def section_head(number, title, what, section):
    command = section.command if section else DEFAULT_COMMAND
    return [f"## {number}. {title}", "", what, "", f"Made by: `{command}`", ""]


def image(alt, link):
    return [f"![{alt}]({link})", ""]


# Plots


def new_figure(width, height):
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure, path):
    # Without a Software entry the PNG holds nothing but the picture: no version, no date.
    figure.savefig(path, format="png", dpi=100, metadata={"Software": None})


# 1. Plan


def plan_section(section, link):
    lines = section_head(
        1,
        "Plan",
        "How long planning the mesh takes for N nodes: the planning function alone in Python, the mesh_plan module "
        "run by ansible-playbook on localhost, and the same playbook with a do-nothing module given the same "
        "arguments; the difference of the last two is the plan's own share of the Ansible run.",
        section,
    )
    if not section or not section.records:
        return [*lines, NOT_MEASURED, ""], []
    rows = []
    for record in section.records:
        rows.append(
            (
                value(record, "nodes", int),
                value(record, "pure_ms"),
                value(record, "ansible_s", required=False),
                value(record, "noop_s", required=False),
            )
        )
    rows.sort(key=lambda row: row[0])
    cells = []
    for nodes, pure_ms, ansible_s, noop_s in rows:
        share = ansible_s - noop_s if ansible_s is not None and noop_s is not None else None
        cells.append((nodes, milliseconds(pure_ms), seconds(ansible_s), seconds(noop_s), seconds(share)))
    lines += table(
        ["nodes", "pure (ms)", "through Ansible (s)", "do-nothing module (s)", "the plan's own share in Ansible (s)"],
        cells,
        "rrrrr",
    )
    lines.append("")
    return [*lines, *image("Planning time by number of nodes", link("plan.png"))], [("plan.png", plot_plan, rows)]


def plot_plan(rows, path):
    figure = new_figure(9, 3.6)
    pure_axes, ansible_axes = figure.subplots(1, 2)
    pure_axes.plot([row[0] for row in rows], [row[1] for row in rows], marker="o")
    pure_axes.set(xscale="log", xlabel="nodes", ylabel="ms", title="planning function alone")
    for column, label in ((2, "mesh_plan through ansible-playbook"), (3, "do-nothing module")):
        measured = [row for row in rows if row[column] is not None]
        if measured:
            ansible_axes.plot([row[0] for row in measured], [row[column] for row in measured], marker="o", label=label)
    ansible_axes.set(xscale="log", xlabel="nodes", ylabel="s", title="through Ansible")
    if ansible_axes.lines:
        ansible_axes.legend()
    save(figure, path)


# 2. Node program


def split_summary(section, key):
    """(the section's one summary record, the one with `key`, or None; its other records): a second one is an error."""
    summary, rows = None, []
    for record in section.records:
        if key not in record.fields:
            rows.append(record)
        elif summary is not None:
            raise MalformedResults(f"{record.where}: a second {key} record")
        else:
            summary = record
    return summary, rows


def node_section(section, link):
    lines = section_head(
        2,
        "Node program",
        "How long the node program takes on one lab node to apply its tunnels and to check them, by number of peers; "
        "and the CPU time the guard uses on each node of an idle, converged lab.",
        section,
    )
    if not section or not section.records:
        return [*lines, NOT_MEASURED, ""], []
    guard_record, peer_records = split_summary(section, "guard_idle_s")
    guard = None
    if guard_record:
        guard = (value(guard_record, "guard_idle_s"), numbers(guard_record, "cpu_s"))
        if guard[0] <= 0:
            raise MalformedResults(f"{guard_record.where}: guard_idle_s must be more than 0 (it divides the CPU time)")
    rows = [
        (value(record, "peers", int), value(record, "apply_s"), value(record, "check_s")) for record in peer_records
    ]
    rows.sort(key=lambda row: row[0])
    written = []
    if rows:
        lines += table(
            ["peers", "apply (s)", "check (s)"],
            [(peers, seconds(apply_s), seconds(check_s)) for peers, apply_s, check_s in rows],
            "rrr",
        )
    else:
        lines.append(NOT_MEASURED)
    lines.append("")
    if guard is None:
        lines += ["The guard's idle CPU time: " + NOT_MEASURED, ""]
    else:
        idle_s, cpu_s = guard
        lines += [f"The guard's CPU time over {seconds(idle_s)} s of an idle, converged lab:", ""]
        lines += table(
            ["node", "CPU (s)", "share of one CPU"],
            [
                (f"node {index}", seconds(used), percent(used / idle_s * 100, 2))
                for index, used in enumerate(cpu_s, start=1)
            ],
            "lrr",
        )
        lines.append("")
    if rows:
        lines += image("The node program's apply and check times by number of peers", link("node-program.png"))
        written.append(("node-program.png", plot_node, rows))
    return lines, written


def plot_node(rows, path):
    figure = new_figure(6, 4)
    axes = figure.subplots()
    peers = [row[0] for row in rows]
    axes.plot(peers, [row[1] for row in rows], marker="o", label="apply")
    axes.plot(peers, [row[2] for row in rows], marker="s", label="check")
    axes.set(xscale="log", yscale="log", xlabel="peers", ylabel="s", title="node program on one lab node")
    axes.legend()
    save(figure, path)


# 3. Playbooks


def playbook_runs(section):
    """{label: {strategy: record}} in the order of PLAYBOOK_NAMES, then unknown labels as the file has them."""
    runs = {}
    for record in section.records:
        label = value(record, "playbook", str)
        strategy = value(record, "strategy", str)
        if strategy not in STRATEGIES:
            raise MalformedResults(f"{record.where}: strategy={strategy} is neither {' nor '.join(STRATEGIES)}")
        by_strategy = runs.setdefault(label, {})
        if strategy in by_strategy:
            raise MalformedResults(f"{record.where}: a second {label} run with strategy={strategy}")
        # A failed run may have no time; a successful one must.
        rc = value(record, "rc", int, required=False) or 0
        value(record, "seconds", required=rc == 0)
        by_strategy[strategy] = record
    known = [label for label in PLAYBOOK_NAMES if label in runs]
    return {label: runs[label] for label in known + [label for label in runs if label not in PLAYBOOK_NAMES]}


def run_seconds(record, key):
    """(text for the table, seconds or None): a failed run shows its exit status, not a time."""
    if record is None:
        return NO_FIGURE, None
    rc = value(record, "rc", int, required=False) or 0
    if rc != 0:
        return f"failed (rc {rc})", None
    figure = value(record, key, required=False)
    return seconds(figure), figure


def changed_tasks(record):
    if record is None or "changed" not in record.fields:
        return NO_FIGURE
    return ", ".join(item.replace(":", " ", 1) for item in record.fields["changed"].split(","))


def ratio(linear, mitogen):
    if linear is None or not mitogen:
        return NO_FIGURE
    return f"{linear / mitogen:.2f}"


def playbooks_section(section, meta, link):
    on_nodes = f"the lab's {meta['nodes']} nodes" if "nodes" in meta else "the lab's nodes"
    lines = section_head(
        3,
        "Playbooks",
        f"Wall-clock seconds of each playbook on {on_nodes}, with Ansible's own linear strategy and with mitogen, and "
        "the tasks each run changed on each node.",
        section,
    )
    if not section or not section.records:
        return [*lines, NOT_MEASURED, ""], []
    cells, bars = [], []
    for label, by_strategy in playbook_runs(section).items():
        linear, mitogen = by_strategy.get("linear"), by_strategy.get("mitogen")
        name = PLAYBOOK_NAMES.get(label, label)
        (linear_text, linear_s), (mitogen_text, mitogen_s) = (
            run_seconds(linear, "seconds"),
            run_seconds(mitogen, "seconds"),
        )
        ratio_text = ratio(linear_s, mitogen_s)
        cells.append((name, linear_text, mitogen_text, ratio_text, changed_tasks(linear), changed_tasks(mitogen)))
        bars.append((name, linear_s, linear_text, mitogen_s, mitogen_text))
        if label != "add-node":
            continue
        # add_node.yml times its two halves: what the members do, and the new node's own converge.
        for key, part in (("members_s", "members' part"), ("new_node_s", "new node's part")):
            if any(key in record.fields for record in by_strategy.values()):
                (linear_text, linear_s), (mitogen_text, mitogen_s) = run_seconds(linear, key), run_seconds(mitogen, key)
                ratio_text = ratio(linear_s, mitogen_s)
                cells.append((f"add_node.yml: {part}", linear_text, mitogen_text, ratio_text, NO_FIGURE, NO_FIGURE))
    lines += table(
        ["playbook", "linear (s)", "mitogen (s)", "linear/mitogen ratio", "changed (linear)", "changed (mitogen)"],
        cells,
        "lrrrll",
    )
    lines.append("")
    return [*lines, *image("Playbook times, linear against mitogen", link("playbooks.png"))], [
        ("playbooks.png", plot_playbooks, bars)
    ]


def plot_playbooks(bars, path):
    figure = new_figure(8, 1 + 0.6 * len(bars))
    axes = figure.subplots()
    height = 0.4
    longest = max([row[1] or 0 for row in bars] + [row[3] or 0 for row in bars] + [1])
    for offset, (strategy, seconds_at, text_at) in enumerate((("linear", 1, 2), ("mitogen", 3, 4))):
        positions = [index + (offset - 0.5) * height for index in range(len(bars))]
        figures = [row[seconds_at] or 0 for row in bars]
        axes.barh(positions, figures, height=height, label=strategy)
        for position, figure_s, row in zip(positions, figures, bars, strict=True):
            # Failed or missing runs have no bar: say why where the bar would be.
            label = "not run" if row[text_at] == NO_FIGURE else row[text_at]
            axes.text(figure_s + longest * 0.01, position, label, va="center", fontsize=8)
    axes.set_yticks(range(len(bars)), [row[0] for row in bars])
    axes.invert_yaxis()
    axes.set_xlim(0, longest * 1.15)
    axes.set(xlabel="s", title="playbooks")
    axes.legend(loc="lower right")
    save(figure, path)


# 4. Recovery


def recovery_section(section, link):
    lines = section_head(
        4,
        "Recovery",
        "Faults injected on a running lab while one pod pings another node's pod every 0.2 s: the longest gap in the "
        "replies, the pings lost of those sent, and the seconds until the SAs are settled and a round of probes from "
        "every pod and node to every pod passes (a round takes several seconds, so this is an upper bound; the gap is "
        "the outage).",
        section,
    )
    if not section or not section.records:
        return [*lines, NOT_MEASURED, ""], []
    capture_record, fault_records = split_summary(section, "cleartext")
    capture = None
    if capture_record:
        capture = (
            value(capture_record, "cleartext", int),
            value(capture_record, "esp", int),
            capture_record.fields.get("capture"),
        )
    faults = [
        (
            FAULT_NAMES.get(value(record, "fault", str), record.fields["fault"]),
            value(record, "node", str),
            value(record, "gap_s"),
            value(record, "lost", int),
            value(record, "sent", int),
            value(record, "back_s", required=False),
        )
        for record in fault_records
    ]
    written = []
    if faults:
        lines += table(
            ["fault", "node", "longest gap (s)", "lost / sent", "back after (s)"],
            [
                (name, node, seconds(gap), f"{lost} / {sent}", seconds(back))
                for name, node, gap, lost, sent, back in faults
            ],
            "llrrr",
        )
    else:
        lines.append(NOT_MEASURED)
    lines.append("")
    if capture is None:
        lines += ["Cleartext pod packets on the underlay during these faults: " + NOT_MEASURED, ""]
    else:
        cleartext, esp, interface = capture
        on = f", captured on {interface}" if interface else ""
        lines += [
            f"Cleartext pod packets on the underlay during these faults: {cleartext} (of {esp} ESP packets{on}).",
            "",
        ]
    if faults:
        lines += image("Longest ping gap per fault", link("recovery.png"))
        written.append(("recovery.png", plot_recovery, faults))
    return lines, written


def plot_recovery(faults, path):
    figure = new_figure(8, 1 + 0.45 * len(faults))
    axes = figure.subplots()
    labels = [f"{name} ({node})" for name, node, *_rest in faults]
    gaps = [fault[2] for fault in faults]
    axes.barh(range(len(faults)), gaps, height=0.6)
    longest = max(gaps + [1])
    for index, (_name, _node, gap, lost, sent, _back) in enumerate(faults):
        axes.text(gap + longest * 0.01, index, f"lost {lost} of {sent}", va="center", fontsize=8)
    axes.set_yticks(range(len(faults)), labels)
    axes.invert_yaxis()
    axes.set_xlim(0, longest * 1.25)
    axes.set(xlabel="longest gap in pings (s)", title="recovery from faults")
    save(figure, path)


# 5. Tunnel throughput


def proposal_name(proposal):
    if proposal.startswith(ORIGINAL_DEMO_PROPOSALS):
        return f"`{proposal}` (the original demo's AES-CBC-128/HMAC-SHA256)"
    return f"`{proposal}`"


def throughput_section(section, meta, link):
    lines = section_head(
        5,
        "Tunnel throughput",
        "Throughput between pods on two nodes through the tunnel, against the same two nodes over the underlay, per "
        "ESP proposal and number of parallel streams.",
        section,
    )
    if not section or not section.records:
        lines += [NOT_MEASURED, ""]
        written = []
    else:
        rows = [
            (
                value(record, "proposal", str),
                value(record, "streams", int),
                value(record, "tunnel_mbps"),
                value(record, "underlay_mbps"),
            )
            for record in section.records
        ]
        lines += table(
            [
                "ESP proposal",
                "streams",
                "pod-to-pod over the tunnel (Mbit/s)",
                "underlay (Mbit/s)",
                "ratio (tunnel/underlay)",
            ],
            [
                (
                    proposal_name(proposal),
                    streams,
                    mbits(tunnel),
                    mbits(underlay),
                    percent(tunnel / underlay * 100) if underlay else NO_FIGURE,
                )
                for proposal, streams, tunnel, underlay in rows
            ],
            "lrrrr",
        )
        lines.append("")
        # Right under the figures, so that nobody quotes them without it.
        if meta.get("emulated", "").lower() == "yes":
            lines += [EMULATED_WARNING, ""]
        lines += image("Tunnel throughput as a share of the underlay's", link("throughput.png"))
        written = [("throughput.png", plot_throughput, rows)]
    return lines, written


def plot_throughput(rows, path):
    proposals = list(dict.fromkeys(row[0] for row in rows))
    stream_counts = sorted({row[1] for row in rows})
    share = {(row[0], row[1]): row[2] / row[3] * 100 for row in rows if row[3]}
    figure = new_figure(7, 4)
    axes = figure.subplots()
    width = 0.8 / len(stream_counts)
    for offset, streams in enumerate(stream_counts):
        positions = [index + (offset - (len(stream_counts) - 1) / 2) * width for index in range(len(proposals))]
        # NaN draws no bar: a pair not measured must not look like a tunnel that carried nothing.
        shares = [share.get((proposal, streams), math.nan) for proposal in proposals]
        bars = axes.bar(positions, shares, width=width, label=f"{streams} stream" + ("" if streams == 1 else "s"))
        axes.bar_label(bars, labels=["" if math.isnan(figure) else percent(figure) for figure in shares], fontsize=8)
    axes.set_xticks(range(len(proposals)), proposals)
    axes.margins(y=0.12)  # room for the labels above the tallest bar
    axes.set(ylabel="tunnel / underlay (%)", title="tunnel throughput as a share of the underlay's")
    axes.legend()
    save(figure, path)


# The report


def stamp(meta):
    lines = []
    for key, label in STAMP_KEYS.items():
        text = meta.get(key, "unknown")
        if key == "lab_cpu":
            text += f", emulated: {meta.get('emulated', 'unknown')}"
        elif key == "command":
            text = f"`{text}`"
        lines.append(f"- {label}: {text}")
    lines += [f"- {key}: {text}" for key, text in meta.items() if key not in STAMP_KEYS and key != "emulated"]
    return lines


def build_report(results, link):
    """The report's text and its plots still to draw, as (file name, function, data); nothing is drawn here, so a
    malformed line in the last file stops the run before any plot is written."""
    meta = read_meta(results / "meta.txt")
    lines = ["# Benchmarks", "", *stamp(meta), ""]
    lines += [
        "These figures are measurements of one run on a shared machine: they are printed, never asserted, and "
        "another run will differ. Re-make this page with `make bench`.",
        "",
    ]
    plots = []
    for section_lines, section_plots in (
        plan_section(read_section(results / "plan.txt"), link),
        node_section(read_section(results / "node.txt"), link),
        playbooks_section(read_section(results / "playbooks.txt"), meta, link),
        recovery_section(read_section(results / "recovery.txt"), link),
        throughput_section(read_section(results / "throughput.txt"), meta, link),
    ):
        lines += section_lines
        plots += section_plots
    while lines[-1] == "":
        lines.pop()
    return "\n".join(wrap_prose(lines)) + "\n", plots


def wrap_prose(lines):
    """Wraps sentences and list items at LINE_WIDTH; tables, headings and images must stay on one line."""
    wrapped = []
    for line in lines:
        if len(line) <= LINE_WIDTH or line.startswith(("|", "#", "![")):
            wrapped.append(line)
            continue
        indent = "  " if line.startswith("- ") else ""
        wrapped += textwrap.wrap(
            line, LINE_WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
        )
    return wrapped


def write_report(results, out, plots_dir):
    """Writes the report and its plots; returns the paths written, the report first."""
    results, out, plots_dir = Path(results), Path(out), Path(plots_dir)
    if not results.is_dir():
        raise MalformedResults(f"{results}: no such folder (run `make bench` first)")

    def link(name):
        # Relative to the report, so the links work on GitHub and in a checkout alike.
        return Path(os.path.relpath(plots_dir / name, out.parent)).as_posix()

    text, plots = build_report(results, link)
    plots_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The style and hash salt are fixed so that a user's matplotlibrc cannot change the bytes.
    with matplotlib.style.context("default"), matplotlib.rc_context({"svg.hashsalt": "k8s-ipsec-bench"}):
        for name, draw, data in plots:
            draw(data, plots_dir / name)
    # A plot of a section this run did not measure would be from an older run: it must not sit beside this report.
    drawn = [plot[0] for plot in plots]
    for name in PLOT_NAMES:
        if name not in drawn:
            (plots_dir / name).unlink(missing_ok=True)
    out.write_text(text, encoding="utf-8")
    return [out, *(plots_dir / name for name in drawn)]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Writes the Markdown report and plots of `make bench`'s results.")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (%(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown report to write (%(default)s)")
    parser.add_argument("--plots", type=Path, default=DEFAULT_PLOTS, help="folder for the PNG plots (%(default)s)")
    options = parser.parse_args(argv)
    try:
        written = write_report(options.results, options.out, options.plots)
    except MalformedResults as error:
        print(f"report.py: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
