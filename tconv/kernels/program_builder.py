"""The part of lowering both backends share: numbering a network's tensors
into a `KernelProgram` (`tconv.kernels.program`).

A backend's lowering subclasses `ProgramBuilder`, appends one call per
kernel group, and gets from here the tensor of every SSA value (inputs,
parameters used as stored, activations written by earlier calls), the
derived tensors computed at compile time from store entries (packed and
batch-norm-folded weights, folded biases), and the program's outputs. So
the TVM and LLVM backends produce plans of the same shape for the same
network, and the C runtime cannot tell them apart.

Layouts. An activation is NCHW unless the convolution that writes it stores
it in channel blocks (its schedule's `layout`, `tconv.ir.schedule`); such a
tensor has the stored shape N x C/b x H x W x b (`stored_shape`, the same
bytes). The builder records the layout of every tensor it makes and checks
each read against the layout the reader expects (`value`), so a tensor is
read as it was written, or the lowering stops with an error at the reader.
A backend that does not honour packed layouts (`honours_layouts` false)
refuses them at the convolution before lowering anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from tconv.errors import TconvError
from tconv.ir.loader import located, location_of
from tconv.ir.ops import BatchNormOp, Conv2dOp, ParamOp, shape_of
from tconv.ir.schedule import NCHW, ScheduleError, conv_layouts, layout_block
from tconv.kernels.fusion import KernelGroup
from tconv.kernels.program import KernelProgram, Recipe, Tensor, TensorKind
from tconv.kernels.qdq import QdqError, weight_qdq

NHWC = "NHWC"
"""The layout of a quantised activation (uint8, channels last and padded:
`tconv.lowering.tvm.int8_conv`); its tensors have their stored shape."""


def stored_shape(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    """The shape an NCHW `shape` is stored in under `layout`:
    N x C/b x H x W x b for NCHW[b]c (b must divide C), itself for NCHW."""
    block = layout_block(layout)
    if block is None:
        return tuple(shape)
    n, c, h, w = shape
    if c % block:
        raise ValueError(f"layout {layout}: {c} channels are not divisible by {block}")
    return (n, c // block, h, w, block)


class ProgramBuilder:
    """Tensors of one network's program; `backend` names the lowering in
    messages, `error` is the exception it raises."""

    backend: str = "lowering"
    error: type[TconvError] = TconvError
    honours_layouts: bool = False
    """Whether the backend's kernels read and write activations in channel blocks."""

    def __init__(self) -> None:
        self.program = KernelProgram()
        self.value_ids: dict[SSAValue, int] = {}
        self.derived_ids: dict[Recipe, int] = {}
        self.layouts: dict[int, str] = {}
        """The layout of each activation not stored NCHW, by tensor id."""
        self.writers: dict[int, Operation] = {}
        """The op whose kernel writes each activation, by tensor id."""
        self.reader: Operation | None = None
        """The op whose kernel is being lowered: where a read that breaks a layout is reported."""

    def new_tensor(self, kind: TensorKind, shape: Sequence[int], name: str, **extra) -> int:
        """A new tensor of the program (`extra`: `Tensor`'s other fields); its id."""
        tensor = Tensor(len(self.program.tensors), kind, tuple(int(d) for d in shape), name, **extra)
        self.program.tensors.append(tensor)
        return tensor.id

    def new_activation(
        self, shape: Sequence[int], layout: str, name: str, writer: Operation, dtype: str = "f32"
    ) -> int:
        """The activation `writer`'s kernel writes: NCHW `shape`, stored in
        `layout` (NHWC: `shape` is the stored shape already)."""
        stored = tuple(shape) if layout == NHWC else stored_shape(shape, layout)
        tensor = self.new_tensor("activation", stored, name, dtype=dtype)
        if layout != NCHW:
            self.layouts[tensor] = layout
        self.writers[tensor] = writer
        return tensor

    def refuse_layouts(self, function: func.FuncOp) -> None:
        """A located error at the first convolution of `function` whose
        schedule stores an activation in channel blocks, for a backend that
        does not honour them."""
        for op in function.body.block.ops:
            if not isinstance(op, Conv2dOp):
                continue
            try:
                layouts = conv_layouts(op.schedule)
            except ScheduleError as err:
                raise self.error(located(op, str(err))) from None
            if layouts.packed:
                backend = self.backend.split()[0]
                raise self.error(located(op, (
                    f"the {backend} backend does not honour packed layouts yet (layout input {layouts.input}, "
                    f"output {layouts.output}); compile with --backend tvm, or without tconv-pack"
                )))

    def bind_inputs(self, function: func.FuncOp) -> None:
        """The function's arguments as the program's inputs, in order (NCHW)."""
        if not self.honours_layouts:
            self.refuse_layouts(function)
        for index, argument in enumerate(function.body.block.args):
            self.value_ids[argument] = self.new_tensor("input", shape_of(argument), f"arg{index}", index=index)

    def bind_outputs(self, function: func.FuncOp) -> None:
        """The values the function returns as the program's outputs."""
        returns = [op for op in function.body.block.ops if isinstance(op, func.ReturnOp)]
        if not returns:
            raise self.error(f"{self.backend}: '{function.sym_name.data}' has no func.return")
        self.reader = returns[0]
        self.program.outputs = [self.value(v, role="a result of the network") for v in returns[0].operands]

    def value(self, value: SSAValue, layout: str = NCHW, role: str = "an operand") -> int:
        """The tensor of an SSA value: an input, a parameter used as stored, or
        an activation written by an earlier call, which the reader (`self.reader`)
        reads in `layout` as `role`; a located error where it is stored otherwise."""
        if value not in self.value_ids:
            owner = value.owner
            if not isinstance(owner, ParamOp):
                raise self.error(f"{self.backend}: value {value} is used before a kernel writes it")
            self.value_ids[value] = self.new_tensor("param", shape_of(value), owner.param_name)
        tensor = self.value_ids[value]
        stored = self.layouts.get(tensor, NCHW)
        if stored != layout:
            self._layout_mismatch(tensor, stored, layout, role)
        return tensor

    def _layout_mismatch(self, tensor: int, stored: str, layout: str, role: str) -> None:
        writer = self.writers.get(tensor)
        if writer is None:
            source = f"it is {self.program.tensors[tensor].kind} {self.program.tensors[tensor].name}, stored NCHW"
        else:
            where = location_of(writer)
            source = f"the kernel of {writer.name}{f' at {where}' if where else ''} writes it in {stored}"
        message = (
            f"{self.backend}: reads {role} in layout {layout}, but {source} (every reader of a tensor must "
            "expect the layout its writer stores; run tconv-pack after the passes that change fusion, "
            "schedules or channels)"
        )
        at = self.reader or writer
        raise self.error(located(at, message) if at is not None else f"error: {message}")

    def derived(self, recipe: Recipe, shape: Sequence[int], name: str, dtype: str = "f32") -> int:
        """The tensor `recipe` computes at compile time (one per distinct recipe)."""
        if recipe not in self.derived_ids:
            self.derived_ids[recipe] = self.new_tensor("derived", shape, name, recipe=recipe, dtype=dtype)
        return self.derived_ids[recipe]

    def param_name(self, value: SSAValue, op: Operation, role: str) -> str:
        """The store entry behind operand `value` of `op`, which the lowering
        transforms at compile time, so it must be a `tconv.param`."""
        owner = value.owner
        if not isinstance(owner, ParamOp):
            raise self.error(
                f"{self.backend}: the {role} of '{op.name}' must be a tconv.param "
                f"(it is packed at compile time), got {value}"
            )
        return owner.param_name

    def weight_source(self, value: SSAValue, op: Operation) -> tuple[str, dict]:
        """The store entry behind weight `value` of `op`, and the recipe
        attributes that say how a float32 kernel computes with it: none for a
        `tconv.param`; its int8 scales for a QDQ weight (`qdq.weight_qdq`)."""
        try:
            quantized = weight_qdq(value)
        except QdqError as err:
            raise self.error(located(op, f"{self.backend}: {err}")) from None
        if quantized is None:
            return self.param_name(value, op, "weight"), {}
        name, scales = quantized
        return name, {"weight_scales": scales}

    def batch_norm_sources(self, bn: BatchNormOp) -> tuple[tuple[str, str], ...]:
        return tuple(
            (role, self.param_name(operand, bn, role))
            for role, operand in (("scale", bn.scale), ("shift", bn.shift), ("mean", bn.mean), ("var", bn.var))
        )

    def weight_and_bias(self, group: KernelGroup, weight: SSAValue, bias: SSAValue | None, transform: str,
                        attributes: dict, packed_shape: Sequence[int], label: str) -> tuple[int, int | None]:
        """The packed (batch-norm-folded, where the group absorbed one) weight
        and the bias tensor (None: no bias) of a weighted anchor."""
        anchor = group.anchor
        weight_name, quantized = self.weight_source(weight, anchor)
        attributes = {**attributes, **quantized}
        bias_name = None if bias is None else self.param_name(bias, anchor, "bias")
        bn_sources: tuple[tuple[str, str], ...] = ()
        if group.batch_norm is not None:
            bn_sources = self.batch_norm_sources(group.batch_norm)
            attributes = {**attributes, "epsilon": group.batch_norm.epsilon.value.data}
        recipe = Recipe(transform, (("weight", weight_name),) + bn_sources, tuple(sorted(attributes.items())))
        folded = ("+qdq" if quantized else "") + ("+bn" if bn_sources else "")
        weight_id = self.derived(recipe, packed_shape, f"{weight_name}:packed_{label}{folded}")
        if bn_sources:
            bias_sources = ((("bias", bias_name),) if bias_name else ()) + bn_sources
            bias_recipe = Recipe("folded_bias", bias_sources, (("epsilon", attributes["epsilon"]),))
            return weight_id, self.derived(bias_recipe, (shape_of(weight)[0],), f"{weight_name}:folded_bias")
        return weight_id, None if bias is None else self.value(bias)
