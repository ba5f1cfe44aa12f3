"""ONNX import of graphs tconv did not write: small torchvision-style networks
(ResNet basic blocks; MobileNetV2 with ReLU6 and depthwise convolutions;
ShuffleNetV2 with channel split, concat and shuffle), exported by PyTorch.
Each is imported, run with the reference executor, and compared with
onnxruntime (and PyTorch) on the same input.

PyTorch 2.13 exports through torch.export (dynamo) by default, which needs
the onnxscript package; these tests use the TorchScript exporter
(`dynamo=False`), which needs nothing beyond onnx."""

import io
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from support import relative_error
from torch import nn

from tconv.frontends.onnx import import_model
from tconv.semantics import reference


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.layers(self.stem(x))), 1))


def conv_bn_relu6(cin, cout, kernel, stride, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: expand, depthwise, project, residual."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_relu6(cin, hidden, 1, 1)] if expand != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu6(3, 16, 3, 2),
            InvertedResidual(16, 8, 1, 1),
            InvertedResidual(8, 16, 2, 6),
            InvertedResidual(16, 16, 1, 6),
            InvertedResidual(16, 24, 2, 6),
            conv_bn_relu6(24, 64, 1, 1),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def channel_shuffle(x, groups):
    """torchvision's ShuffleNetV2 shuffle: view, transpose, view."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        branch = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                nn.Conv2d(cin, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else branch, branch, 1, bias=False), nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False), nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class TinyShuffleNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 24, 3, 2, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.conv5 = nn.Sequential(nn.Conv2d(48, 96, 1, bias=False), nn.BatchNorm2d(96), nn.ReLU(inplace=True))
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = self.conv5(self.stage2(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


NETWORKS = {
    "resnet": (TinyResNet, {"tconv.add", "tconv.max_pool2d", "tconv.dense"}),
    "mobilenet_v2": (TinyMobileNetV2, {"tconv.relu6", "tconv.add", "tconv.dense"}),
    "shufflenet_v2": (TinyShuffleNetV2, {"tconv.slice_channels", "tconv.concat", "tconv.channel_shuffle"}),
}
"""Each network, and tconv ops its import must contain."""


def trained_looking(network: nn.Module, seed: int) -> nn.Module:
    """The network in eval mode with batch-norm statistics and affine
    parameters away from their initial values, so that folding or dropping a
    batch norm would change the result."""
    torch.manual_seed(seed)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)
    return network.eval()


def export(network: nn.Module, x: torch.Tensor, **options) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, and remarks on old opsets.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        options = {"opset_version": 17, **options}
        torch.onnx.export(network, (x,), buffer, dynamo=False, input_names=["x"], **options)
    return buffer.getvalue()


EXPORTS = {
    # PyTorch folds each batch norm into the convolution before it.
    "eval": ({}, None),
    # Batch norms stay BatchNormalization nodes, and constant subgraphs stay
    # unfolded (for the importer to evaluate).
    "preserve": ({"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}, None),
    # A symbolic batch, bound at import; shapes come from Shape/Gather nodes.
    "dynamic-batch": ({"dynamic_axes": {"x": {0: "batch"}}}, 3),
    # Older forms: Clip, Split, Slice and Unsqueeze with attributes, not inputs.
    "opset-7": ({"opset_version": 7}, None),
    "opset-9": ({"opset_version": 9}, None),
    # The exporter's own default.
    "opset-20": ({"opset_version": 20}, None),
}
"""How to export: torch.onnx.export options, and the batch to bind at import."""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("export_kind", list(EXPORTS))
@pytest.mark.parametrize("name", list(NETWORKS))
def test_pytorch_network_imports_and_matches_onnxruntime(name, export_kind):
    network_type, expected_ops = NETWORKS[name]
    network = trained_looking(network_type(), seed=len(name))
    options, batch = EXPORTS[export_kind]
    data = export(network, torch.randn(2, 3, 32, 32), **options)
    model = onnx.load_from_string(data)
    onnx_ops = {node.op_type for node in model.graph.node}
    if export_kind == "preserve":
        assert "BatchNormalization" in onnx_ops

    module, params = import_model(model, batch=batch)
    ops = {op.name for op in module.walk()}
    assert expected_ops <= ops
    assert ("tconv.batch_norm" in ops) == ("BatchNormalization" in onnx_ops)

    x = np.random.default_rng(0).standard_normal((batch or 2, 3, 32, 32), dtype=np.float32)
    (actual,) = reference.run(module, params, x)
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    assert actual.shape == expected.shape == (len(x), 10)
    assert relative_error(actual, expected) < 1e-5
    with torch.no_grad():
        assert relative_error(actual, network(torch.from_numpy(x)).numpy()) < 1e-5
