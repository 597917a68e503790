# shellcheck shell=bash
# 50-mtu-transfer: 10 MiB between pods on different nodes (each pod from the next node's pod), through the tunnel MTU.

need_pods
ok=0
fig=
for ((i = 1; i <= N; i++)); do
  j=$((i % N + 1))
  out=$(L "$i" "ip netns exec pod-a$i curl -s -o /dev/null -m 120 -w '%{http_code} %{size_download} %{time_total}' \
    http://${POD_IP[$j]}:8080/blob" 2>&1) || true
  read -r code size secs <<<"$out"
  if [[ $code = 200 && $size = 10485760 ]]; then ok=$((ok + 1)); fi
  fig+="a$i<-a$j ${size:-?}B ${secs:-?}s; "
done
if ((ok == N)); then record "10 MiB pod transfer" PASS "$fig"; else record "10 MiB pod transfer" FAIL "$fig"; fi
