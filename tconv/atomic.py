"""Writing files atomically: a failed or interrupted command never leaves a
half-written file, nor the temporary one it was written to."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary path beside `path`, then rename it into place,
    so a failure never leaves a half-written file."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=path.suffix)
    tmp = Path(tmp_name)
    # Everything after the temporary exists is inside the try: an interruption
    # (KeyboardInterrupt, or SIGTERM as `tconv.cli.interrupt` raises it) removes it too.
    try:
        try:
            # mkstemp makes the file private (0600); give it the mode a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        finally:
            os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))
