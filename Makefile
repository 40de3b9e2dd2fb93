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

# models stage (MODEL, EPOCHS, SEEDS, RUN_DIR, DEVICE above)
BATCH_SIZE ?=
LR ?=
LOSS ?=
MIL ?=
NAME ?=
RUN ?=
SPLIT ?=
VIDEO ?=
BACKGROUND_VIDEOS ?=

# annotations stage
AVE_ANNOTATIONS ?=
AVE_SPLITS ?=
AUDIOSET_CSV ?=

opt = $(if $(strip $(2)),$(1) "$(strip $(2))")

STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: help setup ffmpeg annotations train-supervised train-weak evaluate attention-maps test lint clean

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

TRAIN_OPTS = --model "$(MODEL)" --run-dir "$(RUN_DIR)" --device "$(DEVICE)" $(call opt,--epochs,$(EPOCHS)) \
	$(call opt,--seeds,$(SEEDS)) $(call opt,--batch-size,$(BATCH_SIZE)) $(call opt,--lr,$(LR)) \
	$(call opt,--loss,$(LOSS)) $(call opt,--name,$(NAME))

train-supervised: $(STAMP_RUN) ffmpeg
	$(AVEL) train supervised --data-dir "$(DATA_DIR)" $(TRAIN_OPTS)

train-weak: $(STAMP_RUN) ffmpeg
	$(AVEL) train weak --data-dir "$(DATA_DIR)" $(TRAIN_OPTS) $(call opt,--mil,$(MIL)) \
		$(if $(strip $(BACKGROUND_VIDEOS)),--background-videos)

evaluate: $(STAMP_RUN) ffmpeg
	$(AVEL) evaluate --data-dir "$(DATA_DIR)" --run "$(RUN)" --device "$(DEVICE)" $(call opt,--split,$(SPLIT))

attention-maps: $(STAMP_RUN) ffmpeg
	$(AVEL) attention-maps "$(RUN)" --data-dir "$(DATA_DIR)" --video "$(VIDEO)"

test: $(STAMP_DEV) ffmpeg
	$(PY) -m pytest -q

lint: $(STAMP_DEV)
	$(PY) -m ruff check pipeline models tests
	$(PY) -m ruff format --check pipeline models tests

clean:
	rm -rf $(DATA_DIR) $(RUN_DIR) .pytest_cache .ruff_cache
