# A minimal container-runtime stand-in for the lab (runs on a node, as root, with python3 only).
#
# It reads the node's CNI conflist and runs the real plugin binaries the way libcni does:
#   ADD: every plugin in order, its config with `name` and `cniVersion` of the list injected and, from the second
#        plugin on, `prevResult` = the previous plugin's result; the final result is cached (as libcni does).
#   DEL: every plugin in reverse order, each with the cached ADD result as `prevResult`.
# Environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME=eth0, CNI_PATH; the config on stdin.
#
# usage: python3 cni_runtime.py add <pod>          create netns pod-<pod>, CNI ADD, print the pod's address
#        python3 cni_runtime.py del <pod>          CNI DEL, delete netns pod-<pod>
#        python3 cni_runtime.py pod-up <pod>       add + an HTTP server in the pod (port 8080), print the address
#        python3 cni_runtime.py pod-down <pod>     stop the server, del
#        python3 cni_runtime.py cycle <count> [--pool N]   <count> ADD/DEL cycles in one scratch netns; fails on the
#                                                  first error. --pool: host-local may hand out only the N addresses
#                                                  after the gateway, so a DEL that leaks addresses exhausts the pool
#                                                  within a few cycles
#        python3 cni_runtime.py list               pods of this runtime and their addresses
#        python3 cni_runtime.py serve <pod> <port> the HTTP server itself (started inside the pod's netns by pod-up)
# HTTP server: GET /        -> "pod=<pod> client=<address the server saw>\n"
#              GET /blob    -> 10 MiB of data (GET /blob?size=<bytes> for another size), for the MTU check
import argparse
import copy
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CONFLIST = "/etc/cni/net.d/10-k8s-ipsec.conflist"
CNI_PATH = "/usr/lib/cni"
IFNAME = "eth0"
STATE = "/run/k8s-ipsec-lab"
PORT = 8080
BLOB = 10 * 1024 * 1024


class CNIError(Exception):
    pass


def load_conflist(path):
    with open(path) as f:
        conf = json.load(f)
    if not conf.get("plugins"):
        raise CNIError(f"{path}: no plugins")
    return conf


def netns_path(ns):
    return f"/run/netns/{ns}"


def cache_file(conf, container_id):
    return os.path.join(STATE, "results", f"{conf['name']}-{container_id}-{IFNAME}.json")


def exec_plugin(command, plugin, conf, container_id, netns, prev_result):
    cfg = dict(plugin)
    cfg["name"] = conf["name"]
    cfg["cniVersion"] = conf["cniVersion"]
    if prev_result is not None:
        cfg["prevResult"] = prev_result
    binary = None
    for d in os.environ.get("CNI_PATH", CNI_PATH).split(":"):
        if os.path.exists(os.path.join(d, plugin["type"])):
            binary = os.path.join(d, plugin["type"])
            break
    if binary is None:
        raise CNIError(f"plugin {plugin['type']} not found in CNI_PATH")
    env = dict(os.environ)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=container_id,
        CNI_NETNS=netns,
        CNI_IFNAME=IFNAME,
        CNI_PATH=os.environ.get("CNI_PATH", CNI_PATH),
    )
    p = subprocess.run([binary], input=json.dumps(cfg).encode(), env=env, capture_output=True, timeout=120, check=False)
    out = p.stdout.decode(errors="replace").strip()
    if p.returncode != 0:
        try:
            err = json.loads(out)
            msg = f"{err.get('msg')} {err.get('details', '')}".strip()
        except ValueError:
            msg = out or p.stderr.decode(errors="replace").strip()
        raise CNIError(f"{command} {plugin['type']}: exit {p.returncode}: {msg}")
    if command == "ADD":
        try:
            return json.loads(out)
        except ValueError as e:
            raise CNIError(f"ADD {plugin['type']}: bad result {out!r}") from e
    return None


def cni_add(conf, container_id, netns):
    result = None
    for plugin in conf["plugins"]:
        result = exec_plugin("ADD", plugin, conf, container_id, netns, result)
    path = cache_file(conf, container_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f)
    return result


def cni_del(conf, container_id, netns):
    path = cache_file(conf, container_id)
    cached = None
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
    for plugin in reversed(conf["plugins"]):
        exec_plugin("DEL", plugin, conf, container_id, netns, cached)
    if os.path.exists(path):
        os.unlink(path)


def pod_address(result):
    for ip in result.get("ips", []):
        addr = ip["address"].split("/")[0]
        if ":" not in addr:
            return addr
    raise CNIError(f"no IPv4 address in result {result}")


def run(*cmd):
    subprocess.run(cmd, check=True)


def netns_add(ns):
    if not os.path.exists(netns_path(ns)):
        run("ip", "netns", "add", ns)
    run("ip", "-n", ns, "link", "set", "lo", "up")


