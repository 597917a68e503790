# shellcheck shell=bash
# 20-pods: pod a<i> with its HTTP server on every node i. Idempotent: a pod whose server answers is kept, so this also runs
# against a lab that already has them. Every later check that needs pods calls need_pods itself.
# No pod row when all pods are up; a row when one cannot be made. Then a few CRI sandbox cycles on n1 (the CNI
# ADD/DEL cycles are in 10-idempotence-and-cycles).

no_pod=
need_pods
for ((i = 1; i <= N; i++)); do
  [[ -n ${POD_IP[$i]:-} ]] || no_pod+="a$i "
done
[[ -z $no_pod ]] || record "pods up" FAIL "no pod ${no_pod}(CNI ADD or server failed)"

# Pod sandboxes made and removed through containerd's CRI, one after another, on n1.
if out=$(L 1 "$RUNTIME cycle $CRI_CYCLES" 2>&1); then
  record "$CRI_CYCLES CRI sandbox cycles (n1)" PASS "$out"
else
  record "$CRI_CYCLES CRI sandbox cycles (n1)" FAIL "$(tail -n 1 <<<"$out")"
fi
