# `make demo` and `make test` do all set-up on a fresh machine: they create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hwnas-installed
DEMO_DIR ?= demo_out
# the runtime the demo targets: ort-cpu (ONNX), openvino or executorch (`make demo DEMO_BACKEND=executorch`)
DEMO_BACKEND ?= ort-cpu

.PHONY: venv test demo clean

$(STAMP): requirements.txt requirements-ray.txt requirements-mobile.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-ray.txt -r requirements-mobile.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m hwnas.demo --out $(DEMO_DIR) --backend $(DEMO_BACKEND)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
