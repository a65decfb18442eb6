# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sliced ViT ops equal plain torch ops holding the sliced weights; their
masked forms equal the sliced ones route by route."""
import math

import pytest
import torch
import torch.nn as nn

from dsnet_mm.analysis import count_complexity
from dsnet_mm.ops import (DSMLP, DSLayerNorm, DSMultiheadAttention,
                          inference_cache)

D, H, M = 32, 4, 48  # stored widths; head dim 8
HD = D // H


def _grads_equal(ds_grad, ref_grad, slices):
    """The used slice matches the reference; everything else is zero."""
    torch.testing.assert_close(ds_grad[slices], ref_grad)
    rest = ds_grad.clone()
    rest[slices] = 0
    assert torch.count_nonzero(rest) == 0


def plain_layer_norm(ds: DSLayerNorm, x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    ref = nn.LayerNorm(d, eps=ds.eps, dtype=x.dtype)
    with torch.no_grad():
        ref.weight.copy_(ds.weight[:d])
        ref.bias.copy_(ds.bias[:d])
    return ref(x)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    ref = nn.Linear(weight.shape[1], weight.shape[0], dtype=weight.dtype)
    with torch.no_grad():
        ref.weight.copy_(weight)
        ref.bias.copy_(bias)
    return ref


def plain_attention_layers(ds: DSMultiheadAttention, d: int, h: int):
    """nn.Linear q, k, v and proj holding the slices of ``h`` heads at
    width ``d``."""
    rows = h * ds.head_dims
    w = ds.qkv.weight.view(3, -1, ds.embed_dims)
    b = ds.qkv.bias.view(3, -1)
    qkv = [plain_linear(w[j, :rows, :d], b[j, :rows]) for j in range(3)]
    proj = plain_linear(ds.proj.weight[:d, :rows], ds.proj.bias[:d])
    return qkv, proj


def hand_attention(qkv, proj, x: torch.Tensor, head_dims: int):
    """softmax(q k^T / sqrt(head_dims)) v per head, then the projection."""
    b, n, _ = x.shape
    q, k, v = (lin(x).reshape(b, n, -1, head_dims).transpose(1, 2)
               for lin in qkv)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(head_dims)).softmax(-1)
    return proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


def plain_attention(ds: DSMultiheadAttention, x: torch.Tensor,
                    h: int) -> torch.Tensor:
    qkv, proj = plain_attention_layers(ds, x.shape[-1], h)
    return hand_attention(qkv, proj, x, ds.head_dims)


def plain_mlp(ds: DSMLP, x: torch.Tensor, m: int) -> torch.Tensor:
    d = x.shape[-1]
    fc1 = plain_linear(ds.fc1.weight[:m, :d], ds.fc1.bias[:m])
    fc2 = plain_linear(ds.fc2.weight[:d, :m], ds.fc2.bias[:d])
    return fc2(nn.functional.gelu(fc1(x)))


def _layer_norm() -> DSLayerNorm:
    torch.manual_seed(0)
    ln = DSLayerNorm(D)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    return ln


def _attention() -> DSMultiheadAttention:
    torch.manual_seed(0)
    attn = DSMultiheadAttention(D, H)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn


def _mlp() -> DSMLP:
    torch.manual_seed(0)
    mlp = DSMLP(D, M)
    with torch.no_grad():
        for p in mlp.parameters():
            p.normal_(0, 0.3)
    return mlp


def _mask(widths, width: int) -> torch.Tensor:
    """``[B, width]``: ones for the first ``widths[b]`` entries of row b."""
    return (torch.arange(width)[None] < torch.tensor(widths)[:, None]).float()


def _padded(x: torch.Tensor, width: int) -> torch.Tensor:
    return nn.functional.pad(x, (0, width - x.shape[-1]))


# --- LayerNorm ----------------------------------------------------------
@pytest.mark.parametrize('d', [7, D])
def test_layer_norm_matches_plain_layer_norm(d):
    ln = _layer_norm()
    x = torch.randn(2, 5, d, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, ref = ln(x), plain_layer_norm(ln, x_ref)
    torch.testing.assert_close(out, ref)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    ref_ln = nn.LayerNorm(d, eps=ln.eps)
    with torch.no_grad():
        ref_ln.weight.copy_(ln.weight[:d])
        ref_ln.bias.copy_(ln.bias[:d])
    ref_ln(x_ref).pow(2).sum().backward()
    _grads_equal(ln.weight.grad, ref_ln.weight.grad, slice(0, d))
    _grads_equal(ln.bias.grad, ref_ln.bias.grad, slice(0, d))


def test_masked_layer_norm_takes_statistics_over_active_channels_only():
    ln = _layer_norm()
    widths = [5, D, 12]
    x = torch.randn(3, 4, D)
    out = ln(x, _mask(widths, D))
    for b, d in enumerate(widths):
        ref = plain_layer_norm(ln, x[b:b + 1, :, :d])
        torch.testing.assert_close(out[b:b + 1], _padded(ref, D))


def test_layer_norm_rejects_a_width_above_the_stored_one():
    with pytest.raises(ValueError, match='num_features=33 .* 1..32'):
        _layer_norm()(torch.randn(1, 2, D + 1))


# --- attention ----------------------------------------------------------
@pytest.mark.parametrize('d,h', [(20, 2), (D, 3), (24, H), (D, H)])
def test_attention_matches_hand_written_attention(d, h):
    # float64: the fused attention kernel and the hand-written one round
    # differently in float32
    attn = _attention().double()
    x = torch.randn(2, 6, d, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    qkv, proj = plain_attention_layers(attn, d, h)
    out = attn(x, h)
    ref = hand_attention(qkv, proj, x_ref, HD)
    assert out.shape == (2, 6, d)
    torch.testing.assert_close(out, ref)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    rows = h * HD
    w_grad = attn.qkv.weight.grad.view(3, -1, D)
    b_grad = attn.qkv.bias.grad.view(3, -1)
    for j, lin in enumerate(qkv):
        torch.testing.assert_close(w_grad[j, :rows, :d], lin.weight.grad)
        torch.testing.assert_close(b_grad[j, :rows], lin.bias.grad)
    assert torch.count_nonzero(w_grad[:, rows:]) == 0
    assert torch.count_nonzero(w_grad[:, :, d:]) == 0
    assert torch.count_nonzero(b_grad[:, rows:]) == 0
    _grads_equal(attn.proj.weight.grad, proj.weight.grad,
                 (slice(0, d), slice(0, rows)))
    _grads_equal(attn.proj.bias.grad, proj.bias.grad, slice(0, d))


@pytest.mark.parametrize('d,h', [(8, 1), (20, 2), (D, 3), (24, H)])
def test_masked_attention_equals_sliced_attention_per_route(d, h):
    attn = _attention()
    x = torch.randn(1, 6, D)
    out = attn(x, H, head_mask=_mask([h], H), mask=_mask([d], D))
    torch.testing.assert_close(out, _padded(attn(x[..., :d], h), D))


def test_masked_branches_at_width_zero_give_no_output():
    attn, mlp = _attention(), _mlp()
    x = torch.randn(2, 5, D)
    widths = _mask([D, D], D)
    out = attn(x, H, _mask([0, 2], H), widths)
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[1])
    out = mlp(x, M, _mask([0, 3], M), widths)
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[1])


def test_masked_attention_routes_each_sample_of_a_batch():
    attn = _attention()
    routes = [(8, 1), (D, H), (20, 3)]
    x = torch.randn(len(routes), 5, D)
    out = attn(x, H, _mask([h for _, h in routes], H),
               _mask([d for d, _ in routes], D))
    for b, (d, h) in enumerate(routes):
        ref = attn(x[b:b + 1, :, :d], h)
        torch.testing.assert_close(out[b:b + 1], _padded(ref, D))


def test_head_count_must_divide_the_width():
    with pytest.raises(ValueError, match=r'num_heads=5 must divide '
                       r'embed_dims=32 .*allowed: \[1, 2, 4, 8, 16, 32\]'):
        DSMultiheadAttention(D, 5)


def test_attention_rejects_more_heads_than_stored():
    with pytest.raises(ValueError, match='heads=5 .* 1..4'):
        _attention()(torch.randn(1, 3, D), H + 1)


# --- MLP ------------------------------------------------------------------
@pytest.mark.parametrize('d,m', [(12, 20), (D, 7), (D, M)])
def test_mlp_matches_plain_mlp(d, m):
    mlp = _mlp()
    x = torch.randn(2, 5, d, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    fc1 = plain_linear(mlp.fc1.weight[:m, :d], mlp.fc1.bias[:m])
    fc2 = plain_linear(mlp.fc2.weight[:d, :m], mlp.fc2.bias[:d])
    out = mlp(x, m)
    ref = fc2(nn.functional.gelu(fc1(x_ref)))
    torch.testing.assert_close(out, ref)
    out.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    _grads_equal(mlp.fc1.weight.grad, fc1.weight.grad,
                 (slice(0, m), slice(0, d)))
    _grads_equal(mlp.fc1.bias.grad, fc1.bias.grad, slice(0, m))
    _grads_equal(mlp.fc2.weight.grad, fc2.weight.grad,
                 (slice(0, d), slice(0, m)))
    _grads_equal(mlp.fc2.bias.grad, fc2.bias.grad, slice(0, d))


@pytest.mark.parametrize('d,m', [(8, 5), (20, M), (D, 30)])
def test_masked_mlp_equals_sliced_mlp_per_route(d, m):
    mlp = _mlp()
    x = torch.randn(1, 5, D)
    out = mlp(x, M, hidden_mask=_mask([m], M), mask=_mask([d], D))
    torch.testing.assert_close(out, _padded(mlp(x[..., :d], m), D))


# --- inference cache and counting ----------------------------------------
def test_cached_inference_gives_the_sliced_outputs():
    ln, attn, mlp = _layer_norm(), _attention(), _mlp()
    block = nn.ModuleList([ln, attn, mlp]).eval()
    x = torch.randn(2, 5, 20)

    def run():
        y = ln(x)
        return attn(y, 3), mlp(y, 30)

    with torch.no_grad():
        expected = run()
        with inference_cache(block):
            first, second = run(), run()
    for got in (first, second):
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b)


def test_cached_qkv_weight_is_one_contiguous_matrix():
    attn = _attention().eval()
    with torch.no_grad(), inference_cache(attn):
        attn(torch.randn(1, 3, 20), 2)
        (_, (weight, bias)), = attn.qkv._cache.values()
        assert weight.shape == (3 * 2 * HD, 20) and weight.is_contiguous()
        expected = attn.qkv.weight.view(3, H * HD, D)[:, :2 * HD, :20]
        torch.testing.assert_close(weight, expected.reshape(-1, 20))
        assert bias.shape == (3 * 2 * HD, )


@pytest.mark.parametrize('d,h', [(20, 2), (D, H)])
def test_attention_madds_count_projections_and_both_matmuls(d, h):
    attn = _attention()
    n = 6
    cost = count_complexity(attn, lambda: attn(torch.zeros(2, n, d), h))
    assert cost['madds'] == (n * d * 3 * HD * h + 2 * h * n * n * HD +
                             n * HD * h * d)
    assert cost['params'] == 3 * h * HD * (d + 1) + d * h * HD + d
