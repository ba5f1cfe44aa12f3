"""Reading, verifying and writing tconv IR text, with located diagnostics.

Every user-facing failure here is a `TconvError` whose message starts with
`FILE:LINE:COL: error:` where the text gives a position, so the command line
can print it as it is and exit with status 1.
"""

from __future__ import annotations

import bisect
import gc
import math
import os
import re
from io import StringIO
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects import builtin, func
from xdsl.dialects.builtin import FileLineColLoc, IntAttr, ModuleOp, StringAttr, UnknownLoc
from xdsl.ir import Block, BlockArgument, Operation, OpResult, SSAValue, TypeAttribute
from xdsl.parser import Parser
from xdsl.parser.generic_parser import ParserState
from xdsl.printer import Printer
from xdsl.utils.exceptions import DiagnosticException, ParseError
from xdsl.utils.lexer import Input, Position, Span
from xdsl.utils.mlir_lexer import MLIRLexer, MLIRToken, MLIRTokenKind

from tconv.atomic import write_atomic, write_text_atomic  # noqa: F401 (re-exported)
from tconv.errors import TconvError
from tconv.ir import limits
from tconv.ir.dialect import Tconv

MAX_INTEGER_DIGITS = 400
"""The longest integer literal the parser reads (any i64 or f64 has far fewer digits)."""

def make_context() -> Context:
    """A context that knows the dialects a tconv network is written in."""
    ctx = Context()
    ctx.load_dialect(builtin.Builtin)
    ctx.load_dialect(func.Func)
    ctx.load_dialect(Tconv)
    return ctx


class _LinearTimeLexer(MLIRLexer):
    """xDSL's lexer with a string-literal pattern that runs in linear time.

    xDSL 0.74 nests `+` inside `*` in this pattern, so a string literal that
    does not close on its line (`"conv.weight init ...`) backtracks
    exponentially: 30 characters take seconds, a full line never ends. The
    possessive quantifiers accept exactly the same literals without backtracking."""

    _unescaped_characters_regex = re.compile(
        r'"(?:[^"\\\n\v\f]++|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*+"'
    )

    def _lex_number(self, start_pos: Position) -> MLIRToken:
        # Python refuses to convert a string of more than 4,300 digits to an
        # int (a ValueError wherever the parser reads the token's value).
        token = super()._lex_number(start_pos)
        if token.kind == MLIRTokenKind.INTEGER_LIT and len(token.span) > MAX_INTEGER_DIGITS:
            raise ParseError(
                token.span,
                f"integer literal of {len(token.span)} characters is longer than the limit "
                f"of {MAX_INTEGER_DIGITS}",
            )
        return token


_OP_NAME = re.compile(r'(?:%[^=\n]*=\s*)?"?([A-Za-z_][\w$.]*)')
"""The name of the op whose text starts at a position (after its results)."""


