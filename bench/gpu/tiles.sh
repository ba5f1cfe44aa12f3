#!/usr/bin/env bash
# The GPU convolution's register tiles side by side (schedule_gpu.TILES):
#   bash bench/gpu/tiles.sh prepare   here: the batch-64 3x3 layers compiled once per
#                                     tile (TCONV_GPU_CONV_TILE) into bench/gpu/tiles/<tile>
#   bash bench/gpu/tiles.sh run       on the GPU machine, with bench/gpu/tiles and .whl
#                                     carried (about 56 MB): each tile timed against cuDNN
set -euo pipefail
cd "$(dirname "$0")/../.."
tiles="1x1 4x2 8x2 8x4 16x2 4x4 16x1"
only='conv3x3 \d+ch \d+x\d+ (g8 |g16 )?b64'
case "${1:-}" in
prepare)
    make .venv/.installed
    for tile in $tiles; do
        TCONV_GPU_CONV_TILE=$tile .venv/bin/python bench/gpu/prepare.py --backends tvm --only "$only" \
            --out "bench/gpu/tiles/$tile"
    done ;;
run)
    source bench/gpu/env.sh
    for tile in $tiles; do
        echo "== tile $tile"
        python3 bench/gpu/run.py --build "bench/gpu/tiles/$tile" --backends tvm --rounds 9 --only "$only"
    done ;;
*)
    echo "usage: bash bench/gpu/tiles.sh prepare|run" >&2
    exit 2 ;;
esac
