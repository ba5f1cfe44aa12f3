"""The plan format on the Python side: round trip, strict checks, artifacts.
(The C runtime's reading of bad plans is tested in tests/integration/test_c_runtime.py.)"""

from dataclasses import replace

import pytest

from tconv.runtime.plan import (
    DTYPE_BYTES,
    Call,
    Plan,
    PlanError,
    Tensor,
    format_plan,
    parse_plan,
    read_plan,
    write_artifact,
)


def small_plan(**changes) -> Plan:
    fields = dict(
        library="kernels.so",
        params="params.bin",
        params_bytes=64,
        arena_bytes=128,
        tensors=(
            Tensor("x", "arena", 0, (2, 4)),
            Tensor("w", "param", 0, (4, 4)),
            Tensor("y", "arena", 64, (2, 4)),
        ),
        inputs=(0,),
        outputs=(2,),
        calls=(Call("matmul", (0, 1, 2)),),
    )
    fields.update(changes)
    return Plan(**fields)


def test_round_trip():
    plan = small_plan()
    text = format_plan(plan)
    assert text.splitlines() == [
        "tconv-plan 1",
        "target cpu",
        "library kernels.so",
        "params params.bin 64",
        "arena 128",
        "tensor 0 x f32 arena 0 2 2 4",
        "tensor 1 w f32 param 0 2 4 4",
        "tensor 2 y f32 arena 64 2 2 4",
        "input 0",
        "output 2",
        "call matmul 3 0 1 2",
        "end",
    ]
    assert parse_plan(text) == plan
    commented = "# a comment\n\n" + text.replace("\n", "  \n").replace(" ", "\t", 3)
    assert parse_plan(commented) == plan
    # `target` is optional (cpu), and a cuda plan names its architecture.
    assert parse_plan(text.replace("target cpu\n", "")) == plan
    cuda = small_plan(target="cuda", arch="sm_90")
    assert "target cuda sm_90" in format_plan(cuda).splitlines()
    assert parse_plan(format_plan(cuda)) == cuda


def integer_plan() -> Plan:
    """f32 input and output around u8, i8 and i32 tensors in the arena and the parameters."""
    return small_plan(
        params_bytes=192,
        arena_bytes=256,
        tensors=(
            Tensor("x", "arena", 0, (2, 4)),
            Tensor("w", "param", 0, (4, 4), "i8"),
            Tensor("zero", "param", 64, (4,), "i32"),
            Tensor("q", "param", 128, (64,), "u8"),
            Tensor("xq", "arena", 64, (2, 4), "u8"),
            Tensor("acc", "arena", 128, (2, 4), "i32"),
            Tensor("y", "arena", 192, (2, 4)),
        ),
        inputs=(0,),
        outputs=(6,),
        calls=(Call("quantize", (0, 4)), Call("matmul", (4, 1, 2, 3, 5)), Call("dequantize", (5, 6))),
    )


def test_dtypes_round_trip():
    plan = integer_plan()
    text = format_plan(plan)
    assert [line for line in text.splitlines() if line.startswith("tensor")] == [
        "tensor 0 x f32 arena 0 2 2 4",
        "tensor 1 w i8 param 0 2 4 4",
        "tensor 2 zero i32 param 64 1 4",
        "tensor 3 q u8 param 128 1 64",
        "tensor 4 xq u8 arena 64 2 2 4",
        "tensor 5 acc i32 arena 128 2 2 4",
        "tensor 6 y f32 arena 192 2 2 4",
    ]
    assert parse_plan(text) == plan
    assert [t.nbytes for t in plan.tensors] == [32, 16, 16, 64, 8, 32, 32]
    assert DTYPE_BYTES == {"f32": 4, "u8": 1, "i8": 1, "i32": 4}


def test_dtypes_match_the_kernel_programs():
    """plan.py keeps its own table (it imports nothing of tconv.kernels): the
    same tokens and sizes as program.DTYPES."""
    from tconv.kernels.program import DTYPES

    assert {token: dtype.itemsize for token, dtype in DTYPES.items()} == DTYPE_BYTES


