# avel: every target is a thin call of the `avel` CLI (python -m pipeline.cli).
#
# Variables are the upper-snake-case of the CLI flag they feed (--ave-splits <- AVE_SPLITS); an
# empty variable leaves the CLI's own default. Values reach the CLI intact (`--flag='value'`, so
# IDs and paths may start with '-' and hold spaces or quotes). Yes/no variables (FORCE, MERGE, ...)
# take 1/yes/true (on) or 0/no/false/empty (off), any case; anything else stops make.
# Stage targets are chained by what they produce under DATA_DIR: a target runs the stages whose
# output is missing first (`make -n TARGET` prints the plan). `make help` lists every target with
# its variables: it reads the `##` comments and recipes below.
SHELL := /bin/bash
.DEFAULT_GOAL := help
MAKEFILE := $(abspath $(lastword $(MAKEFILE_LIST)))

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
AVEL := $(PY) -m pipeline.cli

# ----------------------------------------------------------------------------- variables
# where things live
DATA_DIR ?= data
RUN_DIR ?=
OUT_DIR ?=
OUT ?=
# annotations
AVE_ANNOTATIONS ?=
AVE_SPLITS ?=
AUDIOSET_CSV ?=
CLIP_LIST ?=
CLIP_LIST_FORMAT ?=
LABELS ?=
CLASS_LABELS ?=
# download
URL_TEMPLATE ?=
FROM_DIR ?=
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
NO_PROGRESS ?=
# segments, features (and the download's NUM_SHARDS / SHARD_INDEX / WORKERS)
FRAMES_PER_SEGMENT ?=
# segments: AUDIO_RECIPE release (the AVE release's resampling, default) | soxr
AUDIO_RECIPE ?=
WORKERS ?=
FEATURES ?=
DTYPE ?=
DEVICE ?=
BATCH_SIZE ?=
VGG19_WEIGHTS ?=
# C3D (FEATURES=visual,c3d): C3D_WEIGHTS mmaction2|pickle|random|file|URL
C3D_WEIGHTS ?=
C3D_MAPS ?=
C3D_BATCH ?=
# CLIP / CLAP (FEATURES=clip,clap; pip install -e ".[foundation]"): a model id or a save_pretrained folder
CLIP_WEIGHTS ?=
CLIP_TOKENS ?=
CLAP_WEIGHTS ?=
PRECISION ?=
FRAME_SIZE ?=
VGGISH_CHECKPOINT ?=
VGGISH_OUTPUT ?=
VGGISH_PCA_PARAMS ?=
WEIGHTS_DIR ?=
AUDIO_MAPS ?=
ALLOW_RANDOM_WEIGHTS ?=
NO_DOWNLOAD ?=
NUM_SHARDS ?=
SHARD_INDEX ?=
SHARD_SIZE ?=
MERGE ?=
ENGINE ?=
ADDRESS ?=
DECODE_CPUS ?=
MODEL_ACTORS ?=
FORCE ?=
# import-release / export-release
RELEASE_DIR ?=
NO_CHECKSUM ?=
ROWS ?=
MISSING ?=
COMPRESSION ?=
# training (MODEL: a, v, av_att, dmrn, ...; train-avdln: avdln or dcca)
MODEL ?=
EPOCHS ?=
SEEDS ?=
LR ?=
NAME ?=
EVAL_EVERY ?=
THREADS ?=
OPTION ?=
LOSS ?=
MIL ?=
DECAY_STEPS ?=
BACKGROUND_VIDEOS ?=
MISMATCHED ?=
SELECT ?=
PLOTS ?=
PLOT_SAMPLES ?=
VISUAL_STORE ?=
AUDIO_STORE ?=
# zero-shot: class prompts ({} = the class name)
CLIP_PROMPT ?=
CLAP_PROMPT ?=
# evaluation, reports, released models
RUN ?=
SPLIT ?=
WEIGHTS ?=
VIDEO ?=
CLIP ?=
TABLE ?= models
ONLY ?=
NO_BACKGROUND_VIDEOS ?=
LIST ?=
CHECKPOINT ?=
ARCH ?=
# bench, demo, rehearsal
QUICK ?=
CLIPS ?=
SEED ?=
QUIET ?=
OFFLINE ?=
VISUAL_SAMPLE ?=
NO_KILL ?=
SCALE ?=

