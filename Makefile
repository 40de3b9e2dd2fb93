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
OPTION ?=
# comparison tables (TABLE: fusion|models|weak|sota|features; ONLY: comma-separated keys; SEEDS, EPOCHS ... above)
TABLE ?= models
ONLY ?=

# import-checkpoint: a released trained model (CHECKPOINT=model/AV_att.pt; ARCH defaults to the class in the file)
CHECKPOINT ?=
ARCH ?=
OUT ?=

# annotations stage
AVE_ANNOTATIONS ?=
AVE_SPLITS ?=
AUDIOSET_CSV ?=
# generic clip lists instead of AVE (CLIP_LIST_FORMAT: audioset|vggsound|table; LABELS: ';'-separated)
CLIP_LIST ?=
CLIP_LIST_FORMAT ?=
LABELS ?=
CLASS_LABELS ?=

# import-release stage (FORCE / NO_CHECKSUM: any non-empty value turns the flag on)
RELEASE_DIR ?=
DTYPE ?=
FORCE ?=
NO_CHECKSUM ?=
# download stage
URL_TEMPLATE ?=
FROM_DIR ?=
WORKERS ?=
SLEEP ?=
RATE_LIMIT ?=
COOKIES ?=
LIMIT ?=
RETRY_FAILED ?=
FORMAT ?=
MAX_RATE_LIMITED ?=
RATE_LIMIT_PAUSE ?=
RETRIES ?=
BACKOFF ?=
SOCKET_TIMEOUT ?=
TRANSFER_TIMEOUT ?=
JS_RUNTIME ?=

# export-release stage (DTYPE above: float32|float64 here)
OUT_DIR ?=
ROWS ?=
MISSING ?=
COMPRESSION ?=

# segments / features stages (WORKERS above; AUDIO_MAPS, ALLOW_RANDOM_WEIGHTS, NO_DOWNLOAD, MERGE:
# flags, any non-empty value turns them on, as FORCE)
FRAMES_PER_SEGMENT ?=
FEATURES ?=
VGG19_WEIGHTS ?=
# C3D (FEATURES=visual,c3d): C3D_WEIGHTS mmaction2|pickle|random|file|URL, C3D_MAPS=1, C3D_BATCH
C3D_WEIGHTS ?=
C3D_MAPS ?=
C3D_BATCH ?=
PRECISION ?=
VGGISH_OUTPUT ?=
VGGISH_PCA_PARAMS ?=
AUDIO_MAPS ?=
ALLOW_RANDOM_WEIGHTS ?=
NO_DOWNLOAD ?=
NUM_SHARDS ?=
SHARD_INDEX ?=
SHARD_SIZE ?=
MERGE ?=
# demo (make demo): a generated event set served on loopback, run through every stage
DEMO_DATA_DIR ?= data/demo
DEMO_RUN_DIR ?= runs/demo
CLIPS ?=
SEED ?=
FRAMES_PER_SEGMENT ?=
# features on Ray Data (ENGINE=ray; ADDRESS=auto for a running cluster); NUM_SHARDS/SHARD_INDEX
# above also split the download stage's clip list
ENGINE ?=
ADDRESS ?=
DECODE_CPUS ?=
MODEL_ACTORS ?=

opt = $(if $(strip $(2)),$(1) "$(strip $(2))")
flag = $(if $(strip $(2)),$(1))

STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
STAMP_RAY := $(VENV)/.installed-ray

.PHONY: convert-vggish help setup ffmpeg annotations download segments features import-release export-release test lint clean train-avdln evaluate-crossmodal train-supervised train-weak evaluate attention-maps table bench demo

help:
	@echo "make demo | test | annotations | download | lint | setup | clean   (DATA_DIR=$(DATA_DIR))"

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

$(STAMP_RAY): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[tf,dev,ray]"
	@touch $@ $(STAMP_DEV) $(STAMP_RUN)

.PHONY: setup-ray test-ray
setup-ray: $(STAMP_RAY) ffmpeg

# ffmpeg/ffprobe: installed from Debian's packages when running as root, else the exact command to run.
ffmpeg:
	@if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "ffmpeg not found: installing Debian's ffmpeg" >&2; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
		else echo "ffmpeg/ffprobe not found; run: sudo apt-get install -y ffmpeg" >&2; exit 1; fi; fi

annotations: $(STAMP_RUN) ffmpeg
	$(AVEL) annotations --data-dir "$(DATA_DIR)" $(call opt,--ave-annotations,$(AVE_ANNOTATIONS)) \
		$(call opt,--ave-splits,$(AVE_SPLITS)) $(call opt,--audioset-csv,$(AUDIOSET_CSV)) \
		$(call opt,--clip-list,$(CLIP_LIST)) $(call opt,--clip-list-format,$(CLIP_LIST_FORMAT)) \
		$(call opt,--labels,$(LABELS)) $(call opt,--class-labels,$(CLASS_LABELS))

