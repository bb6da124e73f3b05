# Two commands: `make up` runs the whole system, `make test` runs every test.
# Both set everything up first (a virtual environment in .venv).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + ": run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# redis-cli for the README's XRANGE examples: the CLI that ships with the server.
	@cli=$$($(BIN)/python -c 'from shopctl.redis_server import find_cli; print(find_cli() or "")'); \
	  if [ -n "$$cli" ] && [ ! -e $(BIN)/redis-cli ]; then ln -s "$$cli" $(BIN)/redis-cli; fi
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/shopctl up

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/shopctl bench $(BENCH_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info bench-results
