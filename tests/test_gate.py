# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Stage II: gate, SGS targets, frozen supernet, three routing paths."""
import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.engine import calibrate_bn
from dsnet_mm.models.backbones import DSMobileNetV1
from dsnet_mm.ops import DSBatchNorm2d

init_default_scope('mmpretrain')

ARCH = dict(stem=(8, 1), stages=[('stage1', 12, 1, 2), ('stage2', 16, 2, 2),
                                 ('stage3', 24, 1, 1)])
SUBNETS = dict(smallest=dict(stem=4, stage1=6, stage2=4, stage3=8),
               widest=dict(stem=4, stage1=6, stage2=16, stage3=20), num=7)


def backbone_cfg(window=(1, 4), stage='stage2'):
    return dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS,
                gate=dict(stage=stage, window=window))


def build(backbone=None, **kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSGateClassifier', backbone=backbone or backbone_cfg(),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5),
        **kwargs))
    for m in model.modules():
        if isinstance(m, DSBatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def route_cyclically(model, size=4):
    """Make the slimming head send image ``b`` to window position
    b % size."""
    real = model.gate.slim_head.forward

    def forward(r):
        real(r)  # keep the head in the graph
        hot = torch.eye(size)[torch.arange(r.shape[0]) % size]
        return (5 * hot)[:, :, None, None]

    model.gate.slim_head.forward = forward


def batch(n=16):
    g = torch.Generator().manual_seed(1)
    # images of varied brightness and contrast, so the gate routes them apart
    return dict(inputs=[torch.rand(3, 12, 12, generator=g) * 255 * (i + 1) / n
                        for i in range(n)],
                data_samples=[DataSample().set_gt_label(i % 5)
                              for i in range(n)])


def test_slice_bucket_and_mask_paths_agree():
    model = build()
    route_cyclically(model)
    inputs = model.data_preprocessor(batch(), False)['inputs']
    with torch.no_grad():
        results = {m: model.forward_dynamic(inputs, m)
                   for m in ('slice', 'bucket', 'mask')}
    choice = results['slice'][2]
    assert choice.tolist() == [b % 4 for b in range(16)]
    for mode in ('bucket', 'mask'):
        logits, _, c = results[mode]
        assert torch.equal(c, choice)
        torch.testing.assert_close(logits, results['slice'][0], atol=1e-5,
                                   rtol=1e-5)
        assert torch.equal(logits.argmax(-1), results['slice'][0].argmax(-1))


def test_routed_image_equals_its_static_subnet():
    """After recalibration, which gives the layers before the gate the same
    statistics in every sub-network of the window (same computation)."""
    model = build()
    for spec in model.window:
        calibrate_bn(model, [batch(8)], spec, 1)
    route_cyclically(model)
    inputs = model.data_preprocessor(batch(4), False)['inputs']
    with torch.no_grad():
        logits, _, choice = model.forward_dynamic(inputs, 'bucket')
        for b in range(4):
            spec = model.window[int(choice[b])]
            with model.backbone.subnet(spec):
                static = model.head(model.neck(model.backbone(inputs[b:b + 1])))
            torch.testing.assert_close(logits[b:b + 1], static)


def test_evaluation_routing_is_deterministic():
    model = build()
    data = batch()
    with torch.no_grad():
        first = model.test_step(data)
        second = model.test_step(data)
    assert [s.routed_subnet for s in first] == \
        [s.routed_subnet for s in second]
    assert all(s.routed_subnet in (1, 2, 3, 4) for s in first)
    madds = model.window_madds((3, 12, 12))
    assert madds == sorted(madds)
    assert {s.routed_madds for s in first} <= set(madds)
    # counted per image shape: a larger image costs more in every sub-network
    larger = model.window_madds((3, 24, 24))
    assert all(b > a for a, b in zip(madds, larger))
    assert model.window_madds((3, 12, 12)) == madds


def test_stage2_step_trains_only_the_gate():
    model = build()
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5,
                                           momentum=0.9, weight_decay=0.01))
    grads = {}
    model.gate.slim_head.weight.register_hook(
        lambda g: grads.setdefault('gate', g.clone()))
    log = model.train_step(batch(), wrapper)
    assert grads['gate'].abs().sum() > 0
    assert {'loss', 'loss_task', 'loss_gate', 'loss_complexity'} <= set(log)
    after = model.state_dict()
    changed = [k for k in state if not torch.equal(state[k], after[k])]
    assert changed == ['backbone.layers.1.0.se.slim_head.weight']
    assert not any(m.training for m in model.modules() if m is not model)


