# avel: every target is a thin call of the `avel` CLI (python -m pipeline.cli).
# Make variables are the upper-snake-case of the CLI flag they feed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
AVEL := $(PY) -m pipeline.cli

DATA_DIR ?= data
DEVICE ?= auto
RUN_DIR ?= runs
MODEL ?= av_att
EPOCHS ?=
SEEDS ?=

# annotations stage
AVE_ANNOTATIONS ?=
AVE_SPLITS ?=
AUDIOSET_CSV ?=

# demo (make demo): a generated event set served on loopback, run through every stage
DEMO_DATA_DIR ?= data/demo
DEMO_RUN_DIR ?= runs/demo
CLIPS ?=
SEED ?=
FRAMES_PER_SEGMENT ?=

opt = $(if $(strip $(2)),$(1) "$(strip $(2))")

STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: help setup ffmpeg annotations demo test lint clean

help:
	@echo "make demo | test | annotations | lint | setup | clean   (DATA_DIR=$(DATA_DIR))"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[tf]"
	@touch $@

$(STAMP_DEV): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[tf,dev]"
	@touch $@ $(STAMP_RUN)

setup: $(STAMP_DEV) ffmpeg

# ffmpeg/ffprobe: installed from Debian's packages when running as root, else the exact command to run.
ffmpeg:
	@if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "ffmpeg not found: installing Debian's ffmpeg" >&2; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
		else echo "ffmpeg/ffprobe not found; run: sudo apt-get install -y ffmpeg" >&2; exit 1; fi; fi

annotations: $(STAMP_RUN) ffmpeg
	$(AVEL) annotations --data-dir "$(DATA_DIR)" $(call opt,--ave-annotations,$(AVE_ANNOTATIONS)) \
		$(call opt,--ave-splits,$(AVE_SPLITS)) $(call opt,--audioset-csv,$(AUDIOSET_CSV))

demo: $(STAMP_RUN) ffmpeg
	$(AVEL) demo --data-dir "$(DEMO_DATA_DIR)" --run-dir "$(DEMO_RUN_DIR)" $(call opt,--clips,$(CLIPS)) \
		$(call opt,--seed,$(SEED)) $(call opt,--frames-per-segment,$(FRAMES_PER_SEGMENT)) \
		$(call opt,--epochs,$(EPOCHS))

test: $(STAMP_DEV) ffmpeg
	$(PY) -m pytest -q

lint: $(STAMP_DEV)
	$(PY) -m ruff check pipeline models tests
	$(PY) -m ruff format --check pipeline models tests

clean:
	rm -rf $(DATA_DIR) $(RUN_DIR) .pytest_cache .ruff_cache
