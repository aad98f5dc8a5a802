# The orders service's commands. `make help` lists them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: help run test lint test-heavy clean bench bench-quick

help:  ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The virtualenv is rebuilt whenever a requirements file changes.
$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(BIN)/.installed  ## Serve the API on 127.0.0.1:8080 (local PostgreSQL if none is set)
	$(BIN)/python localdb.py serve

test: $(BIN)/.installed  ## Run the test suite on a scratch database
	$(BIN)/python -m pytest

# npm-groovy-lint, pinned in .ci/package-lock.json, in a git-ignored folder.
.ci/node_modules/.installed: .ci/package.json .ci/package-lock.json
	npm ci --prefix .ci --no-audit --no-fund --loglevel=error
	touch $@

# .ci/.groovylintrc.json: the linter's Jenkinsfile preset, with a nesting
# limit of 6, the depth of a step in declarative's nested `stages`.
lint: $(BIN)/.installed .ci/node_modules/.installed  ## Lint the agent Dockerfile and the Jenkinsfile
	$(BIN)/hadolint jenkins-slave.Dockerfile
	.ci/node_modules/.bin/npm-groovy-lint --noserver --config .ci/.groovylintrc.json \
		--failon warning Jenkinsfile

test-heavy: $(BIN)/.installed  ## The slow tests: gunicorn as the S2I builder runs it, DB restarts
	$(BIN)/python -m pytest -m process

bench: $(BIN)/.installed  ## Benchmark against pgbench and bare Flask (minutes)
	$(BIN)/python bench.py

bench-quick: $(BIN)/.installed  ## The benchmark, a few seconds a step (CI)
	$(BIN)/python bench.py --quick

clean:  ## Remove the virtualenv, the local database and caches
	rm -rf $(VENV) .local .pytest_cache __pycache__
