"""Weight layouts of the TVM kernels, and the numpy functions that pack
parameters into them. Packing runs once, at compile time, on the parameter
store; the kernels then read the packed arrays.

Layouts (row-major, float32):

- **conv2d weight**, `G x OB x C/G x KH x KW x block` ("OIHW[block]o" per
  group): element (g, ob, c, y, x, i) is the OIHW weight of output channel
  g·(O/G) + ob·block + i, input channel c of group g, tap (y, x), or zero
  where ob·block + i is past the group's O/G output channels (the padded tail
  of the last block). The `block` consecutive output channels of one tap are
  contiguous, so the kernel loads them as one vector.
- **conv2d weight for an input in channel blocks** (one group, the input
  stored NCHW[in_block]c), `1 x OB x C/in_block x KH x KW x in_block x block`
  ("OIHW[in_block]i[block]o"): element (0, ob, cb, y, x, j, i) is the OIHW
  weight of output channel ob·block + i, input channel cb·in_block + j, tap
  (y, x) (zero past the channels). The kernel walks input-channel blocks,
  taps, then the channels of a block, so it reads this array in order.
- **depthwise conv2d weight** (groups = C = O), `CB x KH x KW x block`:
  element (cb, y, x, i) is the OIHW weight (C x 1 x KH x KW) of channel
  cb·block + i at tap (y, x), or zero past the C channels; a tap's `block`
  channels are one vector.
- **dense weight**, `MB x K x block`: element (mb, k, i) is W[mb·block + i, k],
  or zero past the M rows.

The GSPC kernels (`schedule_gspc`) read the same conv2d and depthwise
layouts (the depthwise one with block 1, i.e. C x KH x KW x 1), one weight
at a time, broadcast against a vector of output columns: a block's weights
of one input channel are `block` × KH × KW consecutive floats either way.
"""

from __future__ import annotations

import numpy as np


