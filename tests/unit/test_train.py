"""The training engine: data, the trainable network, the loop, `tconv train`."""

import json

import numpy as np
import pytest
import torch
from support import assert_user_error, small_resnet, tconv, trained_like_params

from tconv.cli.files import write_network
from tconv.ir.builder import NetworkBuilder
from tconv.ir.params import init_params, load_provenance, load_store
from tconv.semantics.reference import run
from tconv.train.data import DataError, load_dataset
from tconv.train.engine import train_network
from tconv.train.loop import TrainConfig, Trainer, augment, cross_entropy, evaluate
from tconv.train.network import TrainableNetwork


def tiny_network(channels: int = 1, size: int = 8):
    b = NetworkBuilder("tiny", (1, channels, size, size))
    x = b.relu(b.batch_norm(b.conv2d(b.input, 16, 3, padding=1, name="conv1"), name="bn1"))
    x = b.relu(b.batch_norm(b.conv2d(x, 32, 3, padding=1, stride=2, name="conv2"), name="bn2"))
    return b.finish(b.dense(b.flatten(b.global_avg_pool(x)), 10, name="fc"))


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", (1, 1, 8, 8), 10)


# Data ------------------------------------------------------------------------


def test_digits_split_is_stratified_and_seeded(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.x_train.dtype == np.float32
    assert len(digits.y_train) + len(digits.y_val) == 1797
    # Every class is held out in proportion (a fifth, give or take one image).
    counts = np.bincount(digits.y_val, minlength=10) / np.bincount(np.concatenate([digits.y_train, digits.y_val]))
    assert np.all(np.abs(counts - 0.2) < 0.01)
    again = load_dataset("digits", (1, 1, 8, 8), 10)
    np.testing.assert_array_equal(again.x_val, digits.x_val)
    other = load_dataset("digits", (1, 1, 8, 8), 10, split_seed=1)
    assert not np.array_equal(other.y_val, digits.y_val)
    # Resized and copied into the channels of a CIFAR network.
    assert load_dataset("digits", (1, 3, 32, 32), 10).x_val.shape[1:] == (3, 32, 32)


def test_npz_with_and_without_a_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 1, 8, 8)).astype(np.float32), np.arange(40) % 4
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    data = load_dataset(str(tmp_path / "xy.npz"), (1, 1, 8, 8), 10)
    assert len(data.y_val) == 8 and len(data.y_train) == 32
    np.savez(tmp_path / "split.npz", x_train=x[:30], y_train=y[:30], x_val=x[30:], y_val=y[30:])
    data = load_dataset(str(tmp_path / "split.npz"), (1, 1, 8, 8), 10)
    np.testing.assert_array_equal(data.x_val, x[30:])


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((4, 3, 8, 8)), "y": np.zeros(4, int)}, "'x' has shape 4x3x8x8; the network takes N x 1x8x8"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.array([0, 1, 2, 10])}, "'y' runs from 0 to 10"),
        ({"x": np.full((4, 1, 8, 8), np.nan), "y": np.zeros(4, int)}, "'x' sample 0 holds NaN"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(4)}, "'y' holds float64 values"),
        ({"x": np.zeros((4, 1, 8, 8)), "y": np.zeros(3, int)}, "expected 4 labels"),
        ({"images": np.zeros(3)}, "expected x_train, y_train, x_val, y_val"),
    ],
)
def test_bad_npz_data_is_an_error_naming_the_file(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="bad.npz: error: ") as error:
        load_dataset(str(path), (1, 1, 8, 8), 10)
    assert message in str(error.value)


def test_image_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    data = load_dataset(str(tmp_path), (1, 3, 8, 8), 10)
    assert data.x_train.shape == (8, 3, 8, 8) and sorted(set(data.y_val)) == [0, 1]
    # Standardised by the training images' statistics.
    assert np.allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not a picture")
    with pytest.raises(DataError, match=r"broken\.jpg: error: cannot read the image"):
        load_dataset(str(tmp_path), (1, 3, 8, 8), 10)
    (tmp_path / "empty").mkdir()
    (tmp_path / "dog" / "broken.jpg").unlink()
    with pytest.raises(DataError, match=r"empty: error: no PNG or JPEG images"):
        load_dataset(str(tmp_path), (1, 3, 8, 8), 10)


