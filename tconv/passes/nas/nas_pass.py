"""The base class of the NAS passes: options, selection, eligibility,
rewriting and the capacity check, in one `apply`.

A pass subclasses `NasPass` and says three things: which option values are
valid (`validate`), why a convolution cannot be rewritten (`ineligible`, None
when it can), and how to rewrite one (`rewrite`). `apply` does the rest:

1. select the convolutions (`layers`, see `select`);
2. for each, in program order: rewrite it, or skip it (refuse it, for an
   explicitly named layer); one remark on stderr per reason lists the skipped;
3. re-infer the result types downstream;
4. with `check-capacity`, measure the capacity before and after (the rewrite
   runs on a copy) and refuse the whole rewrite if too much is lost;
5. record in the store's provenance how the new weights started.

New weights start from the old ones (`init`, see `tconv.passes.nas.inherit`)
where the store's weights are trained or inherited, at their initial values
otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.utils.exceptions import PassFailedException

from tconv.ir.infer import refresh_result_types
from tconv.ir.loader import location_of
from tconv.ir.ops import Conv2dOp, ParamOp, shape_of
from tconv.ir.shapes import ShapeError
from tconv.passes.nas.legality import CapacityCheck
from tconv.passes.nas.params import ParamMaker, tagged
from tconv.passes.analyses.capacity import DEFAULT_METRIC
from tconv.passes.select import select_convs
from tconv.passes.nas.store import ParamStore, active_store


INITS = ("auto", "inherit", "random")
"""The values of the `init` option."""


@dataclass
class RewriteState:
    """What one application of a pass works with."""

    module: ModuleOp
    store: ParamStore
    maker: ParamMaker
    prepared: Any = None
    """Whatever the pass's `prepare` computed (the Fisher ranking, for pruning)."""
    inherit: bool = False
    """New weights start from the old ones (`tconv.passes.nas.inherit`)."""
    copy_exact: bool = True
    """Slices a rewrite keeps exactly (pruned or split channels) are copied;
    false only with `init=random`, where every new weight starts at its initial value."""


@dataclass(frozen=True)
class NasPass(ModulePass):
    """Options every NAS pass has (see the module docstring of `legality`)."""

    _: KW_ONLY
    layers: str = ""
    """Comma-separated layer names and patterns; empty: every convolution."""
    check_capacity: bool = False
    """Refuse the rewrite unless the network keeps `min-capacity` of its capacity."""
    min_capacity: float | int = 1.0
    """With `check-capacity`: the least ratio of capacity after to before."""
    metric: str = DEFAULT_METRIC
    """With `check-capacity`: the capacity metric, naswot, fisher or synflow."""
    batch: int = 8
    """Minibatch size of capacity measurements (and of pruning's ranking)."""
    seed: int = 0
    """Seed of that minibatch."""
    init: str = "auto"
    """How new weights start: `inherit` (from the old ones), `random` (their
    initial values), `auto` (inherit where the store's weights are trained)."""

    name: ClassVar[str]
    uses_param_store: ClassVar[bool] = True
    """`tconv-opt` gives the pipeline the input's store and writes the output's."""

    # What a pass defines ----------------------------------------------------

    def validate(self) -> None:
        """Raise (with `self.fail`) for option values the pass cannot use; called
        when the pass is made."""

    def prepare(self, state: RewriteState) -> Any:
        """Computed once per application, before any rewrite; kept as `state.prepared`."""
        return None

    def ineligible(self, conv: Conv2dOp, state: RewriteState) -> str | None:
        """Why `conv` cannot be rewritten, as a clause ("its kernel is 1x1"), or None."""
        raise NotImplementedError

    def rewrite(self, conv: Conv2dOp, state: RewriteState) -> None:
        raise NotImplementedError

    # The driver -------------------------------------------------------------

    def fail(self, message: str) -> PassFailedException:
        return PassFailedException(f"{self.name}: {message}")

    def capacity_check(self) -> CapacityCheck:
        return CapacityCheck(self.metric, self.min_capacity, self.batch, self.seed)

    def __post_init__(self) -> None:
        # Options are checked when the pass is made (a pipeline read), before any
        # input: `tconv-opt` reports a bad value as a usage error.
        self.capacity_check().validate(self.name)
        if self.init not in INITS:
            raise self.fail(f"init must be one of {', '.join(INITS)}, got '{self.init}'")
        self.validate()

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        check = self.capacity_check()
        store = active_store()
        store.check(op)
        target = op.clone() if self.check_capacity else op
        rewritten = self.rewrite_module(target, store)
        if self.check_capacity:
            data = check.data(op, self.name)
            before = check.value(op, store, data)
            after = check.value(target, store, data)
            check.require(before, after, self.name, rewritten)
            _move_body(target, op)
        self._record_init(store)

    def inherits(self, store: ParamStore) -> bool:
        """Whether new weights start from the old ones: the one place `init` is decided."""
        return self.init == "inherit" or (self.init == "auto" and store.trained)

    def _record_init(self, store: ParamStore) -> None:
        """A rewrite of trained weights leaves them `inherited`, the trained
        store's record (its data, epochs, accuracy) kept as `inherited_from`:
        it no longer describes these weights. `init` says how the new ones
        started (the last rewrite's)."""
        init = "inherit" if self.inherits(store) else "random"
        if store.provenance.get("weights") == "trained":
            store.provenance = {"weights": "inherited", "init": init, "inherited_from": store.provenance}
        elif store.trained or init == "inherit":
            store.provenance = {**store.provenance, "init": init}

    def rewrite_module(self, module: ModuleOp, store: ParamStore) -> list[str]:
        """Rewrite the selected, eligible convolutions of `module` in place;
        return their names."""
        selected = select_convs(module, self.layers, self.name)
        state = RewriteState(
            module, store, ParamMaker(module, store, Rewriter()),
            inherit=self.inherits(store), copy_exact=self.init != "random",
        )
        state.prepared = self.prepare(state)
        rewritten: list[str] = []
        skipped: dict[str, list[str]] = {}
        for choice in selected:
            reason = self.ineligible(choice.conv, state)
            if reason is not None:
                if choice.explicit:
                    where = location_of(choice.conv)
                    at = f" (the convolution at {where})" if where else ""
                    raise self.fail(f"cannot rewrite {choice.name}: {reason}{at}")
                skipped.setdefault(reason, []).append(choice.name)
                continue
            self.rewrite(choice.conv, state)
            rewritten.append(choice.name)
            # The next convolution's eligibility reads the shapes this rewrite changed.
            self._refresh_types(module)
        # One remark per reason: a ResNet skips a dozen convolutions for the same one.
        for reason, names in skipped.items():
            print(f"remark: {self.name}: skipped {', '.join(names)}: {reason}", file=sys.stderr)
        if not rewritten:
            what = f"selected by layers='{self.layers}'" if self.layers else "in the module"
            raise self.fail(f"no eligible convolution {what}")
        return rewritten

    def _refresh_types(self, module: ModuleOp) -> None:
        for function in module.walk():
            if isinstance(function, func.FuncOp) and not function.is_declaration:
                try:
                    refresh_result_types(function)
                except ShapeError as err:  # a bug in a pass: eligibility missed a consumer
                    raise self.fail(f"the rewrite broke a shape rule: {err}") from err


