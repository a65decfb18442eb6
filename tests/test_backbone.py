# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-MobileNetV1: slicing equals a plain network, conventions of mmpretrain.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.models.backbones import DSMobileNetV1
from dsnet_mm.ops import DSBatchNorm2d

TINY_ARCH = dict(stem=(8, 2), stages=[('stage1', 12, 1, 1),
                                      ('stage2', 16, 2, 2)])
TINY_SUBNETS = dict(smallest=dict(stem=4, stage1=6, stage2=8),
                    widest=dict(stem=4, stage1=6, stage2=16), num=3)


def tiny(**kwargs):
    torch.manual_seed(0)
    model = DSMobileNetV1(arch=TINY_ARCH, subnets=TINY_SUBNETS,
                          out_indices=(0, 1), **kwargs)
    # non-trivial BN parameters and statistics
    for m in model.modules():
        if isinstance(m, DSBatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def plain_forward(model, spec, x):
    """The sub-network rebuilt from plain torch modules with copied slices."""

    def conv(ds, x, c_out, groups=1):
        c_in = x.shape[1]
        ref = nn.Conv2d(c_in, c_out, ds.kernel_size, ds.stride, ds.padding,
                        groups=groups, bias=ds.bias is not None)
        with torch.no_grad():
            ref.weight.copy_(ds.weight[:c_out, :c_in // groups])
            if ds.bias is not None:
                ref.bias.copy_(ds.bias[:c_out])
        return ref(x)

    def bn(ds, x):
        c = x.shape[1]
        ref = nn.BatchNorm2d(c).eval()
        with torch.no_grad():
            ref.weight.copy_(ds.weight[:c])
            ref.bias.copy_(ds.bias[:c])
            ref.running_mean.copy_(ds.running_mean[spec.stats, :c])
            ref.running_var.copy_(ds.running_var[spec.stats, :c])
        return ref(x)

    x = F.silu(bn(model.stem.bn, conv(model.stem.conv, x, spec['stem'])))
    outs = []
    for blocks in model.layers:
        for b in blocks:
            c = x.shape[1]
            x = F.silu(bn(b.bn1, conv(b.conv_dw, x, c, groups=c)))
            s = F.adaptive_avg_pool2d(x, 1)
            s = F.relu(conv(b.se.conv_reduce, s, b.se.reduce_channels))
            x = x * torch.sigmoid(conv(b.se.conv_expand, s, c))
            x = F.silu(bn(b.bn2, conv(b.conv_pw, x, spec[b.group])))
        outs.append(x)
    return outs


@pytest.mark.parametrize('key', [0, 1, 2, 'largest'])
def test_sliced_subnet_equals_plain_network(key):
    model = tiny()
    x = torch.randn(2, 3, 16, 16)
    with model.subnet(key) as spec:
        outs = model(x)
    for out, ref in zip(outs, plain_forward(model, spec, x)):
        torch.testing.assert_close(out, ref)


def test_non_uniform_spec_runs_at_its_widths():
    torch.manual_seed(0)
    model = DSMobileNetV1(
        arch=TINY_ARCH,
        subnets=[dict(stem=4, stage1=6, stage2=8),
                 dict(stem=8, stage1=6, stage2=10),
                 dict(stem=8, stage1=12, stage2=10)],
        out_indices=(0, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    with model.subnet(1) as spec:
        outs = model(x)
    assert [o.shape[1] for o in outs] == [6, 10]
    for out, ref in zip(outs, plain_forward(model, spec, x)):
        torch.testing.assert_close(out, ref)


def test_active_subnet_persists_and_context_restores():
    model = tiny()
    x = torch.randn(1, 3, 16, 16)
    assert model.active_subnet is model.space.largest
    model.set_subnet(0)
    first, second = model(x), model(x)  # no reset after a forward
    assert first[-1].shape[1] == second[-1].shape[1] == 8
    with model.subnet('largest'):
        assert model(x)[-1].shape[1] == 16
    assert model.active_subnet is model.space[0]


def test_gradients_reach_only_the_used_slices():
    model = tiny().train()
    with model.subnet(0):
        model(torch.randn(2, 3, 16, 16))[-1].sum().backward()
    w = model.layers[1][1].conv_pw.weight.grad  # stage2: 16 x 16 stored
    assert torch.count_nonzero(w[:8, :8]) > 0
    assert torch.count_nonzero(w[8:]) == 0 and torch.count_nonzero(w[:, 8:]) == 0
    stem = model.stem.conv.weight.grad
    assert torch.count_nonzero(stem[4:]) == 0


def test_training_updates_only_the_active_statistics_row():
    model = tiny().train()
    before = [m.running_mean.clone() for m in model.modules()
              if isinstance(m, DSBatchNorm2d)]
    with model.subnet(1):
        model(torch.randn(4, 3, 16, 16))
    after = [m.running_mean for m in model.modules()
             if isinstance(m, DSBatchNorm2d)]
    for b, a in zip(before, after):
        changed = (a != b).any(1).tolist()
        assert changed == [False, True, False, False]


def test_reference_architecture_shapes():
    model = DSMobileNetV1(out_indices=(0, 1, 2, 3, 4)).eval()
    assert len(model.space) == 14
    assert [model.space[k]['stage4'] for k in (0, 13)] == [224, 640]
    assert [model.space[k]['stage5'] for k in (0, 13)] == [736, 1152]
    assert dict(model.space.largest) == dict(
        stem=24, stage1=88, stage2=168, stage3=264, stage4=640, stage5=1152)
    assert model.layers[3][0].se.reduce_channels == 66
    assert model.layers[3][1].se.reduce_channels == 160
    assert model.layers[4][1].se.reduce_channels == 288
    with torch.no_grad(), model.subnet(0):
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (32, 32, 32), (48, 16, 16), (96, 8, 8), (224, 4, 4), (736, 2, 2)]


def test_cifar_variant_keeps_resolution_early():
    model = DSMobileNetV1(arch='cifar').eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))[-1]
    assert out.shape == (1, 1152, 4, 4)


def test_frozen_stages_and_norm_eval():
    model = tiny(frozen_stages=1, norm_eval=True).train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())
    assert not any(m.training for m in model.modules()
                   if isinstance(m, DSBatchNorm2d))


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='large'), r"arch='large' is not one of \['cifar', 'imagenet'\]"),
    (dict(out_indices=(5, )), r'out_indices\[0\] must be an int in -5..4'),
    (dict(frozen_stages=7), r'frozen_stages must be an int in -1..5'),
    (dict(subnets=[dict(stem=16, stage1=32, stage2=48, stage3=96,
                        stage4=704, stage5=736)]),
     r'subnets\[0\].stage4 must be an int in 1..640, got 704'),
])
def test_bad_arguments_fail_at_build(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSMobileNetV1(**kwargs)


def test_wrong_image_channels_are_named():
    model = tiny()
    with pytest.raises(ValueError, match=r'in_channels=3.*\(1, 1, 16, 16\)'):
        model(torch.randn(1, 1, 16, 16))
