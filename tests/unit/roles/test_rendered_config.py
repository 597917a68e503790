"""The kubeadm and containerd roles' real templates, rendered by Ansible with the roles' defaults and a real plan."""

import tomllib

import pytest
import yaml
from ansible_cli import ROOT
from conftest import CA_HASH, CERT_KEY, KUBEADM_VERSION, TOKEN


def kubeadm_defaults():
    return yaml.safe_load((ROOT / "roles/kubeadm/defaults/main.yml").read_text())


def test_default_minor_is_a_v1beta4_release():
    minor = kubeadm_defaults()["kubeadm_kubernetes_minor"]
    assert isinstance(minor, str)
    major, number = (int(part) for part in minor.split("."))
    assert major == 1 and number >= 31


def test_init_advertises_the_api_on_the_cni0_gateway(three_nodes):
    init = three_nodes.docs("kube-node1", "kubeadm-init.yaml")["InitConfiguration"]
    assert init["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.128.1.1", "bindPort": 6443}


def test_init_sets_the_kubelet_node_ip_to_the_gateway_as_a_name_value_list(three_nodes):
    registration = three_nodes.docs("kube-node1", "kubeadm-init.yaml")["InitConfiguration"]["nodeRegistration"]
    assert registration["kubeletExtraArgs"] == [{"name": "node-ip", "value": "10.128.1.1"}]
    assert registration["name"] == "kube-node1"
    assert registration["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert "ignorePreflightErrors" not in registration


def test_init_makes_a_short_lived_bootstrap_token_not_the_24_hour_default(three_nodes):
    init = three_nodes.docs("kube-node1", "kubeadm-init.yaml")["InitConfiguration"]
    assert init["bootstrapTokens"] == [
        {"token": TOKEN, "ttl": "15m", "description": "kubeadm init by k8s_ipsec.cni, deleted after init"}
    ]


def test_small_cluster_control_plane_is_schedulable(three_nodes):
    registration = three_nodes.docs("kube-node1", "kubeadm-init.yaml")["InitConfiguration"]["nodeRegistration"]
    assert registration["taints"] == []
    assert three_nodes.computed("kube-node1")["schedulable"] is True


def test_cluster_configuration_uses_the_plan_and_the_installed_version(three_nodes):
    cluster = three_nodes.docs("kube-node1", "kubeadm-init.yaml")["ClusterConfiguration"]
    minor = kubeadm_defaults()["kubeadm_kubernetes_minor"]
    assert cluster["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert cluster["kubernetesVersion"] == KUBEADM_VERSION
    assert cluster["kubernetesVersion"].startswith(f"v{minor}.")
    assert cluster["networking"]["podSubnet"] == "10.128.0.0/16"
    assert cluster["networking"]["serviceSubnet"] == "10.96.0.0/12"
    assert cluster["controlPlaneEndpoint"] == "10.128.1.1:6443"
    assert {"10.128.1.1", "192.168.64.10"} <= set(cluster["apiServer"]["certSANs"])
    assert {"name": "allocate-node-cidrs", "value": "false"} in cluster["controllerManager"]["extraArgs"]


def test_kubelet_and_kube_proxy_match_the_runtime_and_the_pod_network(three_nodes):
    docs = three_nodes.docs("kube-node1", "kubeadm-init.yaml")
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert docs["KubeProxyConfiguration"]["clusterCIDR"] == "10.128.0.0/16"
    cri = tomllib.loads(three_nodes.text("kube-node1", "config.toml"))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True


def test_worker_join_verifies_the_ca_and_uses_its_own_gateway(three_nodes):
    join = three_nodes.docs("kube-node3", "kubeadm-join.yaml")["JoinConfiguration"]
    assert join["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert join["discovery"] == {
        "bootstrapToken": {"apiServerEndpoint": "10.128.1.1:6443", "token": TOKEN, "caCertHashes": [CA_HASH]}
    }
    assert "unsafeSkipCAVerification" not in three_nodes.text("kube-node3", "kubeadm-join.yaml")
    assert join["nodeRegistration"]["kubeletExtraArgs"] == [{"name": "node-ip", "value": "10.128.3.1"}]
    assert "controlPlane" not in join
    assert "taints" not in join["nodeRegistration"]


def test_default_packages_follow_the_minor_from_pkgs_k8s_io(three_nodes):
    minor = kubeadm_defaults()["kubeadm_kubernetes_minor"]
    computed = three_nodes.computed("kube-node2")
    assert computed["package_version"] == f"{minor}.*"
    assert computed["apt_repository_url"] == f"https://pkgs.k8s.io/core:/stable:/v{minor}/deb/"
    assert computed["apt_key_url"] == f"https://pkgs.k8s.io/core:/stable:/v{minor}/deb/Release.key"
    assert computed["first_control_plane"] == "kube-node1"
    assert computed["is_control_plane"] is False


def test_larger_cluster_keeps_the_control_plane_taint(four_nodes):
    registration = four_nodes.docs("bravo", "kubeadm-init.yaml")["InitConfiguration"]["nodeRegistration"]
    assert "taints" not in registration
    assert "taints" not in four_nodes.docs("alpha", "kubeadm-join.yaml")["JoinConfiguration"]["nodeRegistration"]
    assert four_nodes.computed("bravo")["schedulable"] is False


def test_first_control_plane_of_the_group_is_the_endpoint_and_values_follow_the_plan(four_nodes):
    assert four_nodes.computed("delta")["first_control_plane"] == "bravo"
    cluster = four_nodes.docs("bravo", "kubeadm-init.yaml")["ClusterConfiguration"]
    assert cluster["networking"] == {
        "podSubnet": "10.200.0.0/16",
        "serviceSubnet": "172.20.0.0/16",
        "dnsDomain": "cluster.local",
    }
    assert cluster["controlPlaneEndpoint"] == "10.200.7.1:6443"
    assert set(cluster["apiServer"]["certSANs"]) == {
        "10.200.7.1",
        "192.168.64.70",
        "10.200.4.1",
        "192.168.64.40",
        "api.example.test",
    }
    worker = four_nodes.docs("delta", "kubeadm-join.yaml")["JoinConfiguration"]
    assert worker["discovery"]["bootstrapToken"]["apiServerEndpoint"] == "10.200.7.1:6443"
    assert worker["nodeRegistration"]["kubeletExtraArgs"] == [{"name": "node-ip", "value": "10.200.12.1"}]


def test_second_control_plane_joins_with_the_certificate_key_on_its_gateway(four_nodes):
    join = four_nodes.docs("alpha", "kubeadm-join.yaml")["JoinConfiguration"]
    assert join["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "10.200.4.1", "bindPort": 6443},
        "certificateKey": CERT_KEY,
    }
    assert join["discovery"]["bootstrapToken"]["caCertHashes"] == [CA_HASH]


def test_pinned_patch_release_pins_the_packages(four_nodes):
    assert four_nodes.computed("alpha")["package_version"] == "1.36.2-*"


def test_containerd_uses_the_distribution_cni_plugins_and_our_conf_dir(three_nodes):
    cri = tomllib.loads(three_nodes.text("kube-node2", "config.toml"))["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": "/etc/cni/net.d", "max_conf_num": 1}
    assert cri["containerd"]["runtimes"]["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert cri["sandbox_image"].startswith("registry.k8s.io/pause:")


NETWORK_UNITS = "k8s-ipsec-cni0.service k8s-ipsec-firewall.service k8s-ipsec-tunnels.service"


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("containerd-order.conf", "strongswan.service"),
        ("kubelet-order.conf", "strongswan.service containerd.service"),
    ],
)
def test_runtime_and_kubelet_require_the_pod_network_units(three_nodes, name, wanted):
    lines = three_nodes.text("kube-node1", name).splitlines()
    assert f"Requires={NETWORK_UNITS}" in lines
    assert f"After={NETWORK_UNITS} {wanted}" in lines
    assert f"Wants={wanted}" in lines
    assert lines.index("[Unit]") < lines.index(f"Requires={NETWORK_UNITS}")


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("kubeadm-init.yaml", "kubeadm"),
        ("kubeadm-join.yaml", "kubeadm"),
        ("kubelet-order.conf", "kubeadm"),
        ("config.toml", "containerd"),
        ("containerd-order.conf", "containerd"),
        ("crictl.yaml", "containerd"),
    ],
)
def test_every_rendered_file_says_who_manages_it(three_nodes, name, role):
    assert three_nodes.text("kube-node1", name).splitlines()[0] == f"# Managed by k8s_ipsec.cni (role {role})"
