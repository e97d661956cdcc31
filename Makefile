# One-command set-up: `make demo` (train + test on synthetic data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO_DATA := data/synthetic_small
export HF_HUB_OFFLINE := 1

.PHONY: demo test venv clean-demo bench

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Optional packages (ONNX export): installed for the tests, so that CI runs tests/test_export.py.
$(VENV)/.installed-export: $(VENV)/.installed requirements-export.txt
	$(PY) -m pip install --quiet -r requirements-export.txt
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed-export
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed
	bash tools/demo.sh

clean-demo:
	rm -rf $(DEMO_DATA) logs/demo
