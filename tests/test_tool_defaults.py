# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The tools take their input size from the config unless told."""
import json

import pytest
from mmengine.config import Config

from conftest import run_tool
from dsnet_mm.engine.cli import input_size


@pytest.mark.parametrize('config,size', [
    ('configs/ds_mbnet_graded_digits_gate.py', (32, 32)),  # CIFAR layout
    ('configs/ds_mbnet_imagenet.py', (224, 224)),  # CenterCrop(224)
    ('configs/det/ssd_ds-mbnet_digits_voc.py', (128, 128)),  # Resize
    ('configs/det/ssd300_ds-mbnet_voc0712.py', (300, 300)),
])
def test_input_size_is_the_configs_test_image_size(repo_root, config, size):
    cfg = Config.fromfile(f'{repo_root}/{config}')
    assert input_size(cfg) == size
    assert input_size(cfg, [64, 48]) == (64, 48)  # --shape wins


def test_a_crop_after_a_resize_decides_and_sizes_read_as_h_w():
    cfg = Config(dict(test_dataloader=dict(dataset=dict(
        type='ImageNet',
        pipeline=[dict(type='Resize', scale=(40, 30)),
                  dict(type='PackInputs')]))))
    assert input_size(cfg) == (30, 40)  # mmcv's scale is (W, H)
    cfg.test_dataloader.dataset.pipeline.insert(
        1, dict(type='CenterCrop', crop_size=(20, 10)))
    assert input_size(cfg) == (10, 20)
    cfg.test_dataloader.dataset.pipeline = [
        dict(type='Resize', scale=(40, 30), keep_ratio=True)]
    assert input_size(cfg) == (224, 224)  # not a fixed size


def test_get_flops_counts_at_the_configs_size():
    results = []
    for extra in ([], ['--shape', '32', '32']):
        proc = run_tool('tools/analysis/get_flops.py',
                        'configs/ds_mbnet_digits.py', '--json', *extra)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    assert results[0]['shape'] == [3, 32, 32]
    assert results[0] == results[1]
