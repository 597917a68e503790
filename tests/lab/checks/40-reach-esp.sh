# shellcheck shell=bash
# 40-reach-esp: every pod reaches every remote pod and every node every pod (ping + HTTP, source addresses kept);
# meanwhile br0 (the underlay) carries ESP and not one cleartext packet of the plan's cluster CIDR.

need_pods
capture_start reach
reach initial 30 || true
read -r esp clear < <(capture_stop)
if ((esp > 0 && clear == 0)); then
  record "br0 capture: ESP only" PASS "$esp ESP packets, $clear cleartext pod packets"
else
  record "br0 capture: ESP only" FAIL "$esp ESP packets, $clear cleartext pod packets (reach.pcap)"
fi
