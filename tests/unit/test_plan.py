"""The plan format on the Python side: round trip, strict checks, artifacts.
(The C runtime's reading of bad plans is tested in tests/integration/test_c_runtime.py.)"""

import pytest

from tconv.runtime.plan import (
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
