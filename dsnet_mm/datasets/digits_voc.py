# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Digits detection: the UCI digits pasted onto canvases, in the VOC layout.

A detection data set made of real handwritten digits (scikit-learn's UCI
digits, no download), written in the PASCAL VOC layout that mmdet's own
``VOCDataset`` reads, so detectors train and evaluate through mmdet's real
loading and ``VOCMetric`` code::

    root/digits_voc/
    ├── .complete                     # marker, JSON with sizes and digests
    └── VOCdevkit/VOC2007/
        ├── JPEGImages/<id>.jpg        # 128x128, grey replicated to RGB
        ├── Annotations/<id>.xml       # VOC XML, 1-based inclusive boxes
        └── ImageSets/Main/trainval.txt, test.txt   # one id per line

Each image holds 2-4 digits (:data:`DIGITS_PER_IMAGE`) of varied scale:
every digit is drawn in a 32-px frame, degraded there, resized to a side of
24-56 px (:data:`DIGIT_SIDES`) and pasted by ``max`` (white ink on black).
The frames of an image never overlap, so neither do the digits' boxes. The
box of a digit is the tight box of its ink (pixels >= :data:`INK_THRESHOLD`
of the frame after the pose change, before clutter, blur and noise).

Difficulty: image ``i`` of a split is at level ``i % 4`` of the graded
digits (:data:`dsnet_mm.datasets.graded_digits.LEVELS`): its digits get that
level's pose change (rotation, scale, shift), clutter strokes of other
digits around them and blur, in their frame
(:func:`dsnet_mm.datasets.degrade.degrade`); the level's noise is added to
the whole canvas. Level 0 is clean digits on a black background; level 3
is rotated digits among foreign strokes in noise. Each XML names its
image's level (``<level>``, not a VOC field; mmdet ignores it), and
:class:`DigitsVOCDataset` puts it into every data info (``level``), so
``PackDetInputs(meta_keys=(..., 'level'))`` carries it to the data
samples.

Splits: the sources are the plain digits' stratified split (1,437 train,
360 test, :func:`dsnet_mm.datasets.digits.stratified_split`). Each split's
sources are shuffled and dealt out to images, so every source digit
appears exactly once, in one split: ``trainval`` has 472 images (1,437
digits) and ``test`` 124 images (360 digits); train and test share **no
source digit**, clutter included (clutter comes from the image's own
split). Each object names its source (``<digit_index>``, the index in
``load_digits()``).

Coordinates: a digit pasted on the 0-based, half-open pixel box
``[x0, x1) x [y0, y1)`` is written ``xmin=x0+1, ymin=y0+1, xmax=x1,
ymax=y1`` (VOC: 1-based, inclusive). mmdet subtracts 1 when it reads them,
so its box is ``[x0, y0, x1 - 1, y1 - 1]``, the legacy VOC convention that
``VOCMetric`` evaluates with (width ``x2 - x1 + 1``).

