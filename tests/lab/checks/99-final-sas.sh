# shellcheck shell=bash
# Check 1 (final): after everything above, the SAs are exactly as at the start (one of each per peer).

settle_sas final || true
