# Copyright: contributors to k8s_ipsec.cni
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many small files of a node, compared and written in one pass: content, mode and owner.

One module run per role instead of one per file: on small or emulated nodes each module run costs seconds, and a
role writes up to a dozen files. No Ansible imports; the node_files module is the thin wrapper.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import hashlib
import os
import pwd
import shlex
import stat
import tempfile

DIRECTORY_MODE = 0o755
# What a file entry without a mode, owner or group gets, in the module and in the action's read alike.
FILE_DEFAULTS = {"mode": "0644", "owner": "root", "group": "root"}


def _setting(item, key):
    return item.get(key, FILE_DEFAULTS[key])


def parse_mode(value, where):
    """An octal mode given as text ("0644", "644") as an int; ValueError naming the file otherwise."""
    text = str(value)
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ValueError("%s: mode %r is not an octal file mode such as 0644" % (where, value))
    return mode


def _ids(owner, group, where):
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValueError("%s: no user %r on this node" % (where, owner)) from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError("%s: no group %r on this node" % (where, group)) from None
    return uid, gid


def desired_files(items):
    """Validate the wanted files, each a mapping with path, content, mode, owner and group, into a list of dicts
    with the content as bytes and numeric ids. Raises ValueError naming every bad entry at once."""
    wanted, problems, seen = [], [], set()
    for item in items:
        path = item.get("path") or ""
        where = path or "a file without a path"
        if not os.path.isabs(path):
            problems.append("%s: the path must be absolute" % where)
            continue
        path = os.path.normpath(path)
        if path in seen:
            problems.append("%s: given twice" % path)
            continue
        seen.add(path)
        try:
            mode = parse_mode(_setting(item, "mode"), path)
            uid, gid = _ids(_setting(item, "owner"), _setting(item, "group"), path)
        except ValueError as e:
            problems.append(str(e))
            continue
        content = item.get("content")
        if content is None:
            problems.append("%s: no content" % path)
            continue
        data = content.encode("utf-8") if not isinstance(content, bytes) else content
        wanted.append({"path": path, "content": data, "mode": mode, "uid": uid, "gid": gid})
    if problems:
        raise ValueError("; ".join(problems))
    return wanted


def _current(path):
    """(bytes, mode, uid, gid) of a regular file, None when it is missing; ValueError when something else is
    there (a directory, a device): replacing that is not this module's call."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("%s: exists and is not a regular file; move it away, then run again" % path)
    with open(path, "rb") as f:
        return f.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def _text(data):
    return data.decode("utf-8", "replace")


def _diff(path, before, after):
    """One file's diff as Ansible shows it."""
    return {"before_header": path, "after_header": path, "before": before, "after": after}


def plan_changes(wanted):
    """What differs between the wanted files and the node: one dict per file to change, with the reasons
    (created, content, mode, owner), the missing parent directories, and a diff as Ansible shows it."""
    changes = []
    for want in wanted:
        now = _current(want["path"])
        if now is None:
            reasons = ["created"]
            before = ""
        else:
            data, mode, uid, gid = now
            reasons = []
            if data != want["content"]:
                reasons.append("content")
            if mode != want["mode"]:
                reasons.append("mode")
            if (uid, gid) != (want["uid"], want["gid"]):
                reasons.append("owner")
            before = _text(data)
        if not reasons:
            continue
        missing, parent = [], os.path.dirname(want["path"])
        while parent and not os.path.isdir(parent):
            missing.insert(0, parent)
            parent = os.path.dirname(parent)
        changes.append(
            dict(
                want,
                reasons=reasons,
                directories=missing,
                diff=_diff(want["path"], before, _text(want["content"])),
            )
        )
    return changes


def plan_removals(paths):
    """The files among paths that exist and must go, as changes apply_change removes; what is not a regular file
    (or a link) is refused, as for writes."""
    changes = []
    for path in paths:
        if not os.path.isabs(path):
            raise ValueError("%s: the path must be absolute" % path)
        path = os.path.normpath(path)
        if not os.path.lexists(path):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            raise ValueError("%s: is a directory, not a file to remove; move it away, then run again" % path)
        before = ""
        if os.path.isfile(path):
            with open(path, "rb") as f:
                before = _text(f.read())
        changes.append({"path": path, "reasons": ["removed"], "diff": _diff(path, before, "")})
    return changes


