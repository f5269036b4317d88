# The README's two commands: `make demo` (the main job) and `make test`. Both set up .venv first.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-all lint format bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

demo: setup
	$(BIN)/llm-tuning demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# One torch thread per test process: tiny models gain nothing from more, and 2-core machines thrash.
# `make test` leaves out tests marked slow; CI runs `make test-all` (everything).
test: setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow"

test-all: setup lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: setup
	$(BIN)/python bench/train_throughput.py
