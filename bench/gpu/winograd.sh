#!/usr/bin/env bash
# Winograd against the direct kernel, and the Winograd product's tiles side by side
# (schedule_winograd.matmul_tile), on the dense 3x3 layers at batch 64 (or 1):
#   bash bench/gpu/winograd.sh prepare [1]   here: the layers compiled direct
#                                            (TCONV_GPU_WINOGRAD=0), then as Winograd convolutions
#                                            (TCONV_GPU_WINOGRAD=1) once per product tile
#                                            (TCONV_GPU_WINOGRAD_TILE) into bench/gpu/winograd/b<batch>/
#   bash bench/gpu/winograd.sh run [1]       on the GPU machine, with bench/gpu/winograd and .whl
#                                            carried: each variant timed against cuDNN
set -euo pipefail
cd "$(dirname "$0")/../.."
batch=${2:-64}
if [ "$batch" = 64 ]; then
    tiles="128x128x8x8x8 64x128x8x8x8 128x64x8x8x8 64x128x4x8x8 128x128x8x8x16 32x128x4x8x8"
else
    tiles="64x128x8x8x8 64x64x8x8x8 64x32x8x4x8 32x32x4x4x8 64x16x4x4x8 32x64x4x8x8"
fi
only="conv3x3 \\d+ch \\d+x\\d+ b$batch\$"
out=bench/gpu/winograd/b$batch
case "${1:-}" in
prepare)
    make .venv/.installed
    TCONV_GPU_WINOGRAD=0 .venv/bin/python bench/gpu/prepare.py --backends tvm --only "$only" --out "$out/direct"
    for tile in $tiles; do
        TCONV_GPU_WINOGRAD=1 TCONV_GPU_WINOGRAD_TILE=$tile .venv/bin/python bench/gpu/prepare.py --backends tvm \
            --only "$only" --out "$out/$tile"
    done
    rm -rf "$out"/*/tune ;;
run)
    source bench/gpu/env.sh
    for variant in direct $tiles; do
        echo "== batch $batch: $variant"
        python3 bench/gpu/run.py --build "$out/$variant" --backends tvm --rounds "${ROUNDS:-9}" --only "$only"
    done ;;
*)
    echo "usage: bash bench/gpu/winograd.sh prepare|run [BATCH: 64 or 1]" >&2
    exit 2 ;;
esac
