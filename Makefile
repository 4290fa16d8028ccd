# sensorium: two commands matter. `make demo` runs the welding demo end to end; `make test` runs
# the suite. Both create .venv when it is missing and (re)install when pyproject.toml changes.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned in the same pip command as everything that depends on it, so pip takes the
# local CPU wheel instead of resolving a multi-GB CUDA build.
TORCH  := torch==2.13.0
DEMO_OUT ?= demo_out

.PHONY: demo test bench docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH) -e '.[test,loggers,bench,docs]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sensorium demo welding --out $(DEMO_OUT)/welding

test: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 2 --timeout 600

bench: install
	$(BIN)/python benchmarks/welding_speed.py

# The documentation site (mkdocs + material + mkdocstrings) -> site/; the docs extra is installed
# when missing (a .venv made before it existed). tests/test_docs.py runs the same build, --strict.
docs: install
	@$(BIN)/python -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || \
		$(BIN)/pip install -q $(TORCH) -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(DEMO_OUT) runs .pytest_cache site
