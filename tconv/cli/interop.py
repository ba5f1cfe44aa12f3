"""`tconv import` and `tconv export`: networks in and out of ONNX.

`tconv import model.onnx -o net.mlir` writes the IR and, beside it, the
parameter store made from the model's initializers (`net.npz`).
`tconv export net.mlir -o model.onnx` writes one ONNX file holding the
network and the weights of the store beside the IR, its batch dimension
symbolic (`N`, as PyTorch exports) unless `--static-batch` keeps the IR's;
`tconv import` binds a symbolic batch to `--batch N`, else to 1. A missing store is an
error (exporting random weights by accident is worse than a message), unless
`--init-params` asks for freshly initialised ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xdsl.dialects import func

from tconv.cli.command import Command, note, positive_int
from tconv.cli.files import refuse_overwriting, write_network
from tconv.ir.loader import TconvError, load_module, write_atomic
from tconv.ir.ops import Conv2dOp, ParamOp, shape_of
from tconv.ir.params import bind_params, init_params, load_store, parameter_count, store_exists, store_path_for
from tconv.ir.shapes import format_shape


def configure_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to import")
    parser.add_argument(
        "-o", "--output", required=True, metavar="FILE",
        help="write the IR to FILE and its parameter store beside it (net.npz for net.mlir)",
    )
    parser.add_argument(
        "--batch", type=positive_int, metavar="N",
        help="bind a symbolic batch dimension of the model's inputs to N (default: 1)",
    )


def execute_import(args: argparse.Namespace) -> None:
    # Imported on use, so other commands do not load onnx.
    from tconv.frontends.onnx import import_model, read_model
    from tconv.frontends.onnx.importer import DEFAULT_BATCH, symbolic_batch

    refuse_overwriting(args.output, args.model)
    refuse_overwriting(str(store_path_for(args.output)), args.model)
    model = read_model(args.model)
    module, params = import_model(model, batch=args.batch, source=args.model)
    symbol = symbolic_batch(model)
    if symbol is not None and args.batch is None:
        note(f"the model's batch dimension is symbolic ('{symbol}'): imported at batch {DEFAULT_BATCH}; "
             "--batch N imports at another (tconv compile --batch N re-batches later)")
    # An imported model brings its own weights: NAS rewrites of it inherit them.
    store = write_network(args.output, module, params, {"weights": "trained", "source": str(args.model)})
    function = next(op for op in module.ops if isinstance(op, func.FuncOp))
    inputs = ", ".join(format_shape(shape_of(argument)) for argument in function.args)
    ops = sum(1 for op in function.body.block.ops if not isinstance(op, (ParamOp, func.ReturnOp)))
    print(
        f"wrote {args.output} ({function.sym_name.data}, input {inputs}, {ops} ops, "
        f"{parameter_count(module):,} parameters, verified)"
    )
    print(f"wrote {store} ({store.stat().st_size / 1e6:,.1f} MB)")


def configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE",
        help="tconv IR file; its parameters are read from the .npz beside it (net.npz for net.mlir)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--init-params", action="store_true",
        help="export freshly initialised parameters (from the IR's init and --seed) "
        "instead of the store's",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="with --init-params: seed of the initialisation (default: 0)",
    )
    parser.add_argument(
        "--static-batch", action="store_true",
        help="keep the IR's batch size in the model (default: a symbolic batch dimension 'N', "
        "so the model runs at any batch)",
    )


def execute_export(args: argparse.Namespace) -> None:
    from tconv.frontends.onnx import export_model
    from tconv.frontends.onnx.exporter import BATCH_NAME

    store = store_path_for(args.file)
    refuse_overwriting(args.output, args.file, store)
    module = load_module(args.file)
    if args.seed != 0 and not args.init_params:
        note("--seed applies with --init-params only; ignored")
    if args.init_params:
        params = init_params(module, args.seed)
        note(f"exporting freshly initialised parameters (seed {args.seed}), not {store}")
    elif not store_exists(store):
        raise TconvError(
            f"{store}: error: parameter store not found; export writes the weights into the model "
            "(pass --init-params to export freshly initialised ones)"
        )
    else:
        params = bind_params(module, load_store(store), source=str(store))
    model = export_model(module, params, None if args.static_batch else BATCH_NAME)
    if any(isinstance(op, Conv2dOp) and op.schedule is not None for op in module.walk()):
        note("convolution schedules (how to run, not what to compute) are not exported")
    try:
        write_atomic(args.output, lambda tmp: tmp.write_bytes(model.SerializeToString()))
    except OSError as err:
        raise TconvError(f"{args.output}: error: cannot write: {err.strerror or err}") from None
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} (ONNX opset {model.opset_import[0].version}, {len(model.graph.node)} nodes, "
          f"{size / 1e6:,.1f} MB)")


IMPORT = Command(
    name="import",
    help="import an ONNX model as tconv IR",
    description="Import an ONNX model as tconv IR, writing the IR to FILE and the model's "
    "weights to the parameter store beside it. An op, attribute or shape tconv cannot "
    "represent is an error that names the node; nothing is written then.",
    configure=configure_import,
    execute=execute_import,
)

EXPORT = Command(
    name="export",
    help="export tconv IR as an ONNX model",
    description="Export tconv IR, with the weights of its parameter store, as one ONNX model "
    "(opset 17), for any batch size (a symbolic batch dimension 'N') unless --static-batch.",
    configure=configure_export,
    execute=execute_export,
)
