# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The gate on DS-ViT: an SE on tokens in Stage I, the same predictions on
the slice, bucket and mask paths, and bad gate configs named at build."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.analysis import subnet_complexity
from dsnet_mm.models.backbones import DSViT
from test_ds_vit import ARCH, LADDER, images, plain_forward
from test_gate import route_cyclically

init_default_scope('mmpretrain')


def backbone_cfg(**gate):
    gate = dict(dict(block=0, window=(0, 3)), **gate)
    return dict(type='DSViT', arch=ARCH, img_size=16, patch_size=4,
                subnets=LADDER, fixed_blocks=1, gate=gate)


def build(**gate) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSGateClassifier', backbone=backbone_cfg(**gate),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'ln' not in name:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.mark.parametrize('tokens', ['cls_token', 'mean'])
def test_gate_is_an_se_on_the_tokens_after_its_block(tokens):
    """In a fixed sub-network (Stage I) the gate's attention head scales
    every token's channels by the SE of the class or mean patch token."""
    model = build(tokens=tokens).backbone
    x = images()
    spec = model.space.smallest
    gate = model.gate
    with torch.no_grad():
        tokens_0 = model.layers[0](model._embed(x), spec)
        v = tokens_0[:, 0] if tokens == 'cls_token' else \
            tokens_0[:, 1:].mean(1)
        r = torch.relu(v @ gate.conv_reduce.weight[:, :, 0, 0].T +
                       gate.conv_reduce.bias)
        scale = torch.sigmoid(r @ gate.conv_expand.weight[:, :, 0, 0].T +
                              gate.conv_expand.bias)
        expected = tokens_0 * scale[:, None, :]
        for layer in model.layers[1:]:
            expected = layer(expected, spec)
        out = model.forward_spec(x, spec)[0]
    torch.testing.assert_close(out, model.ln1(expected)[:, 0])
    # without the gate's scaling the output differs: the SE really runs
    plain = plain_forward(model, spec, x)
    assert (out - plain).abs().max() > 1e-3


def test_slice_bucket_and_mask_paths_agree():
    model = build()
    route_cyclically(model, 3)
    x = images(9)
    with torch.no_grad():
        results = {m: model.forward_dynamic(x, m)
                   for m in ('slice', 'bucket', 'mask')}
    choice = results['slice'][2]
    assert choice.tolist() == [b % 3 for b in range(9)]
    for mode in ('bucket', 'mask'):
        logits, _, c = results[mode]
        assert torch.equal(c, choice)
        torch.testing.assert_close(logits, results['slice'][0], atol=1e-5,
                                   rtol=1e-5)
    # and each routed image is what its static sub-network predicts
    with torch.no_grad():
        for b in range(3):
            with model.backbone.subnet(model.window[b]):
                static = model.head(model.backbone(x[b:b + 1]))
            torch.testing.assert_close(results['bucket'][0][b:b + 1], static,
                                       atol=1e-5, rtol=1e-5)


def test_window_madds_count_the_gate_on_its_input_width():
    model = build(features='pooled')
    madds = model.window_madds((3, 16, 16))
    rows = subnet_complexity(model, model.window, (3, 16, 16))
    # the pooled slimming head reads the 32 channels of block 0
    assert madds == [r['madds'] + 32 * 3 for r in rows]
    assert madds == sorted(madds) and madds[0] < madds[-1]


def test_stage2_step_trains_only_the_slimming_head():
    model = build()
    data = dict(inputs=[torch.rand(3, 16, 16) * 255 for _ in range(6)],
                data_samples=[DataSample().set_gt_label(i % 5)
                              for i in range(6)])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim = OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=1.0))
    model.train()
    log = model.train_step(data, optim)
    assert {'loss_task', 'loss_complexity'} <= set(log)
    changed = {n for n, p in model.named_parameters()
               if not torch.equal(p, before[n])}
    assert changed == {'backbone.gate.slim_head.weight'}


@pytest.mark.parametrize('gate,match', [
    (dict(block=2), r'gate\.block=2 is not a block; allowed: \[0, 1\]'),
    (dict(block=1), r"mixes widths \[16, 24, 32\] of group 'blocks\.1\.embed'"),
    (dict(tokens='patch'), r"gate\.tokens='patch' is not one of"),
    (dict(stage='stage2'), r"gate needs the keys \['block', 'window'\]"),
])
def test_bad_gate_configs_fail_at_build(gate, match):
    cfg = backbone_cfg(**gate)
    if 'stage' in gate:
        del cfg['gate']['block']
    cfg.pop('type')
    with pytest.raises(ValueError, match=match):
        DSViT(**cfg)


def test_stage1_supernet_with_the_gate_loads_into_stage2(tmp_path):
    """DS-ViT's Stage I holds the gate (its SE trains there): every weight
    but the never-trained slimming head comes over."""
    torch.manual_seed(3)
    stage1 = MODELS.build(dict(
        type='DSImageClassifier', backbone=backbone_cfg(),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32)))
    torch.save(dict(state_dict=stage1.state_dict()), tmp_path / 's1.pth')
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSGateClassifier', backbone=backbone_cfg(),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32),
        stage1_checkpoint=str(tmp_path / 's1.pth')))
    head_init = model.gate.slim_head.weight.detach().clone()
    model.init_weights()
    assert torch.equal(model.gate.slim_head.weight, head_init)
    assert not torch.equal(head_init, stage1.backbone.gate.slim_head.weight)
    assert torch.equal(model.backbone.gate.conv_reduce.weight,
                       stage1.backbone.gate.conv_reduce.weight)
    assert torch.equal(model.backbone.layers[2].ffn.fc1.weight,
                       stage1.backbone.layers[2].ffn.fc1.weight)
