"""The CPU's floating-point peak, measured: a loop of independent fused
multiply-adds on the widest float32 vectors this CPU has, compiled by
llvmlite for the host (its CPU name and features, as the LLVM backend
compiles kernels), run on every thread at once.

A vendor sgemm is not a peak: torch's 4096² sgemm ran at 99 GFLOP/s on one
thread of this Zen 5, where tconv's own 3×3 convolutions reached 256, because
the BLAS it calls does not use the CPU's full vector width there.

    .venv/bin/python bench/fma_peak.py 1 2      # GFLOP/s on 1 thread, then on 2
"""

from __future__ import annotations

import ctypes
import functools
import sys
import threading
import time

ACCUMULATORS = 12
"""Independent FMA chains: enough to cover an FMA's latency times the FMA
units (4 cycles × 2 units on Zen 4/5 and Skylake-X), few enough to stay in
registers (16 on AVX2, 32 on AVX-512)."""


def vector_width(features: str) -> int:
    """float32 lanes of the widest vector the host's features allow."""
    enabled = {flag[1:] for flag in features.split(",") if flag.startswith("+")}
    if "avx512f" in enabled:
        return 16
    if "avx" in enabled:
        return 8
    return 4


def fma_loop_ir(width: int, accumulators: int = ACCUMULATORS) -> str:
    """`float fma_loop(i64 n, float a, float b)`: n iterations of
    `accumulators` vector FMAs (acc = acc * a + b); returns a lane of their sum
    so that nothing is dead."""
    vec = f"<{width} x float>"
    lines = [
        f"declare {vec} @llvm.fma.v{width}f32({vec}, {vec}, {vec})",
        "define float @fma_loop(i64 %n, float %a, float %b) {",
        "entry:",
        f"  %a0 = insertelement {vec} poison, float %a, i32 0",
        f"  %av = shufflevector {vec} %a0, {vec} poison, <{width} x i32> zeroinitializer",
        f"  %b0 = insertelement {vec} poison, float %b, i32 0",
        f"  %bv = shufflevector {vec} %b0, {vec} poison, <{width} x i32> zeroinitializer",
        "  br label %loop",
        "loop:",
        "  %i = phi i64 [0, %entry], [%next, %loop]",
    ]
    for k in range(accumulators):
        lines.append(f"  %acc{k} = phi {vec} [%bv, %entry], [%new{k}, %loop]")
    for k in range(accumulators):
        lines.append(f"  %new{k} = call {vec} @llvm.fma.v{width}f32({vec} %acc{k}, {vec} %av, {vec} %bv)")
    lines += [
        "  %next = add i64 %i, 1",
        "  %more = icmp ult i64 %next, %n",
        "  br i1 %more, label %loop, label %done",
        "done:",
    ]
    total = "%new0"
    for k in range(1, accumulators):
        lines.append(f"  %sum{k} = fadd {vec} {total}, %new{k}")
        total = f"%sum{k}"
    lines += [f"  %lane = extractelement {vec} {total}, i32 0", "  ret float %lane", "}"]
    return "\n".join(lines) + "\n"


@functools.cache
def _compiled():
    """(the execution engine, which must outlive the function; the
    JIT-compiled loop as a ctypes function; float32 FLOPs per iteration)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    features = llvm.get_host_cpu_features().flatten()
    width = vector_width(features)
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, opt=3
    )
    module = llvm.parse_assembly(fma_loop_ir(width))
    module.verify()
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    function = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float, ctypes.c_float)(
        engine.get_function_address("fma_loop")
    )
    return engine, function, 2 * width * ACCUMULATORS


def fma_peak(threads: int, seconds: float = 0.05, rounds: int = 7, pause_s: float = 0.2) -> float:
    """GFLOP/s of the FMA loop on `threads` threads at once (ctypes releases
    the GIL during the call), the best of `rounds` rounds of about `seconds`,
    `pause_s` apart. The best, not the median: on these VMs the host takes a
    vCPU away for seconds at a time (2 threads then run at 1 thread's
    rate), and a peak is what the cores do when they are ours."""
    _, loop, flops_per_iteration = _compiled()
    iterations = 1 << 16
    while True:  # size a call to last about `seconds`
        start = time.perf_counter()
        loop(iterations, 1.0, 0.0)
        if time.perf_counter() - start >= seconds / 4:
            break
        iterations *= 4
    rates = []
    for _ in range(rounds):
        time.sleep(pause_s)
        barrier = threading.Barrier(threads + 1)

        def work():
            barrier.wait()
            loop(iterations, 1.0, 0.0)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        rates.append(threads * iterations * flops_per_iteration / (time.perf_counter() - start) / 1e9)
    return max(rates)


if __name__ == "__main__":
    for count in map(int, sys.argv[1:] or ["1"]):
        print(f"{count} thread(s): {fma_peak(count):.0f} GFLOP/s")
