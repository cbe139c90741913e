# Two entry points for a fresh machine: `make run` (a search on the embedded default) and
# `make test` (ruff, mypy and the test suite). Both create .venv and install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch pair that pip takes from local disk on the reference machine; override elsewhere.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev,onnx,ray,timm,ans]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/autoshrink search

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy agent env compression scripts

test: lint
	$(VENV)/bin/pytest -n 2 -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
