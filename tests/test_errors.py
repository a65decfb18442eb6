# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Bad input stops with a message that names the problem.

Other cases live beside their feature: width groups and widths
(test_subnet), routing window and gate stage (test_gate), image channels
(test_backbone), truncated, foreign or mismatched checkpoints
(test_checkpoint, test_train_tool), a NaN loss in Stage I
(test_classifier).
"""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

import dsnet_mm  # noqa: F401
from dsnet_mm.datasets import DigitsCIFAR10
from test_gate import batch, build

init_default_scope('mmpretrain')


def test_unknown_backbone_type_is_named():
    with pytest.raises(KeyError, match='DSMobileNetV9 is not in the '
                       'mmpretrain::model registry'):
        MODELS.build(dict(type='DSImageClassifier',
                          backbone=dict(type='DSMobileNetV9')))


def test_missing_dataset_path_is_named(tmp_path):
    root = str(tmp_path / 'nowhere')
    with pytest.raises(RuntimeError) as err:
        DigitsCIFAR10(data_root=root, split='train')
    assert f'{root}/digits-batches-py/data_batch_1: missing' in str(err.value)
    assert 'write_digits.py' in str(err.value)


def test_stage2_nan_loss_stops_before_any_update():
    from mmengine.optim import OptimWrapper
    model = build().train()
    before = model.gate.slim_head.weight.detach().clone()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    model.head._get_loss = lambda logits, samples: dict(
        loss=logits.sum() * float('nan'))
    with pytest.raises(FloatingPointError,
                       match=r'Stage II loss is nan .*loss_task.* routed '
                       r'model over subnet_1, subnet_2, subnet_3, subnet_4'):
        model.train_step(batch(), wrapper)
    assert torch.equal(model.gate.slim_head.weight, before)