class LocatingParser(Parser):
    """A parser that records where each operation starts, as its location.

    xDSL keeps an op's location only when the text spells one out (`loc(...)`);
    diagnostics after parsing need the line and column anyway."""

    MAX_INTEGER_WIDTH = (1 << 24) - 1
    """MLIR's limit on the width of an integer type (`i64`, `si8`, ...)."""

    def __init__(self, ctx: Context, text: str, filename: str) -> None:
        # xDSL's own lexer would read the first token of `text` already.
        super().__init__(ctx, "", filename)
        self._parser_state = ParserState(_LinearTimeLexer(Input(text, filename)))
        self._filename = filename
        self._text = text
        # Offsets of the line starts, found once: xDSL's `Span.get_location`
        # counts the newlines from the start of the text on every call, which
        # makes locating every op quadratic in the length of the file.
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def location_at(self, offset: int) -> tuple[int, int]:
        """(line, column) of the character at `offset`, both from 1."""
        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def _check_block_name(self) -> None:
        # MLIR allows `^2`; xDSL's blocks cannot be named so, and its block
        # parser raises a bare ValueError on it (its successor parser does not
        # look): refuse the name at the label, located.
        token = self._current_token
        if token.kind == MLIRTokenKind.CARET_IDENT:
            name = token.text[1:]
            if not Block.is_default_block_name(name) and not Block.is_valid_name(name):
                self.raise_error(
                    f"block name '{token.text}' is not supported: a block name must start with a letter, "
                    "'_', '$', '.' or '-' (for example ^bb2)", token.span,
                )

    def _parse_block(self) -> Block:
        self._check_block_name()
        return super()._parse_block()

    def parse_optional_successor(self) -> Block | None:
        self._check_block_name()
        return super().parse_optional_successor()

    def _dense_elements(self, parse):
        # xDSL stores the elements of `array<...>` and `dense<...>` with
        # Python's struct module: an element type of width 0 divides by zero
        # and one wider than 64 bits has no format. Refuse it at the attribute.
        start = self._current_token.span
        try:
            return parse()
        except (ZeroDivisionError, NotImplementedError):
            self.raise_error(
                "array and dense attributes hold elements of 1 to 64 bits (and f16, f32, f64)",
                Span(start.start, self._current_token.span.start, start.input),
            )

    def _parse_builtin_densearray_attr(self):
        return self._dense_elements(super()._parse_builtin_densearray_attr)

    def _parse_builtin_dense_attr(self):
        return self._dense_elements(super()._parse_builtin_dense_attr)

    def _parse_optional_integer_or_float_type(self) -> TypeAttribute | None:
        # xDSL computes the value range of `iN` as `1 << N`: a width like
        # i9223372036854775807 exhausts memory instead of failing.
        token = self._current_token
        if token.kind == MLIRTokenKind.BARE_IDENT:
            match = self._builtin_integer_type_regex.match(token.text)
            if match is not None and int(match.group(1)) > self.MAX_INTEGER_WIDTH:
                self.raise_error(
                    f"integer type width {match.group(1)} exceeds the limit "
                    f"{self.MAX_INTEGER_WIDTH}",
                    token.span,
                )
        return super()._parse_optional_integer_or_float_type()

    @property
    def current_span(self) -> Span:
        """Where the parser stands: the span of the next token."""
        return self._current_token.span

    def parse_operation(self) -> Operation:
        start = self.current_span
        line, col = self.location_at(start.start)
        try:
            op = super().parse_operation()
        except (ParseError, DiagnosticException, RecursionError):
            raise
        except (IndexError, KeyError, TypeError, AttributeError) as err:
            # An op class's custom parser builds the op from what the text gave
            # it; a `linalg.conv_2d_nchw_fchw` with one input fails indexing
            # the operands it expects. Report it at the op.
            match = _OP_NAME.match(self._text, start.start)
            name = match.group(1) if match else "operation"
            raise ParseError(
                start,
                f"{name}: malformed operation: its operands, types or attributes do not have the "
                f"form it needs ({type(err).__name__}: {err})",
            ) from None
        if isinstance(op.location, UnknownLoc):
            op.location = FileLineColLoc(StringAttr(self._filename), IntAttr(line), IntAttr(col))
        return op


def location_of(op: Operation) -> str | None:
    """`file:line:col` of an op parsed from text, None for a built one."""
    loc = op.location
    if isinstance(loc, FileLineColLoc):
        return f"{loc.filename.data}:{loc.line.data}:{loc.column.data}"
    return None


def located(op: Operation, message: str) -> str:
    """`message` as an error at the op's position in its file (if it came from one)."""
    where = location_of(op)
    return f"{where}: error: {message}" if where else f"error: {message} (in {op.name})"


def parse_module(
    text: str,
    filename: str = "<input>",
    ctx: Context | None = None,
    allow_implicit_module: bool = True,
) -> ModuleOp:
    """Parse IR text (custom or generic syntax); a syntax error becomes a TconvError."""
    parser: LocatingParser | None = None
    # The parser allocates millions of objects that all stay alive; Python's
    # cyclic collector would rescan them over and over (parse time grew with
    # the square of the op count). It runs again once the module is built.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parser = LocatingParser(ctx or make_context(), text, filename)
        return parser.parse_module(allow_implicit_module)
    except ParseError as err:
        raise TconvError(_syntax_error(err.span, err.msg)) from None
    except RecursionError:
        # The parser recurses once per level of nested brackets, types and
        # regions; Python's recursion limit bounds how deep the text may nest.
        if parser is None:
            raise
        raise TconvError(
            _syntax_error(parser.current_span, "brackets, types or regions nest too deeply")
        ) from None
    except DiagnosticException as err:
        if parser is None:
            raise TconvError(f"{filename}: error: {err}") from None
        # An attribute or type rejected its parameters while the parser built
        # it: point at the token the parser had reached.
        raise TconvError(_syntax_error(parser.current_span, str(err))) from None
    except Exception as err:
        # xDSL's parser may raise plain exceptions on malformed input that no
        # check above catches: report them where the parser stopped.
        message = f"internal parser error ({type(err).__name__}): {err}"
        if parser is None:
            raise TconvError(f"{filename}: error: {message}") from err
        raise TconvError(_syntax_error(parser.current_span, message)) from err
    finally:
        if collecting:
            gc.enable()


