# One-command set-up: `make demo` (train + test on synthetic data) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The part-mask maker's own environment (see the masks targets below).
MASKS_VENV := .venv-masks
MASKS_PY   := $(MASKS_VENV)/bin/python
DEMO_DATA := data/synthetic_small
export HF_HUB_OFFLINE := 1

.PHONY: demo test venv clean-demo bench masks masks-venv

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
