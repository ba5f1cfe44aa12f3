"""SIGINT and SIGTERM unwind the command like an exception.

Python turns SIGINT into `KeyboardInterrupt`, but SIGTERM's default action ends
the process on the spot: an atomic writer (`tconv.atomic`) then leaves its
hidden temporary file behind. While a command runs, both signals raise where
the program is (`KeyboardInterrupt`, `Terminated`), so every `finally` and
cleanup on the way out runs; the entry points then print one line,
`tconv: interrupted`, and exit with 128 + the signal's number (130, 143), as a
shell reports a process the signal ended.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGINT_STATUS = 128 + signal.SIGINT
SIGTERM_STATUS = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way turns it into an error message."""


def _raise(signum: int, frame: object) -> None:
    # A second signal must not cut the first one's cleanup short: ignore the rest.
    for other in (signal.SIGINT, signal.SIGTERM):
        signal.signal(other, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


@contextmanager
def interrupts_unwind() -> Iterator[None]:
    """Inside the block, SIGINT and SIGTERM raise instead of ending the process.
    The handlers before it are restored after it (tests call the entry points
    in process). Outside the main thread, where Python cannot install handlers,
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, _raise)
    try:
        yield
    finally:
        for number, handler in previous.items():
            if handler is not None:
                signal.signal(number, handler)


def interrupted_status(err: BaseException) -> int:
    """The exit status for an interruption: 130 for SIGINT, 143 for SIGTERM."""
    return SIGTERM_STATUS if isinstance(err, Terminated) else SIGINT_STATUS
