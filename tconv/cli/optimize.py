"""`tconv optimize`: search NAS rewrites and schedules for the fastest
network that keeps its capacity, then compile it.

    tconv optimize resnet34 --budget 600 -o r34.opt        # a zoo network (CIFAR-10 where it has one)
    tconv optimize net.mlir --target rpc:board -o net.opt  # measured on devices behind a TVM tracker
    tconv optimize net.mlir --target cuda -o net.opt       # measured on this machine's GPU
    tconv optimize net.mlir --data digits --max-accuracy-drop 1 -o net.opt   # fine-tuned, accuracy checked

DIR receives `optimized.mlir` with its store `optimized.npz`, the compiled
artifact `artifact/` (`tconv run DIR/artifact`), `optimized.onnx`,
`report.json`, `report.md` and `pareto.png`; the before/after table goes
to stdout. Everything is written into a staging directory and moved into
place at the end: a failed or interrupted run leaves no partial output.
Layer measurements go to the tuning database as they are made, so a run
that stops resumes without measuring again. See `tconv.search.optimize`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from tconv.cli.command import Command, UsageError, note, positive_int
from tconv.cli.zoo import zoo_choice
from tconv.cli.train import add_data_arguments, load_data, load_network, require_torch
from tconv.errors import TconvError
from tconv.ir.params import is_trained
from tconv.passes.analyses.capacity import DEFAULT_METRIC, METRICS
from tconv.search.progress import done as end_progress
from tconv.search.quantize_move import DEFAULT_CALIBRATION_SAMPLES

REPORT_FILE = "report.json"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "network", metavar="FILE|ZOO-NAME",
        help="a tconv IR file (parameters from the .npz beside it, else initialised) or a zoo network name",
    )
    parser.add_argument("--dataset", metavar="NAME", help="zoo networks: the dataset (default: cifar10 where the "
                        "network has it, else its first)")
    parser.add_argument("--target", default="cpu", metavar="cpu|cuda|rpc:KEY[@HOST:PORT]",
                        help="where layers are measured: cpu (this machine, the default), cuda (a GPU of this "
                        "machine, llvm-backend kernels) or rpc:KEY (a device behind a TVM RPC tracker)")
    parser.add_argument("--budget", type=float, default=600.0, metavar="SECONDS",
                        help="search time, compiling the answer included (default: 600)")
    parser.add_argument("--min-capacity", type=float, default=1.0, metavar="R",
                        help="keep at least R times the original's capacity (default: 1.0)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, choices=METRICS,
                        help=f"the capacity metric (default: {DEFAULT_METRIC})")
    parser.add_argument("--accept-within-noise", action="store_true",
                        help="also accept rewrites whose capacity ratio is short of --min-capacity by less than "
                        "the seeds' spread ('within noise'; default: only ratios at or above it)")
    parser.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                        help="capacity seeds: a verdict needs the difference to exceed their spread (default: 3)")
    parser.add_argument("--prune", type=float, metavar="RATIO",
                        help="also compare uniform and performance-aware channel pruning of the original at "
                        "RATIO (0 < RATIO < 1; after the search, not counted in --budget)")
    parser.add_argument("--threads", type=positive_int, metavar="T",
                        help="cpu: threads to run with (default: the CPUs available)")
    parser.add_argument("--db", metavar="PATH", help="the tuning database (default: the one `tconv tune` uses)")
    accuracy = parser.add_argument_group(
        "accuracy", "with --data, the finalists are fine-tuned from the trained original's weights and the answer "
        "is the fastest within --max-accuracy-drop of the original's validation accuracy"
    )
    add_data_arguments(accuracy, required=False)
    accuracy.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                          help="the most validation accuracy the answer may lose, in percentage points (default: 1.0)")
    accuracy.add_argument("--train-budget", type=float, default=300.0, metavar="SECONDS",
                          help="fine-tuning time for all finalists together, beside --budget (default: 300)")
    accuracy.add_argument("--train-epochs", type=positive_int, metavar="N",
                          help="at most N epochs of fine-tuning per finalist (default: as many as its share of "
                          "--train-budget buys)")
    accuracy.add_argument("--train-lr", type=float, default=0.01, metavar="LR",
                          help="fine-tuning's initial learning rate (cosine schedule; default: 0.01)")
    accuracy.add_argument("--augment", nargs="?", const="shift", default="none", choices=("none", "shift", "shift-flip"),
                          help="fine-tuning's augmentation, as in tconv train (default: none)")
    accuracy.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                          help="where to fine-tune (default: auto)")
    accuracy.add_argument("--sparsify", type=float, metavar="DENSITY",
                          help="also try the answer with its weights pruned to DENSITY (0 < DENSITY < 1; "
                          "tconv-sparsify per layer), fine-tuned with its zeros held for half of --train-budget "
                          "more, on the sparse kernels; it becomes the answer where it runs faster and keeps the "
                          "accuracy (cpu target)")
    accuracy.add_argument("--quantize", action="store_true",
                          help="also try the answer in int8 (tconv-quantize: per-channel int8 weights, uint8 "
                          "activations, calibrated on training inputs of --data), compiled with the int8 kernels; it "
                          "becomes the answer where it runs faster and keeps the accuracy (cpu target)")
    accuracy.add_argument("--calibration-samples", type=positive_int, default=DEFAULT_CALIBRATION_SAMPLES,
                          metavar="N", help=f"with --quantize: training inputs the int8 ranges are calibrated on "
                          f"(default: {DEFAULT_CALIBRATION_SAMPLES})")
    accuracy.add_argument("--distill", action="store_true",
                          help="distil the original into each finalist (soft targets and attention transfer, with "
                          "tconv distill's defaults) instead of fine-tuning on the labels alone")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="the output directory")


def _load(args: argparse.Namespace):
    """The module, its parameters and their provenance, and a short name for the report."""
    from tconv.frontends import zoo
    from tconv.ir.params import init_params

    path = Path(args.network)
    if path.suffix == ".mlir" or path.exists():
        return *load_network(args.network), path.stem
    dataset = zoo_choice(args.network, args.dataset, preferred="cifar10", unknown="no such file or zoo network")
    module = zoo.build(args.network, dataset)
    return module, init_params(module), {"weights": "initial"}, f"{args.network} ({dataset})"


def _accuracy_check(args: argparse.Namespace, module, provenance: dict, network: str):
    """What --data asks for (None without it); refused for an untrained original,
    whose accuracy would say nothing."""
    if args.data is None:
        return None
    if not 0 <= args.max_accuracy_drop <= 100:
        raise UsageError(f"--max-accuracy-drop is in percentage points (0 to 100), got {args.max_accuracy_drop}")
    if not args.train_budget > 0:
        raise UsageError(f"--train-budget must be positive, got {args.train_budget}")
    if not is_trained(provenance):
        raise TconvError(
            f"error: --data checks the answer's accuracy against the original's, but the weights of {network} are "
            f"not trained; train them first (tconv train NET.mlir --data {args.data} -o NET_trained.npz) and "
            "optimize NET_trained.mlir"
        )
    require_torch()
    from tconv.search.accuracy import AccuracyCheck
    from tconv.train.distill import DistillConfig
    from tconv.train.loop import TrainConfig

    return AccuracyCheck(
        load_data(args, module), args.max_accuracy_drop / 100, args.train_budget, args.train_epochs,
        TrainConfig(lr=args.train_lr, augment=args.augment), args.device,
        DistillConfig() if args.distill else None,
    )


def _refuse_quantized(module) -> None:
    """A located error at a quantised network's first QDQ op: the rewrites,
    capacity metrics and fine-tuning work on float32 networks."""
    from tconv.ir.loader import located
    from tconv.ir.ops import QUANT_OPS

    quantized = next((op for op in module.walk() if isinstance(op, QUANT_OPS)), None)
    if quantized is not None:
        raise TconvError(located(quantized, (
            f"tconv optimize: the network is quantised ('{quantized.name}'); optimize the float32 network "
            "(with --data and --quantize to try its answer in int8)"
        )))


def _check_output(output: Path) -> None:
    if output.exists() and not (output.is_dir() and ((output / REPORT_FILE).exists() or not any(output.iterdir()))):
        raise TconvError(f"error: {output} exists and is not a tconv optimize output; not replacing it")
    _check_creatable(output, "cannot create the output directory")


def _check_creatable(path: Path, what: str) -> None:
    """A file or directory can be made at `path`: its nearest existing ancestor
    is a writable directory. Checked before the search, which would otherwise
    run for its whole budget and fail at the end."""
    ancestor = path.absolute().parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TconvError(f"{path}: error: {what}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise TconvError(f"{path}: error: {what}: {ancestor} is not writable")


def _measurer(target: str, threads: int, block: int):
    from tconv.search.latency import LocalMeasurer

    if target == "cpu":
        return LocalMeasurer(threads, block)  # in the layout the answer is compiled in
    if target == "cuda":
        from tconv.search.cuda_measure import CudaMeasurer

        return CudaMeasurer()  # GPU 0, for the newest architecture it runs; "no CUDA device" without one
    if target.startswith("rpc:"):
        from tconv.search.rpc import RpcMeasurer, parse_rpc_target

        measurer = RpcMeasurer(parse_rpc_target(target))
        measurer.check()  # an unreachable tracker or unknown key fails before the search starts
        return measurer
    raise UsageError(f"--target: expected cpu, cuda or rpc:KEY[@HOST:PORT], got '{target}'")


def execute(args: argparse.Namespace) -> None:
    if not args.budget > 0:
        raise UsageError(f"--budget must be positive, got {args.budget}")
    if args.prune is not None and not 0 < args.prune < 1:
        raise UsageError(f"--prune must be a ratio between 0 and 1, got {args.prune}")
    if not args.min_capacity >= 0:
        raise UsageError(f"--min-capacity must be at least 0, got {args.min_capacity}")
    moves = (("--quantize", args.quantize, "int8"), ("--sparsify", args.sparsify is not None, "sparse"))
    for flag, asked, what in moves:
        if asked and args.data is None:
            raise UsageError(f"{flag} needs --data: the {what} network is kept only where its measured accuracy is")
        if asked and args.target != "cpu":
            raise UsageError(f"{flag}: {what} kernels run on the cpu target only, not {args.target}")
    if args.sparsify is not None and not 0 < args.sparsify < 1:
        raise UsageError(f"--sparsify must be a density between 0 and 1, got {args.sparsify}")
    output = Path(args.output)
    _check_output(output)
    from tconv.search.tuning import TuningDatabase, default_database_path

    # Read (and its place checked) before the search, so a bad one costs no search time.
    db_path = Path(args.db) if args.db else default_database_path()
    _check_creatable(db_path, "cannot write the tuning database")
    database = TuningDatabase(db_path)
    if args.threads:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when TVM starts its thread pool
    module, params, provenance, name = _load(args)
    _refuse_quantized(module)
    accuracy = _accuracy_check(args, module, provenance, name)

    # Imported on use: TVM loads only when something is measured.
    from tconv.cli.files import write_network
    from tconv.compile import activation_block, compile_network
    from tconv.frontends.onnx.exporter import BATCH_NAME, export_model
    from tconv.search import report as reports
    from tconv.search.latency import LayerLatencies
    from tconv.search.network_timer import NetworkTimer
    from tconv.search.optimize import OptimizeOptions, Search, stderr_progress
    from tconv.search.quantize_move import QuantizeMove
    from tconv.search.space import conv_layers
    from tconv.search.tuning import default_threads

    threads = default_threads()
    measurer = _measurer(args.target, threads, activation_block(module, target=args.target))
    latencies = LayerLatencies(database, measurer)
    cuda = args.target == "cuda"
    local = args.target == "cpu" or cuda  # whole networks are timed on this machine
    options = OptimizeOptions(
        budget_s=args.budget, min_capacity=args.min_capacity, metric=args.metric,
        seeds=tuple(range(args.seeds)), threads=threads, measure_networks=local, strict=not args.accept_within_noise,
        accuracy=accuracy, sparsify=args.sparsify,
        quantize=QuantizeMove(args.calibration_samples) if args.quantize else None,
    )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TconvError(f"{output}: error: cannot create the output directory: {err.strerror or err}") from None
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}."))
    try:
        if cuda:
            from tconv.search.network_timer import CudaNetworkTimer

            timer = CudaNetworkTimer(staging / "builds", measurer.arch, measurer.device_for)
        else:
            timer = NetworkTimer(database, threads, staging / "builds") if local else None
        search = Search(module, params, latencies, options, stderr_progress, timer, provenance)
        result = search.run()
        study = None
        if args.prune is not None:
            from tconv.search.pruning import pruning_study

            study = pruning_study(search, args.prune)
            end_progress()
        best = result.best
        rows = reports.layer_rows(result, latencies, conv_layers(module))
        context = {
            "network": name, "target": latencies.target, "budget_seconds": args.budget,
            "min_capacity": args.min_capacity, "strict_capacity": not args.accept_within_noise, "threads": threads,
            "ort_original_ms": None if timer is None or timer.ort_seconds is None else timer.ort_seconds * 1e3,
        }
        context["weights"] = _answer_weights(best, result.original, provenance, accuracy, options)
        if accuracy is not None:
            context["accuracy_data"] = accuracy.data.description
            context["max_accuracy_drop"] = accuracy.max_drop
        if options.quantize is not None:
            context["int8"] = options.quantize.describe()
        report = reports.build_report(result, rows, context, study)
        write_network(staging / "optimized.mlir", best.realised.module, best.realised.params,
                      _answer_provenance(best, result.original, provenance, accuracy, options))
        # The timed artifact ships only if built from the answer's weights (fine-tuning changes them).
        if timer is not None and timer.artifact_of(best) is not None:
            shutil.move(timer.artifact_of(best), staging / "artifact")
        elif cuda:  # the LLVM backend's cuda artifact, as the GPU measured it
            compile_network(best.realised.module, best.realised.params, staging / "artifact", backend="llvm",
                            target="cuda", arch=measurer.arch)
        else:
            compile_network(best.realised.module, best.realised.params, staging / "artifact", database=database,
                            threads=threads)
        shutil.rmtree(staging / "builds", ignore_errors=True)
        (staging / "optimized.onnx").write_bytes(
            export_model(best.realised.module, best.realised.params, BATCH_NAME).SerializeToString()
        )
        (staging / REPORT_FILE).write_text(reports.write_json(report))
        text = reports.markdown(report)
        (staging / "report.md").write_text(text)
        reports.pareto_png(report, staging / "pareto.png")
        if accuracy is not None:
            reports.accuracy_png(report, staging / "accuracy.png")
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if cuda:
            measurer.close()
    print(text.split("\n## Layers", 1)[0].rstrip())
    if accuracy is not None:
        print("accuracy.png: measured latency against validation accuracy")
    if "\n## Channel pruning" in text:
        print("\n## Channel pruning" + text.split("\n## Channel pruning", 1)[1].split("\n## ", 1)[0].rstrip())
    print(f"\nwrote {output}/: optimized.mlir (+ .npz), artifact/, optimized.onnx, report.json, report.md, pareto.png")
    if accuracy is None and best is not result.original:
        note(f"the answer is not trained: {report['weights']}; its accuracy is not known. "
             "Pass --data (and a trained original) to fine-tune it and check its accuracy.")


def _answer_weights(best, original, provenance: dict, accuracy, options) -> str:
    """One phrase: what the answer's weights are."""
    if best.move == "int8":
        return f"{_answer_weights(best.source, original, provenance, accuracy, options)}, quantised to " \
            f"{options.quantize.describe()}"
    if best.move == "sparse":
        return f"{_answer_weights(best.source, original, provenance, accuracy, options)}, pruned to " \
            f"{options.sparsify:.0%} density and fine-tuned for {best.fine_tune_epochs} epoch(s) with its zeros held"
    if best is original:
        return "the original's" + (" (trained)" if is_trained(provenance) else " (not trained)")
    if best.fine_tune_epochs is not None:
        how = "distilled from it" if accuracy.distill is not None else "fine-tuned"
        return f"inherited from the trained original and {how} for {best.fine_tune_epochs} epoch(s)"
    if is_trained(provenance):
        return "inherited from the trained original, not fine-tuned"
    return "initialised, like the original's (not trained)"


