"""`tconv-quantize`: post-training static int8 quantisation, in QDQ form.

    tconv-opt net.mlir -p 'tconv-quantize{calibration=percentile samples=128}' -o net_int8.mlir

Every selected convolution and dense layer reads its input and its weight
through a `tconv.quantize` → `tconv.dequantize` pair, the form ONNX calls
QDQ (what `onnxruntime.quantization.quantize_static` writes, and what
`tconv export` writes for these ops):

- weights: symmetric int8 (zero point 0, values in [-127, 127]), one scale
  per output channel (`weights=per-channel`, axis 0) or one for the whole
  tensor (`weights=per-tensor`): scale = max |w| / 127;
- activations (each layer's input): one scale and zero point per tensor,
  uint8 (`activation-type=uint8`, asymmetric) or int8 (`int8`, symmetric),
  from the range the tensor takes on calibration data: its minimum and
  maximum (`calibration=minmax`) or its `percentile`-th and
  (100 - `percentile`)-th percentiles (`calibration=percentile`), widened to
  hold 0 so that zero (padding) is exact.

Calibration runs the f32 network with the reference executor on `samples`
inputs of `data` (`digits`, an .npz or a folder of class subfolders, as
`tconv train --data` reads them: `tconv.train.data`), fitted to the network's
input. A value read by several layers gets one QDQ pair, shared. With
`residuals=quantized` (as `quantize_static` quantises an Add's inputs) a
residual add that reads such a value reads its dequantized value, and an
add that reads none (a projection block's) reads its residual through a
QDQ pair of its own, calibrated as the layers' inputs are: so a residual
block computes on integers, and the TVM lowering keeps it in int8 kernels.
With `residuals=float` adds read f32 values. Biases stay f32.

Scales and zero points are attributes of the QDQ ops, not parameter-store
entries (docs/ARCHITECTURE.md says why): the pass reads the store (weights,
and the network it calibrates) and writes nothing to it. A layer whose input
or weight already comes out of a `tconv.dequantize` keeps that one; a
network without an unquantised layer is an error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import PassFailedException

from tconv.errors import TconvError
from tconv.ir.ops import AddOp, DequantizeOp, QuantizeOp, shape_of
from tconv.passes.classical.fold_bn import select_layers
from tconv.passes.nas.store import active_store

GRANULARITIES = ("per-channel", "per-tensor")
CALIBRATIONS = ("minmax", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")
RESIDUALS = ("quantized", "float")
PERCENTILE_VALUES = 1 << 20
"""Most values of one tensor the percentile calibration keeps (a seeded sample of them)."""


def weight_qparams(weight: np.ndarray, per_channel: bool) -> tuple[list[float], list[int]]:
    """Symmetric int8 scales (max |w| / 127, per output channel or per
    tensor; 1 where the weights are all zero) and zero points (0)."""
    flat = np.abs(np.asarray(weight, np.float64)).reshape(len(weight) if per_channel else 1, -1)
    peak = flat.max(axis=1)
    scales = [float(np.float32(p / 127)) if p > 0 and np.float32(p / 127) > 0 else 1.0 for p in peak]
    return scales, [0] * len(scales)


def activation_qparams(low: float, high: float, activation_type: str) -> tuple[float, int]:
    """Scale and zero point of an activation in [low, high] (widened to hold 0)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if activation_type == "int8":
        peak = max(-low, high)
        scale = np.float32(peak / 127)
        return (float(scale), 0) if peak > 0 and scale > 0 else (1.0, 0)
    scale = np.float32((high - low) / 255)
    if not high > low or not scale > 0:
        return 1.0, 0
    zero_point = int(np.clip(np.rint(-low / np.float64(scale)), 0, 255))
    return float(scale), zero_point


def calibration_inputs(module: ModuleOp, data: str, samples: int) -> np.ndarray:
    """`samples` training inputs of `data`, fitted to the network's input."""
    from tconv.train.data import load_dataset

    function = _function(module)
    arguments = function.body.block.args
    if len(arguments) != 1:
        raise TconvError(f"calibration: the network takes {len(arguments)} inputs; calibration data feed one")
    outputs = function.function_type.outputs.data
    out_shape = shape_of(outputs[0]) if outputs else ()
    # Labels are not used; the class count only has to hold every label of the data.
    classes = out_shape[1] if len(out_shape) == 2 else 1 << 30
    dataset = load_dataset(data, shape_of(arguments[0]), classes)
    return dataset.x_train[:samples]


def _function(module: ModuleOp) -> func.FuncOp:
    from tconv.semantics.reference import single_function

    return single_function(module)


