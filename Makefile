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
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[train,test]'
	touch $(STAMP)

# The main job: optimize the built-in ResNet-34 (CIFAR-10) for this CPU in a
# 10-minute search, print the before/after table, write the optimized network,
# its artifact and the report under build/demo/resnet34.opt.
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/tconv optimize resnet34 --dataset cifar10 --budget 600 -o $(DEMO_DIR)/resnet34.opt
	$(BIN)/tconv run $(DEMO_DIR)/resnet34.opt/artifact

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(BIN)/lit -v tests/filecheck

# Not part of CI: timings need a quiet machine (see bench/suite.py).
bench: $(STAMP)
	$(BIN)/python bench/suite.py --tune 20 -o build/bench.md

clean:
	rm -rf $(VENV) build
