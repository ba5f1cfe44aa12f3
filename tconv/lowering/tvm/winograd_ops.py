"""The tensor-expression computes of a Winograd convolution's three kernels (see `winograd`)."""

from __future__ import annotations

import numpy as np
from tvm import te, tirx

from tconv.lowering.tvm.ops import F32, Epilogue
from tconv.lowering.tvm.winograd import A_T, B_T, OUT_TILE, POSITIONS, WINDOW, padded_tiles, tile_grid


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
