"""The node_files helpers on a real directory: what differs, what is written, and what is refused."""

import os
import stat
import subprocess

import pytest
from ansible_collections.k8s_ipsec.cni.plugins.module_utils._files import (
    already_applied,
    apply_change,
    desired_files,
    listing_command,
    parse_mode,
    plan,
    plan_changes,
)


def wanted(path, content="x=1\n", mode="0644"):
    return desired_files([{"path": str(path), "content": content, "mode": mode}])


def write_all(items):
    changes = plan_changes(desired_files(items))
    for change in changes:
        apply_change(change)
    return changes


def test_a_missing_file_and_its_directories_are_created(tmp_path):
    target = tmp_path / "etc" / "new.d" / "unit.conf"
    changes = write_all([{"path": str(target), "content": "[Unit]\n", "mode": "0640"}])
    assert [c["reasons"] for c in changes] == [["created"]]
    assert changes[0]["diff"]["before"] == "" and changes[0]["diff"]["after"] == "[Unit]\n"
    assert target.read_text() == "[Unit]\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "etc" / "new.d").stat().st_mode) == 0o755


def test_a_second_pass_changes_nothing(tmp_path):
    items = [
        {"path": str(tmp_path / "a"), "content": "one\n", "mode": "0755"},
        {"path": str(tmp_path / "b"), "content": "two", "mode": "0644"},
    ]
    assert len(write_all(items)) == 2
    assert plan_changes(desired_files(items)) == []


def test_content_and_mode_are_told_apart(tmp_path):
    target = tmp_path / "script"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    changes = plan_changes(wanted(target, "old\n", "0755"))
    assert changes[0]["reasons"] == ["mode"]
    apply_change(changes[0])
    assert target.read_text() == "old\n" and stat.S_IMODE(target.stat().st_mode) == 0o755
    changes = plan_changes(wanted(target, "new\n", "0755"))
    assert changes[0]["reasons"] == ["content"]
    assert changes[0]["diff"]["before"] == "old\n" and changes[0]["diff"]["after"] == "new\n"


def test_a_write_replaces_the_file_whole_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "conf"
    target.write_text("old\n")
    inode = target.stat().st_ino
    write_all([{"path": str(target), "content": "new\n"}])
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf"]


def test_something_that_is_not_a_regular_file_is_refused(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match="dir: exists and is not a regular file"):
        plan_changes(wanted(tmp_path / "dir"))


def test_every_bad_entry_is_named_at_once():
    with pytest.raises(ValueError) as e:
        desired_files(
            [
                {"path": "relative/file", "content": ""},
                {"path": "/etc/a", "content": "", "mode": "rw-r--r--"},
                {"path": "/etc/b", "content": "", "owner": "no-such-user-here"},
                {"path": "/etc/c", "content": ""},
                {"path": "/etc/c", "content": ""},
            ]
        )
    message = str(e.value)
    assert "relative/file: the path must be absolute" in message
    assert "/etc/a: mode 'rw-r--r--' is not an octal file mode" in message
    assert "/etc/b: no user 'no-such-user-here'" in message
    assert "/etc/c: given twice" in message


@pytest.mark.parametrize("text,mode", [("0644", 0o644), ("755", 0o755), ("0600", 0o600)])
def test_modes_are_octal_text(text, mode):
    assert parse_mode(text, "/x") == mode


def test_a_mode_out_of_range_is_refused():
    with pytest.raises(ValueError, match="/x: mode '17777'"):
        parse_mode("17777", "/x")


def test_absent_files_are_removed_and_missing_ones_ignored(tmp_path):
    old = tmp_path / "secrets.conf"
    old.write_text("secret\n")
    changes = plan([], [str(old), str(tmp_path / "never-there")])
    assert [(c["path"], c["reasons"]) for c in changes] == [(str(old), ["removed"])]
    apply_change(changes[0])
    assert not old.exists()
    assert plan([], [str(old)]) == []


def test_a_path_to_write_and_to_remove_is_refused(tmp_path):
    with pytest.raises(ValueError, match="both a file to write and one to remove"):
        plan([{"path": str(tmp_path / "a"), "content": ""}], [str(tmp_path / "a")])


def read_node(items, absent=()):
    """What the node_files action concludes from its shell listing, run here by sh as on a node."""
    command = listing_command(items, list(absent))
    listing = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    return already_applied(items, list(absent), listing)


def test_the_shell_listing_sees_every_difference_the_module_writes(tmp_path):
    items = [
        {"path": str(tmp_path / "etc" / "unit.conf"), "content": "[Unit]\n", "mode": "0640"},
        {"path": str(tmp_path / "with space"), "content": ""},
    ]
    gone = [str(tmp_path / "old.conf")]
    assert read_node(items, gone) is False
    write_all(items)
    assert read_node(items, gone) is True
    # content, mode, owner, a file that must go, something that is not a regular file
    (tmp_path / "etc" / "unit.conf").write_text("[Unit]\n# edited\n")
    assert read_node(items, gone) is False
    write_all(items)
    os.chmod(tmp_path / "with space", 0o600)
    assert read_node(items, gone) is False
    write_all(items)
    assert read_node([dict(items[1], owner="nobody")]) is False
    (tmp_path / "old.conf").symlink_to(tmp_path / "nowhere")
    assert read_node(items, gone) is False
    os.unlink(tmp_path / "old.conf")
    os.unlink(tmp_path / "with space")
    os.symlink(tmp_path / "etc" / "unit.conf", tmp_path / "with space")
    assert read_node(items, gone) is False


@pytest.mark.parametrize(
    "items, absent",
    [
        ([{"path": "etc/relative", "content": ""}], []),
        ([{"path": "~/home", "content": ""}], []),
        ([{"path": "/etc/$X", "content": ""}], []),
        ([{"path": "/etc/a", "content": ""}], ["/etc/a"]),
        ([{"path": "/etc/a", "content": ""}, {"path": "/etc//a", "content": ""}], []),
        ("not a list", []),
        ([], []),
    ],
)
def test_arguments_the_module_would_judge_get_no_listing(items, absent):
    assert listing_command(items, absent) is None


def test_a_listing_that_does_not_fit_is_never_taken_as_applied():
    items = [{"path": "/etc/a", "content": "x", "mode": "0644"}]
    assert already_applied(items, [], "") is False
    assert already_applied(items, [], "regular file:644:root:root\n") is False
    assert already_applied([dict(items[0], mode="9")], [], "regular file:9:root:root:x\n") is False