# The network and the loop ----------------------------------------------------


def test_the_trainable_network_computes_what_the_reference_executor_does():
    module = small_resnet()
    params = trained_like_params(module)
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    network = TrainableNetwork(module, params).eval()
    with torch.no_grad():
        logits = network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, run(module, params, x)[0], rtol=1e-4, atol=1e-4)
    for name, value in network.arrays().items():
        np.testing.assert_array_equal(value, params[name])
    # Running statistics are state, not weights.
    learnable = {name for name, _ in network.named_parameters()}
    assert len(learnable) == len(params) - 2 * 5  # 5 batch-norms: mean and var each


def test_training_learns_and_is_reproducible_for_a_seed(digits):
    module = tiny_network()
    config = TrainConfig(epochs=3, lr=0.1, seed=3)

    def train() -> Trainer:
        trainer = Trainer(TrainableNetwork(module, init_params(module)), digits, config)
        trainer.run()
        return trainer

    first, second = train(), train()
    assert first.history[-1].val_accuracy > 0.5  # chance is 0.1
    assert first.history[-1].train_loss < first.history[0].train_loss
    for name, value in first.network.arrays().items():
        np.testing.assert_array_equal(value, second.network.arrays()[name])
    loss, accuracy = evaluate(first.network, digits.x_val, digits.y_val)
    assert accuracy == first.history[-1].val_accuracy


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(digits, tmp_path):
    module = tiny_network()
    config = TrainConfig(epochs=3, lr=0.1, augment="shift")
    straight = train_network(module, init_params(module), digits, config, tmp_path / "a", "cpu", progress=False, log=False)
    steps = 0

    def interrupted_in_epoch_two(network, x, labels):
        nonlocal steps
        steps += 1
        if steps == 30:  # 23 steps an epoch: the checkpoint of epoch 1 is written
            raise KeyboardInterrupt
        return cross_entropy(network, x, labels)

    with pytest.raises(KeyboardInterrupt):
        train_network(module, init_params(module), digits, config, tmp_path / "b", "cpu",
                      objective=interrupted_in_epoch_two, progress=False, log=False)
    resumed = train_network(module, init_params(module), digits, config, tmp_path / "b", "cpu", resume=True,
                            progress=False, log=False)
    for name, value in straight.params.items():
        np.testing.assert_array_equal(value, resumed.params[name])
    assert [e.epoch for e in resumed.history] == [1, 2, 3]


def test_augmentation_shifts_within_an_eighth_and_keeps_the_shape():
    images = np.arange(2 * 1 * 16 * 16, dtype=np.float32).reshape(2, 1, 16, 16)
    shifted = augment(images, "shift", np.random.default_rng(0))
    assert shifted.shape == images.shape
    assert augment(images, "none", np.random.default_rng(0)) is images


# The command -----------------------------------------------------------------


@pytest.fixture
def tiny_file(tmp_path):
    module = tiny_network()
    write_network(tmp_path / "tiny.mlir", module, init_params(module))
    return tmp_path / "tiny.mlir"


