"""CUDA kernels built by TVM → one shared library, compiled by nvcc here.

TVM 0.27 keeps CUDA *source* in a built module and compiles it when the
module loads, which needs TVM on the GPU machine. Instead the kernels are
built with a `cuda_host` host, `export_cuda_host` gives one CUDA C++
translation unit (device kernels and the host wrappers that launch them),
and nvcc compiles it here, on the CPU machine, into a shared library that
`tvm_ffi.load_module` loads alone: one `__tvm_ffi_<symbol>` per kernel,
taking DLPack tensors (torch CUDA tensors, for instance).

`$NVCC` picks the compiler (default: `nvcc` on PATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tconv.errors import TconvError

if TYPE_CHECKING:  # compiling a source needs nvcc and tvm_ffi only, not TVM (`tconv.search.cuda_tuning`)
    import tvm

NVCC_FLAGS = ("-shared", "-Xcompiler", "-fPIC", "-O3", "-std=c++17")
NVCC_TIMEOUT_S = 1800


class CudaBuildError(TconvError):
    """nvcc is missing or rejected the kernels."""


def nvcc() -> str | None:
    """The nvcc to use, or None where there is none."""
    return os.environ.get("NVCC") or shutil.which("nvcc")


def cuda_source(executable: tvm.runtime.Executable) -> str:
    """The one CUDA C++ file of kernels built for a `cuda` target with a `cuda_host` host."""
    from tvm.backend.cuda import export_cuda_host

    return export_cuda_host(executable.mod)


def nvcc_command(source: Path, library: Path, arch: str) -> list[str]:
    import tvm_ffi.libinfo

    compiler = nvcc()
    if compiler is None:
        raise CudaBuildError(
            "error: nvcc not found: the cuda target compiles its kernels with the CUDA toolkit's "
            "nvcc (put it on PATH or set $NVCC)"
        )
    libtvm_ffi = Path(tvm_ffi.libinfo.find_libtvm_ffi())
    includes = [f"-I{path}" for path in tvm_ffi.libinfo.include_paths()]
    return [
        compiler, *NVCC_FLAGS, f"-arch={arch}", *includes, str(source), "-o", str(library),
        f"-L{libtvm_ffi.parent}", "-ltvm_ffi",
    ]


def compile_cuda_source(text: str, library: str | os.PathLike[str], arch: str) -> None:
    """Compile `text` (a `cuda_source`) for `arch` into the shared library `library`."""
    library = Path(library)
    with tempfile.TemporaryDirectory(prefix="tconv-cuda-") as scratch:
        source = Path(scratch) / "kernels.cu"
        source.write_text(text)
        command = nvcc_command(source, Path(scratch) / library.name, arch)
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=NVCC_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CudaBuildError(f"error: nvcc took more than {NVCC_TIMEOUT_S} s; gave up") from None
        except OSError as error:
            raise CudaBuildError(f"error: cannot run nvcc ({command[0]}): {error.strerror}") from None
        if result.returncode != 0:
            raise CudaBuildError(
                f"error: nvcc failed (exit {result.returncode}) compiling the cuda kernels for {arch}:\n"
                + result.stderr.strip()[-4000:]
            )
        shutil.copyfile(Path(scratch) / library.name, library)
