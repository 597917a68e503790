#!/usr/bin/env bash
# A node's state as playbooks/reset.yml promises to restore it (the lab check 95-add-remove-reset): units and their
# states, links, routes, the firewall's rules and chains, and the files the collection could touch, with their
# checksums. Run on the node before the first build and after the reset; the two listings must be equal.
set -u
echo "== unit files"
systemctl list-unit-files --no-legend --no-pager | awk '{print $1, $2}' | sort
echo "== running services"
systemctl list-units --type=service --state=running --no-legend --no-pager --plain | awk '{print $1}' | sort
echo "== links"
# Loading a tunnel module (ip_vti for VTI devices) makes the kernel's own fallback device, which stays until the
# module is unloaded; the reset leaves loaded modules alone (they are no longer loaded at boot).
ip -o link show | awk -F': ' '{ split($2, n, "@"); print n[1] }' | grep -vxE 'ip_vti0|ip6_vti0' | sort
echo "== routes"
ip route show table all | grep -v '^local \|^broadcast \|^multicast \|^ff00::\|^fe80::' | sort
echo "== firewall"
iptables-save 2>/dev/null | grep -E '^-A |^:[^ ]+ - ' | sort
nft list tables 2>/dev/null | sort
echo "== files"
# /opt/k8s-ipsec-lab is the lab's own tooling, baked into the image (its CRI client leaves Python caches there).
find /etc /usr/local /opt /run/cni /var/lib/cni /var/lib/k8s-ipsec -xdev \( -type f -o -type l \) 2>/dev/null |
  grep -v '^/opt/k8s-ipsec-lab/' | sort | while read -r f; do
    if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(sha1sum <"$f" | cut -c1-12)"; fi
  done
