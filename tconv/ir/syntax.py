"""The custom assembly syntax shared by the tconv ops.

An op prints as its operands, then its properties as `keyword value` pairs in a
fixed order, then any extra attributes, then its type:

    %y = tconv.conv2d %x, %w strides [2, 2] padding [1, 1, 1, 1] dilations [1, 1] groups 1
           : (tensor<1x64x32x32xf32>, tensor<128x64x3x3xf32>) -> tensor<1x128x16x16xf32>

Ops whose result has the type of every operand (`relu`, `add`, ...) print the
type once: `%y = tconv.relu %x : tensor<1x64x32x32xf32>`.

Each op declares its properties as a tuple of `Keyword`s; this module turns
them into `print` and `parse`, so the text and the IRDL definition cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from xdsl.dialects.builtin import (
    DenseArrayBase,
    FloatAttr,
    IntegerAttr,
    UnitAttr,
    f64,
    i64,
)
from xdsl.ir import Attribute
from xdsl.parser import Parser
from xdsl.printer import Printer

Kind = Literal["ints", "int", "float", "floats", "opt_int", "flag", "attr"]


@dataclass(frozen=True)
class Keyword:
    """A property printed as `name value`.

    kinds: `ints` (i64 array, `[1, 2]`), `int` (i64), `float` (f64),
    `floats` (f64 array, `[0.5, 0.25]`), `opt_int` (optional i64), `flag`
    (optional unit attribute, printed as the bare keyword when set), `attr`
    (optional attribute of any kind, printed in MLIR attribute syntax).
    """

    name: str
    kind: Kind

    @property
    def optional(self) -> bool:
        return self.kind in ("flag", "attr", "opt_int")


def ints_attr(values: Sequence[int]) -> DenseArrayBase:
    return DenseArrayBase.from_list(i64, [int(v) for v in values])


def floats_attr(values: Sequence[float]) -> DenseArrayBase:
    return DenseArrayBase.from_list(f64, [float(v) for v in values])


def int_attr(value: int) -> IntegerAttr:
    return IntegerAttr(int(value), i64)


def float_attr(value: float) -> FloatAttr:
    return FloatAttr(float(value), f64)


def print_keywords(
    printer: Printer, keywords: Sequence[Keyword], properties: dict[str, Attribute]
) -> None:
    for keyword in keywords:
        value = properties.get(keyword.name)
        if value is None:
            continue
        printer.print_string(f" {keyword.name}")
        if keyword.kind == "flag":
            continue
        printer.print_string(" ")
        if keyword.kind == "ints":
            assert isinstance(value, DenseArrayBase)
            with printer.in_square_brackets():
                printer.print_list(value.get_values(), lambda v: printer.print_string(str(v)))
        elif keyword.kind == "floats":
            assert isinstance(value, DenseArrayBase)
            with printer.in_square_brackets():
                printer.print_list(value.get_values(), lambda v: printer.print_string(exact_float(v)))
        elif keyword.kind in ("int", "opt_int"):
            assert isinstance(value, IntegerAttr)
            printer.print_string(str(value.value.data))
        elif keyword.kind == "float":
            assert isinstance(value, FloatAttr)
            printer.print_float(value.value.data, f64)
        else:
            printer.print_attribute(value)


def exact_float(value: float) -> str:
    """The shortest literal that reads back as exactly `value` (Python's repr),
    with the decimal point an MLIR float literal needs: `1e-05` is `1.0e-05`."""
    text = repr(float(value))
    if "." in text or not text.lstrip("-").replace("e", "").replace("+", "").replace("-", "").isdigit():
        return text
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}.0" + (f"e{exponent}" if exponent else "")


def parse_keywords(parser: Parser, keywords: Sequence[Keyword]) -> dict[str, Attribute]:
    properties: dict[str, Attribute] = {}
    for keyword in keywords:
        if keyword.optional:
            if parser.parse_optional_keyword(keyword.name) is None:
                continue
        else:
            parser.parse_keyword(keyword.name, " (property of this op)")
        if keyword.kind == "ints":
            values = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE,
                lambda: _parse_i64(parser, f" in '{keyword.name}'"),
                f" in '{keyword.name}'",
            )
            properties[keyword.name] = ints_attr(values)
        elif keyword.kind == "floats":
            values = parser.parse_comma_separated_list(
                parser.Delimiter.SQUARE,
                lambda: _parse_f64(parser, f" in '{keyword.name}'"),
                f" in '{keyword.name}'",
            )
            properties[keyword.name] = floats_attr(values)
        elif keyword.kind in ("int", "opt_int"):
            properties[keyword.name] = int_attr(_parse_i64(parser, f" after '{keyword.name}'"))
        elif keyword.kind == "float":
            properties[keyword.name] = float_attr(_parse_f64(parser, f" after '{keyword.name}'"))
        elif keyword.kind == "flag":
            properties[keyword.name] = UnitAttr()
        else:
            properties[keyword.name] = parser.parse_attribute()
    return properties


_I64 = range(-(2**63), 2**63)


def _parse_i64(parser: Parser, context_msg: str) -> int:
    """An integer literal that fits in i64 (a larger one is a located syntax error)."""
    start = parser.pos
    value = parser.parse_integer(allow_boolean=False, context_msg=context_msg)
    if value not in _I64:
        parser.raise_error(f"integer {value} out of range for i64{context_msg}", start, parser.pos)
    return value


def _parse_f64(parser: Parser, context_msg: str) -> float:
    """A number literal that fits in f64 (a larger one is a located syntax error)."""
    start = parser.pos
    value = parser.parse_number(context_msg=context_msg)
    try:
        return float(value)
    except OverflowError:
        parser.raise_error(f"number {value} out of range for f64{context_msg}", start, parser.pos)
