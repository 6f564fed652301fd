# `make demo` and `make test` do all set-up on a fresh machine: they create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hwnas-installed
DEMO_DIR ?= demo_out

.PHONY: venv test demo clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m hwnas.cli spaces
	$(PY) -m hwnas.cli presets
	$(PY) -m hwnas.cli arch summary preset:fbnet_c
	$(PY) -m hwnas.cli arch summary preset:mnasnet_a1
	$(PY) -m hwnas.cli arch summary preset:mnasnet_b1

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
