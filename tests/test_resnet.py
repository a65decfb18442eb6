# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ResNet: parity with mmpretrain's ResNet, width groups, static export,
gate routing, the converter, the configs and the two training stages."""
import json
import os.path as osp
import runpy
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.models.backbones import ResNet, ResNet_CIFAR
from mmpretrain.models.backbones.resnet import BasicBlock, Bottleneck
from mmpretrain.registry import MODELS

from conftest import run_tool
from dsnet_mm.analysis import count_complexity
from dsnet_mm.converters import convert_mmpretrain_resnet
from dsnet_mm.deploy import static_subnet
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.models.backbones import DSResNet
from dsnet_mm.ops import DSBatchNorm2d, unfolded_bn

init_default_scope('mmpretrain')

GATE_FIXED = dict(stem=0.5, layer1=0.5, layer2=0.5)


def randomize_norms(model, scale=(0.5, 1.0)):
    """Non-trivial BN affine parameters and statistics (every row)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (DSBatchNorm2d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(*scale)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def small_classifier(depth=18, gate=None, classifier=None, **backbone):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSGateClassifier' if gate else 'DSImageClassifier',
        backbone=dict(type='DSResNet', depth=depth, stem='cifar',
                      stem_channels=8, base_channels=8, gate=gate,
                      **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5,
                  in_channels=64 * (4 if depth == 50 else 1)),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5),
        **(classifier or {})))
    return randomize_norms(model).eval()


# --- parity with mmpretrain's ResNet ------------------------------------
@pytest.mark.parametrize('depth', [18, 50])
def test_full_width_has_the_madds_and_params_of_mmpretrain_resnet(depth):
    ref, ds = ResNet(depth), DSResNet(depth)
    ref.eval()
    ds.eval()
    x = torch.zeros(1, 3, 224, 224)
    expected = count_complexity(ref, lambda: ref(x))
    assert count_complexity(ds, lambda: ds(x)) == expected
    assert expected['madds'] == {18: 1_813_561_344, 50: 4_087_136_256}[depth]
    assert sum(p.numel() for p in ds.parameters()) == expected['params']


@pytest.mark.parametrize('depth,stem,size', [(18, 'imagenet', 64),
                                             (50, 'imagenet', 64),
                                             (18, 'cifar', 32)])
def test_converted_weights_reproduce_mmpretrain_resnet(depth, stem, size):
    cls = ResNet if stem == 'imagenet' else ResNet_CIFAR
    ref = randomize_norms(cls(depth, out_indices=(0, 1, 2, 3)))
    with torch.no_grad():  # small last-BN scales, as trained ResNets have
        for m in ref.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                last = m.norm3 if isinstance(m, Bottleneck) else m.norm2
                last.weight.uniform_(0.05, 0.2)
    ref.eval()
    ds = DSResNet(depth, stem=stem, out_indices=(0, 1, 2, 3))
    ds.load_state_dict(convert_mmpretrain_resnet(ref.state_dict(), ds, ''))
    ds.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = ref(x)
        folded = ds(x)  # inference folds each BN into its sliced conv
        with unfolded_bn(ds):
            unfolded = ds(x)  # the very operations of mmpretrain's ResNet
    for a, b, c in zip(expected, folded, unfolded):
        assert (a - b).abs().max() < 1e-5
        assert torch.equal(a, c)


def test_converter_takes_a_classifier_checkpoint_and_names_what_is_missing():
    ref = MODELS.build(dict(
        type='ImageClassifier', backbone=dict(type='ResNet', depth=18),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=7, in_channels=512)))
    state = {f'module.{k}': v for k, v in ref.state_dict().items()}
    ds = DSResNet(18, se_stage='layer3')
    out = convert_mmpretrain_resnet(state, ds)
    torch.testing.assert_close(out['head.fc.weight'], ref.head.fc.weight)
    rows = out['backbone.bn1.running_var']
    assert rows.shape == (ds.space.num_stats, 64)
    assert all(torch.equal(r, ref.backbone.bn1.running_var) for r in rows)
    assert not any('.se.' in k for k in out)  # a static ResNet has no SE
    del state['module.backbone.layer2.0.downsample.1.weight']
    with pytest.raises(KeyError, match='layer2.0.downsample.1.weight'):
        convert_mmpretrain_resnet(state, ds)
    with pytest.raises(ValueError, match='shape'):
        convert_mmpretrain_resnet(ref.backbone.state_dict(),
                                  DSResNet(18, stem_channels=32,
                                           base_channels=32))


