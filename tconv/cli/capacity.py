"""`tconv capacity`: the NASWOT score, Fisher potential or SynFlow of a network
at initialisation, with its parameter count, FLOPs and activation memory.

The parameters come from the store beside the IR (`net.npz` for `net.mlir`);
without one, they are initialised from the IR's `init` properties with the
seed. The minibatch is `--data` with `--labels`, or drawn with the seed from
`--source`: scikit-learn's digits resized to the network's input (the
default), or N(0, 1) noise. With `--seeds N` the metric is measured at seeds
S, S+1, ..., S+N-1 (S from `--seed`), each with its own minibatch and, without
a store, its own initialisation, and reported as the median with the min–max
spread. See `tconv.passes.analyses.capacity` for the definitions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.cli.command import Command, UsageError, note, positive_int
from tconv.cli.files import read_array, read_npy
from tconv.ir.loader import TconvError, load_module
from tconv.ir.params import bind_params, load_store, store_exists, store_path_for
from tconv.ir.shapes import format_shape
from tconv.passes.analyses import capacity
from tconv.passes.analyses.capacity import CapacityReport, SeededCapacity
from tconv.passes.analyses.capacity_data import DEFAULT_SOURCE, SOURCES, describe
from tconv.train.data import check_labels

DEFAULT_BATCH = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE",
        help="tconv IR file; its parameters are read from the .npz beside it (net.npz for "
        "net.mlir), or initialised with --seed if there is none",
    )
    parser.add_argument(
        "--metric", default=capacity.DEFAULT_METRIC, choices=capacity.METRICS,
        help="naswot: log|det K| of the ReLU activation codes; fisher: Fisher potential, summed "
        "over the convolution blocks; synflow: Σ|θ·∂R/∂θ| of the weights, R the output sum of the "
        f"|θ| network on an all-ones input (default: {capacity.DEFAULT_METRIC})",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--batch", type=positive_int, metavar="N",
        help=f"size of the drawn minibatch (default: {DEFAULT_BATCH})",
    )
    source.add_argument(
        "--data", metavar="X.npy", help="input minibatch (float, in the network's input shape, any batch)"
    )
    parser.add_argument(
        "--labels", metavar="Y.npy",
        help="integer class labels of --data, one per sample (required with --data for fisher)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="seed of the drawn minibatch, and of the parameters if there is no store (default: 0)",
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=1, metavar="N",
        help="measure at N seeds from --seed on (each its own minibatch and, without a store, its "
        "own initialisation) and report the median and min-max (default: 1)",
    )
    parser.add_argument(
        "--source", choices=SOURCES, default=None,
        help="what the drawn minibatch is: digits (scikit-learn's, resized to the input, with "
        "their labels) or gaussian (N(0,1) inputs, uniform labels) (default: digits)",
    )


def _load_params(module: ModuleOp, path: str, seeds: list[int]) -> dict[str, np.ndarray] | None:
    """The store's parameters, or None (initialise at each seed) where there is none."""
    store = store_path_for(path)
    if not store_exists(store):
        note(
            f"no parameter store {store}: initialising the parameters from the IR "
            f"(seed {', '.join(map(str, seeds))})"
        )
        return None
    return bind_params(module, load_store(store), source=str(store))


def _read_labels(path: str, batch: int, classes: int) -> np.ndarray:
    """Integer labels in [0, classes), one per sample of a batch of `batch`."""
    labels = read_npy(path)
    check_labels(labels, batch, classes, f"{path}: error: the label array")
    return labels


def _user_data(
    args: argparse.Namespace, module: ModuleOp
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """--data and --labels (labels None where not needed and not given), or
    None where the minibatch is to be drawn."""
    if args.data is None:
        if args.labels is not None:
            raise UsageError("--labels needs --data (the inputs they label)")
        return None
    if args.source is not None:
        raise UsageError("--source draws a minibatch; it cannot be combined with --data")
    if args.labels is None and args.metric == "fisher":
        raise UsageError("--data needs --labels for the Fisher potential (one class per sample)")
    x = read_array(args.data)
    expected = capacity.input_shape(module)
    if x.ndim != len(expected) or x.shape[1:] != expected[1:] or x.shape[0] < 1:
        raise TconvError(
            f"{args.data}: error: data has shape {format_shape(x.shape) or 'scalar'}, the network "
            f"expects {format_shape(('N', *expected[1:]))} (any batch size N)"
        )
    labels = None if args.labels is None else _read_labels(args.labels, x.shape[0], capacity.classes(module))
    return x, labels


def _origin(args: argparse.Namespace, module: ModuleOp, seeds: list[int]) -> str:
    """Where the minibatch comes from, for the report (and a note when it was drawn)."""
    if args.data is not None:
        return args.data if args.labels is None else f"{args.data}, {args.labels}"
    if args.metric == "synflow":
        return "an all-ones input"
    source = args.source or DEFAULT_SOURCE
    shape = (args.batch or DEFAULT_BATCH, *capacity.input_shape(module)[1:])
    seed_text = ", ".join(map(str, seeds))
    note(
        f"no --data given: measuring on {format_shape(shape)} "
        f"{describe(source, shape, capacity.classes(module))} (seed {seed_text})"
    )
    return f"{source}, seed {seed_text}"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.2f} MB"


