# The two entry points of the README: `make demo` and `make test`.
# Each creates .venv if needed and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

.PHONY: demo test bench clean
demo: $(STAMP)
	$(VENV)/bin/mlc demo

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	$(PY) benchmarks/bench_spine.py

clean:
	rm -rf $(VENV) build *.egg-info
