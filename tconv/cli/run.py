"""`tconv run`: execute a network on one batch and report its outputs.

The parameters come from the store beside the IR (`net.npz` for `net.mlir`).
Without `--input`, the batch is drawn from N(0, 1) with a fixed seed, so two
runs (or two backends) see the same data.

`tconv run DIR`, where DIR is an artifact written by `tconv compile` (a
directory holding plan.txt), runs it with the C runtime
(`tconv.runtime.driver.Runtime`) instead, or a cuda artifact on the GPU
(`tconv.runtime.cuda.CudaRuntime` for the TVM backend's,
`tconv.runtime.cuda_driver.DriverRuntime` for the LLVM backend's): no IR, no parameter store and no TVM are
involved, and the input must have exactly the shape the artifact was
compiled for. The artifact's files are checked against its manifest (sizes
and SHA-256) before anything of it is loaded: a damaged artifact, or one
written before artifacts had manifests, is refused with a message saying to
compile it again.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from tconv.cli.command import Command, note, positive_int
from tconv.cli.files import read_array, write_array
from tconv.ir.loader import TconvError, load_module
from tconv.ir.ops import shape_of
from tconv.ir.params import bind_params, load_store, store_path_for
from tconv.ir.shapes import Shape, format_shape
from tconv.passes.analyses.summary import summarize

PLAN_FILE = "plan.txt"

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
Backend = Callable[[ModuleOp, Mapping[str, np.ndarray], int], AbstractContextManager[Runner]]
"""A backend prepares the network for a batch (compiling it, where it
compiles) and yields what runs it: preparing and running are timed apart."""


@contextmanager
def _reference(module: ModuleOp, params: Mapping[str, np.ndarray], batch: int) -> Iterator[Runner]:
    # Imported on use: each backend loads only when it runs.
    from tconv.semantics import reference

    yield lambda inputs: reference.run(module, params, *inputs)


@contextmanager
def _tvm(module: ModuleOp, params: Mapping[str, np.ndarray], batch: int) -> Iterator[Runner]:
    from tconv.compile import rebatched
    from tconv.lowering.tvm.build import TvmNetwork

    network = TvmNetwork(rebatched(module, batch))
    network.load_params(params)
    yield lambda inputs: network.run(*inputs)


@contextmanager
def _llvm(module: ModuleOp, params: Mapping[str, np.ndarray], batch: int) -> Iterator[Runner]:
    from tconv.compile import compile_network
    from tconv.runtime.driver import Runtime

    with tempfile.TemporaryDirectory(prefix="tconv-run-") as scratch:
        compile_network(module, params, Path(scratch) / "net", backend="llvm", batch=batch)
        with Runtime(Path(scratch) / "net") as runtime:
            yield lambda inputs: runtime.run(*inputs)


BACKENDS: dict[str, Backend] = {"reference": _reference, "tvm": _tvm, "llvm": _llvm}
"""Every backend by name. The compiling ones build for the inputs' batch on
every run, then time the run alone; `tconv compile` builds once."""

COMPILING = ("tvm", "llvm")
TIMED_RUNS = 3
"""A compiled network runs once to warm up, then this many times, timed (the
median is reported, as for an artifact); the reference executor runs once."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE",
        help="tconv IR file; its parameters are read from the .npz beside it (net.npz for "
        "net.mlir); or an artifact directory written by `tconv compile`",
    )
    parser.add_argument(
        "--backend", default="reference", choices=BACKENDS,
        help="the executor (default: reference, the numpy one); tvm and llvm compile the network first",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--input", action="append", metavar="X.npy",
        help="input batch (float, NCHW; any batch size); once per network input",
    )
    source.add_argument(
        "--batch", type=positive_int, metavar="N",
        help="batch size of the random input (default: the IR's)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="seed of the random input (default: 0)"
    )
    parser.add_argument("--output", metavar="Y.npy", help="write the network's output to Y.npy")
    parser.add_argument(
        "--threads", type=positive_int, metavar="T",
        help="artifacts only: threads of the C runtime (default: the CPUs available)",
    )
    parser.add_argument(
        "--profile", type=positive_int, metavar="RUNS",
        help="cpu artifacts only: also run RUNS more times and print each kernel call's mean time",
    )


def _network(module: ModuleOp, path: str) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp):
            return op
    raise TconvError(f"{path}: error: no func.func to run")


def _read_input(path: str, expected: Shape) -> np.ndarray:
    """The array in `path`, which must have the IR's shape up to the batch size."""
    array = read_array(path)
    if array.ndim != len(expected) or array.shape[1:] != expected[1:] or array.shape[0] < 1:
        wanted = format_shape(("N", *expected[1:]))
        raise TconvError(
            f"{path}: error: input has shape {format_shape(array.shape) or 'scalar'}, "
            f"the network expects {wanted} (any batch size N)"
        )
    return array


