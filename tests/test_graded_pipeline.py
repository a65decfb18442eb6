# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The main job's configs on the graded digits, end to end and tiny: the
levels reach the per-level metrics, the report and its plot."""
import json
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import run_tool
from dsnet_mm.datasets import GradedDigitsCIFAR10
from test_train_tool import SMALL

STAGE1 = 'configs/ds_mbnet_graded_digits.py'
STAGE2 = 'configs/ds_mbnet_graded_digits_gate.py'
# every level in the 64 test images: indices are the first 16 sources
STAGE2_SMALL = [o for o in SMALL
                if 'calibrate' not in o and 'val_interval' not in o]


def data_opts(root, config=STAGE1):
    """Every loader of ``config`` on the graded digits under ``root``: the
    run's three and the budget hook's own (Stage II)."""
    keys = ['train_dataloader', 'val_dataloader', 'test_dataloader']
    hooks = Config.fromfile(config).get('custom_hooks', [])
    keys += [f'custom_hooks.{i}.dataloader' for i, h in enumerate(hooks)
             if h.get('dataloader')]
    return [f'{k}.dataset.data_root={root}/graded_digits/cifar' for k in keys]


def test_graded_main_job_reports_every_level(graded_root, tmp_path):
    stage1 = str(tmp_path / 'stage1')
    proc = run_tool('tools/train.py', STAGE1, '--work-dir', stage1,
                    '--cfg-options', 'train_cfg.max_epochs=1',
                    'train_cfg.val_interval=1', *SMALL,
                    *data_opts(graded_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(osp.join(stage1, 'subnet_results.json')) as f:
        rows = json.load(f)['subnets']
    for row in rows:
        assert {f'accuracy/level_{lv}/top1' for lv in range(4)} <= set(
            row['metrics'])

    calibrated = str(tmp_path / 'calibrated.pth')
    proc = run_tool('tools/calibrate_bn.py', STAGE1,
                    osp.join(stage1, 'epoch_1.pth'), '--out', calibrated,
                    '--num-batches', '1', '--cfg-options',
                    *data_opts(graded_root))
    assert proc.returncode == 0, proc.stderr[-3000:]

    stage2 = str(tmp_path / 'stage2')
    proc = run_tool('tools/train.py', STAGE2, '--work-dir', stage2,
                    '--cfg-options', f'model.stage1_checkpoint={calibrated}',
                    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                    *STAGE2_SMALL, *data_opts(graded_root, STAGE2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the budget hook fits on the whole training split through its own
    # loader (the run's is cut to 128 images)
    train = GradedDigitsCIFAR10(data_root=f'{graded_root}/graded_digits/cifar',
                                split='train', pipeline=[])
    assert f'spent on {len(train)} images' in proc.stdout + proc.stderr
    with open(osp.join(stage2, 'subnet_results.json')) as f:
        dynamic = json.load(f)['dynamic']
    levels = dynamic['levels']
    assert sorted(levels) == ['0', '1', '2', '3']
    assert [levels[lv]['images'] for lv in sorted(levels)] == [16] * 4
    for part in levels.values():
        assert sum(part['routing'].values()) == part['images']
    # the per-level means average to the overall mean (equal level sizes)
    assert sum(p['madds'] for p in levels.values()) / 4 == pytest.approx(
        dynamic['madds'])
    with open(osp.join(stage2, 'report.md')) as f:
        report = f.read()
    assert '### Routing by level' in report
    assert osp.exists(osp.join(stage2, 'routing_by_level.png'))