def _syntax_error(span: Span, message: str) -> str:
    if message[:1].isspace():
        # Some xDSL errors are only a context (" in block definition").
        message = f"unexpected {repr(span.text) if span.text else 'end of input'}{message}"
    where = span.get_location()
    # print_with_context starts with its own location line; keep the caret lines.
    excerpt = "\n".join(span.print_with_context().splitlines()[1:])
    return f"{where}: error: {message}\n{excerpt}"


def verify_module(module: ModuleOp) -> None:
    """Verify every op in text order; the first failure is a TconvError that
    names the op's position and the broken rule.

    Beyond each op's own rules: a symbol is defined once per module, a value
    is defined before it is used, and every tensor stays within the resource
    limits of `tconv.ir.limits`."""
    max_elements = limits.max_tensor_elements()
    max_params = limits.max_params()
    params = 0
    position = _positions(module)
    symbols: dict[Operation, dict[str, Operation]] = {}
    for op in module.walk():
        _check_symbol(op, symbols)
        _check_dominance(op, position)
        _check_sizes(op, max_elements)
        try:
            op.verify(verify_nested_ops=False)
        except DiagnosticException as err:
            cause = err.__cause__ if err.__cause__ is not None else err
            if isinstance(op, ModuleOp) and str(cause).startswith("Redefinition of symbol"):
                continue  # reported at the second definition, by _check_symbol
            raise TconvError(located(op, str(cause).strip())) from None
        if op.name == "tconv.param":
            params += math.prod(max(d, 1) for d in op.results[0].type.get_shape())
            if params > max_params:
                raise TconvError(
                    located(
                        op,
                        f"the parameters total {params} elements, over the limit of {max_params} "
                        f"(set {limits.MAX_PARAMS_ENV} to raise it)",
                    )
                )
    # Imported here: the parameter rules need the ops, which need this module's context.
    from tconv.ir.params import check_param_names

    check_param_names(module)


def _check_symbol(op: Operation, symbols: dict[Operation, dict[str, Operation]]) -> None:
    """A module defines each symbol (a function name) once."""
    table = op.parent_op()
    if not isinstance(table, ModuleOp):
        return
    name = op.properties.get("sym_name") or op.attributes.get("sym_name")
    if not isinstance(name, StringAttr):
        return
    first = symbols.setdefault(table, {}).setdefault(name.data, op)
    if first is not op:
        first_at = location_of(first)
        raise TconvError(
            located(
                op,
                f"redefinition of symbol '@{name.data}'" + (f" (first defined at {first_at})" if first_at else ""),
            )
        )


def _positions(module: ModuleOp) -> dict[Operation, int]:
    """Each op's index in its block, numbered once (xDSL's `is_before_in_block`
    walks the block, which would make checking every use quadratic)."""
    position: dict[Operation, int] = {}
    for op in module.walk():
        for region in op.regions:
            for block in region.blocks:
                for index, child in enumerate(block.ops):
                    position[child] = index
    return position


def _value_name(value: SSAValue) -> str:
    return f"%{value.name_hint}" if value.name_hint else "a value"


def _check_dominance(op: Operation, position: dict[Operation, int]) -> None:
    """Every operand of `op` is defined before its use: by an earlier op of
    the same block or of an enclosing block, or as an argument of an enclosing
    block."""
    for index, operand in enumerate(op.operands):
        problem = _dominance_problem(op, operand, position)
        if problem is not None:
            raise TconvError(located(op, f"operand {index} ({_value_name(operand)}) {problem}"))