# ----------------------------------------------------------------------------- helpers
empty :=
space := $(empty) $(empty)
comma := ,
# shell-quote one value: 'it'\''s'
q = '$(subst ','\'',$(1))'
lc = $(subst Y,y,$(subst E,e,$(subst S,s,$(subst T,t,$(subst R,r,$(subst U,u,$(subst N,n,$(subst O,o,$(subst F,f,$(subst A,a,$(subst L,l,$(1))))))))))))
# $(call bool,NAME): 1 when variable NAME says yes, empty when no; stops on anything else
bool = $(strip $(if $(filter 1 yes true,$(call lc,$(strip $($(1))))),1,$(if $(filter-out 0 no false,$(call lc,$(strip $($(1))))),$(error $(1)=$($(1)): use 1/yes/true or 0/no/false (or leave it empty)))))
# $(call opt,--flag,NAME): --flag='value' when NAME is set; flag: --flag when NAME says yes
opt = $(if $(strip $($(2))),$(1)=$(call q,$($(2))))
flag = $(if $(call bool,$(2)),$(1))
# opts: one --flag='word' per space-separated word (OPTION="num_blocks=2 out_dim=32")
opts = $(foreach word,$($(2)),$(1)=$(call q,$(word)))
# given: NAME was set on the command line or in the environment (not a default of this file)
given = $(filter-out undefined default file,$(origin $(1)))
# opt_given: --flag only when NAME was given (a run's own data folder is the default otherwise)
opt_given = $(if $(call given,$(2)),$(call opt,$(1),$(2)))

