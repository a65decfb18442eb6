# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ViT: idle slicing equals a plain transformer, mmpretrain's ViT at full
width, MAdds by the per-block formula, masked routing equals slicing."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from dsnet_mm.analysis import count_complexity
from dsnet_mm.converters import convert_mmpretrain_vit
from dsnet_mm.models.backbones import DSViT
from dsnet_mm.models.routing import MaskedRouting
from dsnet_mm.ops import DSLayerNorm, inference_cache
from test_vit_ops import plain_attention, plain_layer_norm, plain_mlp

# 16x16 images, patch 4: 16 patches + the class token; head dim 8
ARCH = dict(embed_dims=32, num_layers=3, num_heads=4, feedforward_channels=64)
LADDER = dict(smallest=dict(embed=16, heads=2, mlp=16),
              widest=dict(embed=32, heads=4, mlp=64), num=3)
# a non-uniform sub-network
MIXED = {'blocks.0.embed': 32, 'blocks.0.heads': 4, 'blocks.0.mlp': 64,
         'blocks.1.embed': 12, 'blocks.1.heads': 1, 'blocks.1.mlp': 40,
         'blocks.2.embed': 24, 'blocks.2.heads': 3, 'blocks.2.mlp': 8}


def tiny(**kwargs) -> DSViT:
    torch.manual_seed(0)
    kwargs.setdefault('subnets', LADDER)
    model = DSViT(arch=ARCH, img_size=16, patch_size=4, **kwargs)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('ln1.weight') or name.endswith('ln2.weight'):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.2)
    return model.eval()


def images(n: int = 2) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(n, 3, 16, 16)


def plain_forward(model: DSViT, spec, x: torch.Tensor) -> torch.Tensor:
    """The sub-network from plain torch ops holding the sliced weights:
    idle slicing written out (class-token output)."""
    tokens, _ = model.patch_embed(x)
    cls = model.cls_token.expand(x.shape[0], -1, -1)
    tokens = torch.cat([cls, tokens], 1) + model.pos_embed
    for layer in model.layers:
        d, h, m = (spec[g] for g in layer.groups)
        a = tokens[..., :d]
        if h:
            a = a + plain_attention(layer.attn, plain_layer_norm(
                layer.ln1, a), h)
        if m:
            a = a + plain_mlp(layer.ffn, plain_layer_norm(layer.ln2, a), m)
        tokens = torch.cat([a, tokens[..., d:]], -1)
    if model.idle_head:
        tokens = tokens[..., :spec[model.layers[-1].groups[0]]]
    return plain_layer_norm(model.ln1, tokens)[:, 0]


def block_madds(n: int, d: int, h: int, m: int, head_dims: int) -> int:
    """The per-block formula of docs/reference/dsnet_pp.md, "DS-ViT"."""
    return (n * d * 3 * head_dims * h + 2 * h * n * n * head_dims +
            n * head_dims * h * d + 2 * n * d * m)


# --- full width: mmpretrain's VisionTransformer ---------------------------
def test_full_width_deit_small_is_mmpretrain_vit():
    torch.manual_seed(0)
    ref = VisionTransformer(arch='deit-small')
    ref.eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.02)
        for name, p in ref.named_parameters():
            if 'ln' in name and name.endswith('weight'):
                p.uniform_(0.5, 1.5)
    ds = DSViT(arch='deit-small').eval()
    ds.load_state_dict(convert_mmpretrain_vit(ref.state_dict(), ds, ''))
    assert sum(p.numel() for p in ds.parameters()) == \
        sum(p.numel() for p in ref.parameters()) == 21_665_664
    x = torch.zeros(1, 3, 224, 224)
    cost = count_complexity(ds, lambda: ds(x))
    assert cost == count_complexity(ref, lambda: ref(x))
    n = 197
    assert cost['madds'] == 196 * 384 * 3 * 16 * 16 + 12 * block_madds(
        n, 384, 6, 1536, 64) == 4_598_498_304
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (ds(x)[0] - ref(x)[0]).abs().max()
    assert diff < 1e-5


