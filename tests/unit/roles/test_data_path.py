"""The data path as rendered for 3- and 4-node plans and both tunnel types: swanctl.conf, secrets, conflist, charon
settings and the node program's settings. The node program itself is tested in test_node_*.py."""

import itertools
import json
import subprocess

import pytest
import yaml
from ansible_cli import ROOT

TUNNEL_TYPES = ["xfrm", "vti"]
TUNNEL_MODULES = {"xfrm": "xfrm_interface", "vti": "ip_vti"}

# The node program's parts that read settings files: /etc/default/k8s-ipsec-<part>.
PARTS = ["cni0", "firewall", "tunnels"]


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


@pytest.fixture(params=TUNNEL_TYPES)
def tunnel_type(request):
    return request.param


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


INITIATOR_ACTIONS = {"start_action": "trap|start", "close_action": "start", "dpd_action": "restart"}
RESPONDER_ACTIONS = {"start_action": "trap", "close_action": "none", "dpd_action": "clear"}


def test_exactly_one_end_of_every_pair_starts_the_tunnel(cluster, tunnel_type):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        starts = [
            child(connections(rendered, host, f"swanctl-{tunnel_type}.conf")[peer["connection"]])["start_action"]
            for host, peer in ((a, peer_of_a), (b, peer_of_b))
        ]
        assert sorted(starts) == ["trap", "trap|start"], (a, b)
        assert [s == "trap|start" for s in starts] == [peer_of_a["initiator"], peer_of_b["initiator"]], (a, b)


def test_initiator_restarts_and_both_ends_trap(cluster, tunnel_type):
    """No keeper timer: trap policies on both ends, restarts on the initiator end only."""
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        for host, peer in ((a, peer_of_a), (b, peer_of_b)):
            conn = connections(rendered, host, f"swanctl-{tunnel_type}.conf")[peer["connection"]]
            actions = {key: child(conn)[key] for key in INITIATOR_ACTIONS}
            assert actions == (INITIATOR_ACTIONS if peer["initiator"] else RESPONDER_ACTIONS), (host, peer["name"])
            assert conn["unique"] == "replace"
            assert conn.get("keyingtries") == ("0" if peer["initiator"] else None), (host, peer["name"])
            # the initiator re-authenticates, so expiry and the CRL are seen by long-lived SAs
            assert conn.get("reauth_time") == ("4h" if peer["initiator"] else None), (host, peer["name"])


def test_default_tunnel_type_is_the_roles_default(cluster):
    rendered, plans = cluster
    default = yaml.safe_load((ROOT / "roles/strongswan/defaults/main.yml").read_text())["strongswan_tunnel_type"]
    assert default in TUNNEL_TYPES
    for host in plans:
        for name in ("swanctl.conf", "k8s-ipsec-tunnels.default", "modules-load.conf"):
            typed = name.replace(".", f"-{default}.", 1)
            assert rendered.text(host, name) == rendered.text(host, typed), (host, name)


def test_keys_are_equal_at_both_ends_and_one_per_pair(cluster, tunnel_type):
    """mark_in/mark_out for VTI devices, if_id_in/if_id_out for XFRM interfaces: the pair's key at both ends."""
    rendered, plans = cluster
    name = f"swanctl-{tunnel_type}.conf"
    used, unused = (("if_id_in", "if_id_out"), ("mark_in", "mark_out"))[:: 1 if tunnel_type == "xfrm" else -1]
    key_of_pair = {}
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = child(connections(rendered, a, name)[peer_of_a["connection"]])
        cb = child(connections(rendered, b, name)[peer_of_b["connection"]])
        assert ca[used[0]] == ca[used[1]] == cb[used[0]] == cb[used[1]] == str(peer_of_a["key"]), (a, b)
        assert not set(unused) & (set(ca) | set(cb)), (a, b)
        key_of_pair[(a, b)] = ca[used[0]]
    assert len(set(key_of_pair.values())) == len(key_of_pair)
    for host in plans:
        keys = [child(c)[used[0]] for c in connections(rendered, host, name).values()]
        assert len(set(keys)) == len(keys)
        assert all(not int(key) & 0xC000 for key in keys), "kube-proxy's mark bits"


