# The lab's pods, made the way kubelet makes them: CRI calls to containerd (RunPodSandbox, CreateContainer,
# StartContainer, StopPodSandbox, RemovePodSandbox), so containerd's CRI plugin runs the node's CNI configuration
# as the containerd role set it up. Runs on a node as root, with the message classes the lab image generated from
# Debian's CRI api.proto (/opt/k8s-ipsec-lab/cri) and Debian's python3-grpcio.
#
# usage: python3 cri_pods.py pod-up <pod>      sandbox + test-server container; prints the pod's address
#        python3 cri_pods.py pod-down <pod>    stop and remove the sandbox (and its container)
#        python3 cri_pods.py cycle <count>     <count> sandboxes made and removed one after another
#        python3 cri_pods.py list              the lab's sandboxes: name, state, address
# The pod's network namespace is also reachable as /run/netns/pod-<pod> (a link to containerd's), so the lab's
# checks run their clients inside it with `ip netns exec`, as with the CNI stand-in (cni_runtime.py).
import argparse
import json
import os
import re
import subprocess
import sys
import time

LAB = "/opt/k8s-ipsec-lab"
sys.path.insert(0, os.path.join(LAB, "cri"))

import api_pb2  # noqa: E402 (generated into the lab image)
import grpc  # noqa: E402

SOCKET = "unix:///run/containerd/containerd.sock"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
NAMESPACE = "lab"
LABEL = "k8s-ipsec-lab/pod"
PAUSE = "localhost/k8s-ipsec-lab/pause:1"
TESTSERVER = "localhost/k8s-ipsec-lab/testserver:1"
ARCHIVES = {PAUSE: os.path.join(LAB, "images", "pause.tar"), TESTSERVER: os.path.join(LAB, "images", "testserver.tar")}
CGROUP_PARENT = "k8s_ipsec_lab.slice"
TIMEOUT = 120


class CRIError(Exception):
    pass


class CRI:
    """The two CRI services, called by method name (no generated service stubs needed)."""

    def __init__(self, target=SOCKET):
        self.channel = grpc.insecure_channel(target)

    def call(self, service, method, request):
        response_class = getattr(api_pb2, method + "Response")
        rpc = self.channel.unary_unary(
            f"/runtime.v1.{service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            return rpc(request, timeout=TIMEOUT)
        except grpc.RpcError as e:
            raise CRIError(f"{method}: {e.code().name}: {e.details()}") from None

    def runtime(self, method, **fields):
        return self.call("RuntimeService", method, getattr(api_pb2, method + "Request")(**fields))

    def image(self, method, **fields):
        return self.call("ImageService", method, getattr(api_pb2, method + "Request")(**fields))


def sandbox_image():
    """The pause image containerd's CRI plugin uses (containerd role: sandbox_image)."""
    try:
        with open(CONTAINERD_CONFIG) as f:
            m = re.search(r'^\s*sandbox_image\s*=\s*"([^"]+)"', f.read(), re.M)
    except OSError:
        m = None
    return m.group(1) if m else PAUSE


def ensure_images(cri):
    """Import the lab's images into containerd's k8s.io namespace once; name the pause image as configured."""
    wanted = {TESTSERVER: TESTSERVER, PAUSE: sandbox_image()}
    for source, name in wanted.items():
        if cri.image("ImageStatus", image=api_pb2.ImageSpec(image=name)).image.id:
            continue
        run("ctr", "-n", "k8s.io", "images", "import", ARCHIVES[source])
        if name != source:
            run("ctr", "-n", "k8s.io", "images", "tag", "--force", source, name)
        if not cri.image("ImageStatus", image=api_pb2.ImageSpec(image=name)).image.id:
            raise CRIError(f"image {name} not visible to the CRI after import")


def run(*cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise CRIError(f"{' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def sandbox_config(pod, attempt=0):
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=pod, uid=f"lab-{pod}", namespace=NAMESPACE, attempt=attempt),
        hostname=pod,
        log_directory=f"/var/log/pods/{NAMESPACE}_{pod}",
        labels={LABEL: pod},
        linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent=CGROUP_PARENT),
    )