def test_tconv_train_writes_a_trained_store_that_the_other_commands_run(capsys, tiny_file, tmp_path):
    out = tmp_path / "trained.npz"
    status, stdout, stderr = tconv(capsys, "train", tiny_file, "--data", "digits", "--epochs", "2", "--lr", "0.1",
                                   "-o", out)
    assert status == 0, stderr
    assert "validation accuracy" in stdout and "epoch 2/2:" in stderr
    provenance = load_provenance(out)
    assert provenance["weights"] == "trained" and provenance["epochs"] == 2
    history = json.loads((tmp_path / "trained.train" / "history.json").read_text())
    assert provenance["val_accuracy"] == history[-1]["val_accuracy"] > 0.3
    assert (tmp_path / "trained.train" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    trained = load_store(out)
    assert not np.array_equal(trained["conv1.weight"], load_store(tiny_file.with_suffix(".npz"))["conv1.weight"])
    # The trained network runs as any other, from the IR copied beside its store.
    status, stdout, stderr = tconv(capsys, "run", tmp_path / "trained.mlir", "--backend", "reference")
    assert status == 0, stderr
    # --resume with more epochs goes on from the checkpoint.
    status, stdout, stderr = tconv(capsys, "train", tiny_file, "--data", "digits", "--epochs", "3", "--lr", "0.1",
                                   "--resume", "-o", out)
    assert status == 0, stderr
    assert "epoch 1/3" not in stderr and "epoch 3/3:" in stderr
    assert load_provenance(out)["epochs"] == 3


def test_tconv_train_refuses_bad_data_and_writes_nothing(capsys, tiny_file, tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 3, 8, 8), np.float32), y=np.zeros(4, int))
    out = tmp_path / "trained.npz"
    assert_user_error(
        tconv(capsys, "train", tiny_file, "--data", tmp_path / "wrong.npz", "-o", out),
        "wrong.npz: error: 'x' has shape 4x3x8x8",
    )
    assert_user_error(tconv(capsys, "train", tiny_file, "--data", tmp_path / "nothing", "-o", out), "no such file")
    assert_user_error(tconv(capsys, "train", tiny_file, "--data", "digits", "--resume", "-o", out),
                      "no checkpoint to resume from")
    assert not out.exists() and not (tmp_path / "trained.train").exists() and not (tmp_path / "trained.mlir").exists()


def test_a_checkpoint_of_another_network_is_refused(capsys, tiny_file, tmp_path):
    out = tmp_path / "trained.npz"
    assert tconv(capsys, "train", tiny_file, "--data", "digits", "--epochs", "1", "-o", out)[0] == 0
    other = tiny_network(size=8)
    other_file = tmp_path / "other.mlir"
    b = NetworkBuilder("other", (1, 1, 8, 8))
    other = b.finish(b.dense(b.flatten(b.global_avg_pool(b.conv2d(b.input, 4, 3, padding=1))), 10))
    write_network(other_file, other, init_params(other))
    assert_user_error(tconv(capsys, "train", other_file, "--data", "digits", "--resume", "-o", out),
                      "made for another network")
    assert_user_error(tconv(capsys, "train", tiny_file, "--data", "digits", "--resume", "--lr", "0.3", "-o", out),
                      "trained with other options (lr 0.05)")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with torch CUDA")
def test_training_on_a_gpu_learns_what_the_cpu_does(digits):
    module = tiny_network()
    config = TrainConfig(epochs=2, lr=0.1)
    on_cpu = train_network(module, init_params(module), digits, config, None, "cpu", progress=False, log=False)
    on_gpu = train_network(module, init_params(module), digits, config, None, "cuda", progress=False, log=False)
    # GPU kernels round differently; two epochs keep the weights close and the accuracy near.
    assert abs(on_gpu.history[-1].val_accuracy - on_cpu.history[-1].val_accuracy) < 0.05
    for name, value in on_cpu.params.items():
        np.testing.assert_allclose(on_gpu.params[name], value, rtol=0.05, atol=0.05, err_msg=name)


def test_recalibrated_batch_norm_statistics_are_those_of_the_data(digits):
    from tconv.ir.ops import Conv2dOp
    from tconv.train.network import recalibrate_batch_norm

    module = tiny_network()
    params = init_params(module)
    params["bn1.running_mean"] = np.full(16, 5.0, np.float32)  # inherited from another network
    network = TrainableNetwork(module, params)
    images = digits.x_train[:128]
    recalibrate_batch_norm(network, images, batch=64)
    convs = []
    with torch.no_grad():
        network.eval()(torch.from_numpy(images), observe=lambda op, t: convs.append(t) if isinstance(op, Conv2dOp) else None)
    conv1 = convs[0].numpy()
    # The average of the two minibatches' means is the mean over all 128 images.
    np.testing.assert_allclose(network.arrays()["bn1.running_mean"], conv1.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert network.batch_norm_momentum == 0.1 and network.training is False
