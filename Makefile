# Two commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

tests/node/node_modules/.installed: tests/node/package.json
	cd tests/node && npm install --no-audit --no-fund --silent
	touch $@

serve: $(STAMP)
	$(BIN)/relaylog serve

test: $(STAMP) tests/node/node_modules/.installed
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/relay.py

clean:
	rm -rf $(VENV) tests/node/node_modules
