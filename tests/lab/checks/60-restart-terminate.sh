# shellcheck shell=bash
# 60-restart-terminate: after a strongSwan restart and after terminating one IKE_SA, on the responder end of a pair and on its
# initiator end, the SAs and every pod come back by themselves (no polling timer: trap policies and the initiator's
# close/dpd actions). Meanwhile a pod of the pair pings the other every 0.2 s: the longest gap between replies is
# the outage the fault caused.

need_pods
fault() { # fault <label> <node> <command> <pinging pod's node> <pinged pod's node>
  local t
  outage_start "$4" "$5"
  sleep 2
  t=$SECONDS
  L "$2" "$3" >/dev/null 2>&1 || true
  if recover "after $1"; then r=PASS; else r=FAIL; fi
  record "$1" "$r" "SAs and pods back in $((SECONDS - t)) s; a$4->a$5 longest gap, lost/sent: $(outage_stop "$4")"
}

fault "restart strongswan (n3, responder)" 3 'systemctl restart strongswan' 1 3
fault "restart strongswan (n1, initiator)" 1 'systemctl restart strongswan' 1 2
fault "terminate --ike $(plan_conn 1 2) (n1, initiator)" 1 "swanctl --terminate --ike '$(plan_conn 1 2)' --timeout 10" 1 2
fault "terminate --ike $(plan_conn 3 2) (n3, responder)" 3 "swanctl --terminate --ike '$(plan_conn 3 2)' --timeout 10" 2 3
