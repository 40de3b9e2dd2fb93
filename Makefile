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

# cross-modal (AVDLN / DCCA)
BATCH_SIZE ?=
MISMATCHED ?=
WEIGHTS ?=
RUN ?=

# import-checkpoint: a released trained model (CHECKPOINT=model/AV_att.pt; ARCH defaults to the class in the file)
CHECKPOINT ?=
ARCH ?=
OUT ?=

# annotations stage
AVE_ANNOTATIONS ?=
AVE_SPLITS ?=
AUDIOSET_CSV ?=

# import-release stage (FORCE / NO_CHECKSUM: any non-empty value turns the flag on)
RELEASE_DIR ?=
DTYPE ?=
FORCE ?=
NO_CHECKSUM ?=

opt = $(if $(strip $(2)),$(1) "$(strip $(2))")

STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: help setup ffmpeg annotations import-release test lint clean train-avdln evaluate-crossmodal

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

import-release: $(STAMP_RUN) ffmpeg
	$(AVEL) import-release --data-dir "$(DATA_DIR)" $(call opt,--release-dir,$(RELEASE_DIR)) \
		$(call opt,--dtype,$(DTYPE)) $(if $(strip $(FORCE)),--force) $(if $(strip $(NO_CHECKSUM)),--no-checksum)

# cross-modality: MODEL=dcca trains the DCCA baseline, anything else AVDLN; runs go to RUN_DIR/<model>.
XMODEL = $(if $(filter dcca,$(MODEL)),dcca,avdln)
train-avdln: $(STAMP_RUN) ffmpeg
	$(AVEL) train-crossmodal --data-dir "$(DATA_DIR)" --device "$(DEVICE)" --model "$(XMODEL)" \
		--run-dir "$(RUN_DIR)/$(XMODEL)" $(call opt,--epochs,$(EPOCHS)) \
		$(call opt,--batch-size,$(BATCH_SIZE)) $(call opt,--seeds,$(SEEDS)) $(call opt,--mismatched,$(MISMATCHED))

evaluate-crossmodal: $(STAMP_RUN) ffmpeg
	$(AVEL) evaluate-crossmodal --data-dir "$(DATA_DIR)" --device "$(DEVICE)" \
		$(call opt,--run,$(RUN)) $(call opt,--weights,$(WEIGHTS))

.PHONY: import-checkpoint
import-checkpoint: $(STAMP_RUN) ffmpeg
	$(AVEL) import-checkpoint "$(CHECKPOINT)" --data-dir "$(DATA_DIR)" $(call opt,--arch,$(ARCH)) \
		$(call opt,--out,$(OUT))

test: $(STAMP_DEV) ffmpeg
	$(PY) -m pytest -q

lint: $(STAMP_DEV)
	$(PY) -m ruff check pipeline models tests

clean:
	rm -rf $(DATA_DIR) $(RUN_DIR) .pytest_cache .ruff_cache