def _inputs(args: argparse.Namespace, expected: list[Shape]) -> list[tuple[np.ndarray, str]]:
    """Each input array, with where it came from."""
    if args.input:
        if len(args.input) != len(expected):
            raise TconvError(
                f"error: the network takes {len(expected)} input(s), got {len(args.input)} --input"
            )
        arrays = [_read_input(path, shape) for path, shape in zip(args.input, expected)]
        batches = {a.shape[0] for a in arrays}
        if len(batches) > 1:
            raise TconvError(f"error: the inputs have different batch sizes: {sorted(batches)}")
        return list(zip(arrays, args.input))
    rng = np.random.default_rng(args.seed)
    batch = args.batch or (expected[0][0] if expected else 1)
    arrays = [rng.standard_normal((batch, *shape[1:]), dtype=np.float32) for shape in expected]
    shapes = ", ".join(format_shape(a.shape) for a in arrays)
    note(f"no --input given: running on random N(0,1) data of shape {shapes} (seed {args.seed})")
    return [(array, f"random N(0,1), seed {args.seed}") for array in arrays]


def _statistics(array: np.ndarray) -> str:
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return "no finite values"
    text = (
        f"min {finite.min():.4g}  max {finite.max():.4g}  "
        f"mean {finite.mean():.4g}  std {finite.std():.4g}"
    )
    if finite.size < array.size:
        text += f"  ({array.size - finite.size:,} NaN/inf)"
    return text


def _artifact_inputs(args: argparse.Namespace, infos) -> list[tuple[np.ndarray, str]]:
    """The inputs of an artifact run. The runtime checks their shapes; a batch
    other than the compiled one is caught here, to say how to get an artifact for it."""
    if args.input:
        if len(args.input) != len(infos):
            raise TconvError(
                f"error: the artifact takes {len(infos)} input(s), got {len(args.input)} --input"
            )
        inputs = [(read_array(path), path) for path in args.input]
        for (array, path), info in zip(inputs, infos):
            if array.ndim == len(info.shape) and array.shape[1:] == tuple(info.shape[1:]):
                _check_compiled_batch(args.file, infos, array.shape[0], where=f"{path}: ")
        return inputs
    rng = np.random.default_rng(args.seed)
    if args.batch is not None:
        _check_compiled_batch(args.file, infos, args.batch, where="")
    arrays = [rng.standard_normal(info.shape, dtype=np.float32) for info in infos]
    shapes = ", ".join(format_shape(a.shape) for a in arrays)
    note(f"no --input given: running on random N(0,1) data of shape {shapes} (seed {args.seed})")
    return [(array, f"random N(0,1), seed {args.seed}") for array in arrays]


def _check_compiled_batch(artifact: str, infos, batch: int, where: str) -> None:
    """An artifact's kernels have fixed shapes: another batch needs another artifact."""
    compiled = sorted({info.shape[0] for info in infos})
    if compiled != [batch]:
        raise TconvError(
            f"{where}error: batch {batch}, but the artifact {artifact} is compiled for batch "
            f"{', '.join(map(str, compiled))}; compile one for batch {batch} from the IR with "
            f"`tconv compile NET.mlir --batch {batch} -o DIR`"
        )


def _print_inputs_and_outputs(
    inputs: Sequence[tuple[np.ndarray, str]], outputs: Sequence[np.ndarray]
) -> None:
    """The report lines shared by both execution paths: where each input came
    from, and each output's statistics (with top-1 classes for logits)."""
    for array, origin in inputs:
        print(f"  input   {format_shape(array.shape)}  ({origin})")
    for array in outputs:
        print(f"  output  {format_shape(array.shape)}  {_statistics(array)}")
        if array.ndim == 2:
            top = " ".join(str(c) for c in np.argmax(array[:8], axis=1))
            print(f"          top-1 class of the first {min(8, len(array))} samples: {top}")


def _artifact_runtime(args: argparse.Namespace):
    """The runtime of the artifact `args.file`, and what it runs on. Its
    files are checked against its manifest before any is loaded."""
    from tconv.runtime.plan import check_artifact

    plan = check_artifact(args.file)
    if plan.target == "cuda":
        from tconv.runtime.cuda import CudaRuntime
        from tconv.runtime.cuda_driver import DriverRuntime, is_bundle_artifact

        if args.threads is not None:
            note("--threads applies to cpu artifacts only; ignored")
        if args.profile is not None:
            raise TconvError(f"{args.file}: error: --profile times cpu artifacts only (this one is cuda)")
        if is_bundle_artifact(plan):
            return DriverRuntime(args.file), "the GPU (llvm cuda artifact, CUDA driver API)"
        return CudaRuntime(args.file), "the GPU (cuda artifact)"
    from tconv.runtime.driver import Runtime

    return Runtime(args.file, threads=args.threads, verify=False), "the C runtime (artifact)"


