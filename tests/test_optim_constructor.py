# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The DS optimizer constructor: mmengine's parameter groups, with the
frozen EMA teacher summed up in one log line instead of one per tensor."""
import logging

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

import dsnet_mm  # noqa: F401 (registers the DS modules)

init_default_scope('mmpretrain')


class Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines():
    logger = MMLogger.get_current_instance()
    handler = Records()
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def groups(optim_wrapper):
    return [(tuple(id(p) for p in g['params']), g['lr'], g['weight_decay'])
            for g in optim_wrapper.optimizer.param_groups]


def test_parameter_groups_are_mmengines_and_the_teacher_is_one_line(
        repo_root, log_lines):
    cfg = Config.fromfile(f'{repo_root}/configs/ds_mbnet_digits.py')
    assert cfg.optim_wrapper.constructor == 'DSOptimWrapperConstructor'
    model = MODELS.build(cfg.model)
    frozen = sum(1 for p in model.parameters() if not p.requires_grad)
    assert frozen == sum(1 for _ in model.teacher.parameters()) > 50

    ds = build_optim_wrapper(model, cfg.optim_wrapper)
    ds_lines = list(log_lines)
    log_lines.clear()
    default = build_optim_wrapper(
        model, dict(cfg.optim_wrapper,
                    constructor='DefaultOptimWrapperConstructor'))
    assert groups(ds) == groups(default)
    # mmengine: a warning per frozen tensor; here none, and one summary
    assert sum('is skipped since its requires_grad=False' in line
               for line in log_lines) == frozen
    assert not any('is skipped since' in line for line in ds_lines)
    summary = [line for line in ds_lines if 'frozen parameters' in line]
    assert summary == [f'{frozen} frozen parameters (requires_grad=False) '
                       f'left out of the optimizer (teacher: {frozen})']


def test_a_partly_frozen_module_keeps_mmengines_warning(log_lines):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].bias.requires_grad = False
    build_optim_wrapper(model, dict(
        constructor='DSOptimWrapperConstructor',
        optimizer=dict(type='SGD', lr=0.1, weight_decay=1e-4),
        paramwise_cfg=dict(bias_decay_mult=0.0)))
    assert sum('0.bias is skipped' in line for line in log_lines) == 1
