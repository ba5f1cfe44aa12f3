"""Concatenations without copies: the parts of a concatenation stored
where the concatenation's result has them.

A concatenation whose parts are contiguous slices of its result (every
dimension before the concatenated one of extent 1: a channel
concatenation at batch 1, NCHW) need not copy them: each part's producer
writes straight into its slice, and the concatenation's kernel call is
dropped. DenseNet's dense blocks concatenate a growing tensor with each
layer's 12 new channels; copying them costs the block's copies of all
earlier layers' outputs again at every layer (9% of DenseNet-BC-100's
time), and with views none is copied: each concatenation is a prefix of
the next, and every layer writes its channels once, at their place in the
block's last concatenation.

`concat_views(program)` finds the calls to drop and the tensors that
become views: `ConcatViews.base[t]` is (the tensor whose bytes t lives in,
t's byte offset in it), resolved through nested concatenations to a tensor
that is no view. The artifact's memory plan (`kernels.artifact`) then
places only those base tensors, each live from the first write of any
of its views to the last read of any. A part stays a copy (its
concatenation is kept, whole) where it is not an activation (a network
input, a parameter), where it is already a part of another concatenation
or appears twice in this one, where a slice would not start on the
arena's alignment (the kernels load aligned vectors), or where the parts
are not contiguous in the result (a batch above 1, NCHW). Nothing writes
into a base tensor's bytes but its parts' producers, each once, before
any concatenation that holds the part is read, so every view reads what
the copies would have held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tconv.kernels.program import KernelCall, KernelProgram
from tconv.runtime.memory_plan import ALIGNMENT


@dataclass(frozen=True)
class ConcatViews:
    dropped: frozenset[int] = frozenset()
    """Indices (in `program.calls`) of the concatenations no longer run."""
    base: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Tensor id → (the id of the tensor that holds its bytes, its byte offset there)."""

    def resolve(self, tensor_id: int) -> tuple[int, int]:
        """(the tensor that holds `tensor_id`'s bytes, the offset): itself at 0 unless a view."""
        return self.base.get(tensor_id, (tensor_id, 0))


def _is_concat(call: KernelCall) -> bool:
    return call.ops == ("concat",)


def _slices(program: KernelProgram, call: KernelCall) -> list[int] | None:
    """The byte offsets of `call`'s parts in its result, where each part is
    one contiguous, aligned slice of it; else None."""
    tensors = program.tensors
    result = tensors[call.writes]
    parts = [tensors[i] for i in call.reads]
    if any(part.dtype != result.dtype or len(part.shape) != len(result.shape) for part in parts):
        return None
    axes = {axis for part in parts for axis, (a, b) in enumerate(zip(part.shape, result.shape)) if a != b}
    axis = min(axes) if axes else 0
    if len(axes) > 1 or any(extent != 1 for extent in result.shape[:axis]):
        return None
    offsets, offset = [], 0
    for part in parts:
        if offset % ALIGNMENT:
            return None
        offsets.append(offset)
        offset += part.nbytes
    return offsets if offset == result.nbytes else None


def concat_views(program: KernelProgram) -> ConcatViews:
    """The concatenations of `program` that can run without copies, and the
    views they make (see the module docstring)."""
    tensors = program.tensors
    parent: dict[int, tuple[int, int]] = {}
    dropped: set[int] = set()
    for index, call in enumerate(program.calls):
        if not _is_concat(call):
            continue
        parts = list(call.reads)
        offsets = _slices(program, call)
        if (
            offsets is None
            or len(set(parts)) != len(parts)
            or any(tensors[i].kind != "activation" or i in parent for i in parts)
        ):
            continue
        for part, offset in zip(parts, offsets):
            parent[part] = (call.writes, offset)
        dropped.add(index)

    def root(tensor_id: int) -> tuple[int, int]:
        offset = 0
        while tensor_id in parent:
            tensor_id, step = parent[tensor_id]
            offset += step
        return tensor_id, offset

    return ConcatViews(frozenset(dropped), {tensor_id: root(tensor_id) for tensor_id in parent})
