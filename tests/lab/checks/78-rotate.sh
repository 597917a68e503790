# shellcheck shell=bash
# 78-rotate (issue 11): playbooks/rotate.yml -e rotate=ca rolls the cluster CA over while the pods ping each other:
# a new CA trusted beside the old, every node's key and certificate re-issued from it, every pair re-authenticated
# once (make-before-break), then the old CA dropped. This is the whole certificate path: rotate=certs and the renewal
# window re-issue and re-authenticate the same way, from the same CA. Counted: lost pings, cleartext on the bridge,
# new serials and CA on every node, the old CA no longer loaded, every IKE_SA re-established and one per pair, and a
# long-lived TCP stream between pods that must stay open through the whole rotation.
# On a psk lab (LAB_AUTH=psk) it is rotate=psk instead: new pair secrets on every node, every pair re-authenticated.
# A re-authentication may cost a pair the packets of one moment: strongSwan's responder installs the new CHILD_SA and
# sends on it before the initiator has installed its inbound half, whose SPI is still a larval (ACQ) state there;
# the kernel counts those drops as XfrmAcquireError. So the check allows a lost ping or two per pair, and says how
# many packets the kernels dropped that way.

need_pods
ROTATE=ca
grep -q '^ *strongswan_auth: psk' "$ROOT/.lab/inventory/hosts.yml" && ROTATE=psk
# "<serial> <CA fingerprint>" of node i's certificate and trusted CA; in psk mode, the digest of its pair secrets
# shellcheck disable=SC2016 # expanded on the node
creds_of() {
  if [[ $ROTATE = psk ]]; then
    L "$1" 'sha256sum /etc/swanctl/conf.d/k8s-ipsec-secrets.conf | cut -d" " -f1' 2>/dev/null
  else
    L "$1" 'openssl x509 -noout -serial -in /etc/swanctl/x509/k8s-ipsec.crt | cut -d= -f2
    openssl x509 -noout -fingerprint -sha256 -in /etc/swanctl/x509ca/k8s-ipsec-ca.crt | cut -d= -f2' 2>/dev/null |
      paste -sd' ' -
  fi
}
acquire_errors() { L "$1" "awk '/XfrmAcquireError/ {print \$2}' /proc/net/xfrm_stat" 2>/dev/null || echo 0; }

declare -A CREDS=() SAS=() ACQ=()
for ((i = 1; i <= N; i++)); do CREDS[$i]=$(creds_of "$i") SAS[$i]=$(ike_ids "$i") ACQ[$i]=$(acquire_errors "$i"); done
capture_start rotate
for ((i = 1; i <= N; i++)); do outage_start "$i" $((i % N + 1)); done
# one long-lived TCP stream through the whole rotation: a1 downloads a2's 10 MiB blob at 20 KiB/s (about 9 min)
# shellcheck disable=SC2016 # expanded on the node
L 1 "rm -f /root/stream.*; ip netns exec pod-a1 curl -s -o /root/stream.bin --limit-rate 20k http://${POD_IP[2]}:8080/blob &
  echo \$! >/root/stream.pid; wait \$!; echo \$? >/root/stream.rc" >/dev/null 2>&1 &
stream_ssh=$!

ok=y
t=$SECONDS
playbook "rotate-$ROTATE" playbooks/rotate.yml -e "rotate=$ROTATE" >/dev/null || ok=n
rot_s=$((SECONDS - t))

sleep 3 # the last pair's pings after its re-authentication
# the stream is still open (curl has not ended: a reset or a timeout would end it) and still moving
stream_size() { L 1 "stat -c %s /root/stream.bin 2>/dev/null || echo 0" 2>/dev/null || echo 0; }
size1=$(stream_size)
sleep 3
size2=$(stream_size)
stream_rc=$(L 1 "cat /root/stream.rc 2>/dev/null" 2>/dev/null || true)
if [[ -z $stream_rc ]] && ((size2 > size1 && size1 > 0)); then
  stream="TCP stream a1<-a2 open through it (${size2} bytes so far)"
else
  ok=n stream="TCP stream a1<-a2 broken (curl status ${stream_rc:-running}, ${size1} then ${size2} bytes)"
fi
# shellcheck disable=SC2016 # expanded on the node
L 1 'kill "$(cat /root/stream.pid)" 2>/dev/null; sleep 1; rm -f /root/stream.*' >/dev/null 2>&1 || true
wait "$stream_ssh" 2>/dev/null || true
lost='' lostok=y dropped=0
for ((i = 1; i <= N; i++)); do
  o=$(outage_stop "$i")
  lost+="a$i->a$((i % N + 1)) ${o#* } "
  o=${o#* }
  # the responder-first moment is shorter than the 0.2 s between pings: one lost ping per pair, two on a slow run.
  # A torn-down SA (a replaced connection) loses seconds of them.
  ((${o%/*} <= 2)) || lostok=n
  dropped=$((dropped + $(acquire_errors "$i") - ACQ[$i]))
done
read -r esp clear < <(capture_stop)
[[ $clear = 0 ]] || lostok=n

[[ $ROTATE = psk ]] || ca_now=$(openssl x509 -noout -fingerprint -sha256 -in "$ROOT/.lab/pki/ca.crt" | cut -d= -f2)
renewed=0 same_ca=0 one_ca=0 reauthed=0 pairs=0
for ((i = 1; i <= N; i++)); do
  read -r serial ca <<<"$(creds_of "$i")"
  [[ -n $serial && $serial != "${CREDS[$i]%% *}" ]] && renewed=$((renewed + 1))
  if [[ $ROTATE = ca ]]; then
    [[ $ca = "$ca_now" && $ca != "${CREDS[$i]#* }" ]] && same_ca=$((same_ca + 1))
    # one CA loaded (the new one) and no next-CA file left
    # shellcheck disable=SC2016 # expanded on the node
    L "$i" '[ ! -e /etc/swanctl/x509ca/k8s-ipsec-ca-next.crt ] &&
      [ "$(swanctl --list-certs --type x509 --flag ca --raw 2>/dev/null | grep -c "^list-cert event")" = 1 ]' \
      2>/dev/null && one_ca=$((one_ca + 1))
  fi
  # every IKE_SA of node i is a new one (a new uniqueid for each connection)
  while read -r conn id; do
    [[ -n $conn ]] || continue
    pairs=$((pairs + 1))
    grep -qx "$conn $id" <<<"${SAS[$i]}" || reauthed=$((reauthed + 1))
  done < <(ike_ids "$i")
done
if [[ $ROTATE = ca ]]; then
  ((same_ca == N && one_ca == N)) || ok=n
  what="new key+certificate $renewed/$N, new CA $same_ca/$N, only it loaded $one_ca/$N"
else
  what="new pair secrets $renewed/$N"
fi
((renewed == N && pairs == N * (N - 1) && reauthed == pairs)) || ok=n
settle_sas "after $ROTATE rotation" || ok=n
record "$ROTATE rotation (rotate.yml -e rotate=$ROTATE)" "$([[ $ok = y && $lostok = y ]] && echo PASS || echo FAIL)" \
  "$rot_s s; $what, IKE_SAs re-established $reauthed/$pairs; lost/sent: ${lost}(XfrmAcquireError +$dropped); $stream; $esp ESP packets, $clear cleartext"