def sandboxes(cri, pod=None):
    selector = {LABEL: pod} if pod else {}
    found = cri.runtime("ListPodSandbox", filter=api_pb2.PodSandboxFilter(label_selector=selector)).items
    return [s for s in found if LABEL in s.labels]


def netns_of(cri, sandbox_id):
    """containerd's network namespace of the sandbox, from the verbose status (its runtime spec)."""
    info = cri.runtime("PodSandboxStatus", pod_sandbox_id=sandbox_id, verbose=True).info.get("info", "{}")
    for ns in json.loads(info).get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network" and ns.get("path"):
            return ns["path"]
    raise CRIError(f"sandbox {sandbox_id}: no network namespace in its status")


def link_netns(pod, path):
    link = f"/run/netns/pod-{pod}"
    os.makedirs("/run/netns", exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(path, link)


def unlink_netns(pod):
    link = f"/run/netns/pod-{pod}"
    if os.path.islink(link):
        os.unlink(link)


def pod_up(cri, pod):
    ensure_images(cri)
    attempt = len(sandboxes(cri, pod))
    config = sandbox_config(pod, attempt)
    sandbox_id = cri.runtime("RunPodSandbox", config=config).pod_sandbox_id
    try:
        container = api_pb2.ContainerConfig(
            # the attempt as kubelet counts it: the container name of an earlier sandbox of this pod stays reserved
            metadata=api_pb2.ContainerMetadata(name="server", attempt=attempt),
            image=api_pb2.ImageSpec(image=TESTSERVER),
            envs=[api_pb2.KeyValue(key="POD", value=pod)],
            log_path="server.log",
            labels={LABEL: pod},
            linux=api_pb2.LinuxContainerConfig(),
        )
        container_id = cri.runtime(
            "CreateContainer", pod_sandbox_id=sandbox_id, config=container, sandbox_config=config
        ).container_id
        cri.runtime("StartContainer", container_id=container_id)
        status = cri.runtime("PodSandboxStatus", pod_sandbox_id=sandbox_id).status
        if not status.network.ip:
            raise CRIError(f"sandbox {sandbox_id} has no address")
        link_netns(pod, netns_of(cri, sandbox_id))
    except CRIError:
        remove(cri, sandbox_id)
        raise
    return status.network.ip


def remove(cri, sandbox_id):
    cri.runtime("StopPodSandbox", pod_sandbox_id=sandbox_id)
    cri.runtime("RemovePodSandbox", pod_sandbox_id=sandbox_id)


def pod_down(cri, pod):
    for s in sandboxes(cri, pod):
        remove(cri, s.id)
    unlink_netns(pod)


def cycle(cri, count):
    """Sandboxes (pause only, as kubelet's first step) made and removed; fails at the first error."""
    ensure_images(cri)
    t0 = time.monotonic()
    for i in range(count):
        sandbox_id = cri.runtime("RunPodSandbox", config=sandbox_config("cycle", i)).pod_sandbox_id
        if not cri.runtime("PodSandboxStatus", pod_sandbox_id=sandbox_id).status.network.ip:
            raise CRIError(f"cycle {i + 1}: sandbox without address")
        remove(cri, sandbox_id)
    print(f"{count} CRI sandbox cycles in {time.monotonic() - t0:.0f} s")


def list_pods(cri):
    for s in sandboxes(cri):
        ip = ""
        if s.state == api_pb2.SANDBOX_READY:
            ip = cri.runtime("PodSandboxStatus", pod_sandbox_id=s.id).status.network.ip
        print(s.metadata.name, api_pb2.PodSandboxState.Name(s.state), ip or "-")


def main():
    parser = argparse.ArgumentParser(description="the lab's pods through containerd's CRI")
    parser.add_argument("verb", choices=["pod-up", "pod-down", "cycle", "list"])
    parser.add_argument("arg", nargs="?")
    args = parser.parse_args()
    cri = CRI()
    try:
        if args.verb == "pod-up":
            print(pod_up(cri, args.arg))
        elif args.verb == "pod-down":
            pod_down(cri, args.arg)
        elif args.verb == "cycle":
            cycle(cri, int(args.arg))
        else:
            list_pods(cri)
    except CRIError as e:
        print(f"cri_pods {args.verb}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
