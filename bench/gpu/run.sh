#!/usr/bin/env bash
# On the GPU machine, from the repository root, with bench/gpu/build and .whl
# carried there (see prepare.sh): install the wheels aside and run the check
# (arguments go to run.py: `--backends llvm` runs the LLVM artifacts alone).
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/gpu/env.sh
python3 bench/gpu/run.py "$@"
