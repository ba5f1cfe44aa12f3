"""The Python driver of the C runtime: builds it, loads it, runs artifacts.

The runtime (`tconv/runtime/c`) is compiled with the system C compiler on
first use into a per-user cache, `$TCONV_CACHE_DIR` or `~/.cache/tconv`
(`$XDG_CACHE_HOME/tconv` where that is set), in a folder named by a hash of
its sources, the compiler and the flags, so a changed source is rebuilt and
an unchanged one is not. `$CC` picks the compiler (default `cc`) and
`$TCONV_RUNTIME_CFLAGS` adds flags.

`Runtime(directory)` checks an artifact against its manifest
(`tconv.runtime.plan.check_artifact`: every file's size and SHA-256), then
loads it (see `tconv.runtime.plan`) and runs it on numpy arrays. This module does not import TVM: an artifact runs with the
runtime alone.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tconv.errors import TconvError

SOURCE_DIR = Path(__file__).parent / "c"
SOURCES = ("tconv_runtime.c", "tconv_backend.c")
HEADERS = ("tconv_runtime.h", "tconv_backend.h")
LIBRARY_NAME = "libtconv_runtime.so"
FLAGS = (
    "-std=c11", "-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra",
    f"-Wl,-soname,{LIBRARY_NAME}",
)
LIBS = ("-ldl",)
MAX_NDIM = 8


class RuntimeBuildError(TconvError):
    """The C runtime could not be compiled."""


def cache_dir() -> Path:
    """Where built runtimes are kept."""
    if os.environ.get("TCONV_CACHE_DIR"):
        return Path(os.environ["TCONV_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tconv"


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


def _flags() -> tuple[str, ...]:
    return FLAGS + tuple(shlex.split(os.environ.get("TCONV_RUNTIME_CFLAGS", "")))


@functools.cache
def _compiler_identity(compiler: str) -> str:
    """The compiler's `--version` text: a different compiler builds a different runtime."""
    if shutil.which(compiler) is None:
        raise RuntimeBuildError(
            f"error: no C compiler `{compiler}` to build the tconv runtime (set CC)"
        )
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    return result.stdout + result.stderr


def runtime_key() -> str:
    """The hash that names the runtime build for the current sources, compiler and flags."""
    digest = hashlib.sha256()
    compiler = _compiler()
    for part in (compiler, _compiler_identity(compiler), *_flags(), *LIBS):
        digest.update(part.encode() + b"\0")
    for name in SOURCES + HEADERS:
        digest.update(name.encode() + b"\0" + (SOURCE_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def build_runtime() -> Path:
    """The path of the runtime library, compiled first if the cache lacks it."""
    target = cache_dir() / f"runtime-{runtime_key()}" / LIBRARY_NAME
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, scratch = tempfile.mkstemp(dir=target.parent, prefix=".build.", suffix=".so")
        os.close(fd)
    except OSError as error:
        raise RuntimeBuildError(f"error: cannot write the runtime cache {target.parent}: {error}")
    command = [
        _compiler(), *_flags(), "-o", scratch,
        *(str(SOURCE_DIR / name) for name in SOURCES), *LIBS,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeBuildError(
                f"error: building the tconv runtime failed (exit status {result.returncode}):\n"
                f"{shlex.join(command)}\n{result.stdout}{result.stderr}".rstrip()
            )
        os.replace(scratch, target)
    finally:
        Path(scratch).unlink(missing_ok=True)
    return target


class _TensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("ndim", ctypes.c_int32),
        ("shape", ctypes.c_int64 * MAX_NDIM),
        ("bytes", ctypes.c_uint64),
    ]


class _Buffer(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("bytes", ctypes.c_uint64)]


_SIGNATURES = {
    "tconv_last_error": (ctypes.c_char_p, []),
    "tconv_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "tconv_close": (ctypes.c_int, [ctypes.c_void_p]),
    "tconv_set_threads": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "tconv_num_inputs": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
    "tconv_num_outputs": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
    "tconv_input_info": (
        ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_TensorInfo)],
    ),
    "tconv_output_info": (
        ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(_TensorInfo)],
    ),
    "tconv_arena_bytes": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]),
    "tconv_run": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.POINTER(_Buffer), ctypes.c_size_t,
         ctypes.POINTER(_Buffer), ctypes.c_size_t],
    ),
    "tconv_input_data": (
        ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)],
    ),
    "tconv_output_data": (
        ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)],
    ),
    "tconv_execute": (ctypes.c_int, [ctypes.c_void_p]),
    "tconv_set_profiling": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
    "tconv_fresh_workspaces": (ctypes.c_uint64, []),
    "tconv_num_calls": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
    "tconv_call_time": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64)],
    ),
}

