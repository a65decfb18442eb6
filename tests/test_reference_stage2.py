# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The reference DS-Net code's readings of Stage II and of Stage I's
reporting, each an option: where the task loss's channel masks sit, the SGS
loss on the noisy Gumbel probabilities, the TF-style slimming-head init,
keeping a Stage I checkpoint's head, and validating the EMA teacher beside
the student."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope, init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

from dsnet_mm.engine import SubnetValLoop, calibrate_bn
from dsnet_mm.models.backbones.ds_mobilenet_v1 import DSConvBNAct
from dsnet_mm.models.gates import DSGate
from dsnet_mm.models.routing import MaskedRouting, gumbel_route
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d
from test_gate import (ARCH, SUBNETS, backbone_cfg, batch, build,
                       route_cyclically)
from test_resnet import small_classifier
from test_vit_gate import backbone_cfg as vit_backbone_cfg

init_default_scope('mmpretrain')

# --- where the task loss's masks sit --------------------------------------
WIDTHS = (2, 4, 6)  # the routing window's widths of the layer's group
ROUTES = (0, 1, 2, 1)  # the window position each image is routed to


def silu_grad(x: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def masked_layer_case(position: str, shift: float = 0.0):
    """One conv-BN-SiLU layer of DS-MobileNetV1 under a routing built from
    gate logits by a straight-through one-hot (the hard routes ``ROUTES``,
    the softmax's gradient). Every statistics row of the BN is the same, so
    the per-sample statistics do not move the gate logits (they add the same
    amount to every routing weight, which the softmax's Jacobian cancels):
    only the masks do. ``shift`` is added to the conv's filters past the
    narrowest width.

    Returns the layer's output, the gate logits' gradient of
    ``L = sum(g * output)`` by autograd, and what the formula needs."""
    g = torch.Generator().manual_seed(0)
    layer = DSConvBNAct(3, 6, 3, 1, 'g', num_stats=len(WIDTHS))
    with torch.no_grad():
        layer.conv.weight.normal_(0, 0.5, generator=g)
        layer.conv.weight[WIDTHS[0]:] += shift
        layer.bn.weight.uniform_(0.5, 1.5, generator=g)
        layer.bn.bias.uniform_(-0.5, 0.5, generator=g)
        layer.bn.running_mean.copy_(torch.rand(6, generator=g) - 0.5)
        layer.bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    layer.eval()
    window = [SubnetSpec(dict(g=w), k, f'subnet_{k}')
              for k, w in enumerate(WIDTHS)]
    x = torch.randn(len(ROUTES), 3, 5, 5, generator=g)
    upstream = torch.randn(len(ROUTES), 6, 5, 5, generator=g)
    logits = torch.randn(len(ROUTES), len(WIDTHS), generator=g,
                         requires_grad=True)
    soft = logits.softmax(-1)
    hard = F.one_hot(torch.tensor(ROUTES), len(WIDTHS)).float()
    weights = hard - soft.detach() + soft
    out = layer(x, MaskedRouting(window, weights, position))
    (upstream * out).sum().backward()
    return dict(layer=layer, x=x, upstream=upstream, soft=soft.detach(),
                out=out.detach(), grad=logits.grad)


def formula_gate_grad(case: dict, position: str) -> torch.Tensor:
    """The gate logits' gradient, written out.

    With ``z`` the conv's output at the widest width, ``bn(u) = (u - mean) *
    gamma / sigma + beta`` and ``M[b, c] = sum_k w[b, k] * [c < width_k]``
    (1 for the channels image ``b`` keeps):

    - after the activation, ``y = M * silu(bn(z))``:
      ``dL/dM = sum_hw g * silu(bn(z))``;
    - before it (the conv's and the BN's outputs), ``y = silu(M * bn(M *
      z))``: ``dL/dM = sum_hw g * silu'(p) * (bn(M z) + M * gamma / sigma *
      z)`` with ``p = M * bn(M * z)``.

    Then ``dL/dw[b, k] = sum_{c < width_k} dL/dM[b, c]`` and, through the
    softmax, ``dL/dlogits[b] = (diag(s) - s s^T) dL/dw[b]``.
    """
    layer, g = case['layer'], case['upstream']
    with torch.no_grad():
        z = layer.conv(case['x'])
        bn = layer.bn
        scale = (bn.weight / torch.sqrt(bn.running_var[0] + bn.eps))
        scale = scale[None, :, None, None]
        mean = bn.running_mean[0][None, :, None, None]
        beta = bn.bias[None, :, None, None]

        def norm(u):
            return (u - mean) * scale + beta

        widths = torch.tensor([WIDTHS[r] for r in ROUTES])
        m = (torch.arange(6)[None] < widths[:, None]).float()[..., None, None]
        if position == 'after_act':
            d_mask = (g * F.silu(norm(z))).sum((2, 3))
        else:
            pre = m * norm(m * z)
            d_mask = (g * silu_grad(pre) *
                      (norm(m * z) + m * scale * z)).sum((2, 3))
        d_weights = torch.stack(
            [d_mask[:, :w].sum(1) for w in WIDTHS], 1)
        s = case['soft']
        jacobian = torch.diag_embed(s) - s[:, :, None] * s[:, None, :]
        return (jacobian @ d_weights[..., None])[..., 0]


@pytest.mark.parametrize('position', ['after_act', 'before_act'])
def test_gate_gradient_of_the_masked_layer_equals_the_formula(position):
    case = masked_layer_case(position)
    torch.testing.assert_close(case['grad'], formula_gate_grad(case, position),
                               atol=1e-5, rtol=1e-4)


def test_mask_positions_give_the_same_output_and_other_gate_gradients():
    after, before = (masked_layer_case(p) for p in ('after_act', 'before_act'))
    torch.testing.assert_close(after['out'], before['out'])
    # every image keeps its own channels only
    for b, r in enumerate(ROUTES):
        assert not after['out'][b, WIDTHS[r]:].any()
    assert not torch.allclose(after['grad'], before['grad'], atol=1e-3)


@pytest.mark.parametrize('position', ['after_act', 'before_act'])
def test_dropped_channels_reach_the_gate_only_after_the_activation(
        position):
    """An image routed to the narrowest drops the channels past it. After
    the activation their gradient is what they would have added, so other
    filters there change the gate's gradient; before it, it is
    ``silu'(0) * bn(0)`` whatever the filters."""
    base = masked_layer_case(position)
    moved = masked_layer_case(position, shift=1.0)
    narrow = [b for b, r in enumerate(ROUTES) if r == 0]
    assert torch.equal(base['out'][narrow], moved['out'][narrow])
    same = torch.allclose(base['grad'][narrow], moved['grad'][narrow])
    assert same == (position == 'before_act')
    torch.testing.assert_close(moved['grad'],
                               formula_gate_grad(moved, position),
                               atol=1e-5, rtol=1e-4)


def sgs_step_outputs(model, seed=0):
    """``forward(mode='sgs')`` on a fixed batch: (class logits, SGS scores,
    routing weights, targets, gate gradient of the task loss)."""
    data = model.data_preprocessor(batch(8), True)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    model.gate.slim_head.weight.grad = None
    torch.manual_seed(seed)
    logits, scores, weights, target = model(
        data['inputs'], data['data_samples'], mode='sgs')
    F.cross_entropy(logits, labels).backward()
    return logits, scores, weights, target, model.gate.slim_head.weight.grad


@pytest.mark.parametrize('backbone', ['mbnet', 'resnet'])
def test_stage2_mask_position_changes_the_gate_gradient_only(backbone):
    results = {}
    for position in ('after_act', 'before_act'):
        if backbone == 'mbnet':
            model = build(mask_position=position)
        else:
            model = small_classifier(
                18, dict(stage='layer3', window=(0, 4)),
                dict(mask_position=position),
                fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5))
        with torch.no_grad():  # small logits: the Gumbel noise spreads them
            model.gate.slim_head.weight.normal_(
                0, 0.01, generator=torch.Generator().manual_seed(1))
        model.train()  # gate training: the network stays in eval mode
        results[position] = sgs_step_outputs(model)
    after, before = results['after_act'], results['before_act']
    assert len(after[2].argmax(-1).unique()) > 1
    for a, b in zip(after[:4], before[:4]):
        torch.testing.assert_close(a, b)
    assert after[4].abs().sum() > 0 and before[4].abs().sum() > 0
    assert not torch.allclose(after[4], before[4])


