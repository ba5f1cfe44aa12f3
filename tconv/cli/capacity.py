"""`tconv capacity`: the Fisher potential or NASWOT score of a network at
initialisation, with its parameter count, FLOPs and activation memory.

The parameters come from the store beside the IR (`net.npz` for `net.mlir`);
without one, they are initialised from the IR's `init` properties with
`--seed`. The minibatch is `--data` with `--labels`, or drawn with `--seed`:
inputs from N(0, 1), labels uniform over the classes. See
`tconv.passes.analyses.capacity` for the definitions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.cli.command import Command, note, positive_int
from tconv.cli.files import NPY_MAGIC, read_array
from tconv.ir.loader import TconvError, load_module
from tconv.ir.params import bind_params, init_params, load_store, store_path_for
from tconv.ir.shapes import format_shape
from tconv.passes.analyses import capacity
from tconv.passes.analyses.capacity import CapacityReport

DEFAULT_BATCH = 64


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE",
        help="tconv IR file; its parameters are read from the .npz beside it (net.npz for "
        "net.mlir), or initialised with --seed if there is none",
    )
    parser.add_argument(
        "--metric", required=True, choices=capacity.METRICS,
        help="fisher: Fisher potential, summed over the convolution blocks; "
        "naswot: log|det K| of the ReLU activation codes",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--batch", type=positive_int, metavar="N",
        help=f"size of the random minibatch (default: {DEFAULT_BATCH})",
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
        help="seed of the random minibatch, and of the parameters if there is no store (default: 0)",
    )


def _load_params(module: ModuleOp, path: str, seed: int) -> dict[str, np.ndarray]:
    store = store_path_for(path)
    if not store.exists():
        note(f"no parameter store {store}: initialising the parameters from the IR (seed {seed})")
        return init_params(module, seed)
    return bind_params(module, load_store(store), source=str(store))


def _read_labels(path: str, batch: int, classes: int) -> np.ndarray:
    """Integer labels in [0, classes), one per sample of a batch of `batch`."""
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise TconvError(f"{path}: error: not a .npy file (no NumPy header)")
            f.seek(0)
            labels = np.load(f, allow_pickle=False)
    except FileNotFoundError:
        raise TconvError(f"{path}: error: file not found") from None
    except OSError as err:
        raise TconvError(f"{path}: error: cannot read: {err.strerror or err}") from None
    except (ValueError, EOFError) as err:
        raise TconvError(f"{path}: error: not a readable .npy array ({err})") from None
    if not np.issubdtype(labels.dtype, np.integer):
        raise TconvError(f"{path}: error: holds {labels.dtype} values; expected integer class labels")
    if labels.shape != (batch,):
        raise TconvError(
            f"{path}: error: labels have shape {format_shape(labels.shape) or 'scalar'}, "
            f"expected {batch} (one per sample of the data)"
        )
    if labels.min() < 0 or labels.max() >= classes:
        raise TconvError(
            f"{path}: error: labels must be classes in [0, {classes}), "
            f"got values from {labels.min()} to {labels.max()}"
        )
    return labels


def _minibatch(
    args: argparse.Namespace, module: ModuleOp
) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs, labels (None where not needed and not given) and where they came from."""
    classes = capacity.classes(module)
    if args.data is None:
        if args.labels is not None:
            raise TconvError("error: --labels needs --data (the inputs they label)")
        batch = args.batch or DEFAULT_BATCH
        x, labels = capacity.minibatch(module, batch, args.seed)
        note(
            f"no --data given: measuring on random N(0,1) inputs of shape {format_shape(x.shape)} "
            f"and uniform labels over {classes} classes (seed {args.seed})"
        )
        return x, labels, f"random N(0,1), seed {args.seed}"
    if args.labels is None and args.metric == "fisher":
        raise TconvError("error: --data needs --labels for the Fisher potential (one class per sample)")
    x = read_array(args.data)
    expected = capacity.input_shape(module)
    if x.ndim != len(expected) or x.shape[1:] != expected[1:] or x.shape[0] < 1:
        raise TconvError(
            f"{args.data}: error: data has shape {format_shape(x.shape) or 'scalar'}, the network "
            f"expects {format_shape(('N', *expected[1:]))} (any batch size N)"
        )
    labels = None if args.labels is None else _read_labels(args.labels, x.shape[0], classes)
    return x, labels, args.data if labels is None else f"{args.data}, {args.labels}"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.2f} MB"


def format_report(report: CapacityReport, origin: str, seconds: float) -> str:
    """The metric and the network's size and work; for Fisher, a table of the blocks."""
    lines = [
        f"{report.network}: {report.metric} on a batch of {report.batch} ({origin}), "
        "batch-norm in training mode"
    ]
    if report.fisher is not None:
        lines.append(
            f"  fisher       {report.value:.6e}  (sum over {len(report.fisher.blocks)} convolution blocks)"
        )
    if report.naswot is not None:
        lines.append(f"  naswot       {report.value:.4f}  (log|det K| over {report.naswot.relus} ReLUs)")
    lines += [
        f"  parameters   {report.parameters:,} learnable",
        f"  FLOPs        {report.flops / 1e9:,.3f} GFLOP per forward pass at the IR's batch {report.ir_batch}",
        f"  activations  {_megabytes(report.activation_bytes)} "
        f"(all results at the IR's batch {report.ir_batch})",
        f"  time         {seconds:.2f} s",
    ]
    if report.fisher is not None and report.fisher.blocks:
        lines.append("")
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
    params = _load_params(module, args.file, args.seed)
    x, labels, origin = _minibatch(args, module)
    start = time.perf_counter()
    report = capacity.measure(module, params, args.metric, x, labels)
    seconds = time.perf_counter() - start
    print(format_report(report, origin, seconds), end="")


CAPACITY = Command(
    name="capacity",
    help="measure a network's capacity at initialisation (Fisher potential or NASWOT score)",
    description="Measure the Fisher potential or the NASWOT score of a network on one minibatch "
    "(from --data and --labels, or random), with batch-norm in training mode, and print it with "
    "the parameter count, FLOPs and activation memory.",
    configure=configure,
    execute=execute,
)
