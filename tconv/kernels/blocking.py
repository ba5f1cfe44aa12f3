"""How a convolution's register tile is blocked, and the issue-rate models
that choose it: pure functions of a shape and a `VectorUnit`, no code
generator imported.

Two templates compute a convolution on a CPU (their TIR schedules are
`tconv.lowering.tvm.schedule_cpu` and `schedule_gspc`; the loop nests they
are in the schedule language, `tconv.kernels.templates`):

- the direct convolution, a block of output channels in the vector lanes
  (`channel_blocking`, rated by `tile_efficiency`), with a pointwise
  variant over the flattened positions (`pointwise_blocking`, where
  `runs_pointwise`) and a depthwise one over a vector of channels;
- GSPC (grouped spatial-pack columns), a run of output columns in the lanes,
  for groups too narrow to fill a vector of channels (`gspc_blocking`, rated
  by `column_efficiency`).

`ConvBlocking` is the choice, the knobs that shape the compute. The search
(`tconv.search`) ranks its candidates by the same models the backend
chooses by.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tconv.kernels.target import VPMADDWD, VectorUnit

VECTOR_LOOPS = ("oc", "ow")
"""What a convolution's register tile vectorises: a block of output channels
(the classic direct convolution) or a run of output columns (GSPC, for
groups too narrow to fill a vector of channels)."""


@dataclass(frozen=True)
class ConvBlocking:
    """How a convolution's accumulation is blocked, which shapes its compute.

    `block`: output channels per packed weight block. With one group the
    channels are padded with zero weights up to a multiple of it; with
    several it must divide a group's channels. For depthwise convolutions
    vectorised over channels it is the vector of channels (1 when vectorised
    over columns).
    `width_tile`: output columns accumulated together; the accumulation runs
    over the output width rounded up to a multiple (the extra columns read
    zero padding, or the last column where the convolution has no padding,
    and are never stored).
    `vector`: the loop of the register tile held in vector lanes, one of
    VECTOR_LOOPS: "oc", the `block` channels (one broadcast input value times
    a vector of weights), or "ow", the `width_tile` columns (a vector of
    inputs times one broadcast weight), which needs no channels to fill it.
    `rows`: output rows accumulated together ("ow" only); the accumulation
    runs over the output height rounded up to a multiple.
    `unroll_kw`: whether the loop over the kernel's columns is unrolled.
    `rows_first`: whether the parallel loops take output rows before channel
    blocks (direct template, one group; see `runs_rows_first`)."""

    block: int
    width_tile: int
    skew_planes: bool = False
    """Copy the input with one more column, so that its channel planes are
    not a whole number of 4 KiB apart (see `skews_planes`)."""
    vector: str = "oc"
    rows: int = 1
    unroll_kw: bool = True
    rows_first: bool = False

    def __post_init__(self) -> None:
        if self.vector not in VECTOR_LOOPS:
            raise ValueError(f"conv blocking: vector must be one of {VECTOR_LOOPS}, got {self.vector!r}")
        if min(self.block, self.width_tile, self.rows) < 1:
            raise ValueError(
                f"conv blocking: block, width tile and rows must be at least 1, got "
                f"{self.block}, {self.width_tile}, {self.rows}"
            )
        if self.rows > 1 and self.vector != "ow":
            raise ValueError("conv blocking: row tiles need the columns vectorised (vector 'ow')")
        if self.rows_first and self.vector != "oc":
            raise ValueError("conv blocking: rows before channel blocks is a choice of the direct template (vector 'oc')")

    def padded_width(self, width: int) -> int:
        return -(-width // self.width_tile) * self.width_tile

    def padded_height(self, height: int) -> int:
        return -(-height // self.rows) * self.rows


def is_pointwise(kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int]) -> bool:
    """A 1×1 convolution with unit strides and no padding: a matrix product
    over the H·W positions, which the pointwise kernel computes."""
    return tuple(kernel) == (1, 1) and tuple(strides) == (1, 1) and not any(padding)



# The direct template -----------------------------------------------------------

FMA_LATENCY = 4
"""Cycles from one FMA to the next on the same accumulator (AVX2 and AVX-512 cores)."""

FMA_PORTS = 2
"""Vector FMAs issued per cycle."""

LOAD_PORTS = 2.5
"""Vector loads and broadcasts issued per cycle (2 or 3 on current x86 cores)."""


def accumulator_budget(unit: VectorUnit) -> int:
    """Vector accumulators one register tile may use: the registers less one
    per weight vector, one for the broadcast input and a few for addresses
    the compiler keeps in vector registers (on AVX2 the largest tile that
    compiled without spills: docs/benchmarks.md, Measurements behind the
    schedules)."""
    return unit.registers - 6


def native_width(channels: int, lanes: int) -> int:
    """The narrowest vector of a power-of-two width (up to `lanes`) that holds
    `channels`: a vector of another width is split by the code generator into
    narrower ones (12 lanes into 8 + 4), whose extra loads and FMAs cost more
    than the padded lanes do (48→12 channels 3×3 at 32² ran 32 GFLOP/s in
    blocks of 12, 126 in blocks of 16: docs/benchmarks.md, "Measurements
    behind the schedules")."""
    width = 1
    while width < min(channels, lanes):
        width *= 2
    return width


def _channel_blocks(groups: int, out_group: int, lanes: int) -> list[int]:
    """The output-channel blocks a group of `out_group` channels allows: whole
    vectors (zero-padded past the channels with one group; dividing the group
    with several, so that no block straddles two), else the group itself
    (with one group, padded to its `native_width`)."""
    if out_group <= lanes:
        return [native_width(out_group, lanes) if groups == 1 else out_group]
    vectors = [b for b in (lanes, 2 * lanes) if groups == 1 or out_group % b == 0]
    if vectors:
        return vectors
    return [max(d for d in range(1, 2 * lanes + 1) if out_group % d == 0)]


def tile_efficiency(
    block: int, width_tile: int, out_group: int, out_width: int, lanes: int, latency: int = FMA_LATENCY,
) -> float:
    """Useful FMAs per issued FMA slot of one accumulation step (a `block` ×
    `width_tile` tile updated by one input channel and tap), in a model of
    the core: a step takes as long as the FMAs, the loads (one per weight
    vector and per broadcast column) or the `latency` of its chain of FMAs,
    whichever is longest; work on padded channels, lanes and columns is wasted."""
    vectors = -(-block // lanes)
    accumulators = vectors * width_tile
    cycles = max(accumulators / FMA_PORTS, (vectors + width_tile) / LOAD_PORTS, latency)
    useful = (
        out_group / (-(-out_group // block) * block)
        * block / (vectors * lanes)
        * out_width / (-(-out_width // width_tile) * width_tile)
    )
    return useful * accumulators / (FMA_PORTS * cycles)


def packed_channel_blocks(out_channels: int, layout_block: int, lanes: int) -> list[int]:
    """The channel blocks of a convolution whose output is stored in blocks
    of `layout_block`: those of `_channel_blocks`, and three vectors, that
    are multiples of it and divide the channels (a tile stores whole layout
    blocks, no tail), else the layout block itself. Three vectors by four
    columns load fewer values per FMA than two by six or one by twelve, which
    the issue model scores alike: 144→24 channels 1×1 at 56² in blocks of 8
    ran 87 GFLOP/s as 8×12 and 169 as 24×4 on AVX2 (docs/benchmarks.md,
    Measurements behind the schedules). Without a layout the channels are padded to the
    block, so three vectors would waste lanes on most channel counts."""
    blocks = [*_channel_blocks(1, out_channels, lanes), 3 * lanes]
    fits = [b for b in blocks if b % layout_block == 0 and out_channels % b == 0]
    return fits or [layout_block]


def channel_blocking(
    groups: int, out_group: int, out_width: int, unit: VectorUnit, layout_block: int | None = None,
    *, budget: int | None = None, latency: int = FMA_LATENCY,
) -> ConvBlocking:
    """The direct template's blocking of a convolution with `groups` groups
    of `out_group` output channels and `out_width` output columns: of the
    channel blocks the groups allow (one or two vectors, see
    `_channel_blocks`) and the column tiles that fit the accumulator
    `budget` (default `accumulator_budget`), the most efficient by
    `tile_efficiency` (with `latency`); on a tie, the one wasting the
    fewest columns, then the larger tile (fewer reloads of inputs and
    weights). With `layout_block` (an ungrouped convolution whose output is
    stored in blocks of it), the blocks of `packed_channel_blocks`."""
    lanes = unit.lanes
    budget = budget or accumulator_budget(unit)
    candidates = []
    if layout_block is None:
        choices = _channel_blocks(groups, out_group, lanes)
    else:
        choices = packed_channel_blocks(out_group, layout_block, lanes)
    for block in choices:
        vectors = -(-block // lanes)
        for width_tile in range(1, min(out_width, max(1, budget // vectors)) + 1):
            efficiency = tile_efficiency(block, width_tile, out_group, out_width, lanes, latency)
            waste = -(-out_width // width_tile) * width_tile - out_width
            candidates.append(((round(efficiency, 3), -waste, vectors * width_tile, block), block, width_tile))
    _, block, width_tile = max(candidates)
    return ConvBlocking(block, width_tile)


def vectorizes_columns(groups: int, out_group: int, unit: VectorUnit) -> bool:
    """Whether a grouped convolution runs GSPC rather than
    the direct template: where a group has no more channels than a vector,
    or a count no whole vectors divide, so that the direct template's
    channel vectors would be partly idle, or its tiles too short in
    channels to amortise their broadcasts. (Groups of 2 to 8 channels run
    faster by GSPC, groups of 16 and 32 slightly slower: docs/benchmarks.md,
    Measurements behind the schedules.)"""
    if groups == 1:
        return False
    lanes = unit.lanes
    if out_group <= lanes:
        return True
    return not any(b % lanes == 0 and out_group % b == 0 for b in _channel_blocks(groups, out_group, lanes))


L2_BYTES = 512 * 1024
"""A core's private L2 (Zen 2 to 4; Intel's are larger): what `runs_rows_first`
assumes stays cached from one pass over a tensor to the next."""


def runs_rows_first(
    in_shape: tuple[int, int, int], out_channels: int, out_height: int, kernel: tuple[int, int], block: int,
    *, packed_input: bool = False,
) -> bool:
    """Whether the direct template of an ungrouped convolution (input
    C × H × W) should run its output rows before its channel blocks. Channel
    blocks first, each block's weights stay in L2 over all rows, but every
    block reads the whole input again, from L3 where it does not fit; rows
    first, each row's input stays in L2 over all blocks, but every row reads
    all the weights. The order that moves fewer bytes into L2 wins; a tie
    keeps channel blocks first. So 64 channels at 56² (an 800 KB input,
    147 KB of weights) run faster and steadier rows first, and 256 channels
    at 14² (2.4 MB of weights) slower rows first (docs/benchmarks.md,
    Measurements behind the schedules).

    A `packed_input` (channel blocks, written by a convolution that ran
    its rows first too: `tconv compile`'s layouts) counts twice channel
    blocks first: every thread then reads the whole input, half of it from
    the core that wrote it, where rows first each reads the rows it wrote.
    Chains of 1×1 layers in blocks of 16 ran 1.1–1.4× faster rows first
    (docs/benchmarks.md, "1×1 layers as they run in a network")."""
    input_bytes = 4 * in_shape[0] * in_shape[1] * in_shape[2]
    weight_bytes = 4 * out_channels * in_shape[0] * kernel[0] * kernel[1]
    blocks = -(-out_channels // block)
    reads = 2 if packed_input else 1
    channels_first = weight_bytes + reads * input_bytes * (1 if input_bytes <= L2_BYTES else blocks)
    rows_first = input_bytes + weight_bytes * (1 if weight_bytes <= L2_BYTES else out_height)
    return rows_first < channels_first


def conv2d_blocking(
    groups: int, out_group: int, out_width: int, unit: VectorUnit,
    *, out_height: int | None = None, kernel: tuple[int, int] = (3, 3), layout_block: int | None = None,
    in_shape: tuple[int, int, int] | None = None, columns: bool | None = None, packed_input: bool = False,
) -> ConvBlocking:
    """The blocking of a convolution with `groups` groups of `out_group`
    output channels, `out_height` × `out_width` outputs (square where the
    height is not given) and a `kernel` window: GSPC's where
    `vectorizes_columns` (`gspc_blocking`), else the direct
    template's (`channel_blocking`, for an output stored in blocks of
    `layout_block` where given), with rows first where `runs_rows_first`
    for an ungrouped one whose `in_shape` (C, H, W) is given (`packed_input`:
    stored in channel blocks). A 1×1 kernel has no taps to address, so its
    tile gets the pointwise kernel's registers (`pointwise_blocking`, told
    the input channels where `in_shape` gives them): in blocks of 16, 32
    channels × 14 columns ran 1×1 chains at 14² 5–10% faster than × 7.
    `columns` True or False asks for GSPC or the direct template whatever
    the models say (an `algorithm` of the schedule)."""
    if columns is None:
        columns = layout_block is None and vectorizes_columns(groups, out_group, unit)
    if columns:
        return gspc_blocking(out_group, out_height or out_width, out_width, kernel, unit)
    if tuple(kernel) == (1, 1):
        in_group = None if in_shape is None else in_shape[0] // groups
        blocking = pointwise_blocking(groups, out_group, out_width, unit, layout_block, in_group)
    else:
        blocking = channel_blocking(groups, out_group, out_width, unit, layout_block)
    if groups == 1 and in_shape is not None:
        rows_first = runs_rows_first(
            in_shape, out_group, out_height or out_width, kernel, blocking.block, packed_input=packed_input
        )
        blocking = replace(blocking, rows_first=rows_first)
    return blocking


L1_WAY_BYTES = 4096
"""Bytes between addresses that share an L1 set (32 KiB 8-way, 48 KiB 12-way)."""


def skews_planes(height: int, width: int, padding) -> bool:
    """Whether a convolution should copy its unpadded input with one more
    column: where the channel planes are a whole number of L1 ways apart
    (32×32 floats), the tile's loads from successive channels all fall in
    one L1 set and evict each other (256→256 1×1 at 32² gains from the
    copy, 16² and 56² lose from it: docs/benchmarks.md, Measurements behind
    the schedules)."""
    return not any(padding) and (height * width * 4) % L1_WAY_BYTES == 0


def pointwise_blocking(
    groups: int, out_group: int, positions: int, unit: VectorUnit, layout_block: int | None = None,
    in_group: int | None = None,
) -> ConvBlocking:
    """The blocking of the pointwise kernel (`tconv.lowering.tvm.ops.pointwise_conv2d`, over
    `positions` flattened positions): `channel_blocking`'s, with two more
    accumulators (its loop addresses one input row and one weight block,
    where the direct template also keeps taps and rows) and an FMA chain a
    cycle longer (a broadcast load feeds each step; with just enough
    accumulators for the FMA latency it falls behind). On 256 channels at
    14², timed alone, 16×6 ran faster than 16×4 (the latency bound exactly)
    and 16×7 spills (docs/benchmarks.md, Measurements behind the schedules).

    Where the convolution reduces (`in_group`, the input channels of a
    group where known, at least `out_group`) the tile need only cover the
    FMA latency, and a tile that divides the positions wins: on AVX2 (AMD
    Zen 3, in the network) 512→512, 1024→256 and 384→64 at 14² ran 15–30%
    faster as 16 × 4 than as 16 × 6 (its tail neither the clamp nor the
    addressing: both were tried), while the expansion 256→1024 ran 10%
    faster as 16 × 6. The same holds for a 1×1 whose rows the direct
    template tiles (`conv2d_blocking`): ResNet-50's 256→64 at 56², 512→128
    at 28² and stride-2 projections ran 7–16% faster as 16 × 4
    (docs/benchmarks.md, "1×1 layers that reduce"). AVX-512's tiles for
    the zoo's layers come out the same either way."""
    reduces = in_group is not None and in_group >= out_group
    return channel_blocking(
        groups, out_group, positions, unit, layout_block, budget=accumulator_budget(unit) + 2,
        latency=FMA_LATENCY + (0 if reduces else 1),
    )


def tiles_positions(
    groups: int, out_group: int, out_height: int, out_width: int, unit: VectorUnit,
    layout_block: int | None = None,
) -> bool:
    """Whether a pointwise convolution (`is_pointwise`) should tile its
    flattened H·W positions rather than its rows: where that tiles better by
    `tile_efficiency`, which is on small images (7×7, 14×14), whose rows fit
    no register tile well. (On wide rows it is slower: the epilogue's vector
    stores cannot tell that a tile stays within one row.)"""

    if vectorizes_columns(groups, out_group, unit):
        return False  # GSPC tiles rows and columns; the pointwise kernel has no column vectors

    def efficiency(columns: int) -> float:
        blocking = channel_blocking(groups, out_group, columns, unit, layout_block)
        return tile_efficiency(blocking.block, blocking.width_tile, out_group, columns, unit.lanes)

    return efficiency(out_height * out_width) > efficiency(out_width) + 1e-3


def runs_pointwise(
    kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int], groups: int, out_group: int,
    out_height: int, out_width: int, unit: VectorUnit, layout_block: int | None = None,
) -> bool:
    """Whether a convolution without a loop schedule runs the pointwise
    kernel over its flattened positions: a 1×1 convolution (`is_pointwise`)
    whose positions tile better than its rows (`tiles_positions`). No
    schedule asks for it (a schedule tiles rows), so a tuner measures it as
    the unscheduled convolution."""
    return is_pointwise(kernel, strides, padding) and tiles_positions(
        groups, out_group, out_height, out_width, unit, layout_block
    )


def depthwise_channel_blocking(channels: int, out_width: int, unit: VectorUnit) -> ConvBlocking:
    """The direct depthwise blocking: one vector of channels (fewer for
    narrow layers) by the column tile that fits the accumulator budget best
    by `tile_efficiency`."""
    block = min(unit.lanes, channels)
    candidates = [
        (round(tile_efficiency(block, t, block, out_width, unit.lanes), 3), -(-(-out_width // t) * t), t)
        for t in range(1, min(out_width, accumulator_budget(unit)) + 1)
    ]
    return ConvBlocking(block, max(candidates)[2])


def depthwise_blocking(
    channels: int, out_width: int, unit: VectorUnit,
    *, out_height: int | None = None, kernel: tuple[int, int] = (3, 3), columns: bool | None = None,
) -> ConvBlocking:
    """The blocking of a depthwise convolution: GSPC's (one channel, a tile
    of rows × vectors of columns, `gspc_blocking`) unless a
    vector of channels tiles clearly better by the issue-rate models, which
    is where the image is narrower than a vector. GSPC reads and writes
    NCHW as it is, where the channel-vector kernel transposes the input to
    NCHW[8]c and its tile back, so GSPC runs faster (docs/benchmarks.md,
    Measurements behind the schedules). `columns` True or False asks for
    GSPC or the vector of channels whatever the models say."""
    if columns is False:
        return depthwise_channel_blocking(channels, out_width, unit)
    by_columns = gspc_blocking(1, out_height or out_width, out_width, kernel, unit, in_group=1)
    if columns:
        return by_columns
    by_channels = depthwise_channel_blocking(channels, out_width, unit)
    gspc = column_efficiency(
        1, by_columns.rows, by_columns.width_tile, 1, out_height or out_width, out_width, kernel, unit.lanes,
        in_group=1,
    )
    direct = tile_efficiency(by_channels.block, by_channels.width_tile, by_channels.block, out_width, unit.lanes)
    return by_columns if gspc >= direct - 0.05 else by_channels


def dense_block(out_features: int, unit: VectorUnit) -> int:
    """Output features per packed dense block: two vectors, or one for narrow layers."""
    return 2 * unit.lanes if out_features > unit.lanes else unit.lanes



# GSPC ------------------------------------------------------------------------


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _tile_traffic(block: int, rows: int, width_tile: int, kernel: tuple[int, int], lanes: int) -> tuple[int, int]:
    """(FMAs, loads) of one accumulation step of a GSPC tile: per tap, one
    FMA per channel, row and vector of columns, and one weight broadcast per
    channel; the input vectors are shared between the rows of the tile (r
    rows under kh tap rows read r + kh - 1 input rows, not r·kh)."""
    kh, kw = kernel
    vectors = -(-width_tile // lanes)
    return kh * kw * block * rows * vectors, kh * kw * block + (rows + kh - 1) * kw * vectors


def column_efficiency(
    block: int, rows: int, width_tile: int, out_group: int, out_height: int, out_width: int,
    kernel: tuple[int, int], lanes: int, in_group: int = 2,
) -> float:
    """Useful FMAs per issued FMA slot of one GSPC accumulation step (one
    input channel, all taps), in the core model of
    `tile_efficiency`: the step takes as long as its FMAs, its
    loads (`_tile_traffic`) or the FMA latency of each accumulator's chain,
    whichever is longest; padded columns, rows and lanes of the last vector
    are wasted. `block` must divide `out_group`.

    With one input channel per group (`in_group` 1: depthwise) a tile is a
    few dozen instructions with no loop, and the core overlaps successive
    tiles: the latency bound does not hold."""
    fmas, loads = _tile_traffic(block, rows, width_tile, kernel, lanes)
    taps = kernel[0] * kernel[1]
    vectors = -(-width_tile // lanes)
    latency = taps * FMA_LATENCY if in_group > 1 else 0
    cycles = max(fmas / FMA_PORTS, loads / LOAD_PORTS, latency)
    useful = (
        out_width / (-(-out_width // width_tile) * vectors * lanes)
        * out_height / (-(-out_height // rows) * rows)
    )
    return useful * fmas / (FMA_PORTS * cycles)


def depthwise_accumulators(kernel: tuple[int, int], unit: VectorUnit) -> int:
    """Accumulators a depthwise GSPC tile should keep to: the registers
    that the kernel's weights (one broadcast each, kept across tiles) and
    two temporaries leave, where at least two are left (on AVX2 with 3×3,
    4 accumulators run faster than 8, which push the weights out of
    registers: docs/benchmarks.md, Measurements behind the schedules); else
    the accumulator budget."""
    left = unit.registers - 2 - kernel[0] * kernel[1]
    return left if left >= 2 else accumulator_budget(unit)


def gspc_candidates(
    out_group: int, out_height: int, out_width: int, unit: VectorUnit, max_block: int = 8, max_rows: int = 8,
    budget: int | None = None,
) -> list[ConvBlocking]:
    """Every GSPC blocking whose tile fits the accumulator `budget` (default
    `accumulator_budget`): blocks dividing a group's channels (up to
    `max_block`), up to `max_rows` rows (no more than the image has), column
    tiles of whole vectors narrower than the image, or the image's width."""
    lanes = unit.lanes
    budget = budget or accumulator_budget(unit)
    widths = sorted({lanes * v for v in range(1, out_width // lanes + 1)} | {out_width})
    return [
        ConvBlocking(block, width_tile, vector="ow", rows=rows)
        for block in _divisors(out_group) if block <= max_block
        for rows in range(1, min(out_height, max_rows) + 1)
        for width_tile in widths
        if block * rows * -(-width_tile // lanes) <= budget
    ]


def gspc_blocking(
    out_group: int, out_height: int, out_width: int, kernel: tuple[int, int], unit: VectorUnit,
    in_group: int = 2,
) -> ConvBlocking:
    """The GSPC blocking `column_efficiency` rates best (depthwise, with
    `in_group` 1: of those within `depthwise_accumulators`); on a tie, the
    one wasting the fewest columns and rows, then the one with the widest
    channel block up to 4 (4 channels × 2 rows run faster than 2 × 4 with
    8 and 4 channels per group, though they load more: docs/benchmarks.md,
    Measurements behind the schedules), then the fewest loads per FMA."""
    depthwise = in_group == 1 and out_group == 1
    budget = depthwise_accumulators(kernel, unit) if depthwise else None

    def rank(b: ConvBlocking):
        efficiency = column_efficiency(
            b.block, b.rows, b.width_tile, out_group, out_height, out_width, kernel, unit.lanes, in_group
        )
        waste = b.padded_width(out_width) * b.padded_height(out_height) - out_width * out_height
        fmas, loads = _tile_traffic(b.block, b.rows, b.width_tile, kernel, unit.lanes)
        return (round(efficiency, 3), -waste, min(b.block, 4), -round(loads / fmas, 2), b.block, b.rows)

    return max(gspc_candidates(out_group, out_height, out_width, unit, budget=budget), key=rank)



MIN_PARALLEL_GROUPS = 8
"""Groups enough to be the parallel tasks by themselves (a few per thread)."""


def runs_groups_in_parallel(groups: int) -> bool:
    """Whether GSPC runs batch·group tasks, each copying its group's input
    and then running the group's channel blocks and row tiles in order (the
    schedule's `parallel = ["n", "g"]`), rather than batch·group·block·row
    tasks after a parallel copy of the whole input (`["n", "g", "oc.0",
    "oh.0"]`): where there are MIN_PARALLEL_GROUPS groups."""
    return groups >= MIN_PARALLEL_GROUPS


INT8_MAX_COLUMNS = 14
"""Most output columns of one int8 register tile; a row of 16 or more ran
slower (docs/benchmarks.md, int8 convolutions)."""
INT8_ACCUMULATORS = 16
"""Most accumulators of one int8 register tile, rows × columns × blocks of
16 output channels (more spill: AVX-512 has 32 vector registers)."""
INT8_LATENCY_ACCUMULATORS = 12
"""Accumulators (independent `vpdpbusd` chains) a tile needs to hide the
instruction's latency. Measured on 3×3 layers at 2 threads: 64ch 32² ran at
1,338 GOP/s with 2 rows × 8 columns, 1,184 with 1 × 12; 512ch 4² at 1,246
with 4 × 4, 564 with 1 × 4 × 2 blocks; 256ch 14² at 1,181 with 2 × 2 × 4,
1,346–1,544 with 14 accumulators of 7 or 14 columns."""


PAIRS_ACCUMULATORS = 3
PAIRS_LATENCY_ACCUMULATORS = 2
"""The same for a `vpmaddwd` kernel (AVX2), whose accumulator of 16 output
channels is 2 × 16 int32 partial sums, 4 of AVX2's 16 vector registers:
at most 3 (12 registers, the widened weights and input beside them), and
2 for latency (each partial sum's chain is a 1-cycle `vpaddd`)."""


@dataclass(frozen=True)
class Int8Tile:
    """An int8 register tile: `rows` × `columns` output positions × `blocks`
    blocks of 16 output channels, one accumulator vector each."""

    rows: int
    columns: int
    blocks: int


def int8_register_tile(
    out_height: int, out_width: int, group_blocks: int, columns: int | None = None, dot: str | None = None,
) -> Int8Tile:
    """The int8 kernel's register tile for an output of `out_height` ×
    `out_width` with `group_blocks` blocks of 16 channels per group (a tile
    lies in one group; `columns`: given, else chosen) whose dot products
    are `dot`'s (`VectorUnit.int8_dot`): enough accumulators
    (INT8_LATENCY_ACCUMULATORS, at most INT8_ACCUMULATORS; for `vpmaddwd`
    the PAIRS_ ones), times the share
    of computed columns that are real (a row padded to whole tiles computes waste); on ties wider tiles,
    then more rows rather than blocks (a weight vector loaded once serves
    all of a tile's rows and columns). Rows and blocks divide the height
    and the group's blocks, and a tile has no more blocks than positions (a
    tile of one column and 16 blocks would load each weight vector for one
    product)."""
    most, latency = (
        (PAIRS_ACCUMULATORS, PAIRS_LATENCY_ACCUMULATORS) if dot == VPMADDWD
        else (INT8_ACCUMULATORS, INT8_LATENCY_ACCUMULATORS)
    )
    widths = [columns] if columns else range(1, min(out_width, INT8_MAX_COLUMNS, most) + 1)

    def score(tile: Int8Tile) -> tuple[float, int, int]:
        used = out_width / (-(-out_width // tile.columns) * tile.columns)
        filled = min(1.0, tile.rows * tile.columns * tile.blocks / latency)
        return used * filled, tile.columns, tile.rows

    return max(
        (
            Int8Tile(r, t, d)
            for t in widths
            for r in range(1, out_height + 1) if out_height % r == 0
            for d in range(1, min(group_blocks, r * t) + 1)
            if group_blocks % d == 0 and r * t * d <= max(most, t)
        ),
        key=score,
    )


def sparse_column_tile(out_width: int, unit: VectorUnit) -> tuple[int, int]:
    """(columns a register tile of the sparse kernel holds, the output width
    it computes): a row that fits one vector is one tile; a wider one is
    computed to whole vectors (its last columns discarded) in tiles of two
    vectors where they divide it, else one. A tile that does not divide the
    width would leave LLVM a masked, scalarised loop."""
    lanes = unit.lanes
    if out_width <= lanes:
        return out_width, out_width
    width = -(-out_width // lanes) * lanes
    return (2 * lanes if width % (2 * lanes) == 0 else lanes), width
