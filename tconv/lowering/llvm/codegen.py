"""Scheduled loop nests → LLVM IR, built with llvmlite.

Each `KernelSource` becomes one function with the tvm-ffi calling convention
the C runtime calls (`tconv.kernels.program`):

    int32 __tvm_ffi_<symbol>(void *self, const TVMFFIAny *args, int32 num_args, TVMFFIAny *result)

every argument a `DLTensor*` (TVMFFIAny: 16 bytes, the pointer at byte 8;
DLTensor: `data` at byte 0, `byte_offset` at byte 40). A wrong argument count
returns -1 after reporting through `TVMFFIErrorSetRaisedFromCStrParts`, the
hook the runtime exports.

How each loop kind becomes code:

- `parallel` (an outermost prefix): the loops are fused into one range,
  split into contiguous chunks, one per task, in a closure launched through
  the runtime's pool: the library's global function pointer
  `__TVMBackendParallelLaunch` (set by the runtime when it loads the
  library; null elsewhere, and then the closure runs once, on the caller);
- `serial`: a counted loop; `unroll`: the body emitted once per iteration,
  the index a constant; `vector`: the innermost loop as the lanes of one
  LLVM vector. A load whose address moves by one element per lane is a
  vector load, by none a broadcast scalar, by any other stride one load per
  lane; stores likewise.
- The reduction: from the first reduction loop inward, the data-parallel
  loops that remain index an accumulator tile, in registers (an `alloca`
  that LLVM promotes once unrolling made its indices constant) when it holds
  at most `REGISTER_TILE_LIMIT` floats, else the output itself. The tile is
  initialised before the reduction and finalized (bias, residual,
  activation) and stored after it.
- Bounds: an index whose range (from the loop extents) can leave its
  dimension is checked; a load reads its `fill` there, a store is skipped
  (per lane, through masked loads and stores); a tiled loop's tail is
  checked the same way. The reduction region is emitted twice: without any
  check, run where a test at its entry proves every check holds across the
  whole region (the interior of a padded image, a full tile), and with them
  elsewhere. The innermost serial loop outside the region that a check
  depends on runs its first and last iterations apart, with a constant
  index, so that their checks (the image border, the last partial tile)
  fold at compile time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import llvmlite.ir as ir

from tconv.lowering.llvm.loops import (
    COMBINES,
    Acc,
    Affine,
    Binary,
    Const,
    Expr,
    Load,
    ScheduledLoop,
    ScheduledNest,
    WindowCount,
    loads,
)

REGISTER_TILE_LIMIT = 4096
"""The most floats an accumulator tile holds on the stack."""

F32 = ir.FloatType()
I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
FFI_TYPE = ir.FunctionType(I32, [PTR, PTR, I32, PTR])
CLOSURE_TYPE = ir.FunctionType(I32, [I32, PTR, PTR])
LAUNCH_TYPE = ir.FunctionType(I32, [PTR, PTR, I32])
ERROR_HOOK = "TVMFFIErrorSetRaisedFromCStrParts"
LAUNCH_POINTER = "__TVMBackendParallelLaunch"
SYMBOL_PREFIX = "__tvm_ffi_"
ANY_BYTES = 16
DLTENSOR_BYTE_OFFSET = 40


@dataclass(frozen=True)
class KernelSource:
    """One kernel: its nests, run in order, over arguments of `shapes` (the
    inputs, then the output, each dense row-major float32)."""

    symbol: str
    shapes: tuple[tuple[int, ...], ...]
    nests: tuple[ScheduledNest, ...]


class _Lane:
    """The index of the vectorized loop: one value per lane."""


LANE = _Lane()
Value = int | ir.Value
Env = dict[str, "Value | _Lane"]


def row_major_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides, stride = [], 1
    for extent in reversed(shape):
        strides.append(stride)
        stride *= extent
    return tuple(reversed(strides))


class ModuleBuilder:
    """The LLVM module of a kernel library: one function per kernel."""

    def __init__(self, name: str = "tconv_kernels") -> None:
        self.module = ir.Module(name)
        self._declared: dict[str, ir.Function] = {}
        self._launch: ir.GlobalVariable | None = None
        self._strings: dict[str, ir.GlobalVariable] = {}

    @property
    def launch(self) -> ir.GlobalVariable:
        """The pool's launch function pointer, which the runtime sets (defined on first use)."""
        if self._launch is None:
            self._launch = ir.GlobalVariable(self.module, PTR, LAUNCH_POINTER)
            self._launch.initializer = ir.Constant(PTR, None)
        return self._launch

    def declare(self, name: str, type_: ir.FunctionType) -> ir.Function:
        if name not in self._declared:
            self._declared[name] = ir.Function(self.module, type_, name)
        return self._declared[name]

    def string(self, text: str) -> ir.GlobalVariable:
        """A private constant C string."""
        if text not in self._strings:
            data = bytearray(text.encode() + b"\0")
            variable = ir.GlobalVariable(self.module, ir.ArrayType(I8, len(data)), f".str{len(self._strings)}")
            variable.linkage = "private"
            variable.global_constant = True
            variable.initializer = ir.Constant(ir.ArrayType(I8, len(data)), data)
            self._strings[text] = variable
        return self._strings[text]

    def add_kernel(self, kernel: KernelSource) -> None:
        KernelEmitter(self, kernel).emit()

    def text(self) -> str:
        return str(self.module)


