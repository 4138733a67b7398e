# leaderlib: the two commands are `make demo` and `make test`; both set everything up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv is rebuilt when pyproject.toml changes (its hash names the stamp).
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=
# make chaos: faults per store, the seed to replay (empty: a fresh one, printed), stores run at once,
# and which stores (empty: all; e.g. CHAOS_STORES=kubernetes,redis-sentinel to replay those).
CHAOS_FAULTS ?= 300
CHAOS_SEED ?=
CHAOS_PARALLEL ?= 2
CHAOS_STORES ?=

.PHONY: help venv servers demo test lint typecheck unit conformance integration bench clean

help:
	@echo "make demo         set up a virtualenv and run 'leaderlib demo' on the embedded default (SQLite)"
	@echo "make test         set up everything (apt packages, Go builds, Python deps) and run every test"
	@echo "make servers      install/build the real servers (Redis, etcd, kube-apiserver, Toxiproxy, client-go elector) into ~/.cache/leaderlib"
	@echo "make lint | typecheck | unit | conformance | integration"
	@echo "make chaos        the long randomized fault campaign on every store (CHAOS_FAULTS=300 per store, CHAOS_SEED=..., CHAOS_STORES=...) -> chaos-report/"
	@echo "make bench        latency of each backend next to its raw round trip (needs the servers)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

servers:
	bash backends/install

demo: venv
	$(BIN)/leaderlib demo

lint: venv
	$(BIN)/ruff check leaderlib tests benchmarks examples

typecheck: venv
	$(BIN)/mypy leaderlib

unit: venv
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

conformance: venv servers
	$(BIN)/python -m pytest tests/conformance $(PYTEST_ARGS)

integration: venv servers
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test: venv servers lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv servers
	$(BIN)/leaderlib bench --servers --json bench-results/bench.json --report bench-results

.PHONY: bench-quick
bench-quick: venv servers
	$(BIN)/leaderlib bench --servers --quick --json bench-results/bench-quick.json --report bench-results/quick

.PHONY: chaos
chaos: venv servers
	CHAOS_SEED=$(CHAOS_SEED) $(BIN)/python -m tests.chaos.campaign --faults $(CHAOS_FAULTS) --parallel $(CHAOS_PARALLEL) \
		$(if $(CHAOS_STORES),--stores $(CHAOS_STORES)) --out chaos-report

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
