# Set-up and the two everyday jobs. `make demo` and `make test` install everything they need
# into .venv on first use (CPU torch 2.13.0 pinned by constraints.txt; no CUDA packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all docs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	$(PY) -c "import torch, importlib.metadata as m; v = torch.__version__; assert v.startswith('2.13.0') and '+cpu' in v, v; bad = [d.metadata['Name'] for d in m.distributions() if (d.metadata['Name'] or '').lower().startswith(('nvidia', 'triton'))]; assert not bad, bad"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/modelproof demo

test: $(STAMP)
	$(VENV)/bin/pytest

test-all: $(STAMP)
	$(VENV)/bin/pytest -m ""

# The documentation site, built offline into site/; warnings are errors (mkdocs.yml: strict).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --quiet

clean:
	rm -rf $(VENV) runs site .pytest_cache
