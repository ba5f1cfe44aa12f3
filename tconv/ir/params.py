"""The parameter store: the weights that `tconv.param` ops name.

A network `net.mlir` keeps its weights in `net.npz` beside it, one array per
parameter name. Initial values are deterministic: each entry is drawn from a
generator seeded by (seed, name), so adding or reshaping one parameter (as a
rewrite does) leaves every other parameter's values unchanged.

The store also says where its weights come from (its *provenance*, one JSON
entry under `PROVENANCE_KEY`): `initial` (seeded initial values: the zoo),
`trained` (`tconv train`, or an imported model's own weights) or `inherited`
(a NAS rewrite of trained weights, not yet retrained). NAS passes start new
weights from the old ones by default where the store's weights are trained or
inherited (see `tconv.passes.nas.inherit`). A store without the entry is
`initial`.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.loader import TconvError, location_of, write_atomic
from tconv.ir.ops import BatchNormOp, ParamOp, shape_of
from tconv.ir.shapes import format_shape


class ParamError(TconvError):
    """A missing, mis-shaped or unreadable parameter."""


def param_ops(module: ModuleOp) -> list[ParamOp]:
    return [op for op in module.walk() if isinstance(op, ParamOp)]


def check_param_names(module: ModuleOp) -> None:
    """Two `tconv.param` ops in one module may not name the same entry."""
    seen: dict[str, ParamOp] = {}
    for op in param_ops(module):
        first = seen.setdefault(op.param_name, op)
        if first is not op:
            where = location_of(op)
            prefix = f"{where}: error: " if where else "error: "
            first_at = location_of(first)
            raise ParamError(
                f"{prefix}param: duplicate name '{op.param_name}'"
                + (f" (first defined at {first_at})" if first_at else "")
            )


def initial_value(name: str, shape: tuple[int, ...], init: str, seed: int) -> np.ndarray:
    """The initial value of one parameter.

    kaiming_normal: N(0, 2 / fan_in) with fan_in the product of all but the
    first dimension (PyTorch's `kaiming_normal_`, mode fan_in, ReLU gain)."""
    if init == "zeros":
        return np.zeros(shape, np.float32)
    if init == "ones":
        return np.ones(shape, np.float32)
    if init == "kaiming_normal":
        fan_in = int(np.prod(shape[1:]))
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))
    raise ParamError(f"parameter '{name}': unknown init '{init}'")


def init_params(module: ModuleOp, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh values for every parameter of the module."""
    return {
        op.param_name: initial_value(op.param_name, shape_of(op.result), op.init.data, seed)
        for op in param_ops(module)
    }


def complete_params(
    module: ModuleOp, arrays: Mapping[str, np.ndarray], seed: int = 0
) -> dict[str, np.ndarray]:
    """The module's parameters: kept from `arrays` where the shape still fits,
    freshly initialised where an entry is missing or a rewrite changed its shape."""
    result: dict[str, np.ndarray] = {}
    for op in param_ops(module):
        shape = shape_of(op.result)
        old = arrays.get(op.param_name)
        if old is not None and tuple(old.shape) == shape:
            result[op.param_name] = old
        else:
            result[op.param_name] = initial_value(op.param_name, shape, op.init.data, seed)
    return result


def store_path_for(ir_path: str | os.PathLike[str]) -> Path:
    """The parameter store that belongs to an IR file: same name, `.npz`."""
    return Path(ir_path).with_suffix(".npz")


PROVENANCE_KEY = "__tconv_provenance__"
"""The store entry holding the provenance: UTF-8 JSON as a uint8 array."""

WEIGHTS = ("initial", "trained", "inherited")
"""What a store's `weights` provenance may say (see the module docstring)."""


def is_trained(provenance: Mapping[str, object]) -> bool:
    """Whether the weights carry what a network learnt (trained, or inherited from trained)."""
    return provenance.get("weights") in ("trained", "inherited")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise ParamError(f"{path}: error: parameter store not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ParamError(f"{path}: error: not a readable .npz parameter store ({err})") from None


def load_store(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The parameter arrays of a store, by name (its provenance left out)."""
    arrays = _read_npz(Path(path))
    arrays.pop(PROVENANCE_KEY, None)
    return arrays


def load_provenance(path: str | os.PathLike[str]) -> dict[str, object]:
    """The store's provenance (`{"weights": "initial"}` where it records none)."""
    path = Path(path)
    raw = _read_npz(path).get(PROVENANCE_KEY)
    if raw is None:
        return {"weights": "initial"}
    try:
        provenance = json.loads(np.asarray(raw, np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ParamError(f"{path}: error: its provenance entry '{PROVENANCE_KEY}' is not JSON ({err})") from None
    if not isinstance(provenance, dict) or provenance.get("weights") not in WEIGHTS:
        raise ParamError(
            f"{path}: error: its provenance entry '{PROVENANCE_KEY}' must be an object whose "
            f"'weights' is one of {', '.join(WEIGHTS)}"
        )
    return provenance


def save_store(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    provenance: Mapping[str, object] | None = None,
) -> None:
    """Write `arrays` (as float32) and, if given, the provenance, atomically."""
    entries = {name: np.ascontiguousarray(a, np.float32) for name, a in arrays.items()}
    if provenance is not None:
        assert provenance.get("weights") in WEIGHTS, provenance
        entries[PROVENANCE_KEY] = np.frombuffer(json.dumps(dict(provenance)).encode("utf-8"), np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)

    write_atomic(path, write)


def bind_params(
    module: ModuleOp, arrays: Mapping[str, np.ndarray], source: str = "the parameter store"
) -> dict[str, np.ndarray]:
    """Check that `arrays` holds every parameter of the module with the shape the
    IR gives it; return them as float32, keyed by name."""
    bound: dict[str, np.ndarray] = {}
    for op in param_ops(module):
        name = op.param_name
        expected = shape_of(op.result)
        where = location_of(op)
        prefix = f"{where}: error: " if where else "error: "
        if name not in arrays:
            raise ParamError(f"{prefix}parameter '{name}' is missing from {source}")
        value = arrays[name]
        if tuple(value.shape) != expected:
            raise ParamError(
                f"{prefix}parameter '{name}': {source} has shape {format_shape(value.shape) or 'scalar'}, "
                f"the IR expects {format_shape(expected)}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ParamError(f"{prefix}parameter '{name}': {source} holds {value.dtype}, expected float32")
        bound[name] = np.asarray(value, np.float32)
    return bound


def parameter_count(module: ModuleOp) -> int:
    """Learnable parameters: every entry except batch-norm running statistics
    (the `mean` and `var` operands), as PyTorch counts `parameters()`."""
    statistics = {
        id(operand.owner)
        for op in module.walk()
        if isinstance(op, BatchNormOp)
        for operand in (op.mean, op.var)
    }
    return sum(
        int(np.prod(shape_of(op.result))) for op in param_ops(module) if id(op) not in statistics
    )
