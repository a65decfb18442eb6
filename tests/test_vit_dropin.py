# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DSViT as a drop-in for mmpretrain's VisionTransformer: the same
arguments, names and conventions, and checkpoints of the static network
that load whole or fail."""
import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS

from dsnet_mm.models.backbones import DSViT

SMALL = dict(embed_dims=32, num_layers=3, num_heads=4,
             feedforward_channels=64)


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'ln' in name and name.endswith('weight'):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0, 0.05)
    model.eval()  # mmpretrain's backbones return None from train()
    return model


def pair(**kwargs):
    """mmpretrain's model with random weights and DSViT with the same
    arguments holding them (loaded by ``load_state_dict``)."""
    ref = randomised(VisionTransformer(**kwargs))
    ds = DSViT(**kwargs).eval()
    ds.load_state_dict(ref.state_dict())
    return ref, ds


def assert_same_outputs(ref, ds, x, atol=1e-5):
    with torch.no_grad():
        outs_ref, outs_ds = ref(x), ds(x)
    assert len(outs_ref) == len(outs_ds)
    for a, b in zip(outs_ref, outs_ds):
        assert a.shape == b.shape
        assert (a - b).abs().max() < atol


# --- DeiT-S checkpoints of the static network ------------------------------
@pytest.fixture(scope='module')
def deit_small(tmp_path_factory):
    ref = randomised(VisionTransformer(arch='deit-small'))
    path = tmp_path_factory.mktemp('deit') / 'deit_small.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in
                                ref.state_dict().items()}), path)
    return ref, str(path)


def test_pretrained_deit_small_loads_whole_and_matches(deit_small):
    ref, path = deit_small
    ds = DSViT(arch='deit-small', init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.'))
    ds.init_weights()
    ds.eval()
    # the MLPs too (mmpretrain's names ffn.layers.0.0 / ffn.layers.1)
    assert torch.equal(ds.layers[5].ffn.fc2.weight,
                       ref.layers[5].ffn.layers[1].weight)
    assert_same_outputs(ref, ds, torch.randn(2, 3, 224, 224))


def test_load_from_a_static_classifier_checkpoint(deit_small):
    ref, path = deit_small
    head = dict(type='LinearClsHead', num_classes=10, in_channels=384)
    model = MODELS.build(dict(
        type='ImageClassifier', head=head,
        backbone=dict(type='DSViT', arch='deit-small'),
        init_cfg=None)).eval()
    # what mmengine's load_from does (strict=False); the checkpoint has no
    # head, which the classifier logs as missing
    load_checkpoint(model, path, map_location='cpu', strict=False)
    assert_same_outputs(ref, model.backbone, torch.randn(1, 3, 224, 224))


def test_384px_from_224px_weights_as_mmpretrain(deit_small):
    _, path = deit_small
    init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    ref = VisionTransformer(arch='deit-small', img_size=384,
                            init_cfg=init_cfg)
    ref.init_weights()
    ds = DSViT(arch='deit-small', img_size=384, init_cfg=init_cfg)
    ds.init_weights()
    assert ds.pos_embed.shape == (1, 577, 384)
    assert torch.equal(ds.pos_embed, ref.pos_embed)
    x = torch.randn(1, 3, 384, 384)
    ref.eval()
    assert_same_outputs(ref, ds.eval(), x)
    # and through load_from
    model = MODELS.build(dict(
        type='ImageClassifier',
        head=dict(type='LinearClsHead', num_classes=10, in_channels=384),
        backbone=dict(type='DSViT', arch='deit-small', img_size=384)))
    load_checkpoint(model, path, map_location='cpu', strict=False)
    assert torch.equal(model.backbone.pos_embed, ref.pos_embed)


def _tiny_checkpoint(tmp_path, edit):
    ref = randomised(VisionTransformer(arch=SMALL, img_size=16,
                                       patch_size=4))
    state = ref.state_dict()
    edit(state)
    path = tmp_path / 'ckpt.pth'
    torch.save({f'backbone.{k}': v for k, v in state.items()}, path)
    return str(path)


@pytest.mark.parametrize('edit,match', [
    (lambda s: s.pop('layers.1.ffn.layers.1.bias'),
     r'missing .*\(1\): layers\.1\.ffn\.layers\.1\.bias'),
    (lambda s: s.update(dist_token=torch.zeros(1, 1, 32)),
     r'unexpected .*\(1\): dist_token'),
    (lambda s: s.update({'ln1.weight': torch.ones(16)}),
     r'ln1\.weight: checkpoint \(16,\) vs model \(32,\)'),
])
def test_unmatched_keys_fail_by_pretrained_and_load_from(
        tmp_path, edit, match):
    path = _tiny_checkpoint(tmp_path, edit)
    ds = DSViT(arch=SMALL, img_size=16, patch_size=4, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone'))
    with pytest.raises(ValueError, match=match):
        ds.init_weights()
    model = MODELS.build(dict(
        type='ImageClassifier',
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32),
        backbone=dict(type='DSViT', arch=SMALL, img_size=16, patch_size=4)))
    with pytest.raises(ValueError, match=match):
        load_checkpoint(model, path, map_location='cpu', strict=False)


def test_unmatched_keys_lists_prefixes_that_may_stay_unmatched(tmp_path):
    # a gate the static network does not have
    path = _tiny_checkpoint(tmp_path, lambda s: None)
    kwargs = dict(arch=SMALL, img_size=16, patch_size=4,
                  subnets=[dict(embed=32, heads=4, mlp=64)],
                  gate=dict(block=0, window=(0, 1)))
    init_cfg = dict(type='Pretrained', checkpoint=path, prefix='backbone.')
    with pytest.raises(ValueError, match=r'missing.*gate\.'):
        DSViT(init_cfg=init_cfg, **kwargs).init_weights()
    DSViT(init_cfg=init_cfg, unmatched_keys=['gate.'], **kwargs
          ).init_weights()
    DSViT(init_cfg=dict(init_cfg, unmatched_keys=['gate.']), **kwargs
          ).init_weights()


def test_earlier_dsvit_mlp_keys_still_load():
    _, ds = pair(arch=SMALL, img_size=16, patch_size=4)
    old = {k.replace('ffn.layers.0.0.', 'ffn.fc1.').replace(
        'ffn.layers.1.', 'ffn.fc2.'): v for k, v in ds.state_dict().items()}
    fresh = DSViT(arch=SMALL, img_size=16, patch_size=4)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.layers[2].ffn.fc1.weight,
                       ds.layers[2].ffn.fc1.weight)


# --- every argument, with mmpretrain's meaning -------------------------------
@pytest.mark.parametrize('arch', sorted(VisionTransformer.arch_zoo))
def test_every_mmpretrain_arch_builds_with_its_widths(arch):
    widths = VisionTransformer.arch_zoo[arch]
    ds = DSViT(arch=arch.upper(), img_size=32, patch_size=16)
    assert ds.embed_dims == widths['embed_dims']
    assert len(ds.layers) == widths['num_layers']
    assert ds.layers[0].attn.num_heads == widths['num_heads']
    assert ds.layers[0].ffn.hidden_dims == widths['feedforward_channels']


@pytest.mark.parametrize('kwargs', [
    dict(pre_norm=True),
    dict(with_cls_token=False, out_type='avg_featmap'),
    dict(with_cls_token=False, out_type='featmap', out_indices=range(3)),
    dict(out_type='raw', out_indices=[0, -1], final_norm=False),
    dict(layer_scale_init_value=0.1),
    dict(layer_cfgs=dict(act_cfg=dict(type='ReLU'), qkv_bias=False)),
    dict(norm_cfg=dict(type='LN'), patch_cfg=dict(norm_cfg=dict(type='LN'))),
    dict(interpolate_mode='bilinear', img_size=20),
])
def test_full_width_equals_vision_transformer(kwargs):
    kwargs = dict(dict(arch=SMALL, img_size=16, patch_size=4), **kwargs)
    ref, ds = pair(**kwargs)
    assert_same_outputs(ref, ds, torch.randn(2, 3, 16, 16))


def test_dropout_rates_sit_where_mmpretrain_puts_them():
    ref, ds = pair(arch=SMALL, img_size=16, patch_size=4, drop_rate=0.3,
                   layer_cfgs=dict(attn_drop_rate=0.2))
    layer = ds.layers[1]
    assert ds.drop_after_pos.p == ref.drop_after_pos.p == 0.3
    assert layer.attn.proj_drop.p == ref.layers[1].attn.proj_drop.p
    assert layer.attn.core.attn_drop == ref.layers[1].attn.attn_drop == 0.2
    assert layer.ffn.layers[0][2].p == ref.layers[1].ffn.layers[0][2].p
    assert layer.ffn.layers[2].p == ref.layers[1].ffn.layers[2].p == 0.3
    ds.train()
    with torch.no_grad():
        a, = ds(torch.randn(2, 3, 16, 16))
    ds.eval()  # eval mode: no dropout, mmpretrain's output
    assert_same_outputs(ref, ds, torch.randn(2, 3, 16, 16))


def test_get_layer_depth_is_vision_transformers():
    kwargs = dict(arch=SMALL, img_size=16, patch_size=4, pre_norm=True)
    ref, ds = VisionTransformer(**kwargs), DSViT(**kwargs)
    names = [n for n, _ in ref.named_parameters()]
    assert names == [n for n, _ in ds.named_parameters()]
    for name in names + ['head.fc.weight']:
        full = name if name.startswith('head') else f'backbone.{name}'
        assert ds.get_layer_depth(full, 'backbone.') == \
            ref.get_layer_depth(full, 'backbone.'), name


def test_layer_wise_lr_decay_constructor_builds():
    from mmpretrain.engine.optimizers import \
        LearningRateDecayOptimWrapperConstructor
    model = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='DSViT', arch=SMALL, img_size=16, patch_size=4),
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32)))
    constructor = LearningRateDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
             type='OptimWrapper'), dict(layer_decay_rate=0.5))
    groups = constructor(model).optimizer.param_groups
    lrs = sorted({g['lr'] for g in groups})
    # 3 blocks: depths 0 (embeddings) .. 4 (norm, head)
    assert lrs == pytest.approx([1e-3 * 0.5 ** k for k in range(4, -1, -1)])
    lr = {g['param_name']: g['lr'] for g in groups}
    assert lr['backbone.pos_embed'] == pytest.approx(1e-3 * 0.5 ** 4)
    assert lr['backbone.layers.1.ffn.layers.1.weight'] == \
        pytest.approx(1e-3 * 0.5 ** 2)
    assert lr['head.fc.weight'] == pytest.approx(1e-3)


@pytest.mark.parametrize('frozen_stages', [0, 2, 3])
def test_frozen_stages_freeze_what_mmpretrain_freezes(frozen_stages):
    kwargs = dict(arch=SMALL, img_size=16, patch_size=4, pre_norm=True,
                  frozen_stages=frozen_stages)
    ref, ds = VisionTransformer(**kwargs), DSViT(**kwargs).train()
    ref.train()
    assert [n for n, p in ds.named_parameters() if not p.requires_grad] == \
        [n for n, p in ref.named_parameters() if not p.requires_grad]
    # mmpretrain puts frozen blocks in eval mode at construction only (its
    # train() turns them back); DSViT keeps them in eval mode in training
    assert [i for i, m in enumerate(ds.layers) if not m.training] == \
        list(range(frozen_stages))


def test_with_cp_gives_the_same_gradients():
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        ds = randomised(DSViT(arch=SMALL, img_size=16, patch_size=4,
                              with_cp=with_cp)).train()
        ds(torch.ones(2, 3, 16, 16))[0].pow(2).sum().backward()
        grads.append([p.grad for p in ds.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_init_cfg_layer_kinds_reach_the_ds_layers():
    ds = DSViT(arch=SMALL, img_size=16, patch_size=4, init_cfg=[
        dict(type='Constant', layer='Linear', val=0.5, bias=0.25),
        dict(type='Constant', layer='LayerNorm', val=2., bias=0.)])
    ds.init_weights()
    assert torch.all(ds.layers[0].attn.qkv.weight == 0.5)
    assert torch.all(ds.layers[2].ffn.fc1.bias == 0.25)
    assert torch.all(ds.ln1.weight == 2)
    # DSViT's own initialisation still runs under an init_cfg
    assert 0 < ds.pos_embed.std() < 0.03


@pytest.mark.parametrize('kwargs,match', [
    (dict(layer_cfgs=dict(ffn_type='swiglu_fused')),
     r"layer_cfgs\[0\]\.ffn_type='swiglu_fused' is not supported: .*"
     r"allowed: 'origin'"),
    (dict(layer_cfgs=dict(num_fcs=3)), r'num_fcs=3 .* two linear'),
    (dict(layer_cfgs=dict(num_heads=2)), r'set them in arch'),
    (dict(with_cls_token=False), r"set out_type to 'featmap'"),
    (dict(arch='dinov2-l'), r"arch='dinov2-l' is not one of"),
    (dict(norm_cfg=dict(type='GN')), r"norm_cfg\.type='GN' is not one of"),
    (dict(layer_cfgs=[{}] * 2), r'list of 3 dicts'),
])
def test_refusals_say_why_and_what_to_use(kwargs, match):
    kwargs = dict(dict(arch=SMALL, img_size=16, patch_size=4), **kwargs)
    with pytest.raises(ValueError, match=match):
        DSViT(**kwargs)


# --- where DSViT's convention differs from VisionTransformer's ---------------
# mmpretrain's own tests (tests/test_models/test_backbones/
# test_vision_transformer.py) expect AssertionErrors for a bad arch or
# out_indices and the message 'must be True' for with_cls_token=False with
# out_type='cls_token'; DSViT raises a ValueError naming the field and the
# values allowed (asserts vanish under python -O). The same checks:
@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='unknown'), r"arch='unknown' is not one of \[.*'base'"),
    (dict(arch=dict(embed_dims=32)), r'arch must be one of .* keys'),
    (dict(arch=SMALL, out_indices=[0, 13]),
     r'out_indices\[1\] must be an int in -3\.\.2, got 13'),
    (dict(arch=SMALL, with_cls_token=False), r'with_cls_token=False'),
])
def test_bad_arguments_raise_value_errors_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSViT(img_size=16, patch_size=4, **kwargs)


def test_a_distilled_deit_checkpoint_is_refused_naming_its_token(tmp_path):
    # mmpretrain's test_deit.py runs DistilledVisionTransformer, whose
    # second extra token (dist_token) and pair of outputs a DSViT does not
    # have: its checkpoint fails to load, naming the token
    path = _tiny_checkpoint(
        tmp_path, lambda s: s.update(dist_token=torch.zeros(1, 1, 32)))
    with pytest.raises(ValueError, match='dist_token'):
        DSViT(arch=SMALL, img_size=16, patch_size=4, init_cfg=dict(
            type='Pretrained', checkpoint=path,
            prefix='backbone.')).init_weights()


def test_stochastic_depth_sits_where_mmpretrain_keeps_it():
    kwargs = dict(arch=SMALL, img_size=16, patch_size=4, drop_path_rate=0.2)
    ref, ds = VisionTransformer(**kwargs), DSViT(**kwargs)
    for a, b in zip(ref.layers, ds.layers):
        assert a.attn.out_drop.drop_prob == b.attn.out_drop.drop_prob
        assert a.ffn.dropout_layer.drop_prob == b.ffn.dropout_layer.drop_prob
        assert a.ffn.feedforward_channels == b.ffn.feedforward_channels


@pytest.mark.parametrize('out_type, idle_head', [
    ('cls_token', False), ('cls_token', True), ('featmap', False),
    ('avg_featmap', False)])
def test_out_widths_bound_every_subnets_outputs(out_type, idle_head):
    """What a detector's neck is built for (``out_widths``, the DS
    backbones' contract) holds every sub-network's outputs."""
    ds = DSViT(arch=SMALL, img_size=16, patch_size=4, out_indices=(1, 2),
               out_type=out_type, idle_head=idle_head).eval()
    x = torch.randn(1, 3, 16, 16)
    for spec in [*ds.space.subnets, ds.space.largest]:
        with torch.no_grad(), ds.subnet(spec):
            outs = ds(x)
        channels = [o.shape[1] if out_type == 'featmap' else o.shape[-1]
                    for o in outs]
        assert all(c <= w for c, w in zip(channels, ds.out_widths))
        if spec is ds.space.largest:
            assert tuple(channels) == ds.out_widths
