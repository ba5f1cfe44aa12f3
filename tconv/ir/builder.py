"""Building tconv networks from Python, one layer call at a time.

    b = NetworkBuilder("tiny", input_shape=(1, 3, 32, 32))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 16, 3, padding=1, name="conv1"), name="bn1"))
    module = b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))

Parameters are named as PyTorch names its state dict (`layer1.0.conv1.weight`,
`bn1.running_var`), so weights can be exchanged with other frameworks. Each
layer's result type comes from the op's own shape inference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from tconv.ir.ops import (
    AddOp,
    AvgPool2dOp,
    BatchNormOp,
    ChannelShuffleOp,
    ConcatOp,
    Conv2dOp,
    DenseOp,
    DequantizeOp,
    FlattenOp,
    GlobalAvgPoolOp,
    MaxPool2dOp,
    ParamOp,
    QuantizeOp,
    Relu6Op,
    ReluOp,
    SliceChannelsOp,
    SliceOp,
    shape_of,
    tensor_type,
)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


class NetworkBuilder:
    """Appends tconv ops to the body of one `func.func`."""

    def __init__(self, name: str, input_shape: Sequence[int]) -> None:
        self.name = name
        self.block = Block(arg_types=[tensor_type(input_shape)])
        self._scope: list[str] = []
        self._names: set[str] = set()

    @property
    def input(self) -> SSAValue:
        return self.block.args[0]

    @contextmanager
    def scope(self, name: str | int) -> Iterator[None]:
        """Prefix the parameter names created inside with `name.`."""
        self._scope.append(str(name))
        try:
            yield
        finally:
            self._scope.pop()

    def _add(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0]

    def param(self, name: str, shape: Sequence[int], init: str) -> SSAValue:
        full_name = ".".join([*self._scope, name])
        if full_name in self._names:
            raise ValueError(f"parameter '{full_name}' defined twice")
        self._names.add(full_name)
        return self._add(ParamOp(full_name, shape, init))

    def conv2d(
        self,
        x: SSAValue,
        out_channels: int,
        kernel: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | None = None,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = False,
        name: str = "conv",
        weight_scales: Sequence[float] | None = None,
    ) -> SSAValue:
        """A convolution with its weight (and bias) parameters. The default
        padding keeps the spatial size at stride 1 for odd kernels. With
        `weight_scales` (one, or one per output channel) it reads its weight
        as a QDQ weight: symmetric int8 with those scales."""
        kh, kw = _pair(kernel)
        dh, dw = _pair(dilation)
        if padding is None:
            padding = (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
        in_channels = shape_of(x)[1]
        weight = self.param(f"{name}.weight", (out_channels, in_channels // groups, kh, kw), "kaiming_normal")
        if weight_scales is not None:
            axis = 0 if len(weight_scales) > 1 else None
            weight = self.qdq(weight, weight_scales, [0] * len(weight_scales), axis, "i8")
        bias_value = self.param(f"{name}.bias", (out_channels,), "zeros") if bias else None
        return self._add(
            Conv2dOp(x, weight, bias_value, strides=stride, padding=padding, dilations=dilation, groups=groups)
        )

    def batch_norm(self, x: SSAValue, *, name: str = "bn", epsilon: float = 1e-5) -> SSAValue:
        channels = (shape_of(x)[1],)
        scale = self.param(f"{name}.weight", channels, "ones")
        shift = self.param(f"{name}.bias", channels, "zeros")
        mean = self.param(f"{name}.running_mean", channels, "zeros")
        var = self.param(f"{name}.running_var", channels, "ones")
        return self._add(BatchNormOp(x, scale, shift, mean, var, epsilon=epsilon))

    def relu(self, x: SSAValue) -> SSAValue:
        return self._add(ReluOp(x))

    def relu6(self, x: SSAValue) -> SSAValue:
        return self._add(Relu6Op(x))

    def add(self, a: SSAValue, b: SSAValue) -> SSAValue:
        return self._add(AddOp(a, b))

    def max_pool2d(self, x: SSAValue, kernel, *, stride=None, padding=0) -> SSAValue:
        return self._add(MaxPool2dOp(x, kernel=kernel, strides=stride, padding=padding))

    def avg_pool2d(self, x: SSAValue, kernel, *, stride=None, padding=0, count_include_pad=False) -> SSAValue:
        return self._add(
            AvgPool2dOp(x, kernel=kernel, strides=stride, padding=padding, count_include_pad=count_include_pad)
        )

    def global_avg_pool(self, x: SSAValue) -> SSAValue:
        return self._add(GlobalAvgPoolOp(x))

    def flatten(self, x: SSAValue) -> SSAValue:
        return self._add(FlattenOp(x))

    def dense(self, x: SSAValue, out_features: int, *, bias: bool = True, name: str = "fc") -> SSAValue:
        weight = self.param(f"{name}.weight", (out_features, shape_of(x)[1]), "kaiming_normal")
        bias_value = self.param(f"{name}.bias", (out_features,), "zeros") if bias else None
        return self._add(DenseOp(x, weight, bias_value))

    def concat(self, xs: Sequence[SSAValue], *, axis: int = 1) -> SSAValue:
        return self._add(ConcatOp(xs, axis=axis))

    def slice_channels(self, x: SSAValue, start: int, size: int) -> SSAValue:
        return self._add(SliceChannelsOp(x, start=start, size=size))

    def slice(self, x: SSAValue, axis: int, start: int, size: int) -> SSAValue:
        """[start, start + size) along `axis` (2: rows, 3: columns, 1: channels)."""
        return self._add(SliceOp(x, axis=axis, start=start, size=size))

    def channel_shuffle(self, x: SSAValue, groups: int) -> SSAValue:
        return self._add(ChannelShuffleOp(x, groups=groups))

    def quantize(
        self, x: SSAValue, scale: Sequence[float], zero_point: Sequence[int],
        axis: int | None = None, element_type: str = "ui8",
    ) -> SSAValue:
        """f32 → i8/ui8 (`element_type`), per tensor or per channel along `axis`."""
        return self._add(QuantizeOp(x, scale=scale, zero_point=zero_point, axis=axis, element_type=element_type))

    def dequantize(
        self, q: SSAValue, scale: Sequence[float], zero_point: Sequence[int], axis: int | None = None
    ) -> SSAValue:
        return self._add(DequantizeOp(q, scale=scale, zero_point=zero_point, axis=axis))

    def qdq(
        self, x: SSAValue, scale: Sequence[float], zero_point: Sequence[int],
        axis: int | None = None, element_type: str = "ui8",
    ) -> SSAValue:
        """`x` through a quantize → dequantize pair with the same numbers."""
        return self.dequantize(self.quantize(x, scale, zero_point, axis, element_type), scale, zero_point, axis)

    def finish(self, *outputs: SSAValue) -> ModuleOp:
        """Close the function with `func.return` and wrap it in a module."""
        self.block.add_op(func.ReturnOp(*outputs))
        function = func.FuncOp(
            self.name,
            ([arg.type for arg in self.block.args], [o.type for o in outputs]),
            Region(self.block),
        )
        return ModuleOp([function])
