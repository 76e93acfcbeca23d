# One task runner for developers and CI. `make test` and `make serve` do their own set-up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYPROJECTS := pyproject.toml api/python/pyproject.toml clients/python/pyproject.toml
STAMP := $(VENV)/.installed-$(shell cat $(PYPROJECTS) | sha1sum | cut -c1-12)
TORCH ?= torch==2.13.0
STUDIES ?= studies
# `make serve` runs a working copy of a template app (training writes its checkpoints there, never
# into the package source); APP=DIR serves your own app folder in place.
TEMPLATE ?= radiology
APP ?= .monailabel/apps/$(TEMPLATE)
PORT ?= 50051

.PHONY: setup serve proto proto-ts proto-check lint typecheck test test-fast bench clean

setup: $(STAMP)

$(STAMP): $(PYPROJECTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the pinned CPU wheel; a bare `torch` requirement would pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	# three distributions: the wire contract, the client (neither needs torch), the SDK and server
	$(PY) -m pip install -q -e api/python -e clients/python -e '.[dev]'
	# scribbles (graph cuts): numpymaxflow's wheels are built for numpy<2, so it is built here against ours
	$(PY) -m pip install -q --no-deps --no-binary numpymaxflow --no-build-isolation numpymaxflow
	rm -f $(VENV)/.installed-* && touch $@

serve: setup
	test -f $(APP)/main.py || $(PY) -m monailabel_server apps --name $(TEMPLATE) --download --output $(APP)
	$(PY) -m monailabel_server datasets --output $(STUDIES) --labeled 6 --if-empty
	$(PY) -m monailabel_server start_server --app $(APP) --studies $(STUDIES) --port $(PORT)

# after a proto change: the Python code, then the TypeScript code (and the client and viewer built on it)
proto: setup
	$(PY) scripts/gen_protos.py
	$(MAKE) proto-ts

# the TypeScript client's generated code (buf from the venv, the local protoc-gen-es), then its build and
# the viewer's, which bundles the client's sources
proto-ts: setup
	cd clients/typescript && (test -d node_modules || npm ci --no-audit --no-fund) \
		&& PATH="$(abspath $(VENV))/bin:$$PATH" npm run generate && npm run build
	cd clients/web && (test -d node_modules || PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund) && npm run build

proto-check: setup
	$(VENV)/bin/buf lint
	$(PY) -m pytest -q tests/unit/test_protos.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/buf lint

# strict for monailabel_api, monailabel_client and monailabel_server ([tool.mypy] in pyproject.toml)
typecheck: setup
	$(VENV)/bin/mypy

# everything: training, large volumes and subprocess servers included
test: setup
	$(PY) -m pytest -q

# the quick loop while editing: all but the tests marked slow
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