def run_script(path, *args, monkeypatch):
    """Run a repo tool in this process (its imports are loaded already)."""
    monkeypatch.setattr(sys, 'argv', [path, *args])
    runpy.run_path(path, run_name='__main__')


def test_convert_tool_writes_a_loadable_checkpoint(tmp_path, monkeypatch):
    ref = ResNet(18)
    torch.save(dict(state_dict=ref.state_dict()), tmp_path / 'r18.pth')
    run_script('tools/convert/mmpretrain_resnet.py', str(tmp_path / 'r18.pth'),
               str(tmp_path / 'out.pth'), '--config',
               'configs/ds_resnet18_imagenet.py', monkeypatch=monkeypatch)
    state = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    torch.testing.assert_close(state['backbone.layer4.1.conv2.weight'],
                               ref.layer4[1].conv2.weight)


# --- width groups and sub-networks ----------------------------------------
def test_width_groups_follow_the_streams():
    r18 = DSResNet(18).space.groups
    # layer1 of ResNet-18 keeps the stem's stream: no group of its own
    assert r18[:3] == ['stem', 'layer1.0', 'layer1.1'] and 'layer1' not in r18
    r50 = DSResNet(50).space
    assert r50.groups[:3] == ['stem', 'layer1', 'layer1.0']
    assert len(r50.groups) == 1 + 4 + 16
    assert [s['layer3'] for s in r50.subnets] == [256, 512, 768, 1024]
    assert [s['layer3.2'] for s in r50.subnets] == [64, 128, 192, 256]


def test_fixed_ratios_hold_stages_in_every_subnet():
    space = DSResNet(50, fixed_ratios=GATE_FIXED).space
    assert {s['layer2'] for s in space.subnets} == {256}
    assert {s['layer2.3'] for s in space.subnets} == {64}
    assert [s['layer4'] for s in space.subnets] == [512, 1024, 1536, 2048]
    assert space.largest['layer2'] == 512