@pytest.mark.parametrize('backbone', ['mbnet', 'resnet'])
def test_paths_agree_with_masks_before_the_activation(backbone):
    if backbone == 'mbnet':
        model = build(mask_position='before_act')
        x = model.data_preprocessor(batch(), False)['inputs']
    else:
        model = small_classifier(
            18, dict(stage='layer3', window=(0, 4)),
            dict(mask_position='before_act'),
            fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5))
        x = torch.randn(8, 3, 16, 16)
    route_cyclically(model)
    with torch.no_grad():
        results = {m: model.forward_dynamic(x, m)
                   for m in ('slice', 'bucket', 'mask')}
    logits, _, choice = results['slice']
    assert choice.tolist() == [b % 4 for b in range(len(x))]
    for mode in ('bucket', 'mask'):
        assert torch.equal(results[mode][2], choice)
        torch.testing.assert_close(results[mode][0], logits, atol=1e-5,
                                   rtol=1e-5)


def test_vit_refuses_masks_before_the_activation():
    with pytest.raises(ValueError, match=r"mask_position='before_act' is "
                       r"not one of \('after_act',\), where DSViT"):
        MODELS.build(dict(
            type='DSGateClassifier', backbone=vit_backbone_cfg(),
            head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32),
            mask_position='before_act'))