def test_converter_names_keys_without_a_place():
    ds = tiny(subnets=None)
    state = ds.state_dict()  # mmpretrain's names
    head = dict(weight=torch.zeros(10, 32), bias=torch.zeros(10))
    classifier = {f'backbone.{k}': v for k, v in state.items()}
    classifier.update({f'head.layers.head.{k}': v for k, v in head.items()})
    out = convert_mmpretrain_vit(classifier, ds)
    assert 'backbone.layers.0.ffn.layers.0.0.weight' in out
    assert set(k for k in out if k.startswith('head.')) == {
        'head.fc.weight', 'head.fc.bias'}
    with pytest.raises(ValueError, match='dist_token'):
        convert_mmpretrain_vit(
            dict(state, dist_token=torch.zeros(1, 1, 32)), ds)


# --- slicing equals a plain transformer ------------------------------------
@pytest.mark.parametrize('idle_head', [False, True])
def test_subnet_matches_plain_transformer(idle_head):
    model = tiny(subnets=[MIXED], idle_head=idle_head)
    x = images()
    for key in (0, 'largest'):
        spec = model.set_subnet(key)
        with torch.no_grad():
            out, = model(x)
            ref = plain_forward(model, spec, x)
        torch.testing.assert_close(out, ref)
    assert out.shape == (2, 32)


def test_idle_head_outputs_the_last_blocks_active_channels():
    model = tiny(subnets=[MIXED], idle_head=True)
    model.set_subnet(0)
    with torch.no_grad():
        out, = model(images())
    assert out.shape == (2, MIXED['blocks.2.embed'])


def test_idle_channels_pass_through_a_block_bit_identical():
    model = tiny()
    spec = model.set_subnet(0)
    layer = model.layers[1]
    d = spec['blocks.1.embed']
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        y = layer(x, spec)
    assert torch.equal(y[..., d:], x[..., d:])
    assert not torch.equal(y[..., :d], x[..., :d])
    # per-sample masking: each sample's idle channels, up to the widest
    routing = MaskedRouting(model.space.subnets,
                            F.one_hot(torch.tensor([0, 1]), 3).float())
    with torch.no_grad():
        y = layer(x, routing)
    for b, k in enumerate((0, 1)):
        d = model.space[k]['blocks.1.embed']
        assert torch.equal(y[b, :, d:], x[b, :, d:])


def test_a_branch_at_width_zero_is_an_identity():
    skip_attn = dict(MIXED, **{'blocks.1.heads': 0})
    skip_both = dict(skip_attn, **{'blocks.1.mlp': 0})
    model = tiny(subnets=[skip_both, skip_attn], idle_branches=True)
    layer = model.layers[1]
    x = torch.randn(2, 17, 32)
    with torch.no_grad():
        assert torch.equal(layer(x, model.space[0]), x)
        d, m = MIXED['blocks.1.embed'], MIXED['blocks.1.mlp']
        a = x[..., :d]
        ref = a + plain_mlp(layer.ffn, plain_layer_norm(layer.ln2, a), m)
        torch.testing.assert_close(layer(x, model.space[1])[..., :d], ref)
        for key in (0, 1):
            spec = model.set_subnet(key)
            torch.testing.assert_close(model(images())[0],
                                       plain_forward(model, spec, images()))


def test_zero_width_needs_idle_branches():
    with pytest.raises(ValueError, match=r'blocks\.1\.heads must be an int '
                       r'in 1\.\.4, got 0'):
        tiny(subnets=[dict(MIXED, **{'blocks.1.heads': 0})])
    with pytest.raises(ValueError, match=r'blocks\.1\.heads must be an int '
                       r'in 0\.\.4, got 5'):
        tiny(subnets=[dict(MIXED, **{'blocks.1.heads': 5})],
             idle_branches=True)