_loaded: dict[Path, ctypes.CDLL] = {}


def load_runtime() -> ctypes.CDLL:
    """The runtime library, built if needed, with its functions typed.

    It is loaded RTLD_GLOBAL: kernel libraries resolve their error hook
    (`TVMFFIErrorSetRaisedFromCStrParts`) against it."""
    path = build_runtime()
    if path not in _loaded:
        library = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL | os.RTLD_NOW)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(library, name)
            function.restype = restype
            function.argtypes = argtypes
        _loaded[path] = library
    return _loaded[path]


@dataclass(frozen=True)
class TensorInfo:
    """A network input or output as the plan declares it (float32)."""

    name: str
    shape: tuple[int, ...]


def _shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(dim) for dim in shape) or "scalar"


def check_inputs(infos: Sequence[TensorInfo], arrays: Sequence[object]) -> list[np.ndarray]:
    """`arrays`, checked against the plan's inputs `infos`: numpy, float32, the exact shapes."""
    if len(arrays) != len(infos):
        raise TconvError(f"error: the network takes {len(infos)} input(s), got {len(arrays)}")
    for index, (info, array) in enumerate(zip(infos, arrays)):
        if not isinstance(array, np.ndarray):
            raise TconvError(
                f"error: input {index} ({info.name}) must be a numpy array, "
                f"got {type(array).__name__}"
            )
        if array.dtype != np.float32:
            raise TconvError(f"error: input {index} ({info.name}) must be float32, got {array.dtype}")
        if array.shape != info.shape:
            raise TconvError(
                f"error: input {index} ({info.name}) must have shape "
                f"{_shape_text(info.shape)}, got {_shape_text(array.shape)}"
            )
    return list(arrays)  # type: ignore[arg-type]


@dataclass(frozen=True)
class CallTime:
    """One kernel call of a profiled run (`Runtime.profile`)."""

    index: int
    """Its place among the plan's calls."""
    symbol: str
    layer: str
    """The layer it computes: its first parameter's name up to `.weight` (or
    `:`), else its output's name."""
    shape: tuple[int, ...]
    """Its output's shape (the last tensor it is passed)."""
    seconds: float
    """Mean wall time per run."""


def call_layer(plan, call) -> str:
    """The name `CallTime.layer` gives a call of `plan`."""
    for id in call.args:
        tensor = plan.tensors[id]
        if tensor.location == "param":
            name = tensor.name.split(":")[0]
            return name[: -len(".weight")] if name.endswith(".weight") else name
    return plan.tensors[call.args[-1]].name


