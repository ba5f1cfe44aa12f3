"""The C runtime and its Python driver, on small artifacts built by hand.

One kernel library is compiled with TVM for the whole module: a parallel
matmul, relu, add, and a parallel kernel with a TVM workspace. A plan over
them is written with the memory planner; the tests run it through the driver,
compare with numpy, and break the artifact in every way the runtime must
report cleanly."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tconv.ir.loader import TconvError
from tconv.runtime import driver
from tconv.runtime.driver import Runtime
from tconv.runtime.memory_plan import buffers_for_steps, plan_arena
from tconv.runtime.plan import Call, Plan, PlanError, Tensor, read_plan, write_artifact

ROWS, DEPTH, WIDTH = 4, 32, 256
C_DRIVER = Path(__file__).parent / "c" / "run_artifact.c"


def compile_kernels(path: Path) -> None:
    """kernels.so: matmul (parallel rows), relu, add, and shift (parallel, with
    a workspace for its intermediate), all float32 over (ROWS, WIDTH)."""
    import tvm
    from tvm import te

    x = te.placeholder((ROWS, DEPTH), "float32", name="x")
    w = te.placeholder((DEPTH, WIDTH), "float32", name="w")
    k = te.reduce_axis((0, DEPTH), "k")
    h = te.compute((ROWS, WIDTH), lambda i, j: te.sum(x[i, k] * w[k, j], axis=k), name="h")
    a = te.placeholder((ROWS, WIDTH), "float32", name="a")
    b = te.placeholder((ROWS, WIDTH), "float32", name="b")
    relu = te.compute(a.shape, lambda i, j: te.max(a[i, j], tvm.tirx.const(0, "float32")), name="r")
    add = te.compute(a.shape, lambda i, j: a[i, j] + b[i, j], name="s")
    doubled = te.compute(a.shape, lambda i, j: a[i, j] * 2.0, name="d")
    shift = te.compute(
        a.shape, lambda i, j: doubled[i, j] + doubled[i, (j + 1) % WIDTH], name="t"
    )
    functions = {
        "matmul": te.create_prim_func([x, w, h]),
        "relu": te.create_prim_func([a, relu]),
        "add": te.create_prim_func([a, b, add]),
        "shift": te.create_prim_func([a, shift]),
    }
    module = tvm.IRModule(
        {name: f.with_attr("global_symbol", name) for name, f in functions.items()}
    )
    schedule = tvm.s_tir.Schedule(module)
    for function, block in (("matmul", "h"), ("shift", "t")):
        schedule.parallel(schedule.get_loops(schedule.get_sblock(block, func_name=function))[0])
    # No mcpu: generic x86-64 code, which valgrind can run.
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    tvm.compile(schedule.mod, target).export_library(str(path))


def reference(x, z, weights):
    r = np.maximum(x @ weights, 0)
    y = r + z
    return [r, 2 * y + 2 * np.roll(y, -1, axis=1)]


def network_plan(arena_shapes=None) -> tuple[Plan, np.ndarray]:
    """The plan: inputs x, z; r = relu(x @ w); y = r + z; outputs r and shift(y)."""
    shapes = {"x": (ROWS, DEPTH), "z": (ROWS, WIDTH), "h": (ROWS, WIDTH), "r": (ROWS, WIDTH),
              "y": (ROWS, WIDTH), "out": (ROWS, WIDTH)}
    shapes.update(arena_shapes or {})
    names = list(shapes)
    steps = [["x", "w", "h"], ["h", "r"], ["r", "z", "y"], ["y", "out"]]
    buffers = buffers_for_steps(
        [4 * int(np.prod(shape)) for shape in shapes.values()],
        [[names.index(n) for n in step if n in shapes] for step in steps],
        inputs=[names.index("x"), names.index("z")],
        outputs=[names.index("r"), names.index("out")],
    )
    arena = plan_arena(buffers)
    tensors = [Tensor(n, "arena", arena.offsets[i], shapes[n]) for i, n in enumerate(names)]
    tensors.append(Tensor("w", "param", 0, (DEPTH, WIDTH)))
    ids = {n: i for i, n in enumerate(names + ["w"])}
    weights = np.random.default_rng(1).standard_normal((DEPTH, WIDTH)).astype(np.float32)
    plan = Plan(
        library="kernels.so",
        params="params.bin",
        params_bytes=weights.nbytes,
        arena_bytes=arena.peak_bytes,
        tensors=tuple(tensors),
        inputs=(ids["x"], ids["z"]),
        outputs=(ids["r"], ids["out"]),
        calls=tuple(
            Call(symbol, tuple(ids[n] for n in step))
            for symbol, step in zip(("matmul", "relu", "add", "shift"), steps)
        ),
    )
    return plan, weights


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kernels") / "kernels.so"
    compile_kernels(path)
    return path


@pytest.fixture(scope="module")
def artifact(kernels, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("artifact") / "net"
    plan, weights = network_plan()
    write_artifact(directory, plan, weights.tobytes(), kernels)
    return directory


@pytest.fixture
def broken(artifact, tmp_path) -> Path:
    """A copy of the artifact for a test to break. The tests that break it
    load it with `verify=False`, to reach the C runtime's own checks: the
    manifest check would refuse every one of them first (it is tested in
    test_artifact_robustness.py)."""
    directory = tmp_path / "broken"
    shutil.copytree(artifact, directory)
    return directory


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((ROWS, DEPTH)).astype(np.float32),
        rng.standard_normal((ROWS, WIDTH)).astype(np.float32),
    )


# ---------------------------------------------------------------- running


def test_runs_like_numpy_on_any_thread_count(artifact):
    x, z = inputs()
    expected = reference(x, z, network_plan()[1])
    with Runtime(artifact, threads=1) as runtime:
        assert [i.shape for i in runtime.inputs] == [(ROWS, DEPTH), (ROWS, WIDTH)]
        assert [i.name for i in runtime.outputs] == ["r", "out"]
        for threads in (1, 2, 3, 1):
            runtime.set_threads(threads)
            for _ in range(3):
                for got, want in zip(runtime.run(x, z), expected):
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_arena_is_shared_and_reported(artifact):
    plan = read_plan(artifact)
    with Runtime(artifact) as runtime:
        assert runtime.arena_bytes == plan.arena_bytes
    activations = sum(t.nbytes for t in plan.tensors if t.location == "arena")
    # h dies when relu has read it: y takes its bytes.
    assert plan.arena_bytes < activations


def test_outputs_are_fresh_arrays_and_inputs_untouched(artifact):
    x, z = inputs()
    saved = x.copy()
    with Runtime(artifact) as runtime:
        first = runtime.run(x, z)
        second = runtime.run(x, z)
    assert first[0] is not second[0]
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(x, saved)


def test_zero_copy_views_run_like_run(artifact):
    """Inputs written into the arena, `execute()`, outputs read from it: the
    same numbers as `run`, which copies."""
    x, z = inputs(seed=3)
    with Runtime(artifact, threads=2) as runtime:
        expected = runtime.run(x, z)
        in_x, in_z = runtime.arena_inputs()
        assert in_x.shape == x.shape and in_z.shape == z.shape
        in_x[...] = x
        in_z[...] = z
        runtime.execute()
        for view, want in zip(runtime.arena_outputs(), expected):
            np.testing.assert_array_equal(view, want)
        with pytest.raises(TconvError, match="closed"):
            runtime.close()
            runtime.execute()


def test_non_contiguous_inputs_are_accepted(artifact):
    x, z = inputs()
    wide = np.zeros((ROWS, 2 * DEPTH), np.float32)
    wide[:, ::2] = x
    with Runtime(artifact) as runtime:
        np.testing.assert_array_equal(runtime.run(wide[:, ::2], z)[1], runtime.run(x, z)[1])


def test_closed_runtime_refuses_to_run(artifact):
    runtime = Runtime(artifact)
    runtime.close()
    runtime.close()
    with pytest.raises(TconvError, match="closed"):
        runtime.run(*inputs())


def test_driver_does_not_import_tvm(artifact):
    code = (
        "import sys\n"
        "from tconv.runtime.driver import Runtime\n"
        "import numpy as np\n"
        f"with Runtime({str(artifact)!r}, threads=2) as r:\n"
        f"    out = r.run(np.ones({(ROWS, DEPTH)}, 'f4'), np.ones({(ROWS, WIDTH)}, 'f4'))\n"
        "assert not any(m == 'tvm' or m.startswith(('tvm.', 'tvm_ffi')) for m in sys.modules)\n"
        "print(float(out[1].sum()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    x, z = np.ones((ROWS, DEPTH), np.float32), np.ones((ROWS, WIDTH), np.float32)
    expected = reference(x, z, network_plan()[1])[1].sum()
    assert float(result.stdout) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "arrays, message",
    [
        (lambda x, z: (x,), "takes 2 input"),
        (lambda x, z: (x, z, z), "takes 2 input"),
        (lambda x, z: (x.astype(np.float64), z), r"input 0 \(x\) must be float32, got float64"),
        (
            lambda x, z: (x, z[:, :8]),
            rf"input 1 \(z\) must have shape {ROWS}x{WIDTH}, got {ROWS}x8",
        ),
        (lambda x, z: (x.tolist(), z), "must be a numpy array"),
    ],
)
def test_wrong_inputs_are_user_errors(artifact, arrays, message):
    with Runtime(artifact) as runtime, pytest.raises(TconvError, match=message):
        runtime.run(*arrays(*inputs()))


def test_c_checks_buffers_too(artifact):
    """The C API refuses a wrong buffer count or size without the driver's checks."""
    lib = driver.load_runtime()
    handle = ctypes.c_void_p()
    assert lib.tconv_open(os.fsencode(artifact), ctypes.byref(handle)) == 0
    try:
        x, z = inputs()
        out = np.empty((ROWS, WIDTH), np.float32)
        ins = (driver._Buffer * 2)((x.ctypes.data, x.nbytes), (z.ctypes.data, z.nbytes - 4))
        outs = (driver._Buffer * 2)((out.ctypes.data, out.nbytes), (out.ctypes.data, out.nbytes))
        assert lib.tconv_run(handle, ins, 1, outs, 2) == 4
        assert b"takes 2 inputs, got 1" in lib.tconv_last_error()
        assert lib.tconv_run(handle, ins, 2, outs, 2) == 4
        assert f"input 1 (z) is {ROWS}x{WIDTH} f32".encode() in lib.tconv_last_error()
        assert lib.tconv_set_threads(handle, 0) == 4
        assert lib.tconv_set_threads(handle, 100000) == 4
    finally:
        assert lib.tconv_close(handle) == 0


