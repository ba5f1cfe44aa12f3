"""Which convolutions of a quantised network run as int8 kernels, and how
their uint8 activations are stored: the TVM lowering's QDQ matching.

A convolution runs as one int8 kernel (`int8_conv`) when it reads a QDQ
activation and a QDQ weight (`tconv.kernels.qdq`) and its shape fits the
kernel (`Int8Conv`'s rules). The kernel absorbs what the float32 one would
(batch-norm folded into the requantisation, the residual of an add, the
activation) and, where the chain's result is read only by a per-tensor
`tconv.quantize` whose integers an int8 kernel reads, that quantize too:
its output is then uint8 (NHWC, the output channels padded to 16), the next
layers' input as it is (a float32 reader of the integers gets them
through a `dequantize` kernel). Otherwise its output is NCHW float32, which needs
the output channels in whole blocks of 16 (else the layer stays float32).
A residual that is a QDQ activation is read as its uint8 integers where
they are stored as the kernel's own output would be (NHWC, O16), else as
NCHW float32 (which only a float32 output can add). So a residual block
whose add reads the dequantized block input (`tconv-quantize`'s
`residuals=quantized`) runs in uint8 from end to end. In ONNX Runtime's QDQ
form a residual add reads two QDQ activations and is quantised again (its
QLinearAdd): such an add is a uint8 kernel of its own (`Int8Add`), and the
convolution before it writes uint8.

Every other `tconv.quantize` whose integers an int8 kernel reads becomes a
kernel writing them NHWC uint8, the channels padded to a multiple of 4, or
of 16 where a depthwise layer reads them; a grouped layer needs them
unpadded. A layer whose input is stored otherwise stays float32 (computing
its QDQ pairs as they are). The choices depend on each other (a layer that
stays float32 reads float32 values, so its producer cannot skip them), so
`plan_int8` drops layers until the rest agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from tconv.ir.ops import AddOp, Conv2dOp, DequantizeOp, ParamOp, QuantizeOp, shape_of
from tconv.ir.schedule import ScheduleError, parse_schedule
from tconv.ir.shapes import ShapeError
from tconv.kernels.fusion import KernelGroup
from tconv.kernels.packing import INT8_DEPTH, INT8_LANES, blocks
from tconv.kernels.qdq import QdqError, Uint8, activation_qdq, weight_qdq
from tconv.lowering.tvm.int8_conv import Int8Conv
from tconv.semantics.int8 import uint8_clamp


@dataclass
class Int8Layer:
    """A convolution's kernel group that runs as an int8 kernel."""

    group: KernelGroup
    quantize: QuantizeOp
    """The quantize whose integers it reads."""
    levels: Uint8
    """Its input's levels (of the dequantize it reads)."""
    weight: str
    weight_scales: tuple[float, ...]
    output: QuantizeOp | None = None
    """The quantize of its result it absorbs (a uint8 output), or None (NCHW float32)."""
    residual: QuantizeOp | None = None
    """The quantize whose integers it reads as its fused add's residual, or
    None (a float32 residual, or none)."""
    residual_levels: Uint8 | None = None

    @property
    def conv(self) -> Conv2dOp:
        return self.group.anchor  # type: ignore[return-value]

    @property
    def out_stored(self) -> int:
        """O16: the channels of its NHWC uint8 output (and of a uint8 residual)."""
        return blocks(shape_of(self.conv.weight)[0], INT8_LANES) * INT8_LANES

    def kernel(self, channels: int) -> Int8Conv:
        """Its kernel's shape, for an input of `channels` stored channels."""
        activation = self.group.activation_name
        residual = dict(residual=self.group.residual is not None)
        if self.output is None:
            if self.residual_levels is not None:
                residual["residual_levels"] = (self.residual_levels.scale, self.residual_levels.zero_point)
            return self._kernel(channels, activation=activation, nchw=True, **residual)
        out = Uint8.of(self.output)
        if self.residual_levels is not None:
            factor = float(np.float32(self.residual_levels.scale) / np.float32(out.scale))
            residual["residual_levels"] = (factor, self.residual_levels.zero_point)
        low, high = uint8_clamp(activation, out.scale, out.zero_point)
        return self._kernel(channels, out_zero_point=out.zero_point, low=low, high=high, **residual)

    def _kernel(self, channels: int, **output) -> Int8Conv:
        op = self.conv
        batch, _, height, width = shape_of(op.input)
        out_channels, _, kh, kw = shape_of(op.weight)
        ints = lambda attr: tuple(int(v) for v in attr.get_values())  # noqa: E731
        return Int8Conv(
            batch=batch, height=height, width=width, channels=channels, out_channels=out_channels,
            kernel=(kh, kw), groups=op.groups.value.data, strides=ints(op.strides), padding=ints(op.padding),
            dilations=ints(op.dilations), zero_point=self.levels.zero_point, **output,
        )

    def default_channels(self) -> int:
        """The stored channels a quantize kernel gives its input: C16 for a
        depthwise layer, else C4 (a grouped layer's C itself)."""
        channels = shape_of(self.conv.input)[1]
        groups, out_channels = self.conv.groups.value.data, shape_of(self.conv.weight)[0]
        lanes = INT8_LANES if groups > 1 and groups == out_channels else INT8_DEPTH
        return blocks(channels, lanes) * lanes

    def fits(self, channels: int) -> bool:
        """Whether its kernel reads an input of `channels` stored channels
        (with either kind of output); a grouped layer's unpadded."""
        try:
            kernel = self._kernel(channels, out_zero_point=0)
        except ShapeError:
            return False
        grouped = kernel.groups > 1 and not kernel.depthwise
        return channels == shape_of(self.conv.input)[1] if grouped else True

    def writes_float(self) -> bool:
        """Whether its float32 output fits the kernel (NCHW: output channels in blocks of 16)."""
        return shape_of(self.conv.weight)[0] % INT8_LANES == 0


