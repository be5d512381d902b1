# outcrop — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.outcrop-installed
export HF_HUB_OFFLINE := 1
# llama.cpp compiles once on install (about 5 minutes on 2 cores); pip caches the wheel.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
# llama.cpp compiles for this CPU (-march=native). On Xeons with AMX that picks its AMX
# kernels, which crash in the first decode on the machines we run on: build without them.
ifeq ($(shell uname -m),x86_64)
LLAMA_CFLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif
BUILD_ENV := CFLAGS="$$CFLAGS $(LLAMA_CFLAGS)" CXXFLAGS="$$CXXFLAGS $(LLAMA_CFLAGS)"
# One greedy answer from the embedded model, in a home of its own: proves llama.cpp runs here.
LLAMA_CHECK := OUTCROP_HOME=$(VENV)/.llama-check $(BIN)/outcrop -m local:smollm2-135m \
	-o temperature 0 -o max_tokens 4 "Say hello." >/dev/null

.PHONY: setup run test test-fast test-system lint format bench bench-retrieval clean

# Idempotent: creates .venv when missing; reinstalls only when pyproject.toml or this
# Makefile changed.
setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BUILD_ENV) $(BIN)/python -m pip install --quiet -e '.[test,lint]'
	@# pip's wheel cache may hold a llama.cpp built before the flags above (or on another
	@# CPU): if the model cannot answer, build it again from source and cache that instead.
	$(LLAMA_CHECK) || { echo "llama.cpp failed on this CPU: building it again from source"; \
	  $(BIN)/python -m pip cache remove 'llama_cpp_python*' >/dev/null 2>&1 || true; \
	  version="$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"; \
	  $(BUILD_ENV) $(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
	    --no-binary llama-cpp-python "llama-cpp-python==$$version" && $(LLAMA_CHECK); }
	touch $(STAMP)

# The OpenAI-compatible server on the embedded default model (http://127.0.0.1:8000/v1).
run: setup
	$(BIN)/outcrop serve

# The whole suite, the real local model included. pytest's "no tests ran" (exit 5) fails here.
test: setup test-system
	$(BIN)/python -m pytest

# The web UI tests drive Debian's chromium; the replica tests put Debian's haproxy and nginx
# in front of two servers. Install what is missing when we may (root with apt-get); without
# them those tests skip and say why.
SYSTEM_PACKAGES := /usr/bin/chromium:chromium /usr/sbin/haproxy:haproxy /usr/sbin/nginx:nginx-light
test-system:
	@missing="$$(for p in $(SYSTEM_PACKAGES); do test -x $${p%%:*} || echo $${p#*:}; done)"; \
	test -z "$$missing" || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null) \
	  || echo "not installed: $$missing (the tests that need them will skip)"; }

# The fast subset: everything but the tests that run the real model.
test-fast: setup
	$(BIN)/python -m pytest -m 'not slow and not browser'

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/local_generation.py

# About 25 minutes on 2 cores: BEIR SciFact from ../shared/datasets.
bench-retrieval: setup
	$(BIN)/python benchmarks/retrieval.py --rerank-queries 20 --rerank-top 10

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