def line_of(text: str, prefix: str) -> int:
    """The number of the first line that starts with `prefix`."""
    return next(i for i, line in enumerate(text.split("\n"), 1) if line.startswith(prefix))


def replace_line(prefix: str, new: str):
    """A mutation: the first line starting with `prefix` becomes `new`; the error names it."""

    def mutate(text: str) -> tuple[str, int]:
        lines = text.split("\n")
        number = line_of(text, prefix)
        lines[number - 1] = new
        return "\n".join(lines), number

    return mutate


def insert_before(prefix: str, new: str):
    """A mutation: `new` goes in before the line starting with `prefix`; the error names it."""

    def mutate(text: str) -> tuple[str, int]:
        number = line_of(text, prefix)
        lines = text.split("\n")
        return "\n".join(lines[: number - 1] + [new] + lines[number - 1 :]), number

    return mutate


def append_line(new: str):
    """A mutation: `new` goes at the end of the plan; the error names it."""
    return lambda text: (text + new + "\n", len(text.splitlines()) + 1)


def whole_plan(change):
    """A mutation of the whole text; the error names the plan but no line."""
    return lambda text: (change(text), None)


def retype_tensor(id: int, dtype: str, error_at: str):
    """A mutation: tensor `id` becomes of `dtype`; the error names the line starting with `error_at`."""

    def mutate(text: str) -> tuple[str, int]:
        lines = text.split("\n")
        number = line_of(text, f"tensor {id} ")
        lines[number - 1] = lines[number - 1].replace(" f32 ", f" {dtype} ")
        return "\n".join(lines), line_of(text, error_at)

    return mutate


