"""The lab's CNI stand-in: the cycles' narrowed pool is the node's own conflist with only host-local's range cut."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SPEC = importlib.util.spec_from_file_location("cni_runtime", ROOT / "tests/lab/files/cni_runtime.py")
cni_runtime = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(cni_runtime)

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "k8s-ipsec",
    "plugins": [
        {
            "type": "bridge",
            "bridge": "cni0",
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.128.1.0/24", "gateway": "10.128.1.1"}]],
                "dataDir": "/run/cni/k8s-ipsec",
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def test_the_pool_is_the_addresses_right_after_the_gateway():
    narrowed = cni_runtime.narrowed(CONFLIST, 4)
    assert narrowed["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.128.1.0/24", "gateway": "10.128.1.1", "rangeStart": "10.128.1.2", "rangeEnd": "10.128.1.5"}]
    ]


def test_nothing_else_changes_and_the_original_is_left_alone():
    before = json.dumps(CONFLIST, sort_keys=True)
    narrowed = cni_runtime.narrowed(CONFLIST, 4)
    assert json.dumps(CONFLIST, sort_keys=True) == before
    del narrowed["plugins"][0]["ipam"]["ranges"][0][0]["rangeStart"]
    del narrowed["plugins"][0]["ipam"]["ranges"][0][0]["rangeEnd"]
    assert json.dumps(narrowed, sort_keys=True) == before
