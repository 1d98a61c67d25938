# The two commands of the README. Each does all the set-up it needs.
#   make demo   the main job
#   make test   the test suite (pytest: every notebook as a test + integration and bad-input tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hiperf-installed

.PHONY: install demo test readme clean

install: $(STAMP)

# PyTorch's local CPU wheel first: a plain `torch` requirement would pull the CUDA build.
$(STAMP): setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/hiperf --help
	$(BIN)/hiperf info data/mri/TCGA-FG-6692.csv

test: install
	$(BIN)/python -m pytest -n 2 tests

clean:
	rm -rf $(VENV) _docs _proc build dist *.egg-info

readme: install
	$(BIN)/python scripts/build_readme.py
