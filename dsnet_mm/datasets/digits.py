# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Real image data that can be had without a download: the UCI digits.

scikit-learn ships the UCI handwritten digits (1,797 real 8x8 grey images,
values 0..16, classes ``'0'`` .. ``'9'``) inside its package
(:func:`sklearn.datasets.load_digits`). :func:`write_digits` writes them in
two on-disk layouts read by mmpretrain's own dataset classes, so the real
loading code is exercised::

    root/digits/
    ├── .complete                       # marker, JSON with sizes and md5s
    ├── cifar/digits-batches-py/        # CIFAR-10 python-pickle layout
    │   ├── data_batch_1                # training split
    │   ├── test_batch                  # test split
    │   └── batches.meta
    └── imagenet/                       # ImageNet-style folder layout
        ├── train/<class>/<index>.png
        ├── val/<class>/<index>.png
        └── meta/train.txt, meta/val.txt   # "<class>/<index>.png <label>"

Determinism (the CIFAR files are pinned by md5 in :class:`DigitsCIFAR10`):

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
- Pickles: protocol 3. ``'data'`` is stored as
  ``numpy.reshape(numpy.frombuffer(bytearray(raw), 'uint8'), (N, 3072))``
  instead of NumPy's own array pickle, whose bytes name NumPy's private
  module (``numpy.core`` in NumPy 1, ``numpy._core`` in NumPy 2). It loads
  as an ordinary writable ``uint8`` array.

The CIFAR layout is read by the registered :class:`DigitsCIFAR10`, a subclass
of mmpretrain's ``CIFAR10`` that only declares its file list and md5s.

The folder layout is read by the registered :class:`DigitsFolder`, a
``CustomDataset`` that stops at load on an empty split or a label outside
the classes; mmpretrain's ``CustomDataset`` reads it as well, either from
the annotation file,
``dict(type='CustomDataset', data_root='data/digits/imagenet',
ann_file='meta/train.txt', data_prefix='train',
metainfo=dict(classes=DIGITS_CLASSES))``, or by scanning the class folders
(``ann_file=''``; classes are then the sorted folder names ``'0'`` ..
``'9'``, the same indices). mmpretrain's ``ImageNet`` reads it as well with
the annotation file and ``metainfo=dict(classes=DIGITS_CLASSES)`` (without
it, ``ImageNet`` reports its 1,000 ImageNet class names). Both give the
samples in the same order as the CIFAR layout.

PNG files are lossless, so their pixels equal the CIFAR rows exactly; their
bytes (zlib) are not pinned.
"""
import hashlib
import json
import os
import os.path as osp
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine import fileio
from mmpretrain.datasets import CIFAR10, CustomDataset
from mmpretrain.registry import DATASETS

from dsnet_mm.ops.utils import check_int

DIGITS_CLASSES: Tuple[str, ...] = tuple(str(i) for i in range(10))
"""Class names of the digits data set, index ``i`` is the digit ``i``."""

REGENERATE_COMMAND = ('python tools/dataset_converters/write_digits.py '
                      '--out data')
"""The command that (re)writes the data under ``data/digits``."""

DIGITS_DIR = 'digits'
CIFAR_SUBDIR = osp.join('cifar', 'digits-batches-py')
IMAGENET_SUBDIR = 'imagenet'
MARKER = '.complete'

IMAGE_SIZE = 32
SPLIT_SEED = 0
PICKLE_PROTOCOL = 3

# md5 of the source pixels (uint8 0..16, N x 8 x 8) followed by the labels
# (uint8), as ``sklearn.datasets.load_digits`` returns them.
SOURCE_MD5 = '7696c07daa6d85010f8268703ab8b067'
# md5 of each written CIFAR-layout file.
CIFAR_MD5: Dict[str, str] = {
    'data_batch_1': '0db64febcc6ffc18dbc19b77811b1f1f',
    'test_batch': '2486990cfeb1d0839f53e51744858953',
    'batches.meta': '79b3ff0402d9e75bd2a620e6eb54a63c',
}

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
                   names=[_file_name(i) for i in idx])
        for name, idx in (('train', train_idx), ('test', test_idx))
    }


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
class _StablePickler(pickle.Pickler):
    """Pickle uint8 arrays without NumPy's version-specific array pickle."""

    def reducer_override(self, obj):
        if not isinstance(obj, np.ndarray):
            return NotImplemented
        if obj.dtype != np.uint8:
            raise TypeError(f'Only uint8 arrays are supported, got '
                            f'{obj.dtype}.')
        if obj.ndim == 1:
            return np.frombuffer, (bytearray(obj.tobytes()), 'uint8')
        shape = tuple(int(s) for s in obj.shape)
        return np.reshape, (np.ascontiguousarray(obj).reshape(-1), shape)


