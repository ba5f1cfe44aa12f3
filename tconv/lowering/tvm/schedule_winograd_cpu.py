"""CPU schedules of the three kernels of a Winograd convolution, over the
channels-innermost computes of `winograd_ops` (V[e, p, c], M[e, p, k]).

- The input transform runs in parallel over (channel block, tile row): it
  copies the tile row's 6 input rows into a buffer with a vector of channels
  innermost (the one transposition of the input), then transforms each tile
  from it, every loop of the 6×6 window unrolled and vectorised over the
  channels, so that Bᵀ folds into constants.
- The product is the direct convolution's register tile on each of the 36
  matrices: `RegisterTile.tiles` rows of V × `vectors` vectors of output
  channels accumulate in registers, each step one broadcast per tile and one
  load per vector; parallel over (position, block of output channels).
- The output transform runs in parallel over (output channel block, tile
  row): the tile row's 4 output rows into a buffer, channels innermost,
  then stored as NCHW rows along the width, through the epilogue.

Against the direct convolution's tuned kernel this runs ResNet's dense
3×3 layers of 64 to 256 channels at least twice as fast, but 512 channels at
7² (4 tiles, U's 38 MB read once) slower, hence `winograd.CPU_MIN_TILES`
(the register tile and that threshold: `tconv.kernels.winograd`; the
figures: docs/benchmarks.md, Measurements behind the schedules).
"""

from __future__ import annotations

from tvm import s_tir, tirx

from tconv.kernels.winograd import OUT_TILE, RegisterTile
from tconv.lowering.tvm.schedule_gpu import loops_under, unroll_all

Schedule = s_tir.Schedule


def _vectorize_innermost(sch: Schedule, block, under) -> None:
    """Unroll `block`'s loops under `under` but the innermost, which is vectorised."""
    loops = loops_under(sch, block, under)
    unroll_all(sch, loops[:-1])
    sch.vectorize(loops[-1])


def schedule_input_transform(function: tirx.PrimFunc, lanes: int, columns: int) -> tirx.PrimFunc:
    """Parallel over (channel block, tile row), the staged rows computed
    there; each tile's window transformed in vectors of channels."""
    sch = Schedule(function)
    transform, across, staged = (sch.get_sblock(name) for name in ("transform", "across", "staged"))
    e, p, c = sch.get_loops(transform)
    row, column = sch.split(p, [None, columns])
    block, lane = sch.split(c, [None, lanes])
    sch.reorder(block, row, column, e, lane)
    outer = sch.fuse(block, row)
    sch.parallel(outer)
    sch.compute_at(across, column, preserve_unit_loops=True)
    sch.compute_at(staged, outer, preserve_unit_loops=True)
    sch.unroll(e)
    sch.vectorize(lane)
    _vectorize_innermost(sch, across, column)
    sch.vectorize(loops_under(sch, staged, outer)[-1])
    return sch.mod["main"]


def schedule_matmul(function: tirx.PrimFunc, tile: RegisterTile) -> tirx.PrimFunc:
    """Per position and block of output channels (parallel), per `tile.tiles`
    tiles: the register tile accumulated over the group's input channels."""
    sch = Schedule(function)
    matmul = sch.get_sblock("matmul")
    # "global", not "local" (heap memory on a CPU; schedule_gspc): under 1 KB
    # TVM puts it on the stack, which LLVM keeps in registers. (14 × 2 vectors
    # is 1.8 KB, which TVM still allocates from the workspace.)
    accumulator = sch.cache_write(matmul, 0, "global")
    e, p, k, c = sch.get_loops(matmul)
    po, pi = sch.split(p, [None, tile.tiles])
    ko, kv, ki = sch.split(k, [None, tile.vectors, tile.lanes])
    sch.reorder(e, ko, po, c, pi, kv, ki)
    outer = sch.fuse(e, ko)
    sch.parallel(outer)
    sch.reverse_compute_at(accumulator, po, preserve_unit_loops=True)
    sch.unroll(pi)
    sch.unroll(kv)
    sch.vectorize(ki)
    _vectorize_innermost(sch, accumulator, po)
    sch.decompose_reduction(matmul, c)
    return sch.mod["main"]


def schedule_output_transform(function: tirx.PrimFunc, lanes: int) -> tirx.PrimFunc:
    """Parallel over (output channel block, image, tile row): each tile's
    outputs from its products in vectors of channels, then the tile row's
    outputs stored along the width."""
    sch = Schedule(function)
    output, tiles, half = (sch.get_sblock(name) for name in ("output", "tiles", "half"))
    n, k, y, x = sch.get_loops(output)
    block, lane = sch.split(k, [None, lanes])
    row, y_in = sch.split(y, [None, OUT_TILE])
    sch.reorder(block, n, row, lane, y_in, x)
    outer = sch.fuse(block, n, row)
    sch.parallel(outer)
    sch.compute_at(tiles, outer, preserve_unit_loops=True)
    ty, xx, ki = loops_under(sch, tiles, outer)[-3:]
    column, x_in = sch.split(xx, [None, OUT_TILE])
    sch.reorder(column, ty, x_in, ki)
    sch.compute_at(half, column, preserve_unit_loops=True)
    _vectorize_innermost(sch, half, column)
    sch.unroll(ty)
    sch.unroll(x_in)
    sch.vectorize(ki)
    width = sch.get(x).extent.value
    run = max(d for d in range(1, 4 * lanes + 1) if width % d == 0)
    sch.vectorize(sch.split(x, [None, run])[1])
    return sch.mod["main"]
