# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Tests of the digits detection set in the PASCAL VOC layout (writer,
splits, levels, loading through mmdet's ``VOCDataset``, bad input)."""
import os
import os.path as osp
import re
import shutil

import numpy as np
import pytest

from dsnet_mm.datasets import digits_voc as voc_mod
from dsnet_mm.datasets.digits import load_digits_source, stratified_split

SMALL = 8
"""Images per split of the set the tests write (the full set's first 8)."""
SMALL_MD5 = 'fed6a54c5d13c828fc06d42437493d49'
"""content_md5 of build_digits_voc(SMALL)."""
SPLIT_NAMES = [name for name, _ in voc_mod.SPLITS]


def voc_cfg(root: str, split: str, **kwargs) -> dict:
    """A VOC dataset config over the set written under ``root``."""
    cfg = dict(data_root=osp.join(root, 'digits_voc', 'VOCdevkit') + '/',
               ann_file=f'VOC2007/ImageSets/Main/{split}.txt',
               data_prefix=dict(sub_data_root='VOC2007/'), test_mode=True,
               pipeline=[])
    cfg.update(kwargs)
    return cfg


def build_dataset(cfg: dict):
    """Build a dataset config through mmdet's registry, in its scope
    (whatever scope another test module left current)."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(cfg)


def vocdevkit(root: str) -> str:
    return osp.join(root, 'digits_voc', voc_mod.VOC_SUBDIR)


@pytest.fixture(scope='module')
def built():
    return voc_mod.build_digits_voc(SMALL)


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp('digits_voc'))
    voc_mod.write_digits_voc(root, max_images=SMALL)
    return root


@pytest.fixture
def copy_root(voc_root, tmp_path) -> str:
    """A private copy of the written set, free to damage."""
    shutil.copytree(osp.join(voc_root, 'digits_voc'),
                    osp.join(tmp_path, 'digits_voc'))
    return str(tmp_path)


def edit_xml(root: str, img_id: str, pattern: str, new: str) -> str:
    """Replace the first match of ``pattern`` in an annotation."""
    path = osp.join(vocdevkit(root), 'Annotations', f'{img_id}.xml')
    with open(path) as f:
        text = f.read()
    edited = re.sub(pattern, new, text, count=1)
    assert edited != text
    with open(path, 'w') as f:
        f.write(edited)
    return path


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------
def test_build_is_deterministic_and_pinned(built):
    assert voc_mod.content_md5(built) == SMALL_MD5
    assert voc_mod.content_md5(voc_mod.build_digits_voc(SMALL)) == SMALL_MD5


def test_a_smaller_set_is_the_prefix_of_a_larger_one(built):
    small = voc_mod.build_digits_voc(3)
    for name in SPLIT_NAMES:
        assert len(small[name]) == 3 and len(built[name]) == SMALL
        for a, b in zip(small[name], built[name]):
            assert a['id'] == b['id'] and a['objects'] == b['objects']
            np.testing.assert_array_equal(a['canvas'], b['canvas'])


def test_every_source_digit_is_used_once_and_splits_share_none():
    plans = voc_mod.plan_splits()
    _, labels = load_digits_source()
    train, test = stratified_split(labels)
    for name, sources in zip(SPLIT_NAMES, (train, test)):
        used = [s for image in plans[name] for s in image]
        assert sorted(used) == sorted(sources)
        low, high = voc_mod.DIGITS_PER_IMAGE
        assert all(low <= len(image) <= high for image in plans[name][:-1])
    assert len(plans['trainval']) == 472 and len(plans['test']) == 124
    assert not {s for i in plans['trainval'] for s in i} & \
        {s for i in plans['test'] for s in i}


def test_levels_cycle_and_digits_do_not_overlap(built):
    for name in SPLIT_NAMES:
        for i, record in enumerate(built[name]):
            assert record['id'] == f'{name}_{i:04d}'
            assert record['level'] == i % voc_mod.NUM_LEVELS
            boxes = [o['box'] for o in record['objects']]
            for j, a in enumerate(boxes):
                assert 0 <= a[0] < a[2] <= voc_mod.CANVAS_SIZE
                assert 0 <= a[1] < a[3] <= voc_mod.CANVAS_SIZE
                for b in boxes[j + 1:]:
                    assert (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1]
                            or b[3] <= a[1])
    sides = [max(o['box'][2] - o['box'][0], o['box'][3] - o['box'][1])
             for name in SPLIT_NAMES for r in built[name]
             for o in r['objects']]
    assert min(sides) < 30 and max(sides) > 45  # varied scale


def test_a_clean_digits_box_is_its_tight_ink_box(built):
    """At level 0 (no clutter, blur or noise) the ink above the threshold
    lies in the boxes and touches every side of its box."""
    # ink v >= 0.25 is stored as round(255 v) >= 64; a stored 65 is above
    threshold = np.floor(voc_mod.INK_THRESHOLD * 255 + 0.5)
    clean = [r for n in SPLIT_NAMES for r in built[n] if r['level'] == 0]
    assert clean
    for record in clean:
        inside = np.zeros(record['canvas'].shape, dtype=bool)
        for obj in record['objects']:
            x0, y0, x1, y1 = obj['box']
            inside[y0:y1, x0:x1] = True
            box = record['canvas'][y0:y1, x0:x1] >= threshold
            assert box[0].any() and box[-1].any()
            assert box[:, 0].any() and box[:, -1].any()
        assert not (record['canvas'][~inside] > threshold).any()


def test_difficulty_grows_with_the_level(built):
    """Clutter and noise outside the digits' boxes grow with the level."""
    outside = {level: [] for level in range(voc_mod.NUM_LEVELS)}
    for record in (r for n in SPLIT_NAMES for r in built[n]):
        mask = np.ones(record['canvas'].shape, dtype=bool)
        for x0, y0, x1, y1 in (o['box'] for o in record['objects']):
            mask[y0:y1, x0:x1] = False
        outside[record['level']].append(record['canvas'][mask].mean())
    means = [np.mean(outside[level]) for level in sorted(outside)]
    assert means == sorted(means) and len(set(means)) == len(means)


