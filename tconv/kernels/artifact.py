"""Any backend's `KernelProgram` → an artifact directory the C runtime runs.

`plan_program` lays out every parameter the calls read (raw store entries
and derived ones: packed, batch-norm-folded weights and biases) in one
parameter blob, each in its tensor's dtype and 64-byte aligned, and places
the network's inputs and every activation in one arena with the
liveness-based planner of `tconv.runtime.memory_plan`, a concatenation's
parts as views of its result where they can be (`kernels.concat_views`:
the concatenation then copies nothing and its call is dropped).
`write_program_artifact` writes the plan, the
blob and the kernel library a backend provides with
`tconv.runtime.plan.write_artifact` (atomically: a failure leaves no partial
artifact).

A kernel library exports `tconv_plan_fingerprint` (a cpu one linked with
`fingerprint_object`, a cuda one compiled from a source that ends with
`fingerprint_definition`): the fingerprint of the plan it is written with
(`tconv.runtime.plan.plan_fingerprint`), which the C runtime compares with
the plan beside it, so that a library from another compile (another batch,
another network) is refused rather than called with tensors it was not
built for.

Plan tensor ids are the program's tensor ids (`program.Tensor.id`), so a
plan line can be traced back to the `KernelProgram`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tconv.ir.loader import TconvError
from tconv.kernels.concat_views import concat_views
from tconv.kernels.program import DTYPES, KernelProgram
from tconv.runtime import plan as plan_format
from tconv.runtime.memory_plan import ALIGNMENT, align_up, buffers_for_steps, plan_arena

LIBRARY_FILE = "kernels.so"
PARAMS_FILE = "params.bin"


@dataclass(frozen=True)
class ArtifactReport:
    """What `compile_artifact` wrote."""

    directory: Path
    arena_bytes: int
    """The planned arena: the activations' peak with reuse."""
    activation_bytes: int
    """The sum of every arena tensor's bytes (inputs included): the arena without reuse."""
    params_bytes: int
    calls: int
    kernels: int
    """Distinct kernel symbols (calls may share one)."""

    def format(self) -> str:
        return (
            f"wrote {self.directory}\n"
            f"  calls    {self.calls} ({self.kernels} distinct kernels)\n"
            f"  arena    {self.arena_bytes:,} bytes (activations without reuse: "
            f"{self.activation_bytes:,} bytes)\n"
            f"  params   {self.params_bytes:,} bytes"
        )


def _tensor_name(name: str) -> str:
    """A plan-legal name: no whitespace or control characters, at most 255 bytes."""
    name = re.sub(r"[\x00-\x20\x7f]", "_", name) or "_"
    return name.encode()[: plan_format.MAX_NAME].decode(errors="ignore") or "_"


