# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Configs with custom_imports register and build the DS model."""
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

MBNET = ['DSImageClassifier', 'DSMobileNetV1', '14']
VIT = ['DSImageClassifier', 'DSViT', '4']
CONFIGS = [('ds_mbnet_digits.py', MBNET), ('ds_mbnet_graded_digits.py', MBNET),
           ('ds_mbnet_cifar10.py', MBNET), ('ds_mbnet_imagenet.py', MBNET),
           ('ds_vit_graded_digits.py', VIT),
           ('ds_vit_graded_digits_mvco.py', VIT),
           ('ds_vit_graded_digits_gate.py', ['DSGateClassifier', *VIT[1:]]),
           ('ds_vit_small_imagenet.py', VIT),
           ('ds_vit_small_imagenet_gate.py', ['DSGateClassifier', *VIT[1:]])]


@pytest.mark.parametrize('name,expected', CONFIGS)
def test_config_with_custom_imports_builds_the_model(repo_root, name,
                                                     expected):
    # a fresh interpreter: only custom_imports may register dsnet_mm
    code = (
        'import sys\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        'from mmpretrain.registry import MODELS\n'
        f'cfg = Config.fromfile({osp.join("configs", name)!r})\n'
        "assert 'dsnet_mm' in sys.modules\n"
        "init_default_scope('mmpretrain')\n"
        'model = MODELS.build(cfg.model)\n'
        'print(type(model).__name__, type(model.backbone).__name__,'
        ' len(model.backbone.space))\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == expected


def test_graded_stage1_label_weights_stop_at_the_gate_window(repo_root):
    """The main job's random students learn from the labels up to the
    narrow end of the Stage II gate's window (where the easy images go);
    the wider ones and the smallest learn from the teacher alone: the two
    configs agree on where that is."""
    stage1 = Config.fromfile(
        osp.join(repo_root, 'configs/ds_mbnet_graded_digits.py'))
    stage2 = Config.fromfile(
        osp.join(repo_root, 'configs/ds_mbnet_graded_digits_gate.py'))
    weights = stage1.model.student_label_weight
    first = stage2.model.backbone.gate.window[0]
    assert len(weights) == stage1.model.backbone.subnets.num
    assert weights[0] == 0
    assert all(w > 0 for w in weights[1:first + 1])
    assert not any(weights[first + 1:])