def observed_ranges(
    module: ModuleOp, params, inputs: np.ndarray, values: list[SSAValue], calibration: str, percentile: float
) -> dict[SSAValue, tuple[float, float]]:
    """(low, high) of each of `values` over the calibration inputs, run in
    chunks by the reference executor."""
    from tconv.semantics.reference import run_all

    lows: dict[SSAValue, float] = {v: np.inf for v in values}
    highs: dict[SSAValue, float] = {v: -np.inf for v in values}
    kept: dict[SSAValue, list[np.ndarray]] = {v: [] for v in values}
    rng = np.random.default_rng(0)
    chunk = 16
    for start in range(0, len(inputs), chunk):
        computed = run_all(module, params, inputs[start : start + chunk])
        for value in values:
            array = computed[value]
            lows[value] = min(lows[value], float(array.min()))
            highs[value] = max(highs[value], float(array.max()))
            if calibration == "percentile":
                flat = array.ravel()
                share = PERCENTILE_VALUES * chunk // max(len(inputs), 1)
                if flat.size > share:
                    flat = rng.choice(flat, share, replace=False)
                kept[value].append(flat)
    if calibration == "minmax":
        return {v: (lows[v], highs[v]) for v in values}
    ranges = {}
    for value in values:
        flat = np.concatenate(kept[value])
        ranges[value] = (
            float(np.percentile(flat, 100 - percentile)),
            float(np.percentile(flat, percentile)),
        )
    return ranges


def _insert_after(value: SSAValue, ops: list[Operation]) -> None:
    owner = value.owner
    if isinstance(owner, Block):
        point = InsertPoint.at_start(owner) if owner.first_op is None else InsertPoint.before(owner.first_op)
    else:
        point = InsertPoint.after(owner)
    Rewriter.insert_op(ops, point)


def _hint(value: SSAValue, suffix: str) -> str | None:
    base = value.name_hint
    return f"{base}_{suffix}" if base else None


def qdq(value: SSAValue, scales, zero_points, axis: int | None, element_type: str) -> SSAValue:
    """`value` through a new quantize → dequantize pair placed right after its definition."""
    quantize = QuantizeOp(value, scale=scales, zero_point=zero_points, axis=axis, element_type=element_type)
    dequantize = DequantizeOp(quantize.output, scale=scales, zero_point=zero_points, axis=axis)
    quantize.output.name_hint = _hint(value, "q")
    dequantize.output.name_hint = _hint(value, "dq")
    _insert_after(value, [quantize, dequantize])
    return dequantize.output


