"""Inference batch-norm as a per-channel affine map, and folded into the
convolution before it.

Batch-norm computes (x - mean) / sqrt(var + epsilon) · scale + shift, which is
x·factor + offset with factor = scale / sqrt(var + epsilon) and offset = shift
- mean·factor. After a convolution y = conv(x, W) + bias, that is
conv(x, W·factor[o]) + (bias·factor + offset): the convolution with its
output channels rescaled and a new bias. Everything is computed in float64
and rounded once, as the reference executor does for the affine map.
"""

from __future__ import annotations

import numpy as np


def batch_norm_affine(
    scale: np.ndarray, shift: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """(factor, offset), each of length C, with batch_norm(x) = x·factor + offset
    per channel, in float32."""
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
    offset = shift.astype(np.float64) - mean.astype(np.float64) * factor
    return factor.astype(np.float32), offset.astype(np.float32)


def fold_batch_norm(
    weight: np.ndarray,
    bias: np.ndarray | None,
    scale: np.ndarray,
    shift: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    epsilon: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The weight (O x ...) and bias (O) of the layer equal to batch_norm(layer(x))
    for a convolution or dense layer with `weight` and `bias` (None: zero)."""
    factor = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + epsilon)
    offset = shift.astype(np.float64) - mean.astype(np.float64) * factor
    base = np.zeros(weight.shape[0]) if bias is None else bias.astype(np.float64)
    folded_weight = weight.astype(np.float64) * factor.reshape((-1,) + (1,) * (weight.ndim - 1))
    return folded_weight.astype(np.float32), (base * factor + offset).astype(np.float32)
