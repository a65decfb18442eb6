# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Graded digits: the UCI digits at four levels of difficulty.

Dynamic inference pays off on inputs of diverse difficulty: the plain digits
are so easy that every sub-network scores the same. This data set makes
several images of every source digit at four difficulty levels
(:data:`LEVELS`, 0 = clean to 3 = heavy) by the deterministic degradations
of :mod:`dsnet_mm.datasets.degrade`:

=====  ===========================================================  =======
level  degradations (maxima; drawn uniformly per image)             purpose
=====  ===========================================================  =======
0      none: the plain digit, pixel for pixel the ``digits`` set    easy
1      rotation 10 deg, scale 0.9-1.05, shift 1 px, blur 0.3,       pose
       noise 0.03
2      rotation 40 deg, scale 0.7-1.1, shift 3 px, one clutter      clutter
       digit at ink 0.6, blur 0.5, noise 0.1
3      rotation 70 deg, scale 0.6-1.2, shift 5 px, two clutter      heavy
       digits at ink 0.7, blur 0.6, noise 0.12
=====  ===========================================================  =======

The hard levels vary the pose widely and add competing strokes, which a
wider network can learn to see through, rather than destroying information
(heavy noise or erasing), which no width recovers: the point is a task on
which width pays off for the hard images and not for the easy ones.

The clutter digits come from the same split as the image (never from the
other split), so train and test share **no source digit**: the split is the
plain digits' stratified split of the 1,797 sources (1,437 train, 360
test), and every variant of a source stays in its source's split. Each
training source has :data:`VARIANTS` ``['train']`` = 8 images (two draws of
every level) and each test source 4 (one per level): 11,496 training and
1,440 test images, a quarter at each level.

Layout (written by ``tools/dataset_converters/write_digits.py`` beside the
plain digits)::

    root/graded_digits/
    ├── .complete
    ├── cifar/graded-digits-batches-py/{data_batch_1,test_batch,batches.meta}
    └── imagenet/{train,val}/<class>/<source>_<variant>_l<level>.png,
                 meta/{train,val}.txt

