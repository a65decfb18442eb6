# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Kernel-size slicing (DS-CNN++): a centre slice is nn.Conv2d with the
centre weights, MAdds follow the kernel, static export and the mask path
agree, bad kernel configs are named at build."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from dsnet_mm.analysis import subnet_complexity
from dsnet_mm.analysis.index_baseline import indexed_subnet
from dsnet_mm.deploy import static_subnet
from dsnet_mm.models.backbones import DSMobileNetV1
from dsnet_mm.models.subnet import SubnetSpace
from dsnet_mm.ops import DSConv2d
from test_gate import route_cyclically

init_default_scope('mmpretrain')


@pytest.mark.parametrize('group_channels,stride', [(None, 1), (1, 2)])
@pytest.mark.parametrize('k', [1, 3, 5])
def test_centre_kernel_slice_is_a_plain_conv(group_channels, stride, k):
    torch.manual_seed(0)
    conv = DSConv2d(8, 8, 5, stride, group_channels=group_channels,
                    bias=True)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    c_out = 6 if group_channels else 4
    out = conv(x, c_out, kernel_size=k)
    o = (5 - k) // 2
    centre = conv.weight[:c_out, :conv.weight.shape[1] if group_channels
                         else 6, o:o + k, o:o + k].detach().clone()
    centre.requires_grad_(True)
    ref = F.conv2d(x, centre, conv.bias[:c_out].detach(), stride, k // 2,
                   groups=6 if group_channels else 1)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    (gx, ) = torch.autograd.grad(out, x, g, retain_graph=True)
    (gw, ) = torch.autograd.grad(out, conv.weight, g)
    rx, rw = torch.autograd.grad(ref, (x, centre), g)
    torch.testing.assert_close(gx, rx)
    # the gradient reaches only the centre taps of the used filters
    torch.testing.assert_close(gw[:c_out, ..., o:o + k, o:o + k][
        :, :centre.shape[1]], rw)
    assert gw.abs().sum() == pytest.approx(rw.abs().sum().item(), rel=1e-5)
    if stride == 1:
        assert out.shape[-2:] == x.shape[-2:]  # the padding follows k


@pytest.mark.parametrize('k,match', [
    (4, r'kernel_size=4 must be a centre slice .* allowed: \[1, 3, 5\]'),
    (7, r'kernel_size=7 must be a centre slice'),
])
def test_bad_kernel_sizes_are_named(k, match):
    with pytest.raises(ValueError, match=match):
        DSConv2d(4, 4, 5)(torch.zeros(1, 4, 6, 6), kernel_size=k)


def test_a_ladder_snaps_a_choice_group_to_the_nearest_choice():
    space = SubnetSpace(
        dict(a=8, k=5), dict(smallest=dict(a=2, k=3), widest=dict(a=8, k=5),
                             num=4), choices=dict(k=(3, 5)))
    assert [s['k'] for s in space] == [3, 3, 5, 5]
    assert space.interpolate(0.5)['k'] == 3  # 4.0: the tie goes down
    with pytest.raises(ValueError, match=r"k=4 is not one of the choices"):
        space.adhoc(dict(a=4, k=4))


ARCH = dict(stem=(8, 1), stages=[('stage1', 12, 1, 2), ('stage2', 16, 2, 2),
                                 ('stage3', 24, 1, 1)])
KERNELS = dict(stage2=(3, 5), stage3=(3, 5, 7))
SUBNETS = [
    dict(stem=8, stage1=12, stage2=8, stage3=12,
         **{'stage2.kernel': 3, 'stage3.kernel': 3}),
    dict(stem=8, stage1=12, stage2=8, stage3=12,
         **{'stage2.kernel': 5, 'stage3.kernel': 5}),
    dict(stem=8, stage1=12, stage2=16, stage3=24,
         **{'stage2.kernel': 5, 'stage3.kernel': 7}),
]


def build(**backbone):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS,
                           kernel_choices=KERNELS), **backbone),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24)))
    return model.eval()


def test_madds_follow_the_depthwise_kernel():
    model = build()
    rows = subnet_complexity(model, model.backbone.space.subnets[:2],
                             (3, 16, 16))
    # same widths; stage2's dw convs (on stage1's 12 channels, stride 2 to
    # 4x4, then on its own 8 at 4x4) and stage3's (on stage2's 8 channels
    # at 4x4) go from 3x3 to 5x5 taps
    extra = (12 * 16 + 8 * 16 + 8 * 16) * (25 - 9)
    assert rows[1]['madds'] - rows[0]['madds'] == extra


def test_static_and_indexed_subnets_equal_the_sliced_forward():
    model = build()
    x = torch.randn(2, 3, 16, 16)
    for spec in model.backbone.space.subnets:
        with torch.no_grad(), model.backbone.subnet(spec):
            sliced = model(x)
        torch.testing.assert_close(static_subnet(model, spec)(x), sliced,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(indexed_subnet(model, spec)(x), sliced,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('mask_position', ['after_act', 'before_act'])
def test_mask_path_over_a_window_of_mixed_kernels_equals_slicing(
        mask_position):
    """Each kernel of the window runs masked (after or before the
    activation); every image keeps its own kernel's output."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSGateClassifier',
        backbone=dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS,
                      kernel_choices=KERNELS,
                      # stage3's kernel differs in the window (5 and 7)
                      gate=dict(stage='stage2', window=(1, 2))),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24),
        mask_position=mask_position))
    model.eval()
    route_cyclically(model, 2)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        mask = model.forward_dynamic(x, 'mask')[0]
        sliced = model.forward_dynamic(x, 'slice')[0]
    torch.testing.assert_close(mask, sliced, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('kwargs,match', [
    (dict(kernel_choices=dict(stage2=(3, 4))),
     r'kernel_choices\.stage2=\(3, 4\) must hold odd kernel sizes'),
    (dict(kernel_choices=dict(stage9=(3, 5))),
     r"kernel_choices names unknown stage\(s\) \['stage9'\]"),
    (dict(subnets=[dict(SUBNETS[0], **{'stage2.kernel': 7})]),
     r"subnets\[0\]\.stage2\.kernel=7 is not one of the choices \[3, 5\]"),
    (dict(subnets=[dict(stem=8, stage1=12, stage2=8, stage3=12)]),
     r"subnets\[0\] lacks width group\(s\) \['stage2\.kernel', "),
    (dict(gate=dict(stage='stage3', window=(0, 2))),
     r"mixes widths \[3, 5\] of group 'stage2\.kernel'"),
])
def test_bad_kernel_configs_fail_at_build(kwargs, match):
    kwargs = dict(dict(arch=ARCH, subnets=SUBNETS, kernel_choices=KERNELS),
                  **kwargs)
    with pytest.raises(ValueError, match=match):
        DSMobileNetV1(**kwargs)
