"""Resource limits the verifier enforces (see "Resource limits" in ARCHITECTURE.md).

A network whose tensors nobody can allocate fails at verification, with a
located error, instead of deep inside numpy, the C runtime or a pass that
writes a parameter store. The caps are far above every network in the zoo;
the two element caps can be changed with environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tconv.errors import TconvError

MAX_DIMENSION = 2**31 - 1
"""The largest extent of one tensor dimension (the runtime indexes with int32)."""

MAX_TENSOR_ELEMENTS_ENV = "TCONV_MAX_TENSOR_ELEMENTS"
DEFAULT_MAX_TENSOR_ELEMENTS = 2**31 - 1
"""Elements of one tensor (8 GiB of f32); a ResNet-50 activation at batch 1
has under a million."""

MAX_PARAMS_ENV = "TCONV_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 2**28
"""Elements of all `tconv.param` tensors of a module together (1 GiB of f32);
VGG-16, the largest zoo network, has 138 million."""


def _cap(env: str, default: int) -> int:
    text = os.environ.get(env)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise TconvError(f"error: {env} must be a positive integer, got {text!r}")
    return value


def max_tensor_elements() -> int:
    return _cap(MAX_TENSOR_ELEMENTS_ENV, DEFAULT_MAX_TENSOR_ELEMENTS)


def max_params() -> int:
    return _cap(MAX_PARAMS_ENV, DEFAULT_MAX_PARAMS)


def shape_problem(shape: Sequence[int], max_elements: int) -> str | None:
    """Why a tensor of `shape` is over the limits, or None (dynamic extents,
    negative here, are not counted)."""
    elements = 1
    for extent in shape:
        if extent > MAX_DIMENSION:
            return f"dimension {extent} exceeds the limit of {MAX_DIMENSION}"
        if extent > 0:
            elements *= extent
    if elements > max_elements:
        return (
            f"{elements} elements exceed the limit of {max_elements} per tensor "
            f"(set {MAX_TENSOR_ELEMENTS_ENV} to raise it)"
        )
    return None
