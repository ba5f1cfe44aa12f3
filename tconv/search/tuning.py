"""Auto-tuning of convolution schedules by measurement, and the database
that keeps the results.

    database = TuningDatabase(default_database_path())
    tune(module, database, budget_s=60)          # measures, appends to the file
    apply_tuning(module, database)               # writes the best schedules into the IR

A *workload* is a convolution's shape and attributes (`Workload.key`):
identical layers of a network are one workload, tuned once. For each, the
search space is `Knobs`, one named candidate schedule (the TVM templates'
knobs, `tconv.kernels.templates`): for the direct template, channel
blocks (whole vectors, or divisors of a group's channels) × column tiles;
for grouped and depthwise convolutions also GSPC's channel blocks × row
tiles × column tiles (`tconv.kernels.blocking`), for kernels 5 wide and
more, both with the kernel-column loop rolled; Winograd (the schedule
`{algorithm = "winograd"}`, `WINOGRAD_KNOBS`) wherever this CPU has
Winograd kernels for the convolution; and, for 1×1 convolutions on small
images, no schedule at all (`UNSCHEDULED`: the positions kernel, which no
schedule asks for). Candidates are measured best-first by the
templates' issue-rate models (`blocking.tile_efficiency`,
`blocking.column_efficiency`), the backend's own default first, the
workloads in turns, until the budget is spent; so any
budget gives an answer no worse than the default, and more budget a better
one.

The database is a JSON-lines file, one measurement a line, keyed by workload
and target (`target_key`: the CPU, the thread count and the kernels'
version); the knobs are the fields `algorithm` ("direct", "gspc",
"winograd", "unscheduled"), `block` and `width_tile` (the tile's channels
and columns, 0 where there is none) and, where they are not the defaults,
`rows`, `unroll_kw` and `rows_first` (`Knobs.record`). Lines without an
`algorithm`, written before it, still read: `columns` 1 is GSPC, block and
width_tile 0 no schedule, else the direct template (`Knobs.from_legacy`). A line that is not a record (not JSON, a field
missing, of the wrong type or out of range, knobs no template has) is an
error located at its line and field, `db.jsonl:LINE:COL: error: ...`;
only a last line that is not JSON, a write cut short, is skipped. Knobs a
template cannot run for the workload their record names (a channel block
that does not divide a group's output channels, Winograd where this CPU has
no kernels for it) are never chosen (`Schedules.runs`).
Each line is appended as soon as it is measured, so a tuning run that stops
(budget, Ctrl-C) resumes where it was: measured candidates are not measured
again.
A measurement taken while something else loaded the machine is too slow
(never too fast), and the load of a shared machine changes from minute to
minute, so records of different moments compare badly. Where knobs were
measured more than once the fastest counts; and a tuning run re-measures
each workload's CONFIRM fastest knobs *side by side*
(`measure_side_by_side`: in turns, CONFIRM_PASSES times, so that a loaded
moment slows them all alike; the median of each), recorded as one *round*
(the lines share a `round` field). The latest round ranks its knobs by its
own times; knobs measured after it compete with those; knobs it left out
are out of the running (`TuningDatabase.ranking`). `tune` measures first
a recorded workload's first two candidates where they are not (the
backend's own, and Winograd: newer than the records), then confirms the
leaders it found recorded, then, after the other new candidates, those
they brought in. `tconv compile` applies to the convolutions that carry no
schedule of their own the knobs `TuningDatabase.chosen` picks for their
workload: the fastest in the running, or the models' choice within NOISE
of it.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tconv.errors import TconvError
from tconv.ir.ops import Conv2dOp
from tconv.ir.schedule import NCHW, ActivationLayouts, ConvSchedule, packed_layout, parse_schedule
from tconv.ir.syntax import int_attr
from tconv.kernels import blocking as kernel_blocking
from tconv.kernels.algorithm import (
    DIRECT,
    GSPC,
    SPARSE,
    WINOGRAD,
    ConvShape,
    conv_shape,
    default_algorithm,
    sparse_pays,
    winograd_tile,
)
from tconv.kernels.algorithm import default_blocking as algorithm_default_blocking
from tconv.kernels.blocking import ConvBlocking
from tconv.kernels.templates import template_blocking, template_schedule
from tconv.kernels.winograd import RegisterTile
from tconv.passes.classical.pack import layout_fits, shape_layout_fits, shape_packing
from tconv.search.progress import bar
from tconv.search.progress import done as end_progress
from tconv.search.progress import show as show_progress

TUNED_ALGORITHMS = (DIRECT, WINOGRAD, GSPC, SPARSE)
"""The algorithms knobs name; the sparse kernel only for a workload that
declares its nonzero weights (`Workload.nonzeros`, `tconv-sparsify`)."""

NCHW_ALGORITHMS = (WINOGRAD, GSPC, SPARSE)
"""Algorithms whose kernels read and write NCHW activations only."""

UNSCHEDULED_ALGORITHM = "unscheduled"
"""`Knobs.algorithm` of no schedule at all: the backend's own default."""

LEGACY_NAMES = ("block", "width_tile", "rows", "columns", "unroll_kw", "rows_first")
LEGACY_DEFAULTS = (1, 1, 1, 0, 1, 0)
"""The positional knobs of records written before `Knobs` named them: an
old database line's fields and an old kernel store's lists (see
`Knobs.from_legacy`)."""


