# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DSResNet as a drop-in for mmpretrain's ResNet family: its constructor
arguments, its initialisation, and static checkpoints (mmpretrain,
torchvision and timm layouts) that load whole or fail."""
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.models.backbones import (ResNet, ResNet_CIFAR, ResNetV1c,
                                         ResNetV1d)
from mmpretrain.registry import MODELS

from dsnet_mm.deploy import static_subnet
from dsnet_mm.models.backbones import (DSResNet, DSResNet_CIFAR,
                                       DSResNetV1c, DSResNetV1d)
from dsnet_mm.models.backbones.ds_resnet_blocks import DSConvModule
from dsnet_mm.ops import DSBatchNorm2d, DSConv2d

init_default_scope('mmpretrain')


def randomize(model, seed=0):
    """Random weights everywhere, non-trivial BN affine and statistics."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, DSConv2d)):
                nn.init.normal_(m.weight, 0, (2.0 / m.weight[0].numel())**.5)
            if isinstance(m, (nn.BatchNorm2d, DSBatchNorm2d)):
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.eval()
    return model


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def torchvision_features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return (tv.layer4(tv.layer3(tv.layer2(tv.layer1(x)))), )


# --- static checkpoints load directly --------------------------------------
def test_an_mmpretrain_resnet50_checkpoint_loads_through_init_cfg(tmp_path):
    ref = randomize(ResNet(50, out_indices=(0, 1, 2, 3)))
    path = str(tmp_path / 'r50.pth')
    # a classifier checkpoint: backbone.* and head.*
    state = {f'backbone.{k}': v for k, v in ref.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 2048)
    torch.save(dict(state_dict=state), path)
    ds = DSResNet(50, out_indices=range(4), init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    ds.init_weights()
    ds.eval()
    x = torch.randn(2, 3, 64, 64)
    assert max_diff(ref(x), ds(x)) < 1e-5
    # the static statistics went to every sub-network's row
    rows = ds.layer2[0].bn2.running_var
    assert rows.shape[0] == ds.space.num_stats
    assert all(torch.equal(r, ref.layer2[0].bn2.running_var) for r in rows)


def test_a_torchvision_resnet50_state_dict_loads_with_its_head_named(
        tmp_path):
    torchvision = pytest.importorskip('torchvision')
    tv = randomize(torchvision.models.resnet50(weights=None))
    path = str(tmp_path / 'tv_r50.pth')
    torch.save(tv.state_dict(), path)
    ds = DSResNet(50, init_cfg=dict(type='Pretrained', checkpoint=path,
                                    unmatched_keys=['fc.']))
    ds.init_weights()
    ds.eval()
    x = torch.randn(2, 3, 64, 64)
    assert max_diff(torchvision_features(tv, x), ds(x)) < 1e-5
    # without naming the classifier, its keys are an error
    with pytest.raises(ValueError, match=r'not in the model\)? \(2\): '
                       r'fc.bias, fc.weight'):
        DSResNet(50).load_state_dict(tv.state_dict())


def test_a_timm_deep_stem_is_renamed():
    ref = randomize(ResNetV1d(depth=50))
    renames = {'stem.0.conv.': 'conv1.0.', 'stem.0.bn.': 'conv1.1.',
               'stem.1.conv.': 'conv1.3.', 'stem.1.bn.': 'conv1.4.',
               'stem.2.conv.': 'conv1.6.', 'stem.2.bn.': 'bn1.'}
    timm = {}
    for key, value in ref.state_dict().items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
        timm[key] = value
    ds = DSResNetV1d(depth=50)
    ds.load_state_dict(timm)
    ds.eval()
    x = torch.randn(2, 3, 64, 64)
    assert max_diff(ref(x), ds(x)) < 1e-5


def test_a_missing_or_extra_key_is_named():
    state = ResNet(18).state_dict()
    del state['layer2.0.downsample.1.weight']
    with pytest.raises(ValueError, match=r'not in the checkpoint\)? '
                       r'\(1\): layer2.0.downsample.1.weight'):
        DSResNet(18).load_state_dict(state)
    state = ResNet(18).state_dict()
    state['layer5.0.conv1.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match=r'not in the model\)? \(1\): '
                       r'layer5.0.conv1.weight'):
        DSResNet(18).load_state_dict(state)
    # and a Pretrained init refuses it too, naming the option that allows it
    state = ResNet(18).state_dict()
    state['neck.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='unmatched_keys'):
        DSResNet(18).load_state_dict(state, strict=False)


def test_old_torchvision_files_without_batch_counts_load():
    state = {k: v for k, v in ResNet(18).state_dict().items()
             if not k.endswith('num_batches_tracked')}
    DSResNet(18).load_state_dict(state)


def test_urls_load_through_mmengine_weights_only(tmp_path):
    good, evil = str(tmp_path / 'good.pth'), str(tmp_path / 'evil.pth')
    torch.save(ResNet(18).state_dict(), good)
    torch.save(dict(ResNet(18).state_dict(), extra=nn.Identity()), evil)

    def load(filename, map_location=None):  # a loader that trusts the file
        return torch.load(filename[len('dsnet-test://'):],
                          map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme('dsnet-test://', load, force=True)
    DSResNet(18, init_cfg=dict(type='Pretrained',
                               checkpoint='dsnet-test://' + good)
             ).init_weights()
    with pytest.raises(pickle.UnpicklingError, match='weights-only'):
        DSResNet(18, init_cfg=dict(type='Pretrained',
                                   checkpoint='dsnet-test://' + evil)
                 ).init_weights()


# --- mmpretrain's constructor arguments -----------------------------------
@pytest.mark.parametrize('ds_cls,ref_cls,kwargs,size', [
    (DSResNet, ResNet, dict(depth=50, style='caffe', num_stages=3,
                            strides=(1, 2, 2), dilations=(1, 1, 2),
                            out_indices=(0, 1, 2)), 64),
    (DSResNet, ResNet, dict(depth=18, num_stages=4, style='pytorch',
                            norm_cfg=dict(type='BN', requires_grad=True),
                            dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                            out_indices=range(4)), 64),
    (DSResNetV1c, ResNetV1c, dict(depth=50, out_indices=(1, 3)), 64),
    (DSResNetV1d, ResNetV1d, dict(depth=50, out_indices=(1, 3)), 64),
    (DSResNet_CIFAR, ResNet_CIFAR, dict(depth=18, out_indices=(0, 3)), 32),
    (DSResNet, ResNet, dict(depth=50, base_channels=32, expansion=2), 64),
])
def test_mmpretrain_variants_have_their_names_and_outputs(ds_cls, ref_cls,
                                                          kwargs, size):
    ref = randomize(ref_cls(**kwargs))
    ds = ds_cls(**kwargs)
    assert list(ds.state_dict()) == list(ref.state_dict())
    ds.load_state_dict(ref.state_dict())
    ds.eval()
    x = torch.randn(2, 3, size, size)
    assert max_diff(ref(x), ds(x)) < 1e-5


def test_swapped_registry_names():
    for name in ('DSResNet', 'DSResNet_CIFAR', 'DSResNetV1c',
                 'DSResNetV1d'):
        assert MODELS.get(name) is not None


def test_deep_stem_and_avg_down_export_statically():
    model = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSResNetV1d', depth=50, stem_channels=16,
                      base_channels=8),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=256),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5)))
    randomize(model)
    x = torch.randn(2, 3, 32, 32)
    bb = model.backbone
    for spec in [bb.space.subnets[1], bb.space.largest]:
        with bb.subnet(spec), torch.no_grad():
            ours = model(x, mode='tensor')
            static = static_subnet(model, spec)(x)
        assert (ours - static).abs().max() < 1e-4
    assert bb.space.max_widths['stem.0'] == 8


