# The two commands of the README: `make demo` and `make test`. Each creates the
# virtual environment and installs the pinned dependencies on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := build/demo

.PHONY: demo test fuzz fuzz-parser lit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[train,test]'
	touch $(STAMP)

# The main job on a trained network: ResNet-18 (CIFAR-10 shape) trained on the
# built-in digits (once; kept in build/demo), then optimized for this CPU with its
# accuracy checked and its int8 form tried: the before/after table gives validation
# accuracy beside the speed-up over tconv and ONNX Runtime running the trained
# original. Then the compiled answer runs on the C runtime.
demo: $(DEMO_DIR)/resnet18_trained.npz
	$(BIN)/tconv optimize $(DEMO_DIR)/resnet18_trained.mlir --data digits --max-accuracy-drop 1 --quantize \
		--budget 420 --train-budget 240 -o $(DEMO_DIR)/resnet18.opt
	$(BIN)/tconv run $(DEMO_DIR)/resnet18.opt/artifact

$(DEMO_DIR)/resnet18_trained.npz: $(STAMP)
	mkdir -p $(DEMO_DIR)
	$(BIN)/tconv zoo resnet18 --dataset cifar10 -o $(DEMO_DIR)/resnet18.mlir
	$(BIN)/tconv train $(DEMO_DIR)/resnet18.mlir --data digits --epochs 8 --augment -o $@

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile
	$(BIN)/lit -v tests/filecheck

# The fuzz tests (tests/property/test_fuzz*.py) with the long profile: `make test`
# runs them with a short one. Any count can be given: make fuzz TCONV_FUZZ_CASES=500.
TCONV_FUZZ_CASES ?= 10000
fuzz: $(STAMP)
	TCONV_FUZZ_CASES=$(TCONV_FUZZ_CASES) $(BIN)/python -m pytest -q -n auto --dist loadfile tests/property/test_fuzz*.py

# Coverage-guided fuzzing of the IR parser and verifier (atheris, installed on
# first use); stops at the first input that is neither IR nor a diagnostic.
FUZZ_PARSER_RUNS ?= 100000
fuzz-parser: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'atheris==3.0.0'
	$(BIN)/python tests/fuzz/atheris_parser.py -runs=$(FUZZ_PARSER_RUNS) -artifact_prefix=build/

# Not part of CI: timings need a quiet machine (see bench/suite.py).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/suite.py --tune 20 --torch-compile -o build/bench.md

clean:
	rm -rf $(VENV) build
