# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_files: the node's files are listed by one shell command first; the module runs only when one differs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.k8s_ipsec.cni.plugins.module_utils._files import already_applied, listing_command
from ansible_collections.k8s_ipsec.cni.plugins.plugin_utils._read_first import ReadFirstAction


class ActionModule(ReadFirstAction):
    def node_command(self, args):
        return listing_command(args.get("files"), args.get("absent", []))

    def unchanged_result(self, args, output):
        if not already_applied(args["files"], args.get("absent", []), output):
            return None
        return dict(changed_paths=[], changes={})
