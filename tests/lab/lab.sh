#!/usr/bin/env bash
# The lab: N Debian VMs (QEMU TCG) on bridge br0 inside the network namespace k8sipsec-lab, which has no uplink.
# Debian 13 by default, Debian 12 with LAB_SUITE=bookworm (tests/lab/image.sh). LAB_TUNNEL_TYPE=vti|xfrm goes into
# the inventory as strongswan_tunnel_type, LAB_AUTH=pubkey|psk as strongswan_auth (default: the role's). Ansible
# runs with mitogen's strategy, LAB_MITOGEN=0 without.
#
# usage: tests/lab/lab.sh up [N]            build/reuse the image, boot n1..nN (default 3), write the inventory,
#                                          then converge site.yml (skip with LAB_CONVERGE=0)
#        tests/lab/lab.sh down               stop the VMs (by pidfile), delete the namespace and the overlays
#        tests/lab/lab.sh status
#        tests/lab/lab.sh ssh <i> <cmd...>   run a command on node i (as root)
#        tests/lab/lab.sh converge [args]    run site.yml against the lab (extra ansible-playbook args allowed)
#        tests/lab/lab.sh play <playbook> [args]   run any playbook against the lab inventory
#        tests/lab/lab.sh exec <cmd...>      run a command inside the lab namespace (tcpdump on br0, ...)
#        tests/lab/lab.sh wait-ssh <i...>    wait until the nodes answer on SSH
#        tests/lab/lab.sh ssh-close <i>      end the shared ssh connection of node i (LAB_SSH_CONTROL_DIR)
#        tests/lab/lab.sh proxy <host> <port>  stdio <-> TCP relay inside the namespace: an ssh ProxyCommand that
#                                          lets tools outside the namespace (molecule) reach the nodes
#        tests/lab/lab.sh outsider up|down|exec <cmd...>   a host on the lab bridge that is not in the inventory
#                                          (namespace k8sipsec-outsider, 192.168.100.250), for the trust checks
# State lives under <repo>/.lab (gitignored): ssh/ (the lab's key), vm/ (overlays, pidfiles, consoles),
# inventory/hosts.yml, pki/ (the cluster CA, kept on the controller), logs/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB=$ROOT/.lab
NS=k8sipsec-lab
OUTSIDER_NS=k8sipsec-outsider
OUTSIDER_IP=192.168.100.250
VMDIR=$LAB/vm
KEYFILE=$LAB/ssh/id_ed25519
INV=$LAB/inventory/hosts.yml
SUBNET=192.168.100
MEM=${LAB_MEM:-640}
BOOT_TIMEOUT=${LAB_BOOT_TIMEOUT:-420}
WAIT_OTHERS=${LAB_WAIT_OTHERS:-3600}
VENV=${LAB_VENV:-$ROOT/.venv}

log() { printf '[lab %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need() { # need <command> <apt package>
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2
}

node_ip() { echo "$SUBNET.$((10 + $1))"; }

SSH_OPTS=(-i "$KEYFILE" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
  -o ConnectTimeout=5 -o BatchMode=yes -o ServerAliveInterval=5 -o ServerAliveCountMax=6)

nodes_up() { # indexes of the VMs that have a pidfile
  local f
  for f in "$VMDIR"/n*.pid; do
    [[ -e $f ]] || continue
    f=${f##*/n}
    echo "${f%.pid}"
  done | sort -n
}

vm_pid() { # pid of node i if its qemu runs
  local f=$VMDIR/n$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -d /proc/$pid ]] && grep -q qemu-system "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

our_pids() {
  local i
  for i in $(nodes_up); do vm_pid "$i" || true; done
}

foreign_qemu() { # qemu processes that are not ours
  local p mine
  mine=" $(our_pids | tr '\n' ' ') "
  for p in $(pgrep qemu-system 2>/dev/null); do
    [[ $mine == *" $p "* ]] || echo "$p"
  done | sort -u
}

wait_for_others() {
  local t0=$SECONDS others
  while others=$(foreign_qemu) && [[ -n $others ]]; do
    ((SECONDS - t0 < WAIT_OTHERS)) || die "other VMs still running after ${WAIT_OTHERS}s: $others"
    log "another lab is running (qemu pids: $(echo "$others" | tr '\n' ' ')); waiting"
    sleep 30
  done
}

ensure_tools() {
  need qemu-system-x86_64 qemu-system-x86
  need qemu-img qemu-utils
  need ssh openssh-client
  need ssh-keygen openssh-client
  need ip iproute2
  need tcpdump tcpdump
  need flock util-linux
}

