"""The loop view of a convolution: its loop nest as a program, schedule applied.

    for n in range(1):                          # parallel
      for g in range(4):                        # parallel
        for oc in range(16):
          ...
                y[n, 16·g + oc, oh, ow] += x[n, 8·g + ic, oh + kh − 1, ow + kw − 1] · w[16·g + oc, ic, kh, kw]

This is the program-transformation view of both kinds of rewrite: a NAS
rewrite changes the nest (grouping splits the input-channel loop into `g`
and a shorter `ic`; bottlenecking shrinks `oc`), a schedule rewrite
reorganises it (tiles, order, vector, unrolled and parallel loops).
`tconv explain` prints it for every convolution of a network.
"""

from __future__ import annotations

import math

from tconv.ir.ops import Conv2dOp, shape_of
from tconv.ir.schedule import LOOPS, ConvSchedule, loop_name, parse_schedule


def loop_extents(conv: Conv2dOp) -> dict[str, int]:
    """The extent of each loop of the untransformed nest."""
    n, channels, _, _ = shape_of(conv.input)
    out_channels, _, kh, kw = shape_of(conv.weight)
    _, _, out_h, out_w = shape_of(conv.output)
    groups = conv.groups.value.data
    return dict(n=n, g=groups, oc=out_channels // groups, oh=out_h, ow=out_w, ic=channels // groups, kh=kh, kw=kw)


def _index(loop: str, schedule: ConvSchedule) -> str:
    """The original loop's index in terms of its tiled loops (`oc.0·8 + oc.1`)."""
    factors = schedule.tiles.get(loop, ())
    if not factors:
        return loop
    terms = []
    for i in range(len(factors) + 1):
        stride = math.prod(factors[i:])
        terms.append(f"{loop}.{i}" if stride == 1 else f"{stride}·{loop}.{i}")
    return "(" + " + ".join(terms) + ")"


def _offset(scale: int, index: str) -> str:
    return index if scale == 1 else f"{scale}·{index}"


def _window(out: str, kernel: str, stride: int, dilation: int, pad: int) -> str:
    text = f"{_offset(stride, out)} + {_offset(dilation, kernel)}"
    return text + (f" − {pad}" if pad else "")


def loop_nest(conv: Conv2dOp, name: str = "y") -> str:
    """The convolution's loop nest, its schedule (if any) applied, as text."""
    schedule = parse_schedule(conv.schedule) if conv.schedule is not None else ConvSchedule()
    extents = loop_extents(conv)
    order = schedule.order or tuple(schedule.loops())
    lines = []
    for depth, loop in enumerate(order):
        base = loop_name(loop)
        factors = schedule.tiles.get(base, ())
        if loop == base:
            extent = extents[base]
        else:
            part = int(loop.split(".")[1])
            extent = math.ceil(extents[base] / math.prod(factors)) if part == 0 else factors[part - 1]
        notes = [
            label for label, hit in (
                ("parallel", loop in schedule.parallel), ("vectorized", loop == schedule.vectorize),
                ("unrolled", loop in schedule.unroll),
            ) if hit
        ]
        line = "  " * depth + f"for {loop} in range({extent}):"
        lines.append(line.ljust(44) + f"# {', '.join(notes)}" if notes else line)
    i = {loop: _index(loop, schedule) for loop in LOOPS}
    sh, sw = conv.strides.get_values()
    dh, dw = conv.dilations.get_values()
    top, left, _, _ = conv.padding.get_values()
    out_group, in_group = extents["oc"], extents["ic"]
    grouped = extents["g"] > 1
    oc = f"{out_group}·g + {i['oc']}" if grouped else i["oc"]
    ic = f"{in_group}·g + {i['ic']}" if grouped else i["ic"]
    row = _window(i["oh"], i["kh"], sh, dh, top)
    col = _window(i["ow"], i["kw"], sw, dw, left)
    body = (
        f"{name}[{i['n']}, {oc}, {i['oh']}, {i['ow']}] += "
        f"x[{i['n']}, {ic}, {row}, {col}] · w[{oc}, {i['ic']}, {i['kh']}, {i['kw']}]"
    )
    lines.append("  " * len(order) + body)
    return "\n".join(lines)
