# sysext-harness: the two commands users need are `make test-scenario` and `make test`.
# Everything else (`setup`, `images`, `bench`) is run by them when needed.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SETUP_STAMP := $(VENV)/.setup-stamp

# Narrow a run: TARGET=refos-257-flatcar (globs and commas allowed; a target file such as
# TARGET=targets/flatcar-stable.yaml runs a distribution's own disk image),
# SCENARIO=merge-squashfs (a -k expression) or SCENARIO=scenarios/merge (a path).
TARGET ?=
SCENARIO ?=
# Run on a distribution's own disk image: DISK=flatcar_production_qemu_uefi_image.img.bz2
# PERSONA=flatcar [FIRMWARE=uefi|bios] (docs/real-images.md).
DISK ?=
PERSONA ?=
FIRMWARE ?= uefi
# What runs the VMs: BACKEND=libvirt uses transient libvirt domains at LIBVIRT_URI
# (docs/libvirt.md; start a daemon with scripts/start-libvirtd.sh). Several URIs, separated
# by spaces, spread the targets over those hosts: LIBVIRT_URI='qemu+ssh://root@lab1/system
# qemu+ssh://root@lab2/system' JOBS=2.
BACKEND ?= qemu
LIBVIRT_URI ?= qemu:///system
PYTEST_ARGS ?=
# More options for `make bench`, e.g. BENCH_ARGS=--skip-suite (no full-matrix run).
BENCH_ARGS ?=
# Machines at once: JOBS=2 runs two targets side by side (pytest-xdist, one worker per
# target group). The run is CPU-bound under TCG, so more than the core count only slows
# everything down. JOBS=auto: one per core, as many as the available memory holds.
JOBS ?= 1
# A failed scenario runs again from its snapshot up to RERUN_FAILED times in
# `make test-scenario`; one that then passes shows as FLAKY, never as a pass. RERUN_FAILED=0
# reports the first failure. KNOWN_FAILURES: the list of failures the maintainers know
# about (docs/known-failures.md).
RERUN_FAILED ?= 1
KNOWN_FAILURES ?= known-failures.yaml
# vCPUs per machine: auto gives each machine the host's cores divided by JOBS (1 or 2);
# under TCG more vCPU threads than cores only contend (docs/targets.md).
VCPUS ?= auto
# `make test` boots these (the newest and the oldest systemd, one persona; the full matrix is
# `make test-scenario`).
TEST_TARGETS ?= refos-257-flatcar,refos-252-flatcar

target_args = $(if $(TARGET),--target '$(TARGET)') $(if $(DISK),--image '$(DISK)' $(if $(PERSONA),--persona '$(PERSONA)') --firmware '$(FIRMWARE)')
scenario_args = $(if $(SCENARIO),$(if $(wildcard $(SCENARIO)),$(SCENARIO),scenarios -k '$(SCENARIO)'),scenarios)
backend_args = --backend '$(BACKEND)' --vcpus '$(VCPUS)' $(if $(filter libvirt,$(BACKEND)),$(foreach uri,$(LIBVIRT_URI),--libvirt-uri '$(uri)'))
jobs_args = $(if $(filter-out 1,$(JOBS)),-n $(JOBS) --dist loadgroup)
jobs_args_check = $(if $(filter-out 1,$(JOBS)),--jobs $(JOBS))

.PHONY: setup images test-scenario test unit lint bench docs clean-cache check-image

setup: $(SETUP_STAMP)

$(SETUP_STAMP): pyproject.toml scripts/setup-host.sh
	./scripts/setup-host.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

images: setup
	$(BIN)/sysext-harness images build $(TARGET)

test-scenario: setup
	$(BIN)/pytest $(scenario_args) $(target_args) $(backend_args) -p no:cacheprovider $(jobs_args) \
	  --rerun-failed '$(RERUN_FAILED)' --known-failures '$(KNOWN_FAILURES)' $(PYTEST_ARGS)

# ruff for style and mistakes, mypy for types (its settings are in pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests/unit -q -p no:cacheprovider

# Unit tests first (fast feedback), then real VMs: the machine API, cleanup, CLI, and the
# scenario suite on TEST_TARGETS. pytest-timeout bounds every test; its signal method
# unwinds normally, so machines and overlays are still cleaned up.
test: setup lint
	$(BIN)/pytest tests/unit tests/integration scenarios -p no:cacheprovider \
	  --target '$(TEST_TARGETS)' --timeout=1200 $(jobs_args) $(PYTEST_ARGS)

# An extension author's check: make check-image IMAGE=my.raw [TARGET=...] [CHECK_ARGS='--unit
# my.service --run "my --version"'] (docs/check.md).
IMAGE ?=
CHECK_ARGS ?=
check-image: setup
	@if [ -z '$(IMAGE)' ]; then echo "error: IMAGE: missing; give the image to check: make check-image IMAGE=path/to/ext.raw" >&2; exit 2; fi
	$(BIN)/sysext-harness check $(IMAGE) $(target_args) $(jobs_args_check) $(backend_args) $(CHECK_ARGS)

bench: setup
	$(BIN)/python -m harness.bench $(if $(TARGET),--target '$(TARGET)') --jobs $(JOBS) $(backend_args) $(BENCH_ARGS)

clean-cache:
	rm -rf "$${SYSEXT_HARNESS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/sysext-harness}"

docs: setup
	$(BIN)/sysext-harness docs