def _dominance_problem(op: Operation, value: SSAValue, position: dict[Operation, int]) -> str | None:
    if isinstance(value, BlockArgument):
        block = value.block
        ancestor: Operation | None = op
        while ancestor is not None:
            if ancestor.parent is block:
                return None
            ancestor = ancestor.parent_op()
        return "is an argument of a block that does not enclose this use"
    if not isinstance(value, OpResult):
        return "is not defined by an op or a block"
    definer = value.op
    block = definer.parent
    ancestor = op
    while ancestor is not None:
        if block is not None and ancestor.parent is block:
            if position.get(definer, -1) < position.get(ancestor, -1):
                return None
            if ancestor is definer:
                return "is a result of this op itself"
            where = location_of(definer)
            return "is used before its definition" + (f" at {where}" if where else "")
        ancestor = ancestor.parent_op()
    return "is defined outside the scope of this use"


def _check_sizes(op: Operation, max_elements: int) -> None:
    """The op's result types and its blocks' argument types are within the limits."""
    types = [(f"result {i}", r.type) for i, r in enumerate(op.results)]
    for region in op.regions:
        for block in region.blocks:
            types += [(f"argument {i}", a.type) for i, a in enumerate(block.args)]
    if op.name == "func.func":
        function_type = op.properties.get("function_type")
        if isinstance(function_type, builtin.FunctionType):
            types += [(f"input {i}", t) for i, t in enumerate(function_type.inputs.data)]
            types += [(f"output {i}", t) for i, t in enumerate(function_type.outputs.data)]
    for what, typ in types:
        if isinstance(typ, builtin.TensorType):
            problem = limits.shape_problem(typ.get_shape(), max_elements)
            if problem is not None:
                raise TconvError(located(op, f"{what} ({typ}): {problem}"))


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of an IR file (see `decode_text`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise TconvError(f"{path}: error: cannot read: {err.strerror}") from None
    return decode_text(data, str(path))


def decode_text(data: bytes, name: str, line_offset: int = 0) -> str:
    """`data` as UTF-8 text. Every command that reads IR reads it through
    here, so a binary file (an ONNX model, a parameter store) gets one
    message everywhere, saying what to run instead. `line_offset`: lines
    before `data` in its file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TconvError(
            f"{_byte_location(data, err.start, name, line_offset)}: error: not UTF-8 text "
            f"({err.reason} at byte {err.start}){_binary_hint(data, name)}"
        ) from None
    if "\0" in text:
        at = data.index(b"\0")
        raise TconvError(
            f"{_byte_location(data, at, name, line_offset)}: error: a binary file, not IR text (a NUL byte)"
            f"{_binary_hint(data, name)}"
        )
    return text


def _byte_location(data: bytes, at: int, name: str, line_offset: int) -> str:
    """FILE:LINE:COL of byte `at` (the column counts bytes)."""
    line = data.count(b"\n", 0, at) + 1 + line_offset
    column = at - data.rfind(b"\n", 0, at)
    return f"{name}:{line}:{column}"


ONNX_SUFFIX = ".onnx"
ZIP_MAGIC = b"PK\x03\x04"


def _binary_hint(data: bytes, name: str) -> str:
    """What a binary file given as IR most likely is, and what to run instead."""
    if data.startswith(ZIP_MAGIC):
        return (
            "; it is a zip archive (a parameter store?): give the IR file, whose store "
            "is the .npz beside it"
        )
    path = Path(name)
    if path.suffix.lower() == ONNX_SUFFIX or data[:1] == b"\x08":  # ONNX's first field: ir_version
        model = name if path.suffix.lower() == ONNX_SUFFIX else "MODEL.onnx"
        return f"; an ONNX model is imported first: tconv import {model} -o {Path(model).stem}.mlir"
    return "; tconv reads MLIR text (an ONNX model is imported first: tconv import MODEL.onnx -o NET.mlir)"


def load_module(path: str | os.PathLike[str]) -> ModuleOp:
    """Read, parse and verify an IR file."""
    path = Path(path)
    module = parse_module(read_text(path), str(path))
    verify_module(module)
    return module


def module_text(module: Operation, generic: bool = False) -> str:
    stream = StringIO()
    Printer(stream=stream, print_generic_format=generic).print_op(module)
    stream.write("\n")
    return stream.getvalue()

