# Everything a fresh clone needs, from nothing but python3 and the package registries.
#   make demo    embedded Postgres + local S3, real Dagster runs, lake checked against the source
#   make dev     the same stack plus the Dagster webserver and daemon (http://127.0.0.1:3000)
#   make test    install, lint (architecture included), format check, type check, tests
#   make test-unit  the millisecond lib/ tests only (no Postgres, no S3)
#   make bench   benchmarks (prints a table, writes bench/results/)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
PYTHON := .venv/bin/python
# uv uses the machine's python3; it must never download an interpreter.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3

.PHONY: help install browser lint format typecheck test test-unit test-fast test-slow demo dev bench check-defs clean

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(UV):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --all-extras --group dev
	touch $@

install: .venv/.installed

# The UI journey test drives Debian's chromium (Playwright never downloads a browser).
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "installing Debian's chromium package"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

lint: install
	.venv/bin/ruff check etl_assets etl_assets_tests bench
	.venv/bin/ruff format --check etl_assets etl_assets_tests bench
	.venv/bin/lint-imports

format: install
	.venv/bin/ruff check --fix etl_assets etl_assets_tests bench
	.venv/bin/ruff format etl_assets etl_assets_tests bench

typecheck: install
	.venv/bin/pyright

# Loading definitions needs no instance; a throwaway DAGSTER_HOME keeps the repo's dagster.yaml
# (which wants the instance database's URL) out of it.
check-defs: install
	home=$$(mktemp -d) && printf "telemetry:\n  enabled: false\n" > $$home/dagster.yaml && DAGSTER_HOME=$$home .venv/bin/dg check defs && rm -rf "$$home"

# The millisecond tests: lib/ without a live Postgres or S3 endpoint.
test-unit: install
	$(PYTHON) -m pytest etl_assets_tests/lib -m "not services" -q

# The default suite: everything but the end-to-end suites marked slow.
test-fast: install
	$(PYTHON) -m pytest -m "not slow" -n 2 --durations=15

# End to end with a real webserver and daemon, the UI journey in headless chromium, and the lake
# read by Spark. pyspark is installed only here (the `spark` dependency group), always synced:
# a later `make install` after a change to the lock removes it again.
test-slow: install browser
	$(UV) sync --frozen --compile-bytecode --all-extras --group dev --group spark
	$(PYTHON) -m pytest -m slow --durations=15

test: lint typecheck check-defs test-fast

demo: install
	$(PYTHON) -m etl_assets.devstack.cli demo

dev: install
	$(PYTHON) -m etl_assets.devstack.cli dev $(DEV_ARGS)

# The peers it measures are installed only here (the `bench` dependency group). Always synced:
# a later `make install` removes them again. Pass options with BENCH_ARGS, e.g.
#   make bench BENCH_ARGS="--sizes 1 --reps 1 --methods copy_drain,ours"
BENCH_ARGS ?=
bench: | $(UV)
	$(UV) sync --frozen --compile-bytecode --all-extras --group dev --group bench
	$(PYTHON) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf .devstack .pytest_cache .ruff_cache