class FunctionState:
    """One LLVM function being built: its builder, its entry block (where
    allocas go) and the argument data pointers."""

    def __init__(self, function: ir.Function) -> None:
        self.function = function
        self.entry = function.append_basic_block("entry")
        self.builder = ir.IRBuilder(self.entry)
        self.data: list[ir.Value] = []

    def alloca(self, type_: ir.Type) -> ir.Value:
        saved = self.builder.block
        entry_builder = ir.IRBuilder(self.entry)
        if self.entry.instructions:
            entry_builder.position_before(self.entry.instructions[0])
        value = entry_builder.alloca(type_)
        value.type = PTR  # an opaque pointer, like every other pointer here
        self.builder.position_at_end(saved)
        return value


class KernelEmitter:
    """Emits one kernel: its exported tvm-ffi function and the closures of
    its parallel nests."""

    def __init__(self, owner: ModuleBuilder, kernel: KernelSource) -> None:
        self.owner = owner
        self.kernel = kernel
        self.strides = [row_major_strides(shape) for shape in kernel.shapes]

    # The entry point ---------------------------------------------------------------

    def emit(self) -> None:
        kernel = self.kernel
        function = ir.Function(self.owner.module, FFI_TYPE, SYMBOL_PREFIX + kernel.symbol)
        state = FunctionState(function)
        b = state.builder
        args, num_args = function.args[1], function.args[2]
        wrong = b.icmp_signed("!=", num_args, ir.Constant(I32, len(kernel.shapes)))
        with b.if_then(wrong, likely=False):
            self._raise(b, f"{kernel.symbol}: expected {len(kernel.shapes)} tensor arguments")
            b.ret(ir.Constant(I32, -1))
        for index in range(len(kernel.shapes)):
            any_value = b.gep(args, [ir.Constant(I64, ANY_BYTES * index + 8)], source_etype=I8)
            tensor = b.load(any_value, typ=PTR)
            data = b.load(tensor, typ=PTR)
            offset_field = b.gep(tensor, [ir.Constant(I64, DLTENSOR_BYTE_OFFSET)], source_etype=I8)
            offset = b.load(offset_field, typ=I64)
            state.data.append(b.gep(data, [offset], source_etype=I8))
        for position, nest in enumerate(kernel.nests):
            parallel = [loop for loop in nest.loops if loop.kind == "parallel"]
            if parallel:
                status = self._launch(state, nest, position, len(parallel))
                failed = b.icmp_signed("!=", status, ir.Constant(I32, 0))
                with b.if_then(failed, likely=False):
                    b.ret(status)
            else:
                NestEmitter(self, state, nest).emit(0, {})
        b.ret(ir.Constant(I32, 0))

    def _raise(self, b: ir.IRBuilder, message: str) -> None:
        hook = self.owner.declare(ERROR_HOOK, ir.FunctionType(ir.VoidType(), [PTR, PTR, I32]))
        parts = b.alloca(PTR)
        b.store(self.owner.string(message), parts)
        b.call(hook, [self.owner.string("ValueError"), parts, ir.Constant(I32, 1)])

    def _launch(self, state: FunctionState, nest: ScheduledNest, position: int, prefix: int) -> ir.Value:
        """Run `nest` through the pool: a closure over its parallel loops,
        launched with the data pointers as its closure data."""
        b = state.builder
        closure = self._closure(nest, position, prefix)
        count = len(state.data)
        pointers = state.alloca(ir.ArrayType(PTR, count))
        for index, data in enumerate(state.data):
            b.store(data, b.gep(pointers, [ir.Constant(I64, index)], source_etype=PTR))
        # Loaded as a typed function pointer, which llvmlite calls through
        # (LLVM's parser reads the typed pointer as `ptr`).
        launch = b.load(self.owner.launch, typ=ir.PointerType(LAUNCH_TYPE))
        missing = b.icmp_unsigned("==", b.ptrtoint(launch, I64), ir.Constant(I64, 0))
        result = state.alloca(I32)
        with b.if_else(missing) as (inline, pooled):
            with inline:
                env_type = ir.LiteralStructType([PTR, I32])
                group = state.alloca(env_type)
                b.store(ir.Constant(env_type, [None, 1]), group)
                b.store(b.call(closure, [ir.Constant(I32, 0), group, pointers]), result)
            with pooled:
                b.store(b.call(launch, [closure, pointers, ir.Constant(I32, 0)]), result)
        return b.load(result, typ=I32)

    def _closure(self, nest: ScheduledNest, position: int, prefix: int) -> ir.Function:
        """`int closure(int task, TVMParallelGroupEnv *env, void *data)`: the
        task's contiguous share of the fused parallel loops, then the rest
        of the nest."""
        function = ir.Function(self.owner.module, CLOSURE_TYPE, f"{self.kernel.symbol}.nest{position}")
        function.linkage = "internal"
        state = FunctionState(function)
        b = state.builder
        task, group, pointers = function.args
        for index in range(len(self.kernel.shapes)):
            state.data.append(b.load(b.gep(pointers, [ir.Constant(I64, index)], source_etype=PTR), typ=PTR))
        num_task = b.load(b.gep(group, [ir.Constant(I64, 8)], source_etype=I8), typ=I32)
        parallel = nest.loops[:prefix]
        total = 1
        for loop in parallel:
            total *= loop.extent
        tasks = b.sext(num_task, I64)
        chunk = b.udiv(b.add(ir.Constant(I64, total), b.sub(tasks, ir.Constant(I64, 1))), tasks)
        begin = b.mul(b.sext(task, I64), chunk)
        end = b.add(begin, chunk)
        end = b.select(b.icmp_unsigned("<", end, ir.Constant(I64, total)), end, ir.Constant(I64, total))
        emitter = NestEmitter(self, state, nest)
        with emitter.counted(begin, end) as flat:
            env: Env = {}
            stride = total
            for loop in parallel:
                stride //= loop.extent
                env[loop.name] = b.urem(b.udiv(flat, ir.Constant(I64, stride)), ir.Constant(I64, loop.extent))
            emitter.emit(prefix, env)
        b.ret(ir.Constant(I32, 0))
        return function


