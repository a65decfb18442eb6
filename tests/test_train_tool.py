# Copyright (c) dsnet_mm contributors. All rights reserved.
"""tools/train.py and tools/test.py on the digits demo config, end to end."""
import json
import os
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from conftest import run_tool

SMALL = [
    'train_dataloader.dataset.indices=128', 'val_dataloader.dataset.indices=64',
    'test_dataloader.dataset.indices=64', 'train_dataloader.num_workers=0',
    'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.persistent_workers=False',
    'test_dataloader.persistent_workers=False',
    'val_cfg.calibrate.num_batches=1', 'test_cfg.calibrate.num_batches=1',
    'default_hooks.checkpoint.interval=1', 'train_cfg.val_interval=2'
]


def data_opts(root):
    return [f'{k}.dataset.data_root={root}/digits/cifar'
            for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, digits_root):
    work = str(tmp_path_factory.mktemp('work'))
    proc = run_tool('tools/train.py', 'configs/ds_mbnet_digits.py',
                    '--work-dir', work, '--cfg-options',
                    'train_cfg.max_epochs=2', *SMALL, *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    [path] = [osp.join(d, 'subnet_results.json') for d, _, files in
              os.walk(work) if 'subnet_results.json' in files]
    with open(path) as f:
        rows = json.load(f)['subnets']
    return work, proc, rows


def test_training_evaluates_every_subnet_with_its_madds(trained):
    work, proc, rows = trained
    assert [r['name'] for r in rows] == [f'subnet_{k}' for k in range(14)
                                         ] + ['largest']
    madds = [r['madds'] for r in rows]
    assert madds == sorted(madds) and madds[0] < madds[-1]
    assert all('accuracy/top1' in r['metrics'] for r in rows)
    assert 'Per-sub-network results' in proc.stdout + proc.stderr


def test_resume_continues_from_the_last_checkpoint(trained, digits_root):
    work = trained[0]
    assert osp.exists(osp.join(work, 'epoch_2.pth'))
    proc = run_tool('tools/train.py', 'configs/ds_mbnet_digits.py',
                    '--work-dir', work, '--resume', '--cfg-options',
                    'train_cfg.max_epochs=3', *SMALL, *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 2' in log
    assert re.search(r'Epoch\(train\) +\[3\]', log)
    assert not re.search(r'Epoch\(train\) +\[[12]\]', log)
    ckpt = torch.load(osp.join(work, 'epoch_3.pth'), weights_only=True)
    assert int(ckpt['state_dict']['sandwich_iter']) == 3 * 2


def test_test_tool_reports_every_subnet(trained, digits_root, tmp_path):
    work = trained[0]
    out = tmp_path / 'metrics.json'
    proc = run_tool('tools/test.py', 'configs/ds_mbnet_digits.py',
                    osp.join(work, 'epoch_2.pth'), '--work-dir',
                    str(tmp_path), '--out', str(out), '--cfg-options', *SMALL,
                    *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert {f'subnet_{k}/accuracy/top1' for k in range(14)} <= set(metrics)
    assert 'largest/madds' in metrics


def test_stage2_pipeline_reports_the_dynamic_model(trained, digits_root,
                                                   tmp_path):
    """Stage I checkpoint -> BN recalibration -> Stage II -> report."""
    work = trained[0]
    calibrated = str(tmp_path / 'calibrated.pth')
    proc = run_tool('tools/calibrate_bn.py', 'configs/ds_mbnet_digits.py',
                    osp.join(work, 'epoch_2.pth'), '--out', calibrated,
                    '--num-batches', '2', '--cfg-options',
                    *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '[15/15] largest: 2 batches' in proc.stdout
    stage2 = str(tmp_path / 'stage2')
    proc = run_tool('tools/train.py', 'configs/ds_mbnet_digits_gate.py',
                    '--work-dir', stage2, '--cfg-options',
                    f'model.stage1_checkpoint={calibrated}',
                    'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                    *[o for o in SMALL if 'calibrate' not in o and
                      'val_interval' not in o], *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(osp.join(stage2, 'subnet_results.json')) as f:
        report = json.load(f)
    dynamic = report['dynamic']
    start, size = Config.fromfile(osp.join(
        osp.dirname(__file__), '..', 'configs',
        'ds_mbnet_digits_gate.py')).model.backbone.gate.window
    window = [f'subnet_{k}' for k in range(start, start + size)]
    assert dynamic['window'] == window
    assert sum(dynamic['routing'].values()) == 64
    madds = {r['name']: r['madds'] for r in report['subnets']}
    assert madds[window[0]] <= dynamic['madds'] <= madds[window[-1]] * 1.01
    assert osp.exists(osp.join(stage2, 'report.md'))
    assert osp.exists(osp.join(stage2, 'accuracy_vs_madds.png'))
    # tools/test.py on the Stage II checkpoint reports the same dynamic model
    out = tmp_path / 'metrics.json'
    proc = run_tool('tools/test.py', 'configs/ds_mbnet_digits_gate.py',
                    osp.join(stage2, 'epoch_1.pth'), '--work-dir',
                    str(tmp_path / 'test'), '--out', str(out),
                    '--cfg-options',
                    *[o for o in SMALL if 'calibrate' not in o and
                      'val_interval' not in o], *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics['dynamic/accuracy/top1'] == pytest.approx(
        dynamic['accuracy/top1'])
    assert metrics['dynamic/routing/mean_madds'] == pytest.approx(
        dynamic['madds'])


def test_checkpoint_of_another_architecture_is_refused(trained, digits_root,
                                                       tmp_path):
    """A Stage I checkpoint in the Stage II model: keys listed, no run."""
    proc = run_tool('tools/test.py', 'configs/ds_mbnet_digits_gate.py',
                    osp.join(trained[0], 'epoch_2.pth'), '--work-dir',
                    str(tmp_path), '--cfg-options',
                    *[o for o in SMALL if 'calibrate' not in o and
                      'val_interval' not in o], *data_opts(digits_root))
    assert proc.returncode != 0
    assert 'The loaded checkpoint does not match the model' in proc.stderr
    assert 'backbone.layers.3.0.se.slim_head.weight' in proc.stderr
    assert 'teacher.module.head.fc.weight' in proc.stderr
