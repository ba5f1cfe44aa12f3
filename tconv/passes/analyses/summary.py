"""Per-layer summary of a network: parameters, work and activation memory.

One row per tconv op that computes a tensor (every op but `tconv.param`), in
program order. Counting conventions, chosen to match what papers report:

- **parameters**: learnable entries of the parameter store that the op reads,
  each counted once (at its first use); batch-norm running mean and variance
  are statistics, not parameters. The total equals `parameter_count`.
- **MACs**: multiply-accumulates of `conv2d` (N·O·P·Q·(C/G)·KH·KW) and `dense`
  (N·M·K) only; every other op has 0 MACs.
- **FLOPs**: 2 per MAC, plus per output element: 1 for a bias add; 2 for
  `batch_norm` (a multiply and an add, once mean, variance and epsilon are
  folded into the scale and shift); 1 for `relu`, `relu6` and `add`; one per
  window element for the pools (KH·KW for `max_pool2d` and `avg_pool2d`, H·W
  for `global_avg_pool`). Data movement (`flatten`, `concat`,
  `slice`, `slice_channels`, `channel_shuffle`) costs 0.
- **parameter bytes**: what the parameters take as the network stores them:
  4 per f32 entry, 1 per entry of a weight read through `tconv.quantize`
  (int8 in the compiled artifact and in a QDQ ONNX export), and for a
  convolution that declares `nonzeros` its sparse form where smaller: 8 per
  kept entry (an f32 value and an int32 offset) in every output channel.
- **activation bytes**: the op's result tensor as f32 (4 bytes per element).

All counts are for the batch the IR declares.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from math import prod

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    Conv2dOp,
    DenseOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    ParamOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    TconvOp,
    shape_of,
)
from tconv.ir.shapes import Shape

BYTES_PER_ELEMENT = 4
"""Activations and parameters are f32."""

FLOPS_PER_ELEMENT: dict[type[TconvOp], int] = {
    BatchNormOp: 2,
    ReluOp: 1,
    Relu6Op: 1,
    AddOp: 1,
}
"""FLOPs per output element of the elementwise ops (see the module docstring)."""

FLOPS_CONVENTION = (
    "FLOPs = 2 x MACs + bias adds + 2/element for batch_norm, 1/element for relu, relu6, add, "
    "and 1 per window element for pools"
)
"""The counting rule in one line, printed under every summary table."""


@dataclass(frozen=True)
class LayerSummary:
    """One op's row."""

    name: str
    kind: str
    output_shape: Shape
    parameters: int
    macs: int
    flops: int
    parameter_bytes: int = 0

    @property
    def activation_bytes(self) -> int:
        return prod(self.output_shape) * BYTES_PER_ELEMENT


