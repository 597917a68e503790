# shellcheck shell=bash
# 81-psk-stopped-rotation: a psk rotation that stops part-way leaves every pair working. n3 is made to fail its second
# load of credentials, so playbooks/rotate.yml -e rotate=psk stops with n1 and n2 sending the next pair secrets and n3
# still sending the current ones (each accepting both). Then every pair authenticates anew (a re-authentication
# checks both ends' secrets), after the stopped run and again after site.yml --tags strongswan. Without the fault, a
# second rotate.yml finishes with the same next secrets: every pair secret changed on the controller, each node holds
# one secret per peer, every pair authenticates with them. The pods ping each other throughout.
# A pubkey lab has no pair secrets: the check says so and passes.

if ! grep -q '^ *strongswan_auth: psk' "$ROOT/.lab/inventory/hosts.yml"; then
  record "" PASS "skipped: a pubkey lab has no pair secrets"
  return 0
fi
need_pods
prog=/usr/local/sbin/k8s-ipsec-node
secrets=/etc/swanctl/conf.d/k8s-ipsec-secrets.conf
pki="$ROOT/.lab/pki"
digests() { (cd "$1" 2>/dev/null && sha256sum pair-* | sort -k2) || true; }

# every pair authenticates anew: each node re-authenticates the pairs it starts (make-before-break, as rotations do:
# the old IKE_SA stays until the new one is up, so a refused secret shows as a pair not re-authenticated, without an
# outage and without both ends racing to start one). Prints "<re-authenticated>/<pairs>".
pairs_anew() {
  local i up=0 out
  for ((i = 1; i <= N; i++)); do
    out=$(L "$i" "$prog keeper reauth 2>&1") || true
    echo "n$i: $out" >>"$LOGDIR/psk-anew.log"
    up=$((up + $(grep -c '^re-authenticated ' <<<"$out" || true)))
  done
  echo "$up/$((N * (N - 1) / 2))"
}

ok=y
before=$(digests "$pki/psk")
# the fault: n3's second 'keeper creds' (the load of the secrets to send) fails
# shellcheck disable=SC2016 # expanded on the node
L 3 "mv $prog $prog.real && cat >$prog <<'EOS' && chmod 0755 $prog
#!/bin/sh
if [ \"\$1 \$2\" = 'keeper creds' ]; then
  n=\$((\$(cat /run/lab-creds-calls 2>/dev/null || echo 0) + 1)); echo \$n >/run/lab-creds-calls
  if [ \$n = 2 ]; then echo 'lab fault: credentials not loaded' >&2; exit 1; fi
fi
exec $prog.real \"\$@\"
EOS" || ok=n
capture_start psk-stopped
for ((i = 1; i <= N; i++)); do outage_start "$i" $((i % N + 1)); done

stopped=failed
"$LABSH" play playbooks/rotate.yml -e rotate=psk >"$LOGDIR/rotate-psk-stopped.log" 2>&1 && { stopped="did not stop"; ok=n; }
held=
for ((i = 1; i <= N; i++)); do held+="n$i:$(L "$i" "grep -c 'secret =' $secrets" 2>/dev/null || echo '?') "; done
[[ -d $pki/psk-next ]] || ok=n
after_stop=$(pairs_anew)
[[ ${after_stop%/*} = "${after_stop#*/}" ]] || ok=n

playbook psk-stopped-site site.yml --tags strongswan >/dev/null || ok=n
after_site=$(pairs_anew)
[[ ${after_site%/*} = "${after_site#*/}" ]] || ok=n

L 3 "mv $prog.real $prog && rm -f /run/lab-creds-calls" || ok=n
t=$SECONDS
playbook psk-finished playbooks/rotate.yml -e rotate=psk >/dev/null || ok=n
fin_s=$((SECONDS - t))
after=$(digests "$pki/psk")
changed=$(join -j 2 <(echo "$before") <(echo "$after") | awk '$2 != $3' | wc -l)
pairs=$(echo "$after" | grep -c . || true)
((pairs == N * (N - 1) / 2 && changed == pairs)) || ok=n
[[ ! -e $pki/psk-next ]] || ok=n
one=0
for ((i = 1; i <= N; i++)); do
  [[ $(L "$i" "grep -c 'secret =' $secrets" 2>/dev/null) = $((N - 1)) ]] && one=$((one + 1))
done
((one == N)) || ok=n
after_finish=$(pairs_anew)
[[ ${after_finish%/*} = "${after_finish#*/}" ]] || ok=n

sleep 3
lost=
for ((i = 1; i <= N; i++)); do
  o=$(outage_stop "$i")
  lost+="a$i->a$((i % N + 1)) ${o#* } "
done
read -r esp clear < <(capture_stop)
[[ $clear = 0 ]] || ok=n
recover "after the psk rotations" || ok=n
record "stopped psk rotation, then finished" "$([[ $ok = y ]] && echo PASS || echo FAIL)" \
  "first run $stopped at n3's fault, secrets held ${held}; pairs authenticated anew: $after_stop after it, $after_site after site.yml; second run $fin_s s: $changed/$pairs pair secrets new, one secret per peer on $one/$N, pairs anew $after_finish; lost/sent: ${lost}; $esp ESP packets, $clear cleartext"
