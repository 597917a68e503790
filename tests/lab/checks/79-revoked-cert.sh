# shellcheck shell=bash
# 79-revoked-cert: revocation that works. playbooks/rotate.yml -e rotate=certs re-issues every node's key and
# certificate; the certificate each node held before is then in the cluster CRL that the others load. n3, given back
# its old key and certificate, is refused by both other nodes (a new IKE_SA from them fails), although it is at the
# same address with a certificate the same CA signed and has not expired; with its new ones the pairs come back.
# A psk lab has no certificates: the check says so and passes.

if grep -q '^ *strongswan_auth: psk' "$ROOT/.lab/inventory/hosts.yml"; then
  record "" PASS "skipped: a psk lab has no certificates"
  return 0
fi
need_pods
key=/etc/swanctl/private/k8s-ipsec.key cert=/etc/swanctl/x509/k8s-ipsec.crt
crl=/etc/swanctl/x509crl/k8s-ipsec.crl
creds_from() { # creds_from <name>: n3 loads /root/<name>.key and .crt as its key and certificate
  L 3 "install -m 0600 /root/$1.key $key && install -m 0644 /root/$1.crt $cert && /usr/local/sbin/k8s-ipsec-node keeper creds" \
    >/dev/null
}

ok=y
L 3 "install -m 0600 $key /root/old.key && install -m 0644 $cert /root/old.crt" || ok=n
old_serial=$(L 3 "openssl x509 -noout -serial -in $cert | cut -d= -f2") || ok=n
t=$SECONDS
playbook rotate-certs playbooks/rotate.yml -e rotate=certs >/dev/null || ok=n
rot_s=$((SECONDS - t))
L 3 "install -m 0600 $key /root/new.key && install -m 0644 $cert /root/new.crt" || ok=n
listed=0 refused=0
for i in 1 2; do
  L "$i" "openssl crl -noout -text -in $crl | grep -qix ' *Serial Number: *$old_serial'" && listed=$((listed + 1))
done

creds_from old || ok=n
for i in 1 2; do
  conn=$(plan_conn "$i" 3)
  # node i starts the pair's IKE_SA; n3 answers with its revoked certificate
  if L "$i" "swanctl --terminate --ike $conn >/dev/null 2>&1; timeout 40 swanctl --initiate --child $conn >/dev/null 2>&1"; then
    ts "$CHECK: n$i established an IKE_SA with n3's revoked certificate"
  elif L "$i" "! swanctl --list-sas --ike $conn --raw 2>/dev/null | grep -q 'state=ESTABLISHED'"; then
    refused=$((refused + 1))
  fi
done

creds_from new || ok=n
L 3 "rm -f /root/old.key /root/old.crt /root/new.key /root/new.crt" || true
for i in 1 2; do L "$i" "timeout 40 swanctl --initiate --child $(plan_conn "$i" 3) >/dev/null 2>&1" || true; done
recover "after n3's new certificate is back" || ok=n
[[ $ok = y && $listed = 2 && $refused = 2 ]] && r=PASS || r=FAIL
record "old certificate refused after rotate=certs" "$r" \
  "rotate.yml -e rotate=certs $rot_s s; n3's old serial $old_serial in the CRL of $listed/2 peers; n3 with its old key and certificate refused by $refused/2"
