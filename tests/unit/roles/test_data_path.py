"""The data path as rendered for 3- and 4-node plans: swanctl.conf, secrets, conflist, charon settings, the scripts'
settings, and the static scripts run against a stand-in `ip` that records what they would do."""

import itertools
import json
import os
import re
import subprocess

import pytest
from ansible_cli import ROOT

SCRIPTS = {
    "k8s-ipsec-cni0": ROOT / "roles/cni_bridge/files/k8s-ipsec-cni0",
    "k8s-ipsec-firewall": ROOT / "roles/forward_rules/files/k8s-ipsec-firewall",
    "k8s-ipsec-tunnels": ROOT / "roles/strongswan/files/k8s-ipsec-tunnels",
    "k8s-ipsec-keeper": ROOT / "roles/strongswan/files/k8s-ipsec-keeper",
}


def parse_strongswan(text):
    """strongSwan's settings syntax (swanctl.conf, strongswan.conf) as nested dicts."""
    root = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            section = {}
            stack[-1][line[:-1].strip()] = section
            stack.append(section)
        elif line == "}":
            stack.pop()
        else:
            key, value = line.split("=", 1)
            stack[-1][key.strip()] = value.strip()
    assert len(stack) == 1, "unbalanced braces"
    return root


@pytest.fixture(params=["three_nodes", "four_nodes"])
def cluster(request):
    """(rendered files, {host: plan node}) for both layouts."""
    rendered = request.getfixturevalue(request.param)
    hosts = sorted(p.name for p in rendered.out.iterdir() if (p / "computed.json").exists())
    return rendered, {host: rendered.computed(host)["plan_node"] for host in hosts}


def connections(rendered, host, name="swanctl.conf"):
    return parse_strongswan(rendered.text(host, name))["connections"]


def pairs(plans):
    """(a, b, a's peer entry for b, b's peer entry for a) for every pair of nodes."""
    peer = {(host, p["name"]): p for host, plan in plans.items() for p in plan["peers"]}
    return [(a, b, peer[(a, b)], peer[(b, a)]) for a, b in itertools.combinations(sorted(plans), 2)]


def child(conn):
    (settings,) = conn["children"].values()
    return settings


def test_every_node_has_one_connection_per_peer(cluster):
    rendered, plans = cluster
    for host, plan in plans.items():
        conns = connections(rendered, host)
        assert sorted(conns) == sorted(p["connection"] for p in plan["peers"])
        assert len(conns) == len(plans) - 1


