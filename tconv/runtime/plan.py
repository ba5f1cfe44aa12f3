"""The plan of a compiled network, and the artifact directory that holds it.

An artifact is a directory of four files: `plan.txt`, the kernel library it
names (a shared library, one exported `__tvm_ffi_<symbol>` per kernel), the
parameter file it names (raw bytes, native byte order: each parameter tensor
in its dtype) and `MANIFEST`. The C runtime
(`tconv/runtime/c`) reads the plan and runs it; this module writes it, and
reads it back with the same rules.

`MANIFEST` lists every other file with its size and SHA-256::

    tconv-manifest 1
    file <name> <bytes> <sha256-hex>         once per file
    end

`check_artifact` checks the files against it before anything is loaded; an
artifact without one was written before manifests and is refused (compile
it again). A kernel library also exports `tconv_plan_fingerprint`
(`plan_fingerprint` of the plan text it was compiled with), which the C
runtime compares with the plan it reads; an LLVM cuda kernel bundle holds
the same number (`cuda_driver.KernelBundle.plan_fingerprint`).

`plan.txt`, version 1: one statement per line, tokens separated by spaces or
tabs, blank lines and lines starting with `#` ignored, numbers unsigned
decimal integers::

    tconv-plan 1                             first statement
    target cpu | target cuda <arch>          where the kernels run (optional: cpu)
    library <file>                           the kernel library
    params <file> <bytes>                    the parameter file and its exact size
    arena <bytes>                            the activation arena's size
    tensor <id> <name> <dtype> arena|param <offset> <ndim> <dim>...
    input <tensor-id>                        the network's inputs, in order
    output <tensor-id>                       the network's outputs, in order
    call <symbol> <nargs> <tensor-id>...     the kernel calls, in order
    end                                      last statement

- `target`, where present, and `library`, `params` and `arena` come once
  each, before the first `tensor`; `<arch>` is a CUDA architecture (`sm_90`).
  A `cpu` library holds one exported `__tvm_ffi_<symbol>` per kernel and runs
  on the C runtime; a `cuda` library is either TVM's CUDA host code compiled
  by nvcc, run by `tconv.runtime.cuda` (tvm_ffi and torch, on the GPU
  machine), or the LLVM backend's `kernels.cuda.json` (a cubin or PTX image
  and each kernel's launches), run by `tconv.runtime.cuda_driver` (the CUDA
  driver API); a `<file>` is a plain name inside the artifact directory (no `/`).
- Tensor ids count up from 0 in the order of the `tensor` lines, and a tensor
  is declared before it is named. `<dtype>` is the element type: `f32`
  (float32), `u8` (uint8), `i8` (int8) or `i32` (int32) (DTYPE_BYTES; the
  keys of `tconv.kernels.program.DTYPES`); a kernel gets the tensor as a
  DLTensor of that type. A tensor's bytes (the element size × the product
  of its dims) start at `<offset>`, a multiple of 64 (TVM kernels assume
  64-byte aligned data), and lie inside the arena or the parameter file.
  `<name>` is for diagnostics (no spaces, at most 255 bytes); 1 ≤ ndim ≤ 8,
  dims ≥ 1.
- Inputs and outputs are distinct `f32` arena tensors. The runtime copies
  inputs in before the first call and outputs out after the last, so nothing
  may overwrite an input before its last reader or an output after its
  writer.
- A call passes its tensors, in order, to the kernel `__tvm_ffi_<symbol>` of
  the library; `<symbol>` is letters, digits and `_`; 1 ≤ nargs ≤ 64.
- `end` makes a truncated plan an error.

A malformed plan is an error located at its line and column
(`plan.txt:LINE:COL: error: ...`), here and in the C runtime.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tconv.atomic import write_text_atomic
from tconv.errors import TconvError

PLAN_VERSION = 1
PLAN_FILE = "plan.txt"
MANIFEST_FILE = "MANIFEST"
MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 16
FINGERPRINT_SYMBOL = "tconv_plan_fingerprint"
"""The exported `const uint64_t` of a kernel library: `plan_fingerprint`
of the plan it was compiled with."""
ALIGNMENT = 64
MAX_NDIM = 8
MAX_ARGS = 64
MAX_NAME = 255
MAX_SYMBOL = 200
MAX_BYTES = 1 << 48
MAX_TENSORS = 1 << 24
TARGETS = ("cpu", "cuda")
DTYPE_BYTES = {"f32": 4, "u8": 1, "i8": 1, "i32": 4}
"""The size in bytes of an element of each tensor dtype, by its plan token
(the same tokens as `tconv.kernels.program.DTYPES`, which this module does
not import)."""
_DTYPE_LIST = ", ".join(DTYPE_BYTES)

_SYMBOL = re.compile(r"[A-Za-z0-9_]+")
_ARCH = re.compile(r"sm_[0-9]+[a-z]?")
_NUMBER = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"[^ \t]+")


class PlanError(TconvError):
    """A plan or artifact that breaks the rules of the format."""


def plan_fingerprint(text: str | bytes) -> int:
    """The 64-bit FNV-1a hash of the plan text: what a cpu kernel library
    exports as `tconv_plan_fingerprint`, so that the runtime refuses a
    library compiled with another plan. It tells compiles apart; it is no
    integrity check (the manifest's SHA-256 is)."""
    data = text.encode() if isinstance(text, str) else text
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


class _BrokenRule(ValueError):
    """A rule of the format, broken; the message says which, without a location."""


@dataclass(frozen=True)
class Tensor:
    """A tensor of `dtype` (a key of DTYPE_BYTES) at `offset` in the arena or
    the parameter file."""

    name: str
    location: Literal["arena", "param"]
    offset: int
    shape: tuple[int, ...]
    dtype: str = "f32"

    @property
    def nbytes(self) -> int:
        return DTYPE_BYTES[self.dtype] * math.prod(self.shape)


@dataclass(frozen=True)
class Call:
    """A call of the kernel `__tvm_ffi_<symbol>` on tensors `args` (ids)."""

    symbol: str
    args: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """What the runtime runs; tensor ids are indices into `tensors`."""

    library: str
    params: str
    params_bytes: int
    arena_bytes: int
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    calls: tuple[Call, ...]
    target: str = "cpu"
    """Where the kernels run: `cpu` or `cuda`."""
    arch: str = ""
    """The CUDA architecture of a `cuda` plan (`sm_90`); empty for `cpu`."""

    def check(self) -> None:
        """Raise a PlanError for the first rule the plan breaks."""
        try:
            self._check_rules()
        except _BrokenRule as error:
            raise PlanError(f"error: {error}") from None

    def _check_rules(self) -> None:
        _check_target(self.target, self.arch)
        for name in (self.library, self.params):
            _check_file_name(name)
        sizes = (("parameter bytes", self.params_bytes), ("arena bytes", self.arena_bytes))
        for what, value in sizes:
            if not 0 <= value <= MAX_BYTES:
                raise _BrokenRule(f"{what} {value} is not in [0, {MAX_BYTES}]")
        for id, tensor in enumerate(self.tensors):
            _check_tensor(id, tensor, self.arena_bytes, self.params_bytes)
        for kind, ids in (("input", self.inputs), ("output", self.outputs)):
            if not ids:
                raise _BrokenRule(f"a plan needs at least one {kind}")
            for id in ids:
                _check_port(self, kind, id, ids)
        if not self.calls:
            raise _BrokenRule("a plan needs at least one call")
        for call in self.calls:
            _check_call(self, call)


def require_f32(plan: Plan, runtime: str) -> None:
    """Raise a PlanError naming the first tensor of `plan` that is not `f32`:
    `runtime` runs float32 kernels only."""
    for id, tensor in enumerate(plan.tensors):
        if tensor.dtype != "f32":
            raise PlanError(
                f"error: {runtime}: tensor {id} ({tensor.name}) is {tensor.dtype}; "
                "int8 kernels run on the cpu only"
            )


def _check_target(target: str, arch: str) -> None:
    if target not in TARGETS:
        raise _BrokenRule(f"unknown target `{target}` (expected one of: {', '.join(TARGETS)})")
    if target == "cuda" and not _ARCH.fullmatch(arch):
        raise _BrokenRule(f"target cuda: `{arch}` is not a CUDA architecture like sm_90")
    if target == "cpu" and arch:
        raise _BrokenRule("target cpu takes no architecture")


def _check_file_name(name: str) -> None:
    if not name or len(name.encode()) > MAX_NAME or "/" in name or name in (".", "..") or (
        _CONTROL.search(name) or re.search(r"[ \t]", name)
    ):
        raise _BrokenRule(f"`{name}` is not a plain file name in the artifact directory")


def _check_tensor(id: int, tensor: Tensor, arena_bytes: int, params_bytes: int) -> None:
    if not tensor.name or re.search(r"[ \t]", tensor.name) or _CONTROL.search(tensor.name):
        raise _BrokenRule(f"tensor {id}: name `{tensor.name}` is empty or has spaces")
    if len(tensor.name.encode()) > MAX_NAME:
        raise _BrokenRule(f"tensor {id}: name is longer than {MAX_NAME} bytes")
    if tensor.dtype not in DTYPE_BYTES:
        raise _BrokenRule(
            f"tensor {id}: dtype `{tensor.dtype}` is not supported (expected one of {_DTYPE_LIST})"
        )
    if tensor.location not in ("arena", "param"):
        raise _BrokenRule(f"tensor {id}: expected `arena` or `param`, found `{tensor.location}`")
    if not 1 <= len(tensor.shape) <= MAX_NDIM:
        raise _BrokenRule(f"tensor {id}: ndim {len(tensor.shape)} is not in [1, {MAX_NDIM}]")
    for axis, dim in enumerate(tensor.shape):
        if dim < 1:
            raise _BrokenRule(f"tensor {id}: dim {axis} is {dim}")
    if tensor.nbytes > MAX_BYTES:
        raise _BrokenRule(f"tensor {id}: larger than {MAX_BYTES} bytes")
    if tensor.offset < 0 or tensor.offset % ALIGNMENT:
        raise _BrokenRule(f"tensor {id}: offset {tensor.offset} is not a multiple of {ALIGNMENT}")
    region = arena_bytes if tensor.location == "arena" else params_bytes
    if tensor.offset + tensor.nbytes > region:
        where = "arena" if tensor.location == "arena" else "parameters"
        raise _BrokenRule(
            f"tensor {id}: bytes [{tensor.offset}, {tensor.offset + tensor.nbytes}) "
            f"lie outside the {where} ({region} bytes)"
        )


def _check_id(plan: Plan, what: str, id: int) -> None:
    if not 0 <= id < len(plan.tensors):
        raise _BrokenRule(f"{what}: unknown tensor id {id} ({len(plan.tensors)} tensors)")


def _check_port(plan: Plan, kind: str, id: int, ids: tuple[int, ...]) -> None:
    _check_id(plan, kind, id)
    tensor = plan.tensors[id]
    if tensor.location != "arena":
        raise _BrokenRule(
            f"{kind} {id} ({tensor.name}) is a parameter; inputs and outputs live in the arena"
        )
    if tensor.dtype != "f32":
        raise _BrokenRule(f"{kind} {id} ({tensor.name}) is {tensor.dtype}; inputs and outputs are f32")
    if ids.count(id) > 1:
        raise _BrokenRule(f"tensor {id} ({tensor.name}) is an {kind} twice")


def _check_call(plan: Plan, call: Call) -> None:
    if not _SYMBOL.fullmatch(call.symbol) or len(call.symbol) > MAX_SYMBOL:
        raise _BrokenRule(
            f"`{call.symbol}` is not a kernel symbol (letters, digits and _, at most {MAX_SYMBOL})"
        )
    if not 1 <= len(call.args) <= MAX_ARGS:
        raise _BrokenRule(f"call {call.symbol}: nargs {len(call.args)} is not in [1, {MAX_ARGS}]")
    for id in call.args:
        _check_id(plan, f"call {call.symbol}", id)


def format_plan(plan: Plan) -> str:
    """The text of `plan.txt`."""
    plan.check()
    lines = [
        f"tconv-plan {PLAN_VERSION}",
        f"target {plan.target} {plan.arch}".rstrip(),
        f"library {plan.library}",
        f"params {plan.params} {plan.params_bytes}",
        f"arena {plan.arena_bytes}",
    ]
    for id, tensor in enumerate(plan.tensors):
        dims = " ".join(str(dim) for dim in tensor.shape)
        lines.append(
            f"tensor {id} {tensor.name} {tensor.dtype} {tensor.location} {tensor.offset} "
            f"{len(tensor.shape)} {dims}"
        )
    lines += [f"input {id}" for id in plan.inputs]
    lines += [f"output {id}" for id in plan.outputs]
    for call in plan.calls:
        lines.append(f"call {call.symbol} {len(call.args)} " + " ".join(map(str, call.args)))
    lines.append("end")
    return "\n".join(lines) + "\n"


def write_plan(path: str | os.PathLike[str], plan: Plan) -> None:
    write_text_atomic(path, format_plan(plan))


class _Reader:
    """Reads plan text statement by statement; errors name the line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.line = 0
        self.header = self.end = False
        self.singles: dict[str, int] = {}
        self.values: dict[str, tuple[str, ...]] = {}
        self.tensors: list[Tensor] = []
        self.tensor_lines: list[int] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.calls: list[Call] = []
        self.columns: list[int] = []
        """The 1-based column of each token of the current line."""

    def error(self, message: str, token: int = 0, column: int | None = None) -> PlanError:
        """The error `message` at the current line, located at its `token`'th
        token (or at `column`)."""
        if column is None:
            column = self.columns[token] if token < len(self.columns) else 1
        return PlanError(f"{self.path}:{self.line}:{column}: error: {message}")

    def number(self, tokens: list[str], index: int, what: str, limit: int) -> int:
        token = tokens[index]
        if not _NUMBER.fullmatch(token):
            raise self.error(f"{what}: expected an unsigned integer, found `{token}`", index)
        if len(token) > 20 or int(token) > limit:
            raise self.error(f"{what} {token} is larger than {limit}", index)
        return int(token)

    def tensor_id(self, tokens: list[str], index: int, what: str) -> int:
        id = self.number(tokens, index, what, MAX_TENSORS)
        if id >= len(self.tensors):
            raise self.error(
                f"{what}: unknown tensor id {id} ({len(self.tensors)} tensors declared so far)",
                index,
            )
        return id

    def fields(self, tokens: list[str], count: int, usage: str) -> None:
        if len(tokens) != count:
            raise self.error(f"expected `{usage}`, found {len(tokens)} fields instead of {count}")

    def statement(self, tokens: list[str]) -> None:
        keyword = tokens[0]
        if self.end:
            raise self.error("a statement after `end`")
        if not self.header:
            if keyword != "tconv-plan":
                raise self.error(
                    f"expected `tconv-plan {PLAN_VERSION}` as the first statement, "
                    f"found `{keyword}`"
                )
            self.fields(tokens, 2, "tconv-plan <version>")
            version = self.number(tokens, 1, "plan version", 2**32 - 1)
            if version != PLAN_VERSION:
                raise self.error(
                    f"plan version {version} is not supported "
                    f"(this reader reads version {PLAN_VERSION})",
                    1,
                )
            self.header = True
        elif keyword in ("target", "library", "params", "arena"):
            self.single(keyword, tokens)
        elif keyword == "tensor":
            self.tensor(tokens)
        elif keyword in ("input", "output"):
            self.port(keyword, tokens)
        elif keyword == "call":
            self.call(tokens)
        elif keyword == "end":
            self.fields(tokens, 1, "end")
            self.end = True
        elif keyword == "tconv-plan":
            raise self.error("a second `tconv-plan` line")
        else:
            raise self.error(f"unknown statement `{keyword}`")

    def single(self, keyword: str, tokens: list[str]) -> None:
        if keyword in self.singles:
            raise self.error(
                f"a second `{keyword}` line (the first is line {self.singles[keyword]})"
            )
        if self.tensors:
            raise self.error(f"`{keyword}` must come before the first `tensor` line")
        self.singles[keyword] = self.line
        if keyword == "target":
            if len(tokens) not in (2, 3):
                raise self.error(
                    f"expected `target cpu` or `target cuda <arch>`, found {len(tokens)} fields"
                )
            try:
                _check_target(tokens[1], tokens[2] if len(tokens) == 3 else "")
            except _BrokenRule as error:
                raise self.error(str(error), 1) from None
            self.values[keyword] = tuple(tokens[1:])
            return
        usage = {
            "library": "library <file>",
            "params": "params <file> <bytes>",
            "arena": "arena <bytes>",
        }[keyword]
        self.fields(tokens, usage.count(" ") + 1, usage)
        if keyword != "arena":
            try:
                _check_file_name(tokens[1])
            except _BrokenRule as error:
                raise self.error(str(error), 1) from None
        if keyword == "params":
            self.number(tokens, 2, "parameter bytes", MAX_BYTES)
        if keyword == "arena":
            self.number(tokens, 1, "arena bytes", MAX_BYTES)
        self.values[keyword] = tuple(tokens[1:])

    def tensor(self, tokens: list[str]) -> None:
        if not {"library", "params", "arena"} <= self.singles.keys():
            raise self.error("`library`, `params` and `arena` must come before the first tensor")
        if len(tokens) < 7:
            raise self.error(
                "expected `tensor <id> <name> <dtype> arena|param <offset> <ndim> <dim>...`, "
                f"found {len(tokens)} fields"
            )
        id = self.number(tokens, 1, "tensor id", MAX_TENSORS)
        if id < len(self.tensors):
            raise self.error(
                f"duplicate tensor id {id} (declared on line {self.tensor_lines[id]})", 1
            )
        if id > len(self.tensors):
            raise self.error(f"tensor id {id} is out of order: expected {len(self.tensors)}", 1)
        if len(tokens[2].encode()) > MAX_NAME:
            raise self.error(f"tensor name is longer than {MAX_NAME} bytes", 2)
        if tokens[3] not in DTYPE_BYTES:
            raise self.error(
                f"tensor {id}: dtype `{tokens[3]}` is not supported "
                f"(expected one of {_DTYPE_LIST})",
                3,
            )
        if tokens[4] not in ("arena", "param"):
            raise self.error(f"tensor {id}: expected `arena` or `param`, found `{tokens[4]}`", 4)
        offset = self.number(tokens, 5, "tensor offset", MAX_BYTES)
        ndim = self.number(tokens, 6, "tensor ndim", MAX_NDIM)
        if ndim == 0:
            raise self.error(f"tensor {id}: ndim must be at least 1", 6)
        if len(tokens) != 7 + ndim:
            raise self.error(
                f"tensor {id}: ndim {ndim} needs {ndim} dims, found {len(tokens) - 7}", 6
            )
        dims = []
        for axis in range(ndim):
            dims.append(self.number(tokens, 7 + axis, "tensor dim", MAX_BYTES))
            if dims[-1] == 0:
                raise self.error(f"tensor {id}: dim {axis} is 0", 7 + axis)
        shape = tuple(dims)
        tensor = Tensor(tokens[2], tokens[4], offset, shape, tokens[3])  # type: ignore[arg-type]
        try:
            _check_tensor(id, tensor, int(self.values["arena"][0]), int(self.values["params"][1]))
        except _BrokenRule as error:
            raise self.error(str(error), 5) from None
        self.tensors.append(tensor)
        self.tensor_lines.append(self.line)

    def port(self, kind: str, tokens: list[str]) -> None:
        self.fields(tokens, 2, f"{kind} <tensor-id>")
        id = self.tensor_id(tokens, 1, kind)
        ids = self.inputs if kind == "input" else self.outputs
        if self.tensors[id].location != "arena":
            raise self.error(
                f"{kind} {id} ({self.tensors[id].name}) is a parameter; "
                "inputs and outputs live in the arena",
                1,
            )
        if self.tensors[id].dtype != "f32":
            raise self.error(
                f"{kind} {id} ({self.tensors[id].name}) is {self.tensors[id].dtype}; "
                "inputs and outputs are f32",
                1,
            )
        if id in ids:
            raise self.error(f"tensor {id} ({self.tensors[id].name}) is already an {kind}", 1)
        ids.append(id)

    def call(self, tokens: list[str]) -> None:
        if len(tokens) < 3:
            raise self.error(
                f"expected `call <symbol> <nargs> <tensor-id>...`, found {len(tokens)} fields"
            )
        symbol = tokens[1]
        if not _SYMBOL.fullmatch(symbol) or len(symbol) > MAX_SYMBOL:
            raise self.error(
                f"`{symbol}` is not a kernel symbol (letters, digits and _, at most {MAX_SYMBOL})",
                1,
            )
        nargs = self.number(tokens, 2, "call nargs", MAX_ARGS)
        if nargs == 0:
            raise self.error(f"call {symbol}: nargs must be at least 1", 2)
        if len(tokens) != 3 + nargs:
            raise self.error(
                f"call {symbol}: nargs {nargs} needs {nargs} tensor ids, found {len(tokens) - 3}",
                2,
            )
        self.calls.append(Call(symbol, tuple(
            self.tensor_id(tokens, 3 + i, "call argument") for i in range(nargs)
        )))

    def plan(self) -> Plan:
        for keyword, present in (
            ("tconv-plan", self.header),
            ("library", "library" in self.singles),
            ("params", "params" in self.singles),
            ("arena", "arena" in self.singles),
            ("end", self.end),
        ):
            if not present:
                truncated = " (the plan is truncated)" if keyword == "end" else ""
                raise PlanError(f"{self.path}: error: no `{keyword}` line{truncated}")
        if not (self.inputs and self.outputs and self.calls):
            raise PlanError(
                f"{self.path}: error: a plan needs at least one input, output and call"
            )
        target, arch = (*self.values.get("target", ("cpu",)), "")[:2]
        return Plan(
            library=self.values["library"][0],
            params=self.values["params"][0],
            params_bytes=int(self.values["params"][1]),
            arena_bytes=int(self.values["arena"][0]),
            tensors=tuple(self.tensors),
            inputs=tuple(self.inputs),
            outputs=tuple(self.outputs),
            calls=tuple(self.calls),
            target=target,
            arch=arch,
        )


def parse_plan(text: str, path: str = PLAN_FILE) -> Plan:
    """The plan in `text`; `path` names it in errors."""
    reader = _Reader(path)
    for reader.line, line in enumerate(text.split("\n"), start=1):
        control = _CONTROL.search(line)
        if control:
            raise reader.error(
                f"unexpected control character 0x{ord(control.group()):02x}",
                column=control.start() + 1,
            )
        matches = list(_TOKEN.finditer(line))
        tokens = [match.group() for match in matches]
        reader.columns = [match.start() + 1 for match in matches]
        if tokens and not tokens[0].startswith("#"):
            reader.statement(tokens)
    return reader.plan()


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """The plan in the file `path` (or in `path/plan.txt` for an artifact directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / PLAN_FILE
    try:
        text = path.read_bytes().decode()
    except OSError as error:
        raise PlanError(f"{path}: error: cannot read the plan: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise PlanError(
            f"{path}: error: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    return parse_plan(text, str(path))


def write_artifact(
    directory: str | os.PathLike[str],
    plan: Plan,
    params_blob: bytes | bytearray | memoryview,
    library_path: str | os.PathLike[str],
) -> None:
    """Write the artifact `directory`: the plan, the parameters and a copy of
    the kernel library, under the names the plan gives them.

    The files are written into a temporary directory beside `directory`,
    which is then renamed into place, so a failure leaves no partial
    artifact. An existing artifact (a directory holding `plan.txt`) or an
    empty directory is replaced; anything else is an error."""
    text = format_plan(plan)
    blob = memoryview(params_blob).cast("B")
    if blob.nbytes != plan.params_bytes:
        raise PlanError(
            f"error: the parameter blob has {blob.nbytes} bytes, "
            f"the plan declares {plan.params_bytes}"
        )
    target = Path(directory)
    if target.exists() and not (
        target.is_dir() and ((target / PLAN_FILE).exists() or not any(target.iterdir()))
    ):
        raise PlanError(f"error: {target} exists and is not a tconv artifact; not replacing it")
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        shutil.copyfile(library_path, staging / plan.library)
        (staging / plan.params).write_bytes(blob)
        (staging / PLAN_FILE).write_text(text)
        (staging / MANIFEST_FILE).write_text(
            format_manifest(staging, (PLAN_FILE, plan.library, plan.params))
        )
        if target.exists():
            retired = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old."))
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            raise PlanError(f"error: cannot write the artifact {target}: {error}") from None
        raise


# The manifest ---------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def format_manifest(directory: str | os.PathLike[str], names: tuple[str, ...]) -> str:
    """The text of the `MANIFEST` of the files `names` in `directory`: each
    one's size and SHA-256."""
    lines = [f"tconv-manifest {MANIFEST_VERSION}"]
    for name in dict.fromkeys(names):
        path = Path(directory) / name
        lines.append(f"file {name} {path.stat().st_size} {_sha256(path)}")
    lines.append("end")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Listed:
    """A manifest's line for one file: its size, its SHA-256 and where the
    line names it (`MANIFEST:LINE:COL`)."""

    size: int
    sha256: str
    where: str


def _parse_manifest(text: str, path: Path) -> dict[str, _Listed]:
    """Each file of the manifest `text` by name."""
    files: dict[str, _Listed] = {}
    header = end = False
    for number, line in enumerate(text.split("\n"), start=1):
        matches = list(_TOKEN.finditer(line))
        tokens = [match.group() for match in matches]

        def error(message: str, token: int = 0) -> PlanError:
            column = matches[token].start() + 1 if token < len(matches) else 1
            return PlanError(f"{path}:{number}:{column}: error: {message}")

        control = _CONTROL.search(line)
        if control:
            raise PlanError(
                f"{path}:{number}:{control.start() + 1}: error: unexpected control character "
                f"0x{ord(control.group()):02x}"
            )
        if not tokens or tokens[0].startswith("#"):
            continue
        if end:
            raise error("a statement after `end`")
        if not header:
            if tokens != ["tconv-manifest", str(MANIFEST_VERSION)]:
                raise error(f"expected `tconv-manifest {MANIFEST_VERSION}` as the first statement")
            header = True
        elif tokens[0] == "end" and len(tokens) == 1:
            end = True
        elif tokens[0] == "file" and len(tokens) == 4:
            try:
                _check_file_name(tokens[1])
            except _BrokenRule as broken:
                raise error(str(broken), 1) from None
            if tokens[1] in files:
                raise error(f"`{tokens[1]}` is listed twice", 1)
            if not _NUMBER.fullmatch(tokens[2]) or len(tokens[2]) > 20:
                raise error(f"expected a size in bytes, found `{tokens[2]}`", 2)
            if not _SHA256.fullmatch(tokens[3]):
                raise error(f"expected a SHA-256 in hex, found `{tokens[3]}`", 3)
            files[tokens[1]] = _Listed(int(tokens[2]), tokens[3], f"{path}:{number}:{matches[1].start() + 1}")
        else:
            raise error("expected `file <name> <bytes> <sha256>` or `end`")
    if not end:
        raise PlanError(f"{path}: error: no `end` line (the manifest is truncated)")
    return files


def _damaged(path: Path, why: str) -> PlanError:
    return PlanError(
        f"{path}: error: does not match the artifact's manifest ({why}) — "
        "the artifact is damaged; compile it again"
    )


def check_artifact(directory: str | os.PathLike[str]) -> Plan:
    """The plan of the artifact `directory`, once every file its `MANIFEST`
    lists has the size and SHA-256 listed there, and the manifest lists the
    plan, its kernel library and its parameter file. Nothing of the artifact
    is loaded before. An artifact without a manifest (written before tconv
    had them) is refused: it must be compiled again."""
    directory = Path(directory)
    manifest = directory / MANIFEST_FILE
    if not manifest.exists() and not manifest.is_symlink():
        if (directory / PLAN_FILE).exists():
            raise PlanError(
                f"{directory}: error: the artifact has no {MANIFEST_FILE}: it was compiled by an "
                "older tconv (or copied incompletely); compile it again"
            )
        raise PlanError(f"{directory}: error: not a tconv artifact (no {PLAN_FILE})")
    try:
        with manifest.open("rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise PlanError(f"{manifest}: error: cannot read the manifest: {error.strerror}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise PlanError(f"{manifest}: error: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError as error:
        raise PlanError(
            f"{manifest}: error: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    files = _parse_manifest(text, manifest)
    if PLAN_FILE not in files:
        raise PlanError(f"{manifest}: error: does not list {PLAN_FILE}")
    for name, listed in files.items():
        path = directory / name
        try:
            actual = path.stat().st_size if path.is_file() else None
        except OSError:
            actual = None
        if actual is None:
            # Located at the manifest's line: the name may be the damage.
            raise PlanError(
                f"{listed.where}: error: lists `{name}`, which is missing from {directory} or not a regular "
                "file — the artifact is damaged; compile it again"
            )
        if actual != listed.size:
            raise _damaged(path, f"size {actual}, expected {listed.size}")
    for name, listed in files.items():
        path = directory / name
        try:
            actual_sha256 = _sha256(path)
        except OSError as error:
            raise PlanError(f"{path}: error: cannot read the file: {error.strerror}") from None
        if actual_sha256 != listed.sha256:
            raise _damaged(path, "its SHA-256 differs from the one listed")
    plan = read_plan(directory)
    for name in (plan.library, plan.params):
        if name not in files:
            raise PlanError(
                f"{manifest}: error: does not list `{name}`, which {PLAN_FILE} names; "
                "compile the artifact again"
            )
    return plan
