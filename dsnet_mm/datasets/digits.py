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

- Split and pixels: see :mod:`dsnet_mm.datasets.digits_source`, which
  builds them.
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
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmengine import fileio
from mmpretrain.datasets import CIFAR10, CustomDataset
from mmpretrain.registry import DATASETS

from dsnet_mm.ops.utils import check_int
from .digits_source import (IMAGE_SIZE, SOURCE_MD5, SPLIT_SEED, _Splits,
                            bilinear_matrix, load_digits_source,
                            load_digits_split, resize_bilinear,
                            stratified_split)
from .publish import write_atomically

__all__ = [
    'DIGITS_CLASSES', 'REGENERATE_COMMAND', 'DIGITS_DIR', 'CIFAR_SUBDIR',
    'IMAGENET_SUBDIR', 'MARKER', 'IMAGE_SIZE', 'SPLIT_SEED',
    'PICKLE_PROTOCOL', 'SOURCE_MD5', 'CIFAR_MD5', 'bilinear_matrix',
    'resize_bilinear', 'load_digits_source', 'stratified_split',
    'load_digits_split', 'DigitsLayout', 'build_cifar_files',
    'check_cifar_files', 'write_layout', 'is_complete', 'DIGITS_LAYOUT',
    'write_digits', 'DigitsCIFAR10', 'DigitsFolder'
]

DIGITS_CLASSES: Tuple[str, ...] = tuple(str(i) for i in range(10))
"""Class names of the digits data set, index ``i`` is the digit ``i``."""

REGENERATE_COMMAND = ('python tools/dataset_converters/write_digits.py '
                      '--out data')
"""The command that (re)writes the data under ``data/digits``."""

DIGITS_DIR = 'digits'
CIFAR_SUBDIR = osp.join('cifar', 'digits-batches-py')
IMAGENET_SUBDIR = 'imagenet'
MARKER = '.complete'

PICKLE_PROTOCOL = 3

# md5 of each written CIFAR-layout file.
CIFAR_MD5: Dict[str, str] = {
    'data_batch_1': '0db64febcc6ffc18dbc19b77811b1f1f',
    'test_batch': '2486990cfeb1d0839f53e51744858953',
    'batches.meta': '79b3ff0402d9e75bd2a620e6eb54a63c',
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
    replaced (:func:`~dsnet_mm.datasets.publish.write_atomically`).

    Args:
        root (str): The data root, e.g. ``'data'``.
        layout (DigitsLayout): What to write.
    """
    def fill(tmp: str) -> None:
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

    write_atomically(root, layout.name, lambda final: is_complete(
        final, layout), fill)


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