@dataclass(frozen=True)
class QuantizePass(ModulePass):
    """Post-training static quantisation into QDQ form (see the module docstring)."""

    name = "tconv-quantize"

    uses_param_store: ClassVar[bool] = True
    """It reads the weights and runs the network: `tconv-opt` gives it the input's store."""

    weights: str = "per-channel"
    """`per-channel` (one scale per output channel) or `per-tensor`."""
    activations: str = "per-tensor"
    """Only `per-tensor`: one scale and zero point per activation tensor."""
    activation_type: str = "uint8"
    """`uint8` (asymmetric, zero point in [0, 255]) or `int8` (symmetric)."""
    calibration: str = "minmax"
    """`minmax` or `percentile`."""
    percentile: float | int = 99.99
    """With `calibration=percentile`: the percentile kept, in (50, 100]."""
    data: str = "digits"
    """Calibration data: `digits`, an .npz or a folder of class subfolders."""
    samples: int = 64
    """How many calibration inputs (at least 1)."""
    layers: str = ""
    """Comma-separated layer names and patterns; empty: every convolution and dense layer."""
    residuals: str = "quantized"
    """`quantized`: an add reading a quantised layer's input reads its dequantized value; `float`: the f32 value."""

    def fail(self, message: str) -> PassFailedException:
        return PassFailedException(f"{self.name}: {message}")

    def __post_init__(self) -> None:
        # Checked when the pipeline is read, before any input: a bad value is a usage error.
        for option, value, allowed in (
            ("weights", self.weights, GRANULARITIES),
            ("activations", self.activations, GRANULARITIES[1:]),
            ("activation-type", self.activation_type, ACTIVATION_TYPES),
            ("calibration", self.calibration, CALIBRATIONS),
            ("residuals", self.residuals, RESIDUALS),
        ):
            if value not in allowed:
                raise self.fail(f"{option} must be {' or '.join(allowed)}, got '{value}'")
        if not 50 < self.percentile <= 100:
            raise self.fail(f"percentile must lie in (50, 100], got {self.percentile}")
        if self.samples < 1:
            raise self.fail(f"samples must be at least 1, got {self.samples}")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        store = active_store()
        store.check(op)
        try:
            inputs = calibration_inputs(op, self.data, self.samples)
        except TconvError as err:
            raise self.fail(f"calibration: {err}") from err
        self.quantize(op, store.values_for(op), inputs)

    def quantize(self, op: ModuleOp, params, examples: np.ndarray) -> None:
        """Quantise `op` in place, calibrated on `examples` (inputs fitted to its input;
        `data` and `samples` are not read): for callers that hold their data."""
        layers = [layer for layer in select_layers(op, self.layers, self.name)]
        todo = [
            layer for layer in layers
            if not isinstance(layer.op.input.owner, DequantizeOp) or not isinstance(layer.op.weight.owner, DequantizeOp)
        ]
        if not todo:
            what = f"selected by layers='{self.layers}'" if self.layers else "in the module"
            raise self.fail(f"no unquantised convolution or dense layer {what}")
        inputs = [layer.op.input for layer in todo if not isinstance(layer.op.input.owner, DequantizeOp)]
        weights = [layer.op.weight for layer in todo if not isinstance(layer.op.weight.owner, DequantizeOp)]
        shortcuts = _shortcuts(op, set(inputs)) if self.residuals == "quantized" else {}
        calibrated = list(dict.fromkeys(inputs + list(shortcuts.values())))
        try:
            ranges = observed_ranges(op, params, examples, calibrated, self.calibration, float(self.percentile))
            weight_values = _weight_values(op, params, examples[:1], weights)
        except TconvError as err:
            raise self.fail(f"calibration: {err}") from err
        element = "ui8" if self.activation_type == "uint8" else "i8"
        dequantized: dict[SSAValue, SSAValue] = {}
        for layer in todo:
            conv = layer.op
            source = conv.input
            if not isinstance(source.owner, DequantizeOp):
                if source not in dequantized:
                    scale, zero_point = activation_qparams(*ranges[source], self.activation_type)
                    dequantized[source] = qdq(source, [scale], [zero_point], None, element)
                conv.operands[0] = dequantized[source]
            weight = conv.weight
            if not isinstance(weight.owner, DequantizeOp):
                if weight not in dequantized:
                    per_channel = self.weights == "per-channel"
                    scales, zero_points = weight_qparams(weight_values[weight], per_channel)
                    dequantized[weight] = qdq(weight, scales, zero_points, 0 if per_channel else None, "i8")
                conv.operands[1] = dequantized[weight]
        if self.residuals == "quantized":
            for source in dict.fromkeys(inputs):
                for use in list(source.uses):
                    if isinstance(use.operation, AddOp):
                        use.operation.operands[use.index] = dequantized[source]
            for add, shortcut in shortcuts.items():
                scale, zero_point = activation_qparams(*ranges[shortcut], self.activation_type)
                add.operands[list(add.operands).index(shortcut)] = qdq(shortcut, [scale], [zero_point], None, element)
        skipped = [layer.name for layer in layers if layer not in todo]
        if skipped:
            print(f"remark: {self.name}: left {', '.join(skipped)} alone: already quantised", file=sys.stderr)


def _shortcuts(module: ModuleOp, layer_inputs: set[SSAValue]) -> dict[AddOp, SSAValue]:
    """The residual of each add that reads no layer's input (a projection
    block's): the operand defined later, a computed value. (The kernel
    grouping, `kernels.fusion`, lets the chain that comes first absorb the
    add; the other operand is its residual.)"""
    block = _function(module).body.block
    position = {o: index for index, o in enumerate(block.ops)}
    shortcuts = {}
    for add in block.ops:
        if not isinstance(add, AddOp) or any(v in layer_inputs for v in add.operands) or add.lhs == add.rhs:
            continue
        later = max(add.operands, key=lambda v: position.get(v.owner, -1))
        if later.owner in position:
            shortcuts[add] = later
    return shortcuts


def _weight_values(module: ModuleOp, params, one_input: np.ndarray, weights: list[SSAValue]) -> dict[SSAValue, np.ndarray]:
    """The value of each weight: its parameter's, or what the network computes for it."""
    from tconv.ir.ops import ParamOp
    from tconv.semantics.reference import run_all

    values = {w: params[w.owner.param_name] for w in weights if isinstance(w.owner, ParamOp)}
    if len(values) < len(weights):
        computed = run_all(module, params, one_input)
        values.update({w: computed[w] for w in weights if w not in values})
    return values