def plan_program(
    program: KernelProgram, params: Mapping[str, np.ndarray], target: str = "cpu", arch: str = ""
) -> tuple[plan_format.Plan, bytearray]:
    """The plan of `program` for `target` (and CUDA `arch`), and its parameter
    blob, from the bound store `params`."""
    arrays = program.materialize(params)
    tensors = program.tensors
    for index in program.outputs:
        if tensors[index].kind not in ("activation",):
            raise TconvError(
                f"error: output {index} ({tensors[index].name}) is a network {tensors[index].kind}, "
                "not a computed value; the artifact writer cannot write such a network"
            )
    if not program.calls:
        raise TconvError("error: the network has no kernel calls; nothing to compile")

    # Parameters: one blob, each tensor at an aligned offset, in id order.
    param_offsets: dict[int, int] = {}
    size = 0
    for tensor in tensors:
        if tensor.kind in ("param", "derived"):
            param_offsets[tensor.id] = size
            size = align_up(size + tensor.nbytes, ALIGNMENT)
    blob = bytearray(size)
    for index, offset in param_offsets.items():
        # Each in its own dtype (materialize has checked it against the tensor's).
        data = np.ascontiguousarray(arrays[index], DTYPES[tensors[index].dtype]).tobytes()
        blob[offset : offset + len(data)] = data

    # Arena: inputs and activations, placed by liveness over the call order;
    # a concatenation's parts are views of its result, placed with it.
    views = concat_views(program)
    calls = [call for index, call in enumerate(program.calls) if index not in views.dropped]
    arena_ids = [t.id for t in tensors if t.kind in ("input", "activation") and t.id not in views.base]
    slot = {tensor_id: i for i, tensor_id in enumerate(arena_ids)}

    def slot_of(tensor_id: int) -> int | None:
        base = views.resolve(tensor_id)[0]
        return slot.get(base)

    steps = [[i for i in map(slot_of, call.args) if i is not None] for call in calls]
    buffers = buffers_for_steps(
        [tensors[i].nbytes for i in arena_ids],
        steps,
        inputs=[slot[t.id] for t in program.inputs],
        outputs=[slot_of(i) for i in program.outputs],
    )
    arena = plan_arena(buffers, ALIGNMENT)

    plan_tensors = []
    for tensor in tensors:
        if slot_of(tensor.id) is not None:
            base, within = views.resolve(tensor.id)
            location, offset = "arena", arena.offsets[slot[base]] + within
        else:
            location, offset = "param", param_offsets[tensor.id]
        plan_tensors.append(
            plan_format.Tensor(_tensor_name(tensor.name), location, offset, tensor.shape, tensor.dtype)
        )
    plan = plan_format.Plan(
        library=LIBRARY_FILE,
        params=PARAMS_FILE,
        params_bytes=len(blob),
        arena_bytes=arena.peak_bytes,
        tensors=tuple(plan_tensors),
        inputs=tuple(t.id for t in program.inputs),
        outputs=tuple(program.outputs),
        calls=tuple(plan_format.Call(c.symbol, c.args) for c in calls),
        target=target,
        arch=arch,
    )
    plan.check()
    return plan, blob


def fingerprint_definition(plan: plan_format.Plan) -> str:
    """C and C++ source that defines `plan`'s fingerprint as the exported
    `const uint64_t tconv_plan_fingerprint`."""
    fingerprint = plan_format.plan_fingerprint(plan_format.format_plan(plan))
    return (
        "#include <stdint.h>\n#ifdef __cplusplus\nextern \"C\"\n#endif\n"
        f"__attribute__((visibility(\"default\"), used)) const uint64_t "
        f"{plan_format.FINGERPRINT_SYMBOL} = 0x{fingerprint:016x}ull;\n"
    )


def fingerprint_object(plan: plan_format.Plan, directory: Path) -> Path:
    """An ELF object in `directory` that exports `plan`'s fingerprint
    (`fingerprint_definition`), to link into its cpu kernel library;
    compiled by the system C compiler (`$CC`, default cc)."""
    source = directory / "tconv_fingerprint.c"
    source.write_text(fingerprint_definition(plan))
    obj = directory / "tconv_fingerprint.o"
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise TconvError(f"error: no C compiler `{compiler}` to build the kernel library (set CC)")
    result = subprocess.run(
        [compiler, "-c", "-fPIC", "-o", str(obj), str(source)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise TconvError(f"error: compiling the plan's fingerprint failed:\n{result.stderr.strip()}")
    return obj


def write_program_artifact(
    program: KernelProgram,
    params: Mapping[str, np.ndarray],
    out_dir: str | os.PathLike[str],
    write_library: Callable[[Path, plan_format.Plan], None],
    target: str = "cpu",
    arch: str = "",
) -> ArtifactReport:
    """Write the artifact of `program` (any backend's) into `out_dir`: its
    plan and parameter blob from the bound store `params`, and the kernel
    library that `write_library(path, plan)` writes at the path it is given
    (in a scratch directory of its own), exporting the plan's fingerprint
    (`fingerprint_object` for a cpu library, `fingerprint_definition` in a
    cuda library's source)."""
    plan, blob = plan_program(program, params, target, arch)
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tconv-artifact-") as scratch:
        library = Path(scratch) / LIBRARY_FILE
        write_library(library, plan)
        plan_format.write_artifact(out_dir, plan, blob, library)
    activation_bytes = sum(t.nbytes for t in plan.tensors if t.location == "arena")
    return ArtifactReport(
        directory=out_dir,
        arena_bytes=plan.arena_bytes,
        activation_bytes=activation_bytes,
        params_bytes=plan.params_bytes,
        calls=len(plan.calls),
        kernels=len({call.symbol for call in plan.calls}),
    )