def test_a_tensors_extent_is_by_its_dtype():
    """64 u8 elements fit the last 64 bytes of the parameters; 64 f32 ones do not."""
    tensors = integer_plan().tensors
    assert tensors[3].offset + tensors[3].nbytes == integer_plan().params_bytes
    as_f32 = tensors[:3] + (Tensor("q", "param", 128, (64,)),) + tensors[4:]
    with pytest.raises(PlanError, match=r"tensor 3: bytes \[128, 384\) lie outside the parameters \(192 bytes\)"):
        format_plan(replace(integer_plan(), tensors=as_f32))
    text = format_plan(integer_plan()).replace("tensor 3 q u8", "tensor 3 q f32")
    with pytest.raises(PlanError, match=r"plan.txt:9:\d+: error: tensor 3: bytes \[128, 384\) lie outside"):
        parse_plan(text)


@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            "tensor 1 w i8",
            "tensor 1 w f16",
            "plan.txt:7:12: error: tensor 1: dtype `f16` is not supported (expected one of f32, u8, i8, i32)",
        ),
        ("tensor 1 w i8", "tensor 1 w F32", "dtype `F32` is not supported"),
        ("tensor 0 x f32", "tensor 0 x u8", "plan.txt:13:7: error: input 0 (x) is u8; inputs and outputs are f32"),
        ("tensor 6 y f32", "tensor 6 y i32", "plan.txt:14:8: error: output 6 (y) is i32; inputs and outputs are f32"),
    ],
)
def test_bad_dtypes_are_located(old, new, message):
    text = format_plan(integer_plan())
    assert old in text
    with pytest.raises(PlanError) as error:
        parse_plan(text.replace(old, new))
    assert message in str(error.value)


def test_cuda_runtimes_refuse_integer_tensors(tmp_path):
    """The cuda runners have float32 kernels only: a plan with an integer
    tensor is refused by name before anything is loaded."""
    from tconv.runtime.cuda import CudaRuntime
    from tconv.runtime.cuda_driver import BUNDLE_FILE, DriverRuntime

    message = r"error: cuda runtime: tensor 1 \(w\) is i8; int8 kernels run on the cpu only"
    for library, runtime in ((BUNDLE_FILE, DriverRuntime), ("kernels.so", CudaRuntime)):
        plan = replace(integer_plan(), library=library, target="cuda", arch="sm_90")
        (tmp_path / "plan.txt").write_text(format_plan(plan))
        with pytest.raises(PlanError, match=message):
            runtime(tmp_path)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(tensors=(Tensor("x", "arena", 32, (2, 4)),)), "offset 32 is not a multiple of 64"),
        (dict(arena_bytes=64), r"tensor 2: bytes \[64, 96\) lie outside the arena"),
        (dict(outputs=(1,)), r"output 1 \(w\) is a parameter"),
        (dict(inputs=(0, 0)), "is an input twice"),
        (dict(calls=(Call("mat-mul", (0,)),)), "not a kernel symbol"),
        (dict(calls=(Call("matmul", (0, 7)),)), "unknown tensor id 7"),
        (dict(calls=()), "at least one call"),
        (dict(library="../k.so"), "not a plain file name"),
        (dict(tensors=(Tensor("a b", "arena", 0, (1,)),)), "has spaces"),
        (dict(target="tpu"), "unknown target `tpu`"),
        (dict(target="cuda"), "is not a CUDA architecture"),
        (dict(target="cpu", arch="sm_90"), "target cpu takes no architecture"),
        (
            dict(tensors=(Tensor("x", "arena", 0, (2, 4), "f16"),)),
            r"tensor 0: dtype `f16` is not supported \(expected one of f32, u8, i8, i32\)",
        ),
        (
            dict(tensors=(Tensor("x", "arena", 0, (2, 4), "u8"),) + small_plan().tensors[1:]),
            r"input 0 \(x\) is u8; inputs and outputs are f32",
        ),
        (
            dict(tensors=small_plan().tensors[:2] + (Tensor("y", "arena", 64, (2, 4), "i8"),)),
            r"output 2 \(y\) is i8; inputs and outputs are f32",
        ),
    ],
)
def test_bad_plans_are_not_written(changes, message):
    with pytest.raises(PlanError, match=message):
        format_plan(small_plan(**changes))