def cut_inside(prefix: str, keep: int):
    """A mutation: the plan ends `keep` characters into the line starting with `prefix`."""
    return lambda text: (text[: text.index(prefix) + keep], line_of(text, prefix))


TENSOR_1 = f"f32 arena 0 2 {ROWS} {WIDTH}"
PLAN_MUTATIONS = {
    "empty": (whole_plan(lambda text: ""), "no `tconv-plan` line"),
    "no end": (
        whole_plan(lambda text: text.replace("end\n", "")), "no `end` line (the plan is truncated)"
    ),
    "no call": (
        whole_plan(lambda text: "".join(
            line for line in text.splitlines(True) if not line.startswith("call")
        )),
        "a plan needs at least one input, output and call",
    ),
    "cut mid-line": (cut_inside("tensor 1 ", 22), "expected `tensor <id> <name> <dtype>"),
    "version": (replace_line("tconv-plan", "tconv-plan 2"), "plan version 2 is not supported"),
    "header later": (
        insert_before("tconv-plan", "library x.so"),
        "expected `tconv-plan 1` as the first statement, found `library`",
    ),
    "unknown": (insert_before("end", "frobnicate 3"), "unknown statement `frobnicate`"),
    "second arena": (
        insert_before("tensor 0", "arena 64"), "a second `arena` line (the first is line 5)"
    ),
    "after end": (append_line("input 0"), "a statement after `end`"),
    "bad number": (
        replace_line("arena", "arena 12x"), "arena bytes: expected an unsigned integer, found `12x`"
    ),
    "negative": (replace_line("arena", "arena -64"), "found `-64`"),
    "huge number": (replace_line("arena", "arena 99999999999999999999999"), "is larger than"),
    "misaligned": (
        replace_line("tensor 1 ", f"tensor 1 z f32 arena 32 2 {ROWS} {WIDTH}"),
        "tensor 1: offset 32 is not a multiple of 64",
    ),
    "outside arena": (
        replace_line("tensor 1 ", f"tensor 1 z f32 arena 1048576 2 {ROWS} {WIDTH}"),
        "tensor 1: bytes [1048576, ",
    ),
    "outside params": (
        replace_line("tensor 6 ", f"tensor 6 w f32 param 0 2 {DEPTH} {WIDTH + 1}"),
        "lie outside the parameters",
    ),
    "duplicate id": (
        replace_line("tensor 1 ", f"tensor 0 z {TENSOR_1}"),
        "duplicate tensor id 0 (declared on line 6)",
    ),
    "id out of order": (
        replace_line("tensor 1 ", f"tensor 9 z {TENSOR_1}"),
        "tensor id 9 is out of order: expected 1",
    ),
    "dtype": (
        replace_line("tensor 1 ", f"tensor 1 z {TENSOR_1.replace('f32', 'f16')}"),
        "tensor 1: dtype `f16` is not supported (expected one of f32, u8, i8, i32)",
    ),
    "u8 input": (
        retype_tensor(0, "u8", error_at="input 0"), "input 0 (x) is u8; inputs and outputs are f32"
    ),
    "i32 output": (
        retype_tensor(3, "i32", error_at="output 3"), "output 3 (r) is i32; inputs and outputs are f32"
    ),
    "zero dim": (
        replace_line("tensor 1 ", f"tensor 1 z f32 arena 0 2 {ROWS} 0"), "tensor 1: dim 1 is 0"
    ),
    "unknown id": (replace_line("call relu", "call relu 2 3 17"), "unknown tensor id 17"),
    "nargs": (
        replace_line("call relu", "call relu 3 2 3"),
        "call relu: nargs 3 needs 3 tensor ids, found 2",
    ),
    "bad symbol": (replace_line("call relu", "call re-lu 2 3 2"), "`re-lu` is not a kernel symbol"),
    "param input": (replace_line("input 1", "input 6"), "input 6 (w) is a parameter"),
    "twice an input": (replace_line("input 1", "input 0"), "tensor 0 (x) is already an input"),
    "control char": (replace_line("library", "library kernels.so\r"), "control character 0x0d"),
    "path in name": (replace_line("library", "library ../kernels.so"), "not a plain file name"),
    "bad target": (replace_line("target", "target tpu"), "target"),
    "second target": (insert_before("library", "target cpu"), "a second `target` line"),
}


