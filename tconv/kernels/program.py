"""The call list of a compiled network: which kernel runs on which tensors.

This is the contract between the TVM lowering (which produces it beside the
compiled kernels) and whatever executes them: `run_tvm` in Python, the C
runtime shim through an artifact. It imports neither TVM nor xDSL.

A `KernelProgram` holds

- `tensors`: every tensor a call touches, numbered 0, 1, ... (`Tensor.id` is
  its index). Each is dense, row-major, of `shape` and `dtype` (`f32`, or in
  a quantised network's integer kernels `u8`, `i8`, `i32`: DTYPES), and is
  one of
    - `input`: argument `index` of the network's function (NCHW);
    - `param`: parameter store entry `name`, used as stored;
    - `derived`: an array computed once, at compile time, from store entries
      by `recipe` (packed, batch-norm-folded weights and biases); an artifact
      writer calls `program.materialize(params)` to get them;
    - `activation`: written by exactly one call, read by later ones; these
      are what a memory planner places in the arena. An activation a
      convolution stores in channel blocks (NCHW[b]c) has the shape it is
      stored in, N x C/b x H x W x b: the same bytes as NCHW.
- `calls`: the kernels in execution order. `KernelCall.args` are tensor ids
  in the order of the kernel's parameters: the tensors it reads, then the one
  tensor it writes, last. A kernel writes every element of its output and
  reads nothing else of it; its output never aliases one of its inputs. Calls
  may share a `symbol` (identical kernels are compiled once).
- `outputs`: the ids of the function's results, in order (activations, or in
  degenerate networks inputs or parameters).

In the runtime's text form (`format_calls`) a call is one line
`call <symbol> <id> <id> ...`.

A kernel symbol names a function with the tvm-ffi calling convention: every
argument a DLTensor (`DLTensor*` in the packed-args array) of the tensor's
shape and dtype, on the kernel's device, contiguous, its data 64-byte aligned
(the kernels use aligned vector loads: misaligned data crashes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from tconv.errors import TconvError
from tconv.kernels.folding import batch_norm_affine, fold_batch_norm
from tconv.kernels.packing import (
    INT8_LANES,
    blocks,
    pack_conv2d_weight,
    pack_dense_weight,
    pack_depthwise_weight,
    pack_int8_conv2d_weight,
    pack_int8_depthwise_weight,
    pack_sparse_conv2d_weight,
)
from tconv.kernels.winograd import transform_weight
from tconv.semantics.int8 import Requantization, dequantize_array, quantize_array

TensorKind = Literal["input", "param", "derived", "activation"]

DTYPES = {"f32": np.dtype(np.float32), "u8": np.dtype(np.uint8), "i8": np.dtype(np.int8), "i32": np.dtype(np.int32)}
"""Every tensor element type, by the token the plan writes, and its numpy type.
Network inputs, outputs and parameters used as stored are `f32`."""


@dataclass(frozen=True)
class Recipe:
    """How a derived tensor is computed from parameter store entries.

    `transform` names one of TRANSFORMS; `sources` maps the transform's roles
    (`weight`, `bias`, `scale`, `shift`, `mean`, `var`) to store entry names
    (absent roles: no such operand); `attributes` are its numbers."""

    transform: str
    sources: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, float | int | tuple[float, ...]], ...] = ()

    def source(self, role: str) -> str | None:
        return dict(self.sources).get(role)

    def attribute(self, name: str) -> float | int | tuple[float, ...]:
        return dict(self.attributes)[name]


@dataclass(frozen=True)
class Tensor:
    """One tensor of the program (see the module docstring for the kinds)."""

    id: int
    kind: TensorKind
    shape: tuple[int, ...]
    name: str
    """For diagnostics, without spaces. input: `arg<index>`; param: the store
    entry; derived: the entry it comes from and how (`conv1.weight:packed_...+bn`);
    activation: `%<n>`, n the index of the call that writes it."""
    index: int | None = None
    """input: the argument index."""
    recipe: Recipe | None = None
    """derived: how to compute it."""
    dtype: str = "f32"
    """A key of DTYPES."""

    @property
    def nbytes(self) -> int:
        return DTYPES[self.dtype].itemsize * int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class KernelCall:
    """One kernel invocation: `args[:-1]` are read, `args[-1]` is written."""

    symbol: str
    args: tuple[int, ...]
    ops: tuple[str, ...]
    """The tconv ops it computes (`conv2d`, `batch_norm`, `relu`), for reports."""

    @property
    def reads(self) -> tuple[int, ...]:
        return self.args[:-1]

    @property
    def writes(self) -> int:
        return self.args[-1]


@dataclass
class KernelProgram:
    """A network as kernel calls over numbered tensors."""

    tensors: list[Tensor] = field(default_factory=list)
    calls: list[KernelCall] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def of_kind(self, kind: TensorKind) -> list[Tensor]:
        return [t for t in self.tensors if t.kind == kind]

    @property
    def inputs(self) -> list[Tensor]:
        return sorted(self.of_kind("input"), key=lambda t: t.index or 0)

    @property
    def symbols(self) -> list[str]:
        """The distinct kernel symbols, in order of first call."""
        return list(dict.fromkeys(call.symbol for call in self.calls))

    def materialize(self, params: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """The arrays of every `param` and `derived` tensor, by id, from the
        parameter store `params` (C-contiguous, of the tensor's shape and dtype)."""
        arrays: dict[int, np.ndarray] = {}
        for tensor in self.tensors:
            if tensor.kind == "param":
                value = np.ascontiguousarray(params[tensor.name], np.float32)
            elif tensor.kind == "derived":
                assert tensor.recipe is not None
                try:
                    value = derive(tensor.recipe, params)
                except ValueError as err:
                    raise TconvError(f"error: tensor {tensor.id} ({tensor.name}): {err}") from None
            else:
                continue
            if value.shape != tensor.shape or value.dtype != DTYPES[tensor.dtype]:
                raise ValueError(
                    f"tensor {tensor.id} ({tensor.name}): expected {tensor.dtype} {tensor.shape}, "
                    f"got {value.dtype} {value.shape}"
                )
            arrays[tensor.id] = value
        return arrays

    def format_calls(self) -> str:
        """The calls as text, one `call <symbol> <ids...>` per line."""
        return "".join(f"call {c.symbol} {' '.join(map(str, c.args))}\n" for c in self.calls)


# Parameter transforms ------------------------------------------------------------


def _batch_norm_sources(recipe: Recipe, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...] | None:
    names = [recipe.source(role) for role in ("scale", "shift", "mean", "var")]
    if names[0] is None:
        return None
    return tuple(np.asarray(params[name], np.float32) for name in names)  # type: ignore[index]


def _weight_scales(recipe: Recipe, rank: int) -> np.ndarray:
    """The recipe's `weight_scales`, shaped to broadcast over its weight: one
    per output channel, or one for the whole tensor."""
    scales = np.asarray(recipe.attribute("weight_scales"), np.float32)
    return scales.reshape((-1,) + (1,) * (rank - 1)) if len(scales) > 1 else scales.reshape(())


def _int8(recipe: Recipe, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The recipe's weight quantised to symmetric int8 with its `weight_scales`."""
    weight = np.asarray(params[recipe.source("weight")], np.float32)  # type: ignore[index]
    return quantize_array(weight, _weight_scales(recipe, weight.ndim), np.int32(0), -128, 127)


def _weight(recipe: Recipe, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The recipe's weight as a float32 layer computes with it: the store
    entry, or where the recipe has `weight_scales` the entry quantised to
    symmetric int8 and dequantised (a QDQ weight computed in float32)."""
    if "weight_scales" not in dict(recipe.attributes):
        return np.asarray(params[recipe.source("weight")], np.float32)  # type: ignore[index]
    w_q = _int8(recipe, params)
    return dequantize_array(w_q, _weight_scales(recipe, w_q.ndim), np.int32(0))


def _folded(recipe: Recipe, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The recipe's weight and bias, with its batch-norm folded in if it has one."""
    weight = _weight(recipe, params)
    bias_name = recipe.source("bias")
    bias = None if bias_name is None else np.asarray(params[bias_name], np.float32)
    statistics = _batch_norm_sources(recipe, params)
    if statistics is None:
        return weight, bias
    return fold_batch_norm(weight, bias, *statistics, float(recipe.attribute("epsilon")))


def _conv2d_weight(recipe, params):
    weight, _ = _folded(recipe, params)
    in_block = dict(recipe.attributes).get("in_block")
    return pack_conv2d_weight(
        weight, int(recipe.attribute("groups")), int(recipe.attribute("block")),
        None if in_block is None else int(in_block),
    )


def _depthwise_weight(recipe, params):
    weight, _ = _folded(recipe, params)
    return pack_depthwise_weight(weight, int(recipe.attribute("block")))


def _dense_weight(recipe, params):
    weight, _ = _folded(recipe, params)
    return pack_dense_weight(weight, int(recipe.attribute("block")))


def _winograd_weight(recipe, params):
    weight, _ = _folded(recipe, params)
    return transform_weight(weight)


def _folded_bias(recipe, params):
    statistics = _batch_norm_sources(recipe, params)
    assert statistics is not None, "folded_bias needs a batch-norm"
    bias_name = recipe.source("bias")
    bias = None if bias_name is None else np.asarray(params[bias_name], np.float32)
    # fold_batch_norm's bias does not depend on the weight: fold a stand-in.
    stand_in = np.zeros((len(statistics[0]), 1), np.float32)
    return fold_batch_norm(stand_in, bias, *statistics, float(recipe.attribute("epsilon")))[1]


def _batch_norm_factor(recipe, params):
    return batch_norm_affine(*_batch_norm_sources(recipe, params), float(recipe.attribute("epsilon")))[0]


def _batch_norm_offset(recipe, params):
    return batch_norm_affine(*_batch_norm_sources(recipe, params), float(recipe.attribute("epsilon")))[1]


def _int8_weight(recipe, params):
    quantized = _int8(recipe, params)
    if recipe.attribute("depthwise"):
        return pack_int8_depthwise_weight(quantized)
    return pack_int8_conv2d_weight(quantized, int(recipe.attribute("in_channels")), int(recipe.attribute("groups")),
                                   pairs=bool(dict(recipe.attributes).get("pairs", 0)))


def _requantization(recipe: Recipe, params: Mapping[str, np.ndarray]) -> Requantization:
    """The requantisation of an int8 convolution, a batch-norm after it
    folded into its per-channel step and offset (`semantics.int8`)."""
    w_q = _int8(recipe, params)
    w_scale = np.broadcast_to(np.asarray(recipe.attribute("weight_scales"), np.float32), (len(w_q),))
    bias_name = recipe.source("bias")
    bias = None if bias_name is None else np.asarray(params[bias_name], np.float32)
    statistics = _batch_norm_sources(recipe, params)
    if statistics is not None:
        factor, shift = batch_norm_affine(*statistics, float(recipe.attribute("epsilon")))
        if not np.all(factor != 0):
            raise ValueError(
                f"batch-norm scale 0 in output channel {int(np.argmin(factor != 0))} cannot be folded into an "
                "int8 convolution's requantisation"
            )
        w_scale = (w_scale * factor).astype(np.float32)
        bias = (shift if bias is None else bias * factor + shift).astype(np.float32)
    attributes = dict(recipe.attributes)
    out_scale = attributes.get("out_scale")
    return Requantization.of(
        float(recipe.attribute("x_scale")), int(recipe.attribute("x_zero_point")), w_q, w_scale, bias,
        out_scale=None if out_scale is None else float(out_scale),
        out_zero_point=int(attributes.get("out_zero_point", 0)),
    )


def _padded(values: np.ndarray, dtype) -> np.ndarray:
    """Per output channel `values`, zero past them to whole blocks of 16."""
    padded = np.zeros(blocks(len(values), INT8_LANES) * INT8_LANES, dtype)
    padded[: len(values)] = values
    return padded


def _int8_offset(recipe, params):
    return _padded(_requantization(recipe, params).offset, np.int32)


def _int8_scale(recipe, params):
    return _padded(_requantization(recipe, params).scale, np.float32)


def _sparse(recipe, params) -> tuple[np.ndarray, np.ndarray]:
    """The sparse kernel's values and offsets: the entries that are nonzero
    in the weight (before a batch-norm is folded in, so both halves agree)."""
    weight, _ = _folded(recipe, params)
    padded, dilations = recipe.attribute("padded"), recipe.attribute("dilations")
    return pack_sparse_conv2d_weight(
        weight, int(recipe.attribute("groups")), int(recipe.attribute("nonzeros")), tuple(padded), tuple(dilations),
        pattern=_weight(recipe, params),
    )


def _sparse_values(recipe, params):
    return _sparse(recipe, params)[0]


def _sparse_offsets(recipe, params):
    return _sparse(recipe, params)[1]


TRANSFORMS = {
    "conv2d_weight": _conv2d_weight,
    "depthwise_weight": _depthwise_weight,
    "dense_weight": _dense_weight,
    "winograd_weight": _winograd_weight,
    "folded_bias": _folded_bias,
    "batch_norm_factor": _batch_norm_factor,
    "batch_norm_offset": _batch_norm_offset,
    "int8_weight": _int8_weight,
    "int8_offset": _int8_offset,
    "int8_scale": _int8_scale,
    "sparse_values": _sparse_values,
    "sparse_offsets": _sparse_offsets,
}
"""Every recipe transform:

- `conv2d_weight` {weight, [scale, shift, mean, var]} (groups, block,
  [in_block], [epsilon]): the weight, batch-norm folded if the statistics
  are given, packed by `packing.pack_conv2d_weight` (for an input in
  channel blocks of `in_block` where given);
- `depthwise_weight`, `dense_weight` {weight, [scale, ...]} (block,
  [epsilon]): the same for depthwise convolutions and dense layers, packed
  by `packing.pack_depthwise_weight` and `packing.pack_dense_weight`;
- `winograd_weight` {weight, [scale, ...]} ([epsilon]): the weight,
  batch-norm folded, as `winograd.transform_weight` transforms it
  (36 × C × K, for a Winograd convolution);
- `folded_bias` {[bias], scale, shift, mean, var} (epsilon): the bias of
  `folding.fold_batch_norm`;
- `batch_norm_factor`, `batch_norm_offset` {scale, shift, mean, var}
  (epsilon): the two halves of `folding.batch_norm_affine`;
- any transform of a weight above, with the attribute `weight_scales` (one
  per output channel, or one): of the weight quantised to symmetric int8
  with those scales and dequantised, as a float32 layer computes on a QDQ
  weight;
- `int8_weight` {weight} (weight_scales, groups, in_channels, depthwise,
  [pairs]): the weight quantised to int8 and packed by
  `packing.pack_int8_conv2d_weight` for an input of `in_channels` stored
  channels (pair by pair with `pairs`, for `vpmaddwd` kernels), or
  `packing.pack_int8_depthwise_weight`;
- `int8_offset` (int32), `int8_scale` (float32) {weight, [bias], [scale,
  shift, mean, var]} (weight_scales, x_scale, x_zero_point, [out_scale,
  out_zero_point], [epsilon]): the two halves of an int8 convolution's
  `semantics.int8.Requantization`, the batch-norm folded into the step
  and the bias, zero past the output channels to whole blocks of 16;
- `sparse_values` (float32), `sparse_offsets` (int32) {weight, [scale,
  shift, mean, var]} (groups, nonzeros, padded, dilations, [epsilon]): the
  two halves of `packing.pack_sparse_conv2d_weight`, the nonzero entries
  of the weight (as stored, or dequantized) with the batch-norm folded
  into the values.
"""


def derive(recipe: Recipe, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The array `recipe` computes from the parameter store `params`."""
    transform = TRANSFORMS.get(recipe.transform)
    if transform is None:
        raise ValueError(f"unknown parameter transform '{recipe.transform}' (expected one of {', '.join(TRANSFORMS)})")
    return transform(recipe, params)