def _spread(result: SeededCapacity, digits: str) -> str:
    """For several seeds, "; median of N seeds, min .. max (spread ..%): each value"; else nothing."""
    if len(result.seeds) == 1:
        return ""
    values = ", ".join(format(v, digits) for v in result.values)
    return (
        f"; median of {len(result.seeds)} seeds, min {result.low:{digits}} max {result.high:{digits}} "
        f"(spread {100 * result.relative_spread:.2f}% of the median): {values}"
    )


def format_report(result: SeededCapacity, origin: str, seconds: float) -> str:
    """The metric (the median over the seeds, with its spread) and the
    network's size and work; for Fisher, a table of the blocks at the first seed."""
    report = result.reports[0]
    value = result.median
    mode = "batch-norm in inference form, |θ|" if report.metric == "synflow" else "batch-norm in training mode"
    lines = [f"{report.network}: {report.metric} on a batch of {report.batch} ({origin}), {mode}"]
    if report.fisher is not None:
        lines.append(
            f"  fisher       {value:.6e}  (sum over {len(report.fisher.blocks)} convolution blocks"
            f"{_spread(result, '.6e')})"
        )
    if report.naswot is not None:
        lines.append(
            f"  naswot       {value:.4f}  (log|det K| over {report.naswot.relus} ReLUs{_spread(result, '.4f')})"
        )
    if report.metric == "synflow":
        lines.append(f"  synflow      {value:.6e}  (sum over the conv and dense weights{_spread(result, '.6e')})")
    lines += [
        f"  parameters   {report.parameters:,} learnable",
        f"  FLOPs        {report.flops / 1e9:,.3f} GFLOP per forward pass at the IR's batch {report.ir_batch}",
        f"  activations  {_megabytes(report.activation_bytes)} "
        f"(all results at the IR's batch {report.ir_batch})",
        f"  time         {seconds:.2f} s" + (f" ({len(result.seeds)} seeds)" if len(result.seeds) > 1 else ""),
    ]
    if report.fisher is not None and report.fisher.blocks:
        lines.append("")
        if len(result.seeds) > 1:
            lines.append(f"blocks at seed {result.seeds[0]}:")
        lines.extend(_block_table(report))
    return "\n".join(lines) + "\n"


def _block_table(report: CapacityReport) -> list[str]:
    """One row per convolution block: its output, channels, potential and share."""
    total = report.value
    header = ("block", "output", "channels", "fisher", "share")
    rows = [
        (
            block.name,
            block.block.output.owner.short_name(),
            str(len(block.per_channel)),
            f"{block.total:.4e}",
            f"{100 * block.total / total:.1f}%" if total > 0 else "-",
        )
        for block in report.fisher.blocks
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row) -> str:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    return [line(header), "-" * len(line(tuple("-" * w for w in widths))), *(line(row) for row in rows)]


def execute(args: argparse.Namespace) -> None:
    module = load_module(args.file)
    seeds = list(range(args.seed, args.seed + args.seeds))
    data = _user_data(args, module)
    params = _load_params(module, args.file, seeds)
    origin = _origin(args, module, seeds)
    start = time.perf_counter()
    result = capacity.measure_seeds(
        module, args.metric, seeds=tuple(seeds), batch=args.batch or DEFAULT_BATCH, params=params,
        source=args.source or DEFAULT_SOURCE, data=data,
    )
    seconds = time.perf_counter() - start
    print(format_report(result, origin, seconds), end="")


CAPACITY = Command(
    name="capacity",
    help="measure a network's capacity at initialisation (NASWOT score, Fisher potential or SynFlow)",
    description="Measure the NASWOT score, the Fisher potential or SynFlow of a network on one "
    "minibatch (from --data and --labels, or scikit-learn's digits resized to the input), with "
    "batch-norm in training mode, at one or several seeds, and print it with the parameter count, "
    "FLOPs and activation memory.",
    configure=configure,
    execute=execute,
)