def test_with_cp_recomputes_and_gives_the_same_gradients():
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        ds = DSResNet(18, with_cp=with_cp, zero_init_residual=False)
        ds(x.requires_grad_())[0].sum().backward()
        grads.append(ds.layer2[0].conv1.weight.grad)
    assert torch.allclose(*grads, atol=1e-6)


def test_drop_path_rates_rise_as_mmpretrain_s():
    ref = ResNet(50, drop_path_rate=0.5)
    ds = DSResNet(50, drop_path_rate=0.5)
    for name in ('layer1.0', 'layer2.3', 'layer4.2'):
        a = ref.get_submodule(name).drop_path
        b = ds.get_submodule(name).drop_path
        assert type(a) is type(b)
        assert getattr(a, 'drop_prob', 0) == getattr(b, 'drop_prob', 0)
    assert isinstance(ds.layer1[0].drop_path, nn.Identity)


def test_norm_cfg_requires_grad_and_frozen_deep_stem():
    ds = DSResNet(50, norm_cfg=dict(type='BN', requires_grad=False))
    assert not ds.layer1[0].bn1.weight.requires_grad
    assert ds.layer1[0].conv1.weight.requires_grad
    ds = DSResNetV1c(depth=50, frozen_stages=1).train()
    assert not any(p.requires_grad for p in ds.stem.parameters())
    assert not ds.stem[0].bn.training
    assert ds.layer2[0].conv1.weight.requires_grad