@dataclass(frozen=True)
class NetworkSummary:
    """The rows of a network, and their totals."""

    name: str
    input_shapes: tuple[Shape, ...]
    layers: tuple[LayerSummary, ...]
    statistics: int
    """Batch-norm running means and variances: stored, but not learnable."""

    @property
    def parameters(self) -> int:
        return sum(layer.parameters for layer in self.layers)

    @property
    def parameter_bytes(self) -> int:
        return sum(layer.parameter_bytes for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        """All results together, as if none were freed (an upper bound on the arena)."""
        return sum(layer.activation_bytes for layer in self.layers)

    @property
    def largest_activation(self) -> LayerSummary | None:
        """The layer with the largest single result (the first, on a tie)."""
        return max(self.layers, key=lambda layer: layer.activation_bytes, default=None)


def _work(op: TconvOp) -> tuple[int, int]:
    """(MACs, FLOPs) of one op, by the rules of the module docstring."""
    elements = prod(shape_of(op.results[0]))
    if isinstance(op, Conv2dOp | DenseOp):
        # Each output element reads one weight row: (C/G)·KH·KW for conv2d, K for dense.
        macs = elements * prod(shape_of(op.weight)[1:])
        bias_adds = elements if op.bias is not None else 0
        return macs, 2 * macs + bias_adds
    if isinstance(op, MaxPool2dOp | AvgPool2dOp):
        return 0, elements * prod(op.kernel.get_values())
    if isinstance(op, GlobalAvgPoolOp):
        return 0, elements * prod(shape_of(op.input)[2:])
    return 0, elements * FLOPS_PER_ELEMENT.get(type(op), 0)


def _statistics(module: ModuleOp) -> set[ParamOp]:
    """The param ops that hold batch-norm running statistics."""
    return {
        operand.owner
        for op in module.walk()
        if isinstance(op, BatchNormOp)
        for operand in (op.mean, op.var)
        if isinstance(operand.owner, ParamOp)
    }


def _stored_bytes(op: TconvOp, param: ParamOp) -> int:
    """The bytes `param` takes as `op`, its first reader, makes it stored (module docstring)."""
    shape = shape_of(param.result)
    if isinstance(op, QuantizeOp):  # a weight stored as its 8-bit levels
        return prod(shape)
    dense = prod(shape) * BYTES_PER_ELEMENT
    if isinstance(op, Conv2dOp) and op.weight_nonzeros is not None and param is op.weight.owner:
        return min(dense, shape[0] * op.weight_nonzeros * 8)
    return dense


def _param_operands(op: Operation) -> list[ParamOp]:
    return [o.owner for o in op.operands if isinstance(o.owner, ParamOp)]


def _layer_name(op: TconvOp, kind_counts: dict[str, int]) -> str:
    """`layer1.0.conv1` for an op reading `layer1.0.conv1.weight`; otherwise
    the op kind and its running number among ops of that kind (`relu_12`)."""
    for param in _param_operands(op):
        if param.param_name.endswith(".weight"):
            return param.param_name.removesuffix(".weight")
    kind = op.short_name()
    number = kind_counts.get(kind, 0)
    kind_counts[kind] = number + 1
    return f"{kind}_{number}"


def summarize(module: ModuleOp) -> NetworkSummary:
    """The summary of a verified module."""
    statistics = _statistics(module)
    counted: set[ParamOp] = set()
    kind_counts: dict[str, int] = {}
    layers: list[LayerSummary] = []
    for op in module.walk():
        if not isinstance(op, TconvOp):
            continue
        parameters = parameter_bytes = 0
        for param in _param_operands(op):
            # A shared parameter belongs to its first user, so the total counts it once.
            if param in statistics or param in counted:
                continue
            counted.add(param)
            parameters += prod(shape_of(param.result))
            parameter_bytes += _stored_bytes(op, param)
        macs, flops = _work(op)
        layers.append(
            LayerSummary(
                name=_layer_name(op, kind_counts),
                kind=op.short_name(),
                output_shape=shape_of(op.results[0]),
                parameters=parameters,
                parameter_bytes=parameter_bytes,
                macs=macs,
                flops=flops,
            )
        )
    functions = [op for op in module.walk() if isinstance(op, func.FuncOp)]
    return NetworkSummary(
        name=functions[0].sym_name.data if functions else "module",
        input_shapes=tuple(shape_of(arg) for f in functions[:1] for arg in f.args),
        layers=tuple(layers),
        statistics=sum(prod(shape_of(p.result)) for p in statistics),
    )


def _shape(shape: Shape) -> str:
    return "x".join(map(str, shape))


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.2f} MB"


def format_summary(summary: NetworkSummary) -> str:
    """An aligned table, one row per layer, then the totals and the counting rule."""
    header = ("layer", "op", "output", "params", "MACs", "FLOPs", "act. bytes")
    rows = [
        (
            layer.name,
            layer.kind,
            _shape(layer.output_shape),
            f"{layer.parameters:,}",
            f"{layer.macs:,}",
            f"{layer.flops:,}",
            f"{layer.activation_bytes:,}",
        )
        for layer in summary.layers
    ]
    total = (
        "total",
        "",
        "",
        f"{summary.parameters:,}",
        f"{summary.macs:,}",
        f"{summary.flops:,}",
        f"{summary.activation_bytes:,}",
    )
    widths = [max(len(row[i]) for row in (header, *rows, total)) for i in range(len(header))]
    text_columns = 3  # name, op and shape are left-aligned; the counts right-aligned

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.ljust(width) if i < text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(tuple("-" * w for w in widths)))
    inputs = ", ".join(_shape(s) for s in summary.input_shapes) or "none"
    batch = summary.input_shapes[0][0] if summary.input_shapes else 1
    largest = summary.largest_activation
    out = [
        f"network {summary.name}: input {inputs} f32, {len(summary.layers)} layers",
        "",
        line(header),
        rule,
        *(line(row) for row in rows),
        rule,
        line(total),
        "",
        f"parameters   {summary.parameters:,} learnable "
        f"({_megabytes(summary.parameter_bytes)} stored)"
        f" + {summary.statistics:,} batch-norm statistics",
        f"MACs         {summary.macs / 1e9:,.3f} GMAC (conv2d and dense multiply-accumulates)",
        f"FLOPs        {summary.flops / 1e9:,.3f} GFLOP",
        f"activations  {_megabytes(summary.activation_bytes)} in all, largest "
        + (
            f"{_megabytes(largest.activation_bytes)} "
            f"({largest.name}, {_shape(largest.output_shape)})"
            if largest
            else "none"
        ),
        "",
        textwrap.fill(
            f"Counts are per forward pass at batch {batch}; 1 MB = 10^6 bytes; "
            f"{FLOPS_CONVENTION}.",
            width=max(len(rule), 80),
        ),
    ]
    return "\n".join(out) + "\n"