def test_detection_sgs_refuses_a_mask_position():
    pytest.importorskip('mmdet')  # the optional 'det' extra
    from dsnet_mm.models.detectors.ds_sgs_detector import \
        check_gate_training
    with pytest.raises(ValueError, match='gate_training.mask_position is '
                       'not an option of detection SGS'):
        check_gate_training(dict(margin=0.5, margin_mode='absolute',
                                 mask_position='before_act'))
    cfg = check_gate_training(dict(margin=0.5, margin_mode='absolute'))
    assert cfg['gate_loss_input'] == 'logits'
    assert cfg['keep_stage1_head'] is False


# --- the SGS loss on the Gumbel probabilities ----------------------------
def test_gumbel_route_is_torch_gumbel_softmax_and_its_soft_sample():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    weights, soft = gumbel_route(logits, tau=0.5)
    torch.manual_seed(5)
    expected = F.gumbel_softmax(logits, tau=0.5, hard=True)
    assert torch.equal(weights, expected)
    torch.manual_seed(5)
    noise = -torch.empty_like(logits).exponential_().log()
    torch.testing.assert_close(soft, ((logits + noise) / 0.5).softmax(-1))
    assert torch.equal(weights.argmax(-1), soft.argmax(-1))


@pytest.mark.parametrize('class_weight', [None, 'balanced'])
def test_sgs_loss_on_gumbel_probs_is_smoothed_ce_of_the_soft_sample(
        class_weight):
    """The reference's SGS loss: label-smoothed cross-entropy that takes
    the soft Gumbel sample ``p`` for logits, ``(1 - e) * (lse(p) - p_t) +
    e * mean_k (lse(p) - p_k)`` per image (a second softmax)."""
    model = build(gate_loss_input='gumbel_probs',
                  sgs_class_weight=class_weight).train()
    data = model.data_preprocessor(batch(8), True)
    with torch.no_grad():
        gate_logits = model.backbone.forward_pre_gate(data['inputs'])[1]
    torch.manual_seed(3)
    _, scores, weights, target = model(data['inputs'],
                                       data['data_samples'], mode='sgs')
    torch.manual_seed(3)
    noise = -torch.empty_like(gate_logits).exponential_().log()
    p = (gate_logits + noise).softmax(-1)  # tau 1
    torch.testing.assert_close(scores, p)
    assert torch.equal(weights.argmax(-1), p.argmax(-1))

    target = torch.tensor([0, 3, 0, 0, 3, 0, -100, 0])
    eps = model.gate_label_smooth
    lse = p.logsumexp(-1)
    keep = target >= 0
    per_image = (1 - eps) * (lse - p.gather(1, target.clamp(min=0)[:, None])
                             [:, 0]) + eps * (lse[:, None] - p).mean(-1)
    if class_weight is None:
        expected = per_image[keep].mean()
    else:  # the mean over the targets present of each target's mean loss
        expected = (per_image[target == 0].mean() +
                    per_image[target == 3].mean()) / 2
    torch.testing.assert_close(model.sgs_loss(scores, target), expected)
    # probabilities in [0, 1]: the loss never falls below log(1 + 3 / e)
    perfect = F.one_hot(torch.tensor([0, 3]), 4).float()
    model.gate_label_smooth = 0.0
    torch.testing.assert_close(
        model.sgs_loss(perfect, torch.tensor([0, 3])),
        torch.tensor(math.log(1 + 3 / math.e)))


