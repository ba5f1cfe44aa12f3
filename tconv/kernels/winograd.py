"""Winograd convolution F(4×4, 3×3): a 3×3, stride-1 convolution in 4× fewer multiplies.

Lavin & Gray's minimal filtering (points 0, ±1, ±2, ∞): each 4×4 tile of
the output comes from the 6×6 window of input around it as

    Y = Aᵀ [ Σ_c (G g G ᵀ) ⊙ (Bᵀ d B) ] A

so that, with the 36 products of a tile gathered by position, the
convolution becomes 36 independent matrix products over the channels. Three
kernels compute it (`winograd_ops`), each over NCHW and the intermediates
below (every tensor dense, float32):

- `input_transform`: V[e, c, p] = (Bᵀ d B)[e] for the window d of tile p
  (tiles numbered image, tile row, tile column; the padding and the tiles
  past the image's edge read zeros). V's tile axis is `tiles` rounded up to
  `tile_align`, its extra tiles zero, so the product needs no tail;
- `batched_matmul`: M[e, k, p] = Σ_c U[e, c, k] · V[e, c, p], where
  U[e, c, k] = (G g G ᵀ)[e] of the weight g[k, c] is computed once, from
  the parameters (`transform_weight`);
- `output_transform`: Y[n, k, y, x] = epilogue((Aᵀ M A)[y mod 4, x mod 4])
  of tile (n, y div 4, x div 4), the rows and columns past the image dropped.

That is the GPU's layout, tiles innermost. A CPU's kernels (`*_channels`,
`grouped_matmul`) keep the channels innermost instead, V[e, p, c] and
M[e, p, k], for its vector unit, and compute each group's product apart.

In fp32 the result differs from a direct convolution's by about 3e-6
(relative, in norm) on ResNet's layers, against 2e-7 for direct fp32.

This module is numpy alone: the weight transform runs where an artifact's
parameters are written, which may have no TVM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tconv.kernels.packing import blocks

OUT_TILE = 4
"""Output rows and columns per tile (the m of F(m×m, 3×3))."""

WINDOW = OUT_TILE + 2
"""Input rows and columns per tile's window."""

POSITIONS = WINDOW * WINDOW
"""Products per tile: the batch of the matrix products."""

B_T = np.array([
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
], np.float64)
G = np.array([
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
], np.float64)
A_T = np.array([
    [1, 1, 1, 1, 1, 0],
    [0, 1, -1, 2, -2, 0],
    [0, 1, 1, 4, 4, 0],
    [0, 1, -1, 8, -8, 1],
], np.float64)


def applies(kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int], dilations: Sequence[int]) -> bool:
    """Whether a convolution is one this algorithm computes: 3×3, stride 1,
    no dilation, padding 1 on every side (any groups: each group's product
    is its own; the GPU's kernels take one group)."""
    return (tuple(kernel) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1)
            and tuple(padding) == (1, 1, 1, 1))


def tile_grid(height: int, width: int) -> tuple[int, int]:
    """Tile rows and columns covering an output of `height` × `width`."""
    return blocks(height, OUT_TILE), blocks(width, OUT_TILE)


def padded_tiles(batch: int, height: int, width: int, tile_align: int) -> int:
    """The tile axis of V and M: every tile of the batch, rounded up to `tile_align`."""
    rows, columns = tile_grid(height, width)
    return blocks(batch * rows * columns, tile_align) * tile_align


def transform_weight(weight: np.ndarray) -> np.ndarray:
    """U (POSITIONS × C × K) of a K × C × 3 × 3 weight, computed in float64."""
    u = np.einsum("xi,kcij,yj->xyck", G, weight.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(POSITIONS, *u.shape[2:]), np.float32)
