#!/usr/bin/env bash
# Lab-only customization of a debootstrapped Debian node rootfs. Runs INSIDE the chroot (image.sh copies it in).
# It must not do anything the collection's roles are responsible for: no cni0, no sysctl or modules-load files,
# no strongSwan configuration (Debian's shipped plugin config, forecast/farp included, stays as it is).
# The root SSH key is not baked in: lab-net reads it from the kernel command line (lab.key=<base64>), so one
# cached image serves every checkout, each with its own key under .lab/ssh/.
set -euo pipefail

echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' >/etc/fstab
echo lab >/etc/hostname
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >/etc/hosts
: >/etc/resolv.conf
install -d -m 700 /root/.ssh

# Underlay address, root key and host name from the kernel command line:
#   lab.ip=192.168.100.11/24 lab.key=<base64 of an authorized_keys line> systemd.hostname=n1
cat >/usr/local/sbin/lab-net <<'EOS'
#!/bin/sh
set -eu
IP=dhcp
KEY=
for a in $(cat /proc/cmdline); do
  case $a in
    lab.ip=*) IP=${a#lab.ip=} ;;
    lab.key=*) KEY=${a#lab.key=} ;;
  esac
done
mkdir -p /run/systemd/network
if [ "$IP" = dhcp ]; then
  # The client ID from the MAC: every VM of this image shares its machine-id, hence the default DUID-based ID,
  # and a DHCP server that sees one client ID serves only one of them.
  printf '[Match]\nName=eth0\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n[DHCPv4]\nClientIdentifier=mac\n' \
    >/run/systemd/network/10-eth0.network
else
  printf '[Match]\nName=eth0\n[Network]\nAddress=%s\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n' "$IP" >/run/systemd/network/10-eth0.network
fi
if [ -n "$KEY" ]; then
  umask 077
  mkdir -p /root/.ssh
  echo "$KEY" | base64 -d >/root/.ssh/authorized_keys
fi
H=$(cat /proc/sys/kernel/hostname)
grep -q "[[:space:]]$H\$" /etc/hosts || printf '127.0.1.1\t%s\n' "$H" >>/etc/hosts
EOS
chmod 755 /usr/local/sbin/lab-net
cat >/etc/systemd/system/lab-net.service <<'EOS'
[Unit]
Description=Lab: underlay address and root key from the kernel command line
DefaultDependencies=no
Before=systemd-networkd.service ssh.service
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lab-net

[Install]
WantedBy=sysinit.target
EOS

# Docker and kube hosts run with a FORWARD policy of DROP: the roles must work against it.
cat >/etc/systemd/system/lab-forward-drop.service <<'EOS'
[Unit]
Description=Lab: iptables FORWARD policy DROP, as on Docker/Kubernetes hosts
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/iptables -w -P FORWARD DROP

[Install]
WantedBy=sysinit.target
EOS

systemctl enable lab-net.service lab-forward-drop.service systemd-networkd.service
# The strongswan role enables the daemon; nothing starts it before the role has configured it.
systemctl disable strongswan.service
# No network time or background jobs eating the emulated CPU.
for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
  dpkg-db-backup.timer man-db.timer; do
  systemctl mask "$u"
done
echo 'UseDNS no' >/etc/ssh/sshd_config.d/lab.conf

# What the lab's pods are made with (tests/lab/files/cri_pods.py): Python message classes of the CRI API, generated
# from Debian's api.proto by Debian's protoc (so they match Debian's python3-protobuf); gogoproto options only shape
# Go code and are left out. Then the pause and test-server images as OCI archives, imported into containerd by the
# lab once the containerd role has run.
LAB=/opt/k8s-ipsec-lab
install -d "$LAB/cri" "$LAB/images"
sed '/gogoproto/d' /usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto >/tmp/api.proto
protoc -I/tmp --python_out="$LAB/cri" /tmp/api.proto
rm -f /tmp/api.proto
python3 -c "import sys; sys.path.insert(0, '$LAB/cri'); import api_pb2; api_pb2.RunPodSandboxRequest()"
python3 /tmp/lab_images.py "$LAB/images"
apt-get clean
rm -rf /var/lib/apt/lists/partial
