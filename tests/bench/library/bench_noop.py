"""Do-nothing module for tests/bench/plan.py: Ansible's cost of one module run, without the planning."""

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: bench_noop
short_description: Accept mesh_plan's options and do nothing
description:
  - Takes the same options as M(k8s_ipsec.cni.mesh_plan), typed C(raw) so they are neither checked nor
    converted, and returns C(changed=false) and nothing else.
  - The benchmark runs it with mesh_plan's arguments, so the same payload travels to the module and the
    difference between the two runs is the planning and the transfer of its result.
options:
  nodes:
    type: raw
  cluster_cidr:
    type: raw
  node_prefix:
    type: raw
  service_cidr:
    type: raw
  tunnel_prefix:
    type: raw
  underlay_mtu:
    type: raw
  ipsec_overhead:
    type: raw
  controller_addresses:
    type: raw
"""

# mesh_plan's option names, so any task written for mesh_plan runs unchanged against this module.
OPTION_NAMES = (
    "nodes",
    "cluster_cidr",
    "node_prefix",
    "service_cidr",
    "tunnel_prefix",
    "underlay_mtu",
    "ipsec_overhead",
    "controller_addresses",
)


def main():
    module = AnsibleModule(
        argument_spec={name: dict(type="raw") for name in OPTION_NAMES},
        supports_check_mode=True,
    )
    module.exit_json(changed=False)


if __name__ == "__main__":
    main()
