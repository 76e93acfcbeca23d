# One task runner for developers and CI. `make test` and `make serve` do their own set-up.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
TORCH ?= torch==2.13.0
STUDIES ?= studies
APP ?= monailabel/apps/radiology
PORT ?= 50051

.PHONY: setup serve proto proto-check lint test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first: the pinned CPU wheel; a bare `torch` requirement would pull a CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

serve: setup
	$(PY) -m monailabel.main datasets --output $(STUDIES) --labeled 6 --if-empty
	$(PY) -m monailabel.main start_server --app $(APP) --studies $(STUDIES) --port $(PORT)

proto: setup
	$(PY) scripts/gen_protos.py

proto-check: setup
	$(VENV)/bin/buf lint
	$(PY) -m pytest -q tests/unit/test_protos.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/buf lint

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
