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

.PHONY: demo test bench fuzz docs clean
demo: $(STAMP)
	$(VENV)/bin/mlc demo

# the layer table first (pyproject.toml [tool.importlinter]): a backward import fails in seconds
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest tests

# the fuzzers' long run (tests/fuzz): every fuzzer, 2000 iterations each
fuzz: $(STAMP)
	cd tests && ../$(PY) -m fuzz --iterations 2000

# the documentation site into site/ (mkdocs.yml; docs/gen_ref.py generates the reference pages)
docs: $(STAMP)
	$(PY) -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || $(PY) -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(PY) benchmarks/bench_spine.py

clean:
	rm -rf $(VENV) build site *.egg-info