def netns_del(ns):
    if os.path.exists(netns_path(ns)):
        run("ip", "netns", "del", ns)


def add(conf, pod):
    ns = f"pod-{pod}"
    netns_add(ns)
    try:
        result = cni_add(conf, f"lab-{pod}", netns_path(ns))
    except CNIError:
        # a runtime cleans up a failed ADD with DEL
        try:
            cni_del(conf, f"lab-{pod}", netns_path(ns))
        finally:
            netns_del(ns)
        raise
    return pod_address(result)


def delete(conf, pod):
    ns = f"pod-{pod}"
    cni_del(conf, f"lab-{pod}", netns_path(ns) if os.path.exists(netns_path(ns)) else "")
    netns_del(ns)


def pidfile(pod):
    return os.path.join(STATE, "pods", f"{pod}.pid")


def pod_up(conf, pod, port):
    addr = add(conf, pod)
    os.makedirs(os.path.dirname(pidfile(pod)), exist_ok=True)
    log = open(os.path.join(STATE, "pods", f"{pod}.log"), "ab")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", f"pod-{pod}", sys.executable, os.path.abspath(__file__), "serve", pod, str(port)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    line = proc.stdout.readline().decode().strip()
    if line != "ready":
        raise CNIError(f"server in pod-{pod} did not start: {line!r}")
    with open(pidfile(pod), "w") as f:
        f.write(f"{proc.pid}\n")
    return addr


def pod_down(conf, pod):
    try:
        with open(pidfile(pod)) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    if os.path.exists(pidfile(pod)):
        os.unlink(pidfile(pod))
    delete(conf, pod)


def narrowed(conf, pool):
    """The conflist with each host-local range cut down to the pool addresses after its gateway."""
    conf = copy.deepcopy(conf)
    for plugin in conf["plugins"]:
        ipam = plugin.get("ipam", {})
        if ipam.get("type") != "host-local":
            continue
        for ranges in ipam.get("ranges", []):
            for r in ranges:
                start = ipaddress.ip_address(r["gateway"]) + 1
                r["rangeStart"], r["rangeEnd"] = str(start), str(start + pool - 1)
    return conf


def cycle(conf, count, pool=None):
    if pool:
        conf = narrowed(conf, pool)
    ns = "pod-cni-cycle"
    netns_add(ns)
    t0 = time.monotonic()
    try:
        for k in range(count):
            cid = f"cycle-{os.getpid()}-{k}"
            try:
                cni_add(conf, cid, netns_path(ns))
            except CNIError as e:
                raise CNIError(f"cycle {k + 1}/{count}: {e}") from e
            cni_del(conf, cid, netns_path(ns))
    finally:
        netns_del(ns)
    print(f"{count} ADD/DEL cycles ok in {time.monotonic() - t0:.1f} s" + (f" (pool of {pool})" if pool else ""))


def list_pods(conf):
    d = os.path.join(STATE, "results")
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        with open(os.path.join(d, name)) as f:
            print(name[: -len(f"-{IFNAME}.json")], pod_address(json.load(f)))


def serve(pod, port):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            if url.path == "/blob":
                size = int(parse_qs(url.query).get("size", [BLOB])[0])
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"k8s-ipsec" * 7281  # 65529 bytes
                left = size
                while left > 0:
                    n = min(left, len(chunk))
                    self.wfile.write(chunk[:n])
                    left -= n
                return
            body = f"pod={pod} client={self.client_address[0]}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
            pass

    ThreadingHTTPServer.daemon_threads = True
    httpd = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    httpd.serve_forever()


def main():
    ap = argparse.ArgumentParser(description="minimal CNI runtime for the k8s-ipsec lab")
    ap.add_argument("--conflist", default=CONFLIST)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("add", "del", "pod-down"):
        sub.add_parser(name).add_argument("pod")
    p = sub.add_parser("pod-up")
    p.add_argument("pod")
    p.add_argument("--port", type=int, default=PORT)
    p = sub.add_parser("cycle")
    p.add_argument("count", type=int)
    p.add_argument("--pool", type=int)
    sub.add_parser("list")
    p = sub.add_parser("serve")
    p.add_argument("pod")
    p.add_argument("port", type=int)
    args = ap.parse_args()

    if args.cmd == "serve":
        serve(args.pod, args.port)
        return 0
    try:
        conf = load_conflist(args.conflist)
        if args.cmd == "add":
            print(add(conf, args.pod))
        elif args.cmd == "del":
            delete(conf, args.pod)
        elif args.cmd == "pod-up":
            print(pod_up(conf, args.pod, args.port))
        elif args.cmd == "pod-down":
            pod_down(conf, args.pod)
        elif args.cmd == "cycle":
            cycle(conf, args.count, args.pool)
        elif args.cmd == "list":
            list_pods(conf)
    except (CNIError, OSError, subprocess.CalledProcessError) as e:
        print(f"cni_runtime: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
