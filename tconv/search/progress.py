"""The progress line of `tconv tune` and `tconv optimize`, on stderr.

On a terminal it is redrawn in place. Anywhere else (a log file, CI) every
redraw would be a line of its own, thousands in a long tune, so there it
prints a line at most every `LOG_INTERVAL_S` seconds instead.
"""

from __future__ import annotations

import sys
import time

LOG_INTERVAL_S = 30.0

_last_logged: float | None = None


def bar(fraction: float, width: int) -> str:
    """`[###...]`: `fraction` (clamped to 0..1) of `width` filled."""
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def show(text: str) -> None:
    """Show `text` as the current progress."""
    global _last_logged
    if sys.stderr.isatty():
        print(f"\r{text}", end="", file=sys.stderr, flush=True)
        return
    now = time.monotonic()
    if _last_logged is None or now - _last_logged >= LOG_INTERVAL_S:
        _last_logged = now
        print(text, file=sys.stderr, flush=True)


def done() -> None:
    """End the progress line (a newline after the last redraw on a
    terminal), so that the next shown progress logs at once."""
    global _last_logged
    _last_logged = None
    if sys.stderr.isatty():
        print(file=sys.stderr)