def test_writer_is_idempotent_and_replaces_a_damaged_copy(tmp_path):
    root = str(tmp_path)
    final = voc_mod.write_digits_voc(root, max_images=2)
    jpg = osp.join(final, voc_mod.VOC_SUBDIR, 'JPEGImages',
                   'trainval_0001.jpg')
    with open(jpg, 'rb') as f:
        good = f.read()
    stamp = os.stat(osp.join(final, '.complete')).st_mtime_ns
    assert voc_mod.write_digits_voc(root, max_images=2) == final
    assert os.stat(osp.join(final, '.complete')).st_mtime_ns == stamp

    with open(jpg, 'wb') as f:
        f.write(good[:100])  # truncated
    assert not voc_mod.is_complete(final, max_images=2)
    voc_mod.write_digits_voc(root, max_images=2)
    with open(jpg, 'rb') as f:
        assert f.read() == good  # the JPEG bytes are repeatable too
    assert voc_mod.is_complete(final, max_images=2)
    assert not voc_mod.is_complete(final)  # another size: not the full set
    voc_mod.write_digits_voc(root, max_images=1)
    assert sorted(os.listdir(osp.join(final, voc_mod.VOC_SUBDIR,
                                      'JPEGImages'))) == [
        'test_0000.jpg', 'trainval_0000.jpg']
    assert [p for p in os.listdir(root) if p.startswith('.')] == []


def test_marker_records_the_size_and_digests(voc_root, built):
    import json
    with open(osp.join(voc_root, 'digits_voc', '.complete')) as f:
        marker = json.load(f)
    assert marker['max_images'] == SMALL
    assert marker['splits'] == {'trainval': SMALL, 'test': SMALL}
    assert marker['content_md5'] == SMALL_MD5
    assert marker['files_md5'] == voc_mod.files_md5(vocdevkit(voc_root))


def test_writer_rejects_a_bad_size(tmp_path):
    with pytest.raises(ValueError, match='max_images'):
        voc_mod.write_digits_voc(str(tmp_path), max_images=0)
    with pytest.raises(TypeError, match='max_images'):
        voc_mod.build_digits_voc(max_images=2.0)


# ---------------------------------------------------------------------------
# Loading through mmdet
# ---------------------------------------------------------------------------
@pytest.mark.parametrize('split', SPLIT_NAMES)
def test_mmdets_voc_dataset_reads_the_pasted_boxes(voc_root, built, split):
    """1-based inclusive XML boxes come back as mmdet's legacy boxes: the
    pasted half-open [x0, x1) reads as [x0, x1 - 1]."""
    from mmdet.datasets import VOCDataset

    plain = VOCDataset(**voc_cfg(
        voc_root, split, metainfo=dict(classes=voc_mod.DIGITS_CLASSES)))
    ours = build_dataset(voc_cfg(voc_root, split, type='DigitsVOCDataset'))
    assert len(plain) == len(ours) == SMALL
    for i, record in enumerate(built[split]):
        expected = [
            dict(ignore_flag=0, bbox_label=o['label'],
                 bbox=[o['box'][0], o['box'][1], o['box'][2] - 1,
                       o['box'][3] - 1]) for o in record['objects']
        ]
        for info in (plain.get_data_info(i), ours.get_data_info(i)):
            assert info['img_id'] == record['id']
            assert (info['width'], info['height']) == (128, 128)
            assert [dict(ignore_flag=x['ignore_flag'],
                         bbox_label=x['bbox_label'], bbox=x['bbox'])
                    for x in info['instances']] == expected
        assert ours.get_data_info(i)['level'] == record['level']
    assert ours.metainfo['classes'] == voc_mod.DIGITS_CLASSES
    assert len(ours.metainfo['palette']) == 10
    # not VOC: VOCMetric then names the digits, not VOC's 20 classes
    assert ours.metainfo['dataset_type'] is None
    assert plain.metainfo['dataset_type'] == 'VOC2007'


