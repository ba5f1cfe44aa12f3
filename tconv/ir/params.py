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


STORE_MAGIC = b"PK"
"""The first bytes of an .npz parameter store (a zip archive)."""

NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of a .npy array."""

MAX_NAME_BYTES = 4096
"""The longest parameter name a store holds, in UTF-8 bytes. The zip format
limits a member's name to 65535 bytes; a name this long is no name a network
gives its weights, so the limit is far below that."""

NUMERIC_KINDS = "biuf"
"""The dtype kinds a store's entries may have: bool, integers and floats
(`bind_params` then asks for floats where a network reads them)."""

DEFLATE_RATIO = 1100
"""Deflate cannot expand data by more than about 1032:1: a member claiming more
than this many bytes per stored byte is corrupt, whatever its header says."""


def _corrupt(path: Path, message: str) -> ParamError:
    return ParamError(f"{path}: error: corrupt parameter store: {message}")


def _read_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> np.ndarray:
    """One entry: its .npy header checked against its size before anything is allocated."""
    entry = printable(name)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > DEFLATE_RATIO * info.compress_size + 4096:
        raise _corrupt(path, f"entry '{entry}' claims {info.file_size} bytes, more than {info.compress_size} "
                             "compressed bytes can hold")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
        except ValueError:
            raise _corrupt(path, f"entry '{entry}' is not a .npy array (no NumPy header)") from None
        if version not in ((1, 0), (2, 0)):
            raise _corrupt(path, f"entry '{entry}' is a .npy array of format version {version[0]}.{version[1]}, "
                                 "which a parameter store does not use")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, fortran_order, dtype = read_header(member)
        except (zipfile.BadZipFile, zlib.error, EOFError):
            raise
        except Exception as err:
            # NumPy parses the header's Python literal and checks it; damaged text can
            # fail anywhere in that (ValueError, SyntaxError, tokenize's TokenError, ...).
            raise _corrupt(path, f"entry '{entry}' has an unreadable .npy header ({type(err).__name__})") from None
        if dtype.hasobject:
            raise ParamError(f"{path}: error: entry '{entry}' holds Python objects (a pickle); a parameter store "
                             "holds numbers only, and pickles are never loaded")
        if dtype.kind not in NUMERIC_KINDS or dtype.subdtype is not None:
            raise ParamError(f"{path}: error: entry '{entry}' holds {dtype} values; a parameter store holds numbers")
        count = 1
        for extent in shape:
            count *= extent
        expected = count * dtype.itemsize
        available = info.file_size - member.tell()
        if expected != available:
            shown = format_shape(shape) or "scalar"
            raise _corrupt(path, f"entry '{entry}' claims shape {shown} of {dtype} ({expected} bytes) but holds "
                                 f"{max(available, 0)} bytes: the store is damaged or truncated")
        data = bytearray(expected)
        if member.readinto(data) != expected or member.read(1):
            raise _corrupt(path, f"entry '{entry}' is shorter or longer than its zip header says")
    array = np.frombuffer(data, dtype)
    return array.reshape(shape, order="F" if fortran_order else "C")


def printable(name: str) -> str:
    """A name read from a file as a message may print it: control and other
    unprintable characters escaped, so the message stays one line."""
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


def _read_archive(path: Path, file) -> dict[str, np.ndarray]:
    try:
        archive = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError) as err:
        # NotImplementedError: a central directory that asks for a zip version the module does not read.
        raise _corrupt(path, f"not a readable zip archive ({err})") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            member = info.filename
            if not member.endswith(".npy") or info.is_dir():
                shown = printable(member)
                raise _corrupt(path, f"member '{shown}' is not a .npy array (every entry of a store is one)")
            name = member[: -len(".npy")]
            entry = printable(name)
            if name in arrays:
                raise _corrupt(path, f"entry '{entry}' appears twice")
            try:
                arrays[name] = _read_member(path, archive, info, name)
            except ParamError:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, SyntaxError, NotImplementedError,
                    RuntimeError, OverflowError) as err:
                # zlib: a damaged deflate stream; BadZipFile: a bad checksum; NotImplementedError,
                # RuntimeError: a compression method or encryption the zipfile module does not read.
                raise _corrupt(path, f"entry '{entry}' cannot be read ({err})") from None
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every entry of the store, checked: a damaged or hostile file is a
    located `ParamError`, never an exception from the zip or .npy readers."""
    try:
        with open(path, "rb") as file:
            magic = file.read(len(NPY_MAGIC))
            if magic == NPY_MAGIC:
                raise ParamError(f"{path}: error: is a single .npy array; a parameter store is an .npz archive "
                                 "of named arrays")
            if not magic.startswith(STORE_MAGIC):
                raise ParamError(f"{path}: error: not a readable .npz parameter store (not a zip archive)")
            file.seek(0)
            return _read_archive(path, file)
    except FileNotFoundError:
        raise ParamError(f"{path}: error: parameter store not found") from None
    except IsADirectoryError:
        raise ParamError(f"{path}: error: is a directory, not a parameter store") from None
    except OSError as err:
        raise ParamError(f"{path}: error: cannot read the parameter store: {err.strerror or err}") from None


