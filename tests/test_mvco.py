# Copyright (c) dsnet_mm contributors. All rights reserved.
"""MvCo: view-averaged and cross-view targets on hand-made numbers, the
consistency term, the Stage I step on two views, and the multi-view
preprocessor that mixes every view of an image alike."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.models.mvco import (cross_view_target, view_mean_target,
                                  views_symmetric_kl)
from test_ds_vit import ARCH, LADDER

init_default_scope('mmpretrain')

# two views (view-major rows) of two images, three classes
PROBS = torch.tensor([[0.6, 0.3, 0.1],   # image 0, view 0
                      [0.2, 0.2, 0.6],   # image 1, view 0
                      [0.4, 0.5, 0.1],   # image 0, view 1
                      [0.0, 0.4, 0.6]])  # image 1, view 1


def test_view_mean_target_is_the_average_over_each_images_views():
    target = view_mean_target(PROBS, 2)
    mean = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.3, 0.6]])
    torch.testing.assert_close(target, torch.cat([mean, mean]))


def test_cross_view_target_is_the_other_views():
    torch.testing.assert_close(cross_view_target(PROBS, 2, 0), PROBS[2:])
    torch.testing.assert_close(cross_view_target(PROBS, 2, 1), PROBS[:2])
    three = torch.cat([PROBS, PROBS[:2].flip(-1)])
    torch.testing.assert_close(cross_view_target(three, 3, 2),
                               (PROBS[:2] + PROBS[2:]) / 2)
    with pytest.raises(ValueError, match='not 3 views'):
        view_mean_target(PROBS, 3)


def test_symmetric_kl_between_views():
    logits = PROBS.clamp(min=1e-3).log()
    p, q = F.softmax(logits[:2], -1), F.softmax(logits[2:], -1)
    expected = ((p * (p / q).log()).sum(-1) +
                (q * (q / p).log()).sum(-1)).mean()
    torch.testing.assert_close(views_symmetric_kl(logits, 2), expected)
    same = torch.cat([logits[:2], logits[:2]])
    assert views_symmetric_kl(same, 2).abs() < 1e-7


class RecordingLoss(nn.Module):
    """Soft-target CE that keeps each call's input rows and target."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, logits, target):
        self.calls.append((logits.shape[0], target.detach().clone()))
        return torch.sum(-target * F.log_softmax(logits, -1), -1).mean()


def build(**kwargs):
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSViT', arch=ARCH, img_size=16, patch_size=4,
                      subnets=LADDER),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32),
        data_preprocessor=dict(type='MultiViewClsDataPreprocessor',
                               num_classes=5),
        **kwargs))
    model.distill_loss = RecordingLoss()
    return model


def two_view_batch(n=4):
    g = torch.Generator().manual_seed(3)
    views = [[torch.rand(3, 16, 16, generator=g) * 255 for _ in range(n)]
             for _ in range(2)]
    return dict(inputs=views, data_samples=[DataSample().set_gt_label(i % 5)
                                            for i in range(n)])


def teacher_probs(model, data, spec=None):
    """The EMA teacher (at ``spec``, default the largest), on each view
    separately."""
    views = model.data_preprocessor(data, False)['inputs']
    spec = model.space.largest if spec is None else spec
    with torch.no_grad():
        return [F.softmax(model.teacher_logits(v, spec), -1) for v in views]


def step(model, data):
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    model.train()
    return model.train_step(data, optim)


def test_view_mean_students_learn_the_teachers_view_average():
    model = build(mvco=dict(mode='view_mean'))
    data = two_view_batch()
    p0, p1 = teacher_probs(model, data)
    log = step(model, data)
    mean = (p0 + p1) / 2
    assert len(model.distill_loss.calls) == 3  # two random, the smallest
    for rows, target in model.distill_loss.calls:
        assert rows == 8  # every member sees both views
        torch.testing.assert_close(target, torch.cat([mean, mean]))
    assert 'loss_consistency' not in log


