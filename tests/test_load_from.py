# Copyright (c) dsnet_mm contributors. All rights reserved.
"""``load_from`` of a static network's checkpoint into a whole DS
classifier: whole or refused, the EMA teacher started from the loaded
student, through the hook the train tool adds."""
import importlib.util
import os.path as osp
import types

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.registry import MODELS

import dsnet_mm  # noqa: F401 (registers)
from dsnet_mm.engine import CheckpointMatchHook

init_default_scope('mmpretrain')
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESNET = dict(depth=18, stem_channels=8, base_channels=8)
HEAD = dict(num_classes=5, in_channels=64)


def static_classifier():
    """mmpretrain's ResNet-18 classifier (8-64 channels), randomised BN
    statistics so that they must arrive in every row."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='ResNet', **RESNET),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', **HEAD)))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.1)
    return model.eval()


def ds_classifier():
    torch.manual_seed(1)
    return MODELS.build(dict(
        type='DSImageClassifier', backbone=dict(type='DSResNet', **RESNET),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', **HEAD), bootstrap='ib'))


def load_as_the_runner(model, path):
    """``Runner.load_checkpoint``: the hook on the read checkpoint, then
    mmengine's strict=False load."""
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    CheckpointMatchHook().after_load_checkpoint(
        types.SimpleNamespace(model=model), checkpoint)
    load_checkpoint(model, path, map_location='cpu', strict=False)


@pytest.fixture
def static_checkpoint(tmp_path):
    ref = static_classifier()
    path = tmp_path / 'static.pth'
    torch.save(dict(state_dict=ref.state_dict(), meta={}), path)
    return ref, str(path)


def test_a_static_classifier_checkpoint_loads_whole(static_checkpoint):
    ref, path = static_checkpoint
    model = ds_classifier()
    load_as_the_runner(model, path)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), model.backbone.subnet('largest'):
        out = model(x, mode='tensor')
        expected = ref(x, mode='tensor')
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # every sub-network's BN row holds the static statistics
    bn = model.backbone.layer4[1].bn2
    static_bn = ref.backbone.layer4[1].bn2
    for row in range(bn.num_subnets):
        assert torch.equal(bn.running_mean[row], static_bn.running_mean)
    # the teacher starts as the loaded student, at step 0
    teacher = model.teacher.module
    for (name, p), (_, q) in zip(model._student().state_dict().items(),
                                 teacher.state_dict().items()):
        assert torch.equal(p, q), name
    assert int(model.teacher.steps) == 0


def test_a_bare_backbone_file_is_refused_naming_init_cfg(tmp_path):
    bare = tmp_path / 'bare.pth'
    torch.save(static_classifier().backbone.state_dict(), bare)
    with pytest.raises(ValueError, match=r"no key under 'backbone\.'.*"
                       r"init_cfg=dict\(type='Pretrained'"):
        load_as_the_runner(ds_classifier(), str(bare))


@pytest.mark.parametrize('edit,match', [
    (lambda s: s.pop('backbone.layer2.0.conv1.weight'),
     # the student's key, and its copy the teacher starts from
     r'missing in checkpoint \(2\): backbone\.layer2\.0\.conv1\.weight, '
     r'teacher\.module\.backbone\.layer2\.0\.conv1\.weight'),
    (lambda s: s.update({'backbone.extra.weight': torch.zeros(1)}),
     r'not in the model \(2\): backbone\.extra\.weight'),
])
def test_a_missing_or_extra_key_is_refused_naming_it(tmp_path, edit, match):
    state = static_classifier().state_dict()
    edit(state)
    path = tmp_path / 'edited.pth'
    torch.save(dict(state_dict=state), path)
    with pytest.raises(ValueError, match=match):
        load_as_the_runner(ds_classifier(), str(path))


def test_load_state_dict_starts_the_teacher_from_the_student():
    """Without the hook too (any load_state_dict): a student-only state
    leaves no teacher at the weights from before the load."""
    source, model = ds_classifier(), ds_classifier()
    with torch.no_grad():
        for p in source.backbone.parameters():
            p.add_(1.0)
    student_only = {k: v for k, v in source.state_dict().items()
                    if not k.startswith('teacher.')}
    result = model.load_state_dict(student_only, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(
        model.teacher.module.backbone.conv1.weight,
        source.backbone.conv1.weight, rtol=0, atol=0)
    # a checkpoint with its own teacher keeps it
    own = source.state_dict()
    own['teacher.module.backbone.conv1.weight'] = torch.zeros_like(
        own['teacher.module.backbone.conv1.weight'])
    model.load_state_dict(own)
    assert not model.teacher.module.backbone.conv1.weight.any()


def test_the_train_tool_checks_a_loaded_checkpoint(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'train_tool', osp.join(ROOT, 'tools/train.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = types.SimpleNamespace(
        launcher='none', work_dir=str(tmp_path), amp=False,
        no_validate=False, resume=None, auto_scale_lr=False)
    cfg = Config(dict(model=dict(type='X'), load_from='static.pth',
                      custom_hooks=[dict(type='EMAHook')]))
    hooks = tool.merge_args(cfg, args).custom_hooks
    assert [h['type'] for h in hooks] == [
        'EMAHook', 'mmpretrain.CheckpointMatchHook']
    # a config that has it keeps one; no load, no hook added
    cfg = Config(dict(model=dict(type='X'), load_from='static.pth',
                      custom_hooks=[dict(type='CheckpointMatchHook')]))
    assert len(tool.merge_args(cfg, args).custom_hooks) == 1
    cfg = Config(dict(model=dict(type='X'), custom_hooks=[]))
    assert tool.merge_args(cfg, args).custom_hooks == []
