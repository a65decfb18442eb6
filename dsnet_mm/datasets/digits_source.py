# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The UCI digits in memory: the source images, the fixed split, and the
bilinear resize, exactly as :mod:`dsnet_mm.datasets.digits` writes them.

Determinism (the CIFAR files written from them are pinned by md5 in
:class:`~dsnet_mm.datasets.digits.DigitsCIFAR10`):

- Split: a fixed stratified split computed here, not by scikit-learn's
  splitter, so that it cannot change with the scikit-learn version. The test
  split has ``ceil(N / 5)`` = 360 samples, spread over the classes in
  proportion to their size (largest remainder, ties to the lower class
  index); which samples of a class go to the test split is decided by
  ``np.random.RandomState(0).permutation`` (NumPy's frozen legacy stream),
  class by class in class order. The remaining 1,437 samples form the
  training split. Both splits keep the original order of ``load_digits``
  (ascending index), which mixes the classes.
- Pixels: each 8x8 image is resized to 32x32 by a separable bilinear
  interpolation (half-pixel centres, edge clamp; the same geometry as
  ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``) written in NumPy, then
  scaled from 0..16 to 0..255 and rounded half up. For 8 -> 32 every weight
  is a multiple of 1/8, so the arithmetic is exact in float64 and the bytes
  do not depend on the BLAS or on PIL/OpenCV versions. The grey image is
  replicated to 3 channels (RGB).
"""
import hashlib
from typing import Dict, Tuple

import numpy as np

IMAGE_SIZE = 32
SPLIT_SEED = 0

# md5 of the source pixels (uint8 0..16, N x 8 x 8) followed by the labels
# (uint8), as ``sklearn.datasets.load_digits`` returns them.
SOURCE_MD5 = '7696c07daa6d85010f8268703ab8b067'

# {'train': {...}, 'test': {...}}, see :func:`load_digits_split`.
_Splits = Dict[str, Dict[str, np.ndarray]]



# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------
def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Build the 1-D bilinear interpolation matrix ``out_size x in_size``.

    Output pixel ``d`` samples the input at ``(d + 0.5) * in / out - 0.5``
    (half-pixel centres), clamped to ``[0, in_size - 1]``, like OpenCV's
    ``INTER_LINEAR``. Each row sums to one.

    Args:
        in_size (int): Number of input pixels along the axis.
        out_size (int): Number of output pixels along the axis.

    Returns:
        np.ndarray: float64 matrix of shape ``(out_size, in_size)``.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f'Sizes must be positive, got {in_size} -> '
                         f'{out_size}.')
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(mat, (rows, lo), 1.0 - frac)
    np.add.at(mat, (rows, hi), frac)
    return mat


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a stack of single-channel images with bilinear interpolation.

    Args:
        images (np.ndarray): Array of shape ``(N, H, W)``.
        size (int): Output height and width.

    Returns:
        np.ndarray: float64 array of shape ``(N, size, size)``.
    """
    if images.ndim != 3:
        raise ValueError(f'Expected (N, H, W) images, got {images.shape}.')
    rows = bilinear_matrix(images.shape[1], size)
    cols = bilinear_matrix(images.shape[2], size)
    images = images.astype(np.float64)
    # out[n] = rows @ images[n] @ cols.T
    return np.matmul(np.matmul(rows, images), cols.T)


def _to_rgb_uint8(images: np.ndarray, max_value: int, size: int) -> np.ndarray:
    """Resize grey images, scale ``0..max_value`` to ``0..255`` and make RGB.

    Args:
        images (np.ndarray): Integer-valued array ``(N, H, W)``.
        max_value (int): The value that maps to 255.
        size (int): Output height and width.

    Returns:
        np.ndarray: uint8 array of shape ``(N, size, size, 3)``.
    """
    resized = resize_bilinear(images, size)
    scaled = np.floor(resized * 255.0 / max_value + 0.5)
    grey = np.clip(scaled, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


# ---------------------------------------------------------------------------
# Source data and split
# ---------------------------------------------------------------------------
def load_digits_source() -> Tuple[np.ndarray, np.ndarray]:
    """Load scikit-learn's digits and check they are the expected ones.

    Returns:
        tuple[np.ndarray, np.ndarray]: uint8 images ``(1797, 8, 8)`` with
        values 0..16 and int64 labels ``(1797,)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    raw = np.asarray(digits.images)
    if raw.shape[1:] != (8, 8) or np.any(raw != np.round(raw)) or \
            raw.min() < 0 or raw.max() > 16:
        raise RuntimeError('sklearn.datasets.load_digits() returned images '
                           'that are not 8x8 integers in 0..16.')
    images = raw.astype(np.uint8)
    labels = np.asarray(digits.target).astype(np.int64)
    if SOURCE_MD5 is not None:
        md5 = hashlib.md5(images.tobytes() +
                          labels.astype(np.uint8).tobytes()).hexdigest()
        if md5 != SOURCE_MD5:
            raise RuntimeError(
                'The digits shipped with this scikit-learn differ from the '
                f'ones this data set was built from (md5 {md5}, expected '
                f'{SOURCE_MD5}); the pinned file md5s would not match.')
    return images, labels


def stratified_split(labels: np.ndarray,
                     seed: int = SPLIT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, stratified by label.

    The test split holds ``ceil(N / 5)`` samples, allotted to the classes in
    proportion to their size by the largest-remainder method (ties go to the
    lower class index). The test samples of each class are the first ones of
    ``RandomState(seed).permutation`` of that class' indices, drawn class by
    class in ascending class order.

    Args:
        labels (np.ndarray): Integer labels of shape ``(N,)``.
        seed (int): Seed of the legacy NumPy ``RandomState``.
            Defaults to 0.

    Returns:
        tuple[np.ndarray, np.ndarray]: Sorted train and test indices.
    """
    labels = np.asarray(labels)
    num = len(labels)
    num_test = -(-num // 5)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts.astype(np.int64) * num_test
    per_class = quota // num
    remainder = quota % num
    order = sorted(range(len(classes)), key=lambda i: (-remainder[i], i))
    per_class[order[:num_test - int(per_class.sum())]] += 1

    rng = np.random.RandomState(seed)
    test = []
    for cls, k in zip(classes, per_class):
        members = np.flatnonzero(labels == cls)
        test.append(rng.permutation(members)[:k])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(num), test_idx)
    return train_idx, test_idx


def load_digits_split() -> _Splits:
    """Build both splits in memory, exactly as :func:`write_digits` writes.

    Returns:
        dict: ``{'train': ..., 'test': ...}``, each a dict with ``'images'``
        (uint8 ``(n, 32, 32, 3)`` RGB), ``'labels'`` (int64 ``(n,)``),
        ``'indices'`` (positions in ``load_digits()``) and ``'names'`` (file
        names in the folder layout).
    """
    images, labels = load_digits_source()
    rgb = _to_rgb_uint8(images, max_value=16, size=IMAGE_SIZE)
    train_idx, test_idx = stratified_split(labels)
    return {
        name: dict(images=rgb[idx], labels=labels[idx], indices=idx,
                   names=[file_name(i) for i in idx])
        for name, idx in (('train', train_idx), ('test', test_idx))
    }


def file_name(index: int) -> str:
    """File name of a sample in the folder layout (its load_digits index)."""
    return f'{int(index):04d}.png'
