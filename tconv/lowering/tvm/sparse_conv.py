"""The sparse convolution kernel: a convolution whose weights are mostly
zero (`tconv-sparsify`) computed from its nonzero weights only, the direct
sparse convolution of Park et al. 2017 ("Faster CNNs with direct sparse
convolutions").

Layout. The weight is two arrays of `nonzeros` entries per output channel
(ELLPACK: `packing.pack_sparse_conv2d_weight`): the values (float32,
batch-norm folded) and, for each, the offset of its tap in the flattened
padded input (int32: `channel · Hp · Wp + kh · dh · Wp + kw · dw`, the
channel counted across groups). A channel with fewer nonzero weights pads
its row with value 0 at offset 0. Output position (y, x) of channel o is
Σ_j values[o, j] · padded[offsets[o, j] + y · sh · Wp + x · sw]: one
gather per weight, then a run of consecutive (stride 1) or strided input
columns, so a row of outputs is a vector multiply-add per nonzero weight.

Stages: `pad` (the input padded, where it has padding; for a column
stride s, its columns dealt into s phases, `ops.pad_phases`, so that a
tap's run of output columns is contiguous), `conv` (N x O x P x Q',
Q' the output width rounded up to whole column tiles,
`blocking.sparse_column_tile`) and `output` (the epilogue: bias,
residual, activation, for the Q real columns).

Schedule. Parallel over (batch, output channel); a register tile of up to
`SPARSE_ROWS` output rows by a column tile accumulates over the channel's
nonzero weights (each weight and its offset loaded once per tile, applied
to every row of it), then goes through the epilogue. The work is proportional to the
nonzeros; what it gives up against the dense kernel is the register
blocking over output channels (each weight is used by one channel only)
and the contiguous weight stream, so it wins only at high sparsity
(docs/benchmarks.md has the density where it does on the machines measured).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import te

from tconv.ir.shapes import window_output
from tconv.lowering.tvm.ops import Epilogue, pad_input, pad_phases
from tconv.lowering.tvm.schedule_cpu import schedule_pad

F32, I32 = "float32", "int32"

SPARSE_ROWS = 4
"""Output rows a weight is applied to once loaded (the register tile's height)."""


@dataclass(frozen=True)
class SparseConv:
    """The geometry of one sparse convolution."""

    batch: int
    channels: int
    in_size: tuple[int, int]
    out_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilations: tuple[int, int]
    nonzeros: int
    """Entries per output channel (the most nonzero weights any channel has)."""
    columns: tuple[int, int] | None = None
    """(register tile columns, output width computed): `blocking.sparse_column_tile`;
    None: the whole row, as it is."""

    @property
    def column_tile(self) -> tuple[int, int]:
        q = self.output_size[1]
        return self.columns or (q, q)

    @property
    def padded_size(self) -> tuple[int, int]:
        """The padded input, wide enough for the columns computed past the output's."""
        (h, w), (top, left, bottom, right) = self.in_size, self.padding
        reach = (self.column_tile[1] - 1) * self.strides[1] + (self.kernel[1] - 1) * self.dilations[1] + 1
        return h + top + bottom, max(w + left + right, reach)

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(
            window_output(size, k, s, before + after, d)
            for size, k, s, before, after, d in zip(
                self.in_size, self.kernel, self.strides, self.padding[:2], self.padding[2:], self.dilations,
                strict=True,
            )
        )


def sparse_conv2d(
    conv: SparseConv, data: te.Tensor, values: te.Tensor, offsets: te.Tensor, epilogue: Epilogue = Epilogue()
) -> te.Tensor:
    """N x O x P x Q float32 (see the module docstring)."""
    hp, wp = conv.padded_size
    plane = hp * wp
    p, q = conv.output_size
    _, computed = conv.column_tile
    sh, sw = conv.strides
    j = te.reduce_axis((0, conv.nonzeros), name="j")
    # A strided convolution reads its columns from phases of the padded input,
    # so that a tap's run of output columns is contiguous (a vector load, not a gather).
    pad = pad_phases(data, conv.padding, sw, 0, wp) if sw > 1 else pad_input(data, conv.padding, min_width=wp)

    def tap(n, o, y, x):
        # The offset's channel, row and column: loop-invariant in y and x, so computed once per weight.
        offset = offsets[o, j]
        channel, row, column = offset // plane, offset % plane // wp + y * sh, offset % wp
        if sw > 1:
            return pad[n, channel, row, column % sw, column // sw + x]
        return pad[n, channel, row, column + x]

    acc = te.compute(
        (conv.batch, conv.out_channels, p, computed),
        lambda n, o, y, x: te.sum(values[o, j] * tap(n, o, y, x), axis=j),
        name="conv",
    )
    return te.compute(
        (conv.batch, conv.out_channels, p, q),
        lambda n, o, y, x: epilogue.apply(acc[n, o, y, x], (n, o, y, x), o),
        name="output",
    )


def schedule_sparse_conv2d(function, conv: SparseConv):
    """The schedule of the module docstring, on the PrimFunc of `sparse_conv2d`."""
    from tvm import s_tir

    sch = s_tir.Schedule(function)
    schedule_pad(sch)
    p, _ = conv.output_size
    width, _ = conv.column_tile
    rows = max(r for r in range(1, SPARSE_ROWS + 1) if p % r == 0)
    acc = sch.get_sblock("conv")
    n, o, y, x, j = sch.get_loops(acc)
    yo, yi = sch.split(y, [None, rows])
    xo, xi = sch.split(x, [None, width])
    sch.reorder(yo, xo, j, yi, xi)
    sch.parallel(sch.fuse(n, o))
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(sch.get_sblock("output"), xo)
    sch.vectorize(sch.get_loops(sch.get_sblock("output"))[-1])
    sch.unroll(yi)
    sch.vectorize(xi)
    init = sch.decompose_reduction(acc, j)
    sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"]
