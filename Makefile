# Quick start: `make demo` then `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/khaosync: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or run: make PYTHON=python3 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/khaosync

# The main job against a fresh sandbox: plant a merchant, then run what the pipeline has so far.
demo: install
	bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .khaosync demo-workspace
