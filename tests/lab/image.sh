#!/usr/bin/env bash
# Build (once) and cache the Debian node image of the lab: debootstrap --variant=minbase with everything a node
# needs preinstalled (the VMs have no internet), then ext4 -> qcow2 plus vmlinuz/initrd.img for direct kernel boot.
# The image also carries what the lab's pods need: Python stubs of the CRI API generated from Debian's packaged
# api.proto, and the pause and test-server images (OCI archives built from busybox-static) for containerd.
#
# usage: tests/lab/image.sh            prints the image directory (base.qcow2, vmlinuz, initrd.img) on stdout
# env:   LAB_SUITE  trixie (Debian 13, default) or bookworm (Debian 12)
#        LAB_CACHE  cache root (default /var/cache/k8s-ipsec-lab); entries are keyed by a hash of the package
#                   list and the customization files, so an unchanged image is reused at once.
#        MIRROR     Debian mirror (default: the one this machine's apt uses)
#        LAB_IMAGE_SIZE  ext4 size (default 4G; the qcow2 stays sparse)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LAB_CACHE:-/var/cache/k8s-ipsec-lab}
SUITE=${LAB_SUITE:-trixie}
case $SUITE in
  trixie | bookworm) ;;
  *) echo "LAB_SUITE=$SUITE: use trixie (Debian 13) or bookworm (Debian 12)" >&2; exit 2 ;;
esac
SIZE=${LAB_IMAGE_SIZE:-4G}
CUSTOMIZE=$HERE/files/customize-image.sh
OCI_BUILDER=$HERE/files/lab_images.py
# The CRI definition, from Debian 13's Go source package (only its api.proto is unpacked into the image: installing
# the package would pull a Go toolchain; Debian 12 has no such package).
CRI_API_PKG=golang-github-kubernetes-cri-api-dev
CRI_PROTO=usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto

# Everything a node needs, nothing the roles configure. debootstrap resolves no virtual packages: python3-cffi-backend
# (for python3-cryptography) is listed by hand. No strongswan-starter (the roles use swanctl/charon-systemd).
# libcharon-extra-plugins is what a usual strongSwan install pulls in: its forecast/farp plugins stay enabled as
# Debian ships them, so the roles must prove they handle them. nftables (its service disabled, as Debian ships it):
# starting it flushes every ruleset, one of the faults the e2e test plays.
PKGS=(
  systemd systemd-sysv dbus udev kmod openssh-server python3 python3-apt python3-cryptography
  python3-cffi-backend sudo
  iproute2 iptables iputils-ping procps
  strongswan-swanctl charon-systemd libstrongswan-standard-plugins libcharon-extra-plugins
  containernetworking-plugins containerd runc
  linux-image-amd64 tcpdump netbase ca-certificates curl less
  nftables python3-pyroute2 python3-nftables
  python3-grpcio python3-protobuf protobuf-compiler busybox-static
  prometheus-node-exporter iperf3
)
# python3-grpcio depends on a virtual package in Debian 13 (libre2-11-absl20240722): name what provides it.
if [[ $SUITE = trixie ]]; then PKGS+=(libre2-11); fi

log() { printf '[image %s] %s\n' "$(date +%T)" "$*" >&2; }

need() { # need <command> <apt package>
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2
}

