# Two commands for a fresh machine: `make serve` and `make test` (`make demo` to look around first).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# SAM CLI pins its own pydantic and boto3, so it gets a virtual environment of its own.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed

# The dashboard tests drive Debian's Chromium (no browser download): installed here when we are root.
CHROMIUM ?= /usr/bin/chromium

.PHONY: serve demo test test-fast lint lock lock-check bench bench-gateway bench-soak clean

# The versions come from the lock files (`make lock` writes them from pyproject.toml), with their
# hashes; relaylog itself is installed editable on top, without resolving anything again.
# `make serve` installs the dependencies alone; `make test`/`make lint` everything (same versions).
SERVE_STAMP := $(VENV)/.installed-serve

$(SERVE_STAMP): requirements/serve.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/serve.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(STAMP): requirements/dev.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(SERVE_STAMP)

$(TOOLS_STAMP):
	test -d $(TOOLS) || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet 'aws-sam-cli>=1.120' 'cfn-lint>=1.0'
	touch $(TOOLS_STAMP)

tests/node/node_modules/.installed: tests/node/package.json
	cd tests/node && npm install --no-audit --no-fund --silent
	touch $@

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The dashboard tests need Chromium: sudo apt-get install chromium (or make test CHROMIUM=/path/to/chromium)"; exit 1; \
	fi

serve: $(SERVE_STAMP)
	$(BIN)/relaylog serve

# A fake provider, relaylog serve and a mix of calls: a populated dashboard without a provider key.
demo: $(SERVE_STAMP)
	$(BIN)/relaylog demo

# The whole suite; the slowest 25 tests listed at the end, to see where the time goes.
test: $(STAMP) $(TOOLS_STAMP) tests/node/node_modules/.installed $(CHROMIUM)
	RELAYLOG_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -q --durations=25

# The unit tests, while working: no AWS (moto), SAM, Chromium, Node, soak, crash or slow tests.
FAST := not (aws or sam or browser or node or soak or crash or slow)
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "$(FAST)" --durations=10

# ruff (rules and formatting) and mypy, as configured in pyproject.toml; no file is changed.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Pins every dependency from pyproject.toml's ranges into requirements/*.txt and writes the Lambda
# artifacts' requirements files from them (requirements/lock.py says how). lock-check resolves again
# and fails if any file differs: pyproject.toml changed without `make lock`, or a hand edit.
lock: $(STAMP)
	$(BIN)/python requirements/lock.py

lock-check: $(STAMP)
	$(BIN)/python requirements/lock.py --check

bench: $(STAMP)
	$(BIN)/python bench/relay.py

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway.py

bench-soak: $(STAMP)
	$(BIN)/python bench/soak.py

# LiteLLM and Portkey side by side with relaylog (not dependencies: `make bench-peers ARGS=--install` once).
bench-peers: $(STAMP)
	$(BIN)/python bench/peers.py $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) tests/node/node_modules .aws-sam