@dataclass(frozen=True, order=True)
class Knobs:
    """One candidate schedule of a convolution, as the tuners measure and
    record it, for a CPU's templates and a GPU's direct kernel alike.

    `algorithm`: "direct", "gspc", "winograd" (its kernels take no other
    knob: the tile fields are 0), or UNSCHEDULED_ALGORITHM (no schedule:
    the backend's default, a candidate where no schedule can ask for it).
    `channels` × `columns`: the output channels and columns of the tile
    one set of accumulators covers: a CPU's register tile (the direct
    template's channel block and column tile, GSPC's channel block and
    column tile) or a GPU thread's tile. `rows`: output rows of a GSPC
    register tile. `unroll_kw`: whether the kernel-column loop is unrolled
    (CPU). `rows_first`: whether the direct template's parallel loops run
    output rows before channel blocks (CPU, one group).

    `schedule_of` and `CudaSchedules.schedule` map knobs to the IR's
    `ConvSchedule`, `knobs_of_schedule` back; `record` and `from_record`
    to and from a line of the tuning database."""

    algorithm: str = DIRECT
    channels: int = 1
    columns: int = 1
    rows: int = 1
    unroll_kw: bool = True
    rows_first: bool = False
    layout: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in (*TUNED_ALGORITHMS, UNSCHEDULED_ALGORITHM):
            raise ValueError(f"knobs: unknown algorithm {self.algorithm!r}")
        if self.layout and self.algorithm in NCHW_ALGORITHMS:
            raise ValueError(f"knobs: {self.algorithm} reads and writes NCHW, not channel blocks of {self.layout}")

    @property
    def tiled(self) -> bool:
        """Whether the knobs name a tile (direct or GSPC)."""
        return self.algorithm in (DIRECT, GSPC)

    def blocking(self) -> ConvBlocking:
        """The `ConvBlocking` of direct or GSPC knobs."""
        if not self.tiled:
            raise ValueError(f"knobs: {self.algorithm} has no blocking")
        return ConvBlocking(
            self.channels, self.columns, vector="ow" if self.algorithm == GSPC else "oc", rows=self.rows,
            unroll_kw=self.unroll_kw, rows_first=self.rows_first,
        )

    @classmethod
    def of_blocking(cls, blocking: ConvBlocking) -> Knobs:
        """The knobs of a `ConvBlocking` (the inverse of `blocking`)."""
        return cls(
            GSPC if blocking.vector == "ow" else DIRECT, blocking.block, blocking.width_tile, blocking.rows,
            blocking.unroll_kw, blocking.rows_first,
        )

    def record(self) -> dict[str, object]:
        """The knobs as fields of a database line: the algorithm, `block`
        and `width_tile` (channels and columns, 0 where there is no tile),
        and the other knobs where they are not the defaults."""
        fields: dict[str, object] = {"algorithm": self.algorithm, "block": self.channels, "width_tile": self.columns}
        if self.rows != 1:
            fields["rows"] = self.rows
        if not self.unroll_kw:
            fields["unroll_kw"] = 0
        if self.rows_first:
            fields["rows_first"] = 1
        if self.layout:
            fields["layout"] = self.layout
        return fields

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> Knobs:
        """The knobs of a database line (`record`'s fields, or, without an
        `algorithm`, a line written before it: `from_legacy`). A field of the
        wrong type or out of range is a `RecordError` naming it."""
        if "algorithm" not in record:
            return cls.from_legacy([
                _knob(record, name, None if index < 2 else default, low=0)
                for index, (name, default) in enumerate(zip(LEGACY_NAMES, LEGACY_DEFAULTS))
            ])
        algorithm = record["algorithm"]
        if algorithm not in (*TUNED_ALGORITHMS, UNSCHEDULED_ALGORITHM):
            raise RecordError(
                f"unknown algorithm {json.dumps(algorithm)} (expected one of "
                f"{', '.join((*TUNED_ALGORITHMS, UNSCHEDULED_ALGORITHM))})", "algorithm",
            )
        layout = _knob(record, "layout", 0, low=0)
        if layout and algorithm in NCHW_ALGORITHMS:
            raise RecordError(f"'layout' is a knob of the direct template and of no schedule: {algorithm}'s must be 0",
                              "layout")
        if algorithm not in (DIRECT, GSPC):  # no other knob: the record's tile fields say nothing
            for name in ("block", "width_tile"):
                _knob(record, name, None, low=0)
            return replace(UNSCHEDULED, layout=layout) if algorithm == UNSCHEDULED_ALGORITHM else FIXED_KNOBS[algorithm]
        knobs = cls(
            str(algorithm), _knob(record, "block", None), _knob(record, "width_tile", None),
            _knob(record, "rows", 1), bool(_knob(record, "unroll_kw", 1, low=0, high=1)),
            bool(_knob(record, "rows_first", 0, low=0, high=1)), layout,
        )
        if algorithm == DIRECT and knobs.rows != 1:
            raise RecordError("'rows' is a knob of gspc: the direct template's must be 1", "rows")
        if algorithm == GSPC and knobs.rows_first:
            raise RecordError("'rows_first' is a knob of the direct template: gspc's must be 0", "rows_first")
        return knobs

    @classmethod
    def from_legacy(cls, values) -> Knobs:
        """The knobs of positional values (block, width_tile, rows, columns,
        unroll_kw, rows_first), 2 to 6 of them, the rest at LEGACY_DEFAULTS:
        what databases and kernel stores held before `Knobs` (block and
        width_tile 0: no schedule; columns 1: GSPC)."""
        if not 2 <= len(values) <= len(LEGACY_NAMES):
            raise ValueError(f"knobs: expected 2 to {len(LEGACY_NAMES)} integers {LEGACY_NAMES}, got {values}")
        block, width_tile, rows, columns, unroll_kw, rows_first = (
            *(int(v) for v in values), *LEGACY_DEFAULTS[len(values):]
        )
        if block == 0 and width_tile == 0:
            return UNSCHEDULED
        for name, value in zip(LEGACY_NAMES, (block, width_tile, rows)):
            if not 1 <= value <= MAX_KNOB:
                raise RecordError(f"'{name}' must be an integer from 1 to {MAX_KNOB}, got {value}", name)
        return cls(GSPC if columns else DIRECT, block, width_tile, rows, bool(unroll_kw), bool(rows_first))

    def slots(self) -> tuple[int, ...]:
        """The knobs as seven integers, for models: channels, columns, rows,
        the algorithm (0 direct or none, 1 GSPC, 2 Winograd, 3 sparse),
        unroll_kw, rows_first, layout."""
        code = {GSPC: 1, WINOGRAD: 2, SPARSE: 3}.get(self.algorithm, 0)
        return (self.channels, self.columns, self.rows, code, int(self.unroll_kw), int(self.rows_first), self.layout)

    def describe(self) -> str:
        """In short: channels x columns for the direct template, "gspc"
        channels x rows x columns for GSPC, "winograd", "unscheduled"; "kw
        rolled" where the kernel-column loop is, "rows first" where the
        parallel loops take rows first; the layout where it is not NCHW
        ("NCHW16c")."""
        layout = f" NCHW{self.layout}c" if self.layout else ""
        if not self.tiled:
            return self.algorithm + layout
        text = f"gspc {self.channels}x{self.rows}x{self.columns}" if self.algorithm == GSPC else (
            f"{self.channels}x{self.columns}"
        )
        return text + ("" if self.unroll_kw else " kw rolled") + (" rows first" if self.rows_first else "") + layout


MAX_KNOB = 2**16
"""The largest tile size a record may name (channels, columns or rows of a
register tile; real ones are below 100)."""


