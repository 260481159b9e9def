# Two commands on a fresh machine: `make demo` and `make test`.
# `make demo` installs the package and its runtime dependencies only; `make test` (and
# `lint`, `wheel`) add the test and parity extras (torch, scikit-image, OpenCV, ruff, ...).
# Each install leaves its own marker file, so `make demo` then `make test` installs the extras.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint wheel clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml setup.cfg | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.cfg | $(PY)
	$(PY) -m pip install --quiet -e ".[test,parity]"
	touch $@

demo: $(VENV)/.installed-runtime
	$(VENV)/bin/kerasseg demo --out demo-output

test: $(VENV)/.installed-test
	$(PY) -m pytest

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

wheel: $(VENV)/.installed-test
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) build dist demo-output *.egg-info
