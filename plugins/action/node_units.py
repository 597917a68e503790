# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""node_units: the units' states are read by one shell command first; the module runs only when one must change."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.k8s_ipsec.cni.plugins.module_utils._units import settled, show_command, wanted_units
from ansible_collections.k8s_ipsec.cni.plugins.plugin_utils._read_first import ReadFirstAction


def _plain(args):
    """The wanted units when the arguments need no conversion by the module, None otherwise."""
    items = args.get("units")
    if args.get("daemon_reload", False) is not False or not isinstance(items, list):
        return None
    if not all(isinstance(i, dict) and i.get("enabled") in (None, True, False) for i in items):
        return None
    try:
        return wanted_units(items)
    except ValueError:
        return None


class ActionModule(ReadFirstAction):
    def node_command(self, args):
        wanted = _plain(args)
        return show_command(wanted) if wanted else None

    def unchanged_result(self, args, output):
        if not settled(_plain(args), output, self._task.check_mode):
            return None
        return dict(enabled=[], disabled=[], started=[], restarted=[], reloaded=[], daemon_reloaded=False)