# --- masked routing equals slicing -----------------------------------------
@pytest.mark.parametrize('idle_head', [False, True])
@pytest.mark.parametrize('out_type', ['cls_token', 'avg_featmap'])
def test_masked_routing_equals_slicing_per_route(idle_head, out_type):
    skip = dict(MIXED, **{'blocks.2.heads': 0})
    widest = {g: w for g, w in tiny().space.largest.items()}
    model = tiny(subnets=[skip, MIXED, widest], idle_head=idle_head,
                 idle_branches=True, out_type=out_type)
    window = model.space.subnets
    x = images(1)
    for k, spec in enumerate(window):
        weights = F.one_hot(torch.tensor([k]), 3).float()
        routing = MaskedRouting(window, weights)
        with torch.no_grad():
            masked, = model.forward_spec(x, routing)
            sliced, = model.forward_spec(x, spec)
        width = sliced.shape[-1]
        torch.testing.assert_close(masked[:, :width], sliced)
        assert torch.count_nonzero(masked[:, width:]) == 0


def test_masked_routing_routes_each_sample_of_a_batch():
    model = tiny(idle_head=True, out_type='raw')
    window = model.space.subnets
    choice = torch.tensor([2, 0, 1])
    routing = MaskedRouting(window, F.one_hot(choice, 3).float())
    x = images(3)
    with torch.no_grad():
        masked, = model.forward_spec(x, routing)
        for b, k in enumerate(choice.tolist()):
            sliced, = model.forward_spec(x[b:b + 1], window[k])
            width = sliced.shape[-1]
            torch.testing.assert_close(masked[b:b + 1, :, :width], sliced)
            assert torch.count_nonzero(masked[b, :, width:]) == 0


# --- MAdds -------------------------------------------------------------------
@pytest.mark.parametrize('subnet', ['mixed', 'skip'])
def test_subnet_madds_follow_the_per_block_formula(subnet):
    spec = MIXED if subnet == 'mixed' else dict(
        MIXED, **{'blocks.1.heads': 0, 'blocks.2.mlp': 0})
    model = tiny(subnets=[spec], idle_branches=True)
    model.set_subnet(0)
    cost = count_complexity(model, lambda: model(images(1)))
    n = 17
    expected = 16 * 32 * 3 * 4 * 4  # the patch embedding
    for i in range(3):
        expected += block_madds(n, *(spec[f'blocks.{i}.{dim}']
                                     for dim in ('embed', 'heads', 'mlp')), 8)
    assert cost['madds'] == expected


# --- sub-network configs ----------------------------------------------------
def test_per_dimension_ladder_slices_every_block_from_fixed_blocks_on():
    model = tiny(fixed_blocks=1)
    assert len(model.space) == 3
    assert dict(model.space[0]) == {
        'blocks.0.embed': 32, 'blocks.0.heads': 4, 'blocks.0.mlp': 64,
        'blocks.1.embed': 16, 'blocks.1.heads': 2, 'blocks.1.mlp': 16,
        'blocks.2.embed': 16, 'blocks.2.heads': 2, 'blocks.2.mlp': 16}
    assert model.space[1]['blocks.2.heads'] == 3
    assert model.space[1]['blocks.2.mlp'] == 40


def test_per_dimension_list_and_full_maps_mix():
    model = tiny(subnets=[dict(embed=8, heads=1, mlp=8), MIXED])
    assert model.space[0]['blocks.1.embed'] == 8
    assert dict(model.space[1]) == MIXED


def test_default_subnets_of_deit_small_are_the_spec_ladder():
    space = DSViT(arch='deit-small', fixed_blocks=4).space
    assert [(s['blocks.11.embed'], s['blocks.11.heads'], s['blocks.11.mlp'])
            for s in space] == [(192, 3, 384), (256, 4, 768),
                                (320, 5, 1152), (384, 6, 1536)]
    assert {s['blocks.3.embed'] for s in space} == {384}


def test_digits_arch_runs_on_32x32_images():
    model = DSViT(arch='digits', img_size=32, patch_size=4,
                  out_type='featmap', out_indices=(1, -1)).eval()
    model.set_subnet(0)
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape for o in outs] == [(2, 64, 8, 8)] * 2


