# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Tests of the graded-difficulty digits (writer, splits, levels, loaders)."""
import hashlib
import os.path as osp

import numpy as np
import pytest

from dsnet_mm.datasets import (GradedDigitsCIFAR10, GradedDigitsFolder,
                               load_digits_split, load_graded_split)
from dsnet_mm.datasets import degrade as degrade_mod
from dsnet_mm.datasets import graded_digits as graded_mod
from dsnet_mm.datasets.digits import build_cifar_files

LEVEL_PIPELINE = [dict(type='PackInputs', meta_keys=('sample_idx', 'level'))]


@pytest.fixture(scope='module')
def splits():
    return load_graded_split()


def test_build_is_deterministic_and_pinned(splits):
    files = build_cifar_files(splits, graded_mod.GRADED_LAYOUT.extras)
    digests = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    assert digests == graded_mod.GRADED_CIFAR_MD5
    again = build_cifar_files(load_graded_split(),
                              graded_mod.GRADED_LAYOUT.extras)
    assert again == files


def test_splits_share_no_source_digit(splits):
    train, test = splits['train'], splits['test']
    assert len(train['labels']) == 1437 * 8 and len(test['labels']) == 360 * 4
    assert not set(train['sources']) & set(test['sources'])
    # the plain digits' split of the sources, each source at every level
    plain = load_digits_split()
    for name in ('train', 'test'):
        part = splits[name]
        assert set(part['sources']) == set(plain[name]['indices'])
        draws = graded_mod.VARIANTS[name] // graded_mod.NUM_LEVELS
        for level in range(graded_mod.NUM_LEVELS):
            at_level = part['sources'][part['levels'] == level]
            assert sorted(at_level) == sorted(
                np.repeat(plain[name]['indices'], draws))


def test_level_zero_is_the_plain_digit(splits):
    plain = load_digits_split()
    for name in ('train', 'test'):
        part = splits[name]
        draws = graded_mod.VARIANTS[name] // graded_mod.NUM_LEVELS
        expected = np.repeat(plain[name]['images'], draws, axis=0)
        np.testing.assert_array_equal(part['images'][part['levels'] == 0],
                                      expected)
        assert not (part['images'][part['levels'] == 1] == expected).all()


def test_degradation_grows_with_the_level(splits):
    part = splits['test']
    clean = part['images'][part['levels'] == 0].astype(np.float64)
    change = [np.abs(part['images'][part['levels'] == lv] - clean).mean()
              for lv in range(graded_mod.NUM_LEVELS)]
    assert change[0] == 0
    assert change == sorted(change) and len(set(change)) == len(change)


def test_clutter_comes_from_the_same_split(monkeypatch):
    """The clutter candidates of an image are its split's other sources."""
    seen = []
    real = graded_mod.degrade

    def spy(image, level, rng, others=None):
        # base image i is the constant i / 10: its value names its source
        seen.append((int(round(image[0, 0] * 10)),
                     sorted(int(round(o[0, 0] * 10)) for o in others)))
        return real(image, level, rng, others)

    base = np.stack([np.full((32, 32), i / 10) for i in range(10)])
    monkeypatch.setattr(graded_mod, 'degrade', spy)
    sources = np.array([1, 4, 7])
    out = graded_mod._degrade_split(base, sources, 'test')
    assert len(out) == 3 * graded_mod.VARIANTS['test']
    assert seen == [(s, sorted(set(sources) - {s})) for s in sources
                    for _ in range(graded_mod.VARIANTS['test'])]


def test_affine_identity_and_blur_zero_are_exact():
    rng = np.random.RandomState(0)
    image = rng.uniform(size=(32, 32))
    np.testing.assert_array_equal(degrade_mod.affine(image, 0, 1, (0, 0)),
                                  image)
    np.testing.assert_array_equal(degrade_mod.gaussian_blur(image, 0), image)
    blurred = degrade_mod.gaussian_blur(image, 1.0)
    assert blurred.std() < image.std()
    np.testing.assert_allclose(blurred.mean(), image.mean(), atol=0.02)
    with pytest.raises(ValueError, match='sigma'):
        degrade_mod.gaussian_blur(image, -1)
    with pytest.raises(ValueError, match='scale'):
        degrade_mod.affine(image, 0, 0, (0, 0))


def test_affine_shift_moves_pixels():
    image = np.zeros((8, 8))
    image[2, 3] = 1.0
    moved = degrade_mod.affine(image, 0, 1, (1, 2))
    assert moved[3, 5] == 1.0 and moved.sum() == 1.0


def test_levels_reach_the_data_samples_through_the_loaders(graded_root):
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    init_default_scope('mmpretrain')
    cfg = dict(batch_size=64, num_workers=0,
               sampler=dict(type='DefaultSampler', shuffle=False),
               dataset=dict(type='GradedDigitsCIFAR10',
                            data_root=osp.join(graded_root, 'graded_digits',
                                               'cifar'),
                            split='test', pipeline=LEVEL_PIPELINE))
    loader = Runner.build_dataloader(cfg, seed=0)
    levels = [s.level for batch in loader for s in batch['data_samples']]
    expected = load_graded_split()['test']['levels']
    assert levels == [int(x) for x in expected]
    assert loader.dataset.get_data_info(5)['source'] == \
        int(load_graded_split()['test']['sources'][5])


def test_folder_layout_carries_the_same_levels_and_pixels(graded_root):
    from mmpretrain.datasets.transforms import LoadImageFromFile

    cifar = GradedDigitsCIFAR10(
        data_root=osp.join(graded_root, 'graded_digits', 'cifar'),
        split='test')
    folder = GradedDigitsFolder(
        data_root=osp.join(graded_root, 'graded_digits', 'imagenet'),
        ann_file='meta/val.txt', data_prefix='val')
    scanned = GradedDigitsFolder(
        data_root=osp.join(graded_root, 'graded_digits', 'imagenet'),
        data_prefix='val')
    assert len(folder) == len(cifar) == len(scanned) == 1440
    assert [folder.get_data_info(i)['level'] for i in range(len(folder))] \
        == [cifar.get_data_info(i)['level'] for i in range(len(cifar))]
    assert sorted(scanned.get_data_info(i)['level'] for i in range(1440)) \
        == sorted(cifar.get_data_info(i)['level'] for i in range(1440))
    load = LoadImageFromFile()
    for i in (0, 3, 722, 1439):
        bgr = load(dict(img_path=folder.get_data_info(i)['img_path']))
        np.testing.assert_array_equal(bgr['img'][..., ::-1],
                                      cifar.get_data_info(i)['img'])


def test_file_name_without_level_is_named():
    assert graded_mod.level_from_path('val/3/0012_2_l2.png') == 2
    with pytest.raises(ValueError, match='val/3/0012.png'):
        graded_mod.level_from_path('val/3/0012.png')
    with pytest.raises(ValueError, match='0..3'):
        graded_mod.level_from_path('val/3/0012_7_l7.png')


def test_occlusion_erases_only_its_rectangle():
    image = np.ones((8, 8))
    out = degrade_mod.occlude(image, 2, 3, 4, 2)
    assert out[2:6, 3:5].sum() == 0 and out.sum() == 64 - 8
    level = dict(graded_mod.LEVELS[0], occlude=(0.5, 0.5))
    erased = degrade_mod.degrade(image, level, np.random.RandomState(0))
    assert (erased == 0).sum() == 16  # a 4x4 rectangle, 0.5 of each side
