# One-command set-up: `make demo` (train + test on synthetic data) and `make test`; `make test-fast` (no
# `slow` tests) and `make lint` while developing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The part-mask maker's own environment (see the masks targets below).
MASKS_VENV := .venv-masks
MASKS_PY   := $(MASKS_VENV)/bin/python
DEMO_DATA := data/synthetic_small
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-fast lint venv clean-demo bench masks masks-venv

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

test: $(VENV)/.installed-export $(MASKS_VENV)/.installed
	$(PY) -m pytest -q tests

# Everything but the tests marked `slow` (pyproject.toml): under 2 minutes on 2 cores.
test-fast: $(VENV)/.installed-export $(MASKS_VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

# ruff (pinned in requirements-dev.txt, a developer tool: not part of requirements.txt), rules in pyproject.toml.
# It needs none of the training packages, so a missing .venv is created for it alone.
$(VENV)/.installed-dev: requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

# Every benchmark at a small size: a smoke run (about a minute) that each one still runs; the figures in
# docs/benchmarks.md come from the full sizes (README, Speed).
bench: $(VENV)/.installed-export
	$(PY) tools/bench_data.py --slice 400 --samples 128 --rounds 1 --batch 32
	$(PY) tools/bench_model.py --tiny --iters 3 --warmup 1
	$(PY) tools/bench_train.py --only-host --host-iters 5
	$(PY) tools/bench_eval.py --scale 0.05
	$(PY) tools/bench_export.py --iters 2 --batch 8

demo: $(VENV)/.installed
	bash tools/demo.sh

clean-demo:
	rm -rf $(DEMO_DATA) logs/demo

# The part-mask maker (tools/make_masks.py) has its own environment: mediapipe pins numpy<2 / protobuf<5,
# which the training environment must not get. requirements-masks.txt is the complete pinned list, hence
# --no-deps (see the file). `make test` builds it too, so that CI runs tests/test_make_masks.py.
$(MASKS_VENV)/.installed: requirements-masks.txt
	test -x $(MASKS_PY) || $(PYTHON) -m venv $(MASKS_VENV)
	$(MASKS_PY) -m pip install --quiet --no-deps -r requirements-masks.txt
	touch $@

masks-venv: $(MASKS_VENV)/.installed

# make masks IMAGES=DIR OUT=DIR            -> OUT/<sub-folder>/<stem>.npy for every image under IMAGES
# make masks ROOT=data DATASET=market1501  -> where the loaders look (SPLITS="train query gallery" for more)
# WORKERS=N sets the processes, OVERWRITE=1 remakes existing masks.
masks: $(MASKS_VENV)/.installed
	@if [ -n "$(IMAGES)" ] && [ -n "$(OUT)" ]; then set -x; \
	  $(MASKS_PY) tools/make_masks.py --images "$(IMAGES)" --out "$(OUT)" $(MASKS_FLAGS); \
	elif [ -n "$(ROOT)" ] && [ -n "$(DATASET)" ]; then set -x; \
	  $(MASKS_PY) tools/make_masks.py --root "$(ROOT)" --dataset "$(DATASET)" $(if $(SPLITS),--splits $(SPLITS)) $(MASKS_FLAGS); \
	else echo "error: give IMAGES=DIR OUT=DIR, or ROOT=DIR DATASET=NAME: make masks IMAGES=path/to/crops OUT=path/to/masks" >&2; exit 2; fi

MASKS_FLAGS = $(if $(WORKERS),--workers $(WORKERS)) $(if $(OVERWRITE),--overwrite)
