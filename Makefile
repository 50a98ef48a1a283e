# The two commands of the README: `make demo` and `make test`. Each installs what it needs first.
VENV  := .venv
BIN   := $(VENV)/bin
# The lock files (`make lock` writes them from pyproject.toml with uv, pinned here): Linux, CPython 3.11,
# every distribution's sha256. dev.txt is the runtime + the report and dev extras; runtime.txt is what the
# image installs (deploy/Dockerfile), the same versions as dev.txt.
LOCKS       := requirements
DEV_LOCK    := $(LOCKS)/dev.txt
UV_VERSION  := 0.13.9
LOCK_TARGET := --python-version 3.11 --python-platform linux --generate-hashes --custom-compile-command "make lock"
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(DEV_LOCK) | cksum | cut -d' ' -f1)

.PHONY: install lock lock-check demo test lint servers stop bench schemas

# The dev lock first (hash-checked), then the project itself, editable and without dependencies, built by
# the setuptools the lock pinned (no download of a build backend).
$(STAMP): pyproject.toml $(DEV_LOCK)
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Regenerates the lock files after a change of pyproject.toml's dependencies, keeping every pin that still
# fits (`make lock UV_FLAGS=--upgrade` moves everything to the newest versions). The runtime lock is
# resolved under the dev lock's pins, so the image runs the versions the tests ran.
lock:
	test -x $(BIN)/pip || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile --quiet $(UV_FLAGS) $(LOCK_TARGET) pyproject.toml --extra dev -o $(LOCKS)/dev.txt
	$(BIN)/uv pip compile --quiet $(UV_FLAGS) $(LOCK_TARGET) pyproject.toml -c $(LOCKS)/dev.txt \
		-o $(LOCKS)/runtime.txt

# Fails when `make lock` would change the lock files (resolving needs PyPI).
lock-check:
	rm -rf $(VENV)/lock-check && mkdir -p $(VENV)/lock-check/$(LOCKS)
	cp $(LOCKS)/dev.txt $(LOCKS)/runtime.txt $(VENV)/lock-check/$(LOCKS)/
	cp pyproject.toml $(VENV)/lock-check/
	$(MAKE) --no-print-directory -C $(VENV)/lock-check -f $(abspath Makefile) lock VENV=$(abspath $(VENV))
	diff -u $(LOCKS)/dev.txt $(VENV)/lock-check/$(LOCKS)/dev.txt
	diff -u $(LOCKS)/runtime.txt $(VENV)/lock-check/$(LOCKS)/runtime.txt
	rm -rf $(VENV)/lock-check

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
