# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest system-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian tools the tests talk to for real: promtool (package prometheus) checks a metrics
# scrape and the alert rules, systemd-analyze checks the unit, wrk drives the benchmarks,
# pdftoppm (poppler-utils) renders document PDFs to PNG for a person to look at
# (tests/documents), chromium is the browser the console's Playwright tests drive (never a
# downloaded one), postgresql is the server behind the PostgreSQL store's tests (a throwaway
# cluster per test session, tests/pgcluster.py).
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v wrk >/dev/null \
		|| ! command -v systemd-analyze >/dev/null || ! command -v pdftoppm >/dev/null \
		|| ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus wrk systemd poppler-utils chromium postgresql >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/somsd demo

lint: $(STAMP)
	$(BIN)/ruff check somsd actors adapters tests bench
	$(BIN)/ruff format --check somsd actors adapters tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers: most tests wait on real daemons, sockets and fsync, so two processes on two cores
# halve the wall-clock time (6.5 instead of 11.5 minutes here). PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2

pytest: $(STAMP) system-deps
	$(BIN)/pytest -q -n $(PYTEST_WORKERS)

test: lint typecheck pytest

bench: $(STAMP) system-deps
	$(BIN)/python bench/eventlog.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
