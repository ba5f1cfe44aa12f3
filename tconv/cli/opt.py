"""`tconv-opt`: xdsl-opt for tconv IR, with located diagnostics.

    tconv-opt FILE [-p PIPELINE] [--verify-diagnostics] [--split-input-file]
                   [--print-op-generic] [-o OUT]

It accepts every xdsl-opt option and knows every dialect and pass xdsl-opt
knows (tconv's from its `xdsl.universe`, installed as an entry point or not).
It differs where a user meets an error:

- ops remember where they start in the text, and the module is checked with
  `verify_module`, so a broken rule reads
  `net.mlir:12:8: error: conv2d: input channels 30 not divisible by groups 4`;
- every user error (unreadable input, syntax, verification, a pass that fails
  on this input) is one message on stderr and exit status 1, never a
  traceback; a usage error (an unknown option, a pipeline that cannot be
  built: bad syntax, an unknown pass or pass option, an option value of the
  wrong type or out of range) is exit status 2, with the usage line, before
  any input is read; unknown names get a "did you mean";
- `--help` lists tconv's passes with their options, read from the pass
  classes; `--list-passes` names every pass, xDSL's too;
- `-o OUT` is written atomically: a failed run leaves OUT as it was;
- `--split-input-file` reports lines counted in the whole file, not the chunk.

Parameter store: where the input `net.mlir` has a store `net.npz` beside it,
`-o OUT` also writes the output network's store beside OUT, so OUT runs and
compiles like its input. A pipeline with a pass that rewrites parameters (NAS
passes, `tconv-fold-bn`) reads the store's values (see
`tconv.passes.nas.store`): entries whose name and shape survive are kept,
values a pass wrote (pruned slices) are used, and every other new parameter
is initialised from its `init` (seed 0). Before such a pipeline runs, the
store is checked against the input as `tconv run` checks it: an entry of
the wrong shape or dtype, or a missing one, is an error at its `tconv.param`.
Any other pipeline (`tconv-set-batch`,
schedules) carries the store over unchanged, as long as every parameter of
OUT is in it with its shape; where a pass changed one, no store is written
and a note says why.

`--verify-diagnostics` (and `--parsing-diagnostics` for syntax errors) print the
diagnostic to stdout and exit 0, as xdsl-opt does, for filecheck tests.

A crash (a bug in xDSL or tconv) is reported as an internal error, exit
status 3; set `TCONV_DEBUG=1` to see its traceback. SIGINT and SIGTERM end
the run cleanly: no temporary file is left, one line `tconv-opt: interrupted`,
exit status 130 or 143 (see `tconv.cli.interrupt`).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from io import StringIO
from typing import IO, NoReturn

from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass, PassPipeline
from xdsl.printer import Printer
from xdsl.universe import Universe
from xdsl.utils.arg_spec import ArgSpec, parse_pipeline
from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException
from xdsl.xdsl_opt_main import xDSLOptMain

from tconv.cli.command import did_you_mean
from tconv.cli.interrupt import Terminated, interrupted_status, interrupts_unwind
from tconv.ir.loader import TconvError, decode_text, parse_module, verify_module, write_atomic, write_text_atomic
from tconv.ir.ops import shape_of
from tconv.ir.params import (
    check_store_names, complete_params, load_provenance, load_store, param_ops, save_store, store_exists, store_path_for,
)
from tconv.passes.describe import PassOption, format_option, options, own_options, shared_base, summary
from tconv.passes.nas.store import ParamStore, active_store, using_store
from tconv.universe import TCONV_UNIVERSE

STDIN_NAME = "<stdin>"

USAGE_ERROR = 2
INTERNAL_ERROR = 3
"""The exit statuses `tconv` uses too (docs/ARCHITECTURE.md, *Command line*)."""


@cache
def _multiverse() -> Universe:
    """Every installed `xdsl.universe`, looked up once per process (the lookup
    scans the installed packages' entry points)."""
    return Universe.get_multiverse()


class TconvOptMain(xDSLOptMain):
    """xdsl-opt's driver with tconv's parser, verifier and error reporting.

    Every method raises `TconvError` with a complete message for a user error;
    `main` prints it."""

    version_format = "tconv-opt built from xdsl version {xdsl_version}"

    def __init__(self, args: Sequence[str] | None = None) -> None:
        super().__init__(
            description="Parse and verify tconv IR, run a pipeline of passes on it and print it "
            "(xdsl-opt, with located diagnostics and the parameter store carried beside -o).",
            args=args,
        )

    def register_all_dialects(self) -> None:
        for dialect_name, dialect_factory in _multiverse().all_dialects.items():
            self.ctx.register_dialect(dialect_name, dialect_factory)
        if "tconv" not in self.ctx.registered_dialect_names:
            self.ctx.register_dialect("tconv", TCONV_UNIVERSE.all_dialects["tconv"])

    def register_all_passes(self) -> None:
        for pass_name, pass_factory in _multiverse().all_passes.items():
            self.register_pass(pass_name, pass_factory)
        # tconv's own, also where its entry point is not installed.
        for pass_name, pass_factory in TCONV_UNIVERSE.all_passes.items():
            self.register_pass(pass_name, pass_factory)

    def register_all_targets(self) -> None:
        for target_name, target_factory in _multiverse().all_targets.items():
            self.available_targets.setdefault(target_name, target_factory)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.prog = "tconv-opt"
        arg_parser.formatter_class = argparse.RawDescriptionHelpFormatter
        self._arg_parser = arg_parser
        tconv_passes = TCONV_UNIVERSE.all_passes
        others = sum(1 for name in self.available_passes if name not in tconv_passes)
        for action in arg_parser._actions:
            if "--passes" in action.option_strings:
                action.help = (
                    "the pass pipeline, comma-separated: -p 'tconv-set-batch{batch=8},tconv-fold-bn'. "
                    f"tconv's passes and their options are listed below; xDSL's own {others} passes are "
                    "accepted too (--list-passes names every pass)"
                )
        arg_parser.add_argument(
            "--list-passes", action=_ListPasses, passes=self.available_passes,
            help="print the name of every pass -p accepts, tconv's first, and exit",
        )
        arg_parser.epilog = passes_help(tconv_passes)

    def get_input_name(self) -> str:
        if self.args.input_file in (None, "-"):
            return STDIN_NAME
        return self.args.input_file

    def get_input_stream(self) -> tuple[IO[bytes], str]:
        """The input as bytes and its frontend; stdin for no file or `-`. A file
        whose extension names no frontend is read as MLIR text."""
        if self.args.input_file in (None, "-"):
            return sys.stdin.buffer, "mlir"
        try:
            stream, extension = super().get_input_stream()
        except OSError as err:
            raise TconvError(
                f"{self.args.input_file}: error: cannot read: {err.strerror}"
            ) from None
        if extension not in self.available_frontends:
            extension = "mlir"
        return stream, extension

    def setup_pipeline(self) -> None:
        """Parse `-p` into passes; verification between passes goes through
        `verify_module`, so its failures are located too.

        A pipeline that cannot be built (bad syntax, an unknown pass or option, an
        option value of the wrong type or out of range) is a usage error: exit
        status 2, before any input is read."""
        try:
            specs = list(parse_pipeline(self.args.passes))
        except (ValueError, ArgSpecParseError) as err:
            self._usage_error(f"invalid pass pipeline '{self.args.passes}': {err}")
        passes = [self._make_pass(spec) for spec in specs]
        self.pipeline = PassPipeline(tuple(passes), self._between_passes)
        self._pass_start = time.perf_counter()

    def _usage_error(self, message: str) -> NoReturn:
        self._arg_parser.error(message)  # prints the usage line, exits with status 2

    def _make_pass(self, spec: ArgSpec) -> ModulePass:
        """The pass `spec` names, with its options checked by name and type."""
        if spec.name not in self.available_passes:
            self._usage_error(
                f"unknown pass '{spec.name}' ({did_you_mean(spec.name, self.available_passes)}"
                "`tconv-opt --help` lists tconv's passes, `--list-passes` every pass)"
            )
        pass_class = self.available_passes[spec.name]()
        known = {option.name: option for option in options(pass_class)}
        given = {name.replace("_", "-"): values for name, values in spec.parameters.items()}
        for name in given:
            if name not in known:
                self._usage_error(
                    f"{spec.name} has no option '{name}' ({did_you_mean(name, known)}its options: "
                    f"{', '.join(known) or 'none'})"
                )
        for name, option in known.items():
            if option.default is None and name not in given:
                self._usage_error(f"{spec.name} needs option '{name}' ({option.type}): {spec.name}{{{name}=...}}")
        try:
            return pass_class.from_pass_spec(_numbers_as_floats(spec, known))
        except (ValueError, TypeError, DiagnosticException) as err:
            message = _option_value_error(str(err), given, known)
            self._usage_error(message if message.startswith(f"{spec.name}:") else f"{spec.name}: {message}")

    def _between_passes(
        self,
        previous_pass: ModulePass | None,
        module: ModuleOp,
        next_pass: ModulePass | None,
    ) -> None:
        if self.args.time_passes and previous_pass is not None:
            duration = time.perf_counter() - self._pass_start
            print(f"Pass {previous_pass.name} took {duration} seconds")
        if previous_pass is not None and not self.args.disable_verify:
            verify_module(module)
        if previous_pass and next_pass and self.args.print_between_passes:
            print(f"IR after {previous_pass.name}:")
            Printer(stream=sys.stdout).print_op(module)
            print("\n\n\n")
        if self.args.time_passes and next_pass is not None:
            self._pass_start = time.perf_counter()

    def parse_chunk(
        self, chunk: IO[bytes], file_extension: str, start_offset: int = 0
    ) -> ModuleOp | None:
        """Parse one chunk of the input; `start_offset` is the number of lines
        before it in the file."""
        if file_extension != "mlir":
            return super().parse_chunk(chunk, file_extension, start_offset)
        name = self.get_input_name()
        text = decode_text(chunk.read(), name, start_offset)
        # Line numbers count from the start of the file: the chunk is parsed
        # after as many empty lines as precede it there.
        return parse_module(
            "\n" * start_offset + text,
            name,
            self.ctx,
            allow_implicit_module=not self.args.no_implicit_module,
        )

    def process_module(self, module: ModuleOp) -> str:
        """Verify the parsed module, run the pipeline on it, and print it."""
        if not self.args.disable_verify:
            verify_module(module)
        self._modules.append(module)
        if getattr(self, "_rewrites_params", False) and not self.args.split_input_file:
            # The store as read must fit the input, before any pass reads it.
            active_store().check(module)
        try:
            self.apply_passes(module)
        except DiagnosticException as err:
            raise TconvError(f"{self.get_input_name()}: error: {err}") from None
        return self.output_resulting_program(module)

    def run(self) -> None:
        """Process each chunk of the input and write the results: to stdout as
        they come, or to `-o OUT` at once when every chunk succeeded."""
        chunks, file_extension = self.prepare_input()
        output_file = self.args.output_file
        output: IO[str] = StringIO() if output_file is not None else sys.stdout
        rewrites_params = any(getattr(p, "uses_param_store", False) for p in self.pipeline.passes)
        self._rewrites_params = rewrites_params
        input_store = self._input_store() if output_file is not None or rewrites_params else None
        if input_store is not None and self.args.split_input_file:
            input_store.checked = True  # one store, many modules: it fits at most one of them
        self._modules: list[ModuleOp] = []
        try:
            with using_store(input_store or ParamStore()) as store:
                self._process_chunks(chunks, file_extension, output)
        finally:
            for chunk, _ in chunks:
                chunk.close()
        if output_file is not None:
            assert isinstance(output, StringIO)
            text = output.getvalue()
            params = None
            if input_store is not None and len(self._modules) == 1:
                params = self._output_params(self._modules[0], store, rewrites_params, output_file)
            if params is not None:
                check_store_names(self._modules[0])
            try:
                if params is not None:
                    self._write_with_store(output_file, text, params, store.provenance)
                else:
                    write_text_atomic(output_file, text)
            except OSError as err:
                raise TconvError(f"{output_file}: error: cannot write: {err.strerror}") from None

    def _input_store(self) -> ParamStore | None:
        """The parameter store beside the input file, if it has one."""
        if self.args.input_file in (None, "-"):
            return None
        path = store_path_for(self.args.input_file)
        if path == Path(self.args.input_file) or not store_exists(path):
            return None
        return ParamStore(load_store(path), provenance=load_provenance(path), source=str(path))

    @staticmethod
    def _output_params(
        module: ModuleOp, store: ParamStore, rewrites_params: bool, output_file: str
    ) -> dict | None:
        """The store to write beside OUT, or None where the input's no longer fits.

        A pass that rewrites parameters keeps the store up to date itself; after
        any other pipeline the input's values are only carried over where every
        parameter kept its name and shape: initialising the rest would pass off
        fresh weights under the input's provenance."""
        if rewrites_params:
            return complete_params(module, store.arrays)
        changed = [
            op.param_name
            for op in param_ops(module)
            if op.param_name not in store.arrays
            or tuple(store.arrays[op.param_name].shape) != shape_of(op.result)
        ]
        if changed:
            print(
                f"tconv-opt: note: no parameter store written beside {output_file}: the pipeline changed "
                f"parameter '{changed[0]}'"
                + (f" and {len(changed) - 1} more" if len(changed) > 1 else "")
                + " and has no pass that rewrites the store",
                file=sys.stderr,
            )
            return None
        return {op.param_name: store.arrays[op.param_name] for op in param_ops(module)}

    @staticmethod
    def _write_with_store(output_file: str, text: str, params: dict, provenance: dict) -> None:
        """OUT and OUT.npz, atomically: if either write fails, neither changes."""
        store = store_path_for(output_file)
        if store == Path(output_file):
            raise TconvError(f"{output_file}: error: the output may not end in .npz: its parameter store goes there")

        def write_both(store_tmp: Path) -> None:
            save_store(store_tmp, params, provenance)
            write_text_atomic(output_file, text)

        write_atomic(store, write_both)

    def _process_chunks(self, chunks, file_extension: str, output: IO[str]) -> None:
        """Parse, process and print each chunk of the input to `output`."""
        for index, (chunk, offset) in enumerate(chunks):
            if index > 0:
                output.write("// -----\n")
            try:
                module = self.parse_chunk(chunk, file_extension, offset)
            except TconvError as err:
                if not self.args.parsing_diagnostics:
                    raise
                print(err)
                continue
            if module is None:
                continue
            try:
                output.write(self.process_module(module))
            except TconvError as err:
                if not self.args.verify_diagnostics:
                    raise
                print(err)
            output.flush()


FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _numbers_as_floats(spec: ArgSpec, known: dict[str, PassOption]) -> ArgSpec:
    """`spec` with the values of float options read as numbers: an integer
    where the option takes only a float (`tolerance=1`), and an exponent
    without a decimal point (`min-capacity=1e-3`, which xDSL's pipeline
    lexer leaves a string); finite values only, so `nan`, `inf` and `1e999`
    stay strings and are refused as not a number. An integer beyond any
    float (`budget=1` and 400 zeros) is a ValueError."""
    parameters = {}
    for name, values in spec.parameters.items():
        option = known.get(name.replace("_", "-"))
        if option is not None and "float" in option.type.split(" | "):
            values = tuple(_as_float(option, value) for value in values)
        parameters[name] = values
    return ArgSpec(spec.name, parameters)


def _as_float(option: PassOption, value: object) -> object:
    if isinstance(value, str) and FLOAT_LITERAL.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            digits = str(value)
            raise ValueError(
                f"option '{option.name}' is out of range: {digits[:12]}... ({len(digits.lstrip('-'))} digits)"
            ) from None
        return number if option.type == "float" else value
    return value


def _option_value_error(message: str, given: dict, known: dict[str, PassOption]) -> str:
    """xDSL's `Incompatible types: given ('two',), expected <class 'int'>`,
    said with the option's name and type as the help shows them."""
    for name, values in given.items():
        if message.startswith(f"Incompatible types: given {tuple(values)!r},"):
            return f"option '{name}' takes {known[name].type}, got '{','.join(map(str, values))}'"
    return message


def passes_help(passes: Mapping[str, Callable[[], type[ModulePass]]], width: int = 100) -> str:
    """tconv's passes, each with its summary and options (`--help`'s epilog):
    generated from the pass classes, so it says what the code does. Options
    a family of passes inherits from one base are listed once, after them."""

    def option_lines(option: PassOption) -> list[str]:
        return textwrap.wrap(
            f"{format_option(option)}  {option.description}".rstrip(), width,
            initial_indent=" " * 6 + "- ", subsequent_indent=" " * 10,
        )

    lines = ["tconv passes (-p 'NAME{OPTION=VALUE ...}'; a list value is comma-separated):"]
    families: dict[type, list[str]] = {}
    for name, load in passes.items():
        pass_class = load()
        lines.append(f"  {name}")
        lines += textwrap.wrap(summary(pass_class), width, initial_indent=" " * 6, subsequent_indent=" " * 6)
        for option in own_options(pass_class):
            lines += option_lines(option)
        base = shared_base(pass_class)
        if base is not None:
            families.setdefault(base, []).append(name)
            shared = ", ".join(option.name for option in options(base))
            lines += textwrap.wrap(f"and the common options {shared} (below)", width, initial_indent=" " * 6 + "- ",
                                   subsequent_indent=" " * 10)
    for base, names in families.items():
        lines.append("")
        lines += textwrap.wrap(f"Common options of {', '.join(names)}:", width, break_on_hyphens=False)
        for option in options(base):
            lines += option_lines(option)
    lines.append("")
    lines.append("xDSL's own passes are accepted as well: --list-passes names them.")
    return "\n".join(lines)


class _ListPasses(argparse.Action):
    """`--list-passes`: every pass name, tconv's first, then exit 0."""

    def __init__(self, option_strings, dest, passes, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.passes = passes

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        tconv = [name for name in self.passes if name in TCONV_UNIVERSE.all_passes]
        xdsl = sorted(name for name in self.passes if name not in TCONV_UNIVERSE.all_passes)
        print("tconv passes (`tconv-opt --help` describes them):")
        print(textwrap.fill(", ".join(tconv), 100, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False))
        print("xDSL passes:")
        print(textwrap.fill(", ".join(xdsl), 100, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False))
        parser.exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run tconv-opt on `argv` (default: the command line); return the exit status.

    This is also the in-process entry point the tests call."""
    try:
        with interrupts_unwind():
            TconvOptMain(args=argv).run()
    except (KeyboardInterrupt, Terminated) as err:
        print("tconv-opt: interrupted", file=sys.stderr)
        return interrupted_status(err)
    except TconvError as err:
        print(str(err).rstrip("\n"), file=sys.stderr)
        return 1
    except SystemExit as exit_:  # argparse: usage errors (2), --help, --version (0)
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    except Exception as err:
        # A crash below the command line (in xDSL, or a bug in tconv) is still
        # one message; TCONV_DEBUG=1 shows the traceback instead.
        if os.environ.get("TCONV_DEBUG"):
            raise
        print(f"tconv-opt: internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print("tconv-opt: note: this is a bug; rerun with TCONV_DEBUG=1 for the traceback and report it",
              file=sys.stderr)
        return INTERNAL_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