class Runtime:
    """A loaded artifact. Use it as a context manager, or call `close()`."""

    def __init__(
        self, artifact_dir: str | os.PathLike[str], threads: int | None = None, verify: bool = True
    ) -> None:
        """Load the artifact `artifact_dir`, checked first against its manifest
        unless `verify` is false (the caller has checked it, or tests the C
        runtime's own checks of a damaged artifact)."""
        from tconv.runtime.plan import check_artifact

        self.directory = Path(artifact_dir)
        if verify:
            check_artifact(self.directory)
        self._lib = load_runtime()
        handle = ctypes.c_void_p()
        status = self._lib.tconv_open(os.fsencode(artifact_dir), ctypes.byref(handle))
        if status != 0:
            message = self._lib.tconv_last_error().decode(errors="replace")
            if ": error: " not in message.split("\n", 1)[0]:
                message = f"{self.directory}: error: {message}"
            raise TconvError(message)
        self._handle = handle
        self._close = weakref.finalize(self, self._lib.tconv_close, handle)
        self._lock = threading.Lock()  # the C runtime runs one call per handle at a time
        self.inputs = self._infos(self._lib.tconv_num_inputs, self._lib.tconv_input_info)
        self.outputs = self._infos(self._lib.tconv_num_outputs, self._lib.tconv_output_info)
        arena = ctypes.c_uint64()
        self._check(self._lib.tconv_arena_bytes(handle, ctypes.byref(arena)))
        self.arena_bytes = arena.value
        """The size of the activation arena, in bytes."""
        if threads is None:
            threads = min(len(os.sched_getaffinity(0)), 256)
        self.set_threads(threads)

    def _check(self, status: int) -> None:
        if status != 0:
            message = self._lib.tconv_last_error().decode(errors="replace")
            located = ": error: " in message.split("\n", 1)[0]
            raise TconvError(message if located else f"error: {message}")

    def _infos(self, count_function, info_function) -> tuple[TensorInfo, ...]:
        count = ctypes.c_size_t()
        self._check(count_function(self._handle, ctypes.byref(count)))
        infos = []
        for index in range(count.value):
            info = _TensorInfo()
            self._check(info_function(self._handle, index, ctypes.byref(info)))
            shape = tuple(info.shape[: info.ndim])
            infos.append(TensorInfo(info.name.decode(errors="replace"), shape))
        return tuple(infos)

    @property
    def closed(self) -> bool:
        return not self._close.alive

    def _live_handle(self) -> ctypes.c_void_p:
        if self.closed:
            raise TconvError("error: the runtime is closed")
        return self._handle

    def set_threads(self, threads: int) -> None:
        """Run parallel loops on `threads` threads."""
        with self._lock:
            self._check(self._lib.tconv_set_threads(self._live_handle(), threads))

    def run(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """The network's outputs for the inputs `arrays` (float32, the plan's shapes)."""
        inputs = [np.ascontiguousarray(a) for a in check_inputs(self.inputs, arrays)]
        outputs = [np.empty(info.shape, np.float32) for info in self.outputs]
        in_buffers = (_Buffer * len(inputs))(*((a.ctypes.data, a.nbytes) for a in inputs))
        out_buffers = (_Buffer * len(outputs))(*((a.ctypes.data, a.nbytes) for a in outputs))
        with self._lock:
            status = self._lib.tconv_run(
                self._live_handle(), in_buffers, len(inputs), out_buffers, len(outputs)
            )
            self._check(status)
        return outputs

    def _arena_views(self, function, infos) -> list[np.ndarray]:
        views = []
        for index, info in enumerate(infos):
            data = ctypes.c_void_p()
            self._check(function(self._live_handle(), index, ctypes.byref(data)))
            # Inputs and outputs are f32 (the plan's rule); other arena tensors
            # may be u8, i8 or i32, but are never viewed from here.
            pointer = ctypes.cast(data, ctypes.POINTER(ctypes.c_float))
            views.append(np.ctypeslib.as_array(pointer, shape=info.shape))
        return views

    def arena_inputs(self) -> list[np.ndarray]:
        """Zero-copy use: numpy views of the inputs' place in the arena. Fill
        them, call `execute()`, read `arena_outputs()`. The views are valid
        only until `close()`; an output may share bytes with an input, so
        read the outputs before writing the next inputs."""
        return self._arena_views(self._lib.tconv_input_data, self.inputs)

    def arena_outputs(self) -> list[np.ndarray]:
        """Numpy views of the outputs' place in the arena (see `arena_inputs`)."""
        return self._arena_views(self._lib.tconv_output_data, self.outputs)

    def execute(self) -> None:
        """Run the network on the arena as it is: no copies (see `arena_inputs`)."""
        with self._lock:
            self._check(self._lib.tconv_execute(self._live_handle()))

    def profile(self, runs: int) -> list[CallTime]:
        """Run the network `runs` times on the arena as it is (see `execute`),
        timing each kernel call; the calls in plan order. The calls' times add
        up to the runs' but for the loop around them."""
        from tconv.runtime.plan import read_plan

        plan = read_plan(self.directory / "plan.txt")
        with self._lock:
            handle = self._live_handle()
            count = ctypes.c_size_t()
            self._check(self._lib.tconv_num_calls(handle, ctypes.byref(count)))
            if count.value != len(plan.calls):
                raise TconvError(f"{self.directory}: error: plan.txt has changed since the artifact was loaded")
            self._check(self._lib.tconv_set_profiling(handle, 1))
            try:
                for _ in range(runs):
                    self._check(self._lib.tconv_execute(handle))
            finally:
                self._check(self._lib.tconv_set_profiling(handle, 0))
            total, counted = ctypes.c_uint64(), ctypes.c_uint64()
            times = []
            for index, call in enumerate(plan.calls):
                self._check(self._lib.tconv_call_time(handle, index, ctypes.byref(total), ctypes.byref(counted)))
                times.append(CallTime(
                    index, call.symbol, call_layer(plan, call), plan.tensors[call.args[-1]].shape,
                    total.value / 1e9 / max(counted.value, 1),
                ))
        return times

    def close(self) -> None:
        """Free the arena, the parameters, the threads and the kernel library."""
        with self._lock:
            self._close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
