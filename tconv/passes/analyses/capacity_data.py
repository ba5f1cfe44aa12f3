"""The minibatch capacity metrics are measured on, when the user gives none.

**Digits** (the default) are real images with true labels that ship with
scikit-learn: `sklearn.datasets.load_digits`, 1,797 greyscale 8×8
handwritten digits, classes 0–9. Real images matter: on Gaussian noise NASWOT
hardly tells rewrites apart, and the Fisher potential needs labels that mean
something, which photographs (`load_sample_images`: two unlabelled pictures)
do not have. A minibatch is made as follows:

1. `batch` images are chosen with `numpy.random.default_rng(seed)`, without
   replacement (with replacement only when `batch` exceeds 1,797).
2. Pixels (0–16) are standardised with the mean and standard deviation of all
   1,797 images, so inputs are centred with unit variance like the
   normalised inputs networks are trained on.
3. Each image is resized to the network's input H×W by bilinear
   interpolation with half-pixel centres (PyTorch's `interpolate(...,
   mode="bilinear", align_corners=False)`; at 8×8 it is the identity).
   Upsampling adds no detail: a 32×32 (CIFAR) or 224×224 (ImageNet) input is a
   smooth, enlarged digit, which is still a structured, class-dependent image.
4. The one grey channel is copied into every input channel (for RGB, a grey
   picture). Mixing channels with random weights would add a seed-dependent
   colour that carries no information.
5. The label of digit d is d mod K for a network with K classes: the digit
   itself when K ≥ 10 (a 1,000-class network sees ten of its classes), digits
   merged in turn when K < 10. Either way one digit always has one class, so
   the labels stay a learnable function of the images; random labels would not.

**Gaussian** inputs, N(0, 1) in the network's input shape with labels uniform
over its classes (the data `tconv run --seed` draws), remain available for
comparison.

Both are deterministic: the same network, batch and seed give the same arrays.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from tconv.ir.loader import TconvError

SOURCES = ("digits", "gaussian")
DEFAULT_SOURCE = "digits"


@cache
def standardised_digits() -> tuple[np.ndarray, np.ndarray]:
    """All of scikit-learn's digits, standardised (float32, 1797 x 8 x 8), and their labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TconvError(
            "capacity: the default minibatch needs scikit-learn (pip install scikit-learn), "
            "or give your own with --data and --labels"
        ) from None
    digits = load_digits()
    images = digits.images.astype(np.float64)
    images = (images - images.mean()) / images.std()
    return images.astype(np.float32), digits.target.astype(np.int64)


def _interpolation_matrix(source: int, target: int) -> np.ndarray:
    """The target x source matrix of 1-D linear interpolation with half-pixel
    centres, edges clamped (PyTorch's bilinear, align_corners=False)."""
    position = (np.arange(target) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0, source - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, source - 1)
    weight_high = position - low
    matrix = np.zeros((target, source))
    matrix[np.arange(target), low] += 1 - weight_high
    matrix[np.arange(target), high] += weight_high
    return matrix


def resize_bilinear(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """N x h x w images resized to N x height x width (see the module docstring, step 3)."""
    rows = _interpolation_matrix(images.shape[1], height)
    columns = _interpolation_matrix(images.shape[2], width)
    return np.einsum("ph,nhw,qw->npq", rows, images.astype(np.float64), columns).astype(np.float32)


def digits_minibatch(
    shape: tuple[int, ...], classes: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`batch` digits as N x C x H x W float32 inputs for an input of `shape`
    (N x C x H x W; its N is ignored) and their labels mod `classes` (int64)."""
    if len(shape) != 4:
        raise TconvError(
            f"capacity: digit images need an N x C x H x W input, the network takes "
            f"{'x'.join(map(str, shape))}; give your own minibatch with --data"
        )
    images, digits = standardised_digits()
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(images), batch, replace=batch > len(images))
    _, channels, height, width = shape
    resized = resize_bilinear(images[chosen], height, width)
    x = np.ascontiguousarray(np.broadcast_to(resized[:, None], (batch, channels, height, width)))
    return x, digits[chosen] % classes


def gaussian_minibatch(
    shape: tuple[int, ...], classes: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """N(0, 1) float32 inputs of `shape` (its N replaced by `batch`) and labels
    uniform over `classes`, both from one generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *shape[1:]), dtype=np.float32)
    return x, rng.integers(0, classes, batch)


def draw(
    source: str, shape: tuple[int, ...], classes: int, batch: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The minibatch of `source` (one of SOURCES)."""
    if source == "digits":
        return digits_minibatch(shape, classes, batch, seed)
    if source == "gaussian":
        return gaussian_minibatch(shape, classes, batch, seed)
    raise TconvError(f"capacity: unknown data source '{source}' (expected one of {', '.join(SOURCES)})")


def describe(source: str, shape: tuple[int, ...], classes: int) -> str:
    """One line saying what the minibatch of `source` is, for the CLI's notes."""
    if source == "digits":
        return (
            f"scikit-learn digits (8x8 grey), bilinearly resized to {shape[2]}x{shape[3]}, "
            f"copied into {shape[1]} channel(s), labels digit mod {classes}"
        )
    return f"random N(0,1) inputs, labels uniform over {classes} classes"