def test_sgs_targets_follow_the_rule():
    model = build()
    labels = torch.tensor([0, 1, 2, 3])
    # narrowest right on 0 and 1; widest right on 0 and 2
    narrow = torch.nn.functional.one_hot(torch.tensor([0, 1, 4, 4]), 5)
    wide = torch.nn.functional.one_hot(torch.tensor([0, 4, 2, 4]), 5)
    model._run_window = lambda h, early, spec: (
        narrow if spec is model.window[0] else wide).float()
    h = torch.zeros(4, 1)
    assert model.sgs_targets(h, [], labels).tolist() == [0, 0, 3, 3]
    model.sgs_rule = 'smallest_widest'
    assert model.sgs_targets(h, [], labels).tolist() == [0, 0, 3, -100]


def test_narrowest_correct_targets_the_first_member_that_is_right():
    model = build()
    model.sgs_rule = 'narrowest_correct'
    labels = torch.tensor([0, 1, 2, 3])
    # window members 0..3; image b is first right at member right_from[b]
    right_from = [0, 2, 3, 9]  # 9: never

    runs = []

    def run(h, early, spec):  # h holds each image's index
        k = model.window.index(spec)
        ids = h[:, 0].long().tolist()
        runs.append((k, ids))
        pred = [labels[i] if k >= right_from[i] else 4 for i in ids]
        return torch.nn.functional.one_hot(torch.tensor(pred), 5).float()

    model._run_window = run
    assert len(model.window) == 4
    h = torch.arange(4.)[:, None]
    assert model.sgs_targets(h, [], labels).tolist() == [0, 2, 3, -100]
    # each member ran only on the images the narrower ones got wrong
    assert runs == [(0, [0, 1, 2, 3]), (1, [1, 2, 3]), (2, [1, 2, 3]),
                    (3, [2, 3])]


def test_sgs_loss_is_the_plain_mean_by_default():
    model = build()
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 0, 0, 0, 3, -100])
    expected = torch.nn.functional.cross_entropy(
        logits, target, ignore_index=-100, label_smoothing=0.1)
    torch.testing.assert_close(model.sgs_loss(logits, target), expected)


def test_balanced_sgs_loss_weighs_each_target_equally():
    """Four easy images and one hard: the hard one weighs as much as the
    four easy ones together; the ignored image counts for nothing."""
    model = build(sgs_class_weight='balanced')
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 0, 0, 0, 3, -100])
    per_image = torch.nn.functional.cross_entropy(
        logits[:5], target[:5], reduction='none', label_smoothing=0.1)
    expected = (per_image[:4].mean() + per_image[4]) / 2
    torch.testing.assert_close(model.sgs_loss(logits, target), expected)
    # with one target only it is the plain mean again
    torch.testing.assert_close(
        model.sgs_loss(logits[:4], target[:4]), per_image[:4].mean())


def test_balanced_sgs_loss_pulls_harder_towards_a_rare_target():
    target = torch.tensor([0] * 15 + [3])
    grads = {}
    for weight in (None, 'balanced'):
        model = build(sgs_class_weight=weight)
        logits = torch.zeros(16, 4, requires_grad=True)
        model.sgs_loss(logits, target).backward()
        grads[weight] = logits.grad
    # the hard image's logit of the widest gets 8x the push (1/16 -> 1/2)
    torch.testing.assert_close(grads['balanced'][15], 8 * grads[None][15])
    assert grads['balanced'][:15].abs().sum() < grads[None][:15].abs().sum()


def test_unknown_sgs_class_weight_fails_at_build():
    with pytest.raises(ValueError, match="sgs_class_weight='inverse' is not"):
        build(sgs_class_weight='inverse')


def test_stage1_checkpoint_mismatch_lists_the_keys(tmp_path):
    torch.manual_seed(0)
    stage1 = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24)))
    torch.save(dict(state_dict=stage1.state_dict()), tmp_path / 'ok.pth')
    model = build(stage1_checkpoint=str(tmp_path / 'ok.pth'))
    model.init_weights()  # matches: only the slimming head is new
    torch.testing.assert_close(model.head.fc.weight, stage1.head.fc.weight)

    state = stage1.state_dict()
    state['head.fc.weight'] = torch.zeros(5, 30)
    state['backbone.extra.weight'] = torch.zeros(1)
    del state['backbone.stem.bn.weight']
    torch.save(dict(state_dict=state), tmp_path / 'bad.pth')
    model = build(stage1_checkpoint=str(tmp_path / 'bad.pth'))
    with pytest.raises(ValueError) as err:
        model.init_weights()
    msg = str(err.value)
    assert 'missing in checkpoint (1): backbone.stem.bn.weight' in msg
    assert 'not in the model (1): backbone.extra.weight' in msg
    assert 'head.fc.weight: checkpoint (5, 30) vs model (5, 24)' in msg