@pytest.mark.parametrize('reading', ['logits', 'gumbel_probs'])
def test_stage2_step_takes_its_gate_loss_from_the_chosen_scores(reading):
    model = build(gate_loss_input=reading).train()
    data = batch(8)
    pre = model.data_preprocessor(copy.deepcopy(data), True)
    inputs = pre['inputs']
    torch.manual_seed(4)
    _, scores, _, target = model(inputs, pre['data_samples'], mode='sgs')
    with torch.no_grad():
        gate_logits = model.backbone.forward_pre_gate(inputs)[1]
        expected = model.sgs_loss(scores, target)
    if reading == 'logits':  # the default
        torch.testing.assert_close(scores, gate_logits)
    else:
        torch.testing.assert_close(scores.sum(-1), torch.ones(8))
        assert not torch.allclose(scores, gate_logits.softmax(-1))
    torch.manual_seed(4)
    log = model.train_step(data, OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.0)))
    assert float(log['loss_gate'].detach()) == pytest.approx(float(expected))


@pytest.mark.parametrize('reading', ['logits', 'gumbel_probs'])
def test_detection_sgs_takes_its_gate_loss_from_the_chosen_scores(reading):
    pytest.importorskip('mmdet')  # the optional 'det' extra
    from test_ds_detector import sgd
    from test_ds_detector_eval import batch as detection_batch
    from test_ds_detector_sgs import sgs_detector
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = sgs_detector(gate_loss_input=reading, class_weight=None)
        model.train()
        data = detection_batch(4)
        pre = model.data_preprocessor(copy.deepcopy(data), True)
        torch.manual_seed(4)
        with torch.no_grad():
            gate_logits, target = model(pre['inputs'], pre['data_samples'],
                                        mode='sgs')
        noise = -torch.empty_like(gate_logits).exponential_().log()
        scores = (gate_logits + noise).softmax(-1) \
            if reading == 'gumbel_probs' else gate_logits
        expected = F.cross_entropy(scores, target, label_smoothing=0.1)
        torch.manual_seed(4)
        log = model.train_step(copy.deepcopy(data), sgd(model, lr=0.0))
    assert float(log['loss_gate'].detach()) == pytest.approx(float(expected))


def test_detection_sgs_keeps_the_stage1_head_if_asked(tmp_path):
    DET_MODELS = pytest.importorskip('mmdet.registry').MODELS
    from test_ds_detector import tiny_detector_cfg
    from test_ds_detector_sgs import GATE, MARGIN
    with DefaultScope.overwrite_default_scope('mmdet'):
        # a gated sandwich detector (no gate training) as Stage I
        cfg = tiny_detector_cfg(type='DSGateDetector')
        cfg.backbone.gate = GATE
        torch.manual_seed(0)
        stage1 = DET_MODELS.build(cfg)
        path = str(tmp_path / 'stage1.pth')
        torch.save(dict(state_dict=stage1.state_dict()), path)
        heads = {}
        for keep in (False, True):
            cfg = tiny_detector_cfg(
                type='DSSGSDetector', stage1_checkpoint=path,
                gate_training=dict(MARGIN, keep_stage1_head=keep))
            cfg.backbone.gate = GATE
            torch.manual_seed(1)
            model = DET_MODELS.build(cfg)
            model.init_weights()
            heads[keep] = model.gate.slim_head.weight
    expected = stage1.gate.slim_head.weight
    assert torch.equal(heads[True], expected)
    assert not torch.equal(heads[False], expected)


def test_unknown_gate_loss_input_is_named():
    with pytest.raises(ValueError, match=r"gate_loss_input='probs' is not "
                       r"one of \('logits', 'gumbel_probs'\)"):
        build(gate_loss_input='probs')


