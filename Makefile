# The two commands the README promises:  `make demo` (the main job) and `make test` (all tests).
# Both install what they need on a fresh machine: the Python virtualenv, the Kubernetes binaries
# (built from the Go module proxy, cached outside the repository) and Prometheus.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv test unit lint typecheck e2e binaries cluster-up cluster-down demo crd clean

venv: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## all tests: lint, types, unit and integration, then the end-to-end suite on a real control plane
test: lint typecheck unit e2e

unit: venv
	$(BIN)/pytest -q

lint: venv
	$(BIN)/ruff check operator tests e2e bench

typecheck: venv
	$(BIN)/mypy operator/infertune

crd: venv
	$(BIN)/infertune crd > crds/inferencedeployments.infertune.io.yaml
	$(BIN)/python -m infertune.crd_reference > docs/crd-reference.md

binaries:
	bash e2e/build-binaries.sh

e2e: venv binaries
	$(BIN)/pytest -q -m e2e e2e --durations=12

cluster-up: venv binaries
	$(BIN)/python -m e2e.cluster up

cluster-down: venv
	$(BIN)/python -m e2e.cluster down

demo: venv binaries
	$(BIN)/python -m e2e.demo

clean:
	rm -rf $(VENV) .e2e