ensure_key() {
  [[ -f $KEYFILE ]] && return 0
  mkdir -p "$LAB/ssh"
  chmod 700 "$LAB/ssh"
  ssh-keygen -q -t ed25519 -N '' -C k8s-ipsec-lab -f "$KEYFILE"
}

net_up() { # namespace with br0 and one tap per node, no uplink
  local n=$1 i
  ip netns list | grep -qw "$NS" || ip netns add "$NS"
  ip -n "$NS" link set lo up
  if ! ip -n "$NS" link show br0 >/dev/null 2>&1; then
    ip -n "$NS" link add br0 type bridge
    ip -n "$NS" addr add "$SUBNET.1/24" dev br0
  fi
  ip -n "$NS" link set br0 up
  for ((i = 1; i <= n; i++)); do
    ip -n "$NS" link show "tap$i" >/dev/null 2>&1 || ip -n "$NS" tuntap add "tap$i" mode tap
    ip -n "$NS" link set "tap$i" master br0 up
  done
}

start_vm() {
  local i=$1 img=$2 key64
  local ov=$VMDIR/n$i.qcow2
  vm_pid "$i" >/dev/null && { log "n$i already running"; return 0; }
  [[ -f $ov ]] || qemu-img create -q -f qcow2 -F qcow2 -b "$img/base.qcow2" "$ov"
  key64=$(base64 -w0 <"$KEYFILE.pub")
  rm -f "$VMDIR/n$i.console"
  ip netns exec "$NS" qemu-system-x86_64 -name "n$i" \
    -accel tcg,tb-size=256 -cpu max -m "$MEM" -smp 1 \
    -nographic -nodefaults -no-user-config \
    -serial "file:$VMDIR/n$i.console" -monitor "unix:$VMDIR/n$i.mon,server,nowait" \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet systemd.hostname=n$i lab.ip=$(node_ip "$i")/24 lab.key=$key64" \
    -drive "file=$ov,if=virtio,format=qcow2,cache=unsafe" \
    -netdev "tap,id=u0,ifname=tap$i,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=u0,mac=52:54:00:00:01:$(printf %02x "$i")" \
    -device virtio-rng-pci \
    -pidfile "$VMDIR/n$i.pid" -daemonize 9>&- # the VM must not keep the up lock (fd 9) for its lifetime
}

node_ssh() { # node_ssh <i> <cmd...>; LAB_SSH_CONTROL_DIR=<dir> shares one connection per node between calls
  local i=$1 mux=()
  shift
  if [[ -n ${LAB_SSH_CONTROL_DIR:-} ]]; then
    mux=(-o ControlMaster=auto -o ControlPersist=600 -o "ControlPath=$LAB_SSH_CONTROL_DIR/n$i")
  fi
  ip netns exec "$NS" ssh "${SSH_OPTS[@]}" "${mux[@]}" "root@$(node_ip "$i")" "$@"
}

wait_ssh() { # wait_ssh <i...>
  local i t0=$SECONDS
  for i in "$@"; do
    until node_ssh "$i" true 2>/dev/null; do
      vm_pid "$i" >/dev/null || die "n$i died while booting; console: $VMDIR/n$i.console"
      ((SECONDS - t0 < BOOT_TIMEOUT)) || die "n$i not reachable by ssh after ${BOOT_TIMEOUT}s; console: $VMDIR/n$i.console"
      sleep 2
    done
  done
  local names="n$*"
  log "ssh up on ${names// /, n} after $((SECONDS - t0)) s"
}

write_inventory() {
  local n=$1 i
  mkdir -p "$(dirname "$INV")" "$LAB/pki"
  {
    echo "# Written by tests/lab/lab.sh: the lab's $n QEMU nodes on $SUBNET.0/24 in netns $NS."
    echo "k8s_cluster:"
    echo "  hosts:"
    for ((i = 1; i <= n; i++)); do
      echo "    n$i:"
      echo "      ansible_host: $(node_ip "$i")"
      echo "      k8s_ipsec_node_index: $i"
    done
    echo "  vars:"
    echo "    ansible_user: root"
    echo "    ansible_ssh_private_key_file: $KEYFILE"
    echo "    ansible_ssh_common_args: >-"
    echo "      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ServerAliveInterval=5 -o ServerAliveCountMax=6"
    # the VMs make new host keys at every boot of a fresh image; mitogen checks keys unless told here
    echo "    ansible_host_key_checking: false"
    echo "    k8s_ipsec_kubernetes: false"
    # the image carries prometheus-node-exporter: 85-metrics scrapes it (LAB_METRICS=0: off)
    echo "    metrics_enabled: $([[ ${LAB_METRICS:-1} = 0 ]] && echo false || echo true)"
    echo "    strongswan_pki_dir: $LAB/pki"
    if [[ -n ${LAB_TUNNEL_TYPE:-} ]]; then echo "    strongswan_tunnel_type: $LAB_TUNNEL_TYPE"; fi
    if [[ -n ${LAB_AUTH:-} ]]; then echo "    strongswan_auth: $LAB_AUTH"; fi
    echo "kube_control_plane:"
    echo "  hosts:"
    echo "    n1:"
  } >"$INV.tmp"
  mv "$INV.tmp" "$INV"
}