def test_other_input_sizes_interpolate_the_position_embedding():
    model = tiny()
    with torch.no_grad():
        out, = model(torch.randn(1, 3, 24, 24))
    assert out.shape == (1, 32)


def test_default_init_is_deits():
    model = DSViT(arch='digits', img_size=32, patch_size=4)
    model.init_weights()
    qkv = model.layers[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(qkv.bias) == 0
    assert 0 < model.pos_embed.std().item() < 0.03


def test_registered_and_cached_inference_matches():
    model = MODELS.build(dict(type='DSViT', arch=ARCH, img_size=16,
                              patch_size=4, subnets=LADDER))
    model.eval()
    model.set_subnet(1)
    x = images()
    with torch.no_grad():
        expected, = model(x)
        with inference_cache(model):
            first, = model(x)
            second, = model(x)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)


def test_training_reaches_only_the_sliced_weights():
    model = tiny(drop_path_rate=0.1).train()
    spec = model.set_subnet(0)
    model(images())[0].sum().backward()
    qkv = model.layers[2].attn.qkv.weight.grad.view(3, 4, 8, 32)
    h, d = spec['blocks.2.heads'], spec['blocks.2.embed']
    assert torch.count_nonzero(qkv[:, h:]) == 0
    assert torch.count_nonzero(qkv[..., d:]) == 0
    assert torch.count_nonzero(qkv[:, :h, :, :d]) > 0
    assert model.ln1.weight.grad.shape == (32, )


def test_frozen_stages_freeze_embeddings_and_blocks():
    model = tiny(frozen_stages=3).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert 'cls_token' in frozen and 'pos_embed' in frozen
    assert 'ln1.weight' in frozen and 'layers.2.ffn.layers.1.bias' in frozen
    assert not model.layers[0].training
    assert 'patch_embed.projection.weight' in frozen
    assert not any(n.startswith('layers.3.') for n in frozen)
    # as mmpretrain's VisionTransformer: 0 freezes nothing
    model = tiny(frozen_stages=0).train()
    assert all(p.requires_grad for p in model.parameters())


def test_final_norm_is_a_sliced_layer_norm():
    assert isinstance(tiny().ln1, DSLayerNorm)
    assert not hasattr(tiny(final_norm=False), 'ln1')


# --- bad configs -------------------------------------------------------------
@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='deit-huge'), r"arch='deit-huge' is not one of .*'deit-small'"),
    (dict(arch=dict(ARCH, num_heads=5)),
     r'num_heads=5 must divide embed_dims=32 .*allowed: \[1, 2, 4, 8'),
    (dict(arch=dict(ARCH, depth=3)), r'arch must be one of .* keys'),
    (dict(subnets=[dict(MIXED, **{'blocks.1.mlp': 65})]),
     r'subnets\[0\]\.blocks\.1\.mlp must be an int in 1\.\.64, got 65'),
    (dict(subnets=[dict(embed=40, heads=2, mlp=8)]),
     r'blocks\.0\.embed must be an int in 1\.\.32, got 40'),
    (dict(subnets=[dict(embed=8, heads=2)]),
     r"subnets\[0\] as per-dimension widths must set exactly "
     r"\['embed', 'heads', 'mlp'\]"),
    (dict(subnets=[MIXED], fixed_blocks=2),
     r'blocks\.1\.embed=12, but blocks 0\.\.1 are fixed .* must be 32'),
    (dict(fixed_blocks=4), r'fixed_blocks must be an int in 0\.\.3'),
    (dict(out_type='patch'), r"out_type='patch' is not one of"),
    (dict(out_indices=(3, )), r'out_indices\[0\] must be an int in -3\.\.2'),
    (dict(norm_cfg=dict(type='BN')), r"norm_cfg\.type='BN' is not one of"),
])
def test_bad_configs_fail_at_build_naming_the_field(kwargs, match):
    kwargs.setdefault('arch', ARCH)
    kwargs.setdefault('subnets', LADDER)
    with pytest.raises(ValueError, match=match):
        DSViT(img_size=16, patch_size=4, **kwargs)
