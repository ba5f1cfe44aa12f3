"""Lowering to TVM TensorIR: every tconv op (or fused group of ops) becomes a
scheduled PrimFunc, compiled for the host CPU (`llvm`) or a GPU (`cuda`).

    from tconv.lowering.tvm.build import build_kernels, run_tvm

- `ops`: the tensor-expression compute of each op, reading packed weights;
- `packing`, `folding`: the parameter layouts and batch-norm folding (numpy);
- `fusion`: which ops run as one kernel (conv + batch-norm + add + ReLU);
- `schedule_cpu`: the default CPU schedules (register-blocked convolution);
- `schedule_gpu`: the default CUDA schedule (a thread per output, no scratch);
- `winograd`, `winograd_ops`, `schedule_winograd`, `schedule_winograd_cpu`:
  3×3 convolutions as Winograd F(4×4, 3×3): the transforms (numpy), the
  three kernels' computes and their CUDA and CPU schedules;
- `target`: the targets and the vector unit the schedules size themselves by;
- `program`: the call list handed to the runtime (no TVM import);
- `build`: a network → kernels + call list; `run_tvm` runs it from Python;
- `artifact`: kernels + plan + packed parameters in a directory the C
  runtime (cpu) or `tconv.runtime.cuda` (cuda) runs;
- `cuda_library`: CUDA kernels → one nvcc-built library tvm_ffi loads alone.

This package module imports nothing, so that `program` can be used where
the TVM compiler is not (the runtime side of an artifact).
"""
