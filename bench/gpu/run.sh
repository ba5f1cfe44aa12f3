#!/usr/bin/env bash
# On the GPU machine, from the repository root, with bench/gpu/build and .whl
# carried there (see prepare.sh): install the wheels aside and run the check
# (arguments go to run.py: `--backends llvm` runs the LLVM artifacts alone).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/tconv-site .whl/*.whl
PYTHONPATH="/tmp/tconv-site:$PWD${PYTHONPATH:+:$PYTHONPATH}" python3 bench/gpu/run.py "$@"