def test_explicit_non_uniform_subnets_run_at_their_widths():
    widths = dict(stem=8, **{'layer1.0': 4, 'layer1.1': 8}, layer2=16,
                  **{'layer2.0': 4, 'layer2.1': 12}, layer3=24,
                  **{'layer3.0': 32, 'layer3.1': 8}, layer4=40,
                  **{'layer4.0': 16, 'layer4.1': 64})
    bb = DSResNet(18, stem='cifar', stem_channels=8, base_channels=8,
                  subnets=[widths], out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad(), bb.subnet(0):
        outs = bb(torch.randn(1, 3, 16, 16))
    assert [o.shape[1] for o in outs] == [8, 16, 24, 40]


def test_slicing_equals_the_static_resnet():
    for depth in (18, 50):
        model = small_classifier(depth, se_stage='layer2',
                                 fixed_ratios=dict(stem=0.5))
        x = torch.randn(2, 3, 16, 16)
        for spec in [*model.backbone.space.subnets,
                     model.backbone.space.largest]:
            with torch.no_grad(), model.backbone.subnet(spec):
                sliced = model.head(model.neck(model.backbone(x)))
                for fold_bn in (True, False):
                    static = static_subnet(model, spec, fold_bn)
                    assert (static(x) - sliced).abs().max() < 1e-5
            assert not any(isinstance(m, DSBatchNorm2d)
                           for m in static.modules())


def test_frozen_stages_and_norm_eval():
    bb = DSResNet(18, frozen_stages=1, norm_eval=True).train()
    assert not bb.conv1.weight.requires_grad
    assert not bb.layer1[1].conv2.weight.requires_grad
    assert bb.layer2[0].conv1.weight.requires_grad
    assert not any(m.training for m in bb.modules()
                   if isinstance(m, DSBatchNorm2d))


def test_zero_init_residual_starts_blocks_as_their_shortcut():
    assert not DSResNet(50).layer2[1].bn3.weight.any()
    assert DSResNet(50, zero_init_residual=False).layer2[1].bn3.weight.all()


@pytest.mark.parametrize('kwargs,match', [
    (dict(depth=20), r'depth=20 is not one of \[18, 34, 50, 101, 152\]'),
    (dict(stem='deep'), r"stem='deep' is not one of \('imagenet', 'cifar'\)"),
    (dict(strides=(1, 2)), r'strides must hold 4 ints, got \(1, 2\)'),
    (dict(ratios=[0.5, 0.25]), r'ratios must be increasing slimming ratios '
     r'in \(0, 1\], got \[0.5, 0.25\]'),
    (dict(ratios=[0.5, 1.5]), r'ratios\[1\] must be a number in \(0, 1\]'),
    (dict(fixed_ratios=dict(layer5=0.5)),
     r"fixed_ratios names unknown stage\(s\) \['layer5'\]; allowed: "
     r"\['stem', 'layer1', 'layer2', 'layer3', 'layer4'\]"),
    (dict(fixed_ratios=dict(stem=0)),
     r'fixed_ratios.stem must be a number in \(0, 1\]'),
    (dict(subnets=[dict(stem=8)], ratios=[1.0]),
     'give either subnets .* or ratios / fixed_ratios'),
    (dict(subnets=[dict(stem=8)]), r"subnets\[0\] lacks width group"),
    (dict(out_indices=(4, )), r'out_indices\[0\] must be an int in -4..3'),
    (dict(se_stage='layer0'), r"se_stage='layer0' is not one of"),
    (dict(gate=dict(stage='layer5', window=(0, 4))),
     r"gate.stage='layer5' is not a stage; allowed: \['layer1', 'layer2', "
     r"'layer3', 'layer4'\]"),
    (dict(gate=dict(stage='layer3', window=(0, 4))),
     r"gate.window=\(0, 4\) mixes widths \[16, 32, 48, 64\] of group "
     r"'stem', which runs before the gate \(stage='layer3'\)"),
    (dict(gate=dict(stage='layer3', window=(2, 4)), fixed_ratios=GATE_FIXED),
     r'gate.window\[1\] \(size\) must be an int in 1..2, got 4'),
    (dict(gate=dict(stage='layer3', window=4)),
     r'gate.window must be a list or tuple of ints, got 4'),
    (dict(gate=dict(stage='layer3', window=(0, 4)), fixed_ratios=GATE_FIXED,
          se_stage='layer2'),
     r"se_stage='layer2' must be the stage of the gate \('layer3'\)"),
])
def test_bad_arguments_fail_at_build_naming_the_field(kwargs, match):
    kwargs = dict(dict(depth=18), **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        DSResNet(**kwargs)


def test_wrong_image_channels_are_named():
    with pytest.raises(ValueError, match=r'DSResNet expects images of shape '
                       r'\(N, 3, H, W\)'):
        DSResNet(18)(torch.zeros(1, 1, 32, 32))


# --- the gate ---------------------------------------------------------------
@pytest.mark.parametrize('depth,stage', [(18, 'layer3'), (50, 'layer2'),
                                         (18, 'layer1')])
def test_slice_bucket_and_mask_routing_agree(depth, stage):
    """Residual adds stay consistent on the mask path, wherever the gate."""
    before = ['stem', 'layer1', 'layer2'][:int(stage[-1])]
    model = small_classifier(depth, dict(stage=stage, window=(0, 4)),
                             fixed_ratios={s: 0.5 for s in before},
                             out_indices=(1, 3))
    real = model.gate.slim_head.forward

    def route_cyclically(r):
        real(r)
        return (5 * torch.eye(4)[torch.arange(r.shape[0]) % 4])[..., None,
                                                                 None]

    model.gate.slim_head.forward = route_cyclically
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        results = {m: model.forward_dynamic(x, m)
                   for m in ('slice', 'bucket', 'mask')}
    logits, _, choice = results['slice']
    assert choice.tolist() == [b % 4 for b in range(8)]
    for mode in ('bucket', 'mask'):
        torch.testing.assert_close(results[mode][0], logits, atol=1e-5,
                                   rtol=1e-5)


def test_stage1_supernet_with_its_se_loads_into_stage2(tmp_path):
    stage1 = small_classifier(se_stage='layer3', fixed_ratios=GATE_FIXED)
    torch.save(dict(state_dict=stage1.state_dict()), tmp_path / 's1.pth')
    stage2 = small_classifier(18, dict(stage='layer3', window=(0, 4)),
                              dict(stage1_checkpoint=str(tmp_path / 's1.pth')),
                              se_stage='layer3', fixed_ratios=GATE_FIXED)
    stage2.init_weights()  # only the slimming head is new
    torch.testing.assert_close(stage2.backbone.layer3[0].se.conv_reduce.weight,
                               stage1.backbone.layer3[0].se.conv_reduce.weight)
    assert stage2.gate_prefix == 'backbone.layer3.0.se.slim_head.'


# --- configs and tools -------------------------------------------------------
CONFIGS = {
    'configs/ds_resnet50_imagenet.py': (64, 2048),
    'configs/ds_resnet50_imagenet_gate.py': (64, 2048),
    'configs/ds_resnet18_imagenet.py': (64, 512),
    'configs/ds_resnet_cifar10.py': (32, 2048),
    'configs/ds_resnet_digits.py': (32, 128),
    'configs/ds_resnet_digits_gate.py': (32, 128),
}


@pytest.mark.parametrize('config', sorted(CONFIGS))
def test_get_flops_lists_every_subnet(config, monkeypatch, capsys):
    size, width = CONFIGS[config]
    run_script('tools/analysis/get_flops.py', config, '--json', '--shape',
               str(size), str(size), monkeypatch=monkeypatch)
    report = json.loads(capsys.readouterr().out)
    assert [s['index'] for s in report['subnets']] == [0, 1, 2, 3]
    madds = [s['madds'] for s in report['subnets']]
    assert madds == sorted(madds) and madds[-1] <= report['largest']['madds']
    assert report['largest']['widths']['layer4'] == width


SMALL = [
    'train_dataloader.dataset.indices=128',
    'val_dataloader.dataset.indices=64',
    'test_dataloader.dataset.indices=64', 'train_dataloader.num_workers=0',
    'val_dataloader.num_workers=0', 'test_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.persistent_workers=False',
    'test_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
    'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1'
]


def test_stage1_and_stage2_run_on_the_digits_demo(digits_root, tmp_path,
                                                  monkeypatch):
    data = [f'{k}.dataset.data_root={digits_root}/digits/cifar'
            for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    stage1 = str(tmp_path / 'stage1')
    proc = run_tool('tools/train.py', 'configs/ds_resnet_digits.py',
                    '--work-dir', stage1, '--cfg-options', *SMALL, *data,
                    'val_cfg.calibrate.num_batches=1')
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(osp.join(stage1, 'subnet_results.json')) as f:
        rows = json.load(f)['subnets']
    assert [r['name'] for r in rows] == [f'subnet_{k}' for k in range(4)
                                         ] + ['largest']
    assert all('accuracy/top1' in r['metrics'] for r in rows)

    calibrated = str(tmp_path / 'calibrated.pth')
    run_script('tools/calibrate_bn.py', 'configs/ds_resnet_digits.py',
               osp.join(stage1, 'epoch_1.pth'), '--out', calibrated,
               '--num-batches', '1', '--cfg-options', *data,
               'train_dataloader.num_workers=0',
               'train_dataloader.persistent_workers=False',
               monkeypatch=monkeypatch)

    stage2 = str(tmp_path / 'stage2')
    proc = run_tool('tools/train.py', 'configs/ds_resnet_digits_gate.py',
                    '--work-dir', stage2, '--cfg-options', *SMALL, *data,
                    f'model.stage1_checkpoint={calibrated}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(osp.join(stage2, 'subnet_results.json')) as f:
        dynamic = json.load(f)['dynamic']
    assert dynamic['window'] == [f'subnet_{k}' for k in range(4)]
    assert sum(dynamic['routing'].values()) == 64
    assert 'accuracy/top1' in dynamic


def test_configs_build_the_documented_models():
    model = build_model_from_cfg(
        Config.fromfile('configs/ds_resnet50_imagenet_gate.py'))
    bb = model.backbone
    assert bb.gate_stage == 2 and len(bb.window) == 4
    assert {s['layer2'] for s in bb.window} == {256}
