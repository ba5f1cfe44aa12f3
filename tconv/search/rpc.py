"""Measuring convolution kernels on remote devices through TVM's RPC.

    measurer = RpcMeasurer(parse_rpc_target("rpc:rasp4@10.0.0.2:9190"), target=board_target)
    tune(module, database, budget_s=600, threads=4, measure_fn=measurer.measure)

TVM's RPC has three parts: a *tracker* that keeps a queue of devices per
*key* (the kind of board: `rasp4`, `jetson`), *servers* that run on the
devices and register with the tracker under their key, and clients that ask
the tracker for a free device of a key and get a session with it. A session
uploads files to the server's scratch directory, loads them as modules and
runs their functions on the server's devices; `time_evaluator` then times a
function on the device itself, so the network round trip is not measured.

On a board:

    python -m tvm.exec.rpc_server --tracker TRACKER_HOST:9190 --key rasp4

and on the host, `python -m tvm.exec.rpc_tracker --port 9190` (the tracker
needs the `tornado` package).

`RpcMeasurer.measure` is `tuning.measure` done remotely: it builds the same
one-convolution network (`tuning.conv_network`) for the remote target,
exports its kernel as a shared library (`kernels.so`, as the artifacts hold
it), asks the tracker for a device, uploads and loads the library there, and
times the kernel with the remote `time_evaluator` on the packed parameters
and a random input, choosing the number of runs per repeat as `measure`
does. Each measurement is one session, so measurements spread over every
free device of the key; `servers_used` counts where each went.

`LocalTracker` starts a tracker and N servers on loopback, each a process
of its own on a free port (for the tests, and `tconv optimize --target
rpc:local`): the same protocol and code paths as remote boards, on this CPU.

Targets are named `rpc:KEY` (the tracker at `$TVM_TRACKER_HOST:$TVM_TRACKER_PORT`,
else 127.0.0.1:9190) or `rpc:KEY@HOST:PORT` (`parse_rpc_target`).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tconv.errors import TconvError
from tconv.search.tuning import (
    KERNELS,
    Knobs,
    Workload,
    conv_network,
    measured_calls,
    measurement_params,
    runs_per_repeat,
)

if TYPE_CHECKING:
    from tvm.target import Target

DEFAULT_TRACKER_HOST = "127.0.0.1"
DEFAULT_TRACKER_PORT = 9190
"""TVM's own default tracker port."""

LOCAL_KEY = "local"
"""The device key of `LocalTracker`'s servers (`--target rpc:local`)."""

LIBRARY_FILE = "kernels.so"

CONNECT_TIMEOUT_S = 5.0
"""How long connecting to the tracker may take before it counts as unreachable."""


# Naming a remote target ------------------------------------------------------------


@dataclass(frozen=True)
class RpcTarget:
    """Devices of `key` behind the tracker at `host`:`port`."""

    key: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"rpc:{self.key}@{self.host}:{self.port}"


def is_rpc_target(text: str) -> bool:
    return text.startswith("rpc:")


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise TconvError(f"error: {what}: expected a port number (1-65535), got '{text}'")
    return int(text)


def parse_rpc_target(text: str) -> RpcTarget:
    """`rpc:KEY` or `rpc:KEY@HOST:PORT` as an RpcTarget; without an address,
    the tracker is `$TVM_TRACKER_HOST`:`$TVM_TRACKER_PORT` (TVM's variables),
    else 127.0.0.1:9190."""
    expected = "expected rpc:KEY or rpc:KEY@HOST:PORT"
    if not is_rpc_target(text):
        raise TconvError(f"error: target '{text}': {expected}")
    key, at, address = text.removeprefix("rpc:").partition("@")
    if not key or any(c.isspace() or c in ":@" for c in key):
        raise TconvError(f"error: target '{text}': {expected}, with a device key of letters, digits, '-' or '_'")
    if at:
        host, colon, port = address.rpartition(":")
        if not colon or not host:
            raise TconvError(f"error: target '{text}': {expected}; '{address}' is not HOST:PORT")
        return RpcTarget(key, host, _port(port, f"target '{text}'"))
    host = os.environ.get("TVM_TRACKER_HOST") or DEFAULT_TRACKER_HOST
    port = os.environ.get("TVM_TRACKER_PORT")
    return RpcTarget(key, host, _port(port, "$TVM_TRACKER_PORT") if port else DEFAULT_TRACKER_PORT)


