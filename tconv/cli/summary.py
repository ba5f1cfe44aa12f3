"""`tconv summary`: the per-layer table of parameters, MACs, FLOPs and activations."""

from __future__ import annotations

import argparse
import sys

from tconv.cli.command import Command
from tconv.ir.loader import load_module
from tconv.passes.analyses.summary import format_summary, summarize


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="tconv IR file")


def execute(args: argparse.Namespace) -> None:
    sys.stdout.write(format_summary(summarize(load_module(args.file))))


SUMMARY = Command(
    name="summary",
    help="print parameters, MACs, FLOPs and activation sizes per layer",
    configure=configure,
    execute=execute,
)
