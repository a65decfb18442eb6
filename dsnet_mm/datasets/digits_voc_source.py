# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The digits detection set in memory: canvases of pasted UCI digits, their
boxes and levels, and the content of their VOC files (see
:mod:`dsnet_mm.datasets.digits_voc` for the layout, the difficulty, the
splits and the determinism); needs no mmdet.
"""
import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dsnet_mm.ops.utils import check_int
from .degrade import degrade
from .digits import (DIGITS_CLASSES, IMAGE_SIZE, load_digits_source,
                     resize_bilinear, stratified_split)
from .graded_digits import LEVELS, NUM_LEVELS

DIGITS_VOC_DIR = 'digits_voc'
VOC_SUBDIR = 'VOCdevkit/VOC2007'
"""Where the VOC2007 folder lies under ``root/digits_voc``. A config reads
it with ``data_root='<root>/digits_voc/VOCdevkit/'``,
``ann_file='VOC2007/ImageSets/Main/<split>.txt'`` and
``data_prefix=dict(sub_data_root='VOC2007/')``."""

VOC_SEED = 11
CANVAS_SIZE = 128
DIGIT_SIDES = (24, 56)
"""Smallest and largest side (px) of a digit's pasted frame."""
DIGITS_PER_IMAGE = (2, 4)
"""Fewest and most digits per image (the last image of a split may hold
fewer: it takes the digits left)."""
INK_THRESHOLD = 0.25
"""A frame pixel belongs to the digit's box from this ink level on."""
PLACE_TRIES = 100
SHRINK = 0.85
JPEG_QUALITY = 95

SPLITS = (('trainval', 'train'), ('test', 'test'))
"""``(VOC image set, digits split of its sources)``."""
_SPLIT_CODES = {'trainval': 0, 'test': 1}

DIGITS_VOC_MD5 = 'ef4ee54f2f0f7762842de0f19a4a8ca2'
"""md5 of the full set's content (:func:`content_md5`)."""

# id, level, canvas (uint8 (H, W)) and objects, each a dict of label,
# source and box (x0, y0, x1, y1; 0-based, half-open)
_Record = dict


# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------
def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of one ``(H, W)`` float image to ``size x size``.

    The geometry of :func:`dsnet_mm.datasets.digits.bilinear_matrix`
    (half-pixel centres, edge clamp) computed by elementwise gathers, so the
    result does not depend on the BLAS (a matrix product would).
    """
    out = image.astype(np.float64)
    for axis in (0, 1):
        num = out.shape[axis]
        src = (np.arange(size, dtype=np.float64) + 0.5) * num / size - 0.5
        src = np.clip(src, 0.0, num - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, num - 1)
        frac = (src - lo).reshape((-1, 1) if axis == 0 else (1, -1))
        out = (np.take(out, lo, axis=axis) * (1.0 - frac) +
               np.take(out, hi, axis=axis) * frac)
    return out


def plan_splits() -> Dict[str, List[Tuple[int, ...]]]:
    """Deal every split's source digits out to images (no pixels).

    Returns:
        dict: ``{'trainval': [...], 'test': [...]}``, for each image the
        tuple of its source digits (indices in ``load_digits()``), in
        image order. Every source of the digits split appears exactly once.
    """
    _, labels = load_digits_source()
    plans = {}
    for (name, _), sources in zip(SPLITS, stratified_split(labels)):
        rng = np.random.RandomState([VOC_SEED, _SPLIT_CODES[name]])
        order = [int(s) for s in rng.permutation(sources)]
        images, start = [], 0
        while start < len(order):
            count = rng.randint(DIGITS_PER_IMAGE[0], DIGITS_PER_IMAGE[1] + 1)
            images.append(tuple(order[start:start + count]))
            start += count
        plans[name] = images
    return plans


def _place(sides: Sequence[int], rng: np.random.RandomState
           ) -> List[Tuple[int, int, int]]:
    """Non-overlapping square frames on the canvas, largest first.

    A frame that finds no free place in :data:`PLACE_TRIES` draws shrinks
    by :data:`SHRINK` and tries again (down to half the smallest side; four
    frames always fit long before that).

    Returns:
        list[tuple[int, int, int]]: ``(top, left, side)`` of each frame, in
        the order of ``sides``.
    """
    placed: Dict[int, Tuple[int, int, int]] = {}
    for k in sorted(range(len(sides)), key=lambda j: (-sides[j], j)):
        side = int(sides[k])
        while k not in placed:
            for _ in range(PLACE_TRIES):
                top, left = rng.randint(0, CANVAS_SIZE - side + 1, size=2)
                if all(top >= t + s or t >= top + side or left >= x + s
                       or x >= left + side for t, x, s in placed.values()):
                    placed[k] = (int(top), int(left), side)
                    break
            else:
                if side <= DIGIT_SIDES[0] // 2:
                    raise RuntimeError(
                        f'No room on the canvas for a frame of {side} px '
                        f'beside {list(placed.values())}')
                side = max(int(side * SHRINK), DIGIT_SIDES[0] // 2)
    return [placed[k] for k in range(len(sides))]


def _ink_box(clean: np.ndarray) -> Tuple[int, int, int, int]:
    """Tight ``(x0, y0, x1, y1)`` (half-open) box of the ink in a frame."""
    rows = np.flatnonzero((clean >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((clean >= INK_THRESHOLD).any(axis=0))
    if not len(rows):
        raise RuntimeError('A pasted digit has no ink above the threshold; '
                           'the degradation levels changed?')
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1,
            int(rows[-1]) + 1)


def _build_image(name: str, index: int, sources: Sequence[int],
                 base: np.ndarray, labels: np.ndarray,
                 split_sources: Sequence[int]) -> _Record:
    """Compose image ``index`` of split ``name`` (see the module doc).

    The clutter candidates of a digit are the other sources of its split,
    in ``split_sources`` order (as the graded digits draw them).
    """
    split = _SPLIT_CODES[name]
    level = index % NUM_LEVELS
    rng = np.random.RandomState([VOC_SEED, split, index])
    sides = rng.randint(DIGIT_SIDES[0], DIGIT_SIDES[1] + 1, size=len(sources))
    frames = _place([int(s) for s in sides], rng)
    canvas = np.zeros((CANVAS_SIZE, CANVAS_SIZE), dtype=np.float64)
    # the canvas gets the level's noise; the frames only pose, clutter, blur
    framed = dict(LEVELS[level], noise=0.0)
    posed = dict(LEVELS[level], clutter=0, blur=0.0, noise=0.0)
    candidates = [base[j] for j in split_sources]
    position = {int(j): i for i, j in enumerate(split_sources)}
    objects = []
    for k, (source, (top, left, side)) in enumerate(zip(sources, frames)):
        at = position[source]
        others = candidates[:at] + candidates[at + 1:]
        seed = [VOC_SEED, split, index, k + 1]
        # the same seed draws the same pose first (degrade's fixed order)
        patch = degrade(base[source], framed, np.random.RandomState(seed),
                        others)
        clean = degrade(base[source], posed, np.random.RandomState(seed))
        x0, y0, x1, y1 = _ink_box(_resize(clean, side))
        region = canvas[top:top + side, left:left + side]
        canvas[top:top + side, left:left + side] = np.maximum(
            region, _resize(patch, side))
        objects.append(
            dict(label=int(labels[source]), source=int(source),
                 box=(left + x0, top + y0, left + x1, top + y1)))
    canvas = canvas + LEVELS[level]['noise'] * rng.standard_normal(
        canvas.shape)
    pixels = np.floor(np.clip(canvas, 0.0, 1.0) * 255.0 + 0.5)
    return dict(id=f'{name}_{index:04d}', level=level,
                canvas=pixels.astype(np.uint8), objects=objects)


def build_digits_voc(max_images: Optional[int] = None
                     ) -> Dict[str, List[_Record]]:
    """Build the images and their annotations in memory.

    Args:
        max_images (int, optional): Keep only the first ``max_images``
            images of each split (identical to the full set's). Defaults to
            None (all: 472 trainval, 124 test).

    Returns:
        dict: ``{'trainval': [...], 'test': [...]}``, each a list of
        records with ``'id'``, ``'level'``, ``'canvas'`` (uint8
        ``(128, 128)`` grey) and ``'objects'`` (``'label'``, ``'source'``,
        ``'box'`` as 0-based half-open ``(x0, y0, x1, y1)``).
    """
    if max_images is not None:
        check_int('max_images', max_images, 1)
    raw, labels = load_digits_source()
    # 8 -> 32 bilinear weights are multiples of 1/8: exact in float64
    base = resize_bilinear(raw, IMAGE_SIZE) / 16.0
    plans = plan_splits()
    built = {}
    for (name, _), split_sources in zip(SPLITS, stratified_split(labels)):
        built[name] = [
            _build_image(name, i, sources, base, labels, split_sources)
            for i, sources in enumerate(plans[name][:max_images])
        ]
    return built


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
def annotation_xml(record: _Record) -> bytes:
    """The VOC XML of one image (fixed formatting: tabs, ``\\n``).

    Boxes are written 1-based and inclusive (``xmin = x0 + 1``,
    ``xmax = x1`` for the half-open ``[x0, x1)``); ``<level>`` and each
    object's ``<digit_index>`` are this data set's additions.
    """
    lines = [
        '<annotation>', '\t<folder>VOC2007</folder>',
        f"\t<filename>{record['id']}.jpg</filename>", '\t<source>',
        '\t\t<database>UCI digits (sklearn.datasets.load_digits)'
        '</database>', '\t</source>', '\t<size>',
        f'\t\t<width>{CANVAS_SIZE}</width>',
        f'\t\t<height>{CANVAS_SIZE}</height>', '\t\t<depth>3</depth>',
        '\t</size>', '\t<segmented>0</segmented>',
        f"\t<level>{record['level']}</level>"
    ]
    for obj in record['objects']:
        x0, y0, x1, y1 = obj['box']
        lines += [
            '\t<object>', f"\t\t<name>{DIGITS_CLASSES[obj['label']]}</name>",
            '\t\t<pose>Unspecified</pose>',
            '\t\t<difficult>0</difficult>',
            f"\t\t<digit_index>{obj['source']}</digit_index>",
            '\t\t<bndbox>', f'\t\t\t<xmin>{x0 + 1}</xmin>',
            f'\t\t\t<ymin>{y0 + 1}</ymin>', f'\t\t\t<xmax>{x1}</xmax>',
            f'\t\t\t<ymax>{y1}</ymax>', '\t\t</bndbox>', '\t</object>'
        ]
    lines.append('</annotation>')
    return ('\n'.join(lines) + '\n').encode('ascii')


def image_set(records: Sequence[_Record]) -> bytes:
    """The ``ImageSets/Main/<split>.txt`` of a split: one id per line."""
    return ''.join(f"{r['id']}\n" for r in records).encode('ascii')


def content_md5(built: Dict[str, List[_Record]]) -> str:
    """md5 of a built set: per split its image set, then per image its XML
    and its canvas pixels (before JPEG encoding)."""
    md5 = hashlib.md5()
    for name, _ in SPLITS:
        md5.update(image_set(built[name]))
        for record in built[name]:
            md5.update(annotation_xml(record))
            md5.update(record['canvas'].tobytes())
    return md5.hexdigest()
