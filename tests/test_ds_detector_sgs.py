# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Detection SGS (``DSSGSDetector``): the dynamic detector's gate trained on
detection losses (per-image losses, the margin rule, one step that moves
only the gate, the frozen rest, the Stage I checkpoint it starts from, its
options), and the routed ``DSGateDetector`` left untouched by it."""
import copy

import pytest
import torch
from mmengine.registry import DefaultScope

pytest.importorskip('mmdet')  # the optional 'det' extra
from mmdet.registry import MODELS  # noqa: E402

import dsnet_mm  # noqa: E402,F401 (registers the DS models)
from conftest import randomize_bn  # noqa: E402
from test_ds_detector import sgd, tiny_detector_cfg  # noqa: E402
from test_ds_detector_eval import batch  # noqa: E402

GATE = dict(stage='stage3', window=(0, 3))
MARGIN = dict(margin=0.5, margin_mode='absolute')


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def sgs_detector(**gate_training):
    gate_training = dict(dict(margin=0.1, margin_mode='relative'),
                         **gate_training)
    cfg = tiny_detector_cfg(type='DSSGSDetector',
                            gate_training=gate_training)
    cfg.backbone.gate = GATE
    torch.manual_seed(0)
    return randomize_bn(MODELS.build(cfg))


def test_an_images_loss_is_that_of_the_image_alone():
    """Each image's loss does not depend on its batchmates; at the window's
    narrowest (whose BN rows the shared part before the gate runs with) it
    is the detector's own training loss of the image alone."""
    model = sgs_detector().eval()
    data = model.data_preprocessor(batch(3), True)
    inputs, samples = data['inputs'], data['data_samples']
    with torch.no_grad():
        h, _, early = model._pre_gate(inputs)
        for spec in model.window:
            got = model.image_losses(h, early, spec, samples)
            assert got.shape == (3, )
            for i in range(3):
                alone = model.image_losses(h[i:i + 1],
                                           [e[i:i + 1] for e in early],
                                           spec, [samples[i]])
                torch.testing.assert_close(got[i:i + 1], alone)
        narrowest = model.image_losses(h, early, model.window[0], samples)
        for i in range(3):
            losses = model(inputs[i:i + 1], [samples[i]], mode='loss',
                           spec=model.window[0])
            torch.testing.assert_close(narrowest[i],
                                       model.parse_losses(losses)[0])


@pytest.mark.parametrize('mode, margin, expected', [
    ('relative', 0.1, [0, 0, 2, 2]),   # easy while narrow <= 1.1 * wide
    ('relative', 0.5, [0, 0, 0, 2]),
    ('absolute', 0.1, [0, 2, 2, 2]),   # easy while narrow <= wide + 0.1
    ('absolute', 1.0, [0, 0, 0, 2]),
])
def test_sgs_targets_follow_the_margin_rule(mode, margin, expected):
    model = sgs_detector(margin=margin, margin_mode=mode)
    narrow = torch.tensor([1.0, 2.1, 2.5, 9.0])
    wide = torch.tensor([1.0, 1.95, 2.0, 3.0])

    def losses(h, early, spec, samples):
        return narrow if spec is model.window[0] else wide

    model.image_losses = losses
    got = model.sgs_targets(None, [], [None] * 4)
    assert got.tolist() == expected


def test_gate_step_moves_only_the_slimming_head():
    model = sgs_detector(margin=0.1)
    model.train()
    assert all(not m.training for m in model.children())
    before = copy.deepcopy(model.state_dict())
    out = model.train_step(batch(4), sgd(model, lr=1.0))
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(model.gate_prefix) for k in moved)
    assert {'loss', 'loss_gate', 'mean_madds', 'easy_ratio'} <= set(out)
    # the sandwich never ran: its counter did not move either
    assert int(model.sandwich_iter) == 0


def test_complexity_term_pulls_the_gate_towards_the_narrowest():
    torch.manual_seed(1)
    model = sgs_detector(complexity_weight=10.0, madds_unit=1e5,
                         class_weight=None)
    model.train()
    data = batch(4)
    model.sgs_targets = lambda h, early, samples: torch.full(
        (h.shape[0], ), -100)  # no SGS target: the complexity term alone
    start = model.data_preprocessor(copy.deepcopy(data), False)['inputs']
    with torch.no_grad():
        first = model._pre_gate(start)[1].softmax(-1)[:, 0].mean()
    optim = sgd(model, lr=0.5)
    for _ in range(5):
        out = model.train_step(copy.deepcopy(data), optim)
    assert 'loss_gate' not in out and out['loss_complexity'] > 0
    with torch.no_grad():
        last = model._pre_gate(start)[1].softmax(-1)[:, 0].mean()
    assert last > first


