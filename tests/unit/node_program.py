"""The node program k8s-ipsec-node (roles/node_prep/files/k8s_ipsec_node.py) for the tests.

Its pure logic is imported from the file (it imports pyroute2 and nftables only when it touches the kernel). For real
it runs with Debian's python3, which has python3-pyroute2 and python3-nftables (make tools installs them), in a
private network namespace of its own (unshare -n): nothing outside the namespace is touched.
"""

import functools
import importlib.util
import json
import shutil
import subprocess
import textwrap

import pytest
from ansible_cli import ROOT
from netns import PATH, in_netns

PROGRAM = ROOT / "roles/node_prep/files/k8s_ipsec_node.py"
SYSTEM_PYTHON = "/usr/bin/python3"
# strongSwan's parser of swanctl --raw, which the roles install beside the program.
STATUS_LIB = ROOT / "plugins/module_utils"


def load():
    """The program as a module, imported from its file."""
    spec = importlib.util.spec_from_file_location("k8s_ipsec_node", PROGRAM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _system_modules():
    proc = subprocess.run([SYSTEM_PYTHON, "-c", "import pyroute2, nftables"], capture_output=True, check=False)
    return proc.returncode == 0 and shutil.which("nft", path=PATH) is not None


def require_system_modules():
    """Fails the test, saying what to install, when Debian's python3 lacks the program's modules or nft is missing."""
    if not _system_modules():
        pytest.fail("the node program needs python3-pyroute2, python3-nftables and nftables: run make tools")


# A node with index 1 of a cluster 10.128.0.0/16, as the roles render its settings.
CNI0 = """\
# Managed by k8s_ipsec.cni (role cni_bridge): settings of /usr/local/sbin/k8s-ipsec-node cni0
INDEX=1
BRIDGE=cni0
ADDRESS=10.128.1.1/24
MTU=1420
CLUSTER_CIDR=10.128.0.0/16
"""
TUNNELS = """\
PREFIX=k8s-ipsec
TYPE=xfrm
MTU=1420
SOURCE=10.128.1.1
# device local-address remote-address key remote-subnet connection role
PEERS='
k8s-ipsec2 192.168.64.10 192.168.64.20 3 10.128.2.0/24 peer2-n2 initiator
k8s-ipsec3 192.168.64.10 192.168.64.30 5 10.128.3.0/24 peer3-n3 responder
'
"""
FIREWALL = """\
BRIDGE=cni0
TUNNELS=k8s-ipsec+
CLUSTER_CIDR=10.128.0.0/16
SERVICE_CIDR=10.96.0.0/12
POD_SUBNET=10.128.1.0/24
GATEWAY=10.128.1.1
MASQUERADE=yes
PEERS_FILE={peers}
"""
# systemctl as the firewall asks it whether strongSwan is starting: the state is in the file strongswan-state.
SYSTEMCTL = '#!/bin/sh\ncat "{state}" 2>/dev/null || echo inactive\n'

# Sends one IKE_SA_INIT request (responder SPI zero) and one reply (responder SPI set) to 127.0.0.1:500, where it
# listens as charon would; prints what arrived.
IKE = """python3 -c '
import socket
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 500))
rx.settimeout(0.3)
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
spi_i, spi_r, header = bytes(range(1, 9)), bytes(range(9, 17)), bytes([33, 0x20, 34])
tx.sendto(spi_i + bytes(8) + header + bytes([0x08]) + bytes(8), ("127.0.0.1", 500))
tx.sendto(spi_i + spi_r + header + bytes([0x20]) + bytes(8), ("127.0.0.1", 500))
got = []
try:
    while True:
        got.append("request" if rx.recv(100)[8:16] == bytes(8) else "reply")
except TimeoutError:
    print(" ".join(got) or "nothing")
'"""
HOLD = "nft list chain inet k8s-ipsec input | grep -c k8s-ipsec-ike-hold || true"

# Runs steps in one process in the network namespace: "node <part> <verb>" is the program's command line (its main,
# imported once: pyroute2 alone takes half a second to import), anything else a shell command. Prints, as JSON,
# [exit status, output] of each step.
STEPS = """
import contextlib, importlib.util, io, json, shlex, subprocess, sys
spec = importlib.util.spec_from_file_location("k8s_ipsec_node", sys.argv[1])
node = importlib.util.module_from_spec(spec)
spec.loader.exec_module(node)
results = []
for step in json.loads(sys.argv[2]):
    if step.startswith("node "):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            status = node.main(shlex.split(step)[1:])
        results.append([status, out.getvalue()])
    else:
        proc = subprocess.run(["sh", "-c", step], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        results.append([proc.returncode, proc.stdout])
print(json.dumps(results))
"""


class NodeNetns:
    """Settings files of one node under tmp_path, and runners of the program with them in a fresh network namespace.

    The tunnel devices cannot exist here (the kernel has neither XFRM interfaces nor VTI devices): the tunnels part
    runs with settings without peers, while the firewall reads its peers from the tunnel settings of TUNNELS.
    """

    def __init__(self, tmp_path):
        require_system_modules()
        self.dir = tmp_path
        self.cni0 = tmp_path / "cni0.default"
        self.tunnels = tmp_path / "tunnels.default"
        self.no_tunnels = tmp_path / "no-tunnels.default"
        self.firewall = tmp_path / "firewall.default"
        self.cache = tmp_path / "cni-results"
        self.bin = tmp_path / "bin"
        self.strongswan_state = tmp_path / "strongswan-state"
        self.cni0.write_text(CNI0)
        self.tunnels.write_text(TUNNELS)
        self.no_tunnels.write_text(TUNNELS.split("# device", maxsplit=1)[0])
        self.firewall.write_text(FIREWALL.format(peers=self.tunnels))
        self.cache.mkdir()
        self.bin.mkdir()
        (self.bin / "systemctl").write_text(SYSTEMCTL.format(state=self.strongswan_state))
        (self.bin / "systemctl").chmod(0o755)

    @property
    def env(self):
        return {
            "PATH": f"{self.bin}:{PATH}",
            "K8S_IPSEC_CNI0_CONFIG": str(self.cni0),
            "K8S_IPSEC_TUNNELS_CONFIG": str(self.no_tunnels),
            "K8S_IPSEC_FIREWALL_CONFIG": str(self.firewall),
            "K8S_IPSEC_CNI_CACHE": str(self.cache),
            "K8S_IPSEC_LOCK": str(self.dir / "node.lock"),
            # the guard's and the keeper's counters, in /run/k8s-ipsec on a node
            "K8S_IPSEC_STATE_DIR": str(self.dir / "state"),
        }

    def pod(self, container, host_interface, bridge="cni0"):
        """The CNI results cache entry libcni writes for a pod attached to the bridge with the veth host_interface."""
        (self.cache / f"k8s-pod-network-{container}-eth0").write_text(cache_entry(host_interface, bridge, container))

    def run(self, snippet, expect_status=0, env=None):
        """Runs the shell snippet (set -eu) in a fresh network namespace with lo up, where `node` is the program's
        command; returns its output."""
        script = f'set -eu\nnode() {{ {SYSTEM_PYTHON} {PROGRAM} "$@"; }}\nip link set lo up\n'
        return in_netns(script + textwrap.dedent(snippet), {**self.env, **(env or {})}, expect_status)

    def steps(self, *steps, env=None):
        """Runs the steps (see STEPS) in a fresh network namespace with lo up; returns (status, output) of each."""
        proc = subprocess.run(
            ["unshare", "-n", SYSTEM_PYTHON, "-c", STEPS, str(PROGRAM), json.dumps(["ip link set lo up", *steps])],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return [tuple(result) for result in json.loads(proc.stdout)[1:]]


def cache_entry(host_interface, bridge="cni0", container="0123abcd"):
    """A libcni results cache file (cniCacheV1) of the bridge plugin: the bridge, the host-side veth, the pod's eth0."""
    return (
        '{"kind":"cniCacheV1","containerId":"%s","config":"e30=","ifName":"eth0","networkName":"k8s-pod-network",'
        '"result":{"cniVersion":"1.0.0","interfaces":[{"name":"%s","mac":"0a:58:0a:80:01:01"},'
        '{"name":"%s","mac":"6e:1c:02:aa:bb:cc"},{"name":"eth0","mac":"0a:58:0a:80:01:05",'
        '"sandbox":"/var/run/netns/cni-%s"}],"ips":[{"address":"10.128.1.5/24","gateway":"10.128.1.1",'
        '"interface":2}]}}' % (container, bridge, host_interface, container)
    )