Determinism: image ``i`` of a split draws its layout and noise from
``np.random.RandomState([VOC_SEED, split, i])`` and its ``k``-th digit's
degradation from ``RandomState([VOC_SEED, split, i, k + 1])``; the pixels
come from elementwise NumPy arithmetic only (no BLAS). With ``max_images``
each split holds the first images of the full set, byte for byte. The
content (canvas pixels before JPEG encoding, the XML and ImageSets files)
of the full set is pinned by md5 (:data:`DIGITS_VOC_MD5`); the JPEG bytes
depend on the encoder's version and are not pinned (the marker records
them, to notice a damaged copy).
"""
import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from mmdet.datasets import VOCDataset
from mmdet.registry import DATASETS
from mmengine import fileio

from dsnet_mm.ops.utils import check_bool, check_int
from .degrade import degrade
from .digits import (DIGITS_CLASSES, IMAGE_SIZE, MARKER, REGENERATE_COMMAND,
                     SOURCE_MD5, load_digits_source, resize_bilinear,
                     stratified_split)
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


def files_md5(folder: str) -> Optional[str]:
    """md5 of every file under ``folder`` (relative paths and bytes, in
    sorted order); None if there is no such folder."""
    if not osp.isdir(folder):
        return None
    md5 = hashlib.md5()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for file_name in sorted(filenames):
            path = osp.join(dirpath, file_name)
            md5.update(osp.relpath(path, folder).encode() + b'\0')
            with open(path, 'rb') as f:
                md5.update(hashlib.md5(f.read()).digest())
    return md5.hexdigest()


def _write_voc(folder: str, built: Dict[str, List[_Record]]) -> None:
    """Write the VOC2007 folder of a built set into ``folder``."""
    import cv2

    for sub in ('JPEGImages', 'Annotations', osp.join('ImageSets', 'Main')):
        os.makedirs(osp.join(folder, sub))
    for name, _ in SPLITS:
        for record in built[name]:
            bgr = np.repeat(record['canvas'][..., None], 3, axis=-1)
            ok, jpg = cv2.imencode('.jpg', bgr,
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"OpenCV failed to encode {record['id']}")
            with open(osp.join(folder, 'JPEGImages', f"{record['id']}.jpg"),
                      'wb') as f:
                f.write(jpg.tobytes())
            with open(osp.join(folder, 'Annotations', f"{record['id']}.xml"),
                      'wb') as f:
                f.write(annotation_xml(record))
        with open(osp.join(folder, 'ImageSets', 'Main', f'{name}.txt'),
                  'wb') as f:
            f.write(image_set(built[name]))


def is_complete(folder: str, max_images: Optional[int] = None) -> bool:
    """Whether ``folder`` (``root/digits_voc``) holds a complete, intact set.

    Args:
        folder (str): The data set's folder, e.g. ``data/digits_voc``.
        max_images (int, optional): The size it must have been written with.
            Defaults to None (the full set, whose content md5 is pinned).

    Returns:
        bool: True if the marker exists, names this size (and, for the full
        set, the pinned content md5), and the files on disk are the ones it
        recorded.
    """
    try:
        with open(osp.join(folder, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    if marker.get('max_images') != max_images or (
            max_images is None
            and marker.get('content_md5') != DIGITS_VOC_MD5):
        return False
    return files_md5(osp.join(folder, VOC_SUBDIR)) == marker.get('files_md5')


def write_digits_voc(root: str, max_images: Optional[int] = None) -> str:
    """Write the digits detection set under ``root/digits_voc``.

    Idempotent: a complete, intact set of the same size is left as it is
    (see :func:`is_complete`). Everything is written into a temporary
    folder next to the destination, the marker last, and renamed to
    ``root/digits_voc`` in one step, so an interrupted run never leaves a
    partial set marked complete; an incomplete or damaged one is replaced.

    Args:
        root (str): The data root, e.g. ``'data'``.
        max_images (int, optional): Write only the first ``max_images``
            images of each split (a small set for tests). Defaults to None
            (the full set, checked against :data:`DIGITS_VOC_MD5`).

    Returns:
        str: The data set's folder, ``root/digits_voc``.
    """
    if max_images is not None:
        check_int('max_images', max_images, 1)
    root = osp.abspath(root)
    final = osp.join(root, DIGITS_VOC_DIR)
    if is_complete(final, max_images):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{DIGITS_VOC_DIR}-tmp-', dir=root)
    try:
        built = build_digits_voc(max_images)
        digest = content_md5(built)
        if max_images is None and digest != DIGITS_VOC_MD5:
            raise RuntimeError(
                f'The digits VOC set built here has the content md5 {digest}'
                f', not the pinned {DIGITS_VOC_MD5} (did NumPy or '
                'scikit-learn change?)')
        _write_voc(osp.join(tmp, VOC_SUBDIR), built)
        marker = {
            'source': 'sklearn.datasets.load_digits',
            'source_md5': SOURCE_MD5,
            'seed': VOC_SEED,
            'canvas_size': CANVAS_SIZE,
            'digit_sides': DIGIT_SIDES,
            'digits_per_image': DIGITS_PER_IMAGE,
            'levels': [dict(d) for d in LEVELS],
            'max_images': max_images,
            'splits': {k: len(v) for k, v in built.items()},
            'objects': {
                k: sum(len(r['objects']) for r in v)
                for k, v in built.items()
            },
            'content_md5': digest,
            'files_md5': files_md5(osp.join(tmp, VOC_SUBDIR)),
        }
        with open(osp.join(tmp, MARKER), 'w') as f:
            f.write(json.dumps(marker, indent=2, sort_keys=True) + '\n')
        _publish(tmp, final, max_images)
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _publish(tmp: str, final: str, max_images: Optional[int]) -> None:
    """Rename the finished ``tmp`` folder to ``final``."""
    if osp.lexists(final):
        if is_complete(final, max_images):  # another process finished first
            return
        stale = tempfile.mkdtemp(
            prefix=f'.{DIGITS_VOC_DIR}-stale-', dir=osp.dirname(final))
        os.rename(final, osp.join(stale, DIGITS_VOC_DIR))
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not is_complete(final, max_images):
            raise


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------
@DATASETS.register_module()
class DigitsVOCDataset(VOCDataset):
    """The digits detection set: mmdet's ``VOCDataset`` with the digit
    classes, checked at load.

    Loading is mmdet's (``XMLDataset``); this class declares the classes
    ``'0'`` .. ``'9'`` and a palette, and stops at load, naming the file,
    where mmdet would go on with wrong data:

    - an object whose class is not one of the classes: mmdet drops it
      silently (an image can lose all its boxes); here a ``ValueError``
      names the XML file, the object, its class and the allowed classes
      (``drop_unknown_classes=True`` drops such objects as mmdet does);
    - a box outside the image (VOC boxes are 1-based and inclusive:
      ``1 <= xmin <= xmax <= width``, the same for y), or an object without
      a name or numeric box: a ``ValueError`` naming the XML file;
    - a missing annotation or image file: a ``FileNotFoundError`` naming it
      (mmdet would fail on a missing image only when a batch loads it).
      A missing annotation is often a missing ``sub_data_root``: mmdet
      reads ``<data_root>/<sub_data_root>/Annotations/<id>.xml``, so the
      year folder belongs in ``data_prefix=dict(sub_data_root='VOC2007/')``;
    - an empty image set: a ``ValueError`` naming the ``ann_file``.

    An XML ``<level>`` (the difficulty level of the digits set) goes into
    the data info as ``level``; ``PackDetInputs(meta_keys=(..., 'level'))``
    carries it to the data samples.

    mmdet's ``VOCDataset`` marks a ``sub_data_root`` that contains
    ``'VOC2007'`` as ``dataset_type='VOC2007'``, and ``VOCMetric`` then
    prints VOC's 20 class names (aeroplane, bicycle, ...) in its per-class
    table; the digits are not VOC, so ``dataset_type`` is None here and the
    table names the digits.

    Example config::

        dataset=dict(type='DigitsVOCDataset',
                     data_root='data/digits_voc/VOCdevkit/',
                     ann_file='VOC2007/ImageSets/Main/trainval.txt',
                     data_prefix=dict(sub_data_root='VOC2007/'),
                     filter_cfg=dict(filter_empty_gt=True),
                     pipeline=...)

    Args:
        drop_unknown_classes (bool): Drop objects of other classes, as
            mmdet's ``VOCDataset`` does, instead of stopping. Defaults to
            False.
        **kwargs: Keyword arguments of mmdet's ``VOCDataset``
            (``data_root``, ``ann_file``, ``data_prefix``, ``filter_cfg``,
            ``pipeline``, ``test_mode``, ``metainfo``, ...).
    """

    METAINFO = {
        'classes': DIGITS_CLASSES,
        'palette': [(31, 119, 180), (255, 127, 14), (44, 160, 44),
                    (214, 39, 40), (148, 103, 189), (140, 86, 75),
                    (227, 119, 194), (127, 127, 127), (188, 189, 34),
                    (23, 190, 207)],
    }

    def __init__(self, drop_unknown_classes: bool = False, **kwargs) -> None:
        check_bool('drop_unknown_classes', drop_unknown_classes)
        self.drop_unknown_classes = drop_unknown_classes
        super().__init__(**kwargs)
        self._metainfo['dataset_type'] = None

    def load_data_list(self) -> List[dict]:
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(
                f'{self.ann_file}: the image set is empty (no image ids); '
                'rewrite the digits detection set with '
                f'`{REGENERATE_COMMAND}`')
        return data_list

    def parse_data_info(self, img_info: dict) -> dict:
        """Check the files and the objects, then parse with mmdet."""
        xml_path = img_info['xml_path']
        img_path = osp.join(self.sub_data_root, img_info['file_name'])
        if not fileio.exists(xml_path, backend_args=self.backend_args):
            raise FileNotFoundError(
                f'{xml_path}: the annotation of image id '
                f"{img_info['img_id']!r} (listed in {self.ann_file}) does "
                'not exist. VOCDataset '
                'reads <data_root>/<sub_data_root>/Annotations/<id>.xml; '
                f'here sub_data_root={self.sub_data_root!r}: is '
                "data_prefix=dict(sub_data_root='VOC2007/') set?")
        if not fileio.exists(img_path, backend_args=self.backend_args):
            raise FileNotFoundError(
                f'{img_path}: the image annotated by {xml_path} does not '
                'exist (VOCDataset reads JPEGImages/<id>.jpg)')
        try:
            root = ET.fromstring(
                fileio.get(xml_path, backend_args=self.backend_args))
        except ET.ParseError as e:
            raise ValueError(f'{xml_path}: not a valid XML file ({e})') \
                from None
        boxes = self._read_objects(root, xml_path)
        data_info = super().parse_data_info(img_info)
        width, height = data_info['width'], data_info['height']
        for index, name, (xmin, ymin, xmax, ymax) in boxes:
            if not (1 <= xmin <= xmax <= width
                    and 1 <= ymin <= ymax <= height):
                raise ValueError(
                    f'{xml_path}: object {index} (class {name!r}) has the box '
                    f'xmin={xmin}, ymin={ymin}, xmax={xmax}, ymax={ymax} '
                    f'outside the {width}x{height} image (VOC boxes are '
                    '1-based and inclusive: 1 <= xmin <= xmax <= width, '
                    '1 <= ymin <= ymax <= height)')
        level = root.findtext('level')
        if level is not None:
            try:
                value = int(level)
            except ValueError:
                value = level
            check_int(f'{xml_path}: level', value, 0, NUM_LEVELS - 1)
            data_info['level'] = value
        return data_info

    def _read_objects(self, root: ET.Element, xml_path: str
                      ) -> List[Tuple[int, str, Tuple[int, ...]]]:
        """``(index, class, box)`` of the objects mmdet will keep, with the
        box as mmdet reads it (``int(float(text))``, still 1-based)."""
        classes = tuple(self.metainfo['classes'])
        objects = []
        for index, obj in enumerate(root.findall('object')):
            name = obj.findtext('name')
            if name is None:
                raise ValueError(f'{xml_path}: object {index} has no <name>')
            if name not in classes:
                if self.drop_unknown_classes:
                    continue
                raise ValueError(
                    f'{xml_path}: object {index} names the class {name!r}, '
                    f'which is not one of the classes {classes}. mmdet\'s '
                    'VOCDataset would drop it silently; fix the annotation '
                    "or metainfo['classes'], or set "
                    'drop_unknown_classes=True to drop such objects.')
            box = []
            for key in ('xmin', 'ymin', 'xmax', 'ymax'):
                text = obj.findtext(f'bndbox/{key}')
                try:
                    box.append(int(float(text)))
                except (TypeError, ValueError, OverflowError):
                    raise ValueError(
                        f'{xml_path}: object {index} (class {name!r}) needs '
                        f'a number in bndbox/{key}, got {text!r}') from None
            objects.append((index, name, tuple(box)))
        return objects
