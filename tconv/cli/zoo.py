"""`tconv zoo`: emit a network of the model zoo as tconv IR, with fresh parameters."""

from __future__ import annotations

import argparse
import sys

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from tconv.cli.command import Command, UsageError, did_you_mean, note, one_of, positive_int
from tconv.cli.files import write_network
from tconv.ir.loader import module_text
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


def zoo_choice(name: str, dataset: str | None, preferred: str | None = None, unknown: str = "unknown network") -> str:
    """The dataset to build zoo network `name` for: `dataset`, else `preferred`
    where the network has it, else its first. An unknown network or dataset is a
    usage error (a bad choice on the command line), here for every command;
    `unknown` says what an unknown name is not."""
    from tconv.frontends import zoo

    if name not in zoo.network_names():
        raise UsageError(f"{unknown} '{name}' ({did_you_mean(name, zoo.network_names())}see `tconv zoo --list`)")
    datasets = zoo.datasets(name)
    if dataset is None:
        return preferred if preferred in datasets else datasets[0]
    if dataset not in datasets:
        raise UsageError(f"--dataset: {name} has {one_of(datasets)}, not '{dataset}'")
    return dataset


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

    dataset = zoo_choice(args.name, args.dataset)
    module = zoo.build(args.name, dataset=dataset, batch=args.batch)
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
