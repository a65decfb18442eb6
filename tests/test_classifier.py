# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Stage I: the sandwich step, its teachers and its single optimizer step."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import dsnet_mm  # noqa: F401 (registers the DS modules)

init_default_scope('mmpretrain')

ARCH = dict(stem=(8, 1), stages=[('stage1', 12, 1, 2), ('stage2', 16, 1, 2)])
SUBNETS = dict(smallest=dict(stem=4, stage1=6, stage2=4),
               widest=dict(stem=4, stage1=6, stage2=16), num=7)


def build(bootstrap='ib', **kwargs):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSMobileNetV1', arch=ARCH, subnets=SUBNETS),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=16),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5),
        bootstrap=bootstrap, **kwargs))


def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return dict(inputs=[torch.rand(3, 12, 12, generator=g) * 255
                        for _ in range(n)],
                data_samples=[DataSample().set_gt_label(i % 5)
                              for i in range(n)])


def optim(model):
    return OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1))


def record_distill_targets(model):
    calls = []
    real = model.distill_loss.forward

    def spy(logits, target):
        calls.append((logits.shape[-1], target.detach().clone()))
        return real(logits, target)

    model.distill_loss.forward = spy
    return calls


def teacher_probs(model, inputs, spec):
    t = model.teacher.module
    with torch.no_grad(), t.backbone.subnet(spec):
        return F.softmax(t.head(t.neck(t.backbone(inputs))), -1)


def perturb_teacher(model):
    """Make the EMA teacher differ from the student, as after training."""
    model.train_step(batch(), optim(model))
    with torch.no_grad():
        for p in model.teacher.module.parameters():
            p.add_(torch.randn_like(p) * 0.05)


def test_ib_targets_come_from_the_ema_teacher_as_largest():
    model = build('ib')
    perturb_teacher(model)
    calls = record_distill_targets(model)
    data = batch()
    inputs = model.data_preprocessor(data, True)['inputs']
    expected = teacher_probs(model, inputs, model.space.largest)
    model.train_step(data, optim(model))
    assert len(calls) == 3  # two random widths and the smallest
    for _, target in calls:
        torch.testing.assert_close(target, expected)


def test_ieb_teacher_runs_the_same_widths_as_the_students():
    model = build('ieb')
    perturb_teacher(model)
    calls = record_distill_targets(model)
    randoms = model.sample_random_subnets()  # what this step will draw
    data = batch()
    inputs = model.data_preprocessor(data, True)['inputs']
    largest = teacher_probs(model, inputs, model.space.largest)
    ensemble = [largest] + [teacher_probs(model, inputs, s) for s in randoms]
    model.train_step(data, optim(model))
    for _, target in calls[:-1]:
        torch.testing.assert_close(target, largest)
    torch.testing.assert_close(calls[-1][1], torch.stack(ensemble).mean(0))
    assert not torch.allclose(calls[-1][1], largest)


def test_inplace_distillation_uses_the_live_largest():
    model = build('inplace', largest_dropout=0.0)
    perturb_teacher(model)
    calls = record_distill_targets(model)
    data = batch()
    inputs = model.data_preprocessor(data, True)['inputs']
    model.train()
    with torch.no_grad(), model.backbone.subnet('largest'):
        # running the same batch in train mode gives the live largest output
        expected = F.softmax(model.head(model.extract_feat(inputs)), -1)
    model.train_step(data, optim(model))
    for _, target in calls:
        torch.testing.assert_close(target, expected)


def test_one_optimizer_step_per_iteration_over_all_sandwich_widths():
    model = build()
    wrapper = optim(model)
    steps = []
    real_step = wrapper.optimizer.step
    wrapper.optimizer.step = lambda *a, **k: (steps.append(1),
                                              real_step(*a, **k))
    widths = []
    real_forward = model.backbone.forward
    model.backbone.forward = lambda x: (widths.append(
        model.backbone.active_subnet.name), real_forward(x))[1]
    log = model.train_step(batch(), wrapper)
    assert len(steps) == 1
    randoms = [f'subnet_{int(log[f"subnet_random{i}"])}' for i in range(2)]
    assert widths == ['largest', *randoms, 'subnet_0']
    assert set(log) >= {'loss', 'loss_largest', 'loss_random0',
                        'loss_random1', 'loss_smallest'}
    total = sum(log[k] for k in ('loss_largest', 'loss_random0',
                                 'loss_random1', 'loss_smallest'))
    assert log['loss'] == pytest.approx(float(total), rel=1e-5)


