# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := protocol engine ledger pipelines quality rewards tributary assets simulation benchmarks

.PHONY: demo test test-fast ui bench setup clean lock

# requirements.lock pins every package to the versions the tests passed with (`make lock` refreshes it).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -c requirements.lock -e '.[dev]'
	# The project is installed editable, so its own modules are not in site-packages: compile them too (these machines
	# set PYTHONDONTWRITEBYTECODE, so otherwise every process compiles them again; a stale .pyc is only ignored).
	$(BIN)/python -m compileall -q -j 0 $(PACKAGES)
	touch $(STAMP)

lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements.lock

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/tributary demo

test: $(STAMP)
	sh scripts/ensure-debian.sh /usr/bin/chromium chromium "the browser test of the Dagster UI"
	sh scripts/ensure-debian.sh node nodejs "the Node.js client test"
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder -m "not slow and not process and not browser"

ui: $(STAMP)
	$(BIN)/tributary ui

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
