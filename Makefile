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

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed
	bash tools/demo.sh

clean-demo:
	rm -rf $(DEMO_DATA) logs/demo