# Stage outputs under DATA_DIR (Make cannot name files with spaces, ':', '%' or '#': with such a
# DATA_DIR the targets run their command without chaining).
CHAIN := $(if $(or $(findstring $(space),$(DATA_DIR)),$(findstring :,$(DATA_DIR)),$(findstring %,$(DATA_DIR)),$(findstring \#,$(DATA_DIR))),,1)
out = $(if $(CHAIN),$(DATA_DIR)/$(1))
MANIFEST_OUT = $(call out,manifest.parquet)
LEDGER_OUT = $(call out,clips/status.parquet)
SEGMENTS_OUT = $(call out,segments.parquet)
STORES_OUT = $(foreach s,$(subst $(comma), ,$(or $(FEATURES),audio,visual)),$(call out,features/$(s)/index.parquet))

# Every install is constrained to the tested versions (make lock rewrites the file).
LOCK := requirements.lock
STAMP_RUN := $(VENV)/.installed-run
STAMP_TF := $(VENV)/.installed-tf
STAMP_DEV := $(VENV)/.installed-dev
STAMP_RAY := $(VENV)/.installed-ray
STAMP_FOUNDATION := $(VENV)/.installed-foundation
# TensorFlow (the tf extra) only converts the official VGGish checkpoint: convert-vggish needs it,
# and features / demo while no converted VGGish weights are cached (wildcard: nothing to convert).
vggish_pt := weights/vggish/vggish_model.pt
vggish_asked = $(and $(filter audio,$(subst $(comma), ,$(or $(FEATURES),audio,visual))),$(if $(filter %.pt %.pth,$(VGGISH_CHECKPOINT)),,1))
tf_for_features = $(if $(and $(vggish_asked),$(if $(wildcard $(call out,$(vggish_pt))),,1)),$(STAMP_TF))
# transformers (the foundation extra): features with clip or clap, and zero-shot
foundation_for_features = $(if $(filter clip clap,$(subst $(comma), ,$(FEATURES))),$(STAMP_FOUNDATION))
demo_dir = $(if $(call given,DATA_DIR),$(DATA_DIR),data/demo)
tf_for_demo = $(if $(or $(call bool,OFFLINE),$(wildcard $(demo_dir)/$(vggish_pt) $(dir $(demo_dir))$(vggish_pt))),,$(STAMP_TF))

# ----------------------------------------------------------------------------- commands
cmd_annotations = $(AVEL) annotations $(call opt,--data-dir,DATA_DIR) \
	$(call opt,--ave-annotations,AVE_ANNOTATIONS) $(call opt,--ave-splits,AVE_SPLITS) \
	$(call opt,--audioset-csv,AUDIOSET_CSV) $(call opt,--clip-list,CLIP_LIST) \
	$(call opt,--clip-list-format,CLIP_LIST_FORMAT) $(call opt,--labels,LABELS) \
	$(call opt,--class-labels,CLASS_LABELS) $(call flag,--force,FORCE)

cmd_download = $(AVEL) download $(call opt,--data-dir,DATA_DIR) $(call opt,--url-template,URL_TEMPLATE) \
	$(call opt,--from-dir,FROM_DIR) $(call opt,--workers,WORKERS) $(call opt,--sleep,SLEEP) \
	$(call opt,--rate-limit,RATE_LIMIT) $(call opt,--cookies,COOKIES) $(call opt,--limit,LIMIT) \
	$(call flag,--retry-failed,RETRY_FAILED) $(call opt,--format,FORMAT) \
	$(call opt,--max-rate-limited,MAX_RATE_LIMITED) $(call opt,--rate-limit-pause,RATE_LIMIT_PAUSE) \
	$(call opt,--retries,RETRIES) $(call opt,--backoff,BACKOFF) \
	$(call opt,--socket-timeout,SOCKET_TIMEOUT) $(call opt,--transfer-timeout,TRANSFER_TIMEOUT) \
	$(call opt,--js-runtime,JS_RUNTIME) $(call flag,--no-progress,NO_PROGRESS) \
	$(call opt,--num-shards,NUM_SHARDS) $(call opt,--shard-index,SHARD_INDEX)

cmd_segments = $(AVEL) segments $(call opt,--data-dir,DATA_DIR) \
	$(call opt,--frames-per-segment,FRAMES_PER_SEGMENT) $(call opt,--audio-recipe,AUDIO_RECIPE) \
	$(call opt,--workers,WORKERS) $(call opt,--limit,LIMIT) $(call flag,--force,FORCE)

cmd_features = $(AVEL) features $(call opt,--data-dir,DATA_DIR) $(call opt,--features,FEATURES) \
	$(call opt,--dtype,DTYPE) $(call opt,--device,DEVICE) $(call opt,--batch-size,BATCH_SIZE) \
	$(call opt,--workers,WORKERS) $(call opt,--vgg19-weights,VGG19_WEIGHTS) \
	$(call opt,--precision,PRECISION) $(call opt,--frame-size,FRAME_SIZE) \
	$(call opt,--vggish-checkpoint,VGGISH_CHECKPOINT) $(call opt,--vggish-output,VGGISH_OUTPUT) \
	$(call opt,--vggish-pca-params,VGGISH_PCA_PARAMS) $(call flag,--audio-maps,AUDIO_MAPS) \
	$(call flag,--allow-random-weights,ALLOW_RANDOM_WEIGHTS) $(call flag,--no-download,NO_DOWNLOAD) \
	$(call opt,--num-shards,NUM_SHARDS) $(call opt,--shard-index,SHARD_INDEX) \
	$(call opt,--shard-size,SHARD_SIZE) $(call flag,--merge,MERGE) $(call flag,--force,FORCE) \
	$(call opt,--engine,ENGINE) $(call opt,--address,ADDRESS) $(call opt,--decode-cpus,DECODE_CPUS) \
	$(call opt,--model-actors,MODEL_ACTORS) $(call opt,--c3d-weights,C3D_WEIGHTS) \
	$(call flag,--c3d-maps,C3D_MAPS) $(call opt,--c3d-batch,C3D_BATCH) \
	$(call opt,--clip-weights,CLIP_WEIGHTS) $(call flag,--clip-tokens,CLIP_TOKENS) \
	$(call opt,--clap-weights,CLAP_WEIGHTS)

# options of every training mode
cmd_train = $(AVEL) train $(1) $(call opt,--data-dir,DATA_DIR) $(call opt,--model,MODEL) \
	$(call opt,--run-dir,RUN_DIR) $(call opt,--device,DEVICE) $(call opt,--epochs,EPOCHS) \
	$(call opt,--seeds,SEEDS) $(call opt,--batch-size,BATCH_SIZE) $(call opt,--lr,LR) \
	$(call opt,--name,NAME) $(call opt,--eval-every,EVAL_EVERY) $(call opts,--option,OPTION) \
	$(call opt,--threads,THREADS) $(call flag,--force,FORCE)
cmd_localization = $(call opt,--loss,LOSS) $(call opt,--decay-steps,DECAY_STEPS)
# cross-modal evaluation outputs (train crossmodal and evaluate)
cmd_crossmodal = $(call opt,--plots,PLOTS) $(call opt,--plot-samples,PLOT_SAMPLES) \
	$(call opt,--visual-store,VISUAL_STORE) $(call opt,--audio-store,AUDIO_STORE)

# CHECKPOINT=file: the run it is imported into (OUT, else RUN_DIR/release-<file name>; runs is
# the CLI's default RUN_DIR); stem = the file name without folder and suffix, spaces kept
stem = $(subst <sp>,$(space),$(basename $(notdir $(subst $(space),<sp>,$(1)))))
checkpoint_run = $(or $(OUT),$(or $(RUN_DIR),runs)/release-$(call stem,$(CHECKPOINT)))
cmd_import_checkpoint = $(AVEL) import-checkpoint $(call opt,--checkpoint,CHECKPOINT) \
	--out=$(call q,$(checkpoint_run)) $(call opt,--data-dir,DATA_DIR) $(call opt,--arch,ARCH) \
	$(call flag,--force,FORCE)

.PHONY: help setup setup-ray ffmpeg annotations download segments features convert-vggish \
	import-release export-release train-supervised train-weak train-avdln evaluate zero-shot \
	evaluate-crossmodal attention-maps table import-checkpoint bench demo test test-ray docs-check lint \
	clean delete-data delete-runs rehearsal lock

# ----------------------------------------------------------------------------- targets
help: ## this list: every target with the variables it reads
	@$(PYTHON) $(call q,$(dir $(MAKEFILE))pipeline/cli/make_help.py) $(call q,$(MAKEFILE))

setup: $(STAMP_DEV) ffmpeg ## create VENV and install the package (extras tf, dev: the tests) and ffmpeg

setup-ray: $(STAMP_RAY) ffmpeg ## setup plus the ray extra (`features ENGINE=ray`)

# Debian's python3 creates no venv without python3-venv: installed when running as root
$(VENV)/bin/python:
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "python3-venv not found: installing Debian's python3-venv" >&2; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
		else echo "$(PYTHON) cannot create a virtual environment; run: sudo apt-get install -y python3-venv" >&2; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(LOCK) -e .
	@touch $@

$(STAMP_TF): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(LOCK) -e ".[tf]"
	@touch $@ $(STAMP_RUN)

$(STAMP_DEV): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(LOCK) -e ".[tf,dev]"
	@touch $@ $(STAMP_TF) $(STAMP_RUN)

$(STAMP_RAY): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(LOCK) -e ".[tf,dev,ray,foundation]"
	@touch $@ $(STAMP_DEV) $(STAMP_TF) $(STAMP_RUN) $(STAMP_FOUNDATION)

$(STAMP_FOUNDATION): pyproject.toml $(LOCK) | $(VENV)/bin/python
	$(PY) -m pip install -q -c $(LOCK) -e ".[foundation]"
	@touch $@ $(STAMP_RUN)

lock: $(STAMP_RAY) ## rewrite requirements.lock from .venv (every extra installed): after changing pyproject.toml
	{ echo "# Every package of the tested environment, pinned (Linux x86_64, Python 3.11; all extras)."; \
	  echo "# A constraints file: the Makefile and docker/Dockerfile install with -c requirements.lock."; \
	  echo "# Regenerate after changing pyproject.toml: make lock"; \
	  $(PY) -m pip freeze --all --exclude-editable | grep -v '^pip==' | LC_ALL=C sort -f; } > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)

# ffmpeg/ffprobe: installed from Debian's packages when running as root, else the exact command to run.
ffmpeg: ## check ffmpeg/ffprobe (installs Debian's package when run as root)
	@if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "ffmpeg not found: installing Debian's ffmpeg" >&2; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
		else echo "ffmpeg/ffprobe not found; run: sudo apt-get install -y ffmpeg" >&2; exit 1; fi; fi

# Each stage: the named target always runs its command (the stage itself skips finished work);
# the file target of its output runs it only when a later stage needs that output and it is missing.
annotations: | $(STAMP_RUN) ffmpeg ## AVE annotations + split lists (+ AudioSet CSVs) or clip lists -> DATA_DIR/manifest.parquet
	$(cmd_annotations)
ifneq ($(CHAIN),)
$(MANIFEST_OUT): | $(STAMP_RUN) ffmpeg
	$(cmd_annotations)
endif

download: | $(STAMP_RUN) ffmpeg $(MANIFEST_OUT) ## the 10 s clips (yt-dlp range downloads, or FROM_DIR) -> DATA_DIR/clips
	$(cmd_download)
ifneq ($(CHAIN),)
# exit 5 = finished with clips still transient: in a chain, later stages go on with the clips that are ok
$(LEDGER_OUT): | $(STAMP_RUN) ffmpeg $(MANIFEST_OUT)
	$(cmd_download) || { rc=$$?; [ $$rc -eq 5 ] || exit $$rc; \
		echo "download: some clips are still transient; going on with the rest (run make download later)" >&2; }
endif

segments: | $(STAMP_RUN) ffmpeg $(LEDGER_OUT) ## frame plan, audio spans, log-mel patches -> DATA_DIR/segments.parquet
	$(cmd_segments)
ifneq ($(CHAIN),)
$(SEGMENTS_OUT): | $(STAMP_RUN) ffmpeg $(LEDGER_OUT)
	$(cmd_segments)
endif

features: | $(STAMP_RUN) $(tf_for_features) $(foundation_for_features) ffmpeg $(SEGMENTS_OUT) ## VGGish audio / VGG-19 visual feature stores -> DATA_DIR/features
	$(cmd_features)
ifneq ($(CHAIN),)
$(STORES_OUT) &: | $(STAMP_RUN) $(tf_for_features) $(foundation_for_features) ffmpeg $(SEGMENTS_OUT)
	$(cmd_features)
endif

convert-vggish: | $(STAMP_TF) ## the official VGGish TF checkpoint (or VGGISH_CHECKPOINT) -> cached torch weights
	$(AVEL) convert-vggish $(call opt,--data-dir,DATA_DIR) \
		$(call opt,--vggish-checkpoint,VGGISH_CHECKPOINT) $(call opt,--weights-dir,WEIGHTS_DIR) \
		$(call flag,--no-download,NO_DOWNLOAD)

import-release: | $(STAMP_RUN) ffmpeg $(MANIFEST_OUT) ## the published AVE feature files (RELEASE_DIR) -> feature stores
	$(AVEL) import-release $(call opt,--release-dir,RELEASE_DIR) $(call opt,--data-dir,DATA_DIR) \
		$(call opt,--dtype,DTYPE) $(call flag,--force,FORCE) $(call flag,--no-checksum,NO_CHECKSUM)

export-release: | $(STAMP_RUN) $(STORES_OUT) ## feature stores + manifest -> the release's h5 files in OUT_DIR (float64)
	$(AVEL) export-release $(call opt,--out-dir,OUT_DIR) $(call opt,--data-dir,DATA_DIR) \
		$(call opt,--rows,ROWS) $(call opt,--dtype,DTYPE) $(call opt,--missing,MISSING) \
		$(call opt,--compression,COMPRESSION) $(call flag,--force,FORCE)

train-supervised: | $(STAMP_RUN) ffmpeg $(STORES_OUT) ## a localization model (MODEL) -> RUN_DIR/NAME/seed-K
	$(call cmd_train,supervised) $(cmd_localization)

train-weak: | $(STAMP_RUN) ffmpeg $(STORES_OUT) ## a weakly supervised localization model (MIL pooling MIL)
	$(call cmd_train,weak) $(cmd_localization) $(call opt,--mil,MIL) \
		$(call flag,--background-videos,BACKGROUND_VIDEOS)

train-avdln: | $(STAMP_RUN) ffmpeg $(STORES_OUT) ## cross-modality localization: AVDLN (or MODEL=dcca), A2V / V2A
	$(call cmd_train,crossmodal) $(cmd_crossmodal) $(call opt,--mismatched,MISMATCHED) \
		$(call opt,--select,SELECT)

evaluate: | $(STAMP_RUN) ffmpeg ## re-evaluate RUN (or import CHECKPOINT first) on the run's data (or DATA_DIR)
	$(if $(strip $(CHECKPOINT)),$(cmd_import_checkpoint))
	$(AVEL) evaluate $(if $(strip $(CHECKPOINT)),--run=$(call q,$(checkpoint_run)),$(call opt,--run,RUN)) \
		$(call opt_given,--data-dir,DATA_DIR) $(call opt,--device,DEVICE) $(call opt,--split,SPLIT) \
		$(call opt,--batch-size,BATCH_SIZE)

zero-shot: | $(STAMP_FOUNDATION) ffmpeg ## training-free localization from the clip/clap stores -> RUN_DIR/NAME (default zero-shot)
	$(AVEL) zero-shot $(call opt,--data-dir,DATA_DIR) $(call opt,--run-dir,RUN_DIR) \
		$(call opt,--name,NAME) $(call opt,--visual-store,VISUAL_STORE) \
		$(call opt,--audio-store,AUDIO_STORE) $(call opt,--clip-weights,CLIP_WEIGHTS) \
		$(call opt,--clap-weights,CLAP_WEIGHTS) $(call opt,--clip-prompt,CLIP_PROMPT) \
		$(call opt,--clap-prompt,CLAP_PROMPT) $(call flag,--no-download,NO_DOWNLOAD) \
		$(call opt,--device,DEVICE) $(call opt,--batch-size,BATCH_SIZE) $(call flag,--force,FORCE)

evaluate-crossmodal: | $(STAMP_RUN) ffmpeg ## A2V / V2A of a cross-modal RUN or the release's WEIGHTS (.h5)
	$(AVEL) evaluate $(call opt,--run,RUN) $(call opt,--weights,WEIGHTS) \
		$(call opt_given,--data-dir,DATA_DIR) $(call opt,--device,DEVICE) $(call opt,--split,SPLIT) \
		$(call opt,--out-dir,OUT_DIR) $(cmd_crossmodal)

attention-maps: | $(STAMP_RUN) ffmpeg ## draw RUN's audio-guided attention over clip VIDEO -> PNG
	$(AVEL) attention-maps $(call opt,--run,RUN) $(call opt,--video,VIDEO) \
		$(call opt_given,--data-dir,DATA_DIR) $(call opt,--clip,CLIP) $(call opt,--out,OUT) \
		$(call opt,--device,DEVICE)

table: | $(STAMP_RUN) ffmpeg $(STORES_OUT) ## the paper's comparison TABLE (fusion|models|weak|sota|features) -> RUN_DIR/tables
	$(AVEL) table $(call q,$(TABLE)) $(call opt,--data-dir,DATA_DIR) $(call opt,--run-dir,RUN_DIR) \
		$(call opt,--seeds,SEEDS) $(call opt,--epochs,EPOCHS) $(call opt,--batch-size,BATCH_SIZE) \
		$(call opt,--lr,LR) $(call opt,--device,DEVICE) $(call opt,--eval-every,EVAL_EVERY) \
		$(call opt,--mil,MIL) $(call flag,--no-background-videos,NO_BACKGROUND_VIDEOS) \
		$(call opt,--only,ONLY) $(call flag,--list,LIST) $(call flag,--force,FORCE)

import-checkpoint: | $(STAMP_RUN) ## a released AV_att / AV_att_weak / DMRN .pt (CHECKPOINT) -> a run folder
	$(cmd_import_checkpoint)

bench: | $(STAMP_RUN) ffmpeg ## every stage against its naive baseline -> OUT_DIR (default bench/)
	$(AVEL) bench $(call opt,--data-dir,DATA_DIR) $(call opt,--out-dir,OUT_DIR) \
		$(call opt,--device,DEVICE) $(call flag,--quick,QUICK)

demo: | $(STAMP_RUN) $(tf_for_demo) ffmpeg ## the whole system on a generated set (default data/demo, runs/demo)
	$(AVEL) demo $(call opt_given,--data-dir,DATA_DIR) $(call opt,--run-dir,RUN_DIR) \
		$(call opt,--clips,CLIPS) $(call opt,--seed,SEED) \
		$(call opt,--frames-per-segment,FRAMES_PER_SEGMENT) $(call opt,--epochs,EPOCHS) \
		$(call flag,--force,FORCE) $(call flag,--quiet,QUIET) $(call flag,--offline,OFFLINE)

test: $(STAMP_RAY) ffmpeg ## the test suite (installs the ray extra so the Ray engine's tests run)
	$(PY) -m pytest -q

test-ray: $(STAMP_RAY) ffmpeg ## only the Ray engine's tests
	$(PY) -m pytest -q tests/pipeline/test_ray_engine.py

docs-check: $(STAMP_DEV) ffmpeg ## every command and Python block shown in README.md and docs/ checked (~1 min)
	$(PY) -m pytest -q tests/test_docs_commands.py

lint: $(STAMP_DEV) ## ruff check + format check
	$(PY) -m ruff check avel pipeline models tests
	$(PY) -m ruff format --check avel pipeline models tests

clean: ## caches only (__pycache__, .pytest_cache, .ruff_cache, setuptools' build/lib): never data, weights or runs
	rm -rf .pytest_cache .ruff_cache build/lib build/bdist.* build/temp.*
	rmdir build 2>/dev/null || true
	find avel pipeline models tests -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true

delete-data: ## DELETES DATA_DIR (clips, weights, features): DATA_DIR must be given explicitly
	$(if $(call given,DATA_DIR),,$(error delete-data deletes a whole data folder: name it, e.g. make delete-data DATA_DIR=data))
	rm -rf -- $(call q,$(DATA_DIR))

delete-runs: ## DELETES RUN_DIR (every trained run in it): RUN_DIR must be given explicitly
	$(if $(call given,RUN_DIR),,$(error delete-runs deletes every run in a folder: name it, e.g. make delete-runs RUN_DIR=runs))
	rm -rf -- $(call q,$(RUN_DIR))

rehearsal: | $(STAMP_RUN) ffmpeg ## AVE's rows on loopback with faults, every stage killed and resumed, measured (default data/rehearsal, runs/rehearsal; SCALE=audioset: every metadata path at AudioSet's size, docs/scale.md; not in `make test`)
	$(AVEL) rehearsal $(call opt,--scale,SCALE) $(call opt_given,--data-dir,DATA_DIR) $(call opt_given,--run-dir,RUN_DIR) \
		$(call opt,--clips,CLIPS) $(call opt,--ave-annotations,AVE_ANNOTATIONS) \
		$(call opt,--ave-splits,AVE_SPLITS) $(call opt,--seed,SEED) $(call opt,--workers,WORKERS) \
		$(call opt,--epochs,EPOCHS) $(call opt,--visual-sample,VISUAL_SAMPLE) \
		$(call flag,--no-kill,NO_KILL) $(call flag,--quiet,QUIET)