@dataclass(frozen=True)
class Int8Add:
    """An add (and its activation) of two QDQ activations, quantised again
    (ONNX Runtime's QDQ form of a residual add: its QLinearAdd): a uint8
    kernel over the NHWC integers, O16 channels (`quantize_ops.int8_add`)."""

    group: KernelGroup
    inputs: tuple[QuantizeOp, QuantizeOp]
    levels: tuple[Uint8, Uint8]
    """The levels its two operands are read with (their dequantizes')."""
    output: QuantizeOp

    @property
    def stored(self) -> int:
        return blocks(shape_of(self.group.anchor.lhs)[1], INT8_LANES) * INT8_LANES


@dataclass
class Int8Plan:
    """The int8 layers and adds of one network, by their anchor op, and the
    stored channels of every uint8 tensor, by the quantize that writes it."""

    layers: dict[Conv2dOp, Int8Layer] = field(default_factory=dict)
    adds: dict[AddOp, Int8Add] = field(default_factory=dict)
    stored: dict[QuantizeOp, int] = field(default_factory=dict)
    integer_reads: set[tuple[Operation, int]] = field(default_factory=set)
    """(op, operand index) of every read an int8 kernel makes of a
    dequantize's integers: an int8 layer's input, the residual of its add,
    an int8 add's operands."""

    def reads_integers(self, value: SSAValue) -> bool:
        """Whether every reader of `value` (a dequantize's result) is an int8
        kernel reading its integers, so that the float32 value is never computed."""
        return all((use.operation, use.index) in self.integer_reads for use in value.uses)


def _candidate(group: KernelGroup) -> Int8Layer | None:
    """The int8 layer of `group`, where its ops and shapes alone allow one."""
    op = group.anchor
    if not isinstance(op, Conv2dOp):
        return None
    try:
        if op.schedule is not None and parse_schedule(op.schedule).layouts.packed:
            return None  # its neighbours expect float32 channel blocks
        pair = activation_qdq(op.input)
        weight = weight_qdq(op.weight)
        if pair is None or weight is None:
            return None
        quantize, dequantize = pair
        Uint8.of(quantize)
        layer = Int8Layer(group, quantize, Uint8.of(dequantize), *weight)
    except (QdqError, ScheduleError):
        return None  # the float32 lowering reports what it cannot take
    operands = [op.bias] if op.bias is not None else []
    if group.batch_norm is not None:
        operands += list(group.batch_norm.operands[1:])
    if not all(isinstance(v.owner, ParamOp) for v in operands):
        return None
    return layer if layer.fits(layer.default_channels()) else None


