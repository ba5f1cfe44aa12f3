"""The default capacity minibatch: scikit-learn's digits, chosen with a seed,
resized bilinearly to the network's input, copied into its channels, labelled
digit mod classes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from tconv.ir.builder import NetworkBuilder
from tconv.ir.loader import TconvError
from tconv.passes.analyses import capacity
from tconv.passes.analyses.capacity_data import digits_minibatch, resize_bilinear, standardised_digits


def classifier(shape, classes):
    b = NetworkBuilder("net", shape)
    return b.finish(b.dense(b.flatten(b.global_avg_pool(b.conv2d(b.input, 4, 3))), classes))


def chosen_indices(x8: np.ndarray) -> list[int]:
    """Which of the standardised digits each 8x8 single-channel input is."""
    images, _ = standardised_digits()
    flat = images.reshape(len(images), -1)
    return [int(np.argmin(np.abs(flat - sample.reshape(-1)).sum(axis=1))) for sample in x8]


def test_digits_at_eight_by_eight_are_the_standardised_images_with_their_labels():
    x, labels = capacity.minibatch(classifier((1, 1, 8, 8), 10), batch=20, seed=3)
    assert x.shape == (20, 1, 8, 8) and x.dtype == np.float32 and labels.dtype == np.int64
    digits = load_digits()
    indices = chosen_indices(x[:, 0])
    assert len(set(indices)) == 20  # drawn without replacement
    pixels = digits.images.astype(np.float64)
    expected = (pixels[indices] - pixels.mean()) / pixels.std()
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, digits.target[indices])


def test_digits_are_standardised_over_the_whole_set():
    images, labels = standardised_digits()
    assert images.shape == (1797, 8, 8)
    assert abs(images.mean()) < 1e-5 and images.std() == pytest.approx(1, rel=1e-5)
    assert sorted(set(labels.tolist())) == list(range(10))


def test_resize_matches_torch_bilinear_without_corner_alignment():
    images = np.random.default_rng(0).standard_normal((3, 8, 8)).astype(np.float32)
    for height, width in ((32, 32), (224, 224), (12, 20), (5, 5)):
        expected = F.interpolate(
            torch.from_numpy(images)[:, None], size=(height, width), mode="bilinear", align_corners=False
        )[:, 0].numpy()
        np.testing.assert_allclose(resize_bilinear(images, height, width), expected, rtol=1e-5, atol=1e-5)


def test_every_channel_holds_the_same_resized_digit():
    x, _ = capacity.minibatch(classifier((1, 3, 32, 32), 10), batch=4, seed=0)
    small, _ = capacity.minibatch(classifier((1, 1, 8, 8), 10), batch=4, seed=0)
    assert x.shape == (4, 3, 32, 32)
    for channel in range(3):
        np.testing.assert_allclose(x[:, channel], resize_bilinear(small[:, 0], 32, 32), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("classes", [2, 5, 10, 1000])
def test_labels_are_the_digit_modulo_the_class_count(classes):
    digits, _ = capacity.minibatch(classifier((1, 1, 8, 8), 10), batch=50, seed=7)
    x, labels = capacity.minibatch(classifier((1, 1, 8, 8), classes), batch=50, seed=7)
    np.testing.assert_array_equal(x, digits)  # the classes do not change which images are drawn
    _, true_digits = standardised_digits()
    np.testing.assert_array_equal(labels, true_digits[chosen_indices(x[:, 0])] % classes)


def test_the_seed_chooses_the_images_deterministically():
    module = classifier((1, 3, 16, 16), 10)
    first = capacity.minibatch(module, 8, seed=1)
    again = capacity.minibatch(module, 8, seed=1)
    other = capacity.minibatch(module, 8, seed=2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_a_batch_larger_than_the_dataset_draws_with_replacement():
    x, labels = digits_minibatch((1, 1, 8, 8), 10, 2000, seed=0)
    assert x.shape == (2000, 1, 8, 8) and labels.shape == (2000,)


def test_digits_need_an_image_input_and_a_known_source():
    with pytest.raises(TconvError, match="N x C x H x W"):
        digits_minibatch((1, 64), 10, 4, seed=0)
    with pytest.raises(TconvError, match="unknown data source 'noise'"):
        capacity.minibatch(classifier((1, 1, 8, 8), 10), 4, seed=0, source="noise")
