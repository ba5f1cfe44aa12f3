"""The networks of the GPU check: ResNet-34's 3×3 layers (dense, grouped,
depthwise) and a 1×1, at batch 1 and 64, and ResNet-34 CIFAR.

Shared by `prepare.py` (which compiles them here) and `run.py` (which runs
them on the GPU machine); both build the same IR and the same seeded
parameters from these definitions. Each case's artifacts: `<build>/<case>`
(the TVM backend's) and `<build>/<case>.llvm` (the LLVM backend's PTX).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tconv.frontends import zoo
from tconv.ir.builder import NetworkBuilder

SEED = 0


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    channels: int = 0
    size: int = 0
    kernel: int = 3
    groups: int = 1
    network: str = ""

    def build(self):
        if self.network:
            return zoo.build(self.network, "cifar10", batch=self.batch)
        b = NetworkBuilder(self.name, (self.batch, self.channels, self.size, self.size))
        pad = self.kernel // 2
        return b.finish(
            b.conv2d(b.input, self.channels, self.kernel, padding=pad, groups=self.groups, name="conv")
        )


LAYERS = (  # name, channels, size, kernel, groups
    ("conv3x3 64ch 56x56", 64, 56, 3, 1),
    ("conv3x3 128ch 28x28", 128, 28, 3, 1),
    ("conv3x3 256ch 14x14", 256, 14, 3, 1),
    ("conv3x3 512ch 7x7", 512, 7, 3, 1),
    ("conv3x3 64ch 56x56 g8", 64, 56, 3, 8),
    ("conv3x3 64ch 56x56 g16", 64, 56, 3, 16),
    ("conv3x3 64ch 56x56 g32", 64, 56, 3, 32),
    ("depthwise 64ch 56x56", 64, 56, 3, 64),
    ("conv1x1 256ch 14x14", 256, 14, 1, 1),
)

CASES = tuple(
    Case(f"{name} b{batch}", batch, channels, size, kernel, groups)
    for batch in (1, 64) for name, channels, size, kernel, groups in LAYERS
) + (
    Case("resnet34 cifar10 b1", 1, network="resnet34"),
    Case("resnet34 cifar10 b64", 64, network="resnet34"),
)


def cases_matching(pattern: str) -> list[Case]:
    """The cases whose names match the regular expression `pattern` (an `--only` option)."""
    return [case for case in CASES if re.search(pattern, case.name)]


BACKENDS = ("tvm", "llvm")


def directory_name(case: Case, backend: str = "tvm") -> str:
    """The case's artifact directory under the build directory, for `backend`."""
    name = case.name.replace(" ", "_")
    return name if backend == "tvm" else f"{name}.{backend}"


def backend_list(text: str) -> list[str]:
    """The comma-separated backends of a `--backends` option, checked."""
    backends = [b for b in text.split(",") if b]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        raise SystemExit(f"--backends: expected some of {', '.join(BACKENDS)}, got {text!r}")
    return backends
