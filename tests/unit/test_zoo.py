"""The model zoo: every network builds, verifies, has the reference's output
shape and exact parameter count, and the registry rejects bad requests."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tconv.frontends import zoo
from tconv.ir.loader import TconvError, module_text, parse_module, verify_module
from tconv.ir.ops import shape_of
from tconv.ir.params import init_params, param_ops, parameter_count
from tconv.semantics.reference import run

# (network, dataset, image size, classes, learnable parameters)
NETWORKS = [
    # kuangliu/pytorch-cifar models/resnet.py, sum of p.numel() over parameters().
    ("resnet18", "cifar10", 32, 10, 11_173_962),
    ("resnet34", "cifar10", 32, 10, 21_282_122),
    ("resnet50", "cifar10", 32, 10, 23_520_842),
    # torchvision's model documentation (num_params of the IMAGENET1K_V1 weights).
    ("resnet18", "imagenet", 224, 1000, 11_689_512),
    ("resnet34", "imagenet", 224, 1000, 21_797_672),
    ("resnet50", "imagenet", 224, 1000, 25_557_032),
    # This definition's count, equal to the torch definition below. The paper
    # (Xie et al. 2017, Table 7) gives 34.4M for 8x64d.
    ("resnext29_2x64d", "cifar10", 32, 10, 9_130_314),
    ("resnext29_8x64d", "cifar10", 32, 10, 34_426_698),
    # This definition's count, equal to the torch definition below; the paper
    # (Zagoruyko & Komodakis 2016, Table 4) gives 2.2M.
    ("wrn40_2", "cifar10", 32, 10, 2_243_546),
    # This definition's count, equal to the torch definition below; the paper
    # (Huang et al. 2017, Table 2) gives 0.8M.
    ("densenet_bc100", "cifar10", 32, 10, 769_162),
    # torchvision's model documentation.
    ("densenet121", "imagenet", 224, 1000, 7_978_856),
    # marvis/pytorch-mobilenet (the paper, Howard et al. 2017, Table 8: 4.2M).
    ("mobilenet_v1", "imagenet", 224, 1000, 4_231_976),
    # torchvision's model documentation.
    ("mobilenet_v2", "imagenet", 224, 1000, 3_504_872),
    ("vgg16", "imagenet", 224, 1000, 138_357_544),
]


def output_shape(module) -> tuple[int, ...]:
    (function,) = module.ops
    return shape_of(function.function_type.outputs.data[0])


@pytest.mark.parametrize(
    "name, dataset, size, classes, parameters", NETWORKS, ids=[f"{n}-{d}" for n, d, *_ in NETWORKS]
)
def test_network_builds_with_reference_shape_and_parameter_count(name, dataset, size, classes, parameters):
    module = zoo.build(name, dataset, batch=2)
    verify_module(module)
    (function,) = module.ops
    assert function.sym_name.data == name
    assert shape_of(function.function_type.inputs.data[0]) == (2, 3, size, size)
    assert output_shape(module) == (2, classes)
    assert parameter_count(module) == parameters


def test_resnext29_8x64d_matches_the_paper():
    assert abs(parameter_count(zoo.build("resnext29_8x64d")) - 34.4e6) < 0.1e6


def test_registry_lists_every_network_and_its_datasets():
    assert zoo.network_names() == [
        "resnet18", "resnet34", "resnet50", "resnext29_2x64d", "resnext29_8x64d", "wrn40_2",
        "densenet_bc100", "densenet121", "mobilenet_v1", "mobilenet_v2", "vgg16",
    ]
    assert {(name, dataset) for name, dataset, *_ in NETWORKS} == {
        (name, dataset) for name in zoo.network_names() for dataset in zoo.datasets(name)
    }
    assert zoo.datasets("resnet50") == ("cifar10", "imagenet")
    assert zoo.datasets("wrn40_2") == ("cifar10",)
    assert zoo.datasets("vgg16") == ("imagenet",)


def test_default_dataset_and_batch():
    (function,) = zoo.build("resnet18").ops
    assert shape_of(function.function_type.inputs.data[0]) == (1, 3, 32, 32)
    assert output_shape(zoo.build("mobilenet_v2")) == (1, 1000)


@pytest.mark.parametrize("name, dataset", [("resnet18", "cifar10"), ("mobilenet_v1", "imagenet")])
def test_module_text_round_trips(name, dataset):
    text = module_text(zoo.build(name, dataset))
    assert module_text(parse_module(text)) == text


def test_parameter_names_follow_the_references():
    names = {op.param_name for op in param_ops(zoo.build("resnet50", "imagenet"))}
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"} <= names
    names = {op.param_name for op in param_ops(zoo.build("resnet18", "cifar10"))}
    assert {"layer2.0.shortcut.1.weight", "linear.weight"} <= names
    names = {op.param_name for op in param_ops(zoo.build("mobilenet_v2"))}
    assert {"features.1.conv.0.0.weight", "features.2.conv.3.running_mean", "features.18.1.bias",
            "classifier.1.weight"} <= names
    names = {op.param_name for op in param_ops(zoo.build("vgg16"))}
    assert {"features.28.bias", "classifier.6.weight"} <= names


def test_unknown_network_lists_the_networks():
    with pytest.raises(TconvError, match=r"unknown network 'resnet19' \(expected one of resnet18, .*vgg16\)"):
        zoo.build("resnet19")
    with pytest.raises(TconvError, match="unknown network"):
        zoo.datasets("alexnet")


def test_unknown_dataset_lists_the_datasets():
    expected = r"'resnet18' has no dataset 'mnist' \(expected one of cifar10, imagenet\)"
    with pytest.raises(TconvError, match=expected):
        zoo.build("resnet18", "mnist")
    with pytest.raises(TconvError, match=r"'vgg16' has no dataset 'cifar10' \(expected one of imagenet\)"):
        zoo.build("vgg16", "cifar10")


@pytest.mark.parametrize("batch", [0, -1])
def test_batch_below_one_is_rejected(batch):
    with pytest.raises(TconvError, match=f"batch must be an integer of at least 1, got {batch}"):
        zoo.build("resnet18", batch=batch)


# Independent torch definitions of the CIFAR networks without a published exact
# count, written from the papers and the authors' code.


def conv(in_channels, out_channels, kernel, stride=1, groups=1):
    return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)


class TorchResNeXtBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride, cardinality, base_width):
        super().__init__()
        width = cardinality * int(base_width * out_channels / 256)
        self.conv_reduce, self.bn_reduce = conv(in_channels, width, 1), nn.BatchNorm2d(width)
        self.conv_conv, self.bn = conv(width, width, 3, stride, cardinality), nn.BatchNorm2d(width)
        self.conv_expand, self.bn_expand = conv(width, out_channels, 1), nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut.add_module("shortcut_conv", conv(in_channels, out_channels, 1, stride))
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        return F.relu(self.shortcut(x) + self.bn_expand(self.conv_expand(out)))


class TorchResNeXt29(nn.Module):
    def __init__(self, cardinality, base_width):
        super().__init__()
        self.conv_1_3x3, self.bn_1 = conv(3, 64, 3), nn.BatchNorm2d(64)
        widths = [64, 256, 512, 1024]
        for stage in range(3):
            blocks = nn.Sequential()
            for index in range(3):
                blocks.add_module(f"stage_{stage + 1}_bottleneck_{index}", TorchResNeXtBlock(
                    widths[stage] if index == 0 else widths[stage + 1], widths[stage + 1],
                    (1, 2, 2)[stage] if index == 0 else 1, cardinality, base_width))
            self.add_module(f"stage_{stage + 1}", blocks)
        self.classifier = nn.Linear(1024, 10)

    def forward(self, x):
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        return self.classifier(F.avg_pool2d(x, 8).flatten(1))


class TorchWRNBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.bn0, self.conv0 = nn.BatchNorm2d(in_channels), conv(in_channels, out_channels, 3, stride)
        self.bn1, self.conv1 = nn.BatchNorm2d(out_channels), conv(out_channels, out_channels, 3)
        if in_channels != out_channels:
            self.convdim = conv(in_channels, out_channels, 1, stride)

    def forward(self, x):
        activated = F.relu(self.bn0(x))
        y = self.conv1(F.relu(self.bn1(self.conv0(activated))))
        return y + (self.convdim(activated) if hasattr(self, "convdim") else x)


class TorchWRN(nn.Module):
    def __init__(self, depth, widen_factor):
        super().__init__()
        n = (depth - 4) // 6
        self.conv0 = conv(3, 16, 3)
        widths = [16] + [w * widen_factor for w in (16, 32, 64)]
        for group in range(3):
            blocks = nn.Sequential()
            for index in range(n):
                in_channels = widths[group] if index == 0 else widths[group + 1]
                stride = (1, 2, 2)[group] if index == 0 else 1
                blocks.add_module(f"block{index}", TorchWRNBlock(in_channels, widths[group + 1], stride))
            self.add_module(f"group{group}", blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], 10)

    def forward(self, x):
        x = self.group2(self.group1(self.group0(self.conv0(x))))
        return self.fc(F.avg_pool2d(F.relu(self.bn(x)), 8).flatten(1))


class TorchDenseLayer(nn.Module):
    def __init__(self, in_channels, growth_rate):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(in_channels), conv(in_channels, 4 * growth_rate, 1)
        self.norm2, self.conv2 = nn.BatchNorm2d(4 * growth_rate), conv(4 * growth_rate, growth_rate, 3)

    def forward(self, x):
        new = self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))
        return torch.cat([x, new], 1)


class TorchTransition(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.norm, self.conv = nn.BatchNorm2d(in_channels), conv(in_channels, in_channels // 2, 1)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.norm(x))), 2)


class TorchDenseNetBC(nn.Module):
    def __init__(self, depth, growth_rate):
        super().__init__()
        layers = (depth - 4) // 6
        self.features = nn.Sequential()
        channels = 2 * growth_rate
        self.features.add_module("conv0", conv(3, channels, 3))
        for index in range(3):
            block = nn.Sequential()
            for layer in range(layers):
                block.add_module(f"denselayer{layer + 1}", TorchDenseLayer(channels, growth_rate))
                channels += growth_rate
            self.features.add_module(f"denseblock{index + 1}", block)
            if index < 2:
                self.features.add_module(f"transition{index + 1}", TorchTransition(channels))
                channels //= 2
        self.features.add_module("norm4", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, 10)

    def forward(self, x):
        return self.classifier(F.avg_pool2d(F.relu(self.features(x)), 8).flatten(1))


TORCH_DEFINITIONS = {
    "resnext29_2x64d": lambda: TorchResNeXt29(2, 64),
    "resnext29_8x64d": lambda: TorchResNeXt29(8, 64),
    "wrn40_2": lambda: TorchWRN(40, 2),
    "densenet_bc100": lambda: TorchDenseNetBC(100, 12),
}


@pytest.mark.parametrize("name", TORCH_DEFINITIONS)
def test_cifar_network_has_the_torch_definitions_parameters(name):
    module = zoo.build(name)
    # On the meta device nothing is allocated: only names and shapes are compared.
    with torch.device("meta"):
        torch_model = TORCH_DEFINITIONS[name]()
    torch_shapes = {
        name: tuple(tensor.shape)
        for name, tensor in torch_model.state_dict().items()
        if not name.endswith("num_batches_tracked")
    }
    assert {op.param_name: shape_of(op.result) for op in param_ops(module)} == torch_shapes
    assert parameter_count(module) == sum(p.numel() for p in torch_model.parameters())


@pytest.mark.parametrize("name", ["resnext29_2x64d", "wrn40_2", "densenet_bc100"])
def test_cifar_network_computes_what_the_torch_definition_computes(name):
    module = zoo.build(name)
    rng = np.random.default_rng(0)
    params = init_params(module)
    # Non-trivial batch-norm statistics and biases, so that a misplaced one shows.
    for key, value in params.items():
        if key.endswith(("running_mean", "bias")):
            params[key] = rng.normal(0, 0.1, value.shape).astype(np.float32)
        elif key.endswith("running_var") or value.ndim == 1:
            params[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
    torch_model = TORCH_DEFINITIONS[name]().eval()
    missing, unexpected = torch_model.load_state_dict(
        {key: torch.from_numpy(value) for key, value in params.items()}, strict=False
    )
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)
    images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    (logits,) = run(module, params, images)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
