"""`tconv-pack`: store the activations between convolutions in channel
blocks (NCHW[b]c), so that no kernel converts them.

    tconv-opt net.mlir -p 'tconv-pack{block=8}'

A convolution's kernel reads its input and writes its output in the layouts
of its schedule's `layout` entry (`tconv.ir.schedule`); the weights are
packed at compile time anyway (OIHW[x]i[y]o-style, `kernels.packing`).
A tensor stored as N x C/b x H x W x b lets a convolution keep its output
tile as it accumulates it (b channels, one vector) and read its input's
channels of a block from one cache line. The pass decides the layouts so
that conversions cancel:

- a *packed* convolution is a selected (`layers`, see `tconv.passes.select`)
  ungrouped or depthwise one whose schedule, if any, vectorises a block of
  output channels and names no algorithm but `direct`. An ungrouped one may
  read a packed input if `block` divides its input channels, and write a
  packed output if `block` divides its output channels (and its schedule's
  channel block, if it sets one, is a multiple of `block` that divides
  them). A depthwise one may do both if
  `block` divides its channels (and its schedule's vector of channels, if it
  sets one, is `block`): its vector is a block of channels, so it reads and
  writes them as they are stored, where NCHW costs it a transpose each way;
- the result of a packed convolution's kernel (after the batch-norm, residual
  add and activation fused into it, by the fusion marks of `tconv-fuse` or
  the lowering's default fusion) stays NCHW[b]c when every reader is a packed
  convolution that reads it packed: as its input, or as the residual of a
  kernel that itself writes NCHW[b]c (a fused residual is read in the
  output's layout);
- every other tensor is NCHW: the network's inputs and results, and what
  pooling, dense layers, concatenation, grouped (not depthwise)
  convolutions, convolutions run by another algorithm than the direct
  template or unfused ops read. The conversion then happens inside the
  boundary convolution's kernel.

The pass writes `layout = {input = ..., output = ...}` into the schedule of
every packed convolution with a packed input or output, and removes the
`layout` an earlier run wrote on the others (it replaces the earlier
decision). Run it after the NAS rewrites and `tconv-fuse`: a later change of
the fusion or of a convolution's channels breaks the agreement, which the
lowering reports at the op. A `block` no selected convolution can use, or a
layer named without wildcards that cannot be packed, fails the pass.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.ops import Conv2dOp
from tconv.ir.schedule import DIRECT, ActivationLayouts, ConvSchedule, packed_layout, parse_schedule
from tconv.kernels.algorithm import ConvShape, conv_shape
from tconv.kernels.fusion import KernelGroup, kernel_groups
from tconv.passes.select import select_convs


@dataclass(frozen=True)
class Packing:
    """What a convolution may do in blocks: read its input, write its output
    (None: it may; else why not, as a clause)."""

    read: str | None
    write: str | None

    @property
    def reason(self) -> str | None:
        """Why the convolution cannot be packed at all, or None."""
        if self.read is None or self.write is None:
            return None
        return self.read if self.read == self.write else f"{self.read}, and {self.write}"


def packing(conv: Conv2dOp, block: int) -> Packing:
    """Whether `conv` may read and write activations in blocks of `block`."""
    schedule = parse_schedule(conv.schedule) if conv.schedule is not None else ConvSchedule()
    return shape_packing(conv_shape(conv), schedule, block)


def shape_packing(shape: ConvShape, schedule: ConvSchedule, block: int) -> Packing:
    """Whether a convolution of `shape` with `schedule` may read and write
    activations in blocks of `block` (`packing`; the tuner asks it of the
    knobs it measures in blocks)."""
    groups, in_channels, out_channels = shape.groups, shape.input[1], shape.out_channels
    if groups != 1 and not shape.depthwise:
        reason = f"it is grouped (groups {groups}); packed layouts are for ungrouped and depthwise convolutions"
        return Packing(reason, reason)
    if schedule.vectorize == "ow.1" or "oh" in schedule.tiles:
        reason = "its schedule vectorises output columns (GSPC), not a block of channels"
        return Packing(reason, reason)
    if schedule.algorithm not in (None, DIRECT):
        reason = f"its schedule runs it as {schedule.algorithm}, whose kernels read and write NCHW"
        return Packing(reason, reason)
    if shape.depthwise:
        # Its vector is a block of channels read and written as they are stored.
        vector = schedule.factor("g")
        if in_channels % block:
            reason = f"its {in_channels} channels are not divisible by {block}"
        elif vector is not None and vector != block:
            reason = f"its schedule's vector of channels (tile g = [{vector}]) is not the block {block}"
        else:
            reason = None
        return Packing(reason, reason)
    read = None if in_channels % block == 0 else f"its {in_channels} input channels are not divisible by {block}"
    write = None if out_channels % block == 0 else f"its {out_channels} output channels are not divisible by {block}"
    channel_block = schedule.factor("oc")
    if write is None and channel_block is not None and (channel_block % block or out_channels % channel_block):
        write = (
            f"its schedule's channel block (tile oc = [{channel_block}]) is not a multiple of {block} "
            f"dividing its {out_channels} output channels"
        )
    return Packing(read, write)


def layout_fits(conv: Conv2dOp, layouts: ActivationLayouts) -> bool:
    """Whether `conv`, with the schedule it has now, can read and write the
    blocks `layouts` asks for (a tuner that changes its schedule keeps the
    layout only where this holds)."""
    schedule = parse_schedule(conv.schedule) if conv.schedule is not None else ConvSchedule()
    return shape_layout_fits(conv_shape(conv), schedule, layouts)


def shape_layout_fits(shape: ConvShape, schedule: ConvSchedule, layouts: ActivationLayouts) -> bool:
    """`layout_fits` for a convolution of `shape` with `schedule` (the
    tuner asks it of the knobs it measures in blocks)."""
    for block, role in ((layouts.input_block, "read"), (layouts.output_block, "write")):
        if block is not None and getattr(shape_packing(shape, schedule, block), role) is not None:
            return False
    return True


def packed_outputs(groups: list[KernelGroup], packings: dict[Conv2dOp, Packing]) -> set[KernelGroup]:
    """The kernels whose result stays packed (the rules of the module
    docstring): start from every kernel of a convolution that may write
    packed and drop those with a reader that cannot read packed, or with a
    residual that is not packed, until none changes."""
    producer: dict[SSAValue, KernelGroup] = {group.result: group for group in groups}
    kernel_of: dict[Operation, KernelGroup] = {op: group for group in groups for op in group.ops}
    packed = {
        group for group in groups
        if isinstance(group.anchor, Conv2dOp) and group.anchor in packings and packings[group.anchor].write is None
    }

    def reads_packed(group: KernelGroup, reader: Operation, index: int) -> bool:
        if isinstance(reader, Conv2dOp) and index == 0:
            return reader in packings and packings[reader].read is None
        consumer = kernel_of.get(reader)
        return consumer is not None and reader is consumer.add and consumer.residual == group.result \
            and consumer in packed

    changed = True
    while changed:
        changed = False
        for group in list(packed):
            residual = group.residual
            keeps = residual is None or producer.get(residual) in packed
            keeps = keeps and all(reads_packed(group, use.operation, use.index) for use in group.result.uses)
            if not keeps:
                packed.discard(group)
                changed = True
    return packed


def _set_layout(conv: Conv2dOp, layout: ActivationLayouts | None) -> None:
    """`conv`'s schedule with `layout` (None: no entry); a schedule left
    empty is removed."""
    schedule = parse_schedule(conv.schedule) if conv.schedule is not None else ConvSchedule()
    attr = replace(schedule, layout=layout).to_attr()
    if attr.data:
        conv.properties["schedule"] = attr
    else:
        conv.properties.pop("schedule", None)


@dataclass(frozen=True)
class PackPass(ModulePass):
    """Chooses the activation layouts of convolutions (see the module docstring)."""

    name = "tconv-pack"

    block: int = 8
    """Channels per block (NCHW[block]c); a vector of float32 on the target is the natural choice."""
    layers: str = ""
    """Comma-separated layer names and patterns; empty: every convolution."""

    def fail(self, message: str) -> PassFailedException:
        return PassFailedException(f"{self.name}: {message}")

    def __post_init__(self) -> None:
        # Checked when the pass is made, before any input: a usage error in `tconv-opt`.
        if self.block < 1:
            raise self.fail(f"block must be at least 1, got {self.block}")

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        skipped = pack_module(op, self.block, self.layers, self.fail)
        for reason, names in skipped.items():
            print(f"remark: {self.name}: left {', '.join(names)} in NCHW: {reason}", file=sys.stderr)


def pack_module(
    module: ModuleOp, block: int, layers: str = "", fail=None, keep: Mapping[Conv2dOp, str] | None = None,
) -> dict[str, list[str]]:
    """Choose the layouts of `module`'s selected convolutions in blocks of
    `block` (the pass without its remarks); the convolutions left NCHW,
    by reason. `keep`: convolutions to leave NCHW whatever they could do,
    with the reason. A layer named without wildcards that cannot be packed, or a
    block that fits none, is `fail(message)` (raised): a failing call leaves
    the module as it was."""
    keep = keep or {}
    fail = fail or (lambda message: PassFailedException(f"{PackPass.name}: {message}"))
    selected = select_convs(module, layers, PackPass.name)
    if layers and not selected:
        raise fail(f"no convolution matches layers='{layers}'")
    # Every refusal comes before the first rewrite.
    packings: dict[Conv2dOp, Packing] = {}
    skipped: dict[str, list[str]] = {}
    for choice in selected:
        kept = keep.get(choice.conv)
        found = packing(choice.conv, block) if kept is None else Packing(kept, kept)
        if found.reason is None:
            packings[choice.conv] = found
        elif choice.explicit:
            raise fail(f"cannot pack {choice.name}: {found.reason}")
        else:
            skipped.setdefault(found.reason, []).append(choice.name)
    if not packings:
        reasons = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in skipped.items())
        raise fail(f"block {block} fits no convolution ({reasons or 'there are none'})")
    for function in module.walk():
        if isinstance(function, func.FuncOp) and not function.is_declaration:
            _choose_layouts(function, packings, block)
    return skipped


def _choose_layouts(function: func.FuncOp, packings: dict[Conv2dOp, Packing], block: int) -> None:
    groups = list(kernel_groups(function))
    packed = packed_outputs(groups, packings)
    producer = {group.result: group for group in groups}
    for group in groups:
        conv = group.anchor
        if not isinstance(conv, Conv2dOp):
            continue
        layout = None
        if conv in packings:
            reads = producer.get(conv.input) in packed
            layout = ActivationLayouts(
                packed_layout(block if reads else None), packed_layout(block if group in packed else None)
            )
            layout = layout if layout.packed else None
        _set_layout(conv, layout)