def plan(items, absent):
    """Every change that makes the node hold the wanted files and none of the absent ones."""
    wanted = desired_files(items)
    both = sorted(set(w["path"] for w in wanted) & set(os.path.normpath(p) for p in absent))
    if both:
        raise ValueError("%s: both a file to write and one to remove" % ", ".join(both))
    return plan_changes(wanted) + plan_removals(absent)


def apply_change(change):
    """Write one planned change: missing directories (0755, root), then the file through a temporary file in
    the same directory and a rename, so a reader never sees half a file. A removal unlinks the file."""
    if change["reasons"] == ["removed"]:
        os.unlink(change["path"])
        return
    for directory in change["directories"]:
        if not os.path.isdir(directory):
            os.mkdir(directory, DIRECTORY_MODE)
            os.chmod(directory, DIRECTORY_MODE)
    path = change["path"]
    if set(change["reasons"]) <= {"mode", "owner"}:
        os.chown(path, change["uid"], change["gid"])
        os.chmod(path, change["mode"])
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(change["content"])
            f.flush()
            os.fsync(f.fileno())
            os.fchown(f.fileno(), change["uid"], change["gid"])
            os.fchmod(f.fileno(), change["mode"])
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# The node_files action reads the node with one shell command before it runs the module: a node that already holds
# every file needs no Python there, which on emulated nodes is seconds per task. One line per path, in order: a file
# to write as "<type>:<octal mode>:<owner>:<group>:<sha256>" or "missing", a file to remove as "present" or "missing".
_LISTING_WANTED = (
    'for p in %s; do if s=$(stat -c %%F:%%a:%%U:%%G -- "$p" 2>/dev/null); then '
    'h=$(sha256sum <"$p" 2>/dev/null) || h=unreadable; echo "$s:${h%%%% *}"; else echo missing; fi; done'
)
_LISTING_ABSENT = 'for p in %s; do if [ -e "$p" ] || [ -L "$p" ]; then echo present; else echo missing; fi; done'
_REGULAR = ("regular file", "regular empty file")


def _plain_path(path):
    """A path the listing can name as given: absolute and free of what the module's path type would expand."""
    return isinstance(path, str) and os.path.isabs(path) and "~" not in path and "$" not in path


def listing_command(items, absent):
    """The shell command that lists the wanted and absent files, or None when the arguments are anything but plain
    (the module then judges them, and names what is wrong)."""
    if not isinstance(items, list) or not isinstance(absent, list) or not items + absent:
        return None
    paths = [item.get("path") if isinstance(item, dict) else None for item in items]
    if not all(_plain_path(p) for p in paths + absent):
        return None
    if len(set(os.path.normpath(p) for p in paths + absent)) != len(paths + absent):
        return None
    parts = []
    if paths:
        parts.append(_LISTING_WANTED % " ".join(shlex.quote(p) for p in paths))
    if absent:
        parts.append(_LISTING_ABSENT % " ".join(shlex.quote(p) for p in absent))
    return "; ".join(parts)


def _listed_as_wanted(item, line):
    content = item.get("content")
    if not isinstance(content, str):
        return False
    fields = line.strip().split(":")
    if len(fields) != 5 or fields[0] not in _REGULAR:
        return False
    try:
        mode = parse_mode(_setting(item, "mode"), item["path"])
        now_mode = int(fields[1], 8)
    except ValueError:
        return False
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    wanted = (mode, _setting(item, "owner"), _setting(item, "group"), digest)
    return (now_mode, fields[2], fields[3], fields[4]) == wanted


def already_applied(items, absent, listing):
    """Whether the node, as listing_command's output describes it, holds every wanted file with its content, mode
    and owner, and none of the absent ones. False whenever in doubt: the module then looks for itself."""
    lines = listing.splitlines()
    if len(lines) != len(items) + len(absent):
        return False
    if not all(_listed_as_wanted(item, lines[i]) for i, item in enumerate(items)):
        return False
    return all(line.strip() == "missing" for line in lines[len(items) :])
