"""What a pass is and which options it takes, read from its class: the one
source of `tconv-opt --help` and of the pipeline's option checks, so the
documentation cannot drift from the code.

A pass's summary is the first sentence of its docstring; an option's
description is the docstring under its dataclass field (the convention
every tconv pass follows), its type and default come from the field.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from dataclasses import dataclass
from functools import cache

from xdsl.passes import ModulePass, get_pass_option_infos


@dataclass(frozen=True)
class PassOption:
    name: str
    """As a pipeline spells it: `check-capacity` (xDSL also takes `check_capacity`)."""
    type: str
    """As xDSL spells it: `int`, `str`, `bool`, `float | int`."""
    default: str | None
    """None for a required option."""
    description: str


def summary(pass_class: type[ModulePass]) -> str:
    """The first sentence of the pass's docstring, on one line (a reference to
    the module docstring left out: help is read away from the source)."""
    doc = inspect.getdoc(pass_class) or ""
    if doc.startswith(f"{pass_class.__name__}("):
        doc = ""  # what @dataclass writes where the class has no docstring
    paragraph = " ".join(doc.split("\n\n", 1)[0].split()).replace(" (see the module docstring)", "")
    end = paragraph.find(". ")
    sentence = paragraph if end < 0 else paragraph[: end + 1]
    return sentence[:-1] + "." if sentence.endswith(":") else sentence


def options(pass_class: type[ModulePass]) -> list[PassOption]:
    """Every option of the pass, in field order."""
    docs = _field_docs(pass_class)
    return [
        PassOption(info.name.replace("_", "-"), info.expected_type.replace("'", ""), info.default_value,
                   docs.get(info.name, ""))
        for info in get_pass_option_infos(pass_class)
    ]


def shared_base(pass_class: type[ModulePass]) -> type | None:
    """The tconv base class whose options the pass inherits (`NasPass`,
    `SchedulePass`), None where it has none: help lists such options once."""
    for base in pass_class.__mro__[1:]:
        if base.__module__.startswith("tconv.") and dataclasses.is_dataclass(base) and dataclasses.fields(base):
            return base
    return None


def own_options(pass_class: type[ModulePass]) -> list[PassOption]:
    """The options the pass adds to its `shared_base`'s, required ones first."""
    base = shared_base(pass_class)
    inherited = {field.name.replace("_", "-") for field in dataclasses.fields(base)} if base else set()
    own = [option for option in options(pass_class) if option.name not in inherited]
    return sorted(own, key=lambda option: option.default is not None)


def format_option(option: PassOption) -> str:
    """`name: type = default`, or `name: type (required)`."""
    if option.default is None:
        return f"{option.name}: {option.type} (required)"
    return f"{option.name}: {option.type} = {option.default or '(empty)'}"


def _field_docs(pass_class: type) -> dict[str, str]:
    """The docstring under each field, from the class and its bases (a subclass's wins)."""
    docs: dict[str, str] = {}
    for cls in reversed(pass_class.__mro__):
        if dataclasses.is_dataclass(cls) and cls.__module__.startswith("tconv."):
            docs.update(_class_field_docs(cls))
    return docs


@cache
def _class_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for field, following in zip(body, body[1:]):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[field.target.id] = " ".join(following.value.value.split())
    return docs
