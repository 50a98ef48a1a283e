# The two commands of the README: `make demo` and `make test`. Each installs what it needs first.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install demo test lint servers stop bench schemas

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mrr-stream demo

# Starts the local servers (no-op when they run already) and leaves them running; `make stop` stops them.
test: $(STAMP)
	$(BIN)/mrr-stream servers start
	bash deploy/local/install-test-tools.sh
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

servers: $(STAMP)
	$(BIN)/mrr-stream servers start

stop: $(STAMP)
	$(BIN)/mrr-stream servers stop

bench: $(STAMP)
	$(BIN)/python bench/replay.py
	$(BIN)/mrr-stream servers start
	$(BIN)/python bench/state.py
	$(BIN)/python bench/stream.py
	$(BIN)/python bench/restart.py

schemas: $(STAMP)
	$(BIN)/python -m schemas.export