The CIFAR pickles hold mmpretrain's keys plus ``'levels'`` and ``'sources'``
(the source digit's index in ``load_digits()``) per image; the folder
layout names the level in each file name. :class:`GradedDigitsCIFAR10` and
:class:`GradedDigitsFolder` put ``level`` and ``source`` into every data
info, so ``dict(type='PackInputs', meta_keys=(..., 'level'))`` carries the
level to the data samples (``sample.level``), where the per-level metrics
read it.

Determinism: each image's random parameters come from its own legacy
``np.random.RandomState([GRADED_SEED, split, source, variant])``, drawn in a
fixed order; the degradations use elementwise NumPy arithmetic only. The
CIFAR files are pinned by md5 (:data:`GRADED_CIFAR_MD5`).
"""
import re
from typing import Dict, List

import numpy as np
from mmengine import fileio
from mmpretrain.registry import DATASETS

from .degrade import degrade
from .digits import (IMAGE_SIZE, DigitsCIFAR10, DigitsFolder,
                     DigitsLayout, load_digits_source, resize_bilinear,
                     stratified_split, write_layout)

GRADED_DIR = 'graded_digits'
GRADED_CIFAR_SUBDIR = 'cifar/graded-digits-batches-py'
GRADED_SEED = 7
VARIANTS = dict(train=8, test=4)
"""Images per source digit in each split: variant ``v`` is at level
``v % 4``, so the training split holds two draws of every level."""

LEVELS = (
    dict(rotate=0.0, scale=(1.0, 1.0), shift=0.0, clutter=0, clutter_ink=0.0,
         occlude=None, blur=0.0, noise=0.0),
    dict(rotate=10.0, scale=(0.9, 1.05), shift=1.0, clutter=0,
         clutter_ink=0.0, occlude=None, blur=0.3, noise=0.03),
    dict(rotate=40.0, scale=(0.7, 1.1), shift=3.0, clutter=1,
         clutter_ink=0.6, occlude=None, blur=0.5, noise=0.1),
    dict(rotate=70.0, scale=(0.6, 1.2), shift=5.0, clutter=2,
         clutter_ink=0.7, occlude=None, blur=0.6, noise=0.12),
)
"""Degradation strengths of each difficulty level (see the module doc)."""
NUM_LEVELS = len(LEVELS)

GRADED_CIFAR_MD5: Dict[str, str] = {
    'data_batch_1': 'cd36014048cfb022e10725f89b7bf636',
    'test_batch': 'd38bb5a220852a04b85b0d5d83d80ead',
    'batches.meta': 'cc6fe9096a11a8e6a66f2610b92a3c5e',
}

_SPLIT_CODES = {'train': 0, 'test': 1}
_NAME_PATTERN = re.compile(r'_l(\d+)\.png$')


def graded_file_name(source: int, variant: int, level: int) -> str:
    """File name of an image in the folder layout."""
    return f'{int(source):04d}_{int(variant)}_l{int(level)}.png'


def level_from_path(path: str) -> int:
    """The difficulty level named in a folder-layout file name.

    Raises:
        ValueError: If the name does not end in ``_l<level>.png`` with a
            known level.
    """
    match = _NAME_PATTERN.search(path)
    if match is None or int(match.group(1)) >= NUM_LEVELS:
        raise ValueError(
            f'{path}: a graded digits file name ends in _l<level>.png with '
            f'level in 0..{NUM_LEVELS - 1}')
    return int(match.group(1))


def _degrade_split(base: np.ndarray, sources: np.ndarray,
                   split: str) -> List[np.ndarray]:
    """Every variant of every source of one split, as float images."""
    images = []
    for source in sources:
        # clutter partners: the split's other sources, never the image itself
        others = [base[i] for i in sources if i != source]
        for variant in range(VARIANTS[split]):
            rng = np.random.RandomState(
                [GRADED_SEED, _SPLIT_CODES[split], int(source), variant])
            images.append(
                degrade(base[source], LEVELS[variant % NUM_LEVELS], rng,
                        others))
    return images


def load_graded_split() -> Dict[str, Dict[str, np.ndarray]]:
    """Build both splits in memory, exactly as the writer writes them.

    Returns:
        dict: ``{'train': ..., 'test': ...}``, each with ``'images'`` (uint8
        ``(n, 32, 32, 3)``), ``'labels'``, ``'levels'``, ``'sources'``
        (index in ``load_digits()``), ``'variants'`` and ``'names'``; the
        images of a source are consecutive, in variant order.
    """
    raw, labels = load_digits_source()
    # 8 -> 32 bilinear weights are multiples of 1/8: exact in float64
    base = resize_bilinear(raw, IMAGE_SIZE) / 16.0
    splits = {}
    for split, sources in zip(('train', 'test'), stratified_split(labels)):
        grey = np.stack(_degrade_split(base, sources, split))
        grey = np.clip(np.floor(grey * 255.0 + 0.5), 0, 255).astype(np.uint8)
        src = np.repeat(sources, VARIANTS[split])
        variants = np.tile(np.arange(VARIANTS[split]), len(sources))
        levels = variants % NUM_LEVELS
        splits[split] = dict(
            images=np.repeat(grey[..., None], 3, axis=-1),
            labels=labels[src],
            levels=levels,
            sources=src,
            variants=variants,
            names=[graded_file_name(*x) for x in zip(src, variants, levels)])
    return splits


GRADED_LAYOUT = DigitsLayout(
    GRADED_DIR, GRADED_CIFAR_SUBDIR, GRADED_CIFAR_MD5, load_graded_split,
    extras=('levels', 'sources'),
    marker=dict(graded_seed=GRADED_SEED, variants=VARIANTS,
                levels=[dict(d) for d in LEVELS]))
"""The graded digits: ``root/graded_digits``."""


def write_graded_digits(root: str) -> None:
    """Write the graded digits under ``root/graded_digits`` (idempotent, see
    :func:`dsnet_mm.datasets.digits.write_layout`).

    Args:
        root (str): The data root, e.g. ``'data'``.
    """
    write_layout(root, GRADED_LAYOUT)


@DATASETS.register_module()
class GradedDigitsCIFAR10(DigitsCIFAR10):
    """The graded digits in the CIFAR-10 python layout, with levels.

    A :class:`DigitsCIFAR10` of the graded files whose data infos also carry
    ``level`` (0..3) and ``source`` (the source digit). Pack the level into
    the data samples with ``dict(type='PackInputs', meta_keys=(...,
    'level'))``.

    Example config::

        dataset=dict(type='GradedDigitsCIFAR10',
                     data_root='data/graded_digits/cifar', split='test',
                     pipeline=[dict(type='PackInputs',
                                    meta_keys=('sample_idx', 'level'))])

    Args:
        *args: Positional arguments of :class:`DigitsCIFAR10`.
        **kwargs: Keyword arguments of :class:`DigitsCIFAR10`.
    """

    base_folder = GRADED_CIFAR_SUBDIR.split('/')[-1]
    train_list = [['data_batch_1', GRADED_CIFAR_MD5['data_batch_1']]]
    test_list = [['test_batch', GRADED_CIFAR_MD5['test_batch']]]
    meta = {
        'filename': 'batches.meta',
        'key': 'label_names',
        'md5': GRADED_CIFAR_MD5['batches.meta'],
    }
    layout = GRADED_LAYOUT

    def load_data_list(self) -> List[dict]:
        """mmpretrain's CIFAR loading, then each image's level and source."""
        import pickle

        data_list = super().load_data_list()
        files = self.train_list if self.split == 'train' else self.test_list
        levels, sources = [], []
        for file_name, _ in files:
            entry = pickle.loads(
                fileio.get(
                    fileio.join_path(self.data_prefix['root'],
                                     self.base_folder, file_name)))
            levels += entry['levels']
            sources += entry['sources']
        for info, level, source in zip(data_list, levels, sources):
            info.update(level=int(level), source=int(source))
        return data_list


@DATASETS.register_module()
class GradedDigitsFolder(DigitsFolder):
    """The graded digits in the folder layout, with levels.

    A :class:`~dsnet_mm.datasets.digits.DigitsFolder` (mmpretrain's
    ``CustomDataset``, checked at load) whose data infos also carry
    ``level``, read from the file name (``..._l<level>.png``); a file
    without it is an error naming the file.

    Example config::

        dataset=dict(type='GradedDigitsFolder',
                     data_root='data/graded_digits/imagenet',
                     ann_file='meta/val.txt', data_prefix='val',
                     pipeline=[dict(type='LoadImageFromFile'),
                               dict(type='PackInputs',
                                    meta_keys=('sample_idx', 'level'))])

    Args:
        **kwargs: Keyword arguments of :class:`DigitsFolder`.
    """

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        for info in data_list:
            info['level'] = level_from_path(info['img_path'])
        return data_list
