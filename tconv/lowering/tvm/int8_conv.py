"""The int8 convolution kernel: uint8 activations, int8 weights, int32
accumulation, the requantisation fused (`tconv.semantics.int8`).

Layouts. Activations are NHWC uint8 with the channels padded to a multiple
of 4 (C4; the padding channels meet zero weights, so their values do not
matter); the weight is packed by `packing.pack_int8_conv2d_weight`
(`O16/16 x C4/4G x KH x KW x 16 x 4`, the blocks of 16 output channels
numbered across the groups; `... x 2 x 16 x 2` for `vpmaddwd`); the
output is NHWC with O16 channels (the output channels rounded up to 16):
uint8 where it is quantised again, so that the next int8 convolution
reads it as it is, else float32 — or, for a network's float32 consumers,
NCHW float32 (`nchw`, with a residual added before the activation where a
fused add brings one).

Grouped convolutions read each group's channels of the same NHWC input, and
need a group's input channels to be a multiple of 4 and its output channels
of 16 (ResNeXt's are); depthwise ones have a loop nest of their own.

Stages: `pad` (the input padded with its zero point: a zero after the
offset; a copy, except in depthwise kernels, which read few taps of each
input byte and check the bounds instead), `conv` (N x O16/16 x P x Qp x 16 int32: Σ x_q · w_q, Qp the width
rounded up to whole column tiles) and `output` (the requantisation: the
per-channel int32 offset, one float multiply, then the activation or the
uint8 clamp).

Schedule. A register tile is rows × columns × blocks of 16 output channels
(`blocking.int8_register_tile`; its blocks lie in one group). Parallel over
(batch, tile rows, tile blocks) → column tile → [for input channels in
fours, tap row, tap column: for each row, block and column of the tile,
one dot product adds 4 input channels × 16 output channels into its
accumulator] → the tile's epilogue. The dot product (`Int8Conv.dot`, the
CPU's `VectorUnit.int8_dot`):

- `vpdpbusd` (AVX-512 VNNI): one instruction, the tensor intrinsic
  VNNI_DOT, into one vector of 16 int32;
- `vpmaddwd` (AVX2): the input padded as int16, the weight packed pair by
  pair and widened to int16 as it is loaded; four instructions (the tensor
  intrinsic PAIRS_DOT), each multiplying 2 input channels by 8 output
  channels and adding the two products, into 2 × 16 int32 (`conv` has an
  axis of 2 partial sums, which the epilogue adds). Exact: AVX2's
  `vpmaddubsw` would multiply uint8 by int8 directly but saturates a
  pair's sum at int16;
- None: the same loops, vectorised over the 16 channels by LLVM.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from tvm import te, tirx

from tconv.ir.shapes import ShapeError, window_output
from tconv.kernels.blocking import INT8_MAX_COLUMNS, Int8Tile, int8_register_tile
from tconv.kernels.packing import INT8_DEPTH, INT8_LANES, blocks
from tconv.kernels.target import INT8_DOTS, VPDPBUSD, VPMADDWD
from tconv.lowering.tvm.ops import activate
from tconv.semantics.int8 import INT32_LIMIT, int8_accumulator_bound

U8, I8, I16, I32, F32 = "uint8", "int8", "int16", "int32", "float32"

VNNI_DOT = "tconv_vnni_dot_16x4"
"""The tensor intrinsic of one `vpdpbusd`: 16 int32 lanes += 4 uint8 · (16 × 4) int8.
(TVM's own `dot_16x4_vnni` calls it with the operand types of LLVM before 20,
which the LLVM that TVM 0.27 links rejects.)"""


@cache
def _register_vnni_dot() -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def description(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((16, 4), "int8", offset_factor=1),
        c: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def implementation(
        a: T.Buffer((4,), "uint8", offset_factor=1),
        b: T.Buffer((16, 4), "int8", offset_factor=1),
        c: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            four = T.reinterpret(a.vload([0], "uint8x4"), dtype="int32")
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                c.vload([0], dtype="int32x16"),
                T.reinterpret(T.broadcast(four, 16), dtype="uint8x64"),
                b.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(VNNI_DOT, description, implementation)


PAIRS_DOT = "tconv_pairs_dot_16x4"
"""The tensor intrinsic of four `vpmaddwd`: 2 × 16 int32 partial sums += 4
int16 · (2 × 16 × 2) int8 widened, channels 2h and 2h + 1 into partial sum h."""

PARTIALS = 2
"""Partial sums per output channel of a `vpmaddwd` kernel: the instruction
adds the products of adjacent int16 lanes, here input channels 4c + 2h and
4c + 2h + 1 of one output channel (the weight packed pair by pair,
`packing.pack_int8_conv2d_weight`), into partial sum h."""


@cache
def _register_pairs_dot() -> None:
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def description(
        a: T.Buffer((4,), "int16", offset_factor=1),
        b: T.Buffer((2, 16, 2), "int8", offset_factor=1),
        c: T.Buffer((2, 16), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:2, 0:16], a[0:4], b[0:2, 0:16, 0:2])
            T.writes(c[0:2, 0:16])
            for h, i, k in T.grid(2, 16, 2):
                with T.sblock("update"):
                    vh, vi, vk = T.axis.remap("SSR", [h, i, k])
                    c[vh, vi] = c[vh, vi] + T.cast(a[vh * 2 + vk], "int32") * T.cast(b[vh, vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def implementation(
        a: T.Buffer((4,), "int16", offset_factor=1),
        b: T.Buffer((2, 16, 2), "int8", offset_factor=1),
        c: T.Buffer((2, 16), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(c[0:2, 0:16], a[0:4], b[0:2, 0:16, 0:2])
            T.writes(c[0:2, 0:16])
            sums = T.decl_buffer((32,), "int32", data=c.data, scope="local", elem_offset=c.elem_offset)
            for h in T.unroll(2):
                # Input channels 2h and 2h + 1 in every 32-bit lane; 16 bytes of
                # the weight are 8 output channels × those 2, widened to int16.
                pair = T.reinterpret(T.broadcast(T.reinterpret(a.vload([h * 2], "int16x2"), dtype="int32"), 8),
                                     dtype="int16x16")
                for q in T.unroll(2):
                    sums[T.ramp(h * 16 + q * 8, 1, 8)] = T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                        pair, T.cast(b.vload([h, q * 8, 0], dtype="int8x16"), "int16x16"),
                        dtype="int32x8",
                    ) + c.vload([h, q * 8], dtype="int32x8")

    TensorIntrin.register(PAIRS_DOT, description, implementation)


@dataclass(frozen=True)
class Int8Conv:
    """One int8 convolution's shape and quantisation (one group)."""

    batch: int
    height: int
    width: int
    channels: int
    """C4: the input's channels as stored, a multiple of 4."""
    out_channels: int
    kernel: tuple[int, int]
    groups: int = 1
    """With several, each group's input channels a multiple of 4 and its
    output channels a multiple of 16 (`int8_groups_fit`)."""
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    zero_point: int = 0
    """The input's zero point (uint8): what the padding reads."""
    activation: str | None = None
    """Of a float32 output (a uint8 one has it in `low` and `high`)."""
    out_zero_point: int | None = None
    """The uint8 output's zero point, or None for a float32 output."""
    low: int = 0
    high: int = 255
    """The uint8 output's clamp (`semantics.int8.Requantization`)."""
    column_tile: int | None = None
    """Output columns of a register tile (at most `blocking.INT8_MAX_COLUMNS`);
    None: `blocking.int8_register_tile`'s, as the tile's rows and blocks are."""
    nchw: bool = False
    """A float32 output stored NCHW (N x O x P x Q; O a multiple of 16), not NHWC."""
    residual: bool = False
    """A residual added before the activation: NCHW float32 (with `nchw`), or
    uint8 where `residual_levels` are given."""
    residual_levels: tuple[float, int] | None = None
    """(factor, zero point) of a uint8 residual stored as this kernel stores a
    uint8 output (N x P x Q x O16): `(r - zero point) · factor` is added, in
    the output's units (for a uint8 output, its levels: factor is the
    residual's scale over the output's)."""
    dot: str | None = None
    """The instruction its dot products are built on (module docstring): a
    `target.INT8_DOTS`, or None."""

    def __post_init__(self):
        if self.dot is not None and self.dot not in INT8_DOTS:
            raise ShapeError(f"int8 conv2d: dot product {self.dot!r}; one of {', '.join(INT8_DOTS)}, or none")
        if not 1 <= (self.column_tile or 1) <= INT8_MAX_COLUMNS:
            raise ShapeError(f"int8 conv2d: a column tile of {self.column_tile}; 1 to {INT8_MAX_COLUMNS} columns")
        if self.nchw and self.out_zero_point is not None:
            raise ShapeError("int8 conv2d: an NCHW output is float32")
        if self.residual_levels is not None and not self.residual:
            raise ShapeError("int8 conv2d: residual levels without a residual")
        if self.residual and self.residual_levels is None and not self.nchw:
            raise ShapeError("int8 conv2d: a float32 residual is read NCHW, with an NCHW output")
        if self.nchw and self.out_channels % INT8_LANES:
            raise ShapeError(
                f"int8 conv2d: an NCHW output needs output channels in whole blocks of {INT8_LANES}, "
                f"got {self.out_channels}"
            )
        if self.channels % INT8_DEPTH:
            raise ShapeError(f"int8 conv2d: stored input channels {self.channels} are not a multiple of {INT8_DEPTH}")
        if not 0 <= self.zero_point <= 255:
            raise ShapeError(f"int8 conv2d: input zero point {self.zero_point} is not a uint8")
        if min(self.output_size) < 1:
            raise ShapeError(f"int8 conv2d: the window does not fit the {self.height}x{self.width} input")
        if int8_accumulator_bound(self.channels // self.groups, self.kernel) >= INT32_LIMIT:
            raise ShapeError(
                f"int8 conv2d: {self.channels // self.groups} input channels x {self.kernel[0]}x{self.kernel[1]} "
                "taps could overflow the int32 accumulator"
            )
        if self.depthwise:
            if self.channels != self.out_channels_stored:
                raise ShapeError(
                    f"int8 depthwise conv2d: the input's stored channels ({self.channels}) must be its "
                    f"{self.out_channels} channels rounded up to {INT8_LANES} ({self.out_channels_stored})"
                )
        elif self.groups > 1 and not int8_groups_fit(self.channels, self.out_channels, self.groups):
            raise ShapeError(
                f"int8 conv2d: {self.groups} groups of {self.channels} input and {self.out_channels} output channels: "
                f"a group's input channels must be a multiple of {INT8_DEPTH} and its output channels of {INT8_LANES}"
            )

    @property
    def out_channels_stored(self) -> int:
        """O16: the output channels rounded up to 16 (one group), or as they are (groups)."""
        return blocks(self.out_channels, INT8_LANES) * INT8_LANES

    @property
    def depthwise(self) -> bool:
        """One input and one output channel per group."""
        return self.groups > 1 and self.groups == self.out_channels

    @property
    def group_blocks(self) -> int:
        """Blocks of 16 output channels per group."""
        return self.out_channels_stored // INT8_LANES // self.groups

    @property
    def output_size(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        top, left, bottom, right = self.padding
        return window_output(self.height, kh, sh, top + bottom, dh), window_output(self.width, kw, sw, left + right, dw)

    @property
    def register_tile(self) -> Int8Tile:
        """Rows × columns × blocks of one register tile (one row and block: depthwise)."""
        if self.depthwise:
            return Int8Tile(1, self.column_tile or int8_register_tile(1, self.output_size[1], 1).columns, 1)
        return int8_register_tile(*self.output_size, self.group_blocks, self.column_tile, self.dot)

    @property
    def partials(self) -> int:
        """Partial sums per output channel of the accumulator (`PARTIALS` for a `vpmaddwd` kernel)."""
        return PARTIALS if self.dot == VPMADDWD and not self.depthwise else 1

    @property
    def tile(self) -> int:
        """Columns of a register tile."""
        return self.register_tile.columns

    @property
    def output_dtype(self) -> str:
        return F32 if self.out_zero_point is None else U8


def int8_groups_fit(channels: int, out_channels: int, groups: int) -> bool:
    """Whether a grouped convolution's groups fit the int8 kernel's blocks."""
    return (channels % groups == 0 and (channels // groups) % INT8_DEPTH == 0
            and out_channels % groups == 0 and (out_channels // groups) % INT8_LANES == 0)


def placeholders(conv: Int8Conv) -> list[te.Tensor]:
    """The kernel's operands: input, packed weight, and per stored output
    channel the requantisation's offset (int32) and scale (float32)."""
    kh, kw = conv.kernel
    o16 = conv.out_channels_stored
    in_blocks = conv.channels // conv.groups // INT8_DEPTH
    if conv.depthwise:
        weight_shape = (o16 // INT8_LANES, kh, kw, INT8_LANES)
    elif conv.partials > 1:
        weight_shape = (o16 // INT8_LANES, in_blocks, kh, kw, PARTIALS, INT8_LANES, INT8_DEPTH // PARTIALS)
    else:
        weight_shape = (o16 // INT8_LANES, in_blocks, kh, kw, INT8_LANES, INT8_DEPTH)
    tensors = [
        te.placeholder((conv.batch, conv.height, conv.width, conv.channels), U8, name="data"),
        te.placeholder(weight_shape, I8, name="weight"),
        te.placeholder((o16,), I32, name="offset"),
        te.placeholder((o16,), F32, name="scale"),
    ]
    if conv.residual_levels is not None:
        tensors.append(te.placeholder((conv.batch, *conv.output_size, o16), U8, name="residual"))
    elif conv.residual:
        tensors.append(te.placeholder((conv.batch, conv.out_channels, *conv.output_size), F32, name="residual"))
    return tensors


def int8_conv2d(conv: Int8Conv, data, weight, offset, scale, residual=None) -> te.Tensor:
    """The `output` tensor (N x P x Q x O16, or N x O x P x Q with `nchw`)
    of `conv` (module docstring)."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel, conv.strides, conv.dilations
    top, left, bottom, right = conv.padding
    p, q = conv.output_size
    qp = blocks(q, conv.tile) * conv.tile
    height = max(conv.height + top + bottom, (p - 1) * sh + (kh - 1) * dh + 1)
    width = max(conv.width + left + right, (qp - 1) * sw + (kw - 1) * dw + 1)
    # A vpmaddwd kernel multiplies int16: its input is widened once, in the padded copy.
    padded_type = I16 if conv.partials > 1 else U8
    zero = tirx.const(conv.zero_point, padded_type)

    def padded_value(b, y, x, c):
        inside = tirx.all(y >= top, y < top + conv.height, x >= left, x < left + conv.width)
        return tirx.if_then_else(inside, data[b, y - top, x - left, c].astype(padded_type), zero)

    padded = te.compute((conv.batch, height, width, conv.channels), padded_value, name="pad")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    blocks16 = conv.out_channels_stored // INT8_LANES
    if conv.depthwise:
        # Each channel its own taps: 16 channels a vector, no dot product to form.
        acc = te.compute(
            (conv.batch, blocks16, p, qp, INT8_LANES),
            lambda b, cb, y, x, ci: te.sum(
                padded[b, y * sh + ry * dh, x * sw + rx * dw, cb * INT8_LANES + ci].astype(I32)
                * weight[cb, ry, rx, ci].astype(I32),
                axis=[ry, rx],
            ),
            name="conv",
        )
    else:
        # Blocks of 16 output channels numbered across the groups (a block lies in
        # one group), so that the output reads its accumulator tile without divisions.
        group_channels = conv.channels // conv.groups
        rc = te.reduce_axis((0, group_channels // INT8_DEPTH), name="rc")

        def first_channel(ob):
            return 0 if conv.groups == 1 else ob // conv.group_blocks * group_channels

        def product(b, ob, y, x, channel, w):
            return (padded[b, y * sh + ry * dh, x * sw + rx * dw, first_channel(ob) + rc * INT8_DEPTH + channel]
                    .astype(I32) * w.astype(I32))

        if conv.partials > 1:
            # Channels 4c + 2h + k (k = 0, 1) into partial sum h: the lanes of vpmaddwd.
            rk = te.reduce_axis((0, INT8_DEPTH // PARTIALS), name="rk")
            acc = te.compute(
                (conv.batch, blocks16, p, qp, PARTIALS, INT8_LANES),
                lambda b, ob, y, x, h, oi: te.sum(
                    product(b, ob, y, x, h * PARTIALS + rk, weight[ob, rc, ry, rx, h, oi, rk]), axis=[rc, ry, rx, rk]
                ),
                name="conv",
            )
        else:
            rci = te.reduce_axis((0, INT8_DEPTH), name="rci")
            acc = te.compute(
                (conv.batch, blocks16, p, qp, INT8_LANES),
                lambda b, ob, y, x, oi: te.sum(
                    product(b, ob, y, x, rci, weight[ob, rc, ry, rx, oi, rci]), axis=[rc, ry, rx, rci]
                ),
                name="conv",
            )

    def accumulated(b, ob, y, x, oi):
        if conv.partials > 1:
            return acc[b, ob, y, x, 0, oi] + acc[b, ob, y, x, 1, oi]
        return acc[b, ob, y, x, oi]

    def requantize(b, y, x, o):
        value = (accumulated(b, o // INT8_LANES, y, x, o % INT8_LANES) + offset[o]).astype(F32) * scale[o]
        if conv.residual_levels is not None:
            factor, zero_point = conv.residual_levels
            level = residual[b, y, x, o].astype(F32) - tirx.const(zero_point, F32)
            value = value + level * tirx.const(factor, F32)
        elif residual is not None:
            value = value + residual[b, o, y, x]
        if conv.out_zero_point is None:
            return activate(value, conv.activation)
        level = tirx.nearbyint(value) + tirx.const(conv.out_zero_point, F32)
        return tirx.max(tirx.min(level, tirx.const(conv.high, F32)), tirx.const(conv.low, F32)).astype(U8)

    if conv.nchw:
        return te.compute((conv.batch, conv.out_channels, p, q), lambda b, o, y, x: requantize(b, y, x, o),
                          name="output")
    return te.compute((conv.batch, p, q, conv.out_channels_stored), requantize, name="output")


def schedule_int8_conv2d(function: tirx.PrimFunc, conv: Int8Conv) -> tirx.PrimFunc:
    """The schedule of the module docstring: the inner 16 × 4 block
    tensorized with `conv.dot`, where it names an instruction."""
    from tvm import s_tir

    from tconv.lowering.tvm.schedule_cpu import relayout_output

    tile_order = (
        (lambda b, o, y, x: (b, y, o // INT8_LANES, x, o % INT8_LANES)) if conv.nchw
        else (lambda b, y, x, o: (b, y, o // INT8_LANES, x, o % INT8_LANES))
    )
    sch = relayout_output(s_tir.Schedule(function), tile_order)
    b, y, block, x, oi = sch.get_loops(sch.get_sblock("output"))
    xo, xi = sch.split(x, [None, conv.tile])
    tile = conv.register_tile
    y, inner_row = sch.split(y, [None, tile.rows])
    block, inner_block = sch.split(block, [None, tile.blocks])
    sch.reorder(y, block, xo, inner_row, inner_block)
    sch.parallel(sch.fuse(b, y, block))
    accumulate = sch.get_sblock("conv")
    sch.set_scope(accumulate, 0, "local")  # one tile, kept in registers by LLVM
    sch.compute_at(accumulate, xo, preserve_unit_loops=True)
    if conv.depthwise:
        column, channel, ry, rx = sch.get_loops(accumulate)[-4:]
        sch.reorder(ry, rx, column, channel)
        sch.vectorize(channel)  # before the init is split off: a block without its init cannot be
        init = sch.decompose_reduction(accumulate, ry)
    elif conv.partials > 1:
        tile_block, row, column, half, channel, rc, ry, rx, rk = sch.get_loops(accumulate)[-9:]
        sch.reorder(rc, ry, rx, row, tile_block, column, half, channel, rk)
        sch.unroll(tile_block)
        sch.unroll(row)
        init = sch.decompose_reduction(accumulate, rc)
        _register_pairs_dot()
        sch.tensorize(half, PAIRS_DOT)
        sch.fuse(*sch.get_loops(init)[-2:])  # the 2 × 16 partial sums: one vector to zero
    else:
        tile_block, row, column, channel, rc, ry, rx, rci = sch.get_loops(accumulate)[-8:]
        if conv.dot == VPDPBUSD:
            sch.reorder(rc, ry, rx, row, tile_block, column, channel, rci)
        else:
            sch.reorder(rc, ry, rx, rci, row, tile_block, column, channel)
            sch.unroll(rci)
            sch.vectorize(channel)
        sch.unroll(tile_block)
        sch.unroll(row)
        init = sch.decompose_reduction(accumulate, rc)
        if conv.dot == VPDPBUSD:
            _register_vnni_dot()
            sch.tensorize(channel, VNNI_DOT)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(column)
    sch.unroll(rx)
    if conv.nchw:
        # A channel's columns are contiguous in NCHW: stored as one vector each.
        sch.reorder(oi, xi)
        sch.unroll(oi)
        sch.vectorize(xi)
    else:
        sch.unroll(xi)
        sch.vectorize(oi)
    pad = sch.get_sblock("pad")
    if conv.depthwise:
        # Each input byte is read by few taps: a bounds check per tap costs less than a padded copy.
        sch.compute_inline(pad)
        return sch.mod["main"]
    pad_loops = sch.get_loops(pad)
    sch.parallel(sch.fuse(*pad_loops[:2]))
    sch.vectorize(pad_loops[-1])
    return sch.mod["main"]


def build_int8_conv2d(conv: Int8Conv, target):
    """The compiled kernel of `conv` for `target` (a tvm runtime function of
    data, weight, offset, scale, output)."""
    import tvm

    tensors = placeholders(conv)
    output = int8_conv2d(conv, *tensors)
    function = te.create_prim_func([*tensors, output])
    scheduled = schedule_int8_conv2d(function, conv)
    return tvm.compile(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=target)["main"]

