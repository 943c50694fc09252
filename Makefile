# lmforge: `make run` builds the environment and the whole chain; `make test` runs the test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UI_PORT ?= 5000

# An ABSOLUTE sqlite store (MLflow 3 refuses ./mlruns; a relative path breaks `dvc exp run`).
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db
export KEDRO_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(BIN):$(PATH)
# DeepSpeed's JIT ops (the CPU shm all-reduce: ~1 min to build) in this venv's own folder: in the shared default
# (~/.cache/torch_extensions) a second venv on the machine (a CI clone beside a dev checkout) has other source
# paths, so each venv's first launch rebuilds the op over the other's, every time they alternate.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/$(VENV)/torch_extensions

.PHONY: help install corpus browser run test lint ui clean serve chat loadtest satisfaction graph viz gpu-check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## create .venv and install everything (torch CPU first)

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"lmforge needs Python 3.11, found {sys.version.split()[0]}: make PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools
	# torch first: an exact CPU build; a bare `torch` requirement would pull several GB of CUDA wheels.
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[dev]"
	# the notebook kernel `python3` inside .venv (notebooks/compare_runs.ipynb; the tests execute it)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lmforge .venv)"
	# DeepSpeed JIT-builds its CPU shared-memory comm op on first use (~1-2 min): do it now, once.
	$(BIN)/python -m lmforge.training.prebuild
	# llama.cpp, the CPU inference engine (llama-server, llama-quantize, the GGUF converter), built from the pinned
	# llama-cpp-python sdist into .venv/llama.cpp for this CPU (~15 min on 2 cores, once: BUILD.json skips a rebuild)
	$(BIN)/python -m lmforge.engine.build
	touch $@

# The only step that uses the network for data: apt-get download + dpkg-deb -x, npm pack, pip download --no-deps
# of the packages declared in conf/base/parameters_data_processing.yml, into data/00_sources (once: a second
# run fetches nothing). Without apt-get/npm it says what to do; `kedro run --env stdlib` needs no package.
corpus: install  ## fetch the source packages into data/00_sources (once; manifest.json records versions and sha256)
	$(BIN)/python -m lmforge.data.fetch

run: install corpus  ## run the whole chain with DVC (only what changed reruns) and print where results are
	$(BIN)/dvc repro
	$(BIN)/python -m lmforge.results

# Playwright drives this Debian build; `playwright install` would download its own browsers (no network in CI).
browser:  ## headless Chromium for the MLflow UI test (apt-get, only when /usr/bin/chromium is missing)
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

test: install browser corpus  ## run the test suite (unit, per-pipeline, end-to-end through dvc repro)
	$(BIN)/python -m pytest

lint: install  ## ruff over src and tests
	$(BIN)/ruff check src tests

ui: install  ## MLflow UI on http://127.0.0.1:$(UI_PORT) (Ctrl-C stops it); prints the training view's URL
	@# MLflow 3.17's UI opens an experiment in its GenAI view whatever the experiment's kind tag says;
	@# the URL with workflowType=machine_learning lands on the training runs.
	@$(BIN)/python -c 'import mlflow; from lmforge.tracking import training_view_url; \
		e = mlflow.MlflowClient().get_experiment_by_name("lmforge"); \
		print("open the training runs at", training_view_url("http://127.0.0.1:$(UI_PORT)", e.experiment_id) \
		      if e else "(no runs yet: make run)")' 2>/dev/null || true
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri "$(MLFLOW_TRACKING_URI)" \
		--host 127.0.0.1 --port $(UI_PORT) --workers 1

clean:  ## remove produced data (not the venv, the DVC cache or mlflow.db)
	find data -mindepth 2 ! -name .gitkeep -delete 2>/dev/null || true
	find data -mindepth 2 -type d -empty -delete 2>/dev/null || true

SERVE_PORT ?= 8000
SERVE_MODEL ?= data/07_model_output/lmforge-chat
# Empty: ServingConfig's defaults (llama.cpp, q8_0); SERVE_ENGINE=torch is the in-process server, vllm a GPU engine.
SERVE_ENGINE ?=
SERVE_FORMAT ?=

serve: install  ## gateway + engine (llama.cpp q8_0) on http://127.0.0.1:$(SERVE_PORT) (SERVE_ENGINE=torch|vllm, SERVE_FORMAT=f16|q4_k_m, SERVE_MODEL=dir or models:/name@champion)
	$(BIN)/python -m lmforge.packaging.serve --model "$(SERVE_MODEL)" --host 127.0.0.1 --port $(SERVE_PORT) \
		$(if $(SERVE_ENGINE),--engine "$(SERVE_ENGINE)") $(if $(SERVE_FORMAT),--format "$(SERVE_FORMAT)")

chat: install  ## chat with `make serve` in the terminal; rate answers with /rate 1-5
	$(BIN)/python -m lmforge.packaging.chat --url http://127.0.0.1:$(SERVE_PORT)

loadtest: install  ## `make serve` at concurrency 1,4,8,16 (32 requests each): req/s, tokens/s, TTFT, p50/p95/p99 to MLflow + data/08_reporting
	$(BIN)/python -m lmforge.packaging.loadtest --url http://127.0.0.1:$(SERVE_PORT) --requests 32 --sweep 1,4,8,16 --concurrency 4

satisfaction: install  ## mean user rating per served model version, to MLflow and the registered version's tags
	$(BIN)/python -m lmforge.packaging.serve --summary

VIZ_PORT ?= 4141

graph: install  ## export the pipeline graph offline: build/index.html (static kedro-viz) + build/api/main (JSON)
	rm -rf build
	$(BIN)/kedro viz build
	@echo "pipeline graph: build/api/main (nodes/edges JSON); view build/index.html with: $(BIN)/python -m http.server -d build -b 127.0.0.1 $(VIZ_PORT)"

viz: install  ## interactive pipeline graph (kedro viz run, offline) on http://127.0.0.1:$(VIZ_PORT)
	$(BIN)/kedro viz run --host 127.0.0.1 --port $(VIZ_PORT) --no-browser

gpu-check: install  ## GPU check (<8 min): install, ~1B bf16 pretraining tokens/s + MFU, gemma-2b SFT, bus bandwidth, generation -> bench/results/gpu_check.json (no GPU: the tiny CPU run, gpu_check_cpu.json)
	$(BIN)/python bench/gpu_check.py
