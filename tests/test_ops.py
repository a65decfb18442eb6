# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced ops equal plain torch ops that hold the same sliced weights."""
import pytest
import torch
import torch.nn as nn

from dsnet_mm.ops import (DSBatchNorm2d, DSConv2d, DSLinear, DSSqueezeExcite,
                          cumulative_bn_stats)


def _grads_equal(ds_grad, ref_grad, slices):
    """The used slice matches the reference; everything else is zero."""
    used = ds_grad[slices]
    torch.testing.assert_close(used, ref_grad)
    rest = ds_grad.clone()
    rest[slices] = 0
    assert torch.count_nonzero(rest) == 0


@pytest.mark.parametrize('group_channels,c_in,c_out', [
    (None, 5, 7),   # full conv, both sides sliced
    (1, 6, 6),      # depthwise
    (2, 6, 9),      # grouped: 2 in and 3 out channels per group, 3 groups
])
def test_conv_matches_plain_conv(group_channels, c_in, c_out):
    torch.manual_seed(0)
    max_in = 8 if group_channels != 1 else 10
    max_out = 12 if group_channels != 1 else 10
    ds = DSConv2d(max_in, max_out, 3, stride=2, group_channels=group_channels,
                  bias=True)
    groups = 1 if group_channels is None else c_in // group_channels
    ref = nn.Conv2d(c_in, c_out, 3, 2, 1, groups=groups, bias=True)
    in_pg = c_in // groups
    with torch.no_grad():
        ref.weight.copy_(ds.weight[:c_out, :in_pg])
        ref.bias.copy_(ds.bias[:c_out])
    x = torch.randn(2, c_in, 9, 9)
    x_ref = x.clone().requires_grad_()
    x = x.requires_grad_()
    out = ds(x, c_out)
    expected = ref(x_ref)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    _grads_equal(ds.weight.grad, ref.weight.grad,
                 (slice(0, c_out), slice(0, in_pg)))
    _grads_equal(ds.bias.grad, ref.bias.grad, slice(0, c_out))


def test_linear_matches_plain_linear():
    torch.manual_seed(0)
    ds = DSLinear(16, 10)
    ref = nn.Linear(11, 10)
    with torch.no_grad():
        ref.weight.copy_(ds.weight[:, :11])
        ref.bias.copy_(ds.bias)
    x = torch.randn(4, 11)
    out, expected = ds(x), ref(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    _grads_equal(ds.weight.grad, ref.weight.grad, (slice(None), slice(0, 11)))


def test_linear_output_slice():
    ds = DSLinear(6, 9)
    out = ds(torch.randn(2, 4), out_features=5)
    assert out.shape == (2, 5)


def test_slice_shares_storage_without_copy(monkeypatch):
    """The weight handed to the kernel is a view of the stored parameter."""
    conv = DSConv2d(8, 8, 3)
    seen = {}
    real_conv2d = torch.nn.functional.conv2d

    def spy(x, weight, *args):
        seen['ptr'] = weight.untyped_storage().data_ptr()
        seen['base'] = weight._base
        return real_conv2d(x, weight, *args)

    monkeypatch.setattr(torch.nn.functional, 'conv2d', spy)
    conv(torch.randn(1, 5, 6, 6), 4)
    assert seen['ptr'] == conv.weight.untyped_storage().data_ptr()
    assert seen['base'] is conv.weight

    lin = DSLinear(8, 4)
    real_linear = torch.nn.functional.linear

    def spy_linear(x, weight, bias=None):
        seen['lin'] = weight.untyped_storage().data_ptr()
        return real_linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, 'linear', spy_linear)
    lin(torch.randn(2, 3))
    assert seen['lin'] == lin.weight.untyped_storage().data_ptr()