@pytest.mark.parametrize("mutation", PLAN_MUTATIONS, ids=list(PLAN_MUTATIONS))
def test_corrupt_plans_name_the_line(broken, mutation):
    mutate, message = PLAN_MUTATIONS[mutation]
    plan_path = broken / "plan.txt"
    text, line = mutate(plan_path.read_text())
    plan_path.write_text(text)
    where = rf"{re.escape(str(plan_path))}:{line}:\d+: error: " if line else (
        f"{re.escape(str(plan_path))}: error: "
    )
    with pytest.raises(TconvError) as from_c:
        Runtime(broken, verify=False)
    with pytest.raises(PlanError) as from_python:
        read_plan(broken)
    for error in (from_c.value, from_python.value):
        assert re.match(where, str(error)) and message in str(error), str(error)
    # C and Python locate the error at the same column.
    assert str(from_c.value).split(": error: ")[0] == str(from_python.value).split(": error: ")[0]


def test_cuda_plans_are_refused_by_name(broken):
    """A cuda artifact is well formed, but not for this runtime: it says so."""
    plan_path = broken / "plan.txt"
    plan_path.write_text(plan_path.read_text().replace("target cpu", "target cuda sm_90"))
    assert read_plan(broken).target == "cuda"
    with pytest.raises(TconvError, match=r"plan.txt:2:8: error: this artifact is compiled for cuda \(sm_90\)"):
        Runtime(broken, verify=False)


@st.composite
def plan_edits(draw, text: str) -> str:
    """`text` with a few characters deleted, replaced or inserted, or cut short."""
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["delete", "replace", "insert", "cut"]))
        new = draw(st.sampled_from(list("0123456789 \n\t#-x_/\x00\xe9") + ["tensor", "end"]))
        if edit == "cut":
            text = text[:at]
        else:
            text = text[:at] + ("" if edit == "delete" else new) + text[at + (edit != "insert") :]
    return text


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_edited_plans_fail_cleanly_and_alike(artifact, broken, data):
    """C and Python agree on which edited plans are malformed, and name the line."""
    plan_path = broken / "plan.txt"
    text = data.draw(plan_edits((artifact / "plan.txt").read_text()))
    plan_path.write_bytes(text.encode())
    try:
        read_plan(broken)
        python_error = None
    except PlanError as error:
        python_error = str(error)
    try:
        Runtime(broken, threads=1, verify=False).close()
        c_error = None
    except TconvError as error:
        c_error = str(error)
    c_plan_error = (
        c_error is not None
        and c_error.startswith(f"{plan_path}:")
        and " kernel `" not in c_error  # a missing kernel is not a format error
    )
    if python_error is None:
        assert not c_plan_error, c_error
    elif "not UTF-8" not in python_error:
        assert c_plan_error, (python_error, c_error)
        # The same place: the same line, and the same column where the line is ASCII.
        c_place, python_place = c_error.split(": error: ")[0], python_error.split(": error: ")[0]
        assert c_place.rsplit(":", 1)[0] == python_place.rsplit(":", 1)[0]
        if text.isascii():
            assert c_place == python_place


def test_missing_plan(broken):
    (broken / "plan.txt").unlink()
    with pytest.raises(TconvError, match=r"plan\.txt: error: cannot read the file: No such file or directory"):
        Runtime(broken, verify=False)
    with pytest.raises(TconvError, match="No such file"):
        Runtime(broken / "nowhere", verify=False)


def test_missing_kernel_symbol(broken):
    plan_path = broken / "plan.txt"
    text = plan_path.read_text().replace("call relu ", "call gelu ")
    plan_path.write_text(text)
    line = line_of(text, "call gelu")
    with pytest.raises(
        TconvError,
        match=rf"plan\.txt:{line}:6: error: kernel `gelu` is not in kernels\.so "
        r"\(no symbol `__tvm_ffi_gelu`\)",
    ):
        Runtime(broken, verify=False)


def test_params_too_short(broken):
    params = broken / "params.bin"
    params.write_bytes(params.read_bytes()[:-4])
    size = DEPTH * WIDTH * 4
    message = rf"params\.bin: error: has {size - 4} bytes, but .*plan\.txt:4 declares {size}"
    with pytest.raises(TconvError, match=message):
        Runtime(broken, verify=False)


def test_missing_or_corrupt_library(broken):
    library = broken / "kernels.so"
    library.write_bytes(b"\x7fELF but not really")
    with pytest.raises(TconvError, match=r"kernels\.so: error: the kernel library is truncated"):
        Runtime(broken, verify=False)
    library.write_bytes(b"not a library at all")
    with pytest.raises(TconvError, match=r"kernels\.so: error: cannot load the kernel library"):
        Runtime(broken, verify=False)
    library.unlink()
    with pytest.raises(TconvError, match=r"kernels\.so: error: cannot read the file: No such file or directory"):
        Runtime(broken, verify=False)


def test_replaced_library_is_refused_while_the_old_one_is_open(broken, fake_kernels):
    """The dynamic loader would hand the old kernels to the new artifact."""
    old = Runtime(broken)
    plan, weights = network_plan()
    write_artifact(broken, plan, weights.tobytes(), fake_kernels)
    with pytest.raises(TconvError, match=r"kernels\.so: error: replaced while an open runtime"):
        Runtime(broken, verify=False)
    old.close()
    with pytest.raises(TconvError, match="kernel `matmul` is not in kernels.so"):
        Runtime(broken, verify=False)


