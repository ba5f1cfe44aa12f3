"""Damaged, hostile or unwritable parameter stores are user errors, and an
interrupted write leaves nothing behind.

Each broken store goes through the reader (`load_store`) and through the
commands that read stores (`tconv run`, `tconv export`, `tconv-opt` with a NAS
pass): exit status 1, one message naming the store, no traceback, no internal
error, no output.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tconv.cli.files import write_network
from tconv.cli.main import main as tconv_main
from tconv.cli.opt import main as opt_main
from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import MAX_NAME_BYTES, ParamError, init_params, load_store, save_store


def small_network(weight: str = "conv2.weight"):
    """Two convolutions, the second one groupable (8 input channels)."""
    b = NetworkBuilder("small", (1, 3, 8, 8))
    x = b.relu(b.conv2d(b.input, 8, 3, name="conv1"))
    x = b.conv2d(x, 8, 3, name="conv2")
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 4, name="fc"))
    if weight != "conv2.weight":
        from tconv.ir.ops import ParamOp
        from xdsl.dialects.builtin import StringAttr

        for op in module.walk():
            if isinstance(op, ParamOp) and op.param_name == "conv2.weight":
                op.properties["sym_name"] = StringAttr(weight)
    return module


@pytest.fixture
def network(tmp_path: Path) -> Path:
    path = tmp_path / "net.mlir"
    write_network(path, small_network(), init_params(small_network()))
    return path


def _arrays(network: Path) -> dict[str, np.ndarray]:
    with np.load(network.with_suffix(".npz")) as data:
        return {name: data[name] for name in data.files}


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _rewrite(store: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> None:
    store.unlink()
    with zipfile.ZipFile(store, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _members(network: Path) -> dict[str, bytes]:
    return {f"{name}.npy": _npy(array) for name, array in _arrays(network).items()}


def raw_member(network: Path) -> None:
    members = _members(network)
    members["conv2.weight"] = b"not an array"
    del members["conv2.weight.npy"]
    _rewrite(network.with_suffix(".npz"), members)


def control_character_name(network: Path) -> None:
    """A member name with a record separator, which splits a message printed raw into two lines."""
    members = _members(network)
    members["conv2.weight\x1enpy"] = members.pop("conv2.weight.npy")
    _rewrite(network.with_suffix(".npz"), members)


def unreadable_zip_version(network: Path) -> None:
    """A central directory entry asking for zip version 8.4 (byte 6 of the entry: version needed)."""
    store = network.with_suffix(".npz")
    data = bytearray(store.read_bytes())
    entry = data.index(b"PK\x01\x02")
    data[entry + 6] = 84
    store.write_bytes(bytes(data))


def npy_as_store(network: Path) -> None:
    network.with_suffix(".npz").write_bytes(_npy(np.zeros(3, np.float32)))


def corrupt_deflate(network: Path) -> None:
    store = network.with_suffix(".npz")
    _rewrite(store, _members(network), zipfile.ZIP_DEFLATED)
    data = bytearray(store.read_bytes())
    start = data.index(b"conv1.weight.npy") + len("conv1.weight.npy")  # its compressed bytes follow
    for index in range(start + 2, start + 12):
        data[index] ^= 0xFF
    store.write_bytes(bytes(data))


def symlink_loop(network: Path) -> None:
    store = network.with_suffix(".npz")
    store.unlink()
    store.symlink_to(store.name)


def string_entry(network: Path) -> None:
    members = _members(network)
    members["conv2.weight.npy"] = _npy(np.full((8, 8, 3, 3), "ab"))
    _rewrite(network.with_suffix(".npz"), members)


def pickled_entry(network: Path) -> None:
    members = _members(network)
    members["conv2.weight.npy"] = _npy(np.full((8, 8, 3, 3), None, dtype=object), allow_pickle=True)
    _rewrite(network.with_suffix(".npz"), members)


def huge_shape(network: Path) -> None:
    """A header claiming 400 TB, in a member of 64 data bytes."""
    members = _members(network)
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100, 100), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    members["conv2.weight.npy"] = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)
    _rewrite(network.with_suffix(".npz"), members)


def truncated(network: Path) -> None:
    store = network.with_suffix(".npz")
    store.write_bytes(store.read_bytes()[:700])


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "raw member": (raw_member, "member 'conv2.weight' is not a .npy array"),
    "control character in a name": (control_character_name, "member 'conv2.weight\\x1enpy' is not a .npy array"),
    "unreadable zip version": (unreadable_zip_version, "not a readable zip archive (zip file version 8.4)"),
    "npy as store": (npy_as_store, "is a single .npy array; a parameter store is an .npz archive"),
    "corrupt deflate": (corrupt_deflate, "corrupt parameter store: entry 'conv1.weight' cannot be read"),
    "symlink loop": (symlink_loop, "cannot read the parameter store: Too many levels of symbolic links"),
    "string entry": (string_entry, "entry 'conv2.weight' holds <U2 values; a parameter store holds numbers"),
    "pickled entry": (pickled_entry, "entry 'conv2.weight' holds Python objects"),
    "huge shape": (huge_shape, "claims shape 100000x100000x100x100 of float32 (400000000000000 bytes) but holds 64"),
    "truncated": (truncated, "corrupt parameter store"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_the_reader_refuses_a_broken_store(network: Path, case: str):
    damage, message = BROKEN[case]
    damage(network)
    with pytest.raises(ParamError) as caught:
        load_store(network.with_suffix(".npz"))
    assert str(caught.value).startswith(f"{network.with_suffix('.npz')}: error: ")
    assert message in str(caught.value)


COMMANDS = {
    "run": lambda net, out: (tconv_main, ["run", str(net)]),
    "export": lambda net, out: (tconv_main, ["export", str(net), "-o", str(out / "net.onnx")]),
    "tconv-opt": lambda net, out: (opt_main, [str(net), "-p", "tconv-group{groups=2}", "-o", str(out / "o.mlir")]),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BROKEN)
def test_commands_refuse_a_broken_store(network: Path, tmp_path: Path, capsys, case: str, command: str):
    damage, message = BROKEN[case]
    damage(network)
    out = tmp_path / "out"
    out.mkdir()
    main, argv = COMMANDS[command](network, out)
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert err.startswith(f"{network.with_suffix('.npz')}: error: ") and message in err, err
    assert list(out.iterdir()) == []


def test_a_huge_shape_is_not_blamed_on_memory(network: Path, capsys):
    huge_shape(network)
    assert tconv_main(["run", str(network)]) == 1
    err = capsys.readouterr().err
    assert "out of memory" not in err and "damaged or truncated" in err


# NAS passes check the entries they read, as `tconv run` does.


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (np.zeros((8, 8, 1, 3), np.float32), "parameter 'conv2.weight': {store} has shape 8x8x1x3, the IR expects 8x8x3x3"),
        (np.zeros((8, 8, 3, 3), np.int32), "parameter 'conv2.weight': {store} holds int32, expected float32"),
        (None, "parameter 'conv2.weight' is missing from {store}"),
    ],
    ids=["shape", "dtype", "missing"],
)
def test_nas_passes_refuse_entries_that_do_not_fit(network: Path, tmp_path: Path, capsys, entry, message: str):
    arrays = _arrays(network)
    if entry is None:
        del arrays["conv2.weight"]
    else:
        arrays["conv2.weight"] = entry
    store = network.with_suffix(".npz")
    np.savez(store, **arrays)
    output = tmp_path / "out.mlir"
    status = opt_main([str(network), "-p", "tconv-group{groups=2}", "-o", str(output)])
    err = capsys.readouterr().err
    assert status == 1, err
    line = next(n for n, text in enumerate(network.read_text().splitlines(), 1) if '"conv2.weight"' in text)
    assert re.match(rf"{re.escape(str(network))}:{line}:\d+: error: ", err), err
    assert message.format(store=store) in err
    assert not output.exists()


def test_a_nas_pass_checks_a_store_in_memory_too():
    from tconv.passes.nas.group import GroupPass
    from tconv.passes.nas.store import ParamStore, using_store

    module = small_network()
    arrays = init_params(module)
    arrays["conv2.weight"] = arrays["conv2.weight"][:, :, :1]
    with using_store(ParamStore(arrays)), pytest.raises(ParamError, match="has shape 8x8x1x3, the IR expects 8x8x3x3"):
        GroupPass(groups=2).apply(None, module)


# Names the store cannot hold.


def test_a_name_too_long_for_a_store_is_refused_at_its_op(tmp_path: Path):
    name = "w" * 65536
    module = small_network(name)
    path = tmp_path / "net.mlir"
    with pytest.raises(ParamError, match=rf"param: the name 'w+\.\.\.' is 65536 bytes long; a parameter store "
                                          rf"holds names of at most {MAX_NAME_BYTES} bytes"):
        write_network(path, module, init_params(module))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ParamError, match=r"out\.npz: error: cannot write parameter 'w+\.\.\.'"):
        save_store(tmp_path / "out.npz", {name: np.zeros(1)})
    assert list(tmp_path.iterdir()) == []


def test_tconv_opt_refuses_to_write_a_name_too_long_for_a_store(tmp_path: Path, capsys):
    name = "w" * (MAX_NAME_BYTES + 1)  # the zip format still holds it: the input's store can
    module = small_network(name)
    path = tmp_path / "net.mlir"
    from tconv.ir.loader import module_text

    path.write_text(module_text(module))
    np.savez(tmp_path / "net.npz", **init_params(module))
    output = tmp_path / "out.mlir"
    status = opt_main([str(path), "-p", "tconv-set-batch{batch=2}", "-o", str(output)])
    err = capsys.readouterr().err
    assert status == 1, err
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: error: param: the name 'w+\.\.\.' is {MAX_NAME_BYTES + 1} "
                    "bytes long", err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.mlir", "net.npz"]


# Interrupted writes.

SLOW_WRITE = textwrap.dedent(
    """
    import pathlib, sys, time
    import numpy as np
    savez = np.savez

    def slow_savez(*args, **kwargs):
        savez(*args, **kwargs)
        pathlib.Path(sys.argv[1]).touch()  # the temporary store is written: signal now
        time.sleep(60)

    np.savez = slow_savez
    if sys.argv[2] == "tconv-opt":
        from tconv.cli.opt import main
    else:
        from tconv.cli.main import main
    sys.exit(main(sys.argv[3:]))
    """
)


def test_a_signal_while_a_store_is_written_leaves_no_temporary_file(network: Path, tmp_path: Path):
    """SIGINT and SIGTERM, to `tconv-opt` and to `tconv`, mid-write: one line,
    128 + the signal's number, no traceback, nothing left in the folder."""
    cases = [
        ("tconv-opt", signal.SIGINT, ["-p", "tconv-group{groups=2}"], 130),
        ("tconv-opt", signal.SIGTERM, ["-p", "tconv-group{groups=2}"], 143),
        ("tconv", signal.SIGTERM, None, 143),
    ]
    running = []
    for index, (program, signum, pipeline, status) in enumerate(cases):
        folder = tmp_path / f"case{index}"
        folder.mkdir()
        marker = tmp_path / f"written{index}"
        if program == "tconv-opt":
            argv = [str(network), *pipeline, "-o", str(folder / "out.mlir")]
        else:
            argv = ["zoo", "resnet18", "--dataset", "cifar10", "-o", str(folder / "out.mlir")]
        process = subprocess.Popen(
            [sys.executable, "-c", SLOW_WRITE, str(marker), program, *argv],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        running.append((process, marker, folder, signum, status, program))
    for process, marker, folder, signum, status, program in running:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the store was never written"
            time.sleep(0.05)
        assert any(name.startswith(".") for name in os.listdir(folder))  # the temporary exists
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
        assert process.returncode == status, err
        assert err.strip().splitlines()[-1] == f"{program}: interrupted", err
        assert "Traceback" not in err and "KeyboardInterrupt" not in err
        assert os.listdir(folder) == [], os.listdir(folder)
