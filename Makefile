# unet-transforms: every target installs what it needs from a clean clone.
# VENV may point outside the clone (CI caches the ~5 GB torch stack that way).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install test lint typecheck pytest docs demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) torch torchvision
	$(PIP_INSTALL) -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy unet_transforms

pytest: $(STAMP)
	$(PY) -m pytest

docs: $(STAMP)
	$(PY) docs/scripts/make_figures.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test: lint typecheck pytest docs

demo: $(STAMP)
	$(PY) examples/train_unet.py --quick --out out/demo

bench: $(STAMP)
	$(PIP_INSTALL) -e '.[bench]'
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) site out .mypy_cache .ruff_cache .pytest_cache .hypothesis