def _residual_read(layer: Int8Layer) -> tuple[QuantizeOp, Uint8, int] | None:
    """The quantize, levels and add operand of a residual that is a per-tensor
    QDQ activation (which the kernel may read as integers), or None."""
    add, residual = layer.group.add, layer.group.residual
    if add is None or add.lhs == add.rhs:
        return None
    pair = activation_qdq(residual)
    if pair is None:
        return None
    try:
        Uint8.of(pair[0])
        levels = Uint8.of(pair[1])
    except QdqError:
        return None
    return pair[0], levels, 0 if add.lhs == residual else 1


def _absorbed_quantize(layer: Int8Layer, plan: Int8Plan) -> QuantizeOp | None:
    """The quantize `layer`'s kernel can absorb (module docstring), or None."""
    result = layer.group.result
    if (layer.group.residual is not None and layer.residual is None) or not result.has_one_use():
        return None  # a float32 residual is read NCHW, by a float32 output only
    quantize = result.get_user_of_unique_use()
    if not isinstance(quantize, QuantizeOp) or quantize not in plan.stored:
        return None
    try:
        Uint8.of(quantize)
    except QdqError:
        return None
    if not all(isinstance(u.operation, DequantizeOp) for u in quantize.output.uses):
        return None  # the integers themselves are a result of the network
    return quantize


def _add_candidate(group: KernelGroup) -> Int8Add | None:
    """The int8 add of `group`: an add of two per-tensor QDQ activations of
    images whose result (after its activation) only a per-tensor quantize reads."""
    add, result = group.anchor, group.result
    if not isinstance(add, AddOp) or add.lhs == add.rhs or len(shape_of(add.lhs)) != 4 or not result.has_one_use():
        return None
    pairs = [activation_qdq(operand) for operand in (add.lhs, add.rhs)]
    output = result.get_user_of_unique_use()
    if None in pairs or not isinstance(output, QuantizeOp):
        return None
    try:
        for quantize, _ in pairs:
            Uint8.of(quantize)
        Uint8.of(output)
        levels = (Uint8.of(pairs[0][1]), Uint8.of(pairs[1][1]))
    except QdqError:
        return None
    return Int8Add(group, (pairs[0][0], pairs[1][0]), levels, output)


def plan_int8(function: func.FuncOp, groups: list[KernelGroup]) -> Int8Plan:
    """The int8 layers of `function`, whose kernels are `groups` (module docstring)."""
    plan = Int8Plan(
        {layer.conv: layer for layer in map(_candidate, groups) if layer is not None},
        {add.group.anchor: add for add in map(_add_candidate, groups) if add is not None},
    )
    while True:
        layers, adds = list(plan.layers.values()), list(plan.adds.values())
        residuals = {layer.conv: _residual_read(layer) for layer in layers}
        needs: dict[QuantizeOp, list[int]] = {}
        for layer in layers:
            needs.setdefault(layer.quantize, []).append(layer.default_channels())
            residual = residuals[layer.conv]
            if residual is not None:
                needs.setdefault(residual[0], []).append(layer.out_stored)
        for add in adds:
            for quantize in add.inputs:
                needs.setdefault(quantize, []).append(add.stored)
        plan.stored = {quantize: max(channels) for quantize, channels in needs.items()}
        plan.integer_reads = {(layer.conv, 0) for layer in layers}
        plan.integer_reads |= {(add.group.anchor, index) for add in adds for index in (0, 1)}
        for layer in layers:
            residual = residuals[layer.conv]
            layer.residual = layer.residual_levels = None
            if residual is not None and plan.stored[residual[0]] == layer.out_stored:
                layer.residual, layer.residual_levels, index = residual
                plan.integer_reads.add((layer.group.add, index))
        for layer in layers:
            layer.output = _absorbed_quantize(layer, plan)
        for layer in layers:
            if layer.output is not None:
                plan.stored[layer.output] = layer.out_stored
        for add in adds:
            plan.stored[add.output] = add.stored
        dropped = [
            layer.conv for layer in layers
            if not layer.fits(plan.stored[layer.quantize])
            or (layer.output is None and not layer.writes_float())
            or (layer.residual is not None and plan.stored[layer.residual] != layer.out_stored)
        ]
        dropped += [
            add.group.anchor for add in adds
            if any(plan.stored[quantize] != add.stored for quantize in add.inputs)
            or not all(isinstance(u.operation, DequantizeOp) for u in add.output.output.uses)
        ]
        if not dropped:
            return plan
        for op in dropped:
            plan.layers.pop(op, None)
            plan.adds.pop(op, None)
