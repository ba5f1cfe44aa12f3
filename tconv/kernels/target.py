"""The facts of a CPU that kernels size themselves by: the f32 lanes of a
vector register, the number of registers, and the instruction its int8
kernels form their dot products with.

Both backends ask the same question (`vector_unit_from_features`); they
differ only in how they learn the features: TVM from a target
(`tconv.lowering.tvm.target.vector_unit`, any `-mcpu`), llvmlite from the
host (`host_vector_unit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class VectorUnit:
    lanes: int
    """float32 lanes of one vector register."""
    registers: int
    int8_dot: str | None = None
    """The instruction the int8 kernels build their dot products on
    (`tconv.lowering.tvm.int8_conv`): VPDPBUSD (AVX-512 VNNI: 4 uint8 ·
    int8 products summed into each int32 lane), VPMADDWD (AVX2: 2 int16 ·
    int16 products summed into each int32 lane, exact for widened uint8 and
    int8, where AVX2's `vpmaddubsw` saturates), or None (LLVM's own
    vectorisation)."""


VPDPBUSD = "vpdpbusd"
VPMADDWD = "vpmaddwd"
INT8_DOTS = (VPDPBUSD, VPMADDWD)


def vector_unit_from_features(has_feature: Callable[[str], bool]) -> VectorUnit:
    """AVX-512: 16 lanes in 32 registers; AVX/AVX2: 8 in 16; otherwise (SSE,
    or a CPU LLVM does not describe): 4 in 16."""
    dot = VPDPBUSD if has_feature("avx512vnni") else VPMADDWD if has_feature("avx2") else None
    if has_feature("avx512f"):
        return VectorUnit(16, 32, int8_dot=dot)
    if has_feature("avx"):
        return VectorUnit(8, 16, int8_dot=dot)
    return VectorUnit(4, 16)


@cache
def host_vector_unit() -> VectorUnit:
    """This machine's vector unit, from LLVM's view of its features."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return vector_unit_from_features(lambda name: bool(features.get(name)))
