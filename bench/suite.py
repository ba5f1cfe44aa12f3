"""The benchmark suite: tconv beside PyTorch and ONNX Runtime, single convs
and whole networks, batch 1, at 1 and 2 threads, in one process (a
measurement, not a test).

    make bench                                  # = .venv/bin/python bench/suite.py -o build/bench.md
    .venv/bin/python bench/suite.py --kernels --threads 2 --rounds 3

tconv runs compiled artifacts on the C runtime, zero-copy (input written into
the arena, `execute()`), its thread count set per measurement, its
convolutions scheduled from the tuning database (`--tuning`, default the
cache's; `--tune SECONDS` first tunes each case's workloads into it, at the
largest thread count, which the 1-thread rows reuse). PyTorch runs
the same convolution with a pre-allocated output (`aten.convolution.out`)
and whole networks through `tconv.semantics.torch_executor` (eager torch, one
op at a time, as a user would run the model); ONNX Runtime runs the ONNX
export with its output bound (`tconv.search.timing.OrtRunner`). "TVM
default" is what TVM gives the same ONNX model by its own defaults: the Relax
ONNX frontend and `tvm.compile` for this CPU, without schedules (TVM 0.27 has
no x86 convolution schedules to apply; `--no-tvm` leaves it out). All run on the same
weights and input, timed in alternating rounds (`interleaved_medians`, each
runner's calls per sample chosen to last ~20 ms, after 5 ms of untimed
calls); rates are from each runner's median over rounds, ratios are the
median over rounds of the ratio within a round, with its quartiles over
the rounds beside it. The
peak is an FMA loop on the CPU's widest vectors (`fma_peak.py`), measured in
the same run at each thread count; a 4096² sgemm in torch is printed beside
it (on Zen 5 it reaches only 40% of the FMA loop). Rates are GFLOP/s
(2 × MACs per second); "fastest peer" names the fastest of PyTorch, ONNX
Runtime, OpenVINO and torch.compile on the row, "tconv vs it" is tconv's
speed over its, "% peak" tconv's share of the FMA loop's rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from fma_peak import fma_peak  # noqa: E402

KERNELS = {
    # name: (in channels, size, out channels, kernel, stride, groups)
    "R34 64ch 56² 3×3": (64, 56, 64, 3, 1, 1),
    "R34 128ch 28² 3×3": (128, 28, 128, 3, 1, 1),
    "R34 256ch 14² 3×3": (256, 14, 256, 3, 1, 1),
    "R34 512ch 7² 3×3": (512, 7, 512, 3, 1, 1),
    "64ch 56² 3×3 g2": (64, 56, 64, 3, 1, 2),
    "64ch 56² 3×3 g4": (64, 56, 64, 3, 1, 4),
    "64ch 56² 3×3 g8": (64, 56, 64, 3, 1, 8),
    "64ch 56² 3×3 g16": (64, 56, 64, 3, 1, 16),
    "64ch 56² 3×3 g32": (64, 56, 64, 3, 1, 32),
    "64ch 56² 3×3 depthwise": (64, 56, 64, 3, 1, 64),
    "256ch 14² 1×1": (256, 14, 256, 1, 1, 1),
    "CIFAR 64ch 32² 3×3": (64, 32, 64, 3, 1, 1),
    "CIFAR 64ch 32² 3×3 g4": (64, 32, 64, 3, 1, 4),
}

NETWORKS = {
    "ResNet-18 CIFAR": ("resnet18", "cifar10"),
    "ResNet-34 CIFAR": ("resnet34", "cifar10"),
    "ResNet-18 ImageNet": ("resnet18", "imagenet"),
    "ResNet-34 ImageNet": ("resnet34", "imagenet"),
    "MobileNetV2": ("mobilenet_v2", "imagenet"),
    "MobileNet": ("mobilenet_v1", "imagenet"),
    "ResNet-50 ImageNet": ("resnet50", "imagenet"),
    "ResNeXt-29 2x64d": ("resnext29_2x64d", "cifar10"),
    "WRN-40-2": ("wrn40_2", "cifar10"),
    "DenseNet-BC-100": ("densenet_bc100", "cifar10"),
}


@dataclass
class Row:
    name: str
    threads: int
    gflop: float
    rounds: dict[str, list[float]]  # seconds per call, per round
    peak: float

    @property
    def seconds(self) -> dict[str, float]:
        return {who: statistics.median(times) for who, times in self.rounds.items()}

    def rate(self, who: str) -> float:
        return self.gflop / self.seconds[who]

    def round_ratios(self, *peers: str) -> list[float]:
        """tconv's speed over the fastest of `peers` present, round by round.
        The host's load moves over seconds (the same kernel, in the same
        process, runs at 1- or 2-thread speed for seconds at a time); a
        ratio of runs a few seconds apart carries that drift, one within a
        round mostly does not."""
        present = [who for who in peers if who in self.rounds]
        return [min(self.rounds[who][r] for who in present) / ours for r, ours in enumerate(self.rounds["tconv"])]

    def ratio(self, *peers: str) -> float:
        """The median of `round_ratios`."""
        return statistics.median(self.round_ratios(*peers))

    def spread(self, *peers: str) -> str:
        """The quartiles of `round_ratios`: how far the noise of the rounds
        moves the ratio."""
        ratios = self.round_ratios(*peers)
        if len(ratios) < 2:
            return "-"
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return f"{low:.2f}–{high:.2f}"

    def fastest_peer(self) -> str:
        return min((who for who in PEERS if who in self.seconds), key=lambda who: self.seconds[who])

    def markdown(self) -> str:
        def rate(who: str) -> str:
            return f"{self.rate(who):.1f}" if who in self.seconds else "-"

        versus_tvm = f"{self.ratio('TVM default'):.2f}" if "TVM default" in self.seconds else "-"
        peers = [who for who in PEERS if who in self.seconds]
        return (
            f"| {self.name} | {self.threads} | {1e3 * self.seconds['tconv']:.3f} | "
            f"{self.rate('tconv'):.1f} | {' | '.join(rate(who) for who in PEERS)} | {rate('TVM default')} | "
            f"{self.fastest_peer()} | {self.ratio(*peers):.2f} | {self.spread(*peers)} | {versus_tvm} | "
            f"{100 * self.rate('tconv') / self.peak:.0f}% |"
        )


PEERS = ("PyTorch", "ORT", "OpenVINO", "torch.compile")
"""What a user would otherwise run; TVM's unscheduled kernels get their own ratio."""
HEADER = (
    "| case | threads | tconv ms | tconv GFLOP/s | PyTorch GFLOP/s | ORT GFLOP/s | OpenVINO GFLOP/s | "
    "torch.compile GFLOP/s | TVM default GFLOP/s | fastest peer | tconv vs it | its quartiles over rounds | "
    "tconv vs TVM default | tconv % peak |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def sgemm_peak(threads: int, size: int = 4096, runs: int = 5) -> float:
    """GFLOP/s of a size² float32 matrix product in torch on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


class TconvRunner:
    """A compiled artifact on the C runtime (`tconv compile`'s pipeline, its
    layouts chosen as by default), run zero-copy."""

    def __init__(self, module, params, x, scratch: str):
        from tconv.compile import compile_network
        from tconv.runtime.driver import Runtime

        report = compile_network(module, params, Path(scratch) / "artifact").report
        self.runtime = Runtime(report.directory)
        (self.input,) = self.runtime.arena_inputs()
        self.input[...] = x
        self.runtime.execute()
        self.output = self.runtime.arena_outputs()[0].copy()

    def __call__(self):
        self.runtime.execute()


class TvmDefaultRunner:
    """The network's ONNX export through TVM's Relax ONNX frontend, built by
    `tvm.compile` for this CPU with no schedules, run on the Relax VM."""

    def __init__(self, module, params, x):
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        from tconv.frontends.onnx.exporter import export_model
        from tconv.lowering.tvm.target import cpu_target

        self.vm = relax.VirtualMachine(tvm.compile(from_onnx(export_model(module, params)), target=cpu_target()),
                                       tvm.cpu())
        self.x = tvm.runtime.tensor(x, tvm.cpu())
        result = self.vm["main"](self.x)
        self.output = (result if hasattr(result, "numpy") else result[0]).numpy()

    def __call__(self):
        self.vm["main"](self.x)


class OpenVinoRunner:
    """The network's ONNX export compiled by OpenVINO for this CPU, for
    latency, in float32, on `threads` threads; its input set once."""

    def __init__(self, module, params, x, threads: int, scratch: str):
        import openvino as ov

        from tconv.frontends.onnx.exporter import export_model

        path = Path(scratch) / "openvino.onnx"
        path.write_bytes(export_model(module, params).SerializeToString())
        compiled = ov.Core().compile_model(
            str(path), "CPU",
            # float32 as every other runner: OpenVINO may otherwise compute in a lower precision.
            {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"},
        )
        self.request = compiled.create_infer_request()
        self.request.set_input_tensor(ov.Tensor(x))
        self.request.infer()
        self.output = self.request.get_output_tensor().data.copy()

    def __call__(self):
        self.request.infer()


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class TorchCompileRunner:
    """A torch runner (`TorchConvRunner`, `TorchNetworkRunner`) under
    `torch.compile` (inductor, CPU), compiled on its first call."""

    def __init__(self, runner):
        import torch

        # Static shapes: each case its own compile (on the second case dynamo would
        # otherwise trace shapes symbolically, which aten.convolution.out does not survive).
        self.compiled = torch.compile(runner, dynamic=False)
        with torch.no_grad():
            self.output = self.compiled().numpy().copy()

    def __call__(self):
        import torch

        with torch.no_grad():
            return self.compiled()  # returned: a result nobody reads is compiled away


class TorchConvRunner:
    """One convolution in torch, into a pre-allocated output."""

    def __init__(self, module, params, x):
        import torch

        from tconv.ir.ops import Conv2dOp
        from tconv.semantics.reference import single_function

        (conv,) = [op for op in single_function(module).body.block.ops if isinstance(op, Conv2dOp)]
        top, left, _, _ = conv.padding.get_values()
        self.args = dict(
            stride=list(conv.strides.get_values()), padding=[top, left],
            dilation=list(conv.dilations.get_values()), groups=conv.groups.value.data,
        )
        self.x = torch.from_numpy(x)
        self.w = torch.from_numpy(params["conv.weight"])
        self.out = torch.nn.functional.conv2d(self.x, self.w, None, **self.args).contiguous()

    def __call__(self):
        import torch

        a = self.args
        return torch.ops.aten.convolution.out(
            self.x, self.w, None, a["stride"], a["padding"], a["dilation"], False, [0, 0], a["groups"],
            out=self.out,
        )


class TorchNetworkRunner:
    def __init__(self, module, params, x):
        import torch

        from tconv.semantics.torch_executor import TorchNetwork

        self.network = TorchNetwork(module, params)
        self.x = torch.from_numpy(x)

    def __call__(self):
        return self.network(self.x)[0]


def conv_network(channels, size, out_channels, kernel, stride, groups):
    from tconv.ir.builder import NetworkBuilder

    b = NetworkBuilder("conv", (1, channels, size, size))
    return b.finish(
        b.conv2d(b.input, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups, name="conv")
    )


def apply_database(module, database, threads: int, tune_s: float, layout: str) -> None:
    """Tune `module`'s workloads for `tune_s` seconds (if any) in the
    activation `layout` `tconv compile --layout` gives them ("nchw" for a
    lone convolution, whose input and output are the network's), then give
    its convolutions their best recorded schedules and those layouts."""
    from tconv.compile import activation_block, schedule_network
    from tconv.search.tuning import CpuSchedules, tune

    if tune_s > 0:
        tune(module, database, tune_s, threads, schedules=CpuSchedules(threads, activation_block(module, layout)))
    schedule_network(module, database, threads=threads, layout=layout)


def runs_for(runner) -> int:
    """Calls per timed sample: enough to last ~20 ms (timer resolution), 3 to 50."""
    start = time.perf_counter()
    runner()
    return max(3, min(50, int(0.02 / max(time.perf_counter() - start, 1e-6))))


def measure(name, module, params, torch_runner, thread_counts, peaks, rounds, with_tvm=True,
            with_torch_compile=False) -> list[Row]:
    import torch

    from tconv.ir.ops import shape_of
    from tconv.passes.analyses.summary import summarize
    from tconv.search.timing import OrtRunner, interleaved_rounds
    from tconv.semantics.reference import single_function

    shape = shape_of(single_function(module).body.block.args[0])
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    gflop = summarize(module).flops / 1e9
    rows = []
    with tempfile.TemporaryDirectory(prefix="tconv-bench-") as scratch:
        ours = TconvRunner(module, params, x, scratch)
        theirs = torch_runner(module, params, x)
        compiled = None
        if with_torch_compile:
            try:
                compiled = TorchCompileRunner(theirs)
            except Exception as error:  # a peer that cannot compile this network leaves its column empty
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                print(f"{name}: torch.compile failed ({type(error).__name__}: {first[:200]}); its column is left "
                      "empty", file=sys.stderr, flush=True)
        for threads in thread_counts:
            ours.runtime.set_threads(threads)
            torch.set_num_threads(threads)
            ort = OrtRunner(module, params, x, threads)
            ort()
            runners = {"tconv": ours, "PyTorch": theirs, "ORT": ort}
            if openvino_installed():
                runners["OpenVINO"] = OpenVinoRunner(module, params, x, threads, scratch)
            if compiled is not None:
                runners["torch.compile"] = compiled
            if with_tvm:
                runners["TVM default"] = TvmDefaultRunner(module, params, x)
            for who in [who for who in ("ORT", "OpenVINO", "torch.compile", "TVM default") if who in runners]:
                error = np.linalg.norm(ours.output - runners[who].output) / np.linalg.norm(runners[who].output)
                if error > 1e-4:
                    raise SystemExit(f"{name}: tconv and {who} differ (relative error {error:.1e})")
            per_round = interleaved_rounds(list(runners.values()), rounds, [runs_for(r) for r in runners.values()])
            rows.append(Row(name, threads, gflop, dict(zip(runners, per_round)), peaks[threads]))
            print(rows[-1].markdown(), flush=True)
        ours.runtime.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernels", action="store_true", help="single convolutions only")
    parser.add_argument("--networks", action="store_true", help="whole networks only")
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    parser.add_argument("--peak-size", type=int, default=4096, help="the sgemm's matrix size (default: 4096)")
    parser.add_argument("--no-tvm", action="store_true", help="leave out the TVM default column (slow: unscheduled)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="add torch.compile (inductor) as a peer (compiling takes tens of seconds per case)")
    parser.add_argument("--tuning", metavar="PATH", help="tuning database (default: the cache's tuning.jsonl)")
    parser.add_argument("--tune", type=float, default=0.0, metavar="SECONDS",
                        help="tune each case's convolutions this long before measuring it (default: 0)")
    parser.add_argument("-o", "--output", help="also write the Markdown report here")
    args = parser.parse_args()
    os.environ.setdefault("TVM_NUM_THREADS", str(max(args.threads)))

    from tconv.frontends.zoo import build
    from tconv.ir.params import init_params
    from tconv.search.tuning import TuningDatabase, default_database_path

    database = TuningDatabase(args.tuning or default_database_path())
    threads = max(args.threads)

    peaks = {t: fma_peak(t) for t in args.threads}
    sgemm = {t: sgemm_peak(t, args.peak_size) for t in args.threads}
    lines = ["# tconv benchmark", "", "batch 1, fp32; peak: FMA loop "
             + ", ".join(f"{peaks[t]:.0f} GFLOP/s on {t} thread(s)" for t in args.threads)
             + f" ({args.peak_size}² sgemm in torch: " + ", ".join(f"{sgemm[t]:.0f}" for t in args.threads) + ")"
             + f"; tconv schedules from {database.path}" + (f", tuned {args.tune:g} s per case" if args.tune else ""),
             ""]
    print("\n".join(lines) + HEADER, flush=True)
    rows: list[Row] = []
    if not args.networks:
        for name, shape in KERNELS.items():
            if args.only and name not in args.only:
                continue
            module = conv_network(*shape)
            apply_database(module, database, threads, args.tune, "nchw")
            rows += measure(name, module, init_params(module), TorchConvRunner, args.threads, peaks, args.rounds,
                            not args.no_tvm, args.torch_compile)
    if not args.kernels:
        for name, (network, dataset) in NETWORKS.items():
            if args.only and name not in args.only:
                continue
            module = build(network, dataset)
            apply_database(module, database, threads, args.tune, "auto")
            rows += measure(name, module, init_params(module), TorchNetworkRunner, args.threads, peaks, args.rounds,
                            not args.no_tvm, args.torch_compile)
    report = "\n".join([*lines, HEADER, *(row.markdown() for row in rows)]) + "\n"
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(report)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