def _answer_provenance(best, original, provenance: dict, accuracy, options) -> dict:
    if best.move is not None:
        source = _answer_provenance(best.source, original, provenance, accuracy, options)
        if best.move == "int8":
            return {**source, "val_accuracy": best.accuracy, "quantized": "int8",
                    "calibration_samples": options.quantize.samples}
        return {"weights": "trained", "fine_tuned_epochs": best.fine_tune_epochs, "data": accuracy.data.description,
                "val_accuracy": best.accuracy, "sparsity": {"density": options.sparsify, "scope": "layer"},
                "pruned_from": source}
    if best is original:
        return provenance
    if best.fine_tune_epochs is not None:
        return {"weights": "trained", "fine_tuned_epochs": best.fine_tune_epochs, "data": accuracy.data.description,
                "val_accuracy": best.accuracy, "distilled": accuracy.distill is not None}
    return {"weights": "inherited" if is_trained(provenance) else "initial"}


OPTIMIZE = Command(
    name="optimize",
    help="search NAS rewrites and schedules for a faster network that keeps its capacity (and, with --data, "
    "its accuracy), and compile it",
    description="The main job: per convolution, choose the NAS rewrite (grouping, depthwise-separable, "
    "bottleneck) and the schedule that run fastest on the target, keeping the network's capacity "
    "(measured at initialisation) at least --min-capacity of the original's; measured latencies, a "
    "Gaussian-process cost model, the answer confirmed by timing the compiled networks. With --data (a trained "
    "original), the finalists are fine-tuned from inherited weights and the answer is the fastest within "
    "--max-accuracy-drop of the original's validation accuracy. Writes the optimized IR, its compiled artifact, "
    "its ONNX export and a report.",
    configure=configure,
    execute=execute,
)
