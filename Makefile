# Two commands on a fresh machine: `make site` (set up, then build the cluster or the lab),
# `make test` (everything CI runs).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(BIN):$(PATH)
INVENTORY ?= inventory/vagrant/hosts.yml

.PHONY: setup tools unit pytest lint sanity bench bench-node test site lab lab-down e2e vagrant-box molecule-vagrant vagrant-vagrantfile clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# Debian tools the fast checks use: shellcheck (pytest and lint); iptables, nftables and the node program's Python
# modules (pytest runs k8s-ipsec-node for real with /usr/bin/python3 in private network namespaces).
tools: $(BIN)/promtool
	command -v shellcheck >/dev/null && command -v iptables-restore >/dev/null && command -v nft >/dev/null && \
	  dpkg -s python3-pyroute2 python3-nftables >/dev/null 2>&1 || \
	  { apt-get update -q && apt-get install -y -q shellcheck iptables nftables python3-pyroute2 python3-nftables; } \
	  >/dev/null

# promtool (tests/unit/test_prometheus_rules.py checks and unit-tests roles/metrics/files/k8s-ipsec-rules.yml) taken
# out of Debian's prometheus package, which is unpacked, not installed: installing it would start a Prometheus server
# on this machine. `apt-get update` only when the download fails (no package lists yet, or a stale version); apt's
# notice that it downloads unsandboxed as root (the temp dir is private) is not shown.
$(BIN)/promtool:
	mkdir -p $(BIN)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	  { apt-get download -q prometheus >/dev/null 2>&1 || \
	    { apt-get update -q && apt-get download -q prometheus; } >/dev/null; } && \
	  dpkg -x prometheus_*.deb . && install -m 0755 usr/bin/promtool $(abspath $@)

pytest: setup tools
	$(BIN)/pytest -q

# Every shell program: the lab's and the tests'.
SHELL_SCRIPTS = tests/*.sh tests/lab/*.sh $(wildcard tests/lab/lib/*.sh tests/lab/checks/*.sh tests/lab/bench/*.sh) \
  tests/lab/files/*.sh

lint: setup tools
	shellcheck -x $(SHELL_SCRIPTS)
	$(BIN)/ruff check plugins tests roles/node_prep/files
	$(BIN)/ruff format --check plugins tests roles/node_prep/files
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint -q

sanity: setup
	tests/sanity.sh

unit: pytest lint sanity

# One run, one report: docs/benchmarks.md and its plots (tests/lab/bench.sh boots the lab when none is up; see
# docs/testing.md for BENCH_SECTIONS and the rest).
bench: setup tools
	tests/lab/bench.sh

# The node program's apply and check times on a lab node for 10, 100 and 1000 peers (tests/lab/bench_node.sh boots the
# lab when none is up); BENCH_GUARD_IDLE=<seconds> also measures the guard's CPU time on an idle, converged lab.
bench-node:
	tests/lab/bench_node.sh

# The main job: converge site.yml against INVENTORY (real machines), or `make lab` for the local lab.
site: setup
	$(BIN)/ansible-playbook -i $(INVENTORY) site.yml

lab: setup
	tests/lab/lab.sh up

lab-down:
	tests/lab/lab.sh down

e2e: setup
	tests/lab/e2e.sh

test: unit e2e

# Vagrant on this machine, nothing from Vagrant Cloud or Galaxy (tests/lab/vagrant.sh; not part of `make test`):
# the lab image as the local libvirt box k8s-ipsec-lab, then molecule/default or the Vagrantfile on three such boxes,
# Kubernetes off, with libvirtd in the private network namespace k8sipsec-vagrant; torn down afterwards.
vagrant-box:
	tests/lab/vagrant.sh box

molecule-vagrant: setup
	tests/lab/vagrant.sh molecule

vagrant-vagrantfile: setup
	tests/lab/vagrant.sh vagrantfile

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/output .ansible