def test_exactly_one_end_of_every_pair_starts_the_tunnel(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        starts = [
            child(connections(rendered, host)[peer["connection"]])["start_action"]
            for host, peer in ((a, peer_of_a), (b, peer_of_b))
        ]
        assert sorted(starts) == ["none", "start"], (a, b)


def test_marks_are_equal_at_both_ends_and_unique_per_node(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = child(connections(rendered, a)[peer_of_a["connection"]])
        cb = child(connections(rendered, b)[peer_of_b["connection"]])
        assert ca["mark_in"] == ca["mark_out"] == cb["mark_in"] == cb["mark_out"], (a, b)
    for host in plans:
        marks = [child(c)["mark_in"] for c in connections(rendered, host).values()]
        assert len(set(marks)) == len(marks)
        assert all(not int(mark) & 0xC000 for mark in marks), "kube-proxy's mark bits"


def test_traffic_selectors_and_identities_are_mirrored(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = connections(rendered, a)[peer_of_a["connection"]]
        cb = connections(rendered, b)[peer_of_b["connection"]]
        assert child(ca)["local_ts"] == child(cb)["remote_ts"] == plans[a]["subnet"]
        assert child(ca)["remote_ts"] == child(cb)["local_ts"] == plans[b]["subnet"]
        assert ca["local_addrs"] == cb["remote_addrs"] == ca["local"]["id"] == cb["remote"]["id"]
        assert ca["remote_addrs"] == cb["local_addrs"] == plans[b]["address"]


def test_psk_secrets_are_shared_by_both_ends_and_differ_between_pairs(cluster):
    rendered, plans = cluster
    secret_of = {}
    for host in plans:
        secrets = parse_strongswan(rendered.text(host, "swanctl-secrets.conf"))["secrets"]
        for entry in secrets.values():
            secret_of[(entry["id-local"], entry["id-remote"])] = entry["secret"]
        conns = connections(rendered, host, "swanctl-psk.conf")
        assert {c["local"]["auth"] for c in conns.values()} == {"psk"}
    for (local, remote), secret in secret_of.items():
        assert secret_of[(remote, local)] == secret
        assert len(secret.strip('"')) == 64
    assert len(set(secret_of.values())) == len(secret_of) // 2


def test_psk_files_are_named_by_the_pairs_indexes(cluster):
    rendered, plans = cluster
    indexes = sorted(plan["index"] for plan in plans.values())
    expected = {f"pair-{a}-{b}" for a, b in itertools.combinations(indexes, 2)}
    assert {path.name for path in (rendered.out / "pki" / "psk").iterdir()} == expected


def test_conflist_uses_the_plan(cluster):
    rendered, plans = cluster
    for host, plan in plans.items():
        conflist = json.loads(rendered.text(host, "conflist.json"))
        bridge = conflist["plugins"][0]
        assert bridge["ipMasq"] is False and bridge["bridge"] == "cni0"
        assert bridge["ipam"]["ranges"] == [[{"subnet": plan["subnet"], "gateway": plan["gateway"]}]]
        assert bridge["ipam"]["dataDir"].startswith("/run/")
        assert bridge["mtu"] == rendered.computed(host)["plan_cluster"]["mtu"]


def test_charon_installs_no_routes_and_keeps_forecast_off(cluster):
    rendered, plans = cluster
    charon = parse_strongswan(rendered.text(next(iter(plans)), "charon.conf"))["charon"]
    assert charon["install_routes"] == "no"
    assert {charon["plugins"][name]["load"] for name in ("forecast", "farp", "bypass-lan")} == {"no"}


def read_settings(rendered, host, name):
    """A rendered settings file, sourced by sh, as a dict of its variables."""
    proc = subprocess.run(
        ["sh", "-c", '. "$1"; for v in BRIDGE ADDRESS MTU CLUSTER_CIDR TUNNELS MASQUERADE PREFIX SOURCE PEERS; '
         'do eval "printf \'%s=%s\\0\' $v \\"\\${$v-}\\""; done', "sh", str(rendered.out / host / name)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if item)


def test_script_settings_are_the_plan(cluster):
    rendered, plans = cluster
    for host, plan in plans.items():
        whole = rendered.computed(host)["plan_cluster"]
        cni0 = read_settings(rendered, host, "k8s-ipsec-cni0.default")
        assert cni0["ADDRESS"] == "%s/%d" % (plan["gateway"], plan["prefix_length"])
        assert cni0["MTU"] == str(whole["mtu"]) and cni0["CLUSTER_CIDR"] == whole["cluster_cidr"]
        firewall = read_settings(rendered, host, "k8s-ipsec-firewall.default")
        assert firewall["TUNNELS"] == whole["tunnel_prefix"] + "+"
        assert firewall["CLUSTER_CIDR"] == whole["cluster_cidr"] and firewall["MASQUERADE"] == "yes"
        tunnels = read_settings(rendered, host, "k8s-ipsec-tunnels.default")
        assert tunnels["SOURCE"] == plan["gateway"] and tunnels["PREFIX"] == whole["tunnel_prefix"]
        lines = [line.split() for line in tunnels["PEERS"].splitlines() if line.strip()]
        assert lines == [
            [
                p["interface"],
                p["local_address"],
                p["remote_address"],
                str(p["key"]),
                p["remote_subnet"],
                p["connection"],
                "initiator" if p["initiator"] else "responder",
            ]
            for p in plan["peers"]
        ]


def test_units_are_ordered_by_the_plans_unit_names(cluster):
    rendered, plans = cluster
    host = next(iter(plans))
    units = rendered.computed(host)["plan_cluster"]["units"]
    tunnels = rendered.text(host, "k8s-ipsec-tunnels.service").splitlines()
    assert f"PartOf={units['bridge']}" in tunnels and f"Requires={units['bridge']}" in tunnels
    dropin = rendered.text(host, "strongswan-dropin.conf").splitlines()
    assert f"After={units['bridge']} {units['tunnels']} {units['firewall']}" in dropin


def run(*command, env=None):
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_static_scripts_pass_shellcheck(name):
    proc = run("shellcheck", "-s", "sh", str(SCRIPTS[name]))
    assert proc.returncode == 0, proc.stdout


def test_rendered_settings_pass_shellcheck(cluster):
    rendered, plans = cluster
    files = [str(rendered.out / host / f"{name}.default") for host in plans for name in SCRIPTS if "keeper" not in name]
    # SC2034 (assigned but unused): these files only define variables, for the scripts that source them.
    proc = run("shellcheck", "-s", "sh", "-e", "SC2034", *files)
    assert proc.returncode == 0, proc.stdout


FAKE_IP = """#!/bin/sh
# Stand-in for ip(8): logs every call; `ip -o link show type vti` lists $FAKE_VTI_DEVICES; a device "exists"
# when it is listed there.
echo "ip $*" >> "$FAKE_LOG"
case "$*" in
  "-o link show type vti")
    n=10
    for d in $FAKE_VTI_DEVICES; do n=$((n + 1)); echo "$n: $d@NONE: <POINTOPOINT,NOARP,UP,LOWER_UP> mtu 1420"; done ;;
  "link show "*)
    for d in $FAKE_VTI_DEVICES; do [ "$d" = "$3" ] && exit 0; done; exit 1 ;;
esac
exit 0
"""


def run_tunnels_script(tmp_path, settings, devices):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ip").write_text(FAKE_IP)
    (bin_dir / "sysctl").write_text('#!/bin/sh\necho "sysctl $*" >> "$FAKE_LOG"\n')
    for tool in ("ip", "sysctl"):
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        FAKE_LOG=str(log),
        FAKE_VTI_DEVICES=" ".join(devices),
        K8S_IPSEC_TUNNELS_CONFIG=str(settings),
    )
    proc = run("sh", str(SCRIPTS["k8s-ipsec-tunnels"]), "apply", env=env)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_tunnel_sweep_removes_only_stale_devices_of_our_prefix(cluster, tmp_path):
    rendered, plans = cluster
    host = max(plans, key=lambda h: plans[h]["index"])
    plan = plans[host]
    prefix = rendered.computed(host)["plan_cluster"]["tunnel_prefix"]
    current = [p["interface"] for p in plan["peers"]]
    stale = f"{prefix}{plan['index'] + 100}"
    operators = ["vti0", "vti2", "ip_vti0", f"{prefix}x", f"{prefix}2b", "ipsec7"]
    settings = rendered.out / host / "k8s-ipsec-tunnels.default"
    calls = run_tunnels_script(tmp_path, settings, current + [stale] + operators)
    deleted = [c.split()[-1] for c in calls if c.startswith("ip link del ")]
    assert deleted == [stale]
    for peer in plan["peers"]:
        assert f"ip route replace {peer['remote_subnet']} dev {peer['interface']} src {plan['gateway']}" in calls
        assert any(c.startswith(f"ip link change {peer['interface']} type vti ") for c in calls)


def test_tunnel_script_creates_missing_devices_with_the_pair_key(cluster, tmp_path):
    rendered, plans = cluster
    host = next(iter(plans))
    calls = run_tunnels_script(tmp_path, rendered.out / host / "k8s-ipsec-tunnels.default", [])
    for peer in plans[host]["peers"]:
        expected = "ip link add {interface} type vti local {local_address} remote {remote_address} key {key}"
        assert expected.format(**peer) in calls
    assert not [c for c in calls if c.startswith("ip link del ")]


def test_static_scripts_say_who_manages_them():
    for path in SCRIPTS.values():
        header = path.read_text().splitlines()[1]
        assert re.match(r"# Managed by k8s_ipsec\.cni \(role \w+\)", header), path
