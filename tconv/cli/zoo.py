"""`tconv zoo`: emit a network of the model zoo as tconv IR, with fresh parameters."""

from __future__ import annotations

import argparse
import difflib
import sys

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from tconv.cli.command import Command, UsageError, note, positive_int
from tconv.cli.files import write_network
from tconv.ir.loader import TconvError, module_text
from tconv.ir.ops import shape_of
from tconv.ir.params import init_params, parameter_count


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="network name (see --list)")
    parser.add_argument(
        "--list", action="store_true", help="list the networks and their datasets"
    )
    parser.add_argument(
        "--dataset", metavar="DATASET",
        help="input size and classes: cifar10 or imagenet (default: the network's first)",
    )
    parser.add_argument(
        "--batch", type=positive_int, default=1, metavar="N",
        help="batch size of the IR (default: 1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="seed of the parameter initialisation (default: 0)",
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE",
        help="write the IR to FILE and its parameter store beside it (net.npz for net.mlir)",
    )


def _list_networks() -> None:
    # Imported on use, so other commands do not load the zoo's builders.
    from tconv.frontends import zoo

    names = zoo.network_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name.ljust(width)}  {', '.join(zoo.datasets(name))}")


def _one_of(names: list[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _check_name(name: str) -> None:
    """An unknown name is most often a typo: suggest the closest ones."""
    from tconv.frontends import zoo

    names = list(zoo.network_names())
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean {_one_of(close)}? " if close else ""
        raise TconvError(f"error: unknown network '{name}' ({hint}see `tconv zoo --list`)")


def _input_shape(module: ModuleOp) -> str:
    return ", ".join(
        "x".join(map(str, shape_of(arg)))
        for op in module.walk()
        if isinstance(op, func.FuncOp)
        for arg in op.args
    )


def execute(args: argparse.Namespace) -> None:
    if args.list:
        if args.name is not None:
            raise UsageError("NAME and --list exclude each other")
        _list_networks()
        return
    if args.name is None:
        raise UsageError("a network NAME is required (see --list)")
    from tconv.frontends import zoo

    _check_name(args.name)
    module = zoo.build(args.name, dataset=args.dataset, batch=args.batch)
    if args.output is None:
        sys.stdout.write(module_text(module))
        note("no parameters written: use -o FILE to write the network with its parameter store")
        return
    params = init_params(module, args.seed)
    store = write_network(args.output, module, params)
    print(
        f"wrote {args.output} ({args.name}, input {_input_shape(module)}, "
        f"{parameter_count(module):,} parameters, verified)"
    )
    print(f"wrote {store} ({store.stat().st_size / 1e6:,.1f} MB, seed {args.seed})")


ZOO = Command(
    name="zoo",
    help="emit a model-zoo network as tconv IR",
    description="Emit a network of the model zoo as tconv IR. With -o, write it with its "
    "parameter store beside it (initialised from --seed); otherwise print the IR.",
    configure=configure,
    execute=execute,
)