mirror() {
  if [[ -n ${MIRROR:-} ]]; then echo "$MIRROR"; return; fi
  local m=
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
      /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

fetch_from_trixie() { # fetch_from_trixie <package> <dir>: unpack a Debian 13 package (architecture all) into dir
  local apt=$WORK/apt-trixie
  mkdir -p "$apt/lists/partial" "$2"
  printf 'deb %s trixie main\n' "$M" >"$apt/sources.list"
  local opts=(-o Dir::Etc::SourceList="$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$apt/lists" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -q >"$apt/update.log" 2>&1 || { cat "$apt/update.log" >&2; return 1; }
  (cd "$apt" && apt-get "${opts[@]}" download "$1" >/dev/null)
  dpkg-deb -x "$apt/$1"_*.deb "$2"
}

KEY=$({ printf '%s\n' "$SUITE" "$SIZE" "${PKGS[@]}" "$CRI_API_PKG"; cat "$CUSTOMIZE" "$OCI_BUILDER"; } | sha256sum | cut -c1-16)
OUT=$CACHE/$SUITE-$KEY
if [[ -f $OUT/done ]]; then
  log "cached image $OUT"
  echo "$OUT"
  exit 0
fi

[[ $(id -u) = 0 ]] || { log "must run as root (debootstrap)"; exit 1; }
need debootstrap debootstrap
need qemu-img qemu-utils
need mkfs.ext4 e2fsprogs
mkdir -p "$CACHE"

# one build at a time; a concurrent caller waits and then finds the finished image
exec 9>"$CACHE/.lock"
flock 9
if [[ -f $OUT/done ]]; then
  log "cached image $OUT (built meanwhile)"
  echo "$OUT"
  exit 0
fi

T0=$(date +%s)
WORK=$(mktemp -d "$CACHE/.build-$KEY.XXXXXX")
ROOTFS=$WORK/rootfs
cleanup() {
  if mountpoint -q "$ROOTFS/proc" 2>/dev/null; then umount -l "$ROOTFS/proc"; fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

M=$(mirror)
log "debootstrap $SUITE from $M (${#PKGS[@]} packages)"
debootstrap --variant=minbase --include="$(IFS=,; echo "${PKGS[*]}")" "$SUITE" "$ROOTFS" "$M" >"$WORK/debootstrap.log" 2>&1 \
  || { cp "$ROOTFS/debootstrap/debootstrap.log" "$CACHE/failed-debootstrap.log" 2>/dev/null || true
    tail -n 30 "$WORK/debootstrap.log" >&2; log "see $CACHE/failed-debootstrap.log"; exit 1; }
log "debootstrap done in $(($(date +%s) - T0)) s"

# package lists for apt inside the node (the roles' apt tasks then see a normal system), then the lab customization
printf 'deb %s %s main\n' "$M" "$SUITE" >"$ROOTFS/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" apt-get update -q >"$WORK/apt-update.log" 2>&1 || { cat "$WORK/apt-update.log" >&2; exit 1; }
fetch_from_trixie "$CRI_API_PKG" "$WORK/cri-api"
install -D -m 644 "$WORK/cri-api/$CRI_PROTO" "$ROOTFS/$CRI_PROTO"
install -m 755 "$CUSTOMIZE" "$ROOTFS/tmp/customize-image.sh"
install -m 644 "$OCI_BUILDER" "$ROOTFS/tmp/lab_images.py"
chroot "$ROOTFS" /tmp/customize-image.sh >"$WORK/customize.log" 2>&1 || { cat "$WORK/customize.log" >&2; exit 1; }
rm -f "$ROOTFS/tmp/customize-image.sh" "$ROOTFS/tmp/lab_images.py"
umount "$ROOTFS/proc"
# shellcheck disable=SC2016 # dpkg-query's format, not shell
chroot "$ROOTFS" dpkg-query -W -f '${Package} ${Version}\n' >"$WORK/packages.txt"
if grep -q '^strongswan-starter ' "$WORK/packages.txt"; then log "strongswan-starter got installed"; exit 1; fi

log "rootfs $(du -sh "$ROOTFS" | cut -f1); making ext4 and qcow2"
cp "$ROOTFS"/boot/vmlinuz-* "$WORK/vmlinuz"
cp "$ROOTFS"/boot/initrd.img-* "$WORK/initrd.img"
truncate -s "$SIZE" "$WORK/base.raw"
mkfs.ext4 -q -F -L root -d "$ROOTFS" "$WORK/base.raw"
qemu-img convert -O qcow2 "$WORK/base.raw" "$WORK/base.qcow2"
rm -f "$WORK/base.raw"
rm -rf --one-file-system "$ROOTFS"

mkdir -p "$OUT"
mv "$WORK/base.qcow2" "$WORK/vmlinuz" "$WORK/initrd.img" "$WORK/packages.txt" "$WORK"/*.log "$OUT/"
printf 'built %s in %s s from %s\n' "$(date -Is)" "$(($(date +%s) - T0))" "$M" >"$OUT/done"
log "image $OUT built in $(($(date +%s) - T0)) s ($(du -sh "$OUT/base.qcow2" | cut -f1) qcow2)"
echo "$OUT"
