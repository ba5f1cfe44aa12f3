"""The tensor-expression computes of a Winograd convolution's three kernels
(see `winograd`): the GPU's, tiles innermost, then the CPU's, channels innermost."""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from tconv.kernels.packing import blocks
from tconv.kernels.winograd import A_T, B_T, OUT_TILE, POSITIONS, WINDOW, padded_tiles, tile_grid
from tconv.lowering.tvm.ops import F32, Epilogue


def _matrix(values: np.ndarray, row: tirx.PrimExpr, column: tirx.PrimExpr) -> tirx.PrimExpr:
    """values[row, column] as an expression: a chain of selects that folds to
    a constant once the indices are constants (the schedules unroll them)."""
    result = tirx.const(0.0, F32)
    for (i, j), value in np.ndenumerate(values):
        if value != 0:
            result = tirx.Select(tirx.all(row == i, column == j), tirx.const(float(value), F32), result)
    return result


def input_transform(data: te.Tensor, tile_align: int) -> te.Tensor:
    """V (POSITIONS × C × tiles rounded up to `tile_align`) of data N × C × H × W."""
    n, channels, height, width = (int(d) for d in data.shape)
    rows, columns = tile_grid(height, width)
    tiles = n * rows * columns
    padded = padded_tiles(n, height, width, tile_align)

    def window(c, p, i, j):
        image, rest = p // (rows * columns), p % (rows * columns)
        y = rest // columns * OUT_TILE + i - 1
        x = rest % columns * OUT_TILE + j - 1
        inside = tirx.all(p < tiles, y >= 0, y < height, x >= 0, x < width)
        return tirx.if_then_else(inside, data[image, c, y, x], tirx.const(0.0, F32))

    d = te.compute((channels, padded, WINDOW, WINDOW), window, name="window")
    i = te.reduce_axis((0, WINDOW), name="i")
    j = te.reduce_axis((0, WINDOW), name="j")
    return te.compute(
        (POSITIONS, channels, padded),
        lambda e, c, p: te.sum(
            _matrix(B_T, e // WINDOW, i) * d[c, p, i, j] * _matrix(B_T, e % WINDOW, j), axis=[i, j]
        ),
        name="transform",
    )


def batched_matmul(u: te.Tensor, v: te.Tensor) -> te.Tensor:
    """M[e, k, p] = Σ_c U[e, c, k] · V[e, c, p]."""
    positions, channels, out_channels = (int(d) for d in u.shape)
    tiles = int(v.shape[2])
    c = te.reduce_axis((0, channels), name="c")
    return te.compute(
        (positions, out_channels, tiles), lambda e, k, p: te.sum(u[e, c, k] * v[e, c, p], axis=c), name="matmul"
    )


def output_transform(m: te.Tensor, batch: int, height: int, width: int,
                     epilogue: Epilogue = Epilogue()) -> te.Tensor:
    """Y (batch × K × height × width) of M, through `epilogue`. The sum over
    the 36 products is written out (no reduction axis), so that the schedule
    computes a tile's 16 outputs from the same 36 values in registers."""
    out_channels = int(m.shape[1])
    rows, columns = tile_grid(height, width)

    def inverse(n, k, y, x):
        p = (n * rows + y // OUT_TILE) * columns + x // OUT_TILE
        terms = [
            _matrix(A_T, y % OUT_TILE, e1) * m[e1 * WINDOW + e2, k, p] * _matrix(A_T, x % OUT_TILE, e2)
            for e1 in range(WINDOW) for e2 in range(WINDOW)
        ]
        return epilogue.apply(sum(terms[1:], terms[0]), (n, k, y, x), k)

    return te.compute((batch, out_channels, height, width), inverse, name="output")


# Channels innermost: the CPU's kernels (schedule_winograd_cpu) ----------------------
#
# V[e, p, c] and M[e, p, k] keep a tile's channels together, so that the
# vector unit works on channels throughout (the product as the direct
# convolution's register tile: a vector of output channels × tiles). Each
# transform is separable (Bᵀ d B: rows, then columns) and written out term by
# term with the matrices' constants, zeros left out.


def _combine(coefficients: np.ndarray, values: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """Σ coefficients[i] · values[i] over the non-zero coefficients, ±1 without a multiply."""
    terms = [
        value if a == 1 else -value if a == -1 else tirx.const(float(a), F32) * value
        for a, value in zip(coefficients, values) if a != 0
    ]
    return sum(terms[1:], terms[0])


def _row(matrix: np.ndarray, row: tirx.PrimExpr, values: list[tirx.PrimExpr]) -> tirx.PrimExpr:
    """Σ_j matrix[row, j] · values[j] as selects on `row`, which fold away
    once the schedule unrolls it into a constant."""
    result = _combine(matrix[-1], values)
    for r in range(len(matrix) - 2, -1, -1):
        result = tirx.Select(row == r, _combine(matrix[r], values), result)
    return result


def input_transform_channels(data: te.Tensor, lanes: int) -> te.Tensor:
    """V (POSITIONS × tiles × C rounded up to `lanes`) of data N × C × H × W,
    the channels past C zero. Three stages: `staged`, the 6 input rows of a
    tile row with its channels in blocks of `lanes` innermost (padding
    included); `across`, Bᵀ applied along each window row; `transform`, Bᵀ
    down the columns."""
    n, channels, height, width = (int(d) for d in data.shape)
    rows, columns = tile_grid(height, width)
    channel_blocks = blocks(channels, lanes)

    def stage(cb, r, i, xx, ci):
        y = r % rows * OUT_TILE + i - 1
        inside = tirx.all(cb * lanes + ci < channels, y >= 0, y < height, xx >= 1, xx <= width)
        return tirx.if_then_else(inside, data[r // rows, cb * lanes + ci, y, xx - 1], tirx.const(0.0, F32))

    staged = te.compute((channel_blocks, n * rows, WINDOW, columns * OUT_TILE + 2, lanes), stage, name="staged")
    across = te.compute(
        (channel_blocks, n * rows, columns, WINDOW, WINDOW, lanes),
        lambda cb, r, tx, i, e2, ci: _row(
            B_T, e2, [staged[cb, r, i, tx * OUT_TILE + j, ci] for j in range(WINDOW)]
        ),
        name="across",
    )
    return te.compute(
        (POSITIONS, n * rows * columns, channel_blocks * lanes),
        lambda e, p, c: _row(
            B_T, e // WINDOW,
            [across[c // lanes, p // columns, p % columns, i, e % WINDOW, c % lanes] for i in range(WINDOW)],
        ),
        name="transform",
    )


def grouped_matmul(v: te.Tensor, u: te.Tensor, groups: int) -> te.Tensor:
    """M[e, p, k] = Σ_c V[e, p, g·C/G + c] · U[e, c, k], g = k's group (U is
    POSITIONS × C/G × K, as `transform_weight` writes it)."""
    positions, tiles, _ = (int(d) for d in v.shape)
    group_channels, out_channels = int(u.shape[1]), int(u.shape[2])
    out_group = out_channels // groups
    c = te.reduce_axis((0, group_channels), name="c")
    return te.compute(
        (positions, tiles, out_channels),
        lambda e, p, k: te.sum(v[e, p, k // out_group * group_channels + c] * u[e, c, k], axis=c),
        name="matmul",
    )


def output_transform_channels(m: te.Tensor, batch: int, height: int, width: int, lanes: int,
                              epilogue: Epilogue = Epilogue()) -> te.Tensor:
    """Y (batch × K × height × width) of M (POSITIONS × tiles × K, K a
    multiple of `lanes`), through `epilogue`. `half`: Aᵀ along a tile's rows
    of products; `tiles`: Aᵀ down its columns, a tile row's outputs with
    their channels in blocks innermost; `output`: those in NCHW, with the
    epilogue."""
    out_channels = int(m.shape[2])
    rows, columns = tile_grid(height, width)
    half = te.compute(
        (out_channels // lanes, batch * rows, columns, WINDOW, OUT_TILE, lanes),
        lambda kb, r, tx, e1, x, ki: _row(
            A_T, x, [m[e1 * WINDOW + e2, r * columns + tx, kb * lanes + ki] for e2 in range(WINDOW)]
        ),
        name="half",
    )
    tiles = te.compute(
        (out_channels // lanes, batch * rows, OUT_TILE, columns * OUT_TILE, lanes),
        lambda kb, r, y, xx, ki: _row(
            A_T, y, [half[kb, r, xx // OUT_TILE, e1, xx % OUT_TILE, ki] for e1 in range(WINDOW)]
        ),
        name="tiles",
    )
    return te.compute(
        (batch, out_channels, height, width),
        lambda n, k, y, x: epilogue.apply(
            tiles[k // lanes, n * rows + y // OUT_TILE, y % OUT_TILE, x, k % lanes], (n, k, y, x), k
        ),
        name="output",
    )
