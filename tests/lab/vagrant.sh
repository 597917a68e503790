#!/usr/bin/env bash
# Vagrant on a machine without Vagrant Cloud or Galaxy (issue 12): the lab's cached Debian image (tests/lab/image.sh)
# as a local libvirt box, and a libvirtd of our own inside the network namespace k8sipsec-vagrant, which has no
# uplink. Vagrant's bridges, addresses, routes, dnsmasq and VMs all live in that namespace; libvirt's state lives in
# .lab/vagrant/libvirt, bind-mounted over /etc/libvirt, /var/lib/libvirt, /run/libvirt and /var/cache/libvirt in a
# mount namespace that only libvirtd and the commands run through this script see. Nothing is added to the root
# network namespace and nothing is left behind once it is down. Kubernetes is off (K8S_IPSEC_KUBERNETES=false):
# its packages come from pkgs.k8s.io, which this machine cannot reach.
#
# usage: tests/lab/vagrant.sh box              build or reuse the lab image, make it a libvirt box (box.img, kernel,
#                                              initrd, its own SSH key, metadata.json, Vagrantfile) and register it:
#                                              vagrant box add --force --name $VAGRANT_LAB_BOX
#        tests/lab/vagrant.sh molecule [args]  box, libvirtd, `molecule test -s default [args]`, a check that no
#                                              domain or network is left, teardown
#        tests/lab/vagrant.sh vagrantfile      box, libvirtd, `vagrant up --provision` with the repo's Vagrantfile,
#                                              playbooks/verify.yml against it, `vagrant destroy -f`, the same check,
#                                              teardown
#        tests/lab/vagrant.sh up | down        start / stop the namespace and its libvirtd by hand
#        tests/lab/vagrant.sh run <cmd...>     a command inside them, in the environment below (vagrant status, ...)
#        tests/lab/vagrant.sh status
# env:   VAGRANT_LAB_BOX     box name (default k8s-ipsec-lab); VAGRANT_HOME is Vagrant's own (default ~/.vagrant.d)
#        VAGRANT_LAB_MEMORY  MiB per VM (default 768), VAGRANT_LAB_CPUS (default 1): TCG on a 2-core machine
#        K8S_IPSEC_KUBERNETES  passed on (default false)
#        LAB_SUITE, LAB_CACHE  as for tests/lab/image.sh
# Commands run inside get: HOME=.lab/vagrant/home (the cluster CA, ansible and molecule caches stay out of the real
# HOME), the box name and sizes for the Vagrantfile (K8S_IPSEC_*) and the scenario (MOLECULE_VAGRANT_*), and
# community.vagrant (Galaxy only) as its module from PyPI's molecule-vagrant wheel in ~/.ansible/collections.
# Logs: .lab/logs/vagrant-<time>/ (libvirtd and qemu logs, molecule's ephemeral directory, vagrant output).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
NS=k8sipsec-vagrant
STATE=$ROOT/.lab/vagrant
LV=$STATE/libvirt
PIDFILE=$STATE/libvirtd.pid
BOX=${VAGRANT_LAB_BOX:-k8s-ipsec-lab}
MEMORY=${VAGRANT_LAB_MEMORY:-768}
CPUS=${VAGRANT_LAB_CPUS:-1}
KUBERNETES=${K8S_IPSEC_KUBERNETES:-false}
WAIT_OTHERS=${VAGRANT_LAB_WAIT_OTHERS:-3600}
VENV=${LAB_VENV:-$ROOT/.venv}
# The wheel that carries community.vagrant's module (pinned with its hash) and where it is kept between runs.
MV_REQUIREMENTS=$HERE/requirements-vagrant.txt
MV_CACHE=$ROOT/.cache/molecule-vagrant
# Vagrant keeps its boxes in the invoking user's VAGRANT_HOME, also for the runs that get a private HOME.
export VAGRANT_HOME=${VAGRANT_HOME:-$HOME/.vagrant.d}
# Nothing asks HashiCorp's servers for news or box updates.
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1
export ANSIBLE_CONFIG=$ROOT/ansible.cfg

# Debian packages this needs. dnsmasq-base serves DHCP on Vagrant's management network, which is how the box's eth0
# (lab.ip=dhcp) gets the address Vagrant finds and connects to.
PKGS=(vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base qemu-system-x86 qemu-utils
  iptables iproute2 util-linux openssh-client)

