"""`tconv`: the command line, one subcommand per job (see ARCHITECTURE.md).

Exit status: 0 on success; 1 on a user error, reported as one message on
stderr (located `FILE:LINE:COL: error: ...` where the input gives a place);
2 on a usage error; 3 on an internal error, i.e. a bug in tconv. Set
TCONV_DEBUG=1 to see the traceback of an internal error. SIGINT and SIGTERM
end a command cleanly (no temporary file left, `tconv: interrupted`) with
status 130 and 143 (see `tconv.cli.interrupt`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tconv import __version__
from tconv.cli.capacity import CAPACITY
from tconv.cli.command import Command, UsageError
from tconv.cli.compile import COMPILE
from tconv.cli.distill import DISTILL
from tconv.cli.explain import EXPLAIN
from tconv.cli.interop import EXPORT, IMPORT
from tconv.cli.interrupt import Terminated, interrupted_status, interrupts_unwind
from tconv.cli.mlir import EXPORT_MLIR, IMPORT_MLIR
from tconv.cli.optimize import OPTIMIZE
from tconv.cli.prune import PRUNE
from tconv.cli.run import RUN
from tconv.cli.summary import SUMMARY
from tconv.cli.train import TRAIN
from tconv.cli.tune import TUNE
from tconv.cli.zoo import ZOO
from tconv.ir.loader import TconvError

COMMANDS: tuple[Command, ...] = (
    ZOO, IMPORT, EXPORT, IMPORT_MLIR, EXPORT_MLIR, SUMMARY, EXPLAIN, TUNE, COMPILE, RUN, CAPACITY,
    TRAIN, PRUNE, DISTILL, OPTIMIZE,
)
"""The subcommands, in the order `tconv --help` lists them."""

INTERNAL_ERROR = 3


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser, and each subcommand's parser by name."""
    parser = argparse.ArgumentParser(
        prog="tconv",
        description="A compiler for convolutional networks where architecture changes "
        "are program transformations.",
    )
    parser.add_argument("--version", action="version", version=f"tconv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parsers = {}
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.description or command.help
        )
        command.configure(sub)
        sub.set_defaults(execute=command.execute)
        parsers[command.name] = sub
    return parser, parsers


def error_message(err: TconvError) -> str:
    """The message as the user sees it. Located messages (`FILE:...: error: ...`)
    stand as they are, like a compiler's; the others are prefixed with `tconv:`."""
    message = str(err)
    first_line = message.split("\n", 1)[0]
    if message.startswith("error: "):
        return f"tconv: {message}"
    if ": error: " in first_line:
        return message
    return f"tconv: error: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    parser, parsers = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:
        # argparse exits after --help (0) and after a usage error (2), having printed why.
        return exit.code if isinstance(exit.code, int) else 2
    try:
        with interrupts_unwind():
            args.execute(args)
    except TconvError as err:
        print(error_message(err), file=sys.stderr)
        return 1
    except UsageError as err:
        sub = parsers[args.command]
        sub.print_usage(sys.stderr)
        print(f"{sub.prog}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("tconv: error: out of memory (try a smaller --batch)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of stdout went away (`tconv ... | head`): not an error of ours.
        # Point stdout at /dev/null, so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (KeyboardInterrupt, Terminated) as err:
        # Ctrl-C or SIGTERM: the writes under way removed their temporary files on the way out.
        print("tconv: interrupted", file=sys.stderr)
        return interrupted_status(err)
    except Exception as err:
        if os.environ.get("TCONV_DEBUG"):
            raise
        print(f"tconv: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print(
            "tconv: note: this is a bug in tconv; rerun with TCONV_DEBUG=1 for the traceback "
            "and report it",
            file=sys.stderr,
        )
        return INTERNAL_ERROR
    return 0
