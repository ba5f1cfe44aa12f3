"""What a backend without int8 kernels says about a quantized network.

A network with `tconv.quantize` / `tconv.dequantize` ops (`tconv-quantize`,
or an imported QDQ model) compiles with the TVM backend for the CPU
(`tconv.lowering.tvm.int8_network`) and runs in the reference executor and
the torch interpreter; the LLVM backend and TVM's cuda target refuse it, at
the first quantized op, before lowering anything.
"""

from __future__ import annotations

from xdsl.dialects import func

from tconv.errors import TconvError
from tconv.ir.loader import located
from tconv.ir.ops import QUANT_OPS


def refuse_quantized(function: func.FuncOp, backend: str, error: type[TconvError]) -> None:
    """Raise `error`, located at the first quantized op of `function`, if it has one."""
    for op in function.walk():
        if isinstance(op, QUANT_OPS):
            raise error(located(op, (
                f"{backend} backend: int8 kernels are not implemented in this backend yet ('{op.name}'); "
                "compile it with --backend tvm for the cpu, run it with `tconv run` (--backend reference), "
                "or compile the f32 network"
            )))
