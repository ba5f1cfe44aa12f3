"""Labelled data for training and evaluating a network: `--data D`.

`D` is one of:

- `digits`: scikit-learn's 1,797 handwritten digits (8×8 grey), standardised,
  bilinearly resized to the network's input and copied into its channels,
  labelled digit mod classes (the images and labels of
  `tconv.passes.analyses.capacity_data`);
- an `.npz` with `x_train, y_train, x_val, y_val`, or `x, y` (split here):
  float inputs N x C x H x W in the network's C, H, W, integer labels;
- a folder with one subfolder per class (sorted names are classes 0, 1, ...)
  of PNG/JPEG images, resized to the network's input, scaled to [0, 1] and
  standardised per channel with the training images' mean and deviation.

Where the data brings no validation split, a stratified one is drawn with
`split_seed` (the same seed gives the same split, so a network and its
optimized answer are measured on the same images). Bad data (a shape that does
not fit, labels out of range, NaN, an empty folder, an unreadable image) is a
`DataError` naming the file.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tconv.errors import TconvError
from tconv.ir.shapes import format_shape
from tconv.passes.analyses.capacity_data import resize_bilinear, standardised_digits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_VAL_FRACTION = 0.2


class DataError(TconvError):
    """Training or evaluation data that cannot be used as given."""


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    """N x C x H x W float32."""
    y_train: np.ndarray
    """N int64 labels in [0, classes)."""
    x_val: np.ndarray
    y_val: np.ndarray
    description: str
    """One line: what the data is and how it was split."""

    def __post_init__(self) -> None:
        assert len(self.x_train) == len(self.y_train) and len(self.x_val) == len(self.y_val)


def load_dataset(
    spec: str,
    input_shape: tuple[int, ...],
    classes: int,
    split_seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> Dataset:
    """The data `spec` names, fitted to a network of `input_shape` (N x C x H x W)
    and `classes` classes (see the module docstring)."""
    if len(input_shape) != 4:
        raise DataError(
            f"error: training data are images; the network takes a {format_shape(input_shape)} input, "
            "not N x C x H x W"
        )
    if not 0 < val_fraction < 1:
        raise DataError(f"error: the validation fraction must lie in (0, 1), got {val_fraction:g}")
    if spec == "digits":
        x, y = _digits(input_shape, classes)
        return _split(x, y, split_seed, val_fraction, "scikit-learn digits, resized to "
                      f"{input_shape[2]}x{input_shape[3]}x{input_shape[1]}, labels digit mod {classes}")
    path = Path(spec)
    if path.is_dir():
        x, y = _image_folder(path, input_shape, classes)
        return _standardised(_split(x, y, split_seed, val_fraction, f"the images of {path}"))
    if path.suffix == ".npz" or path.is_file():
        return _npz(path, input_shape, classes, split_seed, val_fraction)
    raise DataError(
        f"{spec}: error: no such file or folder (--data takes 'digits', an .npz or a folder of "
        "class subfolders)"
    )


def _digits(input_shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    images, digits = standardised_digits()
    _, channels, height, width = input_shape
    resized = resize_bilinear(images, height, width)
    x = np.ascontiguousarray(np.broadcast_to(resized[:, None], (len(images), channels, height, width)))
    return x, digits % classes


def _split(
    x: np.ndarray, y: np.ndarray, seed: int, val_fraction: float, what: str
) -> Dataset:
    """A stratified split: in each class, `val_fraction` of its samples (at
    least one where the class has two) go to validation, chosen with `seed`."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        count = round(val_fraction * len(members))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        val.append(members[:count])
    is_val = np.zeros(len(y), bool)
    is_val[np.concatenate(val)] = True
    description = f"{what}; {(~is_val).sum()} training, {is_val.sum()} validation images (split seed {seed})"
    return Dataset(x[~is_val], y[~is_val], x[is_val], y[is_val], description)


