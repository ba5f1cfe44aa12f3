"""`tconv explain`: each convolution's loop nest, schedule applied.

    tconv explain net.mlir [--layers "layer1.*"]
    tconv-opt net.mlir -p 'tconv-group{groups=4 layers=conv1}' -o grouped.mlir && tconv explain grouped.mlir --layers conv1

The program view of a rewrite (see `tconv.passes.analyses.loops`).
"""

from __future__ import annotations

import argparse

from xdsl.utils.exceptions import PassFailedException

from tconv.cli.command import Command
from tconv.ir.loader import TconvError, load_module
from tconv.ir.ops import shape_of
from tconv.ir.shapes import format_shape
from tconv.passes.analyses.loops import loop_nest
from tconv.passes.select import select_convs


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="tconv IR file")
    parser.add_argument(
        "--layers", default="", metavar="NAMES",
        help="convolutions to show: names and patterns, comma-separated (default: all)",
    )


def execute(args: argparse.Namespace) -> None:
    module = load_module(args.file)
    try:
        selected = select_convs(module, args.layers, "tconv explain")
    except PassFailedException as err:
        raise TconvError(f"error: {err}") from None
    if not selected:
        raise TconvError(f"error: no convolution matches --layers '{args.layers}'")
    for index, layer in enumerate(selected):
        conv = layer.conv
        if index:
            print()
        print(
            f"# {layer.name}: x {format_shape(shape_of(conv.input))}, w {format_shape(shape_of(conv.weight))} "
            f"-> y {format_shape(shape_of(conv.output))}"
        )
        print(loop_nest(conv))


EXPLAIN = Command(
    name="explain",
    help="print each convolution's loop nest (the program view of NAS and schedule rewrites)",
    configure=configure,
    execute=execute,
)