# --- the slimming head's init ---------------------------------------------
def test_tf_head_init_is_fan_out_normal():
    """TF-style: normal, std sqrt(2 / fan_out) with fan_out = the number of
    choices of the 1x1 head; PyTorch's: uniform within 1 / sqrt(fan_in)."""
    torch.manual_seed(0)
    tf = DSGate(4096, 4, features='pooled', head_init='tf').slim_head.weight
    torch.manual_seed(0)
    pt = DSGate(4096, 4, features='pooled').slim_head.weight
    assert tf.shape == pt.shape == (4, 4096, 1, 1)
    assert abs(tf.std().item() / math.sqrt(2 / 4) - 1) < 0.03
    assert abs(tf.mean().item()) < 0.03
    # a normal's share beyond one std, not a uniform's (42 %)
    share = (tf.abs() > math.sqrt(2 / 4)).float().mean().item()
    assert abs(share - 0.3173) < 0.02
    assert pt.abs().max() <= 1 / math.sqrt(4096)
    assert abs(pt.std().item() * math.sqrt(3 * 4096) - 1) < 0.03


def test_tf_head_init_is_about_ten_times_torch_on_the_reference_gate():
    """The reference gate: 264 input channels, squeeze 66, 4 choices."""
    stds = {}
    for init in ('torch', 'tf'):
        torch.manual_seed(0)
        gate = DSGate(264, 4, head_init=init)
        assert gate.slim_head.weight.shape == (4, 66, 1, 1)
        stds[init] = gate.slim_head.weight.std().item()
    expected = math.sqrt(2 / 4) * math.sqrt(3 * 66)  # 9.95
    assert abs(stds['tf'] / stds['torch'] / expected - 1) < 0.2


def test_head_init_reaches_the_gate_from_the_backbone_config():
    cfg = backbone_cfg()
    cfg['gate']['head_init'] = 'tf'
    model = build(backbone=cfg)
    assert model.gate.head_init == 'tf'
    bound = 1 / math.sqrt(model.gate.slim_head.in_channels)
    # PyTorch's init stays within the bound; std sqrt(2 / 4) leaves it
    assert build().gate.slim_head.weight.abs().max() <= bound
    assert model.gate.slim_head.weight.abs().max() > bound
    cfg['gate']['head_init'] = 'xavier'
    with pytest.raises(ValueError, match=r"gate.head_init='xavier' is not "
                       r"one of \('torch', 'tf'\)"):
        build(backbone=cfg)


# --- keeping the Stage I head ---------------------------------------------
def save_stage1(path, gated: bool = True) -> torch.nn.Module:
    """A Stage I supernet (with the gate, as DS-ViT's, or without), its
    slimming head set to known values."""
    torch.manual_seed(1)
    stage1 = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS,
                      **(dict(gate=backbone_cfg()['gate']) if gated else {})),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24)))
    if gated:
        with torch.no_grad():
            stage1.backbone.layers[1][0].se.slim_head.weight.copy_(
                torch.arange(12.).reshape(4, 3, 1, 1))
    torch.save(dict(state_dict=stage1.state_dict()), path)
    return stage1


def test_keep_stage1_head_loads_the_stage1_slimming_head(tmp_path):
    stage1 = save_stage1(tmp_path / 's1.pth')
    expected = stage1.backbone.layers[1][0].se.slim_head.weight
    kept = build(stage1_checkpoint=str(tmp_path / 's1.pth'),
                 keep_stage1_head=True)
    kept.init_weights()
    assert torch.equal(kept.gate.slim_head.weight, expected)
    assert torch.equal(kept.head.fc.weight, stage1.head.fc.weight)
    fresh = build(stage1_checkpoint=str(tmp_path / 's1.pth'))
    init = fresh.gate.slim_head.weight.detach().clone()
    fresh.init_weights()
    assert torch.equal(fresh.gate.slim_head.weight, init)
    assert not torch.equal(init, expected)
    assert torch.equal(fresh.head.fc.weight, stage1.head.fc.weight)


def test_keep_stage1_head_refuses_a_checkpoint_without_the_gate(tmp_path):
    save_stage1(tmp_path / 's1.pth', gated=False)
    model = build(stage1_checkpoint=str(tmp_path / 's1.pth'),
                  keep_stage1_head=True)
    with pytest.raises(ValueError, match='keep_stage1_head=True but the '
                       'Stage I checkpoint .* holds no slimming head'):
        model.init_weights()