# The tracker protocol ----------------------------------------------------------------


class TrackerClient:
    """One connection to a TVM RPC tracker: its summary, and device requests
    that fail with a TconvError instead of waiting forever (TVM's own
    `TrackerSession` retries an unreachable tracker for a minute and waits
    for a device of an unknown key indefinitely)."""

    def __init__(self, host: str, port: int, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        from tvm.rpc import base

        self.host, self.port = host, port
        self._base = base
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout_s)
            self._sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            magic = struct.unpack("<i", base.recvall(self._sock, 4))[0]
        except OSError as err:
            raise TconvError(
                f"error: cannot reach the RPC tracker at {host}:{port}: {err.strerror or err}; "
                f"start one with `python -m tvm.exec.rpc_tracker --port {port}`"
            ) from None
        if magic != base.RPC_TRACKER_MAGIC:
            self.close()
            raise TconvError(f"error: {host}:{port} answered, but it is not a TVM RPC tracker")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> TrackerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, message: list, timeout_s: float | None = CONNECT_TIMEOUT_S):
        self._sock.settimeout(timeout_s)
        self._base.sendjson(self._sock, message)
        return self._base.recvjson(self._sock)

    def summary(self) -> dict:
        """What the tracker knows: `{"queue_info": {KEY: {"free": n, "pending": n}},
        "server_info": [{"key": "server:KEY", "addr": [host, port]}, ...]}`."""
        reply = self._call([self._base.TrackerCode.SUMMARY])
        if reply[0] != self._base.TrackerCode.SUCCESS:
            raise TconvError(f"error: the RPC tracker at {self.host}:{self.port} refused a summary: {reply}")
        return reply[1]

    def servers(self, key: str) -> list[tuple[str, int]]:
        """The addresses of the servers registered under `key`."""
        servers = self.summary()["server_info"]
        return sorted((str(s["addr"][0]), int(s["addr"][1])) for s in servers if s.get("key") == f"server:{key}")

    def require(self, key: str) -> list[tuple[str, int]]:
        """The servers registered under `key`; none is a TconvError that names
        the keys the tracker has."""
        servers = self.servers(key)
        if not servers:
            keys = sorted({str(s["key"]).removeprefix("server:") for s in self.summary()["server_info"]})
            raise TconvError(
                f"error: the RPC tracker at {self.host}:{self.port} has no device with key '{key}' "
                f"(registered keys: {', '.join(keys) or 'none'})"
            )
        return servers

    def request(self, key: str, timeout_s: float) -> tuple[str, int, str]:
        """A free device of `key`: its server's host, port and the match key
        to connect with. A key no server has registered, or no device coming
        free within `timeout_s`, is a TconvError."""
        registered = self.require(key)
        try:
            reply = self._call([self._base.TrackerCode.REQUEST, key, "", 1], timeout_s)
        except TimeoutError:
            self.close()  # the tracker drops the pending request with the connection
            raise TconvError(
                f"error: no device with key '{key}' came free at the RPC tracker at {self.host}:{self.port} "
                f"within {timeout_s:g} s ({len(registered)} registered, all busy)"
            ) from None
        if reply[0] != self._base.TrackerCode.SUCCESS:
            raise TconvError(f"error: the RPC tracker at {self.host}:{self.port} refused a device of '{key}': {reply}")
        host, port, match_key = reply[1]
        return str(host), int(port), str(match_key)


# Measuring --------------------------------------------------------------------------


def _last_line(err: Exception) -> str:
    """The message of a (possibly multi-line, traceback-carrying) TVM error."""
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else type(err).__name__


