"""Weight inheritance: a rewritten convolution's new weights, from the old ones.

A NAS rewrite of a trained network should not throw away what it learnt: each
rewrite starts its new weights from the nearest weights of its new form, so
the rewritten network computes nearly what the original did and retraining
starts close to it (see `NasPass.init`). Pure numpy; kernels are O x C/groups
x KH x KW as in the IR.

| rewrite | inherited weights | exact when |
|---|---|---|
| `tconv-group` | the kernel's block-diagonal part | the kernel is block-diagonal |
| `tconv-bottleneck-block` | Tucker-2 factors (HOSVD + HOOI) | width W ≥ both unfoldings' ranks |
| `tconv-depthwise-separable` | per input channel, the best rank-1 fit | each kernel[:, c] has rank 1 |
| `tconv-bottleneck` | the channels of largest L2 norm, as slices | the dropped channels output zeros |
| `tconv-split-output`, `tconv-unroll-conv` | row slices (their block-diagonal part) | the slice is block-diagonal |
| `tconv-spatial-strip` | the whole kernel, copied for every strip | always |

`tconv-prune-channels` always keeps its Fisher-ranked slices (unless
`init=random`); `tconv-blockswap` starts its candidates at initial values.

`tconv-bottleneck` keeps channels rather than SVD factors: it narrows a
convolution's output, and in these networks batch-norm and ReLU sit between it
and its consumers. A rotation of the channel space (what SVD gives) commutes
with neither the per-channel batch-norm nor the ReLU, so the consumers could
not absorb it; a subset of channels passes through both unchanged, so the kept
channels compute exactly what they did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dense_kernel(weight: np.ndarray, groups: int) -> np.ndarray:
    """The O x C x KH x KW kernel a `groups`-grouped one computes: its blocks on
    the diagonal, zeros elsewhere (so grouped kernels can be sliced and regrouped)."""
    if groups == 1:
        return weight
    out_channels, per_group = weight.shape[:2]
    rows = out_channels // groups
    dense = np.zeros((out_channels, per_group * groups, *weight.shape[2:]), weight.dtype)
    for group in range(groups):
        block = slice(group * rows, (group + 1) * rows)
        dense[block, group * per_group : (group + 1) * per_group] = weight[block]
    return dense


def grouped_kernel(dense: np.ndarray, groups: int) -> np.ndarray:
    """The block-diagonal part of a dense kernel, as the O x C/groups x KH x KW
    kernel of `groups` groups: the nearest grouped kernel (Frobenius norm)."""
    if groups == 1:
        return dense
    out_channels, in_channels = dense.shape[:2]
    rows, per_group = out_channels // groups, in_channels // groups
    return np.concatenate(
        [
            dense[g * rows : (g + 1) * rows, g * per_group : (g + 1) * per_group]
            for g in range(groups)
        ]
    )


def regroup(weight: np.ndarray, groups: int, new_groups: int, rows: slice = slice(None)) -> np.ndarray:
    """The output channels `rows` of a `groups`-grouped kernel, as a kernel of
    `new_groups` groups (`tconv-group`, and each part of `tconv-split-output`
    and `tconv-unroll-conv`): exact where the old blocks lie inside the new ones."""
    return grouped_kernel(dense_kernel(weight, groups)[rows], new_groups)


def take_channels(weight: np.ndarray, kept: Sequence[int], axis: int, groups: int = 1) -> np.ndarray:
    """Channels `kept` along `axis` (0: outputs, 1: inputs) of a parameter, a
    kernel of `groups` groups kept grouped: plain slices when ungrouped, the
    block-diagonal part of the sliced dense kernel otherwise."""
    if groups == 1:
        return np.take(weight, kept, axis=axis)
    return grouped_kernel(np.take(dense_kernel(weight, groups), kept, axis=axis), groups)


def largest_channels(weight: np.ndarray, count: int, groups: int = 1) -> list[int]:
    """The `count` output channels of largest weight L2 norm, in their original
    order; `count / groups` from each group, so a grouped kernel's kept rows
    stay in their groups (`tconv-bottleneck`)."""
    norms = np.linalg.norm(weight.reshape(weight.shape[0], -1), axis=1).reshape(groups, -1)
    per_group = count // groups
    return [
        group * norms.shape[1] + int(channel)
        for group, row in enumerate(norms)
        for channel in sorted(np.argsort(-row, kind="stable")[:per_group])
    ]


def _leading_vectors(matrix: np.ndarray, count: int) -> np.ndarray:
    """The `count` leading left singular vectors of `matrix` (m x count), with
    zero columns where `count` exceeds min(m, n): a wider factor adds nothing.

    They are the leading eigenvectors of the m x m Gram matrix, which is
    small beside the m x n unfolding (n = C·KH·KW) an SVD would factor."""
    values, vectors = np.linalg.eigh(matrix @ matrix.T)
    vectors = vectors[:, ::-1][:, : min(count, *matrix.shape)]
    return np.pad(vectors, ((0, 0), (0, count - vectors.shape[1])))


def tucker2(
    weight: np.ndarray, width: int, sweeps: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tucker-2 factors of an O x C x KH x KW kernel for `tconv-bottleneck-block`
    (1x1 C → W, KxK W → W, 1x1 W → O, nothing between them):
    (down W x C x 1 x 1, mid W x W x KH x KW, up O x W x 1 x 1).

    W ≈ core ×₀ U_out ×₁ U_in, with U_out (O x W) and U_in (C x W) the leading
    left singular vectors of the mode-0 and mode-1 unfoldings (HOSVD), refined
    by `sweeps` alternating HOOI sweeps; core = W ×₀ U_outᵀ ×₁ U_inᵀ. down =
    U_inᵀ, mid = core, up = U_out: since the three convolutions are linear and
    the 1x1 ones have no padding, they compose to the kernel (U_out U_outᵀ) W
    (U_in U_inᵀ), the original itself when W is at least both unfoldings' ranks.
    """
    kernel = weight.astype(np.float64)
    out_channels, in_channels = kernel.shape[:2]
    u_out = _leading_vectors(kernel.reshape(out_channels, -1), width)
    u_in = _leading_vectors(kernel.transpose(1, 0, 2, 3).reshape(in_channels, -1), width)
    # optimize=True: the contractions go to BLAS (a plain einsum loop takes
    # seconds per 512-channel kernel, and the search realises many candidates).
    for _ in range(sweeps):
        u_out = _leading_vectors(np.einsum("ocij,cb->obij", kernel, u_in, optimize=True).reshape(out_channels, -1), width)
        u_in = _leading_vectors(np.einsum("ocij,oa->caij", kernel, u_out, optimize=True).reshape(in_channels, -1), width)
    core = np.einsum("ocij,oa,cb->abij", kernel, u_out, u_in, optimize=True)
    down = u_in.T[:, :, None, None]
    up = u_out[:, :, None, None]
    return down.astype(np.float32), core.astype(np.float32), up.astype(np.float32)


def depthwise_separable(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(depthwise C x 1 x KH x KW, pointwise O x C x 1 x 1) for
    `tconv-depthwise-separable`: together they compute the kernel
    pointwise[o, c] · depthwise[c], rank one per input channel, so the best fit
    of each W[:, c, :, :] (O x KH·KW) is its leading singular triple σ u vᵀ:
    pointwise[:, c] = σ u, depthwise[c] = v."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    slices = weight.astype(np.float64).transpose(1, 0, 2, 3).reshape(in_channels, out_channels, -1)
    u, s, vt = np.linalg.svd(slices, full_matrices=False)
    pointwise = (u[:, :, 0] * s[:, :1]).T
    depthwise = vt[:, 0].reshape(in_channels, 1, kernel_h, kernel_w)
    return depthwise.astype(np.float32), pointwise[:, :, None, None].astype(np.float32)
