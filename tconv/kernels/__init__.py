"""The backend-neutral middle of code generation: what both backends (and
the passes and search that predict them) agree on, with no code generator
imported.

- `fusion`: which ops run as one kernel (conv + batch-norm + add + ReLU);
- `program`, `program_builder`: the call list handed to the runtime, and
  the one builder both backends fill;
- `packing`, `folding`: the parameter layouts and batch-norm folding (numpy);
- `winograd`: F(4×4, 3×3)'s transforms (numpy) and tile grid;
- `artifact`: a program's plan and parameter blob, written as an artifact;
- `target`: the CPU vector unit kernels size themselves by;
- `blocking`: a convolution's register-tile blocking (`ConvBlocking`) and
  the issue-rate models that choose it, for the direct template and GSPC;
- `templates`: those templates as schedules of the IR, both ways;
- `algorithm`: which algorithm (direct, Winograd, GSPC) computes a
  convolution by default on a target, the one place that decides it.
"""
