"""`tconv-fold-bn`: a batch-norm after a convolution or dense layer becomes
part of that layer's weights and bias.

    tconv-opt net.mlir -p 'tconv-fold-bn{layers="layer1.*"}' -o folded.mlir

An inference batch-norm is a per-channel affine map, so `batch_norm(conv(x,
W) + bias)` is `conv(x, W·factor) + bias'` (`folding.fold_batch_norm`): one
layer, the same values, one op and four parameters fewer. The layer gets a
new weight and a new bias under new names (`conv1.weight` becomes
`conv1_bn.weight`, its bias `conv1_bn.bias`, as `params.tagged` names them)
whose values the pass computes from the old ones and writes to the active
parameter store (`tconv.passes.nas.store`); the batch-norm and the
parameters nothing uses any more are erased. The layer keeps its schedule
and its other attributes. Without an active store the values computed are
those of a freshly initialised network and are lost, as for the NAS passes.

`layers` selects the layers whose batch-norm is folded, convolutions and
dense layers alike, named as `tconv.passes.select` names convolutions
(empty: every layer). A batch-norm that cannot fold is left alone with a
remark: its input is not a convolution or dense layer (with the default
`layers`), or that layer's result has another user (which reads the value
before normalisation), or a parameter involved is not a `tconv.param`. For a
layer named explicitly, that is an error, as is a layer no batch-norm follows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import ClassVar

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.ops import BatchNormOp, Conv2dOp, DenseOp, ParamOp, shape_of
from tconv.kernels.folding import fold_batch_norm
from tconv.passes.nas.params import ParamMaker, tagged
from tconv.passes.nas.store import ParamStore, active_store
from tconv.passes.select import parse_layers, select_convs

TAG = "bn"
"""What the new parameters' layer part is tagged with: `conv1_bn.weight`."""


@dataclass(frozen=True)
class Layer:
    """A convolution or dense layer the `layers` option selected."""

    op: Conv2dOp | DenseOp
    name: str
    explicit: bool
    """Named without wildcards: refuse rather than skip when it cannot fold."""


def _param(value: SSAValue) -> ParamOp | None:
    owner = value.owner
    return owner if isinstance(owner, ParamOp) else None


def dense_name(dense: DenseOp) -> str:
    """A dense layer's name, made as a convolution's: its weight's name without `.weight`."""
    weight = _param(dense.weight)
    return weight.param_name.removesuffix(".weight") if weight else "<dense without a weight parameter>"


def select_layers(module: ModuleOp, layers: str, pass_name: str) -> list[Layer]:
    """The convolutions (by `select_convs`) and dense layers `layers`
    selects, in program order."""
    dense_names = {op: dense_name(op) for op in module.walk() if isinstance(op, DenseOp)}
    entries = parse_layers(layers)
    # select_convs refuses an explicit name that no convolution has: hand it
    # only the entries that do not name a dense layer.
    conv_entries = [entry for entry in entries if entry not in dense_names.values()]
    convs = select_convs(module, ",".join(conv_entries), pass_name) if conv_entries or not entries else []
    chosen: dict[Conv2dOp | DenseOp, Layer] = {c.conv: Layer(c.conv, c.name, c.explicit) for c in convs}
    for dense, name in dense_names.items():
        if not entries or any(fnmatchcase(name, entry) for entry in entries):
            chosen[dense] = Layer(dense, name, name in entries)
    return [chosen[op] for op in module.walk() if op in chosen]


def batch_norm_name(bn: BatchNormOp) -> str:
    """A batch-norm's name: its scale's name without `.weight` (`layer1.0.bn1`)."""
    scale = _param(bn.scale)
    return scale.param_name.removesuffix(".weight") if scale else "<batch_norm without a scale parameter>"


def unfoldable(layer: Layer, bn: BatchNormOp) -> str | None:
    """Why `bn`, which normalises `layer`'s result, cannot fold into it, or None."""
    op = layer.op
    if not op.output.has_one_use():
        return f"{layer.name}'s result has other users, which read it unnormalised"
    if _param(op.weight) is None:
        return f"the weight of {layer.name} is not a tconv.param"
    if op.bias is not None and _param(op.bias) is None:
        return f"the bias of {layer.name} is not a tconv.param"
    if any(_param(v) is None for v in (bn.scale, bn.shift, bn.mean, bn.var)):
        return "its scale, shift, mean and variance are not all tconv.params"
    return None


