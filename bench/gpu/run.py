"""The GPU check: tconv's cuda artifacts against PyTorch (cuDNN) on an NVIDIA GPU.

    bash bench/gpu/run.sh [--backends tvm,llvm]     (on the GPU machine; see prepare.sh)

For every case of `cases.py`, each backend's artifact compiled by
`prepare.py` runs on the GPU: the TVM backend's through
`tconv.runtime.cuda` (tvm_ffi, torch memory), the LLVM backend's PTX through
`tconv.runtime.cuda_driver` (the CUDA driver API, ctypes). The same IR and
seeded parameters run through `tconv.semantics.torch_executor` in torch fp32
with TF32 off. It prints, per case and backend, the relative error
‖out−ref‖/‖ref‖ (must be below 1e-4) and the times: the median over rounds
of CUDA-event-timed batches of launches, tconv and torch alternating. Exit
status 1 if any case is wrong, 2 if there is no GPU to run on.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from cases import SEED, backend_list, cases_matching, directory_name

from tconv.errors import TconvError

TOLERANCE = 1e-4


def write_params(directory: Path, module, params) -> None:
    """The artifact's parameter file, from the seeded parameters (see prepare.py)."""
    from tconv.ir.params import bind_params
    from tconv.kernels.artifact import PARAMS_FILE, plan_program
    from tconv.runtime.plan import read_plan

    program = pickle.loads((directory / "program.pkl").read_bytes())
    artifact = read_plan(directory)
    plan, blob = plan_program(program, bind_params(module, params), artifact.target, artifact.arch)
    if replace(plan, library=artifact.library) != artifact:
        raise SystemExit(f"{directory}: the regenerated plan differs from the artifact's")
    (directory / PARAMS_FILE).write_bytes(blob)


def open_runtime(backend: str, directory: Path):
    """The runtime of `backend`'s artifact in `directory`."""
    if backend == "llvm":
        from tconv.runtime.cuda_driver import DriverRuntime

        return DriverRuntime(directory)
    from tconv.runtime.cuda import CudaRuntime

    return CudaRuntime(directory)


def time_ms(torch, launch, rounds: int, launches: int) -> list[float]:
    """Per-launch milliseconds of `rounds` CUDA-event-timed batches of `launches`."""
    times = []
    for _ in range(rounds):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(launches):
            launch()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / launches)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(Path(__file__).parent / "build"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--backends", default="tvm,llvm", type=backend_list,
                        help="comma-separated: tvm, llvm (default: both)")
    parser.add_argument("--only", default="", help="the cases whose names match this regular expression")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        print("error: no CUDA device to run on: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: no CUDA device: torch sees no GPU; run this on the GPU machine (see prepare.sh)",
              file=sys.stderr)
        return 2
    from tconv.ir.ops import shape_of
    from tconv.ir.params import init_params
    from tconv.kernels.artifact import PARAMS_FILE
    from tconv.passes.analyses.summary import summarize
    from tconv.semantics.reference import single_function
    from tconv.semantics.torch_executor import TorchNetwork

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, fp32, TF32 off")
    print(f"{'case':24s} {'backend':7s} {'GFLOP':>8s} {'tconv ms':>10s} {'torch ms':>10s} {'torch/tconv':>11s} "
          f"{'tconv TFLOP/s':>13s} {'rel. error':>10s}")
    failures = 0
    for case in cases_matching(args.only):
        module = case.build()
        params = init_params(module, seed=SEED)
        shape = shape_of(single_function(module).body.block.args[0])
        x = np.random.default_rng(SEED).standard_normal(shape, dtype=np.float32)
        network = TorchNetwork(module, params, "cuda")
        x_cuda = torch.from_numpy(x).cuda()
        (want,) = network(x_cuda)
        want = want.cpu().numpy()
        gflop = summarize(module).flops / 1e9
        launches = 3 if case.batch > 1 and case.network else 20
        for backend in args.backends:
            directory = Path(args.build) / directory_name(case, backend)
            if not (directory / PARAMS_FILE).exists():
                write_params(directory, module, params)
            try:
                runtime = open_runtime(backend, directory)
            except TconvError as error:
                print(f"{case.name:24s} {backend:7s} cannot run: {error}")
                failures += 1
                continue
            with runtime:
                (got,) = runtime.run(x)  # leaves x in the runtime's input tensor for the timed launches
                error = float(np.linalg.norm(got - want) / np.linalg.norm(want))
                ours, theirs = [], []
                for _ in range(args.rounds):  # alternate, so both see the same clocks
                    ours += time_ms(torch, runtime.execute, 1, launches)
                    theirs += time_ms(torch, lambda: network(x_cuda), 1, launches)
            ours_ms, theirs_ms = statistics.median(ours), statistics.median(theirs)
            ok = error < TOLERANCE
            failures += not ok
            print(f"{case.name:24s} {backend:7s} {gflop:8.2f} {ours_ms:10.3f} {theirs_ms:10.3f} "
                  f"{theirs_ms / ours_ms:10.2f}x {gflop / ours_ms:13.2f} {error:10.2e}"
                  + ("" if ok else "  WRONG"))
    print("all cases match torch" if not failures else f"{failures} case(s) differ from torch or did not run")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
