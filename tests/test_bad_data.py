# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Bad data in the ImageNet-folder layout stops the run with an error that
names the file and the field (or, with ``skip_bad=True``, skips the sample
with a warning naming the file), after the last good checkpoint."""
import glob
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.datasets import DigitsFolder
from dsnet_mm.datasets import transforms as transforms_mod

init_default_scope('mmpretrain')
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def make_folder(tmp_path, digits_root, num: int = 8, label=None) -> str:
    """A folder-layout split of the first ``num`` training digits
    (``meta/train.txt``); ``label`` replaces the last line's label."""
    src = osp.join(digits_root, 'digits', 'imagenet')
    root = str(tmp_path / 'folder')
    with open(osp.join(src, 'meta', 'train.txt')) as f:
        lines = f.read().splitlines()[:num]
    for line in lines:
        rel = line.split()[0]
        os.makedirs(osp.join(root, 'train', osp.dirname(rel)), exist_ok=True)
        shutil.copy(osp.join(src, 'train', rel), osp.join(root, 'train', rel))
    if label is not None:
        lines[-1] = f'{lines[-1].split()[0]} {label}'
    os.makedirs(osp.join(root, 'meta'))
    with open(osp.join(root, 'meta', 'train.txt'), 'w') as f:
        f.write(''.join(f'{line}\n' for line in lines))
    return root


def dataset(root: str, test_mode: bool = True, **load) -> DigitsFolder:
    return DigitsFolder(
        data_root=root, ann_file='meta/train.txt', data_prefix='train',
        test_mode=test_mode,
        pipeline=[dict(type='LoadImageChecked', channels=3, **load)])


def spoil(ds: DigitsFolder, index: int, how: str) -> str:
    """Spoil the file of sample ``index``; returns its path."""
    path = ds.get_data_info(index)['img_path']
    with open(path, 'rb') as f:
        data = f.read()
    if how == 'corrupt':
        data = b'not an image' + data[12:]
    elif how == 'truncated':
        data = data[:len(data) // 2]
    elif how == 'grey':
        import cv2
        ok, png = cv2.imencode('.png', np.zeros((32, 32), np.uint8))
        data = png.tobytes()
    with open(path, 'wb') as f:
        f.write(data)
    return path


@pytest.mark.parametrize('how', ['corrupt', 'truncated'])
def test_undecodable_image_names_the_file(tmp_path, digits_root, how):
    ds = dataset(make_folder(tmp_path, digits_root))
    path = spoil(ds, 3, how)
    assert ds[2]['img'].shape == (32, 32, 3)
    with pytest.raises(ValueError) as err:
        ds[3]
    assert f'img_path={path!r}: the image cannot be read' in str(err.value)
    assert 'skip_bad=True' in str(err.value)


def test_image_with_other_channels_names_the_file_and_channels(
        tmp_path, digits_root):
    ds = dataset(make_folder(tmp_path, digits_root), color_type='unchanged')
    path = spoil(ds, 1, 'grey')
    with pytest.raises(ValueError) as err:
        ds[1]
    assert (f'img_path={path!r}: the image has 1 channel(s), the model takes '
            'channels=3') in str(err.value)


def test_skip_bad_skips_the_sample_with_a_warning_naming_the_file(
        tmp_path, digits_root, monkeypatch):
    ds = dataset(make_folder(tmp_path, digits_root), test_mode=False,
                 skip_bad=True)
    path = spoil(ds, 3, 'corrupt')
    warnings = []
    monkeypatch.setattr(transforms_mod, 'print_log',
                        lambda msg, **kw: warnings.append(msg))
    sample = ds[3]  # training mode: mmengine draws another sample
    assert sample['img_path'] != path
    assert sample['img'].shape == (32, 32, 3)
    assert len(warnings) >= 1
    assert all(w.startswith(f'img_path={path!r}: the image cannot be read')
               and w.endswith('skipped (skip_bad=True)') for w in warnings)


def test_label_outside_the_classes_is_named_at_load(tmp_path, digits_root):
    root = make_folder(tmp_path, digits_root, label=12)
    with pytest.raises(ValueError, match=r"train/\d/\d+\.png: gt_label must "
                       r'be an int in 0\.\.9, got 12'):
        dataset(root)


def test_label_outside_num_classes_is_named_in_the_loss():
    head = MODELS.build(dict(type='DSLinearClsHead', num_classes=3,
                             in_channels=4))
    samples = [DataSample(metainfo=dict(img_path=f'a/{i}.png'))
               .set_gt_label(label) for i, label in enumerate((0, 2, 3))]
    with pytest.raises(ValueError,
                       match=r'a/2\.png: gt_label must be an int in 0\.\.2, '
                       'got 3'):
        head.loss((torch.randn(3, 4), ), samples)
    samples = [DataSample(metainfo=dict(sample_idx=7)).set_gt_label(-1)]
    with pytest.raises(ValueError, match='sample_idx=7: gt_label must'):
        head.loss((torch.randn(1, 4), ), samples)


def test_empty_split_is_named_at_load(tmp_path, digits_root):
    root = make_folder(tmp_path, digits_root)
    open(osp.join(root, 'meta', 'train.txt'), 'w').close()
    with pytest.raises(ValueError, match=r'meta/train\.txt: the split is '
                       r'empty'):
        dataset(root)


def test_bad_image_stops_training_after_the_last_good_checkpoint(
        tmp_path, digits_root):
    root = make_folder(tmp_path, digits_root)
    # batches of 2 in order: iterations 1 and 2 are good, 3 holds sample 4
    path = spoil(dataset(root), 4, 'corrupt')
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'ds_mbnet_digits.py'))
    work = str(tmp_path / 'work')
    cfg.merge_from_dict(dict(
        work_dir=work,
        train_dataloader=dict(
            _delete_=True, batch_size=2, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='DigitsFolder', data_root=root,
                         ann_file='meta/train.txt', data_prefix='train',
                         pipeline=[dict(type='LoadImageChecked', channels=3),
                                   dict(type='PackInputs')])),
        train_cfg=dict(_delete_=True, by_epoch=False, max_iters=4),
        default_hooks=dict(checkpoint=dict(
            _delete_=True, type='CheckpointHook', by_epoch=False,
            interval=1)),
        val_dataloader=None, val_cfg=None, val_evaluator=None,
        test_dataloader=None, test_cfg=None, test_evaluator=None))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=f'img_path={path!r}'):
        runner.train()
    assert sorted(osp.basename(p) for p in glob.glob(
        osp.join(work, 'iter_*.pth'))) == ['iter_1.pth', 'iter_2.pth']
    last = torch.load(osp.join(work, 'iter_2.pth'), weights_only=True)
    assert last['meta']['iter'] == 2
    assert int(last['state_dict']['sandwich_iter']) == 2
