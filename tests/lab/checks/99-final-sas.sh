# shellcheck shell=bash
# 99-final-sas: after everything above, the SAs are exactly as at the start (one of each per peer).

settle_sas final || true
