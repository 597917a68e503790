# Builds the lab's container images as OCI image archives (what `ctr images import` reads), from Debian's
# busybox-static: no registry is reachable from the lab. Runs at image build time inside the node rootfs
# (tests/lab/files/customize-image.sh), with python3's standard library only.
#
#   pause.tar       localhost/k8s-ipsec-lab/pause:1       the pod sandbox: sleeps until it is stopped
#   testserver.tar  localhost/k8s-ipsec-lab/testserver:1  busybox httpd on port 8080:
#                       GET /      -> "pod=$POD client=<address the server saw>"  (a CGI script)
#                       GET /blob  -> 10 MiB, for the transfer check through the tunnel MTU
#
# usage: python3 lab_images.py <output dir> [busybox binary]
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

PAUSE = "localhost/k8s-ipsec-lab/pause:1"
TESTSERVER = "localhost/k8s-ipsec-lab/testserver:1"
PORT = 8080
BLOB_SIZE = 10 * 1024 * 1024
APPLETS = ("sh", "sleep", "httpd", "cat", "env", "ip", "ping", "wget")
# Both run as their pod's PID 1, which the kernel spares every signal it has no handler for: like Kubernetes' own
# pause image they trap SIGTERM, or each stop (a node's shutdown included) would wait for systemd's 90 s timeout.
PAUSE_ENTRYPOINT = ["/bin/busybox", "sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]
TESTSERVER_ENTRYPOINT = [
    "/bin/busybox",
    "sh",
    "-c",
    "trap 'exit 0' TERM INT; httpd -f -p 0.0.0.0:%d -h /www & wait" % PORT,
]
WHO_CGI = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'pod=%s client=%s\\n' "$POD" "$REMOTE_ADDR"
"""


def _add(tar, name, data=None, mode=0o644, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.linkname = link
    if data is not None:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def _layer(entries):
    """(uncompressed tar, gzipped tar) of entries: [(name, bytes|None, mode, kind, link)], reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            _add(tar, *entry)
    plain = raw.getvalue()
    return plain, gzip.compress(plain, compresslevel=6, mtime=0)


def busybox_layer(busybox):
    with open(busybox, "rb") as f:
        binary = f.read()
    entries = [("bin", None, 0o755, tarfile.DIRTYPE, ""), ("bin/busybox", binary, 0o755, tarfile.REGTYPE, "")]
    entries += [("bin/" + a, None, 0o777, tarfile.SYMTYPE, "busybox") for a in APPLETS]
    entries += [
        (d, None, 0o1777 if d == "tmp" else 0o755, tarfile.DIRTYPE, "") for d in ("tmp", "etc", "proc", "sys", "dev")
    ]
    return _layer(entries)


def www_layer():
    return _layer(
        [
            ("www", None, 0o755, tarfile.DIRTYPE, ""),
            ("www/cgi-bin", None, 0o755, tarfile.DIRTYPE, ""),
            # busybox httpd runs /cgi-bin/index.cgi for a directory without index.html
            ("www/cgi-bin/index.cgi", WHO_CGI.encode(), 0o755, tarfile.REGTYPE, ""),
            ("www/blob", bytes(BLOB_SIZE), 0o644, tarfile.REGTYPE, ""),
        ]
    )


def _digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_archive(path, name, layers, entrypoint, env=("PATH=/bin",)):
    """An OCI image layout in a tar; the index names the image for containerd (io.containerd.image.name)."""
    blobs = {}

    def blob(data, media_type):
        digest = _digest(data)
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer_descs = [blob(layer[1], "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "Env": list(env), "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer[0]) for layer in layers]},
    }
    config_desc = blob(json.dumps(config, sort_keys=True).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    }
    manifest_desc = blob(json.dumps(manifest, sort_keys=True).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
    }
    manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]}
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in sorted(blobs.items()):
            _add(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)


def main(argv):
    out = argv[1]
    busybox = argv[2] if len(argv) > 2 else "/bin/busybox"
    os.makedirs(out, exist_ok=True)
    base = busybox_layer(busybox)
    write_archive(os.path.join(out, "pause.tar"), PAUSE, [base], PAUSE_ENTRYPOINT)
    write_archive(os.path.join(out, "testserver.tar"), TESTSERVER, [base, www_layer()], TESTSERVER_ENTRYPOINT)
    print("images in %s: %s, %s" % (out, PAUSE, TESTSERVER))


if __name__ == "__main__":
    main(sys.argv)
