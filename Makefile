# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test lint typecheck layers pytest bytecode bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,embedded]'
	@touch $(STAMP)

## Serve on http://127.0.0.1:8080, with embedded PostgreSQL and Redis unless
## DATABASE_URL / REDIS_URL are set, and the example business system on :8090
## (EXAMPLE_SYSTEM=false to leave it out).
run: $(STAMP) bytecode
	EXAMPLE_SYSTEM=$${EXAMPLE_SYSTEM:-true} $(BIN)/flowctl serve --migrate

## ruff, mypy, the import-layer contract, then the whole pytest suite.
test: lint typecheck layers pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

# pytest exits 5 when it ran no test; make treats that as the failure it is. One worker
# per core (pytest-xdist), handed tests in the order tests/conftest.py gives them.
pytest: $(STAMP) bytecode
	$(BIN)/python -m pytest -n auto

# The project's modules compiled ahead (only what changed; a fraction of a second), even
# where PYTHONDONTWRITEBYTECODE is set: every process the server or the tests start
# (flowctl, workers, benchmarks) would otherwise compile them again, about half of a
# flowctl command's start.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 engine flows storage web bench examples tests

bench: $(STAMP)
	$(BIN)/python -m bench.steps

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache .hypothesis