def test_marks_are_equal_at_both_ends_and_unique_per_node(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        ca = child(connections(rendered, a, "swanctl-vti.conf")[peer_of_a["connection"]])
        cb = child(connections(rendered, b, "swanctl-vti.conf")[peer_of_b["connection"]])
        assert ca["mark_in"] == ca["mark_out"] == cb["mark_in"] == cb["mark_out"], (a, b)
    for host in plans:
        marks = [child(c)["mark_in"] for c in connections(rendered, host, "swanctl-vti.conf").values()]
        assert len(set(marks)) == len(marks)
        assert all(not int(mark) & 0xC000 for mark in marks), "kube-proxy's mark bits"


def test_only_the_tunnel_bindings_differ_between_the_types(cluster):
    rendered, plans = cluster
    for host in plans:
        xfrm, vti = (connections(rendered, host, f"swanctl-{t}.conf") for t in ("xfrm", "vti"))
        for conn in xfrm:
            for settings in (child(xfrm[conn]), child(vti[conn])):
                for key in ("if_id_in", "if_id_out", "mark_in", "mark_out"):
                    settings.pop(key, None)
        assert xfrm == vti


def test_each_type_loads_its_own_kernel_module(cluster, tunnel_type):
    rendered, plans = cluster
    for host in plans:
        lines = rendered.text(host, f"modules-load-{tunnel_type}.conf").splitlines()
        assert lines[0].startswith("# Managed by k8s_ipsec.cni (role strongswan)")
        assert lines[1:] == [TUNNEL_MODULES[tunnel_type]]
    node_prep = yaml.safe_load((ROOT / "roles/node_prep/defaults/main.yml").read_text())["node_prep_kernel_modules"]
    assert not set(TUNNEL_MODULES.values()) & set(node_prep)


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


def sent_and_accepted(text):
    """{remote address: (the secret strongSwan sends, the secrets it accepts)}, as its credential manager picks them:
    it sends the secret whose owners match both ends (both addresses) and accepts every secret naming the peer."""
    sent, accepted = {}, {}
    for entry in parse_strongswan(text)["secrets"].values():
        remote = entry["id-remote"]
        accepted.setdefault(remote, set()).add(entry["secret"])
        if "id-local" in entry:
            assert remote not in sent, "two secrets match both ends: strongSwan would pick either"
            sent[remote] = entry["secret"]
    assert sent.keys() == accepted.keys(), "a peer without a secret to send"
    return {remote: (sent[remote], accepted[remote]) for remote in sent}


def test_psk_rotation_leaves_every_pair_a_secret_both_ends_accept_at_every_step(cluster):
    rendered, plans = cluster
    for a, b, peer_of_a, peer_of_b in pairs(plans):
        address_a, address_b = peer_of_b["remote_address"], peer_of_a["remote_address"]
        steps = {}
        for name in ("", "-accept", "-send", "-stopped"):
            steps[name] = (
                sent_and_accepted(rendered.text(a, f"swanctl-secrets{name}.conf"))[address_b],
                sent_and_accepted(rendered.text(b, f"swanctl-secrets{name}.conf"))[address_a],
            )
        old = steps[""][0][0]
        new = steps["-send"][0][0]
        assert old != new and steps[""][1][0] == old and steps["-send"][1][0] == new
        # after the controller promoted the new secrets, each node holds them alone
        steps["-new"] = ((new, {new}), (new, {new}))
        assert steps[""][0][1] == {old} and steps["-accept"][0][1] == steps["-send"][0][1] == {old, new}
        # site.yml after a rotation that stopped part-way: as the accept step
        assert steps["-stopped"] == steps["-accept"]
        # in lock step every node goes current, accept, send, new: a run that stops between two steps leaves
        # each pair's ends one step apart at most, and each must accept what the other sends
        order = ["", "-accept", "-send", "-new"]
        for first, second in itertools.pairwise(order):
            for end_a, end_b in ((first, first), (first, second), (second, first)):
                sent_a, accepted_a = steps[end_a][0]
                sent_b, accepted_b = steps[end_b][1]
                assert sent_a in accepted_b and sent_b in accepted_a, (a, b, end_a, end_b)


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
    # strongSwan 6.0 defaults to make-before-break reauthentication, 5.9 does not: the same on both.
    assert charon["make_before_break"] == "yes"
    assert {charon["plugins"][name]["load"] for name in ("forecast", "farp", "bypass-lan")} == {"no"}


def read_settings(rendered, host, name):
    """A rendered settings file, sourced by sh, as a dict of its variables."""
    proc = subprocess.run(
        ["sh", "-c", '. "$1"; for v in BRIDGE ADDRESS MTU CLUSTER_CIDR TUNNELS MASQUERADE PREFIX SOURCE TYPE PEERS '
         'PEERS_FILE; do eval "printf \'%s=%s\\0\' $v \\"\\${$v-}\\""; done', "sh", str(rendered.out / host / name)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(item.split("=", 1) for item in proc.stdout.split("\0") if item)


def test_script_settings_are_the_plan(cluster, tunnel_type):
    rendered, plans = cluster
    for host, plan in plans.items():
        whole = rendered.computed(host)["plan_cluster"]
        cni0 = read_settings(rendered, host, "k8s-ipsec-cni0.default")
        assert cni0["ADDRESS"] == "%s/%d" % (plan["gateway"], plan["prefix_length"])
        assert cni0["MTU"] == str(whole["mtu"]) and cni0["CLUSTER_CIDR"] == whole["cluster_cidr"]
        firewall = read_settings(rendered, host, "k8s-ipsec-firewall.default")
        assert firewall["TUNNELS"] == whole["tunnel_prefix"] + "+"
        assert firewall["CLUSTER_CIDR"] == whole["cluster_cidr"] and firewall["MASQUERADE"] == "yes"
        # The firewall reads the peers from the tunnel settings: one file names them (see peers.yml).
        assert firewall["PEERS_FILE"] == "/etc/default/k8s-ipsec-tunnels" and not firewall["PEERS"]
        tunnels = read_settings(rendered, host, f"k8s-ipsec-tunnels-{tunnel_type}.default")
        assert tunnels["SOURCE"] == plan["gateway"] and tunnels["PREFIX"] == whole["tunnel_prefix"]
        assert tunnels["TYPE"] == tunnel_type
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
    # certificates are checked against the clock: after it is synchronised, where the node waits for that
    assert f"After={units['bridge']} {units['tunnels']} {units['firewall']} time-sync.target" in dropin
    assert not any(line.startswith("Wants=") and "time-sync" in line for line in dropin)


def run(*command, env=None):
    return subprocess.run(command, env=env, capture_output=True, text=True, check=False)


def test_rendered_settings_pass_shellcheck(cluster):
    rendered, plans = cluster
    files = [str(rendered.out / host / f"k8s-ipsec-{part}.default") for host in plans for part in PARTS]
    files += [str(rendered.out / host / f"k8s-ipsec-tunnels-{t}.default") for host in plans for t in TUNNEL_TYPES]
    # SC2034 (assigned but unused): these files only define variables, for the scripts that source them.
    proc = run("shellcheck", "-s", "sh", "-e", "SC2034", *files)
    assert proc.returncode == 0, proc.stdout