# one weight for every width, or one per sub-network (7 here): the weight of
# index i is 0.1 * (i + 1), so every student's weight differs
@pytest.mark.parametrize('weight', [0.0, 0.5, [0.1 * (i + 1)
                                               for i in range(7)]])
def test_student_label_weight_adds_the_labels_loss_to_each_student(weight):
    """Every width but the largest learns from its soft target plus its
    ``student_label_weight`` times the head's loss on the labels."""
    model = build(student_label_weight=weight, seed=1)
    per_index = weight if isinstance(weight, list) else [weight] * 7
    seen = []
    real = model.distill_loss.forward

    def spy(logits, target):
        seen.append((logits.detach().clone(), target.detach().clone()))
        return real(logits, target)

    model.distill_loss.forward = spy
    data = batch()
    log = model.train_step(data, optim(model))
    assert len(seen) == 3  # two random widths, the smallest
    indices = [int(log['subnet_random0']), int(log['subnet_random1']), 0]
    assert len(set(indices)) == 3  # three different weights are checked
    for kind, index, (logits, target) in zip(
            ('random0', 'random1', 'smallest'), indices, seen):
        labels = model.head._get_loss(logits, data['data_samples'])['loss']
        expected = real(logits, target) + per_index[index] * labels
        assert float(log[f'loss_{kind}']) == pytest.approx(
            float(expected), rel=1e-5)


@pytest.mark.parametrize('weight, message', [
    (-1.0, 'student_label_weight must be a number >= 0'),
    ([0.5] * 6, r'one weight per sub-network \(7\), got 6'),
    ([0.5] * 6 + [-1], r'student_label_weight\[6\] must be a number'),
])
def test_bad_student_label_weight_is_refused(weight, message):
    with pytest.raises(ValueError, match=message):
        build(student_label_weight=weight)


def test_random_widths_are_reproducible_and_skip_the_smallest():
    model = build()
    draws = []
    for it in range(20):
        model.sandwich_iter.fill_(it)
        draws.append([s.position for s in model.sample_random_subnets()])
    assert all(1 <= k <= 6 for d in draws for k in d)
    assert len({k for d in draws for k in d}) > 3
    model.sandwich_iter.fill_(7)
    assert [s.position for s in model.sample_random_subnets()] == draws[7]


def test_teacher_is_an_exponential_moving_average():
    model = build(ema_momentum=0.25)
    wrapper = optim(model)
    model.train_step(batch(), wrapper)  # first step: teacher starts as a copy
    t_before = model.teacher.module.head.fc.weight.clone()
    model.train_step(batch(), wrapper)
    s_after = model.head.fc.weight.detach()
    torch.testing.assert_close(model.teacher.module.head.fc.weight,
                               0.75 * t_before + 0.25 * s_after)
    assert not any(p.requires_grad for p in model.teacher.parameters())


def test_non_ds_backbone_is_refused():
    with pytest.raises(ValueError, match='not a DS backbone'):
        MODELS.build(dict(type='DSImageClassifier',
                          backbone=dict(type='ResNet', depth=18),
                          head=dict(type='LinearClsHead', num_classes=2,
                                    in_channels=512)))


def test_unknown_bootstrap_mode_lists_the_allowed():
    with pytest.raises(ValueError, match=r"bootstrap='kd' is not one of "
                       r"\('ib', 'ieb', 'inplace'\)"):
        build('kd')


def test_nan_loss_stops_with_the_iteration_and_subnet():
    model = build()
    wrapper = optim(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.distill_loss.forward = lambda logits, target: logits.sum() * float(
        'nan')
    with pytest.raises(FloatingPointError,
                       match=r'loss is nan at sandwich iteration 0 in '
                       r'sub-network subnet_\d+'):
        model.train_step(batch(), wrapper)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before
               if not k.startswith('teacher.') and 'running' not in k
               and 'num_batches' not in k)