def store_exists(path: str | os.PathLike[str]) -> bool:
    """Whether there is something at the store's path: a dangling link or a
    link loop counts, so reading it reports why it cannot be read."""
    return os.path.lexists(path)


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
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ParamError(f"{path}: error: its provenance entry '{PROVENANCE_KEY}' must be UTF-8 JSON bytes "
                         f"(a 1-d uint8 array), not {raw.dtype} of shape {format_shape(raw.shape) or 'scalar'}")
    try:
        provenance = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ParamError(f"{path}: error: its provenance entry '{PROVENANCE_KEY}' is not JSON ({err})") from None
    if not isinstance(provenance, dict) or provenance.get("weights") not in WEIGHTS:
        raise ParamError(
            f"{path}: error: its provenance entry '{PROVENANCE_KEY}' must be an object whose "
            f"'weights' is one of {', '.join(WEIGHTS)}"
        )
    return provenance


def _name_error(name: str) -> str | None:
    """Why a store cannot hold an entry of this name, or None."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text (a store names its entries in UTF-8)"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long; a parameter store holds names of at most {MAX_NAME_BYTES} bytes (UTF-8)"
    return None


def check_store_names(module: ModuleOp) -> None:
    """Every `tconv.param` name fits in a store: refused at the op, before
    anything is written."""
    for op in param_ops(module):
        why = _name_error(op.param_name)
        if why is not None:
            where = location_of(op)
            prefix = f"{where}: error: " if where else "error: "
            raise ParamError(f"{prefix}param: the name '{op.param_name[:40]}...' {why}")


def save_store(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    provenance: Mapping[str, object] | None = None,
) -> None:
    """Write `arrays` (as float32) and, if given, the provenance, atomically.
    A name the store cannot hold is a `ParamError` (callers with the module
    check its names with `check_store_names` first, to point at the op)."""
    for name in arrays:
        why = _name_error(name)
        if why is not None:
            raise ParamError(f"{path}: error: cannot write parameter '{name[:40]}...': its name {why}")
    entries = {name: np.ascontiguousarray(a, np.float32) for name, a in arrays.items()}
    if provenance is not None:
        assert provenance.get("weights") in WEIGHTS, provenance
        entries[PROVENANCE_KEY] = np.frombuffer(json.dumps(dict(provenance)).encode("utf-8"), np.uint8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)

    write_atomic(path, write)


def check_entry(op: ParamOp, value: np.ndarray, source: str = "the parameter store") -> None:
    """One store entry against the `tconv.param` op that names it: the shape the
    IR gives it, and floating-point values. The check `tconv run` makes, and NAS
    passes make before they read a store."""
    name = op.param_name
    expected = shape_of(op.result)
    if tuple(value.shape) == expected and np.issubdtype(value.dtype, np.floating):
        return
    where = location_of(op)
    prefix = f"{where}: error: " if where else "error: "
    if tuple(value.shape) != expected:
        raise ParamError(
            f"{prefix}parameter '{name}': {source} has shape {format_shape(value.shape) or 'scalar'}, "
            f"the IR expects {format_shape(expected)}"
        )
    raise ParamError(f"{prefix}parameter '{name}': {source} holds {value.dtype}, expected float32")


def check_store(
    module: ModuleOp, arrays: Mapping[str, np.ndarray], source: str = "the parameter store", complete: bool = True
) -> None:
    """Every entry of `arrays` that a parameter of the module names fits it
    (`check_entry`); with `complete`, every parameter has an entry."""
    for op in param_ops(module):
        value = arrays.get(op.param_name)
        if value is not None:
            check_entry(op, value, source)
        elif complete:
            where = location_of(op)
            prefix = f"{where}: error: " if where else "error: "
            raise ParamError(f"{prefix}parameter '{op.param_name}' is missing from {source}")


def bind_params(
    module: ModuleOp, arrays: Mapping[str, np.ndarray], source: str = "the parameter store"
) -> dict[str, np.ndarray]:
    """Check that `arrays` holds every parameter of the module with the shape the
    IR gives it; return them as float32, keyed by name."""
    check_store(module, arrays, source)
    return {op.param_name: np.asarray(arrays[op.param_name], np.float32) for op in param_ops(module)}


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
