"""What a `tconv` subcommand is: a name, its options and the function that runs it.

A new subcommand is one module that defines a `Command`, plus one entry in
`tconv.cli.main.COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass


class UsageError(Exception):
    """Options that parse but do not fit together; `tconv` exits with status 2."""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    """One line, shown in `tconv --help`."""
    configure: Callable[[argparse.ArgumentParser], None]
    """Adds the command's arguments to its parser."""
    execute: Callable[[argparse.Namespace], None]
    """Runs the command; raises `TconvError` on a user error, `UsageError` on a usage error."""
    description: str | None = None
    """Shown in `tconv NAME --help`; defaults to `help`."""


def note(message: str) -> None:
    """A remark for the user that is not the command's output: it goes to stderr."""
    print(f"tconv: note: {message}", file=sys.stderr)


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