def test_cross_view_students_see_one_view_and_learn_the_other():
    model = build(mvco=dict(mode='cross_view'), bootstrap='ieb')
    data = two_view_batch()
    p0, p1 = teacher_probs(model, data)
    ensemble = [teacher_probs(model, data, s)[1]
                for s in model.sample_random_subnets()]
    step(model, data)
    (r0, t0), (r1, t1), (r2, t2) = model.distill_loss.calls
    assert (r0, r1, r2) == (4, 4, 4)  # round-robin: views 0, 1, 0
    torch.testing.assert_close(t0, p1)
    torch.testing.assert_close(t1, p0)
    # IEB: the smallest (on view 0) learns the teacher's ensemble of the
    # largest and the sampled widths on view 1
    torch.testing.assert_close(t2, torch.stack([p1, *ensemble]).mean(0))


@pytest.mark.parametrize('mode, rows', [('view_mean', 8), ('cross_view', 4)])
def test_students_label_loss_reads_the_labels_of_the_views_they_see(
        mode, rows):
    """With ``student_label_weight`` each student's label loss gets one
    label per row it ran: both views' (view_mean) or one view's
    (cross_view)."""
    model = build(mvco=dict(mode=mode), student_label_weight=0.5)
    seen, real = [], model.head._get_loss

    def spy(logits, samples, **kwargs):
        seen.append((logits.shape[0],
                     [int(s.gt_label) for s in samples]))
        return real(logits, samples, **kwargs)

    model.head._get_loss = spy
    step(model, two_view_batch())
    labels = [i % 5 for i in range(4)]
    # the largest on both views, then the three students
    assert seen == [(8, labels * 2)] + [(rows, labels * (rows // 4))] * 3


def test_largest_consistency_adds_the_weighted_symmetric_kl():
    data = two_view_batch()
    logs = {w: step(build(mvco=dict(mode='largest_consistency',
                                    consistency_weight=w)), data)
            for w in (0.0, 2.0)}
    assert logs[0.0]['loss_consistency'] == 0
    assert logs[2.0]['loss_consistency'] > 0
    torch.testing.assert_close(
        logs[2.0]['loss_largest'] - logs[2.0]['loss_consistency'],
        logs[0.0]['loss_largest'])


def test_views_and_mvco_must_go_together():
    with pytest.raises(ValueError, match='holds 2 views .* mvco is not set'):
        step(build(), two_view_batch())
    single = dict(inputs=[torch.rand(3, 16, 16) for _ in range(2)],
                  data_samples=[DataSample().set_gt_label(0)] * 2)
    with pytest.raises(ValueError, match="wrap the train pipeline's"):
        step(build(mvco=dict(mode='view_mean')), single)
    with pytest.raises(ValueError, match=r"mvco\.mode='a' is not one of"):
        build(mvco=dict(mode='a'))
    with pytest.raises(ValueError,
                       match=r"mvco takes only the keys \['mode', "):
        build(mvco=dict(mode='view_mean', views=2))


def test_preprocessor_mixes_every_view_with_the_same_partner_and_ratio():
    pre = MODELS.build(dict(
        type='MultiViewClsDataPreprocessor', num_classes=5,
        batch_augments=dict(augments=[dict(type='Mixup', alpha=1.0)])))
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 8, 8, generator=g) * 255 for _ in range(6)]
    samples = [DataSample().set_gt_label(i % 5) for i in range(6)]
    # view 1 is view 0 plus a constant: mixed alike, it stays that plus
    # the constant
    data = dict(inputs=[images, [im + 10 for im in images]],
                data_samples=samples)
    out = pre(data, True)
    v0, v1 = out['inputs']
    torch.testing.assert_close(v1 - v0, torch.full_like(v0, 10.0), atol=1e-4,
                               rtol=0)
    scores = torch.stack([s.gt_score for s in out['data_samples']])
    assert not torch.equal(scores, F.one_hot(torch.arange(6) % 5, 5).float())
    torch.testing.assert_close(scores.sum(-1), torch.ones(6))
    # single-view batches are ClsDataPreprocessor's
    single = pre(dict(inputs=images, data_samples=None), False)['inputs']
    assert single.shape == (6, 3, 8, 8)
