# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An action that reads the node with one shell command and runs its module only when there is something to do.

Each module run starts Python on the node and imports Ansible's module code from a zip, compiled anew every time:
about 4 s of CPU on an emulated node, 0.3 s for a shell command. Most tasks of a second run find everything in place.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash


class ReadFirstAction(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def node_command(self, args):
        """The shell command that reads what the module would compare, or None to run the module at once."""
        raise NotImplementedError

    def unchanged_result(self, args, output):
        """The module's result for a node already as wanted, judged from the command's output; None otherwise."""
        raise NotImplementedError

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        command = self.node_command(args)
        if command is not None:
            read = self._low_level_execute_command(command)
            unchanged = self.unchanged_result(args, read.get("stdout", "")) if read.get("rc") == 0 else None
            if unchanged is not None:
                result.update(unchanged)
                result["changed"] = False
                return result
        result = merge_hash(result, self._execute_module(task_vars=task_vars))
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