def execute_artifact(args: argparse.Namespace) -> None:
    """`tconv run DIR`: run an artifact with the C runtime, or a cuda one on
    the GPU (no TVM import either way)."""
    if args.backend != "reference":
        note(f"--backend {args.backend} is ignored: an artifact runs on its own runtime")
    runtime, where = _artifact_runtime(args)
    with runtime:
        if args.output and len(runtime.outputs) != 1:
            raise TconvError(
                f"error: --output writes one array, the artifact has {len(runtime.outputs)} outputs"
            )
        inputs = _artifact_inputs(args, runtime.inputs)
        arrays = [array for array, _ in inputs]
        outputs = runtime.run(*arrays)  # also the warm-up of the timed runs
        times = []
        for _ in range(3):
            start = time.perf_counter()
            outputs = runtime.run(*arrays)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        arena = runtime.arena_bytes
        calls = runtime.profile(args.profile) if args.profile else None
    batch = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
    if args.output:
        write_array(args.output, outputs[0])
    print(f"{args.file} on {where}, batch {batch}")
    _print_inputs_and_outputs(inputs, outputs)
    print(
        f"  time    {seconds * 1e3:.3f} ms  (median of 3 runs after a warm-up; "
        f"{1e3 * seconds / max(batch, 1):.3f} ms per sample)"
    )
    print(f"  arena   {arena:,} bytes")
    if calls is not None:
        _print_profile(calls, args.profile)
    if args.output:
        print(f"  wrote   {args.output}")


def _print_profile(calls, runs: int) -> None:
    """Each kernel call's mean time over the profiled runs, in plan order."""
    total = sum(call.seconds for call in calls) or 1.0
    width = max(len(call.layer) for call in calls)
    print(f"  profile (mean of {runs} runs; calls in plan order)")
    print(f"    {'call':>4} {'ms':>8} {'share':>6}  {'layer':{width}}  {'output':14} kernel")
    for call in calls:
        print(f"    {call.index:4} {call.seconds * 1e3:8.3f} {100 * call.seconds / total:5.1f}%  "
              f"{call.layer:{width}}  {format_shape(call.shape):14} {call.symbol}")
    print(f"    {'':4} {total * 1e3:8.3f} 100.0%  the calls together")


def execute(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if path.is_dir():
        if not (path / PLAN_FILE).is_file():
            raise TconvError(
                f"{args.file}: error: is a directory but not a tconv artifact (no {PLAN_FILE})"
            )
        execute_artifact(args)
        return
    if args.threads is not None:
        note("--threads applies to artifacts only; ignored")
    if args.profile is not None:
        raise TconvError(f"{args.file}: error: --profile times compiled artifacts only (see `tconv compile`)")
    backend = BACKENDS[args.backend]
    module = load_module(args.file)
    network = _network(module, args.file)
    if args.output and len(network.function_type.outputs) != 1:
        raise TconvError(
            f"error: --output writes one array, the network has "
            f"{len(network.function_type.outputs)} outputs"
        )
    store = store_path_for(args.file)
    params = bind_params(module, load_store(store), source=str(store))
    expected = [shape_of(arg) for arg in network.args]
    inputs = _inputs(args, expected)
    batch = inputs[0][0].shape[0] if inputs else 1

    arrays = [array for array, _ in inputs]
    start = time.perf_counter()
    with backend(module, params, batch) as run:
        compile_seconds = time.perf_counter() - start
        times = []  # the first run is the warm-up of the others, if any
        for _ in range(1 + (TIMED_RUNS if args.backend in COMPILING else 0)):
            start = time.perf_counter()
            outputs = run(arrays)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:]) if len(times) > 1 else times[0]

    if args.output:
        write_array(args.output, outputs[0])
    # Every op's work is linear in the batch, so the IR's count scales to this one.
    ir_batch = expected[0][0] if expected else 1
    flops = summarize(module).flops * batch / ir_batch
    print(f"{network.sym_name.data} on the {args.backend} backend, batch {batch}")
    _print_inputs_and_outputs(inputs, outputs)
    how = f"median of {TIMED_RUNS} runs after a warm-up" if len(times) > 1 else "one run"
    print(
        f"  time    {seconds * 1e3:.3f} ms  ({how}; {1e3 * seconds / batch:.3f} ms per sample, "
        f"{flops / max(seconds, 1e-9) / 1e9:.2f} GFLOP/s)"
    )
    if args.backend in COMPILING:
        print(f"  compile {compile_seconds:.1f} s  (building the kernels for batch {batch}; not in the time)")
    if args.output:
        print(f"  wrote   {args.output}")


RUN = Command(
    name="run",
    help="run a network on one batch and report its output",
    description="Run a network on one batch (from --input, or random) with its parameter "
    "store, and print the output's shape, statistics and the time taken.",
    configure=configure,
    execute=execute,
)