@pytest.mark.parametrize('gate,match', [
    (dict(stage='stage9', window=(0, 4)),
     r"gate.stage='stage9' is not a stage; allowed: \['stage1', 'stage2', "),
    (dict(stage='stage2', window=(5, 4)),
     r'gate.window\[1\] \(size\) must be an int in 1..2, got 4'),
    (dict(stage='stage3', window=(0, 4)),
     r"mixes widths \[4, 6, 8, 10\] of group 'stage2'"),
])
def test_bad_gate_configs_fail_at_build(gate, match):
    with pytest.raises(ValueError, match=match):
        DSMobileNetV1(arch=ARCH, subnets=SUBNETS, gate=gate)


def test_gate_classifier_needs_a_gate():
    with pytest.raises(ValueError, match='needs a DS backbone with a gate'):
        MODELS.build(dict(
            type='DSGateClassifier',
            backbone=dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS),
            head=dict(type='DSLinearClsHead', num_classes=5,
                      in_channels=24)))


def pooled_backbone_cfg():
    cfg = backbone_cfg()
    cfg['gate']['features'] = 'pooled'
    return cfg


def test_pooled_gate_reads_the_pooled_gate_input():
    model = build(backbone=pooled_backbone_cfg())
    squeeze = build()
    inputs = model.data_preprocessor(batch(), False)['inputs']
    backbone, spec = model.backbone, model.window[0]
    with torch.no_grad():
        x = backbone.layers[0][0](backbone.stem(inputs, spec), spec)
        pooled = backbone.layers[1][0].forward_dw(x, spec).mean((2, 3))
        logits = backbone.forward_pre_gate(inputs)[1]
    # stage1 runs at 6 of its 12 channels: the head's first 6 input columns
    assert pooled.shape[1] == 6 and model.gate.slim_head.in_channels == 12
    weight = model.gate.slim_head.weight[:, :6, 0, 0]
    torch.testing.assert_close(logits, pooled @ weight.T)
    # the head's MAdds follow what it reads: 6 pooled channels against the
    # squeeze's round(0.25 * 12) = 3, for 4 choices
    assert model.gate.head_madds(6) == 24 and squeeze.gate.head_madds(6) == 12
    assert [a - b for a, b in zip(model.window_madds((3, 12, 12)),
                                  squeeze.window_madds((3, 12, 12)))] == \
        [12] * 4


def test_pooled_gate_paths_agree():
    model = build(backbone=pooled_backbone_cfg())
    with torch.no_grad():  # a head that tells the images apart
        model.gate.slim_head.weight.normal_(
            0, 10, generator=torch.Generator().manual_seed(3))
    inputs = model.data_preprocessor(batch(), False)['inputs']
    with torch.no_grad():
        results = {m: model.forward_dynamic(inputs, m)
                   for m in ('slice', 'bucket', 'mask')}
    choice = results['slice'][2]
    assert len(choice.unique()) >= 2
    for mode in ('bucket', 'mask'):
        logits, _, c = results[mode]
        assert torch.equal(c, choice)
        torch.testing.assert_close(logits, results['slice'][0], atol=1e-5,
                                   rtol=1e-5)


def test_unknown_gate_features_are_named():
    cfg = backbone_cfg()
    cfg['gate']['features'] = 'max'
    with pytest.raises(ValueError, match="gate.features='max'.*pooled"):
        build(backbone=cfg)


def test_narrowest_correct_equals_every_member_on_the_whole_batch():
    model = build(sgs_rule='narrowest_correct').eval()
    data = model.data_preprocessor(batch(32), False)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    with torch.no_grad():
        h, _, early = model.backbone.forward_pre_gate(data['inputs'])
        got = model.sgs_targets(h, early, labels)
        correct = torch.stack([
            model._run_window(h, early, spec).argmax(-1) == labels
            for spec in model.window], 1)
    expected = torch.where(correct.any(1), correct.float().argmax(1), -100)
    assert got.tolist() == expected.tolist()
    assert len(set(got.tolist())) > 1  # not all alike