def _move_body(source: ModuleOp, destination: ModuleOp) -> None:
    """Replace the body of `destination` by the body of `source`."""
    old = destination.body.block
    new = source.body.detach_block(source.body.block)
    destination.body.insert_block_before(new, old)
    destination.body.detach_block(old)
    old.erase(safe_erase=False)


# Helpers the passes share ----------------------------------------------------


def weight_param(conv: Conv2dOp) -> ParamOp | None:
    owner = conv.weight.owner
    return owner if isinstance(owner, ParamOp) else None


def conv_geometry(conv: Conv2dOp) -> tuple[int, int, int, int, int]:
    """(input channels, output channels, kernel height, kernel width, groups)."""
    out_channels, _, kernel_h, kernel_w = shape_of(conv.weight)
    return shape_of(conv.input)[1], out_channels, kernel_h, kernel_w, conv.groups.value.data


def new_conv(
    like: Conv2dOp,
    input: SSAValue,
    weight: SSAValue,
    bias: SSAValue | None = None,
    *,
    groups: int = 1,
    pointwise: bool = False,
) -> Conv2dOp:
    """A convolution with the geometry of `like` (strides, padding,
    dilations), or a stride-1 unpadded one for a pointwise (1x1) weight.
    The schedule is not kept: it was chosen for the old convolution."""
    if pointwise:
        return Conv2dOp(input, weight, bias, groups=groups)
    return Conv2dOp(
        input,
        weight,
        bias,
        strides=tuple(like.strides.get_values()),
        padding=tuple(like.padding.get_values()),
        dilations=tuple(like.dilations.get_values()),
        groups=groups,
    )


def weight_name(conv: Conv2dOp, tag: str) -> str:
    """The name of a new weight for `conv`, tagged with `tag`."""
    param = weight_param(conv)
    return tagged(param.param_name if param else "conv.weight", tag)


def bias_name(conv: Conv2dOp, tag: str) -> str:
    owner = conv.bias.owner if conv.bias is not None else None
    return tagged(owner.param_name if isinstance(owner, ParamOp) else "conv.bias", tag)


def moved_bias(conv: Conv2dOp, tag: str, state: RewriteState) -> SSAValue | None:
    """`conv`'s bias for the convolution that takes it over, under a new name
    (tagged with `tag`): the same values, unless `init=random`."""
    if conv.bias is None:
        return None
    old = conv.bias.owner
    known = isinstance(old, ParamOp)
    value = state.store.value_of(old) if known and state.copy_exact else None
    init = old.init.data if known else "zeros"
    return state.maker.new(conv, bias_name(conv, tag), shape_of(conv.bias), init, value)


def replace_conv(conv: Conv2dOp, result: SSAValue, state: RewriteState) -> None:
    """Let every user of `conv` read `result`; erase `conv` and its unused parameters."""
    conv.output.replace_all_uses_with(result)
    params = [o.owner for o in conv.operands if isinstance(o.owner, ParamOp)]
    Rewriter.erase_op(conv)
    for param in params:
        state.maker.erase_if_unused(param)