def test_write_artifact_replaces_only_artifacts(tmp_path):
    library = tmp_path / "k.so"
    library.write_bytes(b"ELF")
    target = tmp_path / "out" / "net"
    write_artifact(target, small_plan(), bytes(64), library)
    assert sorted(p.name for p in target.iterdir()) == [
        "MANIFEST", "kernels.so", "params.bin", "plan.txt"
    ]
    assert read_plan(target) == small_plan()
    write_artifact(target, small_plan(params_bytes=128), bytes(128), library)
    assert (target / "params.bin").stat().st_size == 128
    assert [p.name for p in target.parent.iterdir()] == ["net"]

    with pytest.raises(PlanError, match="blob has 3 bytes"):
        write_artifact(target, small_plan(), bytes(3), library)
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(PlanError, match="not a tconv artifact"):
        write_artifact(other, small_plan(), bytes(64), library)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(PlanError, match="cannot write the artifact"):
        write_artifact(tmp_path / "new", small_plan(), bytes(64), tmp_path / "missing.so")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "k.so", "out"]


def test_read_plan_errors(tmp_path):
    with pytest.raises(PlanError, match="plan.txt: error: cannot read the plan"):
        read_plan(tmp_path)
    (tmp_path / "plan.txt").write_bytes(b"tconv-plan 1\n\xff\n")
    with pytest.raises(PlanError, match="not UTF-8"):
        read_plan(tmp_path)


def test_plan_program_writes_each_tensor_in_its_dtype():
    """`kernels.artifact.plan_program`: integer parameters go into the blob
    in their own dtype, integer activations take their own size in the
    arena, and the plan names each tensor's dtype."""
    import numpy as np

    from tconv.kernels import program as kp
    from tconv.kernels.artifact import plan_program

    params = {
        "w": np.random.default_rng(0).standard_normal((16, 4, 1, 1)).astype(np.float32),
        "b": np.arange(16, dtype=np.float32),
    }
    scales = (("weight_scales", (0.05,)),)
    weight = kp.Recipe(
        "int8_weight", (("weight", "w"),), scales + (("groups", 1), ("in_channels", 4), ("depthwise", 0))
    )
    offset = kp.Recipe(
        "int8_offset", (("weight", "w"), ("bias", "b")), scales + (("x_scale", 0.1), ("x_zero_point", 128))
    )
    arrays = [kp.derive(weight, params), kp.derive(offset, params)]
    assert [a.dtype for a in arrays] == [np.int8, np.int32]
    program = kp.KernelProgram(
        tensors=[
            kp.Tensor(0, "input", (1, 4, 2, 2), "arg0", index=0),
            kp.Tensor(1, "derived", arrays[0].shape, "w:int8_weight", recipe=weight, dtype="i8"),
            kp.Tensor(2, "derived", arrays[1].shape, "w:int8_offset", recipe=offset, dtype="i32"),
            kp.Tensor(3, "activation", (1, 2, 2, 16), "%0", dtype="u8"),
            kp.Tensor(4, "activation", (1, 16, 2, 2), "%1"),
        ],
        calls=[
            kp.KernelCall("quantize", (0, 3), ("quantize",)),
            kp.KernelCall("conv", (3, 1, 2, 4), ("conv2d",)),
        ],
        outputs=[4],
    )
    plan, blob = plan_program(program, params)
    assert [t.dtype for t in plan.tensors] == ["f32", "i8", "i32", "u8", "f32"]
    assert [t.nbytes for t in plan.tensors] == [64, 64, 64, 64, 256]
    assert len(blob) == plan.params_bytes == 128
    for tensor, array in zip(plan.tensors[1:3], arrays):
        assert bytes(blob[tensor.offset : tensor.offset + tensor.nbytes]) == array.tobytes()
    assert parse_plan(format_plan(plan)) == plan
    assert "tensor 3 %0 u8 arena" in format_plan(plan)