segments: $(STAMP_RUN) ffmpeg
	$(AVEL) segments --data-dir "$(DATA_DIR)" $(call opt,--frames-per-segment,$(FRAMES_PER_SEGMENT)) \
		$(call opt,--workers,$(WORKERS)) $(call flag,--force,$(FORCE))

features: $(STAMP_RUN) ffmpeg
	$(AVEL) features --data-dir "$(DATA_DIR)" $(call opt,--features,$(FEATURES)) \
		$(call opt,--dtype,$(DTYPE)) $(call opt,--device,$(DEVICE)) $(call opt,--batch-size,$(BATCH_SIZE)) \
		$(call opt,--workers,$(WORKERS)) $(call opt,--vggish-checkpoint,$(VGGISH_CHECKPOINT)) \
		$(call opt,--vgg19-weights,$(VGG19_WEIGHTS)) $(call opt,--precision,$(PRECISION)) \
		$(call opt,--vggish-output,$(VGGISH_OUTPUT)) $(call opt,--vggish-pca-params,$(VGGISH_PCA_PARAMS)) \
		$(call flag,--audio-maps,$(AUDIO_MAPS)) $(call flag,--allow-random-weights,$(ALLOW_RANDOM_WEIGHTS)) \
		$(call flag,--no-download,$(NO_DOWNLOAD)) $(call opt,--num-shards,$(NUM_SHARDS)) \
		$(call opt,--shard-index,$(SHARD_INDEX)) $(call opt,--shard-size,$(SHARD_SIZE)) \
		$(call flag,--merge,$(MERGE)) $(call flag,--force,$(FORCE)) $(call opt,--engine,$(ENGINE)) \
		$(call opt,--address,$(ADDRESS)) $(call opt,--decode-cpus,$(DECODE_CPUS)) \
		$(call opt,--model-actors,$(MODEL_ACTORS)) $(call opt,--c3d-weights,$(C3D_WEIGHTS)) \
		$(call flag,--c3d-maps,$(C3D_MAPS)) $(call opt,--c3d-batch,$(C3D_BATCH))

import-release: $(STAMP_RUN) ffmpeg
	$(AVEL) import-release --data-dir "$(DATA_DIR)" $(call opt,--release-dir,$(RELEASE_DIR)) \
		$(call opt,--dtype,$(DTYPE)) $(if $(strip $(FORCE)),--force) $(if $(strip $(NO_CHECKSUM)),--no-checksum)

# cross-modality: MODEL=dcca trains the DCCA baseline, anything else AVDLN; runs go to RUN_DIR/<model>.
XMODEL = $(if $(filter dcca,$(MODEL)),dcca,avdln)
train-avdln: $(STAMP_RUN) ffmpeg
	$(AVEL) train crossmodal --data-dir "$(DATA_DIR)" --device "$(DEVICE)" --model "$(XMODEL)" \
		--run-dir "$(RUN_DIR)" --name "$(XMODEL)" $(call opt,--epochs,$(EPOCHS)) \
		$(call opt,--batch-size,$(BATCH_SIZE)) $(call opt,--seeds,$(SEEDS)) $(call opt,--mismatched,$(MISMATCHED))

evaluate-crossmodal: $(STAMP_RUN) ffmpeg
	$(AVEL) evaluate --data-dir "$(DATA_DIR)" --device "$(DEVICE)" \
		$(call opt,--run,$(RUN)) $(call opt,--weights,$(WEIGHTS))

# VGGish: convert the official TF checkpoint (downloaded, or VGGISH_CHECKPOINT=path) into torch once.
VGGISH_CHECKPOINT ?=
convert-vggish: $(STAMP_RUN)
	$(AVEL) convert-vggish --data-dir "$(DATA_DIR)" $(call opt,--vggish-checkpoint,$(VGGISH_CHECKPOINT))

download: $(STAMP_RUN) ffmpeg
	$(AVEL) download --data-dir "$(DATA_DIR)" $(call opt,--url-template,$(URL_TEMPLATE)) \
		$(call opt,--from-dir,$(FROM_DIR)) $(call opt,--workers,$(WORKERS)) $(call opt,--sleep,$(SLEEP)) \
		$(call opt,--rate-limit,$(RATE_LIMIT)) $(call opt,--cookies,$(COOKIES)) $(call opt,--limit,$(LIMIT)) \
		$(if $(filter 1 yes true,$(RETRY_FAILED)),--retry-failed) $(call opt,--format,$(FORMAT)) \
		$(call opt,--max-rate-limited,$(MAX_RATE_LIMITED)) $(call opt,--rate-limit-pause,$(RATE_LIMIT_PAUSE)) \
		$(call opt,--retries,$(RETRIES)) $(call opt,--backoff,$(BACKOFF)) \
		$(call opt,--socket-timeout,$(SOCKET_TIMEOUT)) $(call opt,--transfer-timeout,$(TRANSFER_TIMEOUT)) \
		$(call opt,--js-runtime,$(JS_RUNTIME)) \
		$(call opt,--num-shards,$(NUM_SHARDS)) $(call opt,--shard-index,$(SHARD_INDEX))

