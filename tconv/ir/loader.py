"""Reading, verifying and writing tconv IR text, with located diagnostics.

Every user-facing failure here is a `TconvError` whose message starts with
`FILE:LINE:COL: error:` where the text gives a position, so the command line
can print it as it is and exit with status 1.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from io import StringIO
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects import builtin, func
from xdsl.dialects.builtin import FileLineColLoc, IntAttr, ModuleOp, StringAttr, UnknownLoc
from xdsl.ir import Operation
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import DiagnosticException, ParseError

from tconv.ir.dialect import Tconv


class TconvError(Exception):
    """A user error: bad input, bad options, a broken rule. The message is complete."""


def make_context() -> Context:
    """A context that knows the dialects a tconv network is written in."""
    ctx = Context()
    ctx.load_dialect(builtin.Builtin)
    ctx.load_dialect(func.Func)
    ctx.load_dialect(Tconv)
    return ctx


class LocatingParser(Parser):
    """A parser that records where each operation starts, as its location.

    xDSL keeps an op's location only when the text spells one out (`loc(...)`);
    diagnostics after parsing need the line and column anyway."""

    def __init__(self, ctx: Context, text: str, filename: str) -> None:
        super().__init__(ctx, text, filename)
        self._filename = filename

    def parse_operation(self) -> Operation:
        start = self._current_token.span.get_location()
        op = super().parse_operation()
        if isinstance(op.location, UnknownLoc):
            op.location = FileLineColLoc(
                StringAttr(self._filename), IntAttr(start.line), IntAttr(start.col)
            )
        return op


def location_of(op: Operation) -> str | None:
    """`file:line:col` of an op parsed from text, None for a built one."""
    loc = op.location
    if isinstance(loc, FileLineColLoc):
        return f"{loc.filename.data}:{loc.line.data}:{loc.column.data}"
    return None


def _located(op: Operation, message: str) -> str:
    where = location_of(op)
    return f"{where}: error: {message}" if where else f"error: {message} (in {op.name})"


def parse_module(text: str, filename: str = "<input>", ctx: Context | None = None) -> ModuleOp:
    """Parse IR text (custom or generic syntax); a syntax error becomes a TconvError."""
    try:
        return LocatingParser(ctx or make_context(), text, filename).parse_module()
    except ParseError as err:
        where = err.span.get_location()
        # print_with_context starts with its own location line; keep the caret lines.
        excerpt = "\n".join(err.span.print_with_context().splitlines()[1:])
        raise TconvError(f"{where}: error: {err.msg}\n{excerpt}") from None
    except DiagnosticException as err:
        raise TconvError(f"{filename}: error: {err}") from None


def verify_module(module: ModuleOp) -> None:
    """Verify every op, innermost first in text order; the first failure is a TconvError
    that names the op's position and the broken rule."""
    for op in module.walk():
        try:
            op.verify(verify_nested_ops=False)
        except DiagnosticException as err:
            cause = err.__cause__ if err.__cause__ is not None else err
            raise TconvError(_located(op, str(cause).strip())) from None
    # Imported here: the parameter rules need the ops, which need this module's context.
    from tconv.ir.params import check_param_names

    check_param_names(module)


def load_module(path: str | os.PathLike[str]) -> ModuleOp:
    """Read, parse and verify an IR file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise TconvError(f"{path}: error: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise TconvError(f"{path}: error: not UTF-8 text ({err.reason} at byte {err.start})") from None
    module = parse_module(text, str(path))
    verify_module(module)
    return module


def module_text(module: Operation, generic: bool = False) -> str:
    stream = StringIO()
    Printer(stream=stream, print_generic_format=generic).print_op(module)
    stream.write("\n")
    return stream.getvalue()


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary path beside `path`, then rename it into place,
    so a failure never leaves a half-written file."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))

