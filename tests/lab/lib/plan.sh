# shellcheck shell=bash
# The network plan as the lab test sees it: the JSON that playbooks/show_plan.yml writes
# (-e network_plan_json=<path>), loaded once into the associative array PLAN. Nodes are addressed by their lab
# number i (node n<i>, tests/lab/lab.sh ssh <i>), never by a copy of a plan value.
#
# usage: source tests/lab/lib/plan.sh; plan_load <plan.json>; plan_gateway 1; plan_iface 1 2; plan_unit bridge ...

declare -gA PLAN=()

# Flattens the plan into "PLAN[<key>]=<value>" lines: cluster keys as they are, units as unit.<name>,
# nodes as node.<i>.<field>, the peer list of node i as peers.<i> and each peer as peer.<i>.<j>.<field>.
PLAN_PY='
import json, re, shlex, sys

plan = json.load(open(sys.argv[1]))
out = {}


def put(key, value):
    out[key] = str(value).lower() if isinstance(value, bool) else str(value)


def lab(name):
    m = re.fullmatch(r"n([1-9][0-9]*)", name)
    if not m:
        sys.exit(f"plan: node {name!r} is not a lab node n<i>")
    return int(m.group(1))


for key in ("cluster_cidr", "service_cidr", "node_prefix", "tunnel_prefix", "mtu", "cni_conflist"):
    put(key, plan[key])
for key, unit in plan["units"].items():
    put(f"unit.{key}", unit)
nodes = sorted(lab(name) for name in plan["nodes"])
if nodes != list(range(1, len(nodes) + 1)):
    sys.exit(f"plan: nodes {nodes} are not n1..n{len(nodes)}")
put("nodes", " ".join(map(str, nodes)))
for name, node in plan["nodes"].items():
    i = lab(name)
    for key, value in node.items():
        put(f"node.{i}.{key}", value)
    peers = plan["peers"][name]
    put(f"peers.{i}", " ".join(str(lab(p["name"])) for p in peers))
    for peer in peers:
        j = lab(peer["name"])
        for key, value in peer.items():
            put(f"peer.{i}.{j}.{key}", value)
for key, value in out.items():
    print(f"PLAN[{shlex.quote(key)}]={shlex.quote(value)}")
'

plan_load() { # plan_load <plan.json>
  local defs
  defs=$(python3 -c "$PLAN_PY" "$1") || return 1
  PLAN=()
  eval "$defs"
}

plan_get() { # plan_get <key>: one value; status 1 (and a message) when the plan has no such key
  if [[ -v PLAN[$1] ]]; then
    printf '%s\n' "${PLAN[$1]}"
  else
    echo "plan: no $1" >&2
    return 1
  fi
}

plan_nodes() { plan_get nodes; }                  # "1 2 3"
plan_node_count() { local n; n=$(plan_nodes) && wc -w <<<"$n"; }
plan_cluster_cidr() { plan_get cluster_cidr; }
plan_unit() { plan_get "unit.$1"; }               # plan_unit bridge|firewall|tunnels
plan_address() { plan_get "node.$1.address"; }    # underlay address of node i
plan_subnet() { plan_get "node.$1.subnet"; }
plan_gateway() { plan_get "node.$1.gateway"; }
plan_prefix() { plan_get "node.$1.prefix_length"; }
plan_peers() { plan_get "peers.$1"; }             # lab numbers of node i's peers
plan_iface() { plan_get "peer.$1.$2.interface"; } # tunnel device on node i towards node j
plan_conn() { plan_get "peer.$1.$2.connection"; } # swanctl connection on node i towards node j
plan_remote_subnet() { plan_get "peer.$1.$2.remote_subnet"; }
