"""What a `tconv` subcommand is: a name, its options and the function that runs it.

A new subcommand is one module that defines a `Command`, plus one entry in
`tconv.cli.main.COMMANDS`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Iterable, Sequence
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


def one_of(names: Sequence[str]) -> str:
    """`a`, `a or b`, `a, b or c`: names in a sentence, never Python's list syntax."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """`did you mean X? ` for the known names closest to a misspelt one, else ``:
    an unknown name is most often a typo."""
    close = difflib.get_close_matches(name, list(names), n=3)
    return f"did you mean {one_of(close)}? " if close else ""