@pytest.mark.parametrize('training', [True, False])
def test_batchnorm_matches_plain_batchnorm(training):
    torch.manual_seed(0)
    ds = DSBatchNorm2d(10, num_subnets=3)
    with torch.no_grad():
        ds.weight.uniform_(0.5, 1.5)
        ds.bias.uniform_(-1, 1)
        ds.running_mean[1].uniform_(-1, 1)
        ds.running_var[1].uniform_(0.5, 2)
    ref = nn.BatchNorm2d(6)
    with torch.no_grad():
        ref.weight.copy_(ds.weight[:6])
        ref.bias.copy_(ds.bias[:6])
        ref.running_mean.copy_(ds.running_mean[1, :6])
        ref.running_var.copy_(ds.running_var[1, :6])
    ds.train(training)
    ref.train(training)
    x = torch.randn(4, 6, 5, 5)
    x_ref = x.clone().requires_grad_()
    x.requires_grad_()
    out, expected = ds(x, 1), ref(x_ref)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    _grads_equal(ds.weight.grad, ref.weight.grad, slice(0, 6))
    torch.testing.assert_close(ds.running_mean[1, :6], ref.running_mean)
    torch.testing.assert_close(ds.running_var[1, :6], ref.running_var)


def test_batchnorm_statistics_are_private_per_subnet():
    bn = DSBatchNorm2d(8, num_subnets=3).train()
    before = bn.running_mean.clone(), bn.running_var.clone()
    bn(torch.randn(4, 8, 3, 3) + 5, 2)
    changed = (bn.running_mean != before[0]).any(1)
    assert changed.tolist() == [False, False, True]
    assert bn.num_batches_tracked.tolist() == [0, 0, 1]
    # affine parameters are shared: subnet 0 sees the same gamma
    with torch.no_grad():
        bn.weight.fill_(2.0)
    bn.eval()
    out = bn(torch.ones(1, 4, 1, 1), 0)
    torch.testing.assert_close(out, torch.full_like(out, 2.0 / (1 + 1e-5)**0.5))


def test_cumulative_stats_average_every_batch_equally():
    bn = DSBatchNorm2d(4, num_subnets=2).train()
    batches = [torch.randn(8, 4, 2, 2) * (i + 1) + i for i in range(3)]
    bn.reset_subnet_stats(0)
    with cumulative_bn_stats(bn):
        for b in batches:
            bn(b, 0)
    assert bn.momentum == 0.1  # restored
    expected = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean[0], expected)
    torch.testing.assert_close(bn.running_mean[1], torch.zeros(4))


def test_squeeze_excite_slices_both_sides():
    torch.manual_seed(0)
    se = DSSqueezeExcite(12, 0.25)
    assert se.reduce_channels == 3
    x = torch.randn(2, 7, 4, 4)
    reduce = nn.Conv2d(7, 3, 1)
    expand = nn.Conv2d(3, 7, 1)
    with torch.no_grad():
        reduce.weight.copy_(se.conv_reduce.weight[:, :7])
        reduce.bias.copy_(se.conv_reduce.bias)
        expand.weight.copy_(se.conv_expand.weight[:7])
        expand.bias.copy_(se.conv_expand.bias[:7])
    s = torch.relu(reduce(x.mean((2, 3), keepdim=True)))
    torch.testing.assert_close(se(x), x * torch.sigmoid(expand(s)))


@pytest.mark.parametrize('make,x,match', [
    (lambda: DSConv2d(4, 4, 3), torch.randn(1, 6, 4, 4), 'in_channels=6'),
    (lambda: DSLinear(4, 4), torch.randn(1, 5), 'in_features=5'),
    (lambda: DSConv2d(4, 4, 3, group_channels=2), torch.randn(1, 3, 4, 4),
     'multiple of the group width 2'),
])
def test_width_errors_name_the_field(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


def test_conv_output_wider_than_stored_fails():
    with pytest.raises(ValueError, match=r'out_channels=9 is outside .*1..8'):
        DSConv2d(4, 8, 1)(torch.randn(1, 4, 2, 2), 9)