class RpcMeasurer:
    """Times convolution kernels on a device of `rpc.key`, built for `target`
    (default: this machine's CPU, right for loopback servers). `cc` is the
    compiler that links the shared library for the device (a cross-compiler
    such as `aarch64-linux-gnu-g++` for an ARM board; default: TVM's, for
    this machine). `timeout_s` bounds the wait for a free device."""

    def __init__(
        self,
        rpc: RpcTarget,
        target: Target | None = None,
        cc: str | None = None,
        timeout_s: float = 60.0,
        session_timeout_s: float = 300.0,
        repeat: int = 5,
    ) -> None:
        self.rpc = rpc
        self._target = target
        self.cc = cc
        self.timeout_s = timeout_s
        self.session_timeout_s = session_timeout_s
        self.repeat = repeat
        self.servers_used: Counter[tuple[str, int]] = Counter()
        """How many measurements each server (host, port) ran."""

    @property
    def target(self) -> Target:
        if self._target is None:
            from tconv.lowering.tvm.target import cpu_target

            self._target = cpu_target()
        return self._target

    @property
    def target_key(self) -> str:
        """The database key of measurements on these devices: the device key and
        the compile target (as `tuning.target_key` names the local CPU)."""
        kind, attrs = self.target.kind.name, self.target.attrs
        return (
            f"rpc:{self.rpc.key} {kind} -mcpu={attrs.get('mcpu', '')} threads={attrs.get('num-cores', '')} "
            f"kernels={KERNELS}"
        )

    def check(self) -> list[tuple[str, int]]:
        """The servers of the key now registered; a TconvError if the tracker
        is unreachable or has none (so that a search fails before it starts)."""
        with TrackerClient(self.rpc.host, self.rpc.port) as tracker:
            return tracker.require(self.rpc.key)

    def build(self, workload: Workload, knobs: Knobs, directory: Path):
        """The kernel of `workload` with `knobs`, compiled for the target and
        exported to `directory`/kernels.so; its program and parameter store."""
        from tconv.ir.params import bind_params
        from tconv.lowering.tvm.build import build_kernels

        module = conv_network(workload, knobs)
        executable, program = build_kernels(module, self.target)
        library = directory / LIBRARY_FILE
        if self.cc:
            from tvm.support import cc as tvm_cc

            executable.export_library(str(library), fcompile=tvm_cc.cross_compiler(self.cc))
        else:
            executable.export_library(str(library))
        return library, program, program.materialize(bind_params(module, measurement_params(module)))

    def measure(self, workload: Workload, knobs: Knobs) -> float:
        """Median seconds of one run of the workload's kernel with `knobs`, on a
        device of the key (the signature of `tuning.measure`, for `tune`)."""
        with tempfile.TemporaryDirectory(prefix="tconv-rpc-") as scratch:
            library, program, arrays = self.build(workload, knobs, Path(scratch))
            with TrackerClient(self.rpc.host, self.rpc.port) as tracker:
                host, port, match_key = tracker.request(self.rpc.key, self.timeout_s)
            failure = None
            try:
                measured = measured_calls(list(range(len(program.calls))), knobs, workload)
                seconds = self._time_remotely(host, port, match_key, library, program, arrays, measured)
            except Exception as err:  # tvm.error.RPCError and the like, raised by the device
                failure = _last_line(err)
        # Raised here, not in the handler: the error would keep the session's frame, and so the session, alive.
        if failure is not None:
            raise TconvError(
                f"error: measuring '{workload.key}' with knobs {knobs} on device '{self.rpc.key}' "
                f"({host}:{port}) failed: {failure}"
            )
        self.servers_used[(host, port)] += 1
        return seconds

    def _time_remotely(self, host, port, match_key, library, program, arrays, measured: list[int]) -> float:
        """One session: upload, load and run the kernels once in order (so
        that each reads what the one before wrote), then time those of the
        calls `measured` (the convolution's one, or a Winograd convolution's
        three): the sum of their fastest rounds. Every remote object lives in
        this frame, so the session closes when it returns."""
        import tvm
        from tvm import rpc

        session = rpc.connect(host, port, match_key, session_timeout=self.session_timeout_s)
        session.upload(str(library), LIBRARY_FILE)
        kernels = session.load_module(LIBRARY_FILE)
        device = session.cpu()
        rng = np.random.default_rng(0)
        tensors = {}
        for index in dict.fromkeys(i for call in program.calls for i in call.args):
            tensor = program.tensors[index]
            if tensor.kind == "activation":
                tensors[index] = tvm.runtime.empty(tensor.shape, "float32", device)
                continue
            array = rng.standard_normal(tensor.shape, dtype=np.float32) if tensor.kind == "input" else arrays[index]
            tensors[index] = tvm.runtime.tensor(np.ascontiguousarray(array, np.float32), device)
        calls = [(call.symbol, [tensors[i] for i in call.args]) for call in program.calls]
        for symbol, args in calls:
            kernels[symbol](*args)
        seconds = 0.0
        for symbol, args in (calls[index] for index in measured):
            probe = kernels.time_evaluator(symbol, device, number=1, repeat=1)
            number = runs_per_repeat(probe(*args).mean)
            timer = kernels.time_evaluator(symbol, device, number=number, repeat=self.repeat)
            seconds += float(min(timer(*args).results))  # the fastest round, as `tuning.measure`
        return seconds