def test_stage1_checkpoint_of_the_sandwich_detector_loads(tmp_path):
    torch.manual_seed(0)
    stage1 = randomize_bn(MODELS.build(tiny_detector_cfg()))
    stage1.sandwich_iter += 7
    path = str(tmp_path / 'stage1.pth')
    torch.save(dict(state_dict=stage1.state_dict(), meta={}), path)
    cfg = tiny_detector_cfg(type='DSSGSDetector', gate_training=MARGIN,
                            stage1_checkpoint=path)
    cfg.backbone.gate = GATE
    model = MODELS.build(cfg)
    model.init_weights()
    own = model.state_dict()
    for key, value in stage1.state_dict().items():
        if key != 'sandwich_iter':
            torch.testing.assert_close(own[key], value, msg=key)


def test_stage1_checkpoint_of_another_backbone_is_refused(tmp_path):
    cfg = tiny_detector_cfg()
    cfg.backbone.arch = dict(cfg.backbone.arch, stem=(16, 2))
    torch.manual_seed(0)
    path = str(tmp_path / 'other.pth')
    torch.save(dict(state_dict=MODELS.build(cfg).state_dict()), path)
    cfg = tiny_detector_cfg(type='DSSGSDetector', gate_training=MARGIN,
                            stage1_checkpoint=path)
    cfg.backbone.gate = GATE
    model = MODELS.build(cfg)
    with pytest.raises(ValueError, match='shape mismatch'):
        model.init_weights()


@pytest.mark.parametrize('training, error, match', [
    (dict(MARGIN, margine=0.1), ValueError,
     r"gate_training needs the keys \['margin', 'margin_mode'\]"),
    (dict(margin=0.1), ValueError, r"gate_training needs the keys"),
    (dict(MARGIN, margin_mode='ratio'), ValueError,
     r"gate_training.margin_mode.*'relative', 'absolute'"),
    (dict(MARGIN, margin=-0.1), ValueError, r'gate_training.margin'),
    (dict(MARGIN, class_weight='inverse'), ValueError,
     r'gate_training.class_weight'),
    (dict(MARGIN, madds_unit=0), ValueError, r'gate_training.madds_unit'),
    ([0.1], TypeError, r'gate_training must be a dict'),
    (None, TypeError, r'gate_training must be a dict'),
])
def test_bad_gate_training_is_named(training, error, match):
    cfg = tiny_detector_cfg(type='DSSGSDetector', gate_training=training)
    cfg.backbone.gate = GATE
    with pytest.raises(error, match=match):
        MODELS.build(cfg)


@pytest.mark.parametrize('key, value', [
    ('gate_training', MARGIN),
    ('gate_training', None),
    ('stage1_checkpoint', 'stage1.pth'),
])
def test_the_routed_detector_refuses_the_stage2_arguments(key, value):
    cfg = tiny_detector_cfg(type='DSGateDetector', **{key: value})
    cfg.backbone.gate = GATE
    with pytest.raises(ValueError, match=rf"{key} is not an argument of "
                       r"DSGateDetector: detection Stage II is "
                       r"type='DSSGSDetector'"):
        MODELS.build(cfg)


def test_sgs_detector_freezes_all_but_the_slimming_head():
    model = sgs_detector()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters()
                         if n.startswith(model.gate_prefix)}
    assert trainable and all('slim_head' in n for n in trainable)
    for mode in (True, False, True):
        model.train(mode)
        assert model.training is mode
        training = [n for n, m in model.named_modules() if n and m.training]
        assert not training, training
    # the Stage II mixin comes first: its train() and step are the ones run
    names = [c.__name__ for c in type(model).__mro__]
    assert names.index('GateTrainingMixin') < names.index('DSGateDetector')
    assert names.index('DSGateDetector') < names.index('GatedRoutingMixin')


def test_the_routed_detector_trains_as_a_sandwich_detector():
    """No freezing leaks into ``DSGateDetector``: every parameter learns and
    every module follows ``train()``."""
    cfg = tiny_detector_cfg(type='DSGateDetector')
    cfg.backbone.gate = GATE
    model = MODELS.build(cfg)
    assert not hasattr(model, 'gate_training')
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