def blocks(extent: int, block: int) -> int:
    """Number of blocks of `block` that cover `extent`."""
    return -(-extent // block)


def pack_conv2d_weight(weight: np.ndarray, groups: int, block: int, in_block: int | None = None) -> np.ndarray:
    """OIHW weight (O x C/G x KH x KW) → G x OB x C/G x KH x KW x block, or
    with `in_block` (one group) 1 x OB x C/in_block x KH x KW x in_block x
    block (see above)."""
    out_channels, group_channels, kh, kw = weight.shape
    if in_block is not None:
        if groups != 1 or group_channels % in_block:
            raise ValueError(
                f"pack_conv2d_weight: input blocks of {in_block} need one group and channels they divide, "
                f"got groups {groups}, {group_channels} input channels"
            )
        packed = pack_conv2d_weight(weight, 1, block)  # 1 x OB x C x KH x KW x block
        _, out_blocks, _, _, _, _ = packed.shape
        packed = packed.reshape(1, out_blocks, group_channels // in_block, in_block, kh, kw, block)
        return np.ascontiguousarray(packed.transpose(0, 1, 2, 4, 5, 3, 6))
    if out_channels % groups:
        raise ValueError(f"pack_conv2d_weight: {out_channels} output channels not divisible by groups {groups}")
    out_group = out_channels // groups
    out_blocks = blocks(out_group, block)
    padded = np.zeros((groups, out_blocks * block, group_channels, kh, kw), np.float32)
    padded[:, :out_group] = weight.reshape(groups, out_group, group_channels, kh, kw)
    packed = padded.reshape(groups, out_blocks, block, group_channels, kh, kw).transpose(0, 1, 3, 4, 5, 2)
    return np.ascontiguousarray(packed)


def pack_depthwise_weight(weight: np.ndarray, block: int) -> np.ndarray:
    """OIHW depthwise weight (C x 1 x KH x KW) → CB x KH x KW x block (see above)."""
    channels, one, kh, kw = weight.shape
    if one != 1:
        raise ValueError(f"pack_depthwise_weight: expected C x 1 x KH x KW, got {'x'.join(map(str, weight.shape))}")
    padded = np.zeros((blocks(channels, block) * block, kh, kw), np.float32)
    padded[:channels] = weight[:, 0]
    return np.ascontiguousarray(padded.reshape(-1, block, kh, kw).transpose(0, 2, 3, 1))


def pack_dense_weight(weight: np.ndarray, block: int) -> np.ndarray:
    """M x K weight → MB x K x block (see above)."""
    rows, features = weight.shape
    out_blocks = blocks(rows, block)
    padded = np.zeros((out_blocks * block, features), np.float32)
    padded[:rows] = weight
    return np.ascontiguousarray(padded.reshape(out_blocks, block, features).transpose(0, 2, 1))


INT8_LANES = 16
"""Output channels of one int8 accumulator vector (16 int32 lanes of AVX-512)."""
INT8_DEPTH = 4
"""Input channels one int8 dot-product instruction sums per lane (`vpdpbusd`)."""


def pack_int8_conv2d_weight(weight: np.ndarray, in_channels: int, groups: int = 1, pairs: bool = False) -> np.ndarray:
    """An OIHW int8 weight in the int8 kernels' layout
    `O16/16 x C4/4G x KH x KW x 16 x 4`: element (ob, cb, y, x, i, j) is the
    weight of output channel ob·16 + i, input channel cb·4 + j of its group
    (a block of 16 lies in one group) at tap (y, x); with one group, zero past the O output and the
    C input channels. `in_channels` is C4, the input's channels as stored (a
    multiple of 4; with groups, C itself, each group's a multiple of 4, and
    each group's output channels a multiple of 16). One tap's 16 × 4 block
    is what one `vpdpbusd` multiplies by 4 input channels. With `pairs`
    (the `vpmaddwd` kernels) the block is ordered pair by pair,
    `... x 2 x 16 x 2`: element (..., h, i, k) is input channel cb·4 + 2h + k
    of output channel ob·16 + i, so that 8 output channels × one pair are
    16 consecutive bytes."""
    out_channels, group_channels, kh, kw = weight.shape
    if in_channels % (INT8_DEPTH * groups) or in_channels < group_channels * groups:
        raise ValueError(f"int8 weight: {in_channels} stored input channels cannot hold {groups} groups of "
                         f"{group_channels} in fours")
    if groups > 1 and (out_channels // groups) % INT8_LANES:
        raise ValueError(f"int8 weight: a group's {out_channels // groups} output channels are not a multiple of "
                         f"{INT8_LANES}")
    o16 = blocks(out_channels, INT8_LANES) * INT8_LANES
    stored = in_channels // groups
    padded = np.zeros((o16, stored, kh, kw), np.int8)
    padded[:out_channels, :group_channels] = weight
    packed = padded.reshape(o16 // INT8_LANES, INT8_LANES, stored // INT8_DEPTH, INT8_DEPTH, kh, kw)
    packed = packed.transpose(0, 2, 4, 5, 1, 3)
    if pairs:
        packed = packed.reshape(*packed.shape[:5], 2, INT8_DEPTH // 2).transpose(0, 1, 2, 3, 5, 4, 6)
    return np.ascontiguousarray(packed)


def pack_int8_depthwise_weight(weight: np.ndarray) -> np.ndarray:
    """A depthwise int8 weight (C x 1 x KH x KW) in the int8 kernels' layout
    `C16/16 x KH x KW x 16`: element (cb, y, x, i) is channel cb·16 + i's
    weight at tap (y, x), zero past the C channels; a tap's 16 channels are
    one vector."""
    channels, _, kh, kw = weight.shape
    padded = np.zeros((blocks(channels, INT8_LANES) * INT8_LANES, kh, kw), np.int8)
    padded[:channels] = weight[:, 0]
    return np.ascontiguousarray(padded.reshape(-1, INT8_LANES, kh, kw).transpose(0, 2, 3, 1))


def pack_sparse_conv2d_weight(
    weight: np.ndarray, groups: int, nonzeros: int, padded_size: tuple[int, int], dilations: tuple[int, int],
    pattern: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """OIHW weight → the sparse kernel's (values O x nonzeros float32,
    offsets O x nonzeros int32): output channel o's weights at the nonzero
    entries of `pattern` (default: the weight itself), in (channel, row,
    column) order, each with the offset of its tap in the flattened padded
    input (Hp x Wp = `padded_size`, its channel counted across groups);
    rows padded with value 0 at offset 0. A channel with more than
    `nonzeros` nonzero entries is an error."""
    out_channels, group_channels, kh, kw = weight.shape
    pattern = weight if pattern is None else pattern
    hp, wp = padded_size
    dh, dw = dilations
    counts = np.count_nonzero(pattern.reshape(out_channels, -1), axis=1)
    if counts.max(initial=0) > nonzeros:
        worst = int(np.argmax(counts))
        raise ValueError(f"output channel {worst} has {counts[worst]} nonzero weights, more than the {nonzeros} "
                         "its convolution declares (nonzeros)")
    c, y, x = np.meshgrid(np.arange(group_channels), np.arange(kh), np.arange(kw), indexing="ij")
    tap = (c * hp * wp + y * dh * wp + x * dw).reshape(-1)
    out_group = out_channels // groups
    values = np.zeros((out_channels, nonzeros), np.float32)
    offsets = np.zeros((out_channels, nonzeros), np.int32)
    for o in range(out_channels):
        (entries,) = np.nonzero(pattern[o].reshape(-1))
        values[o, : len(entries)] = weight[o].reshape(-1)[entries]
        offsets[o, : len(entries)] = tap[entries] + (o // out_group) * group_channels * hp * wp
    return values, offsets
