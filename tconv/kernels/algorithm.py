"""Which algorithm computes a convolution: the one place that decides it.

A convolution's schedule may name its algorithm (`algorithm = "winograd"`,
see `tconv.ir.schedule`); where it does not, the backend runs the default
this module gives for the convolution's shape and the target:

- `winograd` (F(4×4, 3×3), `tconv.kernels.winograd`) where it applies and
  the target's measured thresholds say it pays: on a CPU
  `winograd.cpu_default_tile` (`$TCONV_CPU_WINOGRAD` 0 turns it off), on a
  GPU `winograd.gpu_default_tile`, one group only (`$TCONV_GPU_WINOGRAD` 0
  turns it off, 1 makes it every convolution it applies to);
- else, on a CPU, `gspc` where the blocking chosen for the shape holds
  output columns in the vector lanes (`blocking.conv2d_blocking`,
  `blocking.depthwise_blocking`), else `direct` (a 1×1 convolution may run
  the direct template's pointwise kernel, `blocking.runs_pointwise`);
- on a GPU, `direct`;
- `sparse` (`tconv.lowering.tvm.sparse_conv`) only for a convolution that
  declares `nonzeros` (`tconv-sparsify`), on a CPU, where its density is at
  most `SPARSE_DENSITY` (`sparse_pays`), before any of the above.

Only a convolution without a schedule gets Winograd by default: a loop
schedule is the direct template's, or GSPC's. The TVM lowering asks
`default_algorithm` (and `winograd_tile` for the tile), and so do the
tuners, for what they measure as the backend's own choice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

from tconv.ir.ops import Conv2dOp, shape_of
from tconv.ir.schedule import ALGORITHMS, DIRECT, GSPC, SPARSE, WINOGRAD, ActivationLayouts, ConvSchedule, ScheduleError
from tconv.ir.shapes import window_output
from tconv.kernels import blocking, winograd
from tconv.kernels.target import VectorUnit

__all__ = [
    "ALGORITHMS", "DIRECT", "GSPC", "SPARSE", "WINOGRAD", "ConvShape", "check_algorithm", "conv_shape",
    "default_algorithm", "sparse_pays", "winograd_tile",
]


@dataclass(frozen=True)
class ConvShape:
    """What a convolution computes, as far as choosing its kernel goes."""

    input: tuple[int, ...]
    """N, C, H, W."""
    out_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, ...]
    padding: tuple[int, ...]
    """Top, left, bottom, right."""
    dilations: tuple[int, ...]
    groups: int

    @property
    def out_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def in_group(self) -> int:
        return self.input[1] // self.groups

    def _out(self, axis: int) -> int:
        """The output extent along spatial axis 0 (rows) or 1 (columns)."""
        return window_output(
            self.input[2 + axis], self.kernel[axis], self.strides[axis],
            self.padding[axis] + self.padding[2 + axis], self.dilations[axis],
        )

    @property
    def out_height(self) -> int:
        return self._out(0)

    @property
    def out_width(self) -> int:
        return self._out(1)

    @property
    def depthwise(self) -> bool:
        return self.input[1] == self.groups and self.out_group == 1

    @property
    def winograd_applies(self) -> bool:
        """Whether F(4×4, 3×3) computes this convolution (`winograd.applies`)."""
        return winograd.applies(self.kernel, self.strides, self.padding, self.dilations)


def conv_shape(op: Conv2dOp) -> ConvShape:
    """The shape of a `tconv.conv2d`."""
    out_channels, _, kh, kw = shape_of(op.weight)
    return ConvShape(
        tuple(shape_of(op.input)), out_channels, (kh, kw), tuple(op.strides.get_values()),
        tuple(op.padding.get_values()), tuple(op.dilations.get_values()), op.groups.value.data,
    )


def _pairs(values: Sequence[int]) -> str:
    return "x".join(map(str, values))


def check_algorithm(schedule: ConvSchedule, shape: ConvShape, nonzeros: int | None = None) -> None:
    """A ScheduleError where the schedule's algorithm cannot compute a
    convolution of `shape` (declaring `nonzeros`) on any target (the
    verifier's check; what a backend lacks it says itself)."""
    if schedule.algorithm == SPARSE and nonzeros is None:
        raise ScheduleError(
            "schedule: algorithm sparse runs on the nonzero weights a convolution declares (nonzeros, set by "
            "tconv-sparsify); this one declares none"
        )
    if schedule.algorithm == WINOGRAD and not shape.winograd_applies:
        raise ScheduleError(
            f"schedule: algorithm winograd computes 3x3 convolutions of stride 1, dilation 1 and padding 1 on "
            f"every side; this one is {_pairs(shape.kernel)}, stride {_pairs(shape.strides)}, padding "
            f"{', '.join(map(str, shape.padding))}, dilation {_pairs(shape.dilations)}"
        )


def _gpu_winograd() -> str | None:
    return os.environ.get("TCONV_GPU_WINOGRAD")


def winograd_tile(shape: ConvShape, unit: VectorUnit | None, default: bool = True):
    """The product tile of `shape` computed as a Winograd convolution on a
    CPU of vector unit `unit` (a `winograd.RegisterTile`, or a
    `winograd.MatmulTile` where the CPU runs the GPU's kernels
    unscheduled: a group's output channels not a multiple of the vector,
    one group) or on a GPU (`unit` None: a `winograd.MatmulTile`); None
    where the target does not run it. `default`: the tile of a convolution
    that runs as Winograd by default (None where it does not); else of one
    that asks for Winograd (None where the target has no kernel for it)."""
    if not shape.winograd_applies:
        return None
    batch, in_channels, height, width = shape.input
    if unit is not None:
        if default:
            return winograd.cpu_default_tile(
                batch, in_channels, shape.out_channels, shape.groups, height, width, unit
            )
        rows, columns = winograd.tile_grid(height, width)
        tile = winograd.register_tile(batch * rows * columns, shape.out_group, unit)
        if tile is not None or shape.groups != 1:
            return tile
        return winograd.matmul_tile(shape.out_channels, in_channels)
    if shape.groups != 1:
        return None
    forced = _gpu_winograd()
    if default and forced == "0":
        return None
    tile = winograd.gpu_default_tile(batch, in_channels, shape.out_channels, height, width) if forced != "1" else None
    if default and forced != "1":
        return tile
    return tile or winograd.matmul_tile(shape.out_channels, in_channels)


def default_algorithm(shape: ConvShape, unit: VectorUnit | None) -> str:
    """The algorithm a convolution of `shape` without a schedule runs by on
    a CPU of vector unit `unit`, or on a GPU (`unit` None); see the module
    docstring."""
    if winograd_tile(shape, unit) is not None:
        return WINOGRAD
    if unit is None:
        return DIRECT
    return GSPC if default_blocking(shape, unit).vector == "ow" else DIRECT


SPARSE_DENSITY = 0.1
"""The densest convolution that runs sparse without a schedule asking: on
the CPUs measured (docs/benchmarks.md, "Weight sparsity") the sparse kernel
beat the dense one on ResNet's 3×3 layers below 10–20% density, the
crossover depending on the layer; a schedule's `algorithm` overrides it."""


def sparse_pays(shape: ConvShape, nonzeros: int | None) -> bool:
    """Whether a convolution of `shape` declaring `nonzeros` runs sparse by
    default on a CPU (a GPU has no sparse kernel)."""
    return nonzeros is not None and nonzeros <= SPARSE_DENSITY * shape.in_group * shape.kernel[0] * shape.kernel[1]


def default_blocking(
    shape: ConvShape, unit: VectorUnit, algorithm: str | None = None, layouts: ActivationLayouts | None = None,
) -> blocking.ConvBlocking:
    """The blocking a CPU gives a direct or GSPC convolution of `shape`
    without a loop schedule: `algorithm`'s, or (None) the one the models
    choose. With an activation in channel blocks (`layouts`, ungrouped or
    depthwise), the direct template's: a depthwise one's vector is the
    layout's block, an ungrouped one's channel block a multiple of its
    output's block (where a 1×1 convolution on a small image runs the
    pointwise kernel instead, `blocking.runs_pointwise` says so)."""
    if layouts is not None and layouts.packed:
        if shape.depthwise:
            block = layouts.input_block or layouts.output_block
            return replace(blocking.depthwise_channel_blocking(shape.out_channels, shape.out_width, unit), block=block)
        return blocking.conv2d_blocking(
            1, shape.out_channels, shape.out_width, unit, out_height=shape.out_height, kernel=shape.kernel,
            layout_block=layouts.output_block, in_shape=shape.input[1:], packed_input=layouts.input_block is not None,
        )
    columns = None if algorithm is None else algorithm == GSPC
    if shape.depthwise:
        return blocking.depthwise_blocking(
            shape.out_channels, shape.out_width, unit, out_height=shape.out_height, kernel=shape.kernel,
            columns=columns,
        )
    return blocking.conv2d_blocking(
        shape.groups, shape.out_group, shape.out_width, unit, out_height=shape.out_height, kernel=shape.kernel,
        in_shape=shape.input[1:], columns=columns,
    )