def _npz(path: Path, input_shape: tuple[int, ...], classes: int, seed: int, val_fraction: float) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: error: not a readable .npz file ({err})") from None
    if {"x_train", "y_train", "x_val", "y_val"} <= arrays.keys():
        x_train, y_train = _samples(path, arrays, "x_train", "y_train", input_shape, classes)
        x_val, y_val = _samples(path, arrays, "x_val", "y_val", input_shape, classes)
        return Dataset(
            x_train, y_train, x_val, y_val,
            f"{path}: {len(y_train)} training, {len(y_val)} validation samples",
        )
    if {"x", "y"} <= arrays.keys():
        x, y = _samples(path, arrays, "x", "y", input_shape, classes)
        return _split(x, y, seed, val_fraction, str(path))
    raise DataError(
        f"{path}: error: holds {', '.join(sorted(arrays)) or 'nothing'}; expected x_train, y_train, "
        "x_val, y_val (or x, y to be split)"
    )


def _samples(
    path: Path, arrays: dict[str, np.ndarray], x_key: str, y_key: str,
    input_shape: tuple[int, ...], classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`arrays[x_key]`, `arrays[y_key]` checked against the network."""
    x, y = arrays[x_key], arrays[y_key]
    expected = f"N x {format_shape(input_shape[1:])}"
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{path}: error: '{x_key}' holds {x.dtype} values; expected numbers")
    if x.ndim != 4 or x.shape[1:] != tuple(input_shape[1:]):
        raise DataError(
            f"{path}: error: '{x_key}' has shape {format_shape(x.shape) or 'scalar'}; the network "
            f"takes {expected}"
        )
    if len(x) == 0:
        raise DataError(f"{path}: error: '{x_key}' holds no samples")
    x = x.astype(np.float32)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if not finite.all():
        raise DataError(f"{path}: error: '{x_key}' sample {int(np.flatnonzero(~finite)[0])} holds NaN or infinity")
    check_labels(y, len(x), classes, f"{path}: error: '{y_key}'", f"'{x_key}'")
    return np.ascontiguousarray(x), y.astype(np.int64)


def check_labels(labels: np.ndarray, count: int, classes: int, where: str, samples: str = "the data") -> None:
    """`labels` must be `count` integers in [0, classes); `where` begins the
    message (`FILE: error: 'y'`), `samples` names what they label."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where} holds {labels.dtype} values; expected integer class labels")
    if labels.shape != (count,):
        raise DataError(
            f"{where} has shape {format_shape(labels.shape) or 'scalar'}; expected {count} "
            f"labels, one per sample of {samples}"
        )
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(
            f"{where} runs from {labels.min()} to {labels.max()}; the network has "
            f"{classes} classes (0 to {classes - 1})"
        )


def _image_folder(root: Path, input_shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Every image of `root`'s class subfolders, resized and scaled to [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    _, channels, height, width = input_shape
    if channels not in (1, 3):
        raise DataError(f"{root}: error: images are grey or RGB; the network takes {channels} channels")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root}: error: no class subfolders (expected one folder of images per class)")
    if len(folders) > classes:
        raise DataError(f"{root}: error: {len(folders)} class folders; the network has {classes} classes")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: error: no PNG or JPEG images in this class folder")
        for file in files:
            try:
                with Image.open(file) as image:
                    picture = image.convert("L" if channels == 1 else "RGB").resize(
                        (width, height), Image.Resampling.BILINEAR
                    )
            except (OSError, UnidentifiedImageError, ValueError) as err:
                raise DataError(f"{file}: error: cannot read the image ({err})") from None
            pixels = np.asarray(picture, np.float32).reshape(height, width, channels) / 255
            images.append(pixels.transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


def _standardised(data: Dataset) -> Dataset:
    """Both splits standardised per channel by the training images' mean and
    deviation (said in the description: inputs at deployment need the same)."""
    mean = data.x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = np.maximum(data.x_train.std(axis=(0, 2, 3), keepdims=True), 1e-6)
    return Dataset(
        ((data.x_train - mean) / std).astype(np.float32), data.y_train,
        ((data.x_val - mean) / std).astype(np.float32), data.y_val,
        f"{data.description}; pixels/255 standardised by channel mean "
        f"{np.round(mean.ravel(), 4).tolist()}, std {np.round(std.ravel(), 4).tolist()}",
    )
