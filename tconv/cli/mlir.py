"""`tconv export-mlir` and `tconv import-mlir`: networks in and out of upstream
MLIR (`func`, `linalg`, `tensor`, `arith`, `math`), as `mlir-opt` reads it.

The MLIR holds no weights: parameters are function arguments that name their
parameter-store keys (`{tconv.param = "conv1.weight"}`), so
`tconv export-mlir net.mlir -o net.linalg.mlir` leaves them in `net.npz`.
`tconv import-mlir net.linalg.mlir -o back.mlir` writes the IR and a store
beside it, filled from `--params STORE.npz` (every parameter must be there,
with its shape), or else freshly initialised from each argument's
`tconv.init` and `--seed`.
"""

from __future__ import annotations

import argparse
import sys

from tconv.cli.command import Command, note
from tconv.cli.files import refuse_overwriting, write_network
from tconv.ir.loader import TconvError, load_module, read_text, write_text_atomic
from tconv.ir.params import bind_params, init_params, load_store, param_ops, store_path_for


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="tconv IR file")
    parser.add_argument(
        "-o", "--output", metavar="OUT.mlir",
        help="write the MLIR to OUT.mlir (default: standard output)",
    )
    parser.add_argument(
        "--generic", action="store_true", help="print every op in MLIR's generic syntax",
    )


def execute_export(args: argparse.Namespace) -> None:
    # Imported on use, so other commands do not load the MLIR forms.
    from tconv.frontends.mlir import linalg_text, to_linalg
    from tconv.frontends.mlir.exporter import schedules_dropped

    module = load_module(args.file)
    text = linalg_text(to_linalg(module), generic=args.generic)
    if dropped := schedules_dropped(module):
        note(f"{dropped} convolution schedule(s) (how to run, not what to compute) are not exported")
    if args.output is None:
        sys.stdout.write(text)
        return
    refuse_overwriting(args.output, args.file, store_path_for(args.file))
    try:
        write_text_atomic(args.output, text)
    except OSError as err:
        raise TconvError(f"{args.output}: error: cannot write: {err.strerror or err}") from None
    params = len(param_ops(module))
    print(
        f"wrote {args.output} (upstream MLIR, {params} parameter arguments; "
        f"their values stay in {store_path_for(args.file)})"
    )


def configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="IN.mlir", help="upstream MLIR in the forms export-mlir writes")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE",
        help="write the tconv IR to FILE and its parameter store beside it (net.npz for net.mlir)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--params", metavar="STORE.npz",
        help="take the parameter values from this store (keys: the tconv.param attributes)",
    )
    source.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="without --params: seed of the fresh initialisation (default: 0)",
    )


def execute_import(args: argparse.Namespace) -> None:
    from tconv.frontends.mlir import from_linalg, parse_linalg

    refuse_overwriting(args.output, args.file, *([args.params] if args.params else []))
    refuse_overwriting(str(store_path_for(args.output)), args.file)
    module = from_linalg(parse_linalg(read_text(args.file), args.file))
    if args.params is not None:
        params = bind_params(module, load_store(args.params), source=args.params)
        origin = f"from {args.params}"
    else:
        params = init_params(module, args.seed)
        origin = f"freshly initialised, seed {args.seed}"
    store = write_network(args.output, module, params)
    print(f"wrote {args.output} (tconv IR, verified)")
    print(f"wrote {store} ({len(params)} parameters, {origin})")


EXPORT_MLIR = Command(
    name="export-mlir",
    help="print tconv IR as upstream MLIR (linalg, tensor, arith)",
    description="Print a tconv network as upstream MLIR that mlir-opt reads: linalg named "
    "convolutions and pooling, linalg.generic, tensor and arith ops in one func.func. "
    "Parameters become function arguments named after their store keys; their values stay "
    "in the store.",
    configure=configure_export,
    execute=execute_export,
)

IMPORT_MLIR = Command(
    name="import-mlir",
    help="read upstream MLIR (as export-mlir writes it) into tconv IR",
    description="Read upstream MLIR in the forms export-mlir writes (and close hand-written "
    "variants) into tconv IR, writing it to FILE with a parameter store beside it. An op or "
    "form tconv cannot represent is an error located in IN.mlir; nothing is written then.",
    configure=configure_import,
    execute=execute_import,
)