# --- Stage I: the EMA teacher validated beside the student ---------------
def stage1_model():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5)))
    teacher = model.teacher.module
    with torch.no_grad():  # a teacher unlike the student
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.5)
        for m in teacher.modules():
            if isinstance(m, DSBatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model


def dataset(n=24):
    data = batch(n)
    return [dict(inputs=i, data_samples=s)
            for i, s in zip(data['inputs'], data['data_samples'])]


def val_runner(model, tmp_path, **loop):
    loader = dict(dataset=dataset(), batch_size=8, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False))
    return Runner(
        model=model, work_dir=str(tmp_path), val_dataloader=loader,
        val_evaluator=dict(type='Accuracy', topk=(1, )),
        val_cfg=dict(type='SubnetValLoop', subnets=['smallest', 'largest'],
                     **loop),
        default_scope='mmpretrain', experiment_name=tmp_path.name)


def accuracy(logits, labels) -> float:
    return (logits.argmax(-1) == labels).float().mean().item() * 100


def test_ema_validation_reports_the_teacher_beside_the_model(tmp_path):
    model = stage1_model()
    metrics = val_runner(model, tmp_path, calibrate=None, ema=True).val()
    data = model.data_preprocessor(batch(24), False)
    labels = torch.cat([s.gt_label for s in data['data_samples']])
    model.eval()
    with torch.no_grad():
        for spec in (model.space.smallest, model.space.largest):
            own = accuracy(model(data['inputs'], mode='tensor', spec=spec),
                           labels)
            ema = accuracy(model.teacher_logits(data['inputs'], spec),
                           labels)
            assert metrics[f'{spec.name}/accuracy/top1'] == \
                pytest.approx(own)
            assert metrics[f'ema/{spec.name}/accuracy/top1'] == \
                pytest.approx(ema)
            assert metrics[f'ema/{spec.name}/madds'] == \
                metrics[f'{spec.name}/madds']
    assert metrics['ema/largest/accuracy/top1'] != \
        metrics['largest/accuracy/top1']
    # the model's own parts are back in place
    assert model.backbone is not model.teacher.module['backbone']


def test_ema_validation_recalibrates_the_teacher_and_puts_it_back(
        tmp_path, monkeypatch):
    model = stage1_model()
    teacher = model.teacher.module
    # the teacher recalibrated on the calibration batches, as expected
    twin = copy.deepcopy(model)
    for name, part in teacher.items():
        getattr(twin, name).load_state_dict(part.state_dict())
    data = batch(24)
    batches = [dict(inputs=data['inputs'][i:i + 8],
                    data_samples=data['data_samples'][i:i + 8])
               for i in (0, 8)]
    expected = {}
    for spec in (twin.space.smallest, twin.space.largest):
        calibrate_bn(twin, batches, spec, 2)
        expected[spec.name] = twin.backbone.stem.bn.running_mean[
            spec.stats].clone()
    # what the teacher's statistics are while the loop evaluates it
    seen = {}
    evaluate = SubnetValLoop._evaluate

    def spy(loop):
        if loop.model.backbone is teacher['backbone']:
            spec = loop.model.backbone.active_subnet
            seen[spec.name] = teacher['backbone'].stem.bn.running_mean[
                spec.stats].clone()
        return evaluate(loop)

    monkeypatch.setattr(SubnetValLoop, '_evaluate', spy)
    norms = [m for m in teacher.modules() if isinstance(m, DSBatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    student = model.backbone.stem.bn.running_mean.clone()
    loader = dict(dataset=dataset(), batch_size=8, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False))
    metrics = val_runner(model, tmp_path, ema=True,
                         calibrate=dict(num_batches=2,
                                        dataloader=loader)).val()
    assert set(seen) == set(expected)
    for name in expected:
        assert f'ema/{name}/accuracy/top1' in metrics
    for name in expected:
        torch.testing.assert_close(seen[name], expected[name])
    # put back afterwards: the targets training goes on with are unchanged
    for m, old in zip(norms, before):
        assert torch.equal(m.running_mean, old)
    # the model's own statistics were recalibrated, as without ema
    assert not torch.equal(model.backbone.stem.bn.running_mean, student)


def test_ema_validation_needs_a_teacher(tmp_path):
    model = build()
    runner = val_runner(model, tmp_path, calibrate=None, ema=True)
    with pytest.raises(ValueError, match='ema=True in the val loop needs a '
                       'model with an EMA teacher'):
        runner.val()