def test_the_xml_names_each_digits_source(voc_root, built):
    import xml.etree.ElementTree as ET
    _, labels = load_digits_source()
    for name in SPLIT_NAMES:
        for record in built[name]:
            root = ET.parse(osp.join(vocdevkit(voc_root), 'Annotations',
                                     f"{record['id']}.xml")).getroot()
            sources = [int(o.findtext('digit_index'))
                       for o in root.findall('object')]
            assert sources == [o['source'] for o in record['objects']]
            assert [o.findtext('name') for o in root.findall('object')] == [
                str(labels[s]) for s in sources]


def test_the_pipeline_packs_image_boxes_and_level(voc_root, built):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'level'))
    ]
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):  # transforms' scope
        dataset = build_dataset(voc_cfg(
            voc_root, 'test', type='DigitsVOCDataset', pipeline=pipeline))
    for i in (0, 3):
        sample = dataset[i]
        record = built['test'][i]
        gt = sample['data_samples'].gt_instances
        boxes = [[b[0], b[1], b[2] - 1, b[3] - 1]
                 for b in (o['box'] for o in record['objects'])]
        assert gt.bboxes.tensor.tolist() == boxes
        assert gt.labels.tolist() == [o['label'] for o in record['objects']]
        assert sample['data_samples'].level == record['level']
        image = sample['inputs'].numpy().astype(np.int64)
        assert image.shape == (3, 128, 128)
        # JPEG is lossy: the decoded canvas is close, not equal
        assert np.abs(image[0] - record['canvas']).mean() < 3


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------
def test_an_unknown_class_is_refused_where_mmdet_drops_it(copy_root, built):
    from mmdet.datasets import VOCDataset

    path = edit_xml(copy_root, 'test_0001', '<name>', '<name>seven')
    plain = VOCDataset(**voc_cfg(
        copy_root, 'test', metainfo=dict(classes=voc_mod.DIGITS_CLASSES)))
    kept = len(plain.get_data_info(1)['instances'])
    assert kept == len(built['test'][1]['objects']) - 1  # silently dropped
    with pytest.raises(ValueError) as info:
        build_dataset(voc_cfg(copy_root, 'test', type='DigitsVOCDataset'))
    message = str(info.value)
    assert path in message and "'seven" in message
    assert "('0', '1'" in message and 'drop_unknown_classes' in message
    dropped = build_dataset(
        voc_cfg(copy_root, 'test', type='DigitsVOCDataset',
                drop_unknown_classes=True))
    assert len(dropped.get_data_info(1)['instances']) == kept


@pytest.mark.parametrize('pattern,new,match', [
    (r'<xmax>\d+', '<xmax>129', r'xmax=129, .* outside the 128x128 image'),
    (r'<ymin>\d+', '<ymin>0', r'ymin=0, .* outside the 128x128 image'),
    (r'<ymax>\d+', '<ymax>1', r'ymax=1 outside the 128x128 image'),
    (r'<xmin>\d+', '<xmin>x', r"needs a number in bndbox/xmin, got 'x'"),
    (r'<name>\d</name>', '', r'object 0 has no <name>'),
    (r'<level>\d', '<level>7', r'level must be an int in 0..3, got 7'),
    (r'</annotation>', '', r'not a valid XML file'),
])
def test_a_bad_annotation_names_its_file(copy_root, pattern, new, match):
    path = edit_xml(copy_root, 'trainval_0002', pattern, new)
    with pytest.raises(ValueError, match=match) as info:
        build_dataset(voc_cfg(copy_root, 'trainval',
                              type='DigitsVOCDataset'))
    assert path in str(info.value)


def test_a_missing_image_is_named(copy_root):
    jpg = osp.join(vocdevkit(copy_root), 'JPEGImages', 'test_0004.jpg')
    os.remove(jpg)
    with pytest.raises(FileNotFoundError, match='test_0004.jpg') as info:
        build_dataset(voc_cfg(copy_root, 'test', type='DigitsVOCDataset'))
    assert jpg in str(info.value)


def test_a_missing_year_folder_points_at_sub_data_root(voc_root):
    cfg = voc_cfg(voc_root, 'test', type='DigitsVOCDataset',
                  data_prefix=dict(img_path='VOC2007/'))
    with pytest.raises(FileNotFoundError,
                       match=r"Annotations/test_0000.xml.*sub_data_root"):
        build_dataset(cfg)


def test_an_empty_image_set_is_named(copy_root):
    ann = osp.join(vocdevkit(copy_root), 'ImageSets', 'Main', 'test.txt')
    open(ann, 'w').close()
    with pytest.raises(ValueError, match='test.txt: the image set is empty'):
        build_dataset(voc_cfg(copy_root, 'test', type='DigitsVOCDataset'))


def test_drop_unknown_classes_must_be_a_bool(voc_root):
    with pytest.raises(TypeError, match='drop_unknown_classes'):
        build_dataset(voc_cfg(voc_root, 'test', type='DigitsVOCDataset',
                              drop_unknown_classes='no'))
