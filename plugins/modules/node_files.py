#!/usr/bin/python
# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_files
short_description: Write a role's small files on a node in one module run
version_added: 0.1.0
description:
  - Compares each file's content, mode and owner with what is wanted and writes only those that differ, each through
    a temporary file and a rename, creating missing parent directories (C(0755), root).
  - One run for a role's dozen unit files, settings and scripts instead of one or two per file, which on small or
    emulated nodes saves seconds per file on every run.
  - Render the content on the controller, for example with the C(ansible.builtin.template) or
    C(ansible.builtin.file) lookup. The content is an argument like any other, so for secrets set C(no_log) on the
    task, which also hides the diff.
  - Its action plugin first lists the files with one shell command on the node (type, mode, owner, SHA-256 of the
    content) and returns unchanged, without running the module, when every file is as wanted and none of O(absent)
    exists. A module run costs seconds of CPU on small or emulated nodes, a shell command a fraction of one.
author:
  - k8s_ipsec maintainers (@k8s-ipsec)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  files:
    description: The files to write.
    type: list
    elements: dict
    required: true
    suboptions:
      path:
        description: Absolute path of the file.
        type: path
        required: true
      content:
        description: The whole content of the file.
        type: str
        required: true
      mode:
        description: The file's mode, as an octal string.
        type: str
        default: "0644"
      owner:
        description: The user owning the file.
        type: str
        default: root
      group:
        description: The group owning the file.
        type: str
        default: root
  absent:
    description:
      - Files that must not exist; those that do are removed in the same run.
      - A path both here and in O(files) is refused.
    type: list
    elements: path
    default: []
"""

EXAMPLES = r"""
---
- name: Write the bridge's script, settings and unit
  k8s_ipsec.cni.node_files:
    files:
      - path: /usr/local/sbin/k8s-ipsec-cni0
        content: "{{ lookup('ansible.builtin.file', 'k8s-ipsec-cni0', rstrip=false) }}"
        mode: "0755"
      - path: /etc/systemd/system/k8s-ipsec-cni0.service
        content: "{{ lookup('ansible.builtin.template', 'k8s-ipsec-cni0.service.j2') }}"
  register: bridge_files
  notify: Recreate the pod bridge

- name: Reload systemd when the unit changed
  ansible.builtin.systemd_service:
    daemon_reload: true
  when: "'/etc/systemd/system/k8s-ipsec-cni0.service' in bridge_files.changed_paths"
"""

RETURN = r"""
changed_paths:
  description: The files written, removed, or whose mode or owner was corrected (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [/etc/systemd/system/k8s-ipsec-cni0.service]
changes:
  description: Per changed file, what differed (C(created), C(content), C(mode), C(owner) or C(removed)).
  returned: always
  type: dict
  sample: {/etc/systemd/system/k8s-ipsec-cni0.service: [content]}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._files import apply_change, plan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    path=dict(type="path", required=True),
                    content=dict(type="str", required=True),
                    mode=dict(type="str", default="0644"),
                    owner=dict(type="str", default="root"),
                    group=dict(type="str", default="root"),
                ),
            ),
            absent=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    try:
        changes = plan(module.params["files"], module.params["absent"])
    except (ValueError, OSError) as e:
        module.fail_json(msg="nothing written: %s" % e)
    written = []
    for change in [] if module.check_mode else changes:
        try:
            apply_change(change)
        except OSError as e:
            module.fail_json(msg="cannot write %s: %s (written before it: %s)" % (change["path"], e, written or "none"))
        written.append(change["path"])
    result = dict(
        changed=bool(changes),
        changed_paths=[c["path"] for c in changes],
        changes=dict((c["path"], c["reasons"]) for c in changes),
    )
    if module._diff:
        result["diff"] = [c["diff"] for c in changes]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