# A tracker and servers on loopback ------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_TRACKER_MAIN = """
import sys
from tvm.rpc.tracker import PopenTrackerServerState
state = PopenTrackerServerState("127.0.0.1", int(sys.argv[1]), int(sys.argv[1]) + 1, silent=True)
state.thread.join()
"""

_SERVER_MAIN = """
import sys
from tvm.rpc.server import PopenRPCServerState
state = PopenRPCServerState(
    "127.0.0.1", int(sys.argv[1]), int(sys.argv[1]) + 1, tracker_addr=("127.0.0.1", int(sys.argv[2])),
    key=sys.argv[3], silent=True,
)
state.thread.join()
"""


class LocalTracker:
    """A TVM RPC tracker and `servers` device servers of key `key`, on
    loopback, each a process (and process group) of its own on a free port;
    the servers run kernels on this CPU. Stopping kills the process groups,
    sessions included.

        with LocalTracker(servers=2) as local:
            measurer = RpcMeasurer(local.target)
    """

    def __init__(self, servers: int = 2, key: str = LOCAL_KEY, start_timeout_s: float = 120.0) -> None:
        if servers < 1:
            raise TconvError(f"error: a local tracker needs at least one server, got {servers}")
        self.key = key
        self.count = servers
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self._processes: list[tuple[subprocess.Popen, object]] = []

    @property
    def target(self) -> RpcTarget:
        return RpcTarget(self.key, "127.0.0.1", self.port)

    def _spawn(self, code: str, *args: object) -> subprocess.Popen:
        log = tempfile.TemporaryFile()  # a file, not a pipe: a pipe nobody reads can fill and block
        process = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )
        self._processes.append((process, log))
        return process

    def _failed(self, process: subprocess.Popen, what: str) -> TconvError:
        log = next(log for p, log in self._processes if p is process)
        log.seek(0)
        lines = log.read().decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else "no message"
        return TconvError(f"error: the local RPC {what} exited ({process.returncode}): {reason}")

    def start(self) -> LocalTracker:
        deadline = time.monotonic() + self.start_timeout_s
        try:
            for _ in range(3):  # another process may take the free port first
                self.port = _free_port()
                tracker = self._spawn(_TRACKER_MAIN, self.port)
                # Started at once, as importing TVM is most of the start-up; a
                # server that finds no tracker yet retries (every 5 s).
                for _ in range(self.count):
                    self._spawn(_SERVER_MAIN, _free_port(), self.port, self.key)
                if self._wait_for_tracker(tracker, deadline):
                    break
                failure = self._failed(tracker, "tracker")
                self.stop()
            else:
                raise failure
            self._wait_for_servers(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_tracker(self, process: subprocess.Popen, deadline: float) -> bool:
        """Whether the tracker came up (False: it exited, most likely because the port was taken)."""
        from tvm.rpc import base

        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
                    if struct.unpack("<i", base.recvall(sock, 4))[0] == base.RPC_TRACKER_MAGIC:
                        return True
            except OSError:
                pass
            time.sleep(0.2)
        raise TconvError(f"error: the local RPC tracker did not start within {self.start_timeout_s:g} s")

    def _wait_for_servers(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            for process, _ in self._processes[1:]:
                if process.poll() is not None:
                    raise self._failed(process, "server")
            if len(self.servers()) == self.count:
                return
            time.sleep(0.2)
        raise TconvError(
            f"error: {len(self.servers())} of {self.count} local RPC servers registered "
            f"within {self.start_timeout_s:g} s"
        )

    def servers(self) -> list[tuple[str, int]]:
        """The (host, port) of each server now registered with the tracker."""
        with TrackerClient("127.0.0.1", self.port) as tracker:
            return tracker.servers(self.key)

    def stop(self) -> None:
        """Kill every process this tracker started, with their sessions."""
        import signal

        for process, log in reversed(self._processes):
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the group: the server's session processes too
            except ProcessLookupError:
                pass
            process.wait()
            log.close()
        self._processes.clear()

    def __enter__(self) -> LocalTracker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
