# The two commands of the README. Each does all the set-up it needs.
#   make demo   the main job: `hiperf demo --quick` (both systems end to end, report.html; a few minutes)
#               `make demo-full` runs the full demo (at most 30 minutes on 2 CPU cores)
#   make test   the test suite (pytest: every notebook as a test + integration and bad-input tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hiperf-installed

.PHONY: install demo demo-full test readme docs nbs lab clean

install: $(STAMP)

# PyTorch's local CPU wheel first: a plain `torch` requirement would pull the CUDA build.
$(STAMP): setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/hiperf demo --quick

demo-full: install
	$(BIN)/hiperf demo

test: install
	$(BIN)/python -m pytest -n 2 tests

clean:
	rm -rf $(VENV) _docs _proc build dist *.egg-info

readme: install
	$(BIN)/python scripts/build_readme.py

# The docs site, offline (no Quarto needed): every notebook, with the outputs committed in it, processed by nbdev
# and rendered to _docs/; scripts/check_docs.py checks it in headless Chromium.
# Where Quarto is installed, `nbdev_docs` renders the Quarto site from the same _quarto.yml.
docs: install
	$(BIN)/python scripts/build_docs.py

# Re-run every notebook in place so it is committed with its outputs (deterministic: no timings, paths, progress bars).
nbs: install
	$(BIN)/python scripts/run_nbs.py

# JupyterLab on the notebooks (part of the dev install); as root (a container) it needs --allow-root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: install
	$(BIN)/jupyter lab $(LAB_ARGS) nbs
