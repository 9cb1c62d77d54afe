# SlimBench set-up, tests and demo. `make demo` and `make test` set up first when needed.
# Every step leaves a stamp in .venv, so a second `make setup` with nothing changed takes seconds.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := $(VENV)/.stamps
TORCH  := torch==2.14.1 torchvision==0.29.1
DALI   := nvidia-dali-cuda120==2.4.0
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromium

.PHONY: setup test demo clean data browser
.DEFAULT_GOAL := setup

setup: $(STAMPS)/slimbench data browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# STACK.md order: torch and torchvision first (local CUDA wheels), then setuptools<81 (Detectron2
# imports pkg_resources), then Detectron2 built without its C++ extension, then the rest.
$(STAMPS)/torch: | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/deps: requirements.txt $(STAMPS)/torch
	$(BIN)/pip install "setuptools<81" wheel
	$(BIN)/pip install -r requirements.txt $(TORCH)
	@touch $@

$(STAMPS)/detectron2: tools/install_detectron2.sh $(STAMPS)/deps
	bash tools/install_detectron2.sh $(BIN)/python
	@touch $@

# NVIDIA DALI, the optional GPU input path (data.backend: dali), about 425 MB: installed because the
# tests run its pipeline on DALI's CPU operators (tests/pretrain/data/test_dali.py).
$(STAMPS)/dali: $(STAMPS)/deps
	$(BIN)/pip install $(DALI) $(TORCH)
	@touch $@

$(STAMPS)/slimbench: setup.py $(STAMPS)/detectron2 $(STAMPS)/dali
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	@touch $@

# Real data for the demo: Debian's dataset-fashion-mnist (root installs it; others get one line).
data:
	@if [ -f $(FMNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get install -y dataset-fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)); \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' (or pass --data-root DIR)"; fi

# Debian's Chromium renders the HTML leaderboard in a test (root installs it; others get one line).
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get install -y chromium || (apt-get update && apt-get install -y chromium)); \
	else echo "Chromium missing (the leaderboard page test is skipped): run 'sudo apt-get install chromium'"; fi

# Two pytest-xdist workers (the CI machine's two cores), each with one torch thread (tests/conftest.py);
# the order is shuffled every run by pytest-randomly. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

demo: setup
	$(BIN)/bench demo

clean:
	rm -rf $(VENV) runs build *.egg-info