def _dumps(obj: dict) -> bytes:
    """Pickle ``obj`` with the fixed protocol and the stable array form."""
    import io

    buffer = io.BytesIO()
    _StablePickler(buffer, protocol=PICKLE_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _file_name(index: int) -> str:
    """File name of a sample in the folder layout (its load_digits index)."""
    return f'{int(index):04d}.png'


@dataclass(frozen=True)
class DigitsLayout:
    """Where and how one digits data set is written (see :func:`write_layout`).

    Args:
        name (str): Folder under the data root, e.g. ``'digits'``.
        cifar_subdir (str): CIFAR-layout folder inside it.
        cifar_md5 (dict): Pinned md5 of each CIFAR-layout file.
        build (callable): Returns the splits (:func:`load_digits_split`'s
            form, possibly with more per-sample fields).
        extras (tuple[str]): Per-sample integer fields of the splits that
            the CIFAR pickles also store (one list each).
        marker (dict): More facts for the ``.complete`` marker.
    """
    name: str
    cifar_subdir: str
    cifar_md5: Dict[str, str]
    build: Callable[[], _Splits]
    extras: Tuple[str, ...] = ()
    marker: Dict[str, object] = field(default_factory=dict)


def build_cifar_files(splits: Optional[_Splits] = None,
                      extras: Sequence[str] = ()) -> Dict[str, bytes]:
    """Build the bytes of the three CIFAR-layout files.

    Args:
        splits (dict, optional): Output of :func:`load_digits_split` (or of
            another layout's ``build``). Defaults to None (computed).
        extras (Sequence[str]): Per-sample integer fields stored as lists
            after mmpretrain's keys. Defaults to none.

    Returns:
        dict[str, bytes]: File name to content.
    """
    if splits is None:
        splits = load_digits_split()
    files = {}
    for file_name, split, label in (('data_batch_1', 'train',
                                     'training batch 1 of 1'),
                                    ('test_batch', 'test',
                                     'testing batch 1 of 1')):
        part = splits[split]
        # CIFAR rows are channel-major: 1024 R, 1024 G, then 1024 B values.
        rows = part['images'].transpose(0, 3, 1, 2).reshape(
            len(part['images']), -1)
        files[file_name] = _dumps({
            'batch_label': label,
            'labels': [int(x) for x in part['labels']],
            'data': rows,
            'filenames': list(part['names']),
            **{key: [int(x) for x in part[key]] for key in extras},
        })
    files['batches.meta'] = _dumps({
        'num_cases_per_batch': len(splits['train']['labels']),
        'label_names': list(DIGITS_CLASSES),
        'num_vis': IMAGE_SIZE * IMAGE_SIZE * 3,
    })
    return files


def _write_bytes(path: str, content: bytes) -> None:
    with open(path, 'wb') as f:
        f.write(content)


def _write_imagenet(folder: str, splits: _Splits) -> None:
    """Write the ImageNet-style folder layout into ``folder``."""
    import cv2

    os.makedirs(osp.join(folder, 'meta'))
    for split, subdir in (('train', 'train'), ('test', 'val')):
        part = splits[split]
        for cls in DIGITS_CLASSES:
            os.makedirs(osp.join(folder, subdir, cls))
        lines = []
        for image, label, name in zip(part['images'], part['labels'],
                                      part['names']):
            rel = f'{DIGITS_CLASSES[int(label)]}/{name}'
            ok, png = cv2.imencode('.png', image[..., ::-1])  # RGB -> BGR
            if not ok:
                raise RuntimeError(f'OpenCV failed to encode {rel}.')
            _write_bytes(osp.join(folder, subdir, rel), png.tobytes())
            lines.append(f'{rel} {int(label)}\n')
        _write_bytes(
            osp.join(folder, 'meta', f'{subdir}.txt'),
            ''.join(lines).encode('ascii'))


def check_cifar_files(folder: str,
                      expected: Optional[Dict[str, str]] = None) -> List[str]:
    """List what is wrong with the CIFAR-layout files in ``folder``.

    Args:
        folder (str): The ``digits-batches-py`` folder (any path that
            :mod:`mmengine.fileio` can read).
        expected (dict, optional): File name to md5. Defaults to None
            (:data:`CIFAR_MD5`).

    Returns:
        list[str]: One line per missing or mismatching file; empty if all
        files are there with the expected md5.
    """
    expected = CIFAR_MD5 if expected is None else expected
    problems = []
    for name, md5 in expected.items():
        path = fileio.join_path(folder, name)
        if not fileio.exists(path):
            problems.append(f'{path}: missing')
            continue
        actual = hashlib.md5(fileio.get(path)).hexdigest()
        if actual != md5:
            problems.append(f'{path}: md5 {actual}, expected {md5}')
    return problems


def write_layout(root: str, layout: DigitsLayout) -> None:
    """Write one digits data set under ``root/<layout.name>``.

    Idempotent: when ``root/<name>/.complete`` exists and the CIFAR files
    have their pinned md5s, nothing is written. Everything is written into a
    temporary folder next to the destination, the marker last, and the
    folder is then renamed to ``root/<name>`` in one step, so an interrupted
    run never leaves a partial data set marked complete. A ``root/<name>``
    without the marker, or with CIFAR files that fail their md5, is
    replaced.

    Args:
        root (str): The data root, e.g. ``'data'``.
        layout (DigitsLayout): What to write.
    """
    root = osp.abspath(root)
    final = osp.join(root, layout.name)
    if is_complete(final, layout):
        return
    os.makedirs(root, exist_ok=True)

    tmp = tempfile.mkdtemp(prefix=f'.{layout.name}-tmp-', dir=root)
    try:
        splits = layout.build()
        cifar = osp.join(tmp, layout.cifar_subdir)
        os.makedirs(cifar)
        for name, content in build_cifar_files(splits,
                                               layout.extras).items():
            _write_bytes(osp.join(cifar, name), content)
        problems = check_cifar_files(cifar, layout.cifar_md5)
        if problems:
            raise RuntimeError(
                'The CIFAR-layout files written here do not have the md5s '
                f'pinned for {layout.name!r} in dsnet_mm.datasets (did NumPy, '
                'pickle or scikit-learn change?):\n  ' + '\n  '.join(problems))
        _write_imagenet(osp.join(tmp, IMAGENET_SUBDIR), splits)
        marker = {
            'source': 'sklearn.datasets.load_digits',
            'source_md5': SOURCE_MD5,
            'splits': {k: int(len(v['labels'])) for k, v in splits.items()},
            'split_seed': SPLIT_SEED,
            'image_size': IMAGE_SIZE,
            'cifar_md5': layout.cifar_md5,
            **layout.marker,
        }
        _write_bytes(
            osp.join(tmp, MARKER),
            (json.dumps(marker, indent=2, sort_keys=True) +
             '\n').encode('ascii'))
        _publish(tmp, final, layout)
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def is_complete(folder: str, layout: Optional[DigitsLayout] = None) -> bool:
    """Whether ``folder`` (``root/<name>``) is marked complete and intact.

    Args:
        folder (str): The data set's folder, e.g. ``data/digits``.
        layout (DigitsLayout, optional): Its layout. Defaults to None (the
            plain digits, :data:`DIGITS_LAYOUT`).

    Returns:
        bool: True if the marker exists and the CIFAR files have their md5s.
    """
    layout = DIGITS_LAYOUT if layout is None else layout
    return (osp.isfile(osp.join(folder, MARKER)) and not check_cifar_files(
        osp.join(folder, layout.cifar_subdir), layout.cifar_md5))


def _publish(tmp: str, final: str, layout: DigitsLayout) -> None:
    """Rename the finished ``tmp`` folder to ``final``."""
    if osp.lexists(final):
        if is_complete(final, layout):  # another process finished first
            return
        stale = tempfile.mkdtemp(
            prefix=f'.{layout.name}-stale-', dir=osp.dirname(final))
        os.rename(final, osp.join(stale, layout.name))
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_complete(final, layout):
            raise


DIGITS_LAYOUT = DigitsLayout(DIGITS_DIR, CIFAR_SUBDIR, CIFAR_MD5,
                             load_digits_split)
"""The plain digits: ``root/digits``, one image per source digit."""


def write_digits(root: str) -> None:
    """Write scikit-learn's digits under ``root/digits`` (see module doc and
    :func:`write_layout`).

    Args:
        root (str): The data root, e.g. ``'data'``.
    """
    write_layout(root, DIGITS_LAYOUT)


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class DigitsCIFAR10(CIFAR10):
    """The UCI digits in the CIFAR-10 python layout.

    A :class:`mmpretrain.datasets.CIFAR10` that only declares the files that
    :func:`write_digits` writes (``digits-batches-py``: ``data_batch_1``,
    ``test_batch``, ``batches.meta``) and their md5s; loading is mmpretrain's.
    The data cannot be downloaded: when a file is missing or its md5 does not
    match, a ``RuntimeError`` names the command that writes it.

    Example config::

        dataset=dict(type='DigitsCIFAR10', data_root='data/digits/cifar',
                     split='train', pipeline=...)

    Args:
        *args: Positional arguments of
            :class:`mmpretrain.datasets.CIFAR10`.
        **kwargs: Keyword arguments of :class:`mmpretrain.datasets.CIFAR10`
            (``data_root``, ``split``, ``metainfo``, ``download`` (ignored,
            nothing can be downloaded), ``data_prefix``, ``test_mode``, ...).
    """

    base_folder = 'digits-batches-py'
    url = None
    filename = None
    tgz_md5 = None
    train_list = [['data_batch_1', CIFAR_MD5['data_batch_1']]]
    test_list = [['test_batch', CIFAR_MD5['test_batch']]]
    meta = {
        'filename': 'batches.meta',
        'key': 'label_names',
        'md5': CIFAR_MD5['batches.meta'],
    }
    METAINFO = {'classes': DIGITS_CLASSES}
    layout = DIGITS_LAYOUT

    def load_data_list(self) -> List[dict]:
        """Check every file's md5, then load with mmpretrain's CIFAR10."""
        folder = fileio.join_path(self.data_prefix['root'],
                                  self.base_folder)
        expected = {name: md5 for name, md5 in self.train_list +
                    self.test_list}
        expected[self.meta['filename']] = self.meta['md5']
        problems = check_cifar_files(folder, expected)
        if problems:
            raise RuntimeError(
                f'{self.__class__.__name__}: the data under {folder} is '
                'missing or corrupted:\n  ' + '\n  '.join(problems) +
                '\nIt cannot be downloaded; the data must be regenerated '
                f'with `{REGENERATE_COMMAND}` (run from the repository '
                'root; `--out DIR` writes '
                f'DIR/{self.layout.name}/{self.layout.cifar_subdir}).')
        return super().load_data_list()


@DATASETS.register_module()
class DigitsFolder(CustomDataset):
    """The digits in the ImageNet-style folder layout, checked at load.

    mmpretrain's :class:`CustomDataset` (annotation file, or the class
    folders) with the digit classes, which stops at load, before any
    training, on an empty split (naming the annotation file or folder) and
    on a label outside the classes (naming the file and its ``gt_label``).

    Example config::

        dataset=dict(type='DigitsFolder', data_root='data/digits/imagenet',
                     ann_file='meta/val.txt', data_prefix='val',
                     pipeline=[dict(type='LoadImageChecked', channels=3),
                               dict(type='PackInputs')])

    Args:
        **kwargs: Keyword arguments of :class:`CustomDataset`; ``metainfo``
            defaults to the digit classes.
    """

    METAINFO = {'classes': DIGITS_CLASSES}

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        if not data_list:
            source = self.ann_file or self.img_prefix
            raise ValueError(
                f'{source}: the split is empty (no samples); check '
                'ann_file and data_prefix, or rewrite the data with '
                f'`{REGENERATE_COMMAND}`')
        last = len(self.metainfo['classes']) - 1
        for info in data_list:
            check_int(f"{info['img_path']}: gt_label", info['gt_label'], 0,
                      last)
        return data_list
