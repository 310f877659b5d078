# din task runner. `make` runs the tests and lint; see README for the rest.
SHELL := /bin/bash
PY ?= .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: all install test lint docs contracts contracts-check demo demo-secagg demo-steps governance services services-stop clean

all: test lint

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV_STAMP)

## the tests (integration tests run when DIN_TEST_ANVIL / DIN_TEST_IPFS point at running services: `make services`)
test: $(VENV_STAMP)
	$(PY) -m pytest

LINT_PATHS := din_cli tests benchmarks scripts examples

lint: $(VENV_STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

## completions/ and man/ from the click tree
docs: $(VENV_STAMP)
	$(PY) scripts/gen_docs.py

## recompile the Solidity contracts into din_cli/chain/artifacts (needs npm)
contracts: node_modules/.installed
	node scripts/build_contracts.mjs

contracts-check: node_modules/.installed
	node scripts/build_contracts.mjs --check

## a whole DIN run on the embedded defaults: one node per actor
demo: $(VENV_STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" bash examples/nodes.sh

## the same on nodes with secure aggregation: nobody reads an update, and dev7 joins then drops out
## (45 s phases: each round's training waits for its deadline without dev7)
demo-secagg: $(VENV_STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" DEMO_PRIVACY=secagg DEMO_DROPOUT=dev7 DEMO_PHASE_SECONDS=45 bash examples/nodes.sh

## the same task driven one command at a time from one shell
demo-steps: $(VENV_STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" bash examples/round.sh

## the network's economy after the demo's task (DEMO_DIR; runs demo-steps first without one):
## credits, a DPP changing the minimum slash by a quadratic credit vote, delegation, a grants round
governance: $(VENV_STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" bash examples/governance/governance.sh

## start anvil and a js-ipfs daemon on 127.0.0.1 (PIDs in .ci/state); prints the env to export
services: node_modules/.installed
	bash .ci/services.sh start

services-stop:
	bash .ci/services.sh stop

clean:
	rm -rf .din .pytest_cache .ruff_cache build dist
