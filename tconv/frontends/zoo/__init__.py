"""The model zoo: reference networks emitted as tconv IR.

    module = build("resnet18", "imagenet", batch=8)

Each network is known by a name and comes for one or more datasets, the first
being its default; `build` returns a verified module holding one `func.func`
named after the network, taking a `batch`×3×H×W image tensor and returning
`batch`×classes logits. Parameter names follow the state dicts of the PyTorch
reference definitions named in each family's module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.dialects.builtin import ModuleOp

from tconv.frontends.zoo import densenet, mobilenet, resnet, resnext, vgg, wrn
from tconv.ir.loader import TconvError, verify_module


_Builder = Callable[[str, int, str], ModuleOp]
"""Called as builder(dataset, batch, function_name)."""


@dataclass(frozen=True)
class _Network:
    datasets: tuple[str, ...]
    builder: _Builder


def _resnet(depth: int) -> _Network:
    return _Network(resnet.DATASETS, lambda dataset, batch, name: resnet.resnet(depth, dataset, batch, name))


def _cifar10(builder: Callable[..., ModuleOp], *args: int) -> _Network:
    return _Network(("cifar10",), lambda dataset, batch, name: builder(*args, batch=batch, name=name))


def _imagenet(builder: Callable[..., ModuleOp]) -> _Network:
    return _Network(("imagenet",), lambda dataset, batch, name: builder(batch=batch, name=name))


_NETWORKS: dict[str, _Network] = {
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "resnext29_2x64d": _cifar10(resnext.resnext29, 2, 64),
    "resnext29_8x64d": _cifar10(resnext.resnext29, 8, 64),
    "wrn40_2": _cifar10(wrn.wrn, 40, 2),
    "densenet_bc100": _cifar10(densenet.densenet_bc, 100, 12),
    "densenet121": _imagenet(densenet.densenet121),
    "mobilenet_v1": _imagenet(mobilenet.mobilenet_v1),
    "mobilenet_v2": _imagenet(mobilenet.mobilenet_v2),
    "vgg16": _imagenet(vgg.vgg16),
}


def network_names() -> list[str]:
    return list(_NETWORKS)


def _network(name: str) -> _Network:
    network = _NETWORKS.get(name)
    if network is None:
        raise TconvError(f"unknown network '{name}' (expected one of {', '.join(_NETWORKS)})")
    return network


def datasets(name: str) -> tuple[str, ...]:
    """The datasets `name` comes for, its default first."""
    return _network(name).datasets


def build(name: str, dataset: str | None = None, batch: int = 1) -> ModuleOp:
    """The verified module of network `name` for `dataset` (default: its first)
    on `batch` images. Unknown names and datasets and batches below 1 raise a
    TconvError that lists what is valid."""
    network = _network(name)
    if dataset is None:
        dataset = network.datasets[0]
    if dataset not in network.datasets:
        raise TconvError(
            f"network '{name}' has no dataset '{dataset}' "
            f"(expected one of {', '.join(network.datasets)})"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise TconvError(f"batch must be an integer of at least 1, got {batch!r}")
    module = network.builder(dataset, batch, name)
    verify_module(module)
    return module
