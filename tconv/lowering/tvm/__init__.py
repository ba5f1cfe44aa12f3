"""Lowering to TVM TensorIR: every tconv op (or fused group of ops) becomes a
scheduled PrimFunc, compiled for the host CPU (`llvm`) or a GPU (`cuda`).

    from tconv.lowering.tvm.build import build_kernels, run_tvm

- `ops`: the tensor-expression compute of each op, reading packed weights;
- `schedule_cpu`: the default CPU schedules (register-blocked convolution);
- `schedule_gpu`: the default CUDA schedule (a thread per output, no scratch);
- `winograd_ops`, `schedule_winograd`, `schedule_winograd_cpu`: 3×3
  convolutions as Winograd F(4×4, 3×3): the three kernels' computes and
  their CUDA and CPU schedules;
- `target`: the TVM targets, and a target's vector unit;
- `build`: a network → kernels + call list; `run_tvm` runs it from Python;
- `artifact`: the kernels as the library of an artifact the C runtime
  (cpu) or `tconv.runtime.cuda` (cuda) runs;
- `cuda_library`: CUDA kernels → one nvcc-built library tvm_ffi loads alone.

The backend-neutral parts (fusion, the program, packing, folding,
Winograd's transforms, the plan writer) are `tconv.kernels`.
"""
