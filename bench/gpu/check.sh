#!/usr/bin/env bash
# Everything a GPU machine is lent for, in one call (carry bench/gpu/build and
# .whl, see prepare.sh): the versions found there, the benchmark against cuDNN
# (run.py), the gpu-marked tests that need no TVM (the GPU machine has none),
# `tconv tune --target cuda` of the batch-64 cases from the kernels prepare.sh
# wrote (the tuning database comes back as $OUT/tuning.jsonl) and `tconv
# optimize` of ResNet-34 CIFAR measured on the GPU. Each step has a time limit
# and its log in $OUT (default build/gpu-check), with the optimization's
# report; the exit status is 1 if any step failed.
#
#     bash bench/gpu/check.sh [OPTIMIZE_BUDGET_SECONDS [TUNE_BUDGET_SECONDS]]
#         (default 120 and 15 per case; 0 skips the step)
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-build/gpu-check}
budget=${1:-120}
tune_budget=${2:-15}
mkdir -p "$out"
source bench/gpu/env.sh || exit 1
export PYTHONUNBUFFERED=1
failed=0

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, log in $out/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local status=$?
    tail -n 40 "$out/$name.log"
    echo "== $name: exit $status"
    [ "$status" = 0 ] || failed=1
}

step versions 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
    python3 -c "import torch, llvmlite, sklearn, numpy; print(\"torch\", torch.__version__, \"llvmlite\",
        llvmlite.__version__, \"sklearn\", sklearn.__version__, \"numpy\", numpy.__version__)"'
step bench 300 python3 bench/gpu/run.py
step tests 200 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts= \
    tests/integration/test_llvm_cuda.py tests/integration/test_cuda_measure.py
tconv() { python3 -c 'import sys; from tconv.cli.main import main; sys.exit(main())' "$@"; }
export -f tconv  # for the steps' `bash -c` (timeout runs no function)
if [ "$tune_budget" != 0 ]; then
    step tune $((12 * tune_budget + 240)) bash -c 'shopt -s nullglob; for ir in bench/gpu/build/tune/*.mlir; do
        tconv tune "$ir" --target cuda --kernels bench/gpu/build/tune/kernels --budget '"$tune_budget"' \
            --db '"$out"'/tuning.jsonl || exit 1; done'
fi
if [ "$budget" != 0 ]; then
    step optimize $((budget + 180)) bash -c 'tconv "$@"' tconv optimize resnet34 --dataset cifar10 --target cuda --budget "$budget" --db /tmp/gpu-tuning.jsonl -o /tmp/gpu-opt
    cp /tmp/gpu-opt/report.md /tmp/gpu-opt/report.json /tmp/gpu-opt/pareto.png "$out/" 2>/dev/null
fi
exit $failed
