# shellcheck shell=bash
# 37-foreign-ca: one cluster CA, checked on every node, also outside --limit. n3 is made to trust another CA (a
# self-signed one made on it); site.yml --limit n1 must stop in its preflight, naming n3, before any task changes
# n1 or n3. With n3's own CA back, the same run passes and changes nothing.
# A psk lab has no CA: the check says so and passes.

if grep -q '^ *strongswan_auth: psk' "$ROOT/.lab/inventory/hosts.yml"; then
  record "" PASS "skipped: a psk lab has no CA"
  return 0
fi
ca=/etc/swanctl/x509ca/k8s-ipsec-ca.crt
ok=y
L 3 "cp -p $ca /root/ca.crt.kept && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout /dev/null -subj '/CN=k8s_ipsec cluster CA' -days 30 -out $ca 2>/dev/null" || ok=n
state_of() { L "$1" "sha256sum /etc/swanctl/conf.d/* /etc/swanctl/x509/* /etc/swanctl/x509ca/* | sha256sum" 2>/dev/null; }
before1=$(state_of 1) before3=$(state_of 3)
t=$SECONDS
if "$LABSH" play site.yml --limit n1 >"$LOGDIR/foreign-ca.log" 2>&1; then
  ok=n stop="ran through"
else
  stop="stopped"
fi
stop_s=$((SECONDS - t))
grep -q "host n3 trusts another CA" "$LOGDIR/foreign-ca.log" || { ok=n stop+=" without naming n3"; }
# nothing past the preflight changed a node
changed=$(awk '/^PLAY RECAP/ {r = 1} r && /changed=[1-9]/' "$LOGDIR/foreign-ca.log" | wc -l)
((changed == 0)) || ok=n
[[ $(state_of 1) = "$before1" && $(state_of 3) = "$before3" ]] || { ok=n stop+=", files changed"; }
L 3 "mv /root/ca.crt.kept $ca" || ok=n
playbook foreign-ca-restored site.yml --limit n1 >/dev/null || ok=n
again=$(awk '/^PLAY RECAP/ {r = 1} r && /^n1 /' "$LOGDIR/foreign-ca-restored.log" | grep -o 'changed=[0-9]*' || true)
[[ $again = changed=0 ]] || ok=n
record "another CA on n3 stops site.yml --limit n1" "$([[ $ok = y ]] && echo PASS || echo FAIL)" \
  "$stop in $stop_s s, naming n3; hosts with changes: $changed; with n3's CA back: n1 ${again:-?}"