log() { printf '[vagrant %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$NS"; }

ensure_packages() {
  local p missing=()
  for p in "${PKGS[@]}"; do
    # shellcheck disable=SC2016 # dpkg-query's format, not shell
    [[ $(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null) = installed ]] || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  (
    # No package script may start a daemon (libvirtd, dbus, ...) in the root namespace while we install: this
    # machine runs no systemd, so invoke-rc.d would run init scripts. Our policy-rc.d only lives for this install.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
      trap 'rm -f "$policy"' EXIT
      printf '#!/bin/sh\n# tests/lab/vagrant.sh: no service starts during its package install\nexit 101\n' >"$policy"
      chmod 755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 ||
      { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
  )
}

ensure_venv() {
  [[ -x $VENV/bin/molecule ]] && return 0
  log "no $VENV/bin/molecule: running make setup"
  make -C "$ROOT" setup >&2
}

box_dir() { # where vagrant box add unpacked the box: <name>/0 (unversioned)/[<arch>/ from Vagrant 2.4]libvirt
  local base=$VAGRANT_HOME/boxes/${BOX//\//-VAGRANTSLASH-} f
  for f in "$base"/*/libvirt/metadata.json "$base"/*/*/libvirt/metadata.json; do
    if [[ -f $f ]]; then dirname "$f"; return 0; fi
  done
  echo "$base/0/libvirt"
}

box_vagrantfile() { # box_vagrantfile <base64 of the public key> <image id>: the defaults the box carries
  cat <<EOF
# Written by tests/lab/vagrant.sh from the k8s_ipsec lab image $2 (tests/lab/image.sh).
# The image is one ext4 file system without a boot loader: libvirt boots the kernel and initrd kept beside box.img.
# lab-net in the image asks DHCP for eth0 (Vagrant's management network) and writes root's authorized key from the
# kernel command line; the matching private key is in this box. The VMs are emulated (TCG): the machines this is
# for have /dev/kvm, but KVM does not run Debian's kernel there.
Vagrant.configure("2") do |config|
  config.ssh.username = "root"
  config.ssh.private_key_path = File.expand_path("../vagrant_private_key", __FILE__)
  config.ssh.insert_key = false
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.boot_timeout = 900
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
    lv.kernel = File.expand_path("../vmlinuz", __FILE__)
    lv.initrd = File.expand_path("../initrd.img", __FILE__)
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet lab.ip=dhcp lab.key=$1"
    lv.graphics_type = "none"
    lv.video_type = "none"
  end
end
EOF
}

cmd_box() {
  local img id dir t0=$SECONDS
  [[ $(id -u) = 0 ]] || die "must run as root"
  ensure_packages
  img=$("$HERE/image.sh")
  id=${img##*/}
  dir=$(box_dir)
  if [[ -f $dir/lab-image && $(<"$dir/lab-image") = "$id" ]]; then
    log "box $BOX is image $id already"
    return 0
  fi
  log "making box $BOX from $img"
  (
    work=$(mktemp -d "$(dirname "$img")/.box-XXXXXX")
    trap 'rm -rf "$work"' EXIT
    mkdir "$work/box"
    # The image takes root's key from the kernel command line: the box gets a pair of its own (not Vagrant's
    # published insecure one), its private half inside the box, where Vagrant finds it through the box's Vagrantfile.
    ssh-keygen -q -t ed25519 -N '' -C "$BOX vagrant box" -f "$work/box/vagrant_private_key"
    size=$(qemu-img info --output=json "$img/base.qcow2" |
      python3 -c 'import json, sys; print(-(-json.load(sys.stdin)["virtual-size"] // 2**30))')
    printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$size" >"$work/box/metadata.json"
    box_vagrantfile "$(base64 -w0 <"$work/box/vagrant_private_key.pub")" "$id" >"$work/box/Vagrantfile"
    echo "$id" >"$work/box/lab-image"
    # the image goes into the archive straight from the cache, renamed box.img: one copy less of ~1 GB
    tar -cf "$work/lab.box" -C "$work/box" metadata.json Vagrantfile vagrant_private_key lab-image \
      -C "$img" --transform 's,^base\.qcow2$,box.img,' base.qcow2 vmlinuz initrd.img
    vagrant box add --force --name "$BOX" "$work/lab.box" >&2
  )
  # Unpacking drops the mode; ssh refuses a private key that others can read.
  dir=$(box_dir)
  chmod 600 "$dir/vagrant_private_key"
  log "box $BOX registered in $VAGRANT_HOME from image $id in $((SECONDS - t0)) s"
}

libvirtd_pid() { # pid of our libvirtd, if it runs
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] && grep -q libvirtd "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

foreign_qemu() { # qemu processes outside our namespace: another lab on this machine
  local p mine=" "
  if ns_exists; then mine=" $(ip netns pids "$NS" | tr '\n' ' ') "; fi
  for p in $(pgrep qemu-system 2>/dev/null); do
    [[ $mine == *" $p "* ]] || echo "$p"
  done
}

wait_for_others() { # one lab at a time on a 2-core machine, as tests/lab/lab.sh does
  local t0=$SECONDS others
  while others=$(foreign_qemu) && [[ -n $others ]]; do
    ((SECONDS - t0 < WAIT_OTHERS)) || die "other VMs still running after ${WAIT_OTHERS}s: $others"
    log "another lab is running (qemu pids: $(echo "$others" | tr '\n' ' ')); waiting"
    sleep 30
  done
}

root_ns_state() { # the root namespace's addresses and routes, to compare before and after
  ip -o addr show | awk '{print $2, $3, $4}'
  ip route show table all
}

stamped() { # each line with the time it came, so the logs show how long each step took
  local line
  while IFS= read -r line; do printf '%(%T)T %s\n' -1 "$line"; done
}

logdir() { cat "$STATE/logdir" 2>/dev/null || echo "$ROOT/.lab/logs"; }

cmd_up() {
  local pid k logs
  [[ $(id -u) = 0 ]] || die "must run as root"
  ensure_packages
  if pid=$(libvirtd_pid); then
    log "libvirtd $pid runs in $NS already"
    return 0
  fi
  wait_for_others
  logs=$ROOT/.lab/logs/vagrant-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$STATE" "$logs/libvirt"
  echo "$logs" >"$STATE/logdir"
  root_ns_state >"$STATE/root-ns.before"
  rm -rf "${LV:?}" "${STATE:?}/home"
  mkdir -p "$LV/lib/images" "$LV/run" "$LV/cache" "$STATE/home"
  cp -a /etc/libvirt "$LV/etc"
  # What the measured recipe needed: qemu as root and no security driver (no AppArmor/SELinux labels here).
  cat >>"$LV/etc/qemu.conf" <<'EOF'

# tests/lab/vagrant.sh: qemu runs as root, without a security driver (the lab machines have neither AppArmor nor
# SELinux for libvirt to label with).
user = "root"
group = "root"
security_driver = "none"
# qemu's output straight to /var/log/libvirt/qemu: nothing socket-activates virtlogd without systemd.
stdio_handler = "file"
EOF
  # libvirt's own "default" network (192.168.122.0/24) is not needed: Vagrant makes its networks. Not even defined,
  # so that the leftovers check finds only what Vagrant made.
  rm -f "$LV"/etc/qemu/networks/autostart/*.xml "$LV"/etc/qemu/networks/default.xml
  ns_exists || ip netns add "$NS"
  ip -n "$NS" link set lo up
  # Mount points only (the package made all but /run/libvirt); the bind mounts below stay in libvirtd's namespace.
  mkdir -p /etc/libvirt /var/lib/libvirt /run/libvirt /var/cache/libvirt /var/log/libvirt
  # `ip netns exec` gives libvirtd a mount namespace of its own (a slave of the root's, so these bind mounts stay
  # in it); qemu and dnsmasq inherit both namespaces. setsid: a Ctrl-C in the terminal must reach this script's
  # trap, which stops libvirtd in order, not libvirtd itself.
  # shellcheck disable=SC2016 # expanded by that bash
  setsid ip netns exec "$NS" bash -c '
    set -e
    mount --bind "$0/etc" /etc/libvirt
    mount --bind "$0/lib" /var/lib/libvirt
    mount --bind "$0/run" /run/libvirt
    mount --bind "$0/cache" /var/cache/libvirt
    mount --bind "$1" /var/log/libvirt
    exec libvirtd' "$LV" "$logs/libvirt" </dev/null >"$logs/libvirtd.log" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  for ((k = 0; k < 60; k++)); do
    [[ -S $LV/run/libvirt-sock ]] && break
    [[ -d /proc/$pid ]] || { tail -n 20 "$logs/libvirtd.log" >&2; die "libvirtd did not start"; }
    sleep 0.5
  done
  # setsid, ip and bash exec each other: the pid we hold is libvirtd's own
  libvirtd_pid >/dev/null || die "pid $pid is not libvirtd; see $logs/libvirtd.log"
  [[ -S $LV/run/libvirt-sock ]] || die "libvirtd has no socket after 30 s; see $logs/libvirtd.log"
  in_env virsh -c qemu:///system version >/dev/null
  ensure_vagrant_collection
  log "libvirtd $(<"$PIDFILE") up in namespace $NS; logs in ${logs#"$ROOT"/}"
}

ensure_vagrant_collection() { # community.vagrant in the private HOME's ~/.ansible/collections (see molecule.yml)
  local dest=$STATE/home/.ansible/collections/ansible_collections/community/vagrant whl=()
  [[ -f $dest/plugins/modules/vagrant.py ]] && return 0
  shopt -s nullglob
  whl=("$MV_CACHE"/molecule_vagrant-*.whl)
  shopt -u nullglob
  if ((${#whl[@]} == 0)); then
    ensure_venv
    mkdir -p "$MV_CACHE"
    "$VENV/bin/pip" download -q --no-deps --require-hashes -r "$MV_REQUIREMENTS" -d "$MV_CACHE" >&2
    whl=("$MV_CACHE"/molecule_vagrant-*.whl)
  fi
  mkdir -p "$dest/plugins/modules"
  python3 - "${whl[0]}" "$dest/plugins/modules/vagrant.py" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as whl, open(sys.argv[2], "wb") as out:
    out.write(whl.read("molecule_vagrant/modules/vagrant.py"))
PY
  printf 'The module community.vagrant.vagrant, taken by tests/lab/vagrant.sh from PyPI: %s\n' "${whl[0]##*/}" \
    >"$dest/README.txt"
}

in_env() { # in_env <cmd...>: run a command in libvirtd's network and mount namespaces, from the current directory
  local pid
  pid=$(libvirtd_pid) || die "libvirtd is not running: $0 up"
  # shellcheck disable=SC2016 # expanded by the inner bash (setns into a mount namespace resets the directory)
  nsenter --target "$pid" --net --mount -- env \
    HOME="$STATE/home" PATH="$VENV/bin:$PATH" LIBVIRT_DEFAULT_URI=qemu:///system VAGRANT_DEFAULT_PROVIDER=libvirt \
    K8S_IPSEC_KUBERNETES="$KUBERNETES" \
    K8S_IPSEC_BOX="$BOX" K8S_IPSEC_MEMORY="$MEMORY" K8S_IPSEC_CPUS="$CPUS" \
    MOLECULE_VAGRANT_PROVIDER=libvirt MOLECULE_VAGRANT_BOX="$BOX" \
    MOLECULE_VAGRANT_MEMORY="$MEMORY" MOLECULE_VAGRANT_CPUS="$CPUS" \
    bash -c 'cd "$0" && exec "$@"' "$PWD" "$@"
}

leftovers() { # what Vagrant left in libvirt: no domain, no network, no volume but the box's own base image
  local doms nets vols rc=0
  doms=$(in_env virsh -q list --all --name | sed '/^$/d')
  nets=$(in_env virsh -q net-list --all --name | sed '/^$/d')
  vols=$(in_env virsh -q vol-list default 2>/dev/null | awk '{print $1}' | grep -v '_vagrant_box_image_' || true)
  if [[ -n $doms ]]; then log "domains left: $(echo "$doms" | tr '\n' ' ')"; rc=1; fi
  if [[ -n $nets ]]; then log "networks left: $(echo "$nets" | tr '\n' ' ')"; rc=1; fi
  if [[ -n $vols ]]; then log "volumes left: $(echo "$vols" | tr '\n' ' ')"; rc=1; fi
  # vagrant-libvirt keeps the box's uploaded base image in the pool for the next `up`; the pool goes with `down`.
  ((rc)) || log "nothing left by Vagrant in libvirt (the pool keeps only the box's base image until teardown)"
  return "$rc"
}

cmd_down() {
  local pid d n k p rc=0
  if pid=$(libvirtd_pid); then
    # Domains and networks first: qemu and dnsmasq are daemons that would outlive libvirtd.
    for d in $(in_env virsh -q list --name | sed '/^$/d'); do in_env virsh -q destroy "$d" >/dev/null || true; done
    for n in $(in_env virsh -q net-list --name | sed '/^$/d'); do in_env virsh -q net-destroy "$n" >/dev/null || true; done
    kill "$pid" 2>/dev/null || true
    for ((k = 0; k < 50; k++)); do
      [[ -d /proc/$pid ]] || break
      sleep 0.2
    done
    if [[ -d /proc/$pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$PIDFILE"
  if ns_exists; then
    # Whatever still runs in our namespace was started through this script (ssh masters, a stray qemu).
    for p in $(ip netns pids "$NS"); do
      log "stopping $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80) (pid $p)"
      kill "$p" 2>/dev/null || true
    done
    sleep 1
    for p in $(ip netns pids "$NS"); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$NS"
  fi
  rm -rf "${LV:?}" "${STATE:?}/home"
  if [[ -f $STATE/root-ns.before ]]; then
    root_ns_state >"$STATE/root-ns.after"
    if grep -vxFf "$STATE/root-ns.before" "$STATE/root-ns.after" >"$STATE/root-ns.added"; then
      log "the root network namespace gained addresses or routes meanwhile:"
      cat "$STATE/root-ns.added" >&2
      rc=1
    else
      log "root network namespace: no address or route added"
    fi
    rm -f "$STATE/root-ns.before" "$STATE/root-ns.after" "$STATE/root-ns.added"
  fi
  log "down"
  return "$rc"
}

cmd_status() {
  local pid
  if ns_exists; then echo "namespace $NS: present"; else echo "namespace $NS: absent"; fi
  if pid=$(libvirtd_pid); then
    echo "libvirtd: pid $pid"
    in_env virsh -q list --all
    in_env virsh -q net-list --all
  else
    echo "libvirtd: not running"
  fi
  [[ -f $(box_dir)/lab-image ]] && echo "box $BOX: image $(<"$(box_dir)/lab-image")"
  return 0
}

RC=0
finish() { # the trap of the runs: teardown whatever happened, the run's status unless teardown found a problem
  local rc=$?
  set +e
  ((rc == 0)) && rc=$RC
  cmd_down || ((rc)) || rc=1
  log "total $((SECONDS - T0)) s, status $rc; logs in $(logdir)"
  exit "$rc"
}

begin_run() { # what both runs start with: the venv, the box, the teardown trap, libvirtd
  ensure_venv
  cmd_box
  T0=$SECONDS
  trap finish EXIT
  trap 'exit 130' INT TERM
  cmd_up
}

cmd_molecule() {
  local t logs
  begin_run
  logs=$(logdir)
  t=$SECONDS
  log "molecule test -s default (Kubernetes: $KUBERNETES, box $BOX, ${MEMORY} MiB, $CPUS CPU)"
  # the scenario's ephemeral directory (generated Vagrantfile, vagrant.out/err, inventory) stays with the logs
  in_env env MOLECULE_EPHEMERAL_DIRECTORY="$logs/molecule" molecule test -s default "$@" 2>&1 |
    stamped | tee "$logs/molecule.log" || RC=1
  log "molecule test: status $RC after $((SECONDS - t)) s"
  leftovers || RC=1
}

cmd_vagrantfile() {
  local t logs
  begin_run
  logs=$(logdir)
  cd "$ROOT"
  t=$SECONDS
  log "vagrant up --provision (Kubernetes: $KUBERNETES, box $BOX, ${MEMORY} MiB, $CPUS CPU)"
  in_env vagrant up --provision 2>&1 | stamped | tee "$logs/vagrant-up.log" || RC=1
  log "vagrant up --provision: status $RC after $((SECONDS - t)) s"
  if ((RC == 0)); then
    t=$SECONDS
    # The mesh as the collection's read-only check sees it: SAs of every pair, units, guards, certificates.
    in_env env ANSIBLE_HOST_KEY_CHECKING=False ansible-playbook -i inventory/vagrant/hosts.yml -u root \
      --private-key "$(box_dir)/vagrant_private_key" playbooks/verify.yml 2>&1 | stamped | tee "$logs/verify.log" || RC=1
    log "playbooks/verify.yml: status $RC after $((SECONDS - t)) s"
  fi
  t=$SECONDS
  in_env vagrant destroy -f 2>&1 | stamped | tee "$logs/vagrant-destroy.log" || RC=1
  log "vagrant destroy -f: $((SECONDS - t)) s"
  leftovers || RC=1
}

T0=$SECONDS
case ${1:-} in
  box) cmd_box ;;
  molecule) shift; cmd_molecule "$@" ;;
  vagrantfile) cmd_vagrantfile ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  run) shift; [[ $# -ge 1 ]] || die "usage: $0 run <cmd...>"; in_env "$@" ;;
  *) sed -n '2,28s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