class RecordError(ValueError):
    """A line of the tuning database that is not a record; `key` names the
    field at fault (None: the line as a whole)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


_MISSING = object()


def _knob(record: Mapping[str, object], name: str, default: int | None, low: int = 1, high: int = MAX_KNOB) -> int:
    """The integer field `name` of a record, `default` where it is absent
    (None: required), from `low` to `high` (false and true read as 0 and 1)."""
    value = record.get(name, _MISSING)
    if value is _MISSING:
        if default is None:
            raise RecordError(f"no '{name}'")
        return default
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int):
        raise RecordError(f"'{name}' must be an integer, got {json.dumps(value)[:40]}", name)
    if not low <= value <= high:
        raise RecordError(f"'{name}' must be an integer from {low} to {high}, got {str(value)[:40]}", name)
    return value


def _record_fields(record: object) -> tuple[tuple[str, str], Knobs, float, int | None]:
    """The (workload, target) key, knobs, seconds and round of a database
    line's JSON value; a `RecordError` where it is not a record."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__ if record is not None else 'null'}")
    key = []
    for name in ("workload", "target"):
        if name not in record:
            raise RecordError(f"no '{name}'")
        if not isinstance(record[name], str) or not record[name]:
            raise RecordError(f"'{name}' must be a non-empty string, got {json.dumps(record[name])[:40]}", name)
        key.append(record[name])
    knobs = Knobs.from_record(record)
    if "seconds" not in record:
        raise RecordError("no 'seconds'")
    seconds = record["seconds"]
    # An integer too large for a float compares below infinity yet cannot be converted.
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < sys.float_info.max:
        raise RecordError(f"'seconds' must be a positive number, got {json.dumps(seconds)[:40]}", "seconds")
    round_id = record.get("round")
    if round_id is not None and (isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 0):
        raise RecordError(f"'round' must be a non-negative integer, got {json.dumps(round_id)[:40]}", "round")
    return (key[0], key[1]), knobs, float(seconds), round_id


UNSCHEDULED = Knobs(UNSCHEDULED_ALGORITHM, 0, 0)
"""Not knobs but their absence: the convolution left without a schedule,
as the backend runs it by default. A candidate only where that default is
one no schedule can ask for (`unscheduled_differs`)."""

WINOGRAD_KNOBS = Knobs(WINOGRAD, 0, 0)
"""Winograd's kernels, which take no other knob: the schedule `{algorithm = "winograd"}`."""

SPARSE_KNOBS = Knobs(SPARSE, 0, 0)
"""The sparse kernel, which takes no other knob: the schedule `{algorithm = "sparse"}`."""

FIXED_KNOBS = {WINOGRAD: WINOGRAD_KNOBS, SPARSE: SPARSE_KNOBS}
"""The knobs of each algorithm whose kernels take no knob: the schedule
names the algorithm alone."""


def direct(channels: int, columns: int, **knobs) -> Knobs:
    """Direct-template knobs of a `channels` × `columns` tile."""
    return Knobs(DIRECT, channels, columns, **knobs)


CONFIRM = 4
"""How many of a workload's fastest recorded knobs a tuning run re-measures (see `tune`)."""

NOISE = 0.05
"""How far apart two knobs' times in a round may be and still count as the
same (`TuningDatabase.chosen`): the spread of one kernel's medians between
rounds on this shared 2-core machine."""

CONFIRM_PASSES = 5
"""Measurements of each knobs in a side-by-side round (`measure_side_by_side`),
an odd number: the round keeps their median."""


def schedule_of(workload: Workload, knobs: Knobs) -> ConvSchedule | None:
    """The IR schedule that runs `workload` with `knobs` on a CPU: the
    template's full form for direct and GSPC knobs, `{algorithm =
    "winograd"}`, or None for UNSCHEDULED; with the activation layouts of
    knobs for channel blocks (`tuned_layouts`)."""
    if knobs.algorithm in FIXED_KNOBS:
        return ConvSchedule(algorithm=knobs.algorithm)
    layouts = tuned_layouts(workload, knobs.layout) if knobs.layout else None
    if knobs.algorithm == UNSCHEDULED_ALGORITHM:
        return None if layouts is None else ConvSchedule(layout=layouts)
    return replace(template_schedule(knobs.blocking(), workload.groups, workload.depthwise), layout=layouts)


def knobs_of_schedule(workload: Workload, schedule: ConvSchedule | None) -> Knobs:
    """The CPU knobs a schedule asks for (the inverse of `schedule_of`; a
    loop schedule's open knobs at the backend's defaults)."""
    layout = 0
    if schedule is not None and schedule.layouts.packed:
        layout = schedule.layouts.input_block or schedule.layouts.output_block
    if schedule is None or (schedule.algorithm is None and not schedule.transforms_loops):
        return replace(UNSCHEDULED, layout=layout)
    if schedule.algorithm in FIXED_KNOBS:
        return FIXED_KNOBS[schedule.algorithm]
    default = default_blocking(workload, schedule.algorithm, layout)
    return replace(Knobs.of_blocking(template_blocking(
        schedule, workload.groups, workload.out_group, default, workload.depthwise
    )), layout=layout)


def tuned_layouts(workload: Workload, block: int) -> ActivationLayouts | None:
    """The activation layouts knobs for channel blocks of `block` are
    measured in (and applied with): each side that `tconv-pack` may store
    in blocks (`shape_packing`: an ungrouped convolution's input and output
    where `block` divides their channels, a depthwise one's both). None
    where neither can be (a grouped convolution, channels no block
    divides). `tconv-pack` decides a network's layouts from its neighbours
    as well: knobs measured packed on both sides may run a convolution that
    reads, say, a pooling's NCHW output."""
    packing = shape_packing(workload, ConvSchedule(), block)
    if packing.reason is not None:
        return None
    return ActivationLayouts(*(packed_layout(None if why else block) for why in (packing.read, packing.write)))


def unscheduled_differs(workload: Workload, layout_block: int | None = None) -> bool:
    """Whether the backend runs `workload` without a schedule in a way no
    schedule can ask for: a pointwise convolution on an image small enough
    that it tiles the flattened positions (`blocking.runs_pointwise`; a
    schedule tiles rows), faster than any row tiling on 256 channels at
    14×14 (docs/benchmarks.md, Measurements behind the schedules);
    `layout_block`: its output stored in channel blocks of that size.
    (Winograd, the other default of its own, a schedule asks for:
    `WINOGRAD_KNOBS`.)"""
    return not workload.depthwise and kernel_blocking.runs_pointwise(
        workload.kernel, workload.strides, workload.padding, workload.groups, workload.out_group,
        workload.out_height, workload.out_width, cpu_unit(), layout_block,
    )


def runs_winograd(workload: Workload) -> bool:
    """Whether this CPU's lowering runs `workload` as a Winograd convolution
    where it has no schedule (`algorithm.default_algorithm`)."""
    return default_algorithm(workload, cpu_unit()) == WINOGRAD


