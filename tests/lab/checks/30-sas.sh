# shellcheck shell=bash
# 30-sas: every node has one ESTABLISHED IKE_SA and one INSTALLED CHILD_SA per peer, modern algorithms.

settle_sas initial || true
