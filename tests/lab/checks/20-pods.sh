# shellcheck shell=bash
# Pod a<i> with its HTTP server on every node i. Idempotent: a pod whose server answers is kept, so this also runs
# against a lab that already has them. Every later check that needs pods calls need_pods itself.
# No row when all pods are up (the table stays as it was); a row when one cannot be made.

no_pod=
for ((i = 1; i <= N; i++)); do
  pod_ensure "$i" || no_pod+="a$i "
done
[[ -z $no_pod ]] || record "pods up" FAIL "no pod ${no_pod}(CNI ADD or server failed)"
