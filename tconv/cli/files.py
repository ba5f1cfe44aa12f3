"""The files the command line reads and writes besides IR: `.npy` arrays and
networks with their parameter stores.

Every failure is a `TconvError` that names the file; every write is atomic, so
a failed command leaves no half-written file behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.ir.loader import TconvError, module_text, write_atomic, write_text_atomic
from tconv.ir.params import check_store_names, save_store, store_path_for

NPY_MAGIC = b"\x93NUMPY"
"""The first bytes of every .npy file."""


def refuse_overwriting(output: str, *inputs: str | Path) -> None:
    """An output path that names an input would destroy it."""
    for path in inputs:
        # realpath, not Path.resolve: a link loop is no error here (reading it reports one).
        if os.path.realpath(output) == os.path.realpath(path):
            raise TconvError(f"{output}: error: is an input of this command; choose another output file")


def _cannot_write(path: str | os.PathLike[str], err: OSError) -> TconvError:
    return TconvError(f"{path}: error: cannot write: {err.strerror or err}")


def read_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """The array in a `.npy` file, of any dtype (no pickles)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(NPY_MAGIC))
            f.seek(0)
            # Without the .npy header, np.load would try pickle and blame that instead.
            if magic != NPY_MAGIC:
                if magic.startswith(b"PK"):
                    raise TconvError(
                        f"{path}: error: is an .npz archive; expected a single array in a .npy file"
                    )
                raise TconvError(f"{path}: error: not a .npy file (no NumPy header)")
            array = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise TconvError(f"{path}: error: file not found") from None
    except OSError as err:
        raise TconvError(f"{path}: error: cannot read: {err.strerror or err}") from None
    except (ValueError, EOFError) as err:
        raise TconvError(f"{path}: error: not a readable .npy array ({err})") from None
    return array


def read_array(path: str | os.PathLike[str]) -> np.ndarray:
    """A float array from a `.npy` file, as float32."""
    array = read_npy(path)
    if not np.issubdtype(array.dtype, np.floating):
        raise TconvError(f"{path}: error: holds {array.dtype} values; expected a float array")
    return array.astype(np.float32, copy=False)


def write_array(path: str | os.PathLike[str], array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        # A file object, not a path: np.save would append `.npy` to the temporary name.
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)

    try:
        write_atomic(path, write)
    except OSError as err:
        raise _cannot_write(path, err) from None


def write_network(
    path: str | os.PathLike[str],
    module: ModuleOp,
    params: Mapping[str, np.ndarray],
    provenance: Mapping[str, object] | None = None,
) -> Path:
    """Write the IR to `path` and its parameters to the store beside it; return
    the store's path. If either write fails, neither file is changed."""
    store = store_path_for(path)
    if store == Path(path):
        raise TconvError(
            f"{path}: error: the IR file may not end in .npz: its parameter store goes there"
        )
    check_store_names(module)
    text = module_text(module)

    def write_both(store_tmp: Path) -> None:
        # The store is complete before the IR moves into place, and moves in right after it.
        save_store(store_tmp, params, provenance)
        write_text_atomic(path, text)

    try:
        write_atomic(store, write_both)
    except OSError as err:
        raise _cannot_write(path, err) from None
    return store
