# Two commands set everything up on a fresh clone: `make train` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.bench-installed
ARGS ?=

.PHONY: venv train test lint bench

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a CUDA build (../shared/FACTS.md)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $@

venv: $(INSTALLED)

train: $(INSTALLED)
	$(BIN)/atari-rl train --algo a2c --preset a2c $(ARGS)

test: $(INSTALLED)
	$(BIN)/pytest -x -q

lint: $(INSTALLED)
	$(BIN)/ruff check .

bench: $(BENCH_INSTALLED)
	$(BIN)/python benchmarks/env_throughput.py
