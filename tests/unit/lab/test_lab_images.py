"""The lab's OCI image archives (tests/lab/files/lab_images.py): the layout `ctr images import` reads, with every
digest and size matching its blob, the image names containerd takes, and the test server's files."""

import gzip
import hashlib
import importlib.util
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("lab_images", HERE.parents[1] / "lab/files/lab_images.py")
lab_images = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lab_images)


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    busybox = out / "busybox"
    busybox.write_bytes(b"\x7fELF stand-in busybox")
    lab_images.main(["lab_images.py", str(out), str(busybox)])
    return out


def read_layout(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def blob(files, descriptor):
    data = files["blobs/sha256/" + descriptor["digest"].split(":", 1)[1]]
    assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"]
    assert len(data) == descriptor["size"]
    return data


def image(files):
    index = json.loads(files["index.json"])
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    (desc,) = index["manifests"]
    manifest = json.loads(blob(files, desc))
    config = json.loads(blob(files, manifest["config"]))
    layers = [gzip.decompress(blob(files, layer)) for layer in manifest["layers"]]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    return desc["annotations"]["io.containerd.image.name"], config["config"], layers


def members(layer):
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


@pytest.mark.parametrize(
    "archive, name, entrypoint",
    [
        ("pause.tar", "localhost/k8s-ipsec-lab/pause:1", lab_images.PAUSE_ENTRYPOINT),
        ("testserver.tar", "localhost/k8s-ipsec-lab/testserver:1", lab_images.TESTSERVER_ENTRYPOINT),
    ],
)
def test_archive_names_and_entrypoint(archives, archive, name, entrypoint):
    got_name, config, layers = image(read_layout(archives / archive))
    assert got_name == name
    assert config["Entrypoint"] == entrypoint
    base = members(layers[0])
    assert base["bin/busybox"].mode == 0o755
    assert base["bin/sh"].issym() and base["bin/sh"].linkname == "busybox"


def test_test_server_files(archives):
    layers = image(read_layout(archives / "testserver.tar"))[2]
    with tarfile.open(fileobj=io.BytesIO(layers[1])) as tar:
        cgi = tar.getmember("www/cgi-bin/index.cgi")
        assert cgi.mode & 0o111
        script = tar.extractfile(cgi).read().decode()
        assert tar.getmember("www/blob").size == 10 * 1024 * 1024
    assert script.startswith("#!/bin/sh\n")
    assert "pod=%s client=%s" in script and '"$POD" "$REMOTE_ADDR"' in script


def test_reproducible(archives, tmp_path):
    lab_images.main(["lab_images.py", str(tmp_path), str(archives / "busybox")])
    for archive in ("pause.tar", "testserver.tar"):
        assert read_layout(tmp_path / archive) == read_layout(archives / archive)


@pytest.mark.parametrize("entrypoint", [lab_images.PAUSE_ENTRYPOINT, lab_images.TESTSERVER_ENTRYPOINT])
def test_entrypoint_as_pid_1_ends_on_sigterm(entrypoint, tmp_path):
    """A pod's PID 1 gets no signal it has no handler for: the entrypoint's own script, run as PID 1 of a new PID
    namespace (by the host's sh; an httpd stand-in that only waits), must end on SIGTERM, as containerd and a node's
    shutdown send it."""
    httpd = tmp_path / "httpd"
    httpd.write_text("#!/bin/sh\nexec sleep 1000\n")
    httpd.chmod(0o755)
    assert entrypoint[1:3] == ["sh", "-c"]
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "sh", "-c", entrypoint[3]], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}
    )
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    pid1 = 0
    try:
        for _attempt in range(50):
            started = children.read_text().split()
            if started:
                pid1 = int(started[0])
                break
            time.sleep(0.1)
        assert pid1, "unshare started no PID 1"
        time.sleep(0.5)  # the trap is set
        os.kill(pid1, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            os.kill(pid1, signal.SIGKILL)
            proc.wait()
