# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The progressive sub-network search: noise, reordering, greedy steps,
fine-tuning, re-selection, resume, outputs and bad options."""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import dsnet_mm  # noqa: F401 (registers)
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.ops import DSBatchNorm2d, cumulative_bn_stats
from dsnet_mm.search import (ProgressiveSearch, SearchRunner,
                             add_channel_noise, check_search_args,
                             classifier_axes, search_options,
                             noise_alphas, pareto_front, permute_channels,
                             remove_channel_noise, reselect, subnet_list)
from dsnet_mm.search.training import logits_at, madds_at, sgd

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS = osp.join(ROOT, 'configs', 'ds_mbnet_digits.py')
DIGITS_GATE = osp.join(ROOT, 'configs', 'ds_mbnet_digits_gate.py')


def digits_model():
    torch.manual_seed(0)
    return build_model_from_cfg(Config.fromfile(DIGITS))


def batches(num=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        out.append(dict(
            inputs=[torch.randint(0, 255, (3, 32, 32), generator=g,
                                  dtype=torch.uint8) for _ in range(size)],
            data_samples=[DataSample().set_gt_label(int(k)) for k in
                          torch.randint(0, 10, (size, ), generator=g)]))
    return out


@torch.no_grad()
def randomise_norms(model, x):
    """Random BN affine parameters, then statistics estimated on ``x`` (so
    activations neither vanish nor explode through the layers)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, DSBatchNorm2d):
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    model.train()
    with cumulative_bn_stats(model):
        model(x)
    model.eval()


# --- trainable noise ----------------------------------------------------
def test_noise_alpha_gets_gradients_and_no_weight_decay():
    model = digits_model()
    axes = classifier_axes(model)
    names = add_channel_noise(model, axes)
    assert len(names) == sum(len(v) for v in axes.producers.values())
    alphas = list(noise_alphas(model))
    assert alphas and all(not a.detach().any() for a in alphas)
    start = dict(model.backbone.space[-1])
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    clean = logits_at(model, x, start)
    with torch.no_grad():
        for a in alphas:
            a.fill_(0.5)
    assert torch.equal(logits_at(model, x, start), clean)  # eval: no noise
    model.train()
    loss = logits_at(model, x, start).logsumexp(1).mean()
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)
    optimizer = sgd(model, 0.1, weight_decay=1e-4)
    decayed = {id(p) for g in optimizer.param_groups if g['weight_decay']
               for p in g['params']}
    assert decayed and not decayed & {id(a) for a in alphas}
    # removal keeps the weights and reports |alpha| per producing conv
    model.eval()
    trained = logits_at(model, x, start)
    scales = remove_channel_noise(model, axes)
    assert not list(noise_alphas(model))
    assert all(torch.allclose(s, torch.full_like(s, 0.5))
               for s in scales.values())
    assert torch.equal(logits_at(model, x, start), trained)


# --- reordering -----------------------------------------------------------
RESNET_HEAD = dict(type='DSLinearClsHead', num_classes=10)