ensure_venv() {
  [[ -x $VENV/bin/ansible-playbook ]] && return 0
  log "no $VENV: running make setup"
  need python3 python3
  need make make
  python3 -c 'import venv, ensurepip' 2>/dev/null || need python3 python3-venv
  make -C "$ROOT" setup >&2
}

# mitogen's strategy for the lab (LAB_MITOGEN=0: Ansible's own): the emulated CPUs pay seconds of Python start-up
# per module run, which mitogen pays once per node. Users never need it.
strategy_env() {
  local dir
  [[ ${LAB_MITOGEN:-1} = 0 ]] && return 0
  dir=$("$VENV/bin/python" -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))' \
    2>/dev/null) || die "LAB_MITOGEN: mitogen is not in $VENV (run make setup, or LAB_MITOGEN=0 to run without)"
  echo "ANSIBLE_STRATEGY_PLUGINS=$dir/plugins/strategy"
  echo "ANSIBLE_STRATEGY=mitogen_linear"
}

play() { # play <playbook> [ansible-playbook args]; each run gets its own ControlMaster dir
  local pb=$1 rc=0 cp strategy
  shift
  [[ -f $INV ]] || die "no inventory; run: $0 up"
  ensure_venv
  strategy=$(strategy_env) || exit 1
  [[ $pb = /* ]] || pb=$ROOT/$pb
  mkdir -p "$LAB/cp"
  cp=$(mktemp -d "$LAB/cp/XXXXXX")
  # shellcheck disable=SC2086 # strategy: NAME=value words, or none
  ip netns exec "$NS" env ANSIBLE_CONFIG="$ROOT/ansible.cfg" ANSIBLE_SSH_CONTROL_PATH_DIR="$cp" \
    ANSIBLE_FORCE_COLOR="${ANSIBLE_FORCE_COLOR:-0}" ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks $strategy \
    "$VENV/bin/ansible-playbook" -i "$INV" "$pb" "$@" || rc=$?
  close_masters "$cp"
  return "$rc"
}

close_masters() { # close_masters <controlpath dir>: end ssh masters left by ansible, then remove the dir
  local s
  for s in "$1"/*; do
    if [[ -S $s ]]; then ip netns exec "$NS" ssh -o ControlPath="$s" -O exit lab >/dev/null 2>&1 || true; fi
  done
  rm -rf "$1"
}

cmd_up() {
  local n=${1:-3} img i t0=$SECONDS idx=()
  if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 200)); then die "bad node count: $n"; fi
  [[ $(id -u) = 0 ]] || die "must run as root"
  ensure_tools
  ensure_key
  img=$("$HERE/image.sh")
  mkdir -p "$VMDIR" "$LAB/logs"
  (
    flock -n 9 || die "another lab.sh up holds $LAB/up.lock"
    for i in $(nodes_up); do
      ((i <= n)) && continue
      log "n$i is up but not wanted: stopping it"
      stop_vm "$i"
    done
    wait_for_others
    net_up "$n"
    for ((i = 1; i <= n; i++)); do
      start_vm "$i" "$img"
      idx+=("$i")
    done
    log "started ${#idx[@]} VMs (-m $MEM, TCG); waiting for ssh"
    wait_ssh "${idx[@]}"
  ) 9>"$LAB/up.lock"
  write_inventory "$n"
  log "lab up in $((SECONDS - t0)) s: $n nodes, inventory $INV"
  if [[ ${LAB_CONVERGE:-1} != 0 ]]; then
    t0=$SECONDS
    log "converging site.yml"
    play site.yml
    log "site.yml converged in $((SECONDS - t0)) s"
  fi
}

stop_vm() {
  local i=$1 pid k
  if pid=$(vm_pid "$i"); then
    kill "$pid" 2>/dev/null || true
    for ((k = 0; k < 50; k++)); do
      [[ -d /proc/$pid ]] || break
      sleep 0.2
    done
    if [[ -d /proc/$pid ]]; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$VMDIR/n$i.pid" "$VMDIR/n$i.mon" "$VMDIR/n$i.qcow2"
}

outsider_up() { # a namespace of its own, plugged into br0 by a veth pair; no other link, no route beyond the bridge
  ip netns list | grep -qw "$NS" || die "the lab is not up"
  ip netns list | grep -qw "$OUTSIDER_NS" && return 0
  ip netns add "$OUTSIDER_NS"
  ip -n "$NS" link add name outsider type veth peer name eth0 netns "$OUTSIDER_NS"
  ip -n "$NS" link set outsider master br0 up
  ip -n "$OUTSIDER_NS" link set lo up
  ip -n "$OUTSIDER_NS" addr add "$OUTSIDER_IP/24" dev eth0
  ip -n "$OUTSIDER_NS" link set eth0 up
}

outsider_down() {
  if ip netns list | grep -qw "$OUTSIDER_NS"; then
    [[ -z $(ip netns pids "$OUTSIDER_NS" 2>/dev/null) ]] || log "processes left in $OUTSIDER_NS: $(ip netns pids "$OUTSIDER_NS" | tr '\n' ' ')"
    ip netns del "$OUTSIDER_NS"
  fi
}

cmd_down() {
  local i d
  outsider_down
  for i in $(nodes_up); do stop_vm "$i"; done
  rm -f "$VMDIR"/n*.qcow2
  if [[ -d $LAB/cp ]]; then
    for d in "$LAB"/cp/*; do [[ -d $d ]] && close_masters "$d"; done
  fi
  if ip netns list | grep -qw "$NS"; then
    [[ -z $(ip netns pids "$NS" 2>/dev/null) ]] || log "processes left in $NS: $(ip netns pids "$NS" | tr '\n' ' ')"
    ip netns del "$NS"
  fi
  log "lab down"
}

cmd_status() {
  local i pid
  if ip netns list | grep -qw "$NS"; then echo "namespace $NS: present"; else echo "namespace $NS: absent"; fi
  for i in $(nodes_up); do
    if pid=$(vm_pid "$i"); then
      if node_ssh "$i" true 2>/dev/null; then echo "n$i $(node_ip "$i") pid $pid ssh ok"; else echo "n$i $(node_ip "$i") pid $pid ssh down"; fi
    else
      echo "n$i stale pidfile"
    fi
  done
}

# stdin/stdout <-> one TCP connection; runs inside the namespace, so the traffic never leaves it
PROXY_PY='
import os, selectors, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.settimeout(None)
sel = selectors.DefaultSelector()
sel.register(0, selectors.EVENT_READ)
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == 0:
            data = os.read(0, 65536)
            if not data:
                sel.unregister(0)
                s.shutdown(socket.SHUT_WR)
                continue
            s.sendall(data)
        else:
            data = s.recv(65536)
            if not data:
                sys.exit(0)
            while data:
                data = data[os.write(1, data):]
'

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  ssh) shift; [[ $# -ge 1 ]] || die "usage: $0 ssh <i> <cmd...>"; node_ssh "$@" ;;
  converge) shift; play site.yml "$@" ;;
  play) shift; [[ $# -ge 1 ]] || die "usage: $0 play <playbook> [args]"; play "$@" ;;
  exec) shift; ip netns exec "$NS" "$@" ;;
  outsider)
    case ${2:-} in
      up) outsider_up ;;
      down) outsider_down ;;
      exec) shift 2; ip netns exec "$OUTSIDER_NS" "$@" ;;
      *) die "usage: $0 outsider up|down|exec <cmd...>" ;;
    esac ;;
  wait-ssh) shift; wait_ssh "$@" ;;
  proxy) exec ip netns exec "$NS" python3 -c "$PROXY_PY" "${2:?host}" "${3:-22}" ;;
  ssh-close)
    if [[ -n ${LAB_SSH_CONTROL_DIR:-} && -S $LAB_SSH_CONTROL_DIR/n${2:?} ]]; then
      ip netns exec "$NS" ssh -o "ControlPath=$LAB_SSH_CONTROL_DIR/n$2" -O exit lab >/dev/null 2>&1 || true
    fi ;;
  *) sed -n '2,19s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
esac