class NestEmitter:
    """The code of one scheduled nest inside a function, from a given loop on."""

    def __init__(self, kernel: KernelEmitter, state: FunctionState, nest: ScheduledNest) -> None:
        self.kernel = kernel
        self.state = state
        self.b = state.builder
        self.nest = nest
        self.extents = nest.extents
        vector = nest.vector
        self.lanes = vector.extent if vector is not None else 0
        self.output = nest.nest.output
        self.output_index = nest.index(self.output.index)
        self.unchecked = False
        """Set while emitting a region proven in bounds: no check is emitted."""
        data_parallel_checks = [c for c in nest.checks if not c.reduction]
        self._store_conditions = self._bounds(self.output.arg, self.output_index) + [
            (c.index.substitute(nest.origin), "<", c.extent) for c in data_parallel_checks
        ]
        self._reduction_conditions = [
            (c.index.substitute(nest.origin), "<", c.extent) for c in nest.checks if c.reduction
        ]

    @property
    def store_conditions(self) -> list[tuple[Affine, str, int]]:
        return [] if self.unchecked else self._store_conditions

    @property
    def reduction_conditions(self) -> list[tuple[Affine, str, int]]:
        return [] if self.unchecked else self._reduction_conditions

    def region_checks(self) -> list[tuple[Affine, str, int]]:
        """Every check the nest's statement, finalization and store may emit."""
        nest = self.nest.nest
        checks = self._store_conditions + self._reduction_conditions
        for load in (*loads(nest.value), *loads(nest.finalize)):
            checks += self._bounds(load.arg, self.nest.index(load.index))
        return checks

    def in_bounds(self, checks: Sequence[tuple[Affine, str, int]], region: Sequence[ScheduledLoop], env: Env) -> ir.Value | None:
        """Whether every check holds at every point of the `region` loops,
        the loops outside it at `env`: each check at its worst case over the
        region. None where there is no check."""
        b = self.b
        extents = {loop.name: loop.extent for loop in region}
        parts = []
        for index, relation, bound in checks:
            outside = Affine(tuple((n, c) for n, c in index.terms if n not in extents), index.constant)
            inside = Affine(tuple((n, c) for n, c in index.terms if n in extents))
            low, high = inside.bounds(extents)
            value = self.scalar(outside + (low if relation == ">=" else high), env)
            if isinstance(value, int):
                if not ((value >= bound) if relation == ">=" else (value < bound)):
                    return ir.Constant(I1, 0)
                continue
            parts.append(b.icmp_signed(relation, value, ir.Constant(I64, bound)))
        return _all(b, parts)

    def versioned(self, region: Sequence[ScheduledLoop], env: Env, body: Callable[[], None]) -> None:
        """`body` twice: without checks where the whole region is in bounds at
        run time (the interior of a padded image, full tiles), with them elsewhere."""
        checks = self.region_checks()
        fast = self.in_bounds(checks, region, env) if checks else None
        if fast is None:
            self.unchecked = True
            body()
            self.unchecked = False
            return
        with self.b.if_else(fast, likely=True) as (interior, border):
            with interior:
                self.unchecked = True
                body()
                self.unchecked = False
            with border:
                body()

    # Loops ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def counted(self, begin: Value, end: Value) -> Iterator[ir.Value]:
        """A loop over [begin, end); the body is emitted in the `with` block."""
        b = self.b
        begin_value = _as_i64(begin)
        end_value = _as_i64(end)
        before = b.block
        header = b.append_basic_block("loop.header")
        body = b.append_basic_block("loop.body")
        exit_block = b.append_basic_block("loop.exit")
        b.branch(header)
        b.position_at_end(header)
        index = b.phi(I64)
        index.add_incoming(begin_value, before)
        b.cbranch(b.icmp_signed("<", index, end_value), body, exit_block)
        b.position_at_end(body)
        yield index
        following = b.add(index, ir.Constant(I64, 1))
        index.add_incoming(following, b.block)
        b.branch(header)
        b.position_at_end(exit_block)

    def iterate(self, loops: Sequence[ScheduledLoop], env: Env, body: Callable[[Env], None],
                peeled: frozenset[str] = frozenset()) -> None:
        """`body` at every point of `loops` (each by its kind). The serial
        loops in `peeled` run their first and last iterations apart, with a
        constant index, so that the checks at a border fold at compile time."""
        if not loops:
            body(env)
            return
        loop, rest = loops[0], loops[1:]
        if loop.kind == "vector":
            self.iterate(rest, {**env, loop.name: LANE}, body, peeled)
        elif loop.kind == "unroll" or loop.extent == 1:
            for value in range(loop.extent):
                self.iterate(rest, {**env, loop.name: value}, body, peeled)
        elif loop.name in peeled:
            self.iterate(rest, {**env, loop.name: 0}, body, peeled)
            if loop.extent > 2:
                with self.counted(1, loop.extent - 1) as index:
                    self.iterate(rest, {**env, loop.name: index}, body, peeled)
            self.iterate(rest, {**env, loop.name: loop.extent - 1}, body, peeled)
        else:
            with self.counted(0, loop.extent) as index:
                self.iterate(rest, {**env, loop.name: index}, body, peeled)

    def border_loops(self, loops: Sequence[ScheduledLoop]) -> frozenset[str]:
        """The innermost serial loop among `loops` that some check of the
        region depends on (peeling one loop keeps the code linear in size)."""
        names = {name for index, _, _ in self.region_checks() for name, _ in index.terms}
        candidates = [loop.name for loop in loops if loop.kind == "serial" and loop.name in names]
        return frozenset(candidates[-1:])

    def emit(self, start: int, env: Env) -> None:
        """The nest from loop `start` on, the loops before it bound in `env`."""
        loops = self.nest.loops
        first_reduction = next((i for i, loop in enumerate(loops) if loop.reduction), None)
        if first_reduction is None:
            self.iterate(loops[start:], env, lambda point: self.store(self.evaluate(self.nest.nest.value, point, None), point))
            return
        outer = loops[start:first_reduction]
        self.iterate(outer, env, lambda point: self.reduce(loops[first_reduction:], point), self.border_loops(outer))

    # The reduction ----------------------------------------------------------------------

    def reduce(self, loops: Sequence[ScheduledLoop], env: Env) -> None:
        """Initialise the accumulator tile, accumulate over `loops`, finalize and store."""
        nest = self.nest.nest
        assert nest.combine is not None
        identity = COMBINES[nest.combine]
        tile = [loop for loop in loops if not loop.reduction]
        scalar_tile = [loop for loop in tile if loop.kind != "vector"]
        elements = max(self.lanes, 1)
        for loop in scalar_tile:
            elements *= loop.extent
        element_type = ir.VectorType(F32, self.lanes) if self.lanes else F32
        registers = None
        if elements <= REGISTER_TILE_LIMIT:
            registers = self.state.alloca(ir.ArrayType(element_type, elements // max(self.lanes, 1)))

        def tile_slot(point: Env) -> ir.Value:
            index: Affine = Affine()
            stride = 1
            for loop in reversed(scalar_tile):
                index = index + Affine.of(loop.name) * stride
                stride *= loop.extent
            offset = self.scalar(index, point)
            return self.b.gep(registers, [_as_i64(offset)], source_etype=element_type)

        def read(point: Env) -> ir.Value:
            if registers is not None:
                return self.b.load(tile_slot(point), typ=element_type)
            return self.load(self.output, self.output_index, point, self.store_conditions, identity)

        def write(value: ir.Value, point: Env) -> None:
            if registers is not None:
                self.b.store(self.widen(value), tile_slot(point))
            else:
                self.store(value, point)

        def initialise(point: Env) -> None:
            write(ir.Constant(F32, identity), point)

        def accumulate(point: Env) -> None:
            accumulated = self.combine(nest.combine, nest.value, read(point), point)
            condition, _ = self.conditions(self.reduction_conditions, point, None)
            if condition is not None:
                accumulated = self.b.select(condition, accumulated, read(point))
            write(accumulated, point)

        def finalize(point: Env) -> None:
            self.store(self.evaluate(nest.finalize, point, read(point)), point)

        def region() -> None:
            self.iterate(tile, env, initialise)
            self.iterate(loops, env, accumulate)
            self.iterate(tile, env, finalize)

        self.versioned(loops, env, region)

    def combine(self, kind: str, value: Expr, acc: ir.Value, env: Env) -> ir.Value:
        b = self.b
        if kind == "sum" and isinstance(value, Binary) and value.op == "mul":
            lhs = self.evaluate(value.lhs, env, None)
            rhs = self.evaluate(value.rhs, env, None)
            return self.fmuladd(self.widen(lhs), self.widen(rhs), acc)
        term = self.widen(self.evaluate(value, env, None))
        if kind == "sum":
            return b.fadd(acc, term)
        return b.select(b.fcmp_ordered(">", term, acc), term, acc)

    def fmuladd(self, a: ir.Value, x: ir.Value, acc: ir.Value) -> ir.Value:
        type_ = acc.type
        suffix = f"v{self.lanes}f32" if isinstance(type_, ir.VectorType) else "f32"
        intrinsic = self.kernel.owner.declare(f"llvm.fmuladd.{suffix}", ir.FunctionType(type_, [type_] * 3))
        return self.b.call(intrinsic, [a, x, acc])

    # Values --------------------------------------------------------------------------------

    def widen(self, value: ir.Value) -> ir.Value:
        """A scalar broadcast to every lane (vectors and vector-free nests unchanged)."""
        if not self.lanes or isinstance(value.type, ir.VectorType):
            return value
        return self.splat(value, self.lanes)

    def splat(self, value: ir.Value, lanes: int) -> ir.Value:
        b = self.b
        vector_type = ir.VectorType(value.type, lanes)
        single = b.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(I32, 0))
        return b.shuffle_vector(single, ir.Constant(vector_type, ir.Undefined), ir.Constant(ir.VectorType(I32, lanes), [0] * lanes))

    def evaluate(self, expr: Expr, env: Env, acc: ir.Value | None) -> ir.Value:
        """`expr` at the point `env`: a float, or a vector of floats where it
        depends on the vectorized loop."""
        b = self.b
        if isinstance(expr, Const):
            return ir.Constant(F32, expr.value)
        if isinstance(expr, Acc):
            assert acc is not None, "Acc outside a finalize"
            return acc
        if isinstance(expr, Load):
            index = self.nest.index(expr.index)
            checks = [] if self.unchecked else self._bounds(expr.arg, index)
            return self.load(expr, index, env, checks, expr.fill)
        if isinstance(expr, WindowCount):
            return self.window_count(expr, env)
        if isinstance(expr, Binary):
            lhs, rhs = self.evaluate(expr.lhs, env, acc), self.evaluate(expr.rhs, env, acc)
            if isinstance(lhs.type, ir.VectorType) or isinstance(rhs.type, ir.VectorType):
                lhs, rhs = self.widen(lhs), self.widen(rhs)
            if expr.op == "add":
                return b.fadd(lhs, rhs)
            if expr.op == "sub":
                return b.fsub(lhs, rhs)
            if expr.op == "mul":
                return b.fmul(lhs, rhs)
            if expr.op == "div":
                return b.fdiv(lhs, rhs)
            if expr.op == "max":
                return b.select(b.fcmp_ordered(">", lhs, rhs), lhs, rhs)
            if expr.op == "min":
                return b.select(b.fcmp_ordered("<", lhs, rhs), lhs, rhs)
            raise ValueError(f"codegen: unknown binary op '{expr.op}'")
        raise TypeError(f"codegen: not an expression: {expr!r}")

    def window_count(self, expr: WindowCount, env: Env) -> ir.Value:
        b = self.b
        (start,) = self.nest.index((expr.start,))
        first, lane = self.split(start, env)
        first_value = _as_i64(first)
        if lane:
            first_value = b.add(self.splat(first_value, self.lanes), self.iota(lane))
        kind = first_value.type
        zero = ir.Constant(kind, 0 if kind == I64 else [0] * self.lanes)
        extent = ir.Constant(kind, expr.extent if kind == I64 else [expr.extent] * self.lanes)
        window = ir.Constant(kind, expr.window if kind == I64 else [expr.window] * self.lanes)
        low = b.select(b.icmp_signed(">", first_value, zero), first_value, zero)
        last = b.add(first_value, window)
        high = b.select(b.icmp_signed("<", last, extent), last, extent)
        count = b.sub(high, low)
        return b.sitofp(count, ir.VectorType(F32, self.lanes) if kind != I64 else F32)

    # Indices and conditions --------------------------------------------------------------------

    def split(self, index: Affine, env: Env) -> tuple[Value, int]:
        """`index` at `env` as (its value at lane 0, its step per lane)."""
        b = self.b
        constant: int = index.constant
        value: ir.Value | None = None
        lane = 0
        for name, coefficient in index.terms:
            bound = env[name]
            if bound is LANE:
                lane += coefficient
            elif isinstance(bound, int):
                constant += coefficient * bound
            else:
                term = bound if coefficient == 1 else b.mul(bound, ir.Constant(I64, coefficient))
                value = term if value is None else b.add(value, term)
        if value is None:
            return constant, lane
        if constant:
            value = b.add(value, ir.Constant(I64, constant))
        return value, lane

    def scalar(self, index: Affine, env: Env) -> Value:
        value, lane = self.split(index, env)
        assert lane == 0, "a lane-dependent index where a scalar one is needed"
        return value

    def iota(self, step: int) -> ir.Constant:
        return ir.Constant(ir.VectorType(I64, self.lanes), [step * i for i in range(self.lanes)])

    def _bounds(self, arg: int, index: Sequence[Affine]) -> list[tuple[Affine, str, int]]:
        """The checks that keep `index` inside tensor `arg`: only where the
        loop ranges let it leave a dimension."""
        shape = self.kernel.kernel.shapes[arg]
        if len(index) != len(shape):
            raise ValueError(f"codegen: argument {arg} has rank {len(shape)}, indexed by {len(index)} indices")
        checks = []
        for position, extent in zip(index, shape):
            low, high = position.bounds(self.extents)
            if low < 0:
                checks.append((position, ">=", 0))
            if high >= extent:
                checks.append((position, "<", extent))
        return checks

    def conditions(
        self, checks: Sequence[tuple[Affine, str, int]], env: Env, lane_number: int | None
    ) -> tuple[ir.Value | None, ir.Value | None]:
        """(scalar condition, lane mask) for `checks` at `env`: None where no
        check of that kind applies. At `lane_number`, every check is scalar."""
        b = self.b
        scalar_parts: list[ir.Value] = []
        lane_parts: list[ir.Value] = []
        for index, relation, bound in checks:
            first, lane = self.split(index, env)
            if lane and lane_number is not None:
                first = first + lane * lane_number if isinstance(first, int) else b.add(first, ir.Constant(I64, lane * lane_number))
                lane = 0
            if isinstance(first, int) and not lane:
                if (first >= bound) if relation == ">=" else (first < bound):
                    continue
                scalar_parts.append(ir.Constant(I1, 0))
                continue
            if lane:
                values = b.add(self.splat(_as_i64(first), self.lanes), self.iota(lane))
                limit = ir.Constant(ir.VectorType(I64, self.lanes), [bound] * self.lanes)
                lane_parts.append(b.icmp_signed(relation, values, limit))
            else:
                scalar_parts.append(b.icmp_signed(relation, first, ir.Constant(I64, bound)))
        return _all(b, scalar_parts), _all(b, lane_parts)

    # Memory ---------------------------------------------------------------------------------

    def address(self, arg: int, index: Sequence[Affine], env: Env) -> tuple[Value, int]:
        """The element offset of `index` in tensor `arg` at lane 0, and its step per lane."""
        flat = Affine()
        for position, stride in zip(index, self.kernel.strides[arg]):
            flat = flat + position * stride
        return self.split(flat, env)

    def element(self, arg: int, offset: Value) -> ir.Value:
        return self.b.gep(self.state.data[arg], [_as_i64(offset)], source_etype=F32)

    def load(self, access: Load, index: Sequence[Affine], env: Env, checks, fill: float) -> ir.Value:
        """The element(s) `index` of `access.arg`; `fill` where `checks` fail."""
        b = self.b
        offset, step = self.address(access.arg, index, env)
        condition, mask = self.conditions(checks, env, None)
        if step == 0 and mask is None:
            if condition is None:
                return b.load(self.element(access.arg, offset), typ=F32, align=4)
            safe = b.select(condition, _as_i64(offset), ir.Constant(I64, 0))
            value = b.load(self.element(access.arg, safe), typ=F32, align=4)
            if self.lanes:
                # Selected as vectors: a scalar float select becomes a branch on
                # x86, a vector one a blend whose (invariant) mask is hoisted.
                fills = ir.Constant(ir.VectorType(F32, self.lanes), [fill] * self.lanes)
                return b.select(self.splat(condition, self.lanes), self.splat(value, self.lanes), fills)
            return b.select(condition, value, ir.Constant(F32, fill))
        vector_type = ir.VectorType(F32, self.lanes)
        if step == 1:
            if condition is not None:
                mask = self._and_mask(mask, condition)
            pointer = self.element(access.arg, offset)
            if mask is None:
                return b.load(pointer, typ=vector_type, align=4)
            intrinsic = self.kernel.owner.declare(
                f"llvm.masked.load.v{self.lanes}f32.p0",
                ir.FunctionType(vector_type, [PTR, I32, mask.type, vector_type]),
            )
            return b.call(intrinsic, [pointer, ir.Constant(I32, 4), mask, ir.Constant(vector_type, [fill] * self.lanes)])
        result = ir.Constant(vector_type, ir.Undefined)
        for lane_number in range(self.lanes):
            lane_offset = offset + step * lane_number if isinstance(offset, int) else b.add(offset, ir.Constant(I64, step * lane_number))
            lane_condition, _ = self.conditions(checks, env, lane_number)
            if lane_condition is None:
                value = b.load(self.element(access.arg, lane_offset), typ=F32, align=4)
            else:
                safe = b.select(lane_condition, _as_i64(lane_offset), ir.Constant(I64, 0))
                value = b.select(lane_condition, b.load(self.element(access.arg, safe), typ=F32, align=4), ir.Constant(F32, fill))
            result = b.insert_element(result, value, ir.Constant(I32, lane_number))
        return result

    def _and_mask(self, mask: ir.Value | None, condition: ir.Value) -> ir.Value:
        splat = self.splat(condition, self.lanes)
        return splat if mask is None else self.b.and_(mask, splat)

    def store(self, value: ir.Value, env: Env) -> None:
        """Write `value` (broadcast if the nest is vectorized) to the output
        element(s) at `env`, skipping those outside the output or a tile's tail."""
        b = self.b
        arg = self.output.arg
        offset, step = self.address(arg, self.output_index, env)
        condition, mask = self.conditions(self.store_conditions, env, None)
        if not self.lanes:
            if condition is None:
                b.store(value, self.element(arg, offset), align=4)
            else:
                with b.if_then(condition):
                    b.store(value, self.element(arg, offset), align=4)
            return
        value = self.widen(value)
        if step == 1:
            if condition is not None:
                mask = self._and_mask(mask, condition)
            pointer = self.element(arg, offset)
            if mask is None:
                b.store(value, pointer, align=4)
                return
            intrinsic = self.kernel.owner.declare(
                f"llvm.masked.store.v{self.lanes}f32.p0",
                ir.FunctionType(ir.VoidType(), [value.type, PTR, I32, mask.type]),
            )
            b.call(intrinsic, [value, pointer, ir.Constant(I32, 4), mask])
            return
        for lane_number in range(self.lanes):
            lane_offset = offset + step * lane_number if isinstance(offset, int) else b.add(offset, ir.Constant(I64, step * lane_number))
            lane_value = b.extract_element(value, ir.Constant(I32, lane_number))
            lane_condition, _ = self.conditions(self.store_conditions, env, lane_number)
            if lane_condition is None:
                b.store(lane_value, self.element(arg, lane_offset), align=4)
            else:
                with b.if_then(lane_condition):
                    b.store(lane_value, self.element(arg, lane_offset), align=4)


def _as_i64(value: Value) -> ir.Value:
    return ir.Constant(I64, value) if isinstance(value, int) else value


def _all(b: ir.IRBuilder, parts: Sequence[ir.Value]) -> ir.Value | None:
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = b.and_(result, part)
    return result
