"""The LLVM backend: every tconv kernel as an explicit loop nest, compiled to
LLVM IR with llvmlite (O3, host CPU) and linked into the kernel library of
the same artifact the TVM backend writes, run by the same C runtime.

    from tconv.lowering.llvm.artifact import compile_artifact

- `loops`: the loop-nest IR (affine indices, loads with a fill outside
  their tensor, reductions) and the schedule transformations on it;
- `ops`: the nest of every kernel (conv2d and its fused epilogue, dense,
  pooling, elementwise, layout ops);
- `schedules`: the default schedules, and how a convolution's IR schedule
  becomes a nest schedule;
- `codegen`: scheduled nests → LLVM IR with the tvm-ffi kernel ABI, parallel
  loops through the runtime's thread pool;
- `build`: a network → kernels + `KernelProgram` (the TVM backend's kernel
  grouping and parameter recipes), compiled into a shared library;
- `artifact`: the artifact directory (`run_llvm` runs a network through one);
- `nvptx`: the same nests as PTX kernels for sm_80/sm_90 (a thread per
  output point), assembled by ptxas where installed.
"""
