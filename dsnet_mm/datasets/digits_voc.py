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
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmdet.datasets import VOCDataset
from mmdet.registry import DATASETS
from mmengine import fileio

from dsnet_mm.ops.utils import check_bool, check_int
from .digits import DIGITS_CLASSES, MARKER, REGENERATE_COMMAND, SOURCE_MD5
from .digits_voc_source import (CANVAS_SIZE, DIGIT_SIDES, DIGITS_PER_IMAGE,
                                DIGITS_VOC_DIR, DIGITS_VOC_MD5, INK_THRESHOLD,
                                JPEG_QUALITY, PLACE_TRIES, SHRINK, SPLITS,
                                VOC_SEED, VOC_SUBDIR, _Record, annotation_xml,
                                build_digits_voc, content_md5, image_set,
                                plan_splits)
from .graded_digits import LEVELS, NUM_LEVELS
from .publish import write_atomically

__all__ = [
    'DIGITS_VOC_DIR', 'VOC_SUBDIR', 'VOC_SEED', 'CANVAS_SIZE', 'DIGIT_SIDES',
    'DIGITS_PER_IMAGE', 'INK_THRESHOLD', 'PLACE_TRIES', 'SHRINK',
    'JPEG_QUALITY', 'SPLITS', 'DIGITS_VOC_MD5', 'DIGITS_CLASSES',
    'NUM_LEVELS', 'plan_splits', 'build_digits_voc', 'annotation_xml',
    'image_set', 'content_md5', 'files_md5', 'is_complete',
    'write_digits_voc', 'DigitsVOCDataset'
]


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------
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
    partial set marked complete; an incomplete or damaged one is replaced
    (:func:`~dsnet_mm.datasets.publish.write_atomically`).

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

    def fill(tmp: str) -> None:
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

    return write_atomically(root, DIGITS_VOC_DIR, lambda final: is_complete(
        final, max_images), fill)


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
