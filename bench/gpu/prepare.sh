#!/usr/bin/env bash
# On this machine (no GPU needed): compile the GPU check's cuda artifacts into
# bench/gpu/build (both backends: TVM's through nvcc, LLVM's PTX through
# ptxas; `--backends llvm` for the latter alone) and fetch into .whl the wheels
# the GPU machine lacks (it has Python 3.12, torch and numpy, but not xDSL or
# tvm-ffi; the LLVM artifacts need no more than xDSL and the CUDA driver).
# Carry bench/gpu/build and .whl (about 18 MB together).
set -euo pipefail
cd "$(dirname "$0")/../.."
make .venv/.installed
.venv/bin/python bench/gpu/prepare.py "$@"
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl \
    xdsl==0.74.0 immutabledict==4.3.1 ordered-set==4.1.0 apache-tvm-ffi==0.1.14.post1
du -sh bench/gpu/build .whl