def default_database_path() -> Path:
    """`$TCONV_TUNING_DB`, else `tuning.jsonl` in the tconv cache directory."""
    if os.environ.get("TCONV_TUNING_DB"):
        return Path(os.environ["TCONV_TUNING_DB"])
    from tconv.runtime.driver import cache_dir

    return cache_dir() / "tuning.jsonl"


@dataclass(frozen=True)
class Workload(ConvShape):
    """What a convolution kernel computes, as far as its speed goes: its
    shape and, for pruned weights, the `nonzeros` it declares (the sparse
    kernel's size; None: dense), named by `key` in the tuning database."""

    nonzeros: int | None = None

    @property
    def key(self) -> str:
        n, c, h, w = self.input
        sparse = "" if self.nonzeros is None else f" nz{self.nonzeros}"
        return (
            f"conv2d n{n} c{c} h{h} w{w} o{self.out_channels} k{self.kernel[0]}x{self.kernel[1]} "
            f"s{'x'.join(map(str, self.strides))} p{','.join(map(str, self.padding))} "
            f"d{'x'.join(map(str, self.dilations))} g{self.groups}{sparse}"
        )

    @property
    def flops(self) -> int:
        n, c, _, _ = self.input
        return 2 * n * self.out_channels * self.out_height * self.out_width * (c // self.groups) * self.kernel[0] * self.kernel[1]


def dense_twin(workload: Workload) -> Workload | None:
    """The unpruned workload of one that declares `nonzeros` (None for a
    dense one): its dense kernels are the pruned one's, as fast on zeros."""
    return None if workload.nonzeros is None else replace(workload, nonzeros=None)


def workload_of(conv: Conv2dOp) -> Workload:
    return Workload(**vars(conv_shape(conv)), nonzeros=conv.weight_nonzeros)


def default_threads() -> int:
    """The threads kernels are compiled for: `$TVM_NUM_THREADS`, else the CPUs this process may use."""
    threads = os.environ.get("TVM_NUM_THREADS", "")
    return int(threads) if threads.isdigit() and int(threads) > 0 else len(os.sched_getaffinity(0))


KERNELS = 3
"""The version of the CPU kernels that knobs name, part of every CPU target
key: bumped when a template changes the kernel given knobs build (2: the
pointwise kernel's default tile, which `UNSCHEDULED` names; 3: the GSPC
depthwise tile on the stack), so that the records of the old kernels stop
counting rather than rank the new ones."""


def target_key(threads: int, layout: int = 0) -> str:
    """The database's key of this CPU on `threads` threads; `layout`: tuned
    for activations in channel blocks of `layout` (`CpuSchedules.layout`),
    a target of its own, as its knobs compete among themselves."""
    from tconv.lowering.tvm.target import host_cpu

    blocks = f" layout=NCHW{layout}c" if layout else ""
    return f"llvm -mcpu={host_cpu()} threads={threads} kernels={KERNELS}{blocks}"


class Schedules(Protocol):
    """What a tuning run measures and records: a target's knobs of each
    workload, as IR schedules, under the target's key."""

    @property
    def target(self) -> str:
        """The tuning database's key of the target."""
        ...

    def tunes(self, workload: Workload) -> bool:
        """Whether the workload's kernel has knobs."""
        ...

    def candidates(self, workload: Workload) -> list[Knobs]:
        """The knobs to measure, the backend's default first."""
        ...

    def schedule(self, workload: Workload, knobs: Knobs) -> ConvSchedule | None:
        """The IR schedule that asks for `knobs` (None: no schedule)."""
        ...

    def runs(self, workload: Workload, knobs: Knobs) -> bool:
        """Whether the backend can run `workload` with `knobs` (a database
        record may name knobs of another workload's shape, or of none)."""
        ...


@dataclass(frozen=True)
class CpuSchedules:
    """What tuning for this CPU on `threads` threads measures: the TVM CPU
    templates' knobs of every workload (`candidates`), as IR schedules
    (`schedule_of`), recorded under `target_key`. With `layout` (a channel
    block: `tconv compile --layout auto`'s vector), the knobs of the
    activations in blocks where a workload can be packed, and Winograd,
    under a target of their own: a round of NCHW knobs would otherwise put
    the knobs for blocks out of the running, and the other way round.
    `tconv.search.cuda_tuning` has the same for the TVM backend's CUDA
    kernels."""

    threads: int
    layout: int = 0

    @property
    def target(self) -> str:
        return target_key(self.threads, self.layout)

    def tunes(self, workload: Workload) -> bool:
        return True

    def candidates(self, workload: Workload) -> list[Knobs]:
        return candidates(workload, self.layout)

    def schedule(self, workload: Workload, knobs: Knobs) -> ConvSchedule | None:
        return schedule_of(workload, knobs)

    def runs(self, workload: Workload, knobs: Knobs) -> bool:
        if knobs.layout and (knobs.layout != self.layout or tuned_layouts(workload, knobs.layout) is None):
            return False
        if knobs.algorithm == UNSCHEDULED_ALGORITHM:
            return True
        if knobs.algorithm == WINOGRAD:
            return runs_winograd_kernels(workload)
        if knobs.algorithm == SPARSE:
            return workload.nonzeros is not None
        schedule = schedule_of(workload, knobs)
        try:
            template_blocking(
                schedule, workload.groups, workload.out_group, default_blocking(workload, layout=knobs.layout),
                workload.depthwise,
            )
        except ValueError:  # an UnsupportedSchedule, or knobs no blocking has
            return False
        return not knobs.layout or fits_layouts(workload, knobs)


def fits_layouts(workload: Workload, knobs: Knobs) -> bool:
    """Whether knobs for channel blocks keep their `tuned_layouts`
    (`pack.shape_layout_fits`: a depthwise vector of the block, an
    ungrouped channel block a multiple of a packed output's block that
    divides its channels)."""
    return shape_layout_fits(workload, schedule_of(workload, knobs), tuned_layouts(workload, knobs.layout))


def tunable_workloads(module: ModuleOp, schedules: Schedules) -> list[Workload]:
    """The distinct workloads of `module`'s tunable convolutions that
    `schedules` has knobs for, in program order (identical layers once)."""
    workloads = {w.key: w for w in map(workload_of, tunable_convs(module))}
    return [w for w in workloads.values() if schedules.tunes(w)]


def tunable_convs(module: ModuleOp) -> list[Conv2dOp]:
    """Convolutions the templates tune: those without a loop schedule or an
    algorithm of their own (a `layout` alone, from `tconv-pack`, leaves the
    loops open)."""
    def open_(op: Conv2dOp) -> bool:
        if op.schedule is None:
            return True
        schedule = parse_schedule(op.schedule)
        return not schedule.transforms_loops and schedule.algorithm is None

    return [op for op in module.walk() if isinstance(op, Conv2dOp) and open_(op)]


@dataclass
class Round:
    """A workload's knobs measured side by side (see the module docstring)."""

    id: int
    start: int
    """The database's measurement count when the round was recorded: later measurements compete with it."""
    seconds: dict[Knobs, float]


class TuningDatabase:
    """Measurements in a JSON-lines file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records: dict[tuple[str, str], dict[Knobs, float]] = {}
        self.rounds: dict[tuple[str, str], Round] = {}
        """The latest side-by-side round of each (workload, target)."""
        self._count = 0
        self._last: dict[tuple[str, str], dict[Knobs, int]] = {}
        """When (the measurement count) each knobs were last measured."""
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            lines = self.path.read_bytes().split(b"\n")  # lines as editors count them: \r is no line end
            if lines[-1] == b"":
                lines.pop()
        except OSError as err:
            raise TconvError(f"error: cannot read the tuning database {self.path}: {err.strerror}") from None
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if number == len(lines):
                    continue  # a line cut short, maybe inside a character
                raise TconvError(
                    f"{self.path}:{number}:{err.start + 1}: error: the tuning database is not UTF-8 text "
                    f"(byte 0x{raw[err.start]:02x})"
                ) from None
            try:
                record = json.loads(line)
            except ValueError as err:
                if number == len(lines):
                    continue  # a line cut short by an interrupted run
                column = err.colno if isinstance(err, json.JSONDecodeError) else 1
                raise TconvError(
                    f"{self.path}:{number}:{column}: error: not a tuning record: {getattr(err, 'msg', err)}"
                ) from None
            try:
                key, knobs, seconds, round_id = _record_fields(record)
            except RecordError as err:
                at = line.find(json.dumps(err.key)) if err.key is not None else -1
                column = at + 1 if at >= 0 else 1
                raise TconvError(f"{self.path}:{number}:{column}: error: not a tuning record: {err}") from None
            self._keep(key, knobs, seconds, round_id)

    def _keep(self, key: tuple[str, str], knobs: Knobs, seconds: float, round_id: int | None = None) -> None:
        """Record a measurement; of several of the same knobs the fastest
        counts, and of a round's, the fastest within the round."""
        measured = self.records.setdefault(key, {})
        measured[knobs] = min(seconds, measured.get(knobs, seconds))
        self._count += 1
        self._last.setdefault(key, {})[knobs] = self._count
        if round_id is not None:
            latest = self.rounds.get(key)
            if latest is None or round_id > latest.id:
                self.rounds[key] = latest = Round(round_id, self._count, {})
            if round_id == latest.id:
                latest.seconds[knobs] = min(seconds, latest.seconds.get(knobs, seconds))

    @property
    def version(self) -> int:
        """How many measurements it holds: the schedules it chooses can change only when this does."""
        return self._count

    def measured(self, workload: Workload, target: str) -> dict[Knobs, float]:
        """Seconds by knobs measured for `workload` on `target`, the fastest
        measurement of each; for pruned weights (`Workload.nonzeros`) also
        the dense knobs of the unpruned workload (`dense_twin`), which run
        the same kernels, where the pruned one has no record of them."""
        twin = dense_twin(workload)
        own = self.records.get((workload.key, target), {})
        return {**self.records.get((twin.key, target), {}), **own} if twin else own

    def _running(self, workload: Workload, target: str) -> tuple[dict[Knobs, float], dict[Knobs, float]]:
        """The knobs in the running (those of the latest round at its times,
        and knobs measured after it at their own; without a round, all at
        their fastest) and those out of it; a pruned workload's own ahead of
        its `dense_twin`'s."""
        twin = dense_twin(workload)
        running, out = self._running_of(workload.key, target)
        if twin is None:
            return running, out
        twin_running, twin_out = self._running_of(twin.key, target)
        running = {**{k: s for k, s in twin_running.items() if k not in out}, **running}
        return running, {**{k: s for k, s in twin_out.items() if k not in running}, **out}

    def _running_of(self, workload_key: str, target: str) -> tuple[dict[Knobs, float], dict[Knobs, float]]:
        key = (workload_key, target)
        measured = self.records.get(key, {})
        latest = self.rounds.get(key)
        if latest is None:
            return dict(measured), {}
        running = dict(latest.seconds)
        last = self._last.get(key, {})
        running.update((k, s) for k, s in measured.items() if k not in running and last.get(k, 0) > latest.start)
        return running, {k: s for k, s in measured.items() if k not in running}

    def ranking(self, workload: Workload, target: str) -> list[tuple[Knobs, float]]:
        """The knobs measured for `workload` on `target` with their seconds,
        fastest first, those in the running ahead of the others (see the
        module docstring)."""
        running, out = self._running(workload, target)
        return sorted(running.items(), key=lambda item: item[1]) + sorted(out.items(), key=lambda item: item[1])

    def best(self, workload: Workload, target: str) -> tuple[Knobs, float] | None:
        ranking = self.ranking(workload, target)
        return ranking[0] if ranking else None

    def chosen(self, workload: Workload, schedules: Schedules) -> tuple[Knobs, float] | None:
        """The knobs to run `workload` with: of those in the running within
        NOISE of the fastest, the first in the candidates' order (the
        backend's default, then by its models). Measurement decides where it
        can tell knobs apart, the model where it cannot: 512 channels at 7²
        ran 8×7 rows first and channel blocks first level in TVM's runtime,
        rows first slower in the C runtime's (docs/benchmarks.md,
        Measurements behind the schedules); the model puts channel blocks
        first there, as rows first reads the 9 MB of weights once per row.
        `UNSCHEDULED` counts only where it is a candidate: measured where
        the backend ran the workload as Winograd, it names the direct
        default once the backend no longer does."""
        candidates = schedules.candidates(workload)
        running = {
            k: s for k, s in self._running(workload, schedules.target)[0].items()
            if (k != UNSCHEDULED or k in candidates) and schedules.runs(workload, k)
        }
        if not running:
            return None
        fastest = min(running.values())
        order = {k: i for i, k in enumerate(candidates)}
        near = [(k, s) for k, s in running.items() if s <= fastest * (1 + NOISE)]
        return min(near, key=lambda item: (order.get(item[0], len(order)), item[1]))

    def leaders(self, workload: Workload, target: str) -> list[Knobs]:
        """The first CONFIRM knobs of `ranking`."""
        return [knobs for knobs, _ in self.ranking(workload, target)[:CONFIRM]]

    def add(self, workload: Workload, target: str, knobs: Knobs, seconds: float) -> None:
        self._append(workload, target, [(knobs, seconds)])

    def add_round(self, workload: Workload, target: str, seconds: dict[Knobs, float]) -> None:
        """Record knobs measured side by side (`measure_side_by_side`) as the workload's latest round."""
        latest = self.rounds.get((workload.key, target))
        round_id = max(time.time_ns(), latest.id + 1 if latest else 0)
        self._append(workload, target, list(seconds.items()), round_id)

    def _append(self, workload: Workload, target: str, measurements, round_id: int | None = None) -> None:
        lines = []
        for knobs, seconds in measurements:
            self._keep((workload.key, target), knobs, seconds, round_id)
            record: dict[str, object] = {"workload": workload.key, "target": target, **knobs.record()}
            record["seconds"] = seconds
            if round_id is not None:
                record["round"] = round_id
            lines.append(json.dumps(record) + "\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as file:
            file.write("".join(lines))  # one write: a round's lines stay together


def cpu_unit():
    """This CPU's vector unit, as the TVM backend sees it."""
    from tconv.lowering.tvm.target import cpu_target, vector_unit

    return vector_unit(cpu_target())


def default_blocking(workload: Workload, algorithm: str | None = None, layout: int = 0) -> ConvBlocking:
    """The blocking the backend gives `workload` without a loop schedule
    (where it runs direct or GSPC; `algorithm`: where it is asked for one;
    `layout`: with its activations in channel blocks, `tuned_layouts`)."""
    layouts = tuned_layouts(workload, layout) if layout else None
    return algorithm_default_blocking(workload, cpu_unit(), algorithm, layouts)


def runs_winograd_kernels(workload: Workload) -> bool:
    """Whether this CPU has Winograd kernels for `workload` (it applies, and
    a vector divides a group's output channels): where the tuner tries it."""
    return isinstance(winograd_tile(workload, cpu_unit(), default=False), RegisterTile)


def candidates(workload: Workload, layout: int = 0) -> list[Knobs]:
    """The templates' knobs for `workload` (full, see `Knobs`), the backend's
    default first, then best-first by the templates' issue-rate models.

    Direct template: channel blocks (whole vectors with one group, divisors
    of a group's channels with several, a vector of channels for depthwise)
    × column tiles up to 16. GSPC, for grouped and depthwise convolutions:
    `blocking.gspc_candidates`. Kernels 5 or more columns wide also
    try each with the kernel-column loop rolled; ungrouped convolutions try
    each direct tiling with both orders of the parallel loops, the backend's
    (`blocking.runs_rows_first`) first.

    `layout`: where `tuned_layouts` packs the workload in channel blocks of
    `layout`, the knobs of the direct template with its activations so
    (a depthwise one's vector the block, an ungrouped one's channel block a
    multiple of its output's block that divides its channels) and Winograd
    (NCHW), as `tconv compile --layout auto` runs them; else the NCHW knobs.
    A workload that declares `nonzeros` also measures the sparse kernel:
    first where the backend runs it by default (`algorithm.sparse_pays`),
    else second: measured against the dense kernels, not assumed."""
    from tconv.lowering.tvm.target import cpu_target, vector_unit

    layouts = tuned_layouts(workload, layout) if layout else None
    if layouts is None:
        layout = 0
    unit = vector_unit(cpu_target())
    lanes = unit.lanes
    out_group, out_height, out_width = workload.out_group, workload.out_height, workload.out_width
    out_block = layouts.output_block if layouts is not None else None
    if workload.depthwise:
        blocks = {layout or min(lanes, workload.out_channels)}
    elif workload.groups == 1:
        blocks = {lanes * k for k in range(1, 5) if lanes * (k - 1) < out_group}
    else:
        blocks = {b for b in range(1, min(out_group, 4 * lanes) + 1) if out_group % b == 0}
    space = [ConvBlocking(b, t) for b in sorted(blocks) for t in range(1, min(out_width, 16) + 1)]
    if workload.groups > 1 and not layout:
        space += kernel_blocking.gspc_candidates(out_group, out_height, out_width, unit)
    if workload.kernel[1] >= 5:
        space += [replace(b, unroll_kw=False) for b in space]
    default = default_blocking(workload, layout=layout)
    if workload.groups == 1 and not workload.depthwise:
        space = [replace(b, rows_first=default.rows_first) for b in space]
        space += [replace(b, rows_first=not default.rows_first) for b in space]

    def model(b: ConvBlocking) -> float:
        if b.vector == "ow":
            return kernel_blocking.column_efficiency(
                b.block, b.rows, b.width_tile, out_group, out_height, out_width, workload.kernel, lanes,
                in_group=workload.input[1] // workload.groups,
            )
        channels = b.block if workload.depthwise else out_group
        return kernel_blocking.tile_efficiency(b.block, b.width_tile, channels, out_width, lanes)

    ranked = sorted(space, key=lambda b: (
        -round(model(b), 3), -b.block * b.rows * b.width_tile, not b.unroll_kw, b.rows_first != default.rows_first,
    ))
    first = replace(Knobs.of_blocking(default), layout=layout)
    if workload.nonzeros is not None:  # the sparse kernel, first where it is the backend's default
        first, sparse = (SPARSE_KNOBS, [first]) if sparse_pays(workload, workload.nonzeros) else (first, [SPARSE_KNOBS])
    else:
        sparse = []
    winograd = [WINOGRAD_KNOBS] if runs_winograd_kernels(workload) else []
    unscheduled = [replace(UNSCHEDULED, layout=layout)] if unscheduled_differs(workload, out_block) else []
    ranked_knobs = dict.fromkeys(replace(Knobs.of_blocking(b), layout=layout) for b in ranked)
    return [first, *sparse, *winograd, *unscheduled] + [
        k for k in ranked_knobs if k not in (first, *sparse) and (not layout or fits_layouts(workload, k))
    ]


def conv_network(workload: Workload, knobs: Knobs, schedules: Schedules | None = None) -> ModuleOp:
    """The network `measure` times: the workload's convolution, with
    `knobs` as its schedule (also what remote measurement builds); the
    schedule of `schedules` (default: the CPU templates'). Knobs for channel
    blocks need a packed input and a packed reader: a depthwise 1×1
    convolution before the convolution writes its input in blocks, one
    after it reads its output so (`measured_calls` leaves them out)."""
    from tconv.ir.builder import NetworkBuilder

    schedule = schedules.schedule(workload, knobs) if schedules else schedule_of(workload, knobs)
    layouts = schedule.layouts if schedule is not None else ActivationLayouts()
    channels, out_channels = workload.input[1], workload.out_channels
    b = NetworkBuilder("tune", workload.input)
    x = b.input
    if layouts.input_block:
        x = b.conv2d(x, channels, 1, groups=channels, name="enter")
    y = b.conv2d(
        x, out_channels, workload.kernel, stride=workload.strides, padding=workload.padding,
        dilation=workload.dilations, groups=workload.groups, name="conv",
    )
    if layouts.output_block:
        y = b.conv2d(y, out_channels, 1, groups=out_channels, name="leave")
    module = b.finish(y)
    convs = [op for op in module.walk() if isinstance(op, Conv2dOp)]  # in program order
    if layouts.input_block:
        enter = convs.pop(0)
        enter.properties["schedule"] = ConvSchedule(layout=ActivationLayouts(NCHW, layouts.input)).to_attr()
    if layouts.output_block:
        leave = convs.pop()
        leave.properties["schedule"] = ConvSchedule(layout=ActivationLayouts(layouts.output, NCHW)).to_attr()
    if schedule is not None:
        convs[0].properties["schedule"] = schedule.to_attr()
    if workload.nonzeros is not None:
        convs[0].properties["nonzeros"] = int_attr(workload.nonzeros)
    return module


def measurement_params(module: ModuleOp) -> dict[str, np.ndarray]:
    """Parameters to time `conv_network`'s kernels with: random, and a
    convolution that declares `nonzeros` keeps that many weights, at random
    places, in each output channel (as `tconv-sparsify` leaves them: the
    sparse kernel is sized by them, the dense kernels run on them alike)."""
    from tconv.ir.params import init_params

    params = init_params(module)
    rng = np.random.default_rng(0)
    for conv in module.walk():
        if isinstance(conv, Conv2dOp) and conv.weight_nonzeros is not None:
            name = conv.weight.owner.param_name
            rows = params[name].reshape(len(params[name]), -1)
            kept = np.argsort(rng.random(rows.shape), axis=1)[:, :conv.weight_nonzeros]
            mask = np.zeros(rows.shape, bool)
            np.put_along_axis(mask, kept, True, axis=1)
            params[name] = np.where(mask, rows, np.float32(0)).reshape(params[name].shape)
    return params


def measured_calls(calls: list, knobs: Knobs, workload: Workload) -> list:
    """The calls of `conv_network`'s program that run the workload's
    convolution (one, or a Winograd convolution's three), without those
    that pack its input and read its output."""
    layouts = tuned_layouts(workload, knobs.layout) if knobs.layout else ActivationLayouts()
    return calls[1 if layouts.input_block else 0:len(calls) - (1 if layouts.output_block else 0)]


def runs_per_repeat(once_s: float) -> int:
    """Runs per timed round for a kernel that took `once_s` once: about 50 ms, 1 to 100 runs."""
    return max(1, min(100, int(0.05 / max(once_s, 1e-6))))


@functools.lru_cache(maxsize=2 * CONFIRM)
def _timed_kernels(workload: Workload, knobs: Knobs):
    """The workload's kernels with `knobs` (one, or a Winograd convolution's
    three), built and run once (page faults, the thread pool's start): (the
    TVM module, [(symbol, arguments)] in call order). Kept for the next few
    calls: a round re-times the same CONFIRM kernels."""
    from tconv.lowering.tvm.build import TvmNetwork

    module = conv_network(workload, knobs)
    network = TvmNetwork(module)
    network.load_params(measurement_params(module))
    network.run(np.random.default_rng(0).standard_normal(workload.input, dtype=np.float32))
    calls = [(call.symbol, [network.tensors[i] for i in call.args]) for call in network.program.calls]
    for symbol, args in calls:
        network.kernels[symbol](*args)
    return network.runtime, measured_calls(calls, knobs, workload)


def measure(workload: Workload, knobs: Knobs, repeat: int = 5) -> float:
    """Seconds of one run of the workload's kernels with `knobs`: the fastest of
    `repeat` rounds of about 50 ms each, after a warm-up. On a shared machine
    other processes only ever add time, so the fastest round is the kernel's
    own speed; a median still carries their load. One kernel is timed by
    TVM's evaluator; several (Winograd's) in a loop from Python, whose
    calls (about a microsecond each) count against them."""
    import tvm

    runtime, calls = _timed_kernels(workload, knobs)
    kernels = [(runtime[symbol], args) for symbol, args in calls]

    def run() -> None:
        for kernel, args in kernels:
            kernel(*args)

    start = time.perf_counter()
    run()
    runs = runs_per_repeat(time.perf_counter() - start)
    if len(kernels) == 1:
        symbol, args = calls[0]
        timer = runtime.time_evaluator(symbol, tvm.cpu(), number=runs, repeat=repeat)
        return float(min(timer(*args).results))
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(runs):
            run()
        rounds.append((time.perf_counter() - start) / runs)
    return min(rounds)


def measure_side_by_side(
    workload: Workload,
    knobs: list[Knobs],
    measure_fn: Callable[[Workload, Knobs], float],
    passes: int = CONFIRM_PASSES,
    stop: Callable[[], bool] = lambda: False,
) -> dict[Knobs, float] | None:
    """Seconds of each of `knobs`, measured in turns (a b c a b c ...)
    `passes` times, the median of each: whatever loads the machine
    meanwhile loads them all alike. Where `stop()` says so first, the
    median of the whole passes so far, or None before the first is done.

    The median, where a single measurement takes the fastest: a pass's
    measurement is already the fastest of its rounds, so one loaded moment
    does not move it, and the median over passes tells a kernel that is
    fast only while the shared caches are quiet from one that stays fast
    (64ch 56² on 2 threads: channel blocks first is nearly as fast as rows
    first in its fastest passes, clearly slower in its median;
    docs/benchmarks.md, Measurements behind the schedules)."""
    seconds: dict[Knobs, list[float]] = {k: [] for k in knobs}
    for _ in range(passes):
        timed = {}
        for k in knobs:
            if stop():
                break
            timed[k] = measure_fn(workload, k)
        if len(timed) < len(knobs):
            break
        for k, s in timed.items():
            seconds[k].append(s)
    if not seconds[knobs[0]]:
        return None
    return {k: statistics.median(s) for k, s in seconds.items()}


def confirm_leaders(
    database: TuningDatabase,
    workload: Workload,
    target: str,
    measure_fn: Callable[[Workload, Knobs], float],
    stop: Callable[[], bool] = lambda: False,
    done: Callable[[list[Knobs]], bool] = lambda knobs: False,
) -> list[Knobs] | None:
    """Measure the workload's CONFIRM leaders side by side and record them
    as its latest round, unless there are fewer than two to compare or
    `done(leaders)` says they need no round; the knobs of the round
    recorded, or None (also where `stop()` cut it short before a pass)."""
    knobs = database.leaders(workload, target)
    if len(knobs) < 2 or done(knobs):
        return None
    seconds = measure_side_by_side(workload, knobs, measure_fn, stop=stop)
    if seconds is None:
        return None
    database.add_round(workload, target, seconds)
    return knobs


@dataclass
class TuningReport:
    workload: Workload
    default: float | None
    best: float
    knobs: Knobs
    measured: int


def _progress(done: int, total: int, started: float, budget_s: float) -> None:
    left = max(0.0, budget_s - (time.monotonic() - started))
    show_progress(f"tuning {bar(done / max(total, 1), 30)} {done}/{total} measurements, {left:4.0f} s left")


def tune(
    module: ModuleOp,
    database: TuningDatabase,
    budget_s: float,
    threads: int | None,
    progress: Callable[[int, int, float, float], None] | None = _progress,
    measure_fn: Callable[[Workload, Knobs], float] = measure,
    schedules: Schedules | None = None,
) -> list[TuningReport]:
    """Measure candidates of every tunable workload of `module` within
    `budget_s` seconds, the workloads in turns, recording each in
    `database`; before (those recorded) and after (those new), measure each
    workload's CONFIRM leaders side by side (see the module docstring).
    What is known of each workload afterwards. `schedules`: the knobs and
    target measured (default: this CPU's on `threads` threads)."""
    schedules = schedules or CpuSchedules(threads or default_threads())
    target = schedules.target
    workloads = tunable_workloads(module, schedules)
    queues = {w.key: [k for k in schedules.candidates(w) if k not in database.measured(w, target)] for w in workloads}
    started = time.monotonic()
    done = 0

    def out_of_time() -> bool:
        return time.monotonic() - started >= budget_s

    def tick(count: int = 1) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, total, started, budget_s)

    def confirm(workload: Workload) -> None:
        """A round of the workload's leaders, unless this run has measured them side by side."""
        knobs = confirm_leaders(
            database, workload, target, measure_fn, stop=out_of_time,
            done=lambda knobs: set(knobs) <= confirmed.get(workload.key, set()),
        )
        if knobs is not None:
            confirmed[workload.key] = set(knobs)
            tick(CONFIRM_PASSES * len(knobs))  # as planned, also where the budget cut it short

    confirmed: dict[str, set[Knobs]] = {}

    def round_size(count: int) -> int:
        return CONFIRM_PASSES * min(CONFIRM, count) if count >= 2 else 0

    # An estimate: the second rounds run only where the leaders changed.
    total = sum(
        len(queues[w.key]) + round_size(len(database.measured(w, target)))
        + (round_size(len(database.measured(w, target)) + len(queues[w.key])) if queues[w.key] else 0)
        for w in workloads
    )
    # A resumed run first measures each workload's first two candidates where
    # it has not (the backend's own choice, and Winograd where it runs one: a
    # kind of kernel newer than the records), then re-measures what it holds
    # as best (an old record may be stale), then measures the other new
    # candidates (round k the k-th of every workload: the best guesses of all
    # layers before the long tails of any one), then confirms the leaders
    # that the new candidates brought in.
    for workload in workloads:
        first = [k for k in schedules.candidates(workload)[:2] if k in queues[workload.key]]
        if database.measured(workload, target) and first:
            for knobs in first:
                if not out_of_time():
                    database.add(workload, target, knobs, measure_fn(workload, knobs))
                    tick()
            queues[workload.key] = [k for k in queues[workload.key] if k not in first]
    for workload in workloads:
        confirm(workload)
    for k in range(max((len(q) for q in queues.values()), default=0)):
        for workload in workloads:
            if k < len(queues[workload.key]) and not out_of_time():
                knobs = queues[workload.key][k]
                database.add(workload, target, knobs, measure_fn(workload, knobs))
                tick()
    for workload in workloads:
        confirm(workload)
    if progress:
        end_progress()
    reports = []
    for workload in workloads:
        best = database.chosen(workload, schedules)
        if best is not None:
            default = database.measured(workload, target).get(schedules.candidates(workload)[0])
            reports.append(TuningReport(workload, default, best[1], best[0], len(database.measured(workload, target))))
    return reports


def apply_tuning(
    module: ModuleOp, database: TuningDatabase, threads: int | None, schedules: Schedules | None = None,
) -> int:
    """Give every tunable convolution with a record in `database` the knobs
    `TuningDatabase.chosen` picks, as its schedule; how many convolutions
    got one. `schedules` as in `tune`: knobs for channel blocks (of
    `CpuSchedules.layout`) come with their `tuned_layouts`, a request that
    `tconv-pack` (`compile.plan_layouts`) settles with the neighbours."""
    schedules = schedules or CpuSchedules(threads or default_threads())
    applied = 0
    for conv in tunable_convs(module):
        workload = workload_of(conv)
        best = database.chosen(workload, schedules) if schedules.tunes(workload) else None
        if best is not None:
            # The knobs replace the loop schedule; where the activations are
            # stored (`tconv-pack`) was agreed with the neighbours and stays,
            # so knobs that cannot keep it are not applied.
            previous = conv.schedule
            layout = parse_schedule(previous).layout if previous is not None else None
            schedule = schedules.schedule(workload, best[0])
            if schedule is None:  # the backend's default is best: the conv stays as it is
                applied += 1
                continue
            if layout is not None and schedule.algorithm is not None:
                continue  # Winograd reads and writes NCHW: the packed layout stays, with the template's default
            conv.properties["schedule"] = replace(schedule, layout=layout or schedule.layout).to_attr()
            if layout is not None and not layout_fits(conv, layout):
                conv.properties["schedule"] = previous
                continue
            applied += 1
    return applied


def describe_knobs(knobs: Knobs) -> str:
    """Knobs in short (`Knobs.describe`)."""
    return knobs.describe()


def format_reports(reports: list[TuningReport]) -> str:
    lines = [f"{'workload':64} {'GFLOP/s default':>15} {'GFLOP/s tuned':>13} {'speedup':>7} {'knobs':>24} {'tried':>5}"]
    for r in reports:
        default = f"{r.workload.flops / r.default / 1e9:15.1f}" if r.default else f"{'-':>15}"
        speedup = f"{r.default / r.best:7.2f}" if r.default else f"{'-':>7}"
        knobs = describe_knobs(r.knobs)
        tuned = r.workload.flops / r.best / 1e9
        lines.append(f"{r.workload.key:64} {default} {tuned:13.1f} {speedup} {knobs:>24} {r.measured:5d}")
    return "\n".join(lines) + "\n"

