# Two commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# SAM CLI pins its own pydantic and boto3, so it gets a virtual environment of its own.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed

# The dashboard tests drive Debian's Chromium (no browser download): installed here when we are root.
CHROMIUM ?= /usr/bin/chromium

.PHONY: serve test test-fast bench bench-gateway bench-soak clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

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

serve: $(STAMP)
	$(BIN)/relaylog serve

# The whole suite; the slowest 25 tests listed at the end, to see where the time goes.
test: $(STAMP) $(TOOLS_STAMP) tests/node/node_modules/.installed $(CHROMIUM)
	RELAYLOG_CHROMIUM=$(CHROMIUM) $(BIN)/pytest -q --durations=25

# The unit tests, while working: no AWS (moto), SAM, Chromium, Node, soak, crash or slow tests.
FAST := not (aws or sam or browser or node or soak or crash or slow)
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "$(FAST)" --durations=10

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
