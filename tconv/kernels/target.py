"""The facts of a CPU that kernels size themselves by: the f32 lanes of a
vector register, the number of registers, and whether it has an int8
dot-product instruction.

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
    int8_dot: bool = False
    """Whether the CPU has `vpdpbusd` (AVX-512 VNNI: 4 uint8 · int8 products
    summed into each int32 lane), which the int8 kernels are built on."""


def vector_unit_from_features(has_feature: Callable[[str], bool]) -> VectorUnit:
    """AVX-512: 16 lanes in 32 registers; AVX/AVX2: 8 in 16; otherwise (SSE,
    or a CPU LLVM does not describe): 4 in 16."""
    if has_feature("avx512f"):
        return VectorUnit(16, 32, int8_dot=has_feature("avx512vnni"))
    if has_feature("avx"):
        return VectorUnit(8, 16)
    return VectorUnit(4, 16)


@cache
def host_vector_unit() -> VectorUnit:
    """This machine's vector unit, from LLVM's view of its features."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return vector_unit_from_features(lambda name: bool(features.get(name)))
