# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A run stopped after epoch 1 and resumed equals an uninterrupted run."""
import glob
import json
import os.path as osp

import torch

from conftest import run_tool
from test_train_tool import SMALL, data_opts

OPTS = [o for o in SMALL if 'calibrate' not in o and 'val_interval' not in o
        ] + ['randomness.deterministic=True', 'default_hooks.logger.interval=1']


def train(work, digits_root, epochs, resume=False,
          config=('configs/ds_mbnet_digits.py', )):
    """Run tools/train.py; ``config`` is the config and extra options."""
    args = ['tools/train.py', config[0], '--work-dir', work, '--no-validate',
            '--cfg-options', f'train_cfg.max_epochs={epochs}', *config[1:],
            *OPTS, *data_opts(digits_root)]
    if resume:
        args.insert(4, '--resume')
    proc = run_tool(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]


def losses(work):
    """Logged losses by iteration, from every run in the work dir."""
    out = {}
    for path in glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                out[rec['iter']] = {k: v for k, v in rec.items()
                                    if k.startswith('loss')}
    return out


def test_stage1_resume_is_exact(tmp_path, digits_root):
    full, split = str(tmp_path / 'full'), str(tmp_path / 'split')
    train(full, digits_root, 2)
    train(split, digits_root, 1)
    train(split, digits_root, 2, resume=True)
    a = torch.load(osp.join(full, 'epoch_2.pth'), weights_only=True)
    b = torch.load(osp.join(split, 'epoch_2.pth'), weights_only=True)
    assert a['state_dict'].keys() == b['state_dict'].keys()
    # parameters, EMA teacher, per-sub-network BN statistics, sampler step
    assert any(k.startswith('teacher.') for k in a['state_dict'])
    for k, v in a['state_dict'].items():
        assert torch.equal(v, b['state_dict'][k]), k
    for k, v in a['optimizer']['state'].items():
        assert torch.equal(v['momentum_buffer'],
                           b['optimizer']['state'][k]['momentum_buffer'])
    la, lb = losses(full), losses(split)
    assert sorted(la) == sorted(lb) == [1, 2, 3, 4]
    assert la == lb


def test_stage2_resume_is_exact(tmp_path, digits_root):
    stage1 = str(tmp_path / 'stage1')
    train(stage1, digits_root, 1)
    calibrated = str(tmp_path / 'calibrated.pth')
    proc = run_tool('tools/calibrate_bn.py', 'configs/ds_mbnet_digits.py',
                    osp.join(stage1, 'epoch_1.pth'), '--out', calibrated,
                    '--num-batches', '1', '--cfg-options',
                    *data_opts(digits_root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    gate = ['configs/ds_mbnet_digits_gate.py',
            f'model.stage1_checkpoint={calibrated}']
    full, split = str(tmp_path / 'full'), str(tmp_path / 'split')
    train(full, digits_root, 2, config=gate)
    train(split, digits_root, 1, config=gate)
    train(split, digits_root, 2, resume=True, config=gate)
    a = torch.load(osp.join(full, 'epoch_2.pth'), weights_only=True)
    b = torch.load(osp.join(split, 'epoch_2.pth'), weights_only=True)
    for k, v in a['state_dict'].items():
        assert torch.equal(v, b['state_dict'][k]), k
    la, lb = losses(full), losses(split)
    assert sorted(la) == [1, 2, 3, 4] and la == lb
    assert all('loss_gate' in v or 'loss_task' in v for v in la.values())