export-release: $(STAMP_RUN) ffmpeg
	$(AVEL) export-release --data-dir "$(DATA_DIR)" $(call opt,--out-dir,$(OUT_DIR)) \
		$(call opt,--rows,$(ROWS)) $(call opt,--dtype,$(DTYPE)) $(call opt,--missing,$(MISSING)) \
		$(call opt,--compression,$(COMPRESSION))

TRAIN_OPTS = --model "$(MODEL)" --run-dir "$(RUN_DIR)" --device "$(DEVICE)" $(call opt,--epochs,$(EPOCHS)) \
	$(call opt,--seeds,$(SEEDS)) $(call opt,--batch-size,$(BATCH_SIZE)) $(call opt,--lr,$(LR)) \
	$(call opt,--loss,$(LOSS)) $(call opt,--name,$(NAME)) $(call opt,--option,$(OPTION))

train-supervised: $(STAMP_RUN) ffmpeg
	$(AVEL) train supervised --data-dir "$(DATA_DIR)" $(TRAIN_OPTS)

train-weak: $(STAMP_RUN) ffmpeg
	$(AVEL) train weak --data-dir "$(DATA_DIR)" $(TRAIN_OPTS) $(call opt,--mil,$(MIL)) \
		$(if $(strip $(BACKGROUND_VIDEOS)),--background-videos)

# CHECKPOINT=file: import that released model first (into RUN_DIR/release-<file name>), then evaluate it
CHECKPOINT_RUN = $(or $(strip $(OUT)),$(RUN_DIR)/release-$(basename $(notdir $(CHECKPOINT))))
evaluate: $(STAMP_RUN) ffmpeg
	$(if $(strip $(CHECKPOINT)),$(AVEL) import-checkpoint "$(CHECKPOINT)" --data-dir "$(DATA_DIR)" \
		$(call opt,--arch,$(ARCH)) --out "$(CHECKPOINT_RUN)")
	$(AVEL) evaluate --data-dir "$(DATA_DIR)" --run "$(if $(strip $(CHECKPOINT)),$(CHECKPOINT_RUN),$(RUN))" \
		--device "$(DEVICE)" $(call opt,--split,$(SPLIT))

attention-maps: $(STAMP_RUN) ffmpeg
	$(AVEL) attention-maps "$(RUN)" --data-dir "$(DATA_DIR)" --video "$(VIDEO)"

# the paper's comparison tables: trains (or reuses) every configuration -> RUN_DIR/tables/TABLE.{md,csv}
table: $(STAMP_RUN) ffmpeg
	$(AVEL) table "$(TABLE)" --data-dir "$(DATA_DIR)" --run-dir "$(RUN_DIR)" --device "$(DEVICE)" \
		$(call opt,--seeds,$(SEEDS)) $(call opt,--epochs,$(EPOCHS)) $(call opt,--batch-size,$(BATCH_SIZE)) \
		$(call opt,--lr,$(LR)) $(call opt,--mil,$(MIL)) $(call opt,--only,$(ONLY))

# benchmarks: every stage vs its naive baseline -> bench/results.json + bench/results.md
QUICK ?=
bench: $(STAMP_RUN) ffmpeg
	$(AVEL) bench --data-dir "$(DATA_DIR)" --device "$(DEVICE)" $(call opt,--out-dir,$(OUT_DIR)) \
		$(if $(strip $(QUICK)),--quick)

demo: $(STAMP_RUN) ffmpeg
	$(AVEL) demo --data-dir "$(DEMO_DATA_DIR)" --run-dir "$(DEMO_RUN_DIR)" $(call opt,--clips,$(CLIPS)) \
		$(call opt,--seed,$(SEED)) $(call opt,--frames-per-segment,$(FRAMES_PER_SEGMENT)) \
		$(call opt,--epochs,$(EPOCHS))

.PHONY: import-checkpoint
import-checkpoint: $(STAMP_RUN) ffmpeg
	$(AVEL) import-checkpoint "$(CHECKPOINT)" --data-dir "$(DATA_DIR)" $(call opt,--arch,$(ARCH)) \
		--out "$(CHECKPOINT_RUN)"

test: $(STAMP_DEV) ffmpeg
	$(PY) -m pytest -q

# the Ray engine's tests (skipped by `make test` unless Ray is installed): installs the ray extra
test-ray: $(STAMP_RAY) ffmpeg
	$(PY) -m pytest -q tests/pipeline/test_ray_engine.py

lint: $(STAMP_DEV)
	$(PY) -m ruff check pipeline models tests
	$(PY) -m ruff format --check pipeline models tests

clean:
	rm -rf $(DATA_DIR) $(RUN_DIR) .pytest_cache .ruff_cache