def built(backbone: dict, feat: int):
    """A classifier over ``backbone`` (``feat`` output channels) in float64,
    so that a bar measures the reordering, not the summation order of
    float32 convolutions, with randomised BN statistics and affines."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSImageClassifier', backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(RESNET_HEAD, in_channels=feat)))
    model.double()
    randomise_norms(model, torch.randn(8, 3, 32, 32, dtype=torch.float64))
    return model


@pytest.mark.parametrize('backbone,feat', [
    (dict(type='DSMobileNetV1', arch='cifar',
          gate=dict(stage='stage3', window=(0, 4), features='pooled')), 1152),
    (dict(type='DSResNet', depth=18, stem='cifar', stem_channels=8,
          base_channels=8), 64),
    (dict(type='DSResNet', depth=50, stem='cifar', stem_channels=8,
          base_channels=4, se_stage='layer3'), 128),
    # the deep stem's groups and the average-pooling projections
    (dict(type='DSResNetV1d', depth=50, stem_channels=8, base_channels=4),
     128),
])
def test_reordering_keeps_the_function(backbone, feat):
    model = built(backbone, feat)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = model(x)
    assert ref.std() > 0.1  # the activations reach the logits
    axes = classifier_axes(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(2)
    perms = {group: torch.randperm(w, generator=g)
             for group, w in model.backbone.space.max_widths.items()}
    permute_channels(model, axes, perms)
    assert (model(x) - ref).abs().max() < 1e-5
    assert any(not torch.equal(state[k], v)
               for k, v in model.state_dict().items())
    # every listed axis matters: leaving one out changes the function
    model.load_state_dict(state)
    group = max(axes.axes, key=lambda k: len(axes.axes[k]))
    axes.axes[group] = axes.axes[group][1:]
    permute_channels(model, axes, {group: perms[group]})
    assert (model(x) - ref).abs().max() > 1e-3


def test_permutation_is_checked():
    model = digits_model()
    axes = classifier_axes(model)
    with pytest.raises(ValueError, match='permutation'):
        permute_channels(model, axes, {'stage5': torch.zeros(288)})
    with pytest.raises(ValueError, match='unknown width group'):
        permute_channels(model, axes, {'nope': torch.arange(3)})


# --- the greedy step and fine-tuning -----------------------------------------
class ScriptedSearch(ProgressiveSearch):
    """Scores from a formula of the widths: removing ``cost`` per group."""

    def __init__(self, model, cost, **kwargs):
        self.cost = cost
        self.scored = []
        super().__init__(model, held_out=[], train_batches=lambda s: batches(
            seed=s % 1000), **kwargs)

    def evaluate(self, widths):
        self.evaluations += 1
        self.scored.append(dict(widths))
        acc = 95.0 - sum(c * (self.start[g] - widths[g])
                         for g, c in self.cost.items())
        return dict(accuracy=acc, loss=(100 - acc) / 10)


def scripted(cost, **kwargs):
    model = digits_model()
    start = dict(model.backbone.space[-1])
    kwargs = dict(dict(groups=['stage4', 'stage5'], input_shape=(3, 32, 32),
                       num_groups=4, threshold=None), **kwargs)
    return ScriptedSearch(model, cost, start=start, **kwargs), start


@pytest.mark.parametrize('criterion', ['accuracy', 'loss'])
def test_greedy_step_commits_the_cheapest_removal(criterion):
    # removing a stage5 channel costs 0.01 points, a stage4 one 0.1
    search, start = scripted(dict(stage4=0.1, stage5=0.01),
                             criterion=criterion)
    first = search.step()
    assert first['removed'] is None and first['widths'] == start
    step = search.step()
    assert step['removed'] == 'stage5'
    assert step['widths'] == dict(start, stage5=216)  # 288 * 3/4
    # both candidates were scored, each once
    assert search.scored[-2:] == [dict(start, stage4=120),
                                  dict(start, stage5=216)]
    assert step['madds'] < first['madds']
    # the cheaper group changes: stage4 is removed next
    search.cost = dict(stage4=0.001, stage5=0.01)
    assert search.step()['removed'] == 'stage4'


def test_search_runs_to_the_minimum_of_every_group():
    search, start = scripted(dict(stage4=0.1, stage5=0.01), min_ratio=0.25)
    trajectory = search.run()
    assert search.done and len(trajectory) == search.total_steps() == 7
    assert trajectory[-1]['widths'] == dict(start, stage4=40, stage5=72)
    madds = [r['madds'] for r in trajectory]
    assert madds == sorted(madds, reverse=True)
    with pytest.raises(RuntimeError, match='done'):
        search.step()


def test_finetuning_only_below_the_threshold_and_within_its_budget():
    # above the threshold: no fine-tuning, weights untouched
    search, _ = scripted(dict(stage4=0.1, stage5=0.01), threshold=50.0,
                         finetune_iters=5, check_interval=2)
    before = {k: v.clone() for k, v in search.model.state_dict().items()}
    search.step()
    step = search.step()
    assert not step['fine_tuned'] and step['finetune_iters'] == 0
    assert all(torch.equal(before[k], v)
               for k, v in search.model.state_dict().items())
    # never reaching it: exactly the budget, checked at 2, 4 and 5 steps
    search, _ = scripted(dict(stage4=0.1, stage5=0.01), threshold=99.0,
                         finetune_iters=5, check_interval=2)
    search.step()
    evaluations = search.evaluations
    step = search.step()
    assert step['fine_tuned'] and step['finetune_iters'] == 5
    assert search.evaluations - evaluations == 2 + 3
    assert any(not torch.equal(before[k], v)
               for k, v in search.model.state_dict().items())


def test_finetuning_stops_once_above_the_threshold():
    # the best removal scores 94.28, below 94.5: fine-tuning starts
    search, _ = scripted(dict(stage4=0.1, stage5=0.01), threshold=94.5,
                         finetune_iters=50, check_interval=3)
    search.step()
    search.model.eval()
    base = search.evaluate

    def recovering(widths):  # the first check after training passes
        score = base(widths)
        if search.model.training:
            score['accuracy'] = 95.0
        return score

    search.evaluate = recovering
    step = search.step()
    assert step['fine_tuned'] and step['finetune_iters'] == 3
    assert step['score'] == 95.0


# --- re-selection ---------------------------------------------------------
def test_reselection_keeps_both_ends_and_only_pareto_points():
    trajectory = [dict(madds=m, score=s) for m, s in [
        (100, 90), (90, 91), (80, 85), (70, 86), (60, 80), (50, 70),
        (40, 72), (30, 60), (20, 50), (10, 20)]]
    front = pareto_front(trajectory)
    assert front == [1, 3, 4, 6, 7, 8, 9]  # 0 (dominated by 1), 2, 5 out
    kept = reselect(trajectory, 5)
    assert kept[0] == 0 and kept[-1] == 9 and len(kept) == 5
    assert set(kept[1:-1]) <= set(front)
    assert reselect(trajectory, 2) == [0, 9]
    assert reselect(trajectory, 50) == sorted({0, 9, *front})
    with pytest.raises(ValueError, match='num_keep'):
        reselect(trajectory, 1)
    steps = [dict(widths=dict(a=w), madds=w, score=w) for w in (4, 3, 2)]
    assert subnet_list(steps, [0, 2]) == [dict(a=2), dict(a=4)]


def test_only_points_scored_by_the_same_weights_dominate():
    """A fine-tuned step scores a network trained further: the wider points
    before it, scored lower by older weights, stay on the front."""
    trajectory = [dict(madds=m, score=s, fine_tuned=f) for m, s, f in [
        (100, 77, False), (90, 75, False), (80, 73, False), (70, 74, True),
        (60, 72, False), (50, 73, True), (40, 71, False), (30, 70, True)]]
    # without segments every point from 1 to 4 would be dominated by 5
    assert pareto_front(trajectory) == [0, 1, 2, 3, 4, 5, 6, 7]
    # within a segment the rule holds: (60, 72) is dominated by a cheaper,
    # better point scored by the same weights
    trajectory.insert(5, dict(madds=55, score=76, fine_tuned=False))
    front = pareto_front(trajectory)
    assert 3 not in front and 4 not in front
    assert {0, 1, 2, 5} <= set(front)  # the earlier segment is not compared
    kept = reselect(trajectory, 5)
    assert kept[0] == 0 and kept[-1] == len(trajectory) - 1
    assert len(kept) == 5


# --- the whole search: resume, outputs, bad options -------------------------
SMALL = dict(ranking='l1', base_epochs=1, groups=4, held_out=200,
             threshold=95.0, finetune_iters=4, check_interval=2,
             num_keep=4, search_groups=['stage4', 'stage5'])


def small_runner(work_dir, model=None, **overrides):
    cfg = Config.fromfile(DIGITS)
    cfg.model.update(model or {})
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.val_dataloader.num_workers = 0
    cfg.val_dataloader.persistent_workers = False
    return SearchRunner(cfg, DIGITS, str(work_dir),
                        dict(SMALL, **overrides), gate_config=DIGITS_GATE,
                        log=lambda line: None)


def read(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('search')
    paths = small_runner(work_dir).run()
    return work_dir, paths


def test_stopped_and_resumed_search_equals_an_uninterrupted_one(
        finished, tmp_path):
    work_dir, paths = finished
    runner = small_runner(tmp_path)
    assert runner.run(max_steps=3) is None
    state = torch.load(osp.join(tmp_path, 'search_state.pth'),
                       weights_only=True)
    assert len(state['search']['trajectory']) == 3
    resumed = small_runner(tmp_path).run()
    full = read(paths['trajectory'])
    again = read(resumed['trajectory'])
    assert any(s['fine_tuned'] for s in full['steps'])
    for key in ('steps', 'kept', 'evaluations'):
        assert again[key] == full[key]
    assert read(resumed['subnets']) == read(paths['subnets'])
    a = torch.load(osp.join(work_dir, 'search_state.pth'), weights_only=True)
    b = torch.load(osp.join(tmp_path, 'search_state.pth'), weights_only=True)
    for part in ('backbone', 'head'):
        for k, v in a['search']['model'][part].items():
            assert torch.equal(v, b['search']['model'][part][k]), k


def test_outputs_train_a_step(finished):
    work_dir, paths = finished
    record = read(paths['trajectory'])
    subnets = read(paths['subnets'])
    # at most num_keep=4: re-selection keeps only Pareto points, and how
    # many a tiny search has depends on its scores (they differ by machine)
    assert 2 <= len(subnets['searched']) == len(record['kept']) <= 4
    assert subnets['searched'][-1] == record['steps'][0]['widths']
    assert osp.getsize(paths['plot']) > 1000
    for name, sampling in (('searched', 'list'), ('uniform', 'usnet')):
        cfg = Config.fromfile(paths[name])
        model = build_model_from_cfg(cfg)
        assert model.sampling == sampling
        expected = subnets[name]
        assert [dict(s) for s in model.backbone.space] == expected
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
        before = model.backbone.stem.conv.weight.clone()
        log = model.train_step(batches(1)[0], optim)
        assert torch.isfinite(log['loss'])
        assert not torch.equal(before, model.backbone.stem.conv.weight)
    # Stage II over the searched list: the gate config's window (all 14 of
    # the ladder) carried over by MAdds: from the searched sub-network
    # nearest to the ladder's narrowest up to the widest
    cfg = Config.fromfile(paths['searched_gate'])
    cfg.model.stage1_checkpoint = None
    model = build_model_from_cfg(cfg)
    window = [dict(s) for s in model.backbone.window]
    first = subnets['searched'].index(window[0])
    assert window == subnets['searched'][first:]
    ladder = build_model_from_cfg(Config.fromfile(DIGITS_GATE))
    target = madds_at(ladder, ladder.backbone.space[0], (3, 32, 32))
    gaps = [abs(madds_at(model, w, (3, 32, 32)) - target)
            for w in subnets['searched']]
    assert gaps.index(min(gaps)) == first
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    # the uniform list is one ratio per sub-network, matched in MAdds
    start = subnets['searched'][-1]
    for widths in subnets['uniform']:
        r4, r5 = (widths[g] / start[g] for g in ('stage4', 'stage5'))
        assert abs(r4 - r5) < 0.02


def test_per_subnet_label_weights_follow_the_nearest_in_madds(tmp_path):
    """A config's per-sub-network ``student_label_weight`` carried over to
    the written lists: the ends keep theirs, a member nearest in MAdds to
    some ladder members takes the largest of their weights, any other the
    weight of the ladder member nearest to it."""
    weights = [0.0] + [1.0] * 6 + [0.5] * 6 + [0.25]
    runner = small_runner(tmp_path, model=dict(student_label_weight=weights))
    space = runner.model.backbone.space
    ladder = [dict(s) for s in space]
    assert runner.mapped_label_weights(ladder) == dict(
        student_label_weight=weights)
    # subnet_6 a little wider: still nearest to subnet_6 (weight 1); the
    # list's own smallest and widest keep the ladder's ends' weights
    wider6 = dict(ladder[6], stage5=ladder[6]['stage5'] + 1)
    mapped = runner.mapped_label_weights([ladder[1], wider6, ladder[9]])
    assert mapped == dict(student_label_weight=[0.0, 1.0, 0.25])
    # a member between subnet_6 and subnet_7, nearer to subnet_7, but the
    # list's nearest to subnet_6 (where the window's narrow end goes): it
    # learns from the labels as subnet_6 does
    below7 = dict(ladder[7], stage5=ladder[7]['stage5'] - 1)
    mapped = runner.mapped_label_weights([ladder[0], below7, ladder[13]])
    assert mapped == dict(student_label_weight=[0.0, 1.0, 0.25])
    # one weight for every width: nothing is written
    assert small_runner(tmp_path / 'one').mapped_label_weights(ladder) == {}


@pytest.mark.parametrize('overrides,match', [
    (dict(held_out=5000), 'held_out=5000 must be smaller'),
    (dict(groups=200), r'groups \(G=200\) is larger'),
    (dict(min_ratio=0.0), r'min_ratio must be a number in \(0, 1\]'),
    (dict(min_ratio=1.5), r'min_ratio must be a number in \(0, 1\]'),
    (dict(ranking='random'), "search ranking='random' is not one of"),
    (dict(finetune_iters='10'), 'finetune_iters must be an int'),
    (dict(colour='red'), r"unknown search option\(s\) \['colour'\]"),
])
def test_bad_options_fail_before_any_work(tmp_path, overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        small_runner(tmp_path / 'w', **overrides)
    assert not osp.exists(tmp_path / 'w')


@pytest.mark.parametrize('name,groups', [
    ('ds_mbnet_graded_digits_search.py',
     ['stage2', 'stage3', 'stage4', 'stage5']),
    ('ds_mbnet_imagenet_search.py', ['stage4', 'stage5']),
    ('ds_resnet18_imagenet_search.py', None),
])
def test_search_configs_are_valid(name, groups):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'search', name))
    options = search_options(cfg.search, {})
    space = build_model_from_cfg(cfg).backbone.space
    varying = [g for g in space.groups if space[0][g] != space[-1][g]]
    assert varying == (groups or space.groups)
    check_search_args(dict(space[-1]), varying, options['groups'],
                      options['min_ratio'])
    if name.startswith('ds_mbnet_graded'):  # as its comment says
        assert [math.ceil(options['min_ratio'] * space[-1][g])
                for g in varying] == [6, 9, 20, 36]


# --- the US-Net baseline's sampling ---------------------------------------
def test_usnet_sampling_draws_one_ratio_for_every_group():
    cfg = Config.fromfile(DIGITS)
    cfg.model.update(sampling='usnet', usnet_divisor=4, num_random=3)
    model = build_model_from_cfg(cfg)
    space = model.backbone.space
    lo, hi = space.smallest, space[-1]
    specs = model.sample_random_subnets()
    assert [dict(s) for s in specs] == [
        dict(s) for s in model.sample_random_subnets()]  # same iteration
    for spec in specs:
        assert spec.adhoc and dict(space.get(spec)) == dict(spec)
        t = [(spec[g] - lo[g]) / (hi[g] - lo[g])
             for g in ('stage4', 'stage5')]
        assert abs(t[0] - t[1]) < 0.05  # one ratio, up to the rounding
        assert all(spec[g] % 4 == 0 for g in ('stage4', 'stage5'))
        # statistics row: the narrowest listed sub-network as wide
        row = space[spec.stats]
        assert all(row[g] >= spec[g] for g in space.groups)
        assert spec.stats == 0 or any(
            space[spec.stats - 1][g] < spec[g] for g in space.groups)
    model.sandwich_iter += 1
    assert [dict(s) for s in model.sample_random_subnets()] != [
        dict(s) for s in specs]
    assert space.interpolate(0.0) == dict(lo)
    assert space.interpolate(1.0) == dict(hi)
    with pytest.raises(ValueError, match=r't must be in \[0, 1\]'):
        space.interpolate(1.5)
    with pytest.raises(ValueError, match='sampling'):
        cfg.model.sampling = 'random'
        build_model_from_cfg(cfg)


def test_vit_channel_reordering_is_refused_with_the_reason():
    """DS-ViT's width groups are not groups of permutable channel axes:
    the search refuses it by name instead of permuting part of it."""
    model = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(type='DSViT', arch='digits', img_size=32,
                      patch_size=4),
        head=dict(type='DSLinearClsHead', num_classes=10, in_channels=64)))
    with pytest.raises(TypeError, match='DSViT has no channel axes'):
        classifier_axes(model)