def shape_mismatch(directory: Path) -> None:
    """Declare relu's output with a shape the kernel was not compiled for."""
    plan, weights = network_plan({"r": (ROWS, WIDTH // 2)})
    write_artifact(directory, plan, weights.tobytes(), directory / "kernels.so")


def test_kernel_error_message_in_process(broken):
    """With tvm_ffi loaded in the process, kernels report to it; the runtime
    takes the message from there."""
    shape_mismatch(broken)
    line = line_of((broken / "plan.txt").read_text(), "call relu")
    with Runtime(broken) as runtime:
        assert runtime.outputs[0].shape == (ROWS, WIDTH // 2)
        with pytest.raises(TconvError, match=rf"plan\.txt:{line}:6: error: kernel `relu` \(call 1\) failed: "
                           r"ValueError: Invalid r\.shape\[1\] on argument #1"):
            runtime.run(*inputs())


def test_kernel_error_message_without_tvm(broken):
    """Without tvm_ffi, kernels report to the runtime's own error hook."""
    shape_mismatch(broken)
    code = (
        "import sys, numpy as np\n"
        "from tconv.runtime.driver import Runtime\n"
        "from tconv.ir.loader import TconvError\n"
        f"r = Runtime({str(broken)!r})\n"
        "try:\n"
        f"    r.run(np.ones({(ROWS, DEPTH)}, 'f4'), np.ones({(ROWS, WIDTH)}, 'f4'))\n"
        "except TconvError as e:\n"
        "    print(e)\n"
        "assert 'tvm_ffi' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "kernel `relu` (call 1) failed: ValueError: Invalid r.shape[1] on argument #1" in (
        result.stdout
    )


def test_tvm_keeps_its_own_kernel_errors(kernels):
    """Loaded before tvm_ffi, the runtime's error hook is what kernels run by
    tvm_ffi bind to: it must hand their errors on to tvm_ffi."""
    code = (
        "from tconv.runtime import driver\n"
        "driver.load_runtime()\n"
        "import numpy as np, tvm_ffi\n"
        f"kernel = tvm_ffi.load_module({str(kernels)!r})['relu']\n"
        f"a = tvm_ffi.from_dlpack(np.ones(({ROWS}, {WIDTH}), np.float32))\n"
        f"b = tvm_ffi.from_dlpack(np.ones(({ROWS}, {WIDTH // 2}), np.float32))\n"
        "try:\n"
        "    kernel(a, b)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on argument #1 when calling" in result.stdout


# ------------------------------------------------- the host services


MAX_TASKS = 64


def build_fake(directory: Path, *defines: str) -> Path:
    path = directory / "fake.so"
    subprocess.run(
        [os.environ.get("CC") or "cc", "-std=c11", "-O1", "-fPIC", "-shared", "-pthread",
         "-Wall", "-Wextra", "-Werror", *defines, "-o", str(path), str(C_DRIVER.parent / "fake_kernels.c")],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def fake_kernels(tmp_path_factory) -> Path:
    """A library that drives the thread pool, barrier, workspace and error hook
    like TVM-generated code (tests/integration/c/fake_kernels.c)."""
    return build_fake(tmp_path_factory.mktemp("fake"))


@pytest.fixture(scope="module")
def fake_kernels_without_barrier(tmp_path_factory) -> Path:
    """The same library as TVM builds one that never meets at a barrier:
    the runtime may split its loops and let threads take over tasks."""
    return build_fake(tmp_path_factory.mktemp("fake-no-barrier"), "-DNO_BARRIER")


def align(size: int) -> int:
    return -(-size // 64) * 64


def run_fake(fake_kernels, directory, threads, num_task, fail_task=-1, barrier=False, inspect=None):
    """What one `launch` call reports (runs per task id, num_task seen,
    distinct threads seen, whether the barrier held, tasks the calling thread
    ran), and the inner tasks that one `nested` call ran. `barrier` stalls a
    worker instead in a library built without one. `inspect` is called after
    the run, before the runtime (and its threads) close."""
    control = np.array([num_task, fail_task, barrier], np.float32)
    report_offset, inner_offset = 64, 64 + align(4 * (MAX_TASKS + 4))
    plan = Plan(
        library="kernels.so",
        params="params.bin",
        params_bytes=control.nbytes,
        arena_bytes=inner_offset + 64,
        tensors=(
            Tensor("x", "arena", 0, (1,)),
            Tensor("control", "param", 0, (3,)),
            Tensor("report", "arena", report_offset, (MAX_TASKS + 4,)),
            Tensor("inner_tasks", "arena", inner_offset, (1,)),
        ),
        inputs=(0,),
        outputs=(2, 3),
        calls=(Call("launch", (1, 2)), Call("nested", (3,))),
    )
    write_artifact(directory, plan, control.tobytes(), fake_kernels)
    with Runtime(directory, threads=threads) as runtime:
        report, inner_tasks = runtime.run(np.zeros(1, np.float32))
        if inspect is not None:
            inspect()
    runs = report[:MAX_TASKS].astype(int).tolist()
    return runs, *report[MAX_TASKS:].astype(int).tolist(), int(inner_tasks[0])


def fake_sequence(fake_kernels, directory, kernel: str, values) -> Path:
    """An artifact that calls `kernel` once per value, on that value (a
    parameter) and a counter of its own (an output)."""
    values = np.asarray(values, np.float32)
    count = len(values)
    plan = Plan(
        library="kernels.so",
        params="params.bin",
        params_bytes=64 * count,
        arena_bytes=64 * (count + 1),
        tensors=(
            Tensor("x", "arena", 0, (1,)),
            *(Tensor(f"value{k}", "param", 64 * k, (1,)) for k in range(count)),
            *(Tensor(f"count{k}", "arena", 64 * (k + 1), (1,)) for k in range(count)),
        ),
        inputs=(0,),
        outputs=tuple(range(count + 1, 2 * count + 1)),
        calls=tuple(Call(kernel, (1 + k, count + 1 + k)) for k in range(count)),
    )
    params = np.zeros((count, 16), np.float32)
    params[:, 0] = values
    write_artifact(directory, plan, params.tobytes(), fake_kernels)
    return directory


def test_kernels_get_each_tensors_dtype(fake_kernels, tmp_path):
    """u8, i8 and i32 tensors reach a kernel as DLTensors of their dtype, at
    1 or 4 bytes an element: a u8 parameter of 64 elements fits the last 64
    bytes of the parameter file, where an f32 one would not."""
    signed = np.array([-128, -1, 0, 1, 2, 3, 4, 127], np.int8)
    unsigned = (np.arange(64) + 192).astype(np.uint8)
    params = np.zeros(128, np.uint8)
    params[:8] = signed.view(np.uint8)
    params[64:] = unsigned
    plan = Plan(
        library="kernels.so",
        params="params.bin",
        params_bytes=params.nbytes,
        arena_bytes=192,
        tensors=(
            Tensor("x", "arena", 0, (1,)),
            Tensor("s", "param", 0, (8,), "i8"),
            Tensor("q", "param", 64, (64,), "u8"),
            Tensor("acc", "arena", 64, (4,), "i32"),
            Tensor("report", "arena", 128, (8,)),
        ),
        inputs=(0,),
        outputs=(4,),
        calls=(Call("dtypes", (1, 2, 3, 0, 4)),),
    )
    directory = tmp_path / "dtypes"
    write_artifact(directory, plan, params.tobytes(), fake_kernels)
    assert read_plan(directory) == plan
    with Runtime(directory, threads=1) as runtime:
        (report,) = runtime.run(np.array([1.5], np.float32))
    # kDLInt = 0, kDLUInt = 1, kDLFloat = 2; code * 100 + bits.
    assert report[0::2].tolist() == [8, 108, 32, 232]
    assert report[[1, 3, 7]].tolist() == [8, 64 * 192 + 63 * 64 // 2, 1.5]

    plan_path = directory / "plan.txt"
    plan_path.write_text(plan_path.read_text().replace("tensor 2 q u8", "tensor 2 q f32"))
    line = line_of(plan_path.read_text(), "tensor 2 ")
    message = rf"plan\.txt:{line}:\d+: error: tensor 2: bytes \[64, 320\) lie outside the parameters \(128 bytes\)"
    with pytest.raises(TconvError, match=message):
        Runtime(directory, verify=False)
    with pytest.raises(PlanError, match=message):
        read_plan(directory)


def test_workspaces_of_every_kernel_are_kept_from_run_to_run(fake_kernels, tmp_path):
    """20 kernels, each asking for a scratch buffer of its own size (4 KB to
    2.5 MB): after the first run, runs allocate none (a cache of the last 8
    buffers gave each kernel's back to the allocator before its next call)."""
    sizes = [4096 * (1 + 31 * k) for k in range(20)]
    artifact = fake_sequence(fake_kernels, tmp_path / "scratch", "scratch", sizes)
    fresh = driver.load_runtime().tconv_fresh_workspaces
    with Runtime(artifact, threads=2) as runtime:
        before = fresh()
        runtime.run(np.zeros(1, np.float32))
        after_first = fresh()
        for _ in range(3):
            runtime.run(np.zeros(1, np.float32))
        assert after_first - before >= len(set(sizes)) and fresh() == after_first


def test_profile_times_each_call_in_plan_order(fake_kernels, tmp_path):
    pauses = [0.0, 3.0, 0.0, 1.0]
    artifact = fake_sequence(fake_kernels, tmp_path / "pauses", "pause", pauses)
    with Runtime(artifact, threads=1) as runtime:
        calls = runtime.profile(4)
        again = runtime.profile(1)  # totals restart with each profile
    assert [(c.index, c.symbol, c.layer, c.shape) for c in calls] == [
        (k, "pause", f"value{k}", (1,)) for k in range(4)
    ]
    for call, pause in zip(calls, pauses):
        assert call.seconds >= pause / 1e3
    assert calls[0].seconds < 1e-3 and again[1].seconds < 2 * 3e-3


@pytest.mark.parametrize("threads, num_task", [(1, 0), (2, 0), (3, 0), (2, 5), (1, 4), (3, 2)])
def test_parallel_launch_runs_every_task_once(fake_kernels, tmp_path, threads, num_task):
    runs, seen_tasks, distinct_threads, _, _, inner_tasks = run_fake(
        fake_kernels, tmp_path / "fake", threads, num_task
    )
    tasks = num_task or threads
    assert runs == [1] * tasks + [0] * (MAX_TASKS - tasks)
    assert seen_tasks == tasks
    assert distinct_threads == min(threads, tasks)
    assert inner_tasks == 4 * 3  # nested loops run inline in each task


@pytest.mark.parametrize("threads, num_task", [(1, 0), (2, 0), (3, 0), (2, 5), (3, 2)])
def test_loops_without_barrier_are_split_and_run_every_task_once(
    fake_kernels_without_barrier, tmp_path, threads, num_task
):
    runs, seen_tasks, distinct_threads, _, _, inner_tasks = run_fake(
        fake_kernels_without_barrier, tmp_path / "fake", threads, num_task
    )
    tasks = num_task or (4 * threads if threads > 1 else 1)  # TASKS_PER_THREAD
    assert runs == [1] * tasks + [0] * (MAX_TASKS - tasks)
    assert seen_tasks == tasks
    assert 1 <= distinct_threads <= min(threads, tasks)
    assert inner_tasks == 4 * 3


def test_the_caller_takes_over_the_tasks_of_a_stalled_worker(fake_kernels_without_barrier, tmp_path):
    """A worker that sleeps 200 ms in its first task holds up only that task:
    the calling thread runs the rest of the worker's share."""
    runs, _, _, _, by_caller, _ = run_fake(fake_kernels_without_barrier, tmp_path / "fake", 2, 8, barrier=True)
    assert runs == [1] * 8 + [0] * (MAX_TASKS - 8)
    assert by_caller >= 7


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("setting", [None, "0"])
def test_workers_are_bound_beside_the_launcher(fake_kernels, tmp_path, monkeypatch, setting):
    """A worker binds itself to one CPU (not the launcher's) unless
    TCONV_BIND_THREADS=0; with more threads than CPUs nobody is bound."""
    if setting is None:
        monkeypatch.delenv("TCONV_BIND_THREADS", raising=False)
    else:
        monkeypatch.setenv("TCONV_BIND_THREADS", setting)
    allowed = os.sched_getaffinity(0)
    before = set(os.listdir("/proc/self/task"))
    seen = {}

    def affinities():
        seen.update({tid: os.sched_getaffinity(int(tid)) for tid in set(os.listdir("/proc/self/task")) - before})

    run_fake(fake_kernels, tmp_path / "two", 2, 0, inspect=affinities)
    (worker,) = seen.values()
    if setting is None:
        assert len(worker) == 1 and worker <= allowed
    else:
        assert worker == allowed

    seen.clear()
    monkeypatch.delenv("TCONV_BIND_THREADS", raising=False)
    run_fake(fake_kernels, tmp_path / "many", len(allowed) + 1, 0, inspect=affinities)
    assert len(seen) == len(allowed) and all(mask == allowed for mask in seen.values())


@pytest.mark.parametrize("threads, num_task", [(3, 0), (3, 2), (1, 1)])
def test_parallel_barrier_holds(fake_kernels, tmp_path, threads, num_task):
    *_, barrier_held, _, _ = run_fake(fake_kernels, tmp_path / "fake", threads, num_task, barrier=True)
    assert barrier_held == 1


def test_parallel_barrier_with_more_tasks_than_threads_fails_cleanly(fake_kernels, tmp_path):
    with pytest.raises(TconvError, match="kernel `launch` .*more tasks than threads"):
        run_fake(fake_kernels, tmp_path / "fake", 2, 5, barrier=True)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_failing_task_fails_the_call_with_its_message(fake_kernels, tmp_path, threads):
    message = r"kernel `launch` \(call 0\) failed: RuntimeError: task 3 failed on purpose"
    with pytest.raises(TconvError, match=message):
        run_fake(fake_kernels, tmp_path / "fake", threads, 4, fail_task=3)


# ------------------------------------------------------------ the build


def test_runtime_is_rebuilt_when_its_key_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("TCONV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TCONV_RUNTIME_CFLAGS", raising=False)
    built = driver.build_runtime()
    assert built.is_file() and built.parent.parent == tmp_path / "cache"
    stamp = built.stat().st_mtime_ns
    assert driver.build_runtime() == built and built.stat().st_mtime_ns == stamp

    monkeypatch.setenv("TCONV_RUNTIME_CFLAGS", "-DTCONV_TEST_FLAG=1")
    with_flag = driver.build_runtime()
    assert with_flag != built and with_flag.is_file()

    sources = tmp_path / "src"
    shutil.copytree(driver.SOURCE_DIR, sources)
    monkeypatch.setattr(driver, "SOURCE_DIR", sources)
    assert driver.build_runtime() == with_flag
    with open(sources / "tconv_backend.c", "a") as source:
        source.write("/* changed */\n")
    changed = driver.build_runtime()
    assert changed not in (built, with_flag) and changed.is_file()


def test_runtime_sources_compile_without_warnings(tmp_path):
    subprocess.run(
        [os.environ.get("CC") or "cc", *driver.FLAGS, "-Werror", "-Wpedantic", "-Wshadow",
         "-Wconversion", "-o", str(tmp_path / "lib.so"),
         *(str(driver.SOURCE_DIR / name) for name in driver.SOURCES), *driver.LIBS],
        check=True,
    )


def test_compile_failure_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TCONV_CACHE_DIR", str(tmp_path / "cache"))
    sources = tmp_path / "src"
    shutil.copytree(driver.SOURCE_DIR, sources)
    with open(sources / "tconv_runtime.c", "a") as source:
        source.write("#error broken on purpose\n")
    monkeypatch.setattr(driver, "SOURCE_DIR", sources)
    message = "(?s)building the tconv runtime failed.*broken on purpose"
    with pytest.raises(driver.RuntimeBuildError, match=message):
        driver.build_runtime()
    assert not list((tmp_path / "cache").glob("*/*.so"))


# ------------------------------------------------------------- valgrind


VALGRIND = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")


@pytest.fixture(scope="module")
def c_program(tmp_path_factory) -> Path:
    """tests/integration/c/run_artifact.c, linked against the built runtime."""
    library = driver.build_runtime()
    program = tmp_path_factory.mktemp("c") / "run_artifact"
    subprocess.run(
        [
            os.environ.get("CC") or "cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-g",
            "-I", str(driver.SOURCE_DIR), "-o", str(program), str(C_DRIVER), str(library),
            f"-Wl,-rpath,{library.parent}", "-lm",
        ],
        check=True,
    )
    return program


def valgrind(*command: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [
            "valgrind", "--error-exitcode=1", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
            *command,
        ],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "ERROR SUMMARY: 0 errors" in result.stderr
    return result


@VALGRIND
def test_c_runtime_under_valgrind(artifact, c_program):
    """A C program opens the artifact, runs it a few times on 2 threads, hits
    some error paths and closes it: no memory errors, no leaks."""
    result = valgrind(str(c_program), str(artifact), "2", "3")
    x = np.sin(0.1 * np.arange(ROWS * DEPTH)).reshape(ROWS, DEPTH).astype(np.float32)
    z = np.sin(0.1 * np.arange(ROWS * WIDTH) + 1).reshape(ROWS, WIDTH).astype(np.float32)
    sums = [float(line.split()[1]) for line in result.stdout.splitlines()]
    expected = [float(out.sum(dtype=np.float64)) for out in reference(x, z, network_plan()[1])]
    assert sums == pytest.approx(expected, rel=1e-4, abs=1e-3)


@VALGRIND
def test_failing_kernels_under_valgrind(fake_kernels, c_program, tmp_path):
    """Kernel errors raised on worker threads leak nothing either."""
    with pytest.raises(TconvError):
        run_fake(fake_kernels, tmp_path / "fake", 2, 4, fail_task=3)
    result = valgrind(str(c_program), str(tmp_path / "fake"), "2", "3", "--expect-kernel-error")
    assert "task 3 failed on purpose" in result.stdout


@VALGRIND
def test_compiled_network_under_valgrind(c_program, tmp_path, monkeypatch):
    """TVM kernels with scratch buffers (padded convolutions, a depthwise one
    with its channel-blocked copy) on 2 threads: the workspace cache reuses
    buffers across runs and frees them all, valgrind finds nothing. The
    kernels are built for AVX2 (znver3): valgrind 3.19 cannot decode AVX-512."""
    from tconv.lowering.tvm import target

    monkeypatch.setattr(target, "host_cpu", lambda: "znver3")
    from tconv.ir.builder import NetworkBuilder
    from tconv.ir.params import init_params
    from tconv.lowering.tvm.artifact import compile_artifact
    from tconv.semantics.reference import run

    b = NetworkBuilder("padded", (1, 8, 20, 20))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="conv"))
    x = b.relu6(b.conv2d(x, 16, 3, padding=1, stride=2, groups=16, name="dw"))
    module = b.finish(b.conv2d(x, 8, 5, padding=2, name="wide"))
    params = init_params(module)
    compile_artifact(module, params, tmp_path / "padded")
    result = valgrind(str(c_program), str(tmp_path / "padded"), "2", "3")
    image = np.sin(0.1 * np.arange(8 * 20 * 20)).reshape(1, 8, 20, 20).astype(np.float32)
    (expected,) = run(module, params, image)
    (total,) = [float(line.split()[1]) for line in result.stdout.splitlines()]
    assert total == pytest.approx(float(expected.sum(dtype=np.float64)), rel=1e-4, abs=1e-3)


# ------------------------------------------------------- thread sanitizer


@pytest.fixture(scope="module")
def tsan_program(tmp_path_factory) -> Path:
    """tests/integration/c/run_artifact.c built together with the runtime's
    sources under ThreadSanitizer (skipped where the compiler cannot)."""
    program = tmp_path_factory.mktemp("tsan") / "run_artifact"
    built = subprocess.run(
        [
            os.environ.get("CC") or "cc", "-std=c11", "-g", "-O1", "-fsanitize=thread", "-pthread",
            "-rdynamic", "-I", str(driver.SOURCE_DIR), "-o", str(program), str(C_DRIVER),
            *(str(driver.SOURCE_DIR / name) for name in driver.SOURCES), *driver.LIBS, "-lm",
        ],
        capture_output=True, text=True,
    )
    if built.returncode != 0:
        pytest.skip(f"no ThreadSanitizer build: {built.stderr[-300:]}")
    return program


def test_pool_under_thread_sanitizer(tsan_program, tmp_path):
    """TVM kernels (no barrier: tasks are claimed and taken over) on 3
    threads, 2 CPUs, 100 runs: ThreadSanitizer finds no race in the pool."""
    from tconv.ir.builder import NetworkBuilder
    from tconv.ir.params import init_params
    from tconv.lowering.tvm.artifact import compile_artifact

    b = NetworkBuilder("small", (1, 8, 12, 12))
    x = b.relu(b.conv2d(b.input, 16, 3, padding=1, name="conv"))
    module = b.finish(b.conv2d(x, 8, 3, padding=1, groups=8, name="grouped"))
    compile_artifact(module, init_params(module), tmp_path / "small")
    result = subprocess.run(
        [str(tsan_program), str(tmp_path / "small"), "3", "100"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1"},
    )
    assert result.returncode == 0 and "ThreadSanitizer" not in result.stderr, result.stderr[-4000:]
