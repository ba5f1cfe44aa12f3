# The two commands of the README: `make demo` and `make test`. Each creates the
# virtual environment and installs the pinned dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := build/demo

.PHONY: demo test lit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/tconv zoo resnet34 --dataset cifar10 -o $(DEMO_DIR)/resnet34.mlir
	$(BIN)/tconv summary $(DEMO_DIR)/resnet34.mlir
	$(BIN)/tconv run $(DEMO_DIR)/resnet34.mlir --backend reference --batch 64 --output $(DEMO_DIR)/logits.npy

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/lit -v tests/filecheck

# Not part of CI: timings need a quiet machine (see bench/suite.py).
bench: $(STAMP)
	$(BIN)/python bench/suite.py -o build/bench.md

clean:
	rm -rf $(VENV) build