def fold(layer: Conv2dOp | DenseOp, bn: BatchNormOp, maker: ParamMaker) -> Conv2dOp | DenseOp:
    """Replace `layer → bn` by one layer with folded weight and bias; return it."""
    store: ParamStore = maker.store
    weight = _param(layer.weight)
    bias = _param(layer.bias) if layer.bias is not None else None
    assert weight is not None
    statistics = [store.value_of(_param(v)) for v in (bn.scale, bn.shift, bn.mean, bn.var)]  # type: ignore[arg-type]
    folded_weight, folded_bias = fold_batch_norm(
        store.value_of(weight), store.value_of(bias) if bias else None, *statistics, bn.epsilon.value.data
    )
    bias_name = bias.param_name if bias else weight.param_name.removesuffix(".weight") + ".bias"
    new_weight = maker.new(
        layer, tagged(weight.param_name, TAG), shape_of(weight.result), weight.init.data, folded_weight
    )
    new_bias = maker.new(layer, tagged(bias_name, TAG), folded_bias.shape, "zeros", folded_bias)
    if isinstance(layer, Conv2dOp):
        folded = Conv2dOp(
            layer.input, new_weight, new_bias,
            strides=tuple(layer.strides.get_values()),
            padding=tuple(layer.padding.get_values()),
            dilations=tuple(layer.dilations.get_values()),
            groups=layer.groups.value.data,
            nonzeros=layer.weight_nonzeros,  # folding scales each output channel: its zeros stay zeros
            schedule=layer.schedule,
        )
    else:
        folded = DenseOp(layer.input, new_weight, new_bias)
    folded.attributes.update(layer.attributes)
    Rewriter.insert_op(folded, InsertPoint.before(layer))
    bn.output.replace_all_uses_with(folded.output)
    old_params = [_param(v) for v in (*layer.operands, *bn.operands)]
    Rewriter.erase_op(bn)
    Rewriter.erase_op(layer)
    for param in dict.fromkeys(p for p in old_params if p is not None):
        maker.erase_if_unused(param)
    return folded


@dataclass(frozen=True)
class FoldBatchNormPass(ModulePass):
    """Folds each batch-norm after a selected layer into it (see the module docstring)."""

    name = "tconv-fold-bn"

    uses_param_store: ClassVar[bool] = True
    """It reads parameter values and writes new ones: `tconv-opt` gives it the input's store."""

    layers: str = ""
    """Comma-separated layer names and patterns; empty: every layer."""

    def fail(self, message: str) -> PassFailedException:
        return PassFailedException(f"{self.name}: {message}")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        layers = select_layers(op, self.layers, self.name)
        if self.layers and not layers:
            raise self.fail(f"no convolution or dense layer matches layers='{self.layers}'")
        selected = {layer.op: layer for layer in layers}
        normalised = {bn.input.owner for bn in op.walk() if isinstance(bn, BatchNormOp)}
        for layer in layers:
            if layer.explicit and layer.op not in normalised:
                raise self.fail(f"cannot fold into {layer.name}: no batch_norm reads its result")
        # Every refusal comes before the first rewrite: a failing pass leaves the module as it was.
        foldable: list[tuple[Conv2dOp | DenseOp, BatchNormOp]] = []
        skipped: dict[str, list[str]] = {}
        for bn in [o for o in op.walk() if isinstance(o, BatchNormOp)]:
            producer = bn.input.owner
            layer = selected.get(producer)  # type: ignore[arg-type]
            if layer is None:
                if not self.layers and not isinstance(producer, (Conv2dOp, DenseOp)):
                    skipped.setdefault("its input is not a convolution or dense layer", []).append(batch_norm_name(bn))
                continue
            reason = unfoldable(layer, bn)
            if reason is None:
                foldable.append((layer.op, bn))
            elif layer.explicit:
                raise self.fail(f"cannot fold {batch_norm_name(bn)} into {layer.name}: {reason}")
            else:
                skipped.setdefault(reason, []).append(batch_norm_name(bn))
        maker = ParamMaker(op, active_store(), Rewriter())
        for layer_op, bn in foldable:
            fold(layer_op, bn, maker)
        # One remark per reason: a DenseNet leaves a hundred batch-norms alone for the same one.
        for reason, names in skipped.items():
            print(f"remark: {self.name}: left {', '.join(names)} alone: {reason}", file=sys.stderr)