@pytest.mark.parametrize('kwargs,match', [
    (dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
     r"norm_cfg.type='SyncBN'.*do not synchronise.*use "
     r"norm_cfg=dict\(type='BN'\)"),
    (dict(norm_cfg=dict(type='GN', num_groups=8)),
     r"norm_cfg needs the keys \['type'\] \(and optionally "
     r"\['requires_grad', 'eps', 'momentum'\]\), got \['num_groups'"),
    (dict(norm_cfg=dict(type='LN')), r"norm_cfg.type='LN' cannot apply"),
    (dict(conv_cfg=dict(type='DCNv2')),
     r"conv_cfg=\{'type': 'DCNv2'\} cannot apply.*use conv_cfg=None"),
    (dict(expansion=2), r'expansion=2 does not apply to the basic blocks'),
    (dict(num_stages=5), r'num_stages must be an int in 1..4'),
    (dict(num_stages=3), r'strides must hold 3 ints'),
    (dict(style='tensorflow'), r"style='tensorflow' is not one of"),
    (dict(dilations=(1, 1, 1)), r'dilations must hold 4 ints'),
    (dict(stem='cifar', deep_stem=True), r'deep_stem=True replaces the 7x7'),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be a number'),
])
def test_arguments_that_cannot_apply_are_refused_saying_why(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DSResNet(**dict(dict(depth=18), **kwargs))


# --- initialisation -----------------------------------------------------
def test_init_cfg_layer_kinds_reach_the_ds_layers():
    ds = DSResNet(18, se_stage='layer3', zero_init_residual=False, init_cfg=[
        dict(type='Constant', val=0.5, layer='Conv2d'),
        dict(type='Constant', val=2.0, layer='BatchNorm2d')])
    ds.init_weights()
    assert (ds.layer2[0].conv1.weight == 0.5).all()
    assert (ds.layer2[0].downsample[0].weight == 0.5).all()
    assert (ds.bn1.weight == 2.0).all()


def test_the_gate_head_keeps_its_own_init():
    gate = dict(stage='layer3', window=(2, 2))
    fixed = dict(stem=0.5, layer1=0.5, layer2=0.5)
    torch.manual_seed(0)
    ds = DSResNet(18, gate=gate, fixed_ratios=fixed)
    head = ds.layer3[0].se.slim_head.weight.clone()
    ds.init_weights()
    assert torch.equal(ds.layer3[0].se.slim_head.weight, head)


def test_zero_init_residual_comes_after_the_init_cfg(tmp_path):
    # mmpretrain zeroes after init_weights: an init_cfg setting every BN
    # weight does not undo it
    ds = DSResNet(50, init_cfg=dict(type='Constant', val=1,
                                    layer='_BatchNorm'))
    ds.init_weights()
    assert not ds.layer2[1].bn3.weight.any()
    assert ds.layer2[1].bn2.weight.all()
    # ... except over a Pretrained checkpoint, which sets them
    ref = randomize(ResNet(50))
    path = str(tmp_path / 'r50.pth')
    torch.save(ref.state_dict(), path)
    ds = DSResNet(50, init_cfg=dict(type='Pretrained', checkpoint=path))
    ds.init_weights()
    assert torch.equal(ds.layer2[1].bn3.weight, ref.layer2[1].bn3.weight)


def test_get_layer_depth_is_mmpretrain_s():
    for depth in (34, 50, 101, 152):
        ref, ds = ResNet(depth), DSResNet(depth)
        for name, _ in ref.named_parameters():
            name = 'backbone.' + name
            assert ds.get_layer_depth(name, 'backbone.') == \
                ref.get_layer_depth(name, 'backbone.'), name
        assert ds.get_layer_depth('head.fc.weight', 'backbone.') == \
            ref.get_layer_depth('head.fc.weight', 'backbone.')
    with pytest.raises(NotImplementedError, match='ResNet-34/50/101/152'):
        DSResNet(18).get_layer_depth('backbone.layer1.0.conv1.weight',
                                     'backbone.')


# --- mmpretrain's own tests, where DSResNet differs ------------------------
def test_conventions_where_mmpretrain_s_own_tests_differ():
    # mmpretrain's test_resnet expects KeyError / AssertionError for a bad
    # depth, num_stages, strides or style; DSResNet raises ValueError naming
    # the field and the allowed values
    with pytest.raises(ValueError, match=r'depth=20 is not one of'):
        DSResNet(20)
    # its test_resnet_v1c / v1d expect mmcv ConvModules in the deep stem:
    # these are DSConvModules (sliced conv and per-sub-network BN) under
    # ConvModule's names, and the stem runs alone at full width as there
    ds = DSResNetV1c(depth=50).eval()
    assert len(ds.stem) == 3 and all(isinstance(m, DSConvModule)
                                     for m in ds.stem)
    assert ds.stem(torch.randn(1, 3, 64, 64)).shape == (1, 64, 32, 32)
    # its blocks are DSBasicBlock / DSBottleneck, with mmpretrain's norm
    # names and with_cp
    ds = DSResNet(50, with_cp=True)
    assert ds.layer1[0].norm3 is ds.layer1[0].bn3 and ds.layer1[0].with_cp
    # and DSResNet_CIFAR's stem conv runs alone as ResNet_CIFAR's
    ds = DSResNet_CIFAR(depth=18)
    assert ds.conv1(torch.randn(1, 3, 32, 32)).shape == (1, 64, 32, 32)
