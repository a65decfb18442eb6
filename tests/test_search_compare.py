# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The search as the paper does it (per-layer ranking, the noise kept,
the cost-aware step, Stage I over the filtered trajectory) and the paired
comparison of sub-network lists."""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import dsnet_mm  # noqa: F401 (registers)
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.models.sandwich import sample_random_subnets
from dsnet_mm.models.subnet import SubnetSpace
from dsnet_mm.search import (ProgressiveSearch, add_channel_noise,
                             channel_alphas, classifier_axes,
                             permute_channels)
from dsnet_mm.search.comparison import (mean_ci, paired_comparison,
                                        parse_arms, prepare_arms, t_quantile,
                                        write_report)
from dsnet_mm.search.training import madds_at
from test_search import DIGITS, ROOT, built, digits_model, read, small_runner

# --- per-layer ranking ----------------------------------------------------
BACKBONES = [
    (dict(type='DSMobileNetV1', arch='cifar'), 1152),
    (dict(type='DSResNet', depth=18, stem='cifar', stem_channels=8,
          base_channels=8), 64),
    (dict(type='DSResNet', depth=50, stem='cifar', stem_channels=8,
          base_channels=4, se_stage='layer3'), 128),
]


@pytest.mark.parametrize('backbone,feat', BACKBONES)
def test_per_layer_reordering_keeps_the_function(backbone, feat):
    model = built(backbone, feat)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    ref = model(x)
    assert ref.std() > 0.1
    axes = classifier_axes(model)
    layers = axes.units('layer')
    # a MobileNet stage and a bottleneck's interior hold several layers;
    # in ResNet-18 (basic blocks, identity shortcuts) a layer is a group
    assert len(layers) >= len(axes.axes)
    assert (len(layers) > len(axes.axes)) == (
        backbone.get('depth') != 18)
    # every axis of a group lies in exactly one of its layers
    for group, entries in axes.axes.items():
        mine = [a for (g, _), u in layers.items() if g == group
                for a in u['axes']]
        assert sorted(mine) == sorted(entries)
    g = torch.Generator().manual_seed(3)
    widths = model.backbone.space.max_widths
    perms = {key: torch.randperm(widths[key[0]], generator=g)
             for key in layers}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    permute_channels(model, axes, perms)
    assert (model(x) - ref).abs().max() < 1e-5
    # one permutation per layer, not one per group: two layers of a group
    # took different ones, and leaving out one layer's axis breaks it
    model.load_state_dict(state)
    key = max(layers, key=lambda k: len(layers[k]['axes']))
    layers[key]['axes'].pop()
    axes.layers[key[0]][key[1]]['axes'] = layers[key]['axes']
    permute_channels(model, axes, {key: perms[key]})
    assert (model(x) - ref).abs().max() > 1e-3


def test_resnet_stream_is_one_layer_and_interiors_are_per_conv():
    axes = classifier_axes(built(*BACKBONES[2]))
    # the residual stream of a stage: one layer; a bottleneck's interior:
    # conv1's and conv2's outputs, two layers
    assert len(axes.layers['layer3']) == 1
    assert len(axes.layers['layer3.0']) == 2
    assert axes.layers['layer3.0'][0]['producers'] == [
        'backbone.layer3.0.conv1.weight']


def test_permuting_a_noisy_weight_moves_its_noise_scales():
    model = digits_model()
    axes = classifier_axes(model)
    add_channel_noise(model, axes)
    key = ('stage4', 1)
    name = axes.layers['stage4'][1]['producers'][0]
    conv = model.get_submodule(name.rpartition('.')[0])
    with torch.no_grad():
        conv.parametrizations.weight[0].alpha.copy_(torch.arange(160.))
    rows = conv.parametrizations.weight.original.clone()
    perm = torch.randperm(160, generator=torch.Generator().manual_seed(0))
    permute_channels(model, axes, {key: perm})
    assert torch.equal(channel_alphas(model, axes)[name], perm.float())
    assert torch.equal(conv.parametrizations.weight.original, rows[perm])


# --- the cost-aware step -----------------------------------------------------
class Scripted(ProgressiveSearch):
    """Held-out scores given per removed group (top-1 drop in points)."""

    def __init__(self, drops, **kwargs):
        self.drops = drops
        model = digits_model()
        start = dict(model.backbone.space[-1])
        super().__init__(model, held_out=[], train_batches=None,
                         start=start, groups=list(drops),
                         input_shape=(3, 32, 32), num_groups=4,
                         threshold=None, **kwargs)

    def evaluate(self, widths):
        self.evaluations += 1
        drop = sum(d for g, d in self.drops.items()
                   if widths[g] < self.start[g])
        return dict(accuracy=90.0 - drop, loss=1.0 + drop / 10)


def savings(search):
    base = madds_at(search.model, search.start, (3, 32, 32))
    return {g: base - madds_at(search.model, w, (3, 32, 32))
            for g, w in search.candidates()}


@pytest.mark.parametrize('criterion', ['accuracy', 'loss'])
def test_cost_step_takes_the_cheapest_removal_per_madd(criterion):
    probe = Scripted(dict(stage2=0.0, stage4=0.0))
    saved = savings(probe)
    assert saved['stage4'] > 3 * saved['stage2']
    # stage4 loses twice as much as stage2 but saves more than 3x the
    # MAdds: the best score takes stage2, the cost rule stage4
    drops = dict(stage2=0.5, stage4=1.0)
    for rule, expected in (('best', 'stage2'), ('cost', 'stage4')):
        search = Scripted(drops, step_rule=rule, criterion=criterion)
        search.step()
        assert search.step()['removed'] == expected
    # a drop per MAdd above stage2's: stage2 again
    search = Scripted(dict(stage2=0.5, stage4=0.5 * 4 * saved['stage4'] /
                           saved['stage2']), step_rule='cost',
                      criterion=criterion)
    search.step()
    assert search.step()['removed'] == 'stage2'


def test_cost_step_ties_go_to_the_larger_saving():
    # both free (no drop, or a gain): the larger saving, whatever the order
    for drops in (dict(stage2=0.0, stage4=0.0), dict(stage4=0.0, stage2=0.0),
                  dict(stage2=-1.0, stage4=0.0)):
        search = Scripted(drops, step_rule='cost')
        search.step()
        assert search.step()['removed'] == 'stage4'
    # the paper's rule: the first best in group order
    search = Scripted(dict(stage2=0.0, stage4=0.0), step_rule='best')
    search.step()
    assert search.step()['removed'] == 'stage2'


# --- the runner with the paper's options -----------------------------------
def test_paper_options_run_resume_and_train_the_filtered_trajectory(
        tmp_path):
    opts = dict(ranking='noise', keep_noise=True, ranking_scope='layer',
                step_rule='cost', stage1_list='trajectory', num_keep=3)
    runner = small_runner(tmp_path, **opts)
    assert runner.run(max_steps=2) is None
    paths = small_runner(tmp_path, **opts).run()
    record = read(paths['trajectory'])
    steps = record['steps']
    trained = record['trained']
    assert trained[0] == 0 and trained[-1] == len(steps) - 1
    assert len(trained) >= len(record['kept'])
    assert read(paths['subnets'])['searched'] == [
        steps[i]['widths'] for i in reversed(trained)]
    assert record['input_shape'] == [3, 32, 32]
    # the noisy scores are seeded: a resumed search equals a whole one
    whole = read(small_runner(tmp_path / 'whole', **opts).run()[
        'trajectory'])
    assert whole['steps'] == steps
    # the noise stayed on the model through the search
    state = torch.load(osp.join(tmp_path, 'search_state.pth'),
                       weights_only=True)
    assert any('parametrizations' in k
               for k in state['search']['model']['backbone'])


@pytest.mark.parametrize('overrides,match', [
    (dict(ranking_scope='block'), "search ranking_scope='block' is not one"),
    (dict(step_rule='ratio'), "search step_rule='ratio' is not one"),
    (dict(stage1_list='all'), "search stage1_list='all' is not one"),
    (dict(keep_noise='yes'), 'search keep_noise must be a bool'),
    (dict(keep_noise=True, ranking='l1'), "keep_noise=True needs ranking"),
    (dict(held_out=20000), 'held_out=20000 must be smaller'),
    (dict(groups=161, search_groups=['stage4']),
     r'groups \(G=161\) is larger'),
])
def test_bad_search_options_fail_before_any_work(tmp_path, overrides,
                                                 match):
    with pytest.raises((ValueError, TypeError), match=match):
        small_runner(tmp_path / 'w', **overrides)
    assert not osp.exists(tmp_path / 'w')


# --- random draws without the largest ---------------------------------------
def test_list_draws_can_leave_the_largest_out():
    ladder = digits_model().backbone.space
    assert dict(ladder[-1]) != dict(ladder.largest)
    space = SubnetSpace(ladder.max_widths,
                        [dict(ladder[i]) for i in (0, 4, 9, 13)] +
                        [dict(ladder.max_widths)])
    top = len(space) - 1
    assert dict(space[top]) == dict(space.largest)

    def draws(space, **kwargs):
        return {s.position for i in range(100) for s in sample_random_subnets(
            space, 2, 0, i, **kwargs)}

    assert draws(space, draw_largest=False) == set(range(1, top))
    assert draws(space) == set(range(1, top + 1))
    # a widest below the largest is drawn either way
    assert draws(ladder, draw_largest=False) == set(range(1, len(ladder)))


# --- the paired comparison ------------------------------------------------
def test_t_quantile_and_interval():
    # by hand: the 97.5 % quantiles of t with 1, 2, 4 and 30 df
    for df, q in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    stats = mean_ci([1.0, 2.0, 3.0])
    assert stats['mean'] == 2.0 and stats['sd'] == pytest.approx(1.0)
    assert stats['half_width'] == pytest.approx(4.302653 / math.sqrt(3),
                                                abs=1e-5)
    assert mean_ci([5.0])['half_width'] is None
    scipy_stats = pytest.importorskip('scipy.stats')
    for df in (1, 2, 3, 7, 25):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(
                scipy_stats.t.ppf(p, df), abs=1e-6)
    values = [0.3, -1.2, 0.8, 0.1]
    low, high = scipy_stats.t.interval(
        0.95, 3, loc=sum(values) / 4, scale=scipy_stats.sem(values))
    stats = mean_ci(values)
    assert (stats['low'], stats['high']) == pytest.approx((low, high))


def rows(points):
    return [dict(name=f'subnet_{i}', index=i, madds=m, params=1,
                 metrics={'accuracy/top1': t})
            for i, (m, t) in enumerate(points)]


def hand_runs():
    # the baseline's curve differs by seed; each arm is a fixed offset
    # above its own seed's baseline: +1, +2, +4 (a mix-up of seeds would
    # give other numbers)
    runs = {}
    for seed, (level, offset) in enumerate(((70, 1), (80, 2), (60, 4))):
        base = rows([(1e6, level), (3e6, level + 20)])
        arm = rows([(2e6, level + 10 + offset), (3e6, level + 20 + offset),
                    (4e6, 99)])  # 4 M: outside the baseline's range
        runs[seed] = dict(usnet=base, searched=arm)
    return runs


def test_paired_comparison_on_hand_made_numbers(tmp_path):
    result = paired_comparison(hand_runs(), 'usnet')
    arm = result['arms']['searched']
    assert [arm['per_seed'][s]['mean_gap'] for s in range(3)] == \
        pytest.approx([1.0, 2.0, 4.0])
    assert arm['per_seed'][0]['num_matched'] == 2
    gap = arm['mean_gap']
    assert gap['mean'] == pytest.approx(7 / 3)
    sd = math.sqrt(((1 - 7 / 3)**2 + (2 - 7 / 3)**2 + (4 - 7 / 3)**2) / 2)
    assert gap['sd'] == pytest.approx(sd)
    assert gap['half_width'] == pytest.approx(4.302653 * sd / math.sqrt(3),
                                              abs=1e-5)
    # through the files
    for seed, arms in hand_runs().items():
        for name, r in arms.items():
            path = tmp_path / f'seed{seed}' / name
            path.mkdir(parents=True)
            (path / 'subnet_results.json').write_text(
                json.dumps(dict(subnets=r, dynamic=None)))
    paths = write_report(str(tmp_path), [0, 1, 2], ['searched', 'usnet'],
                         'usnet', str(tmp_path / 'report'))
    text = open(paths['markdown']).read()
    assert '| searched | 2 | +4.00 |' in text
    assert f"+2.33 [{7 / 3 - gap['half_width']:+.2f}" in text
    assert osp.getsize(paths['plot']) > 1000
    with pytest.raises(ValueError, match='missing runs'):
        write_report(str(tmp_path), [0, 5], ['searched', 'usnet'], 'usnet',
                     str(tmp_path / 'r2'))


@pytest.mark.parametrize('specs,baseline,match', [
    (['searched', 'uniform'], 'usnet', "baseline 'usnet' is not one of"),
    (['searched', 'nope'], 'searched', "unknown arm 'nope'"),
    (['searched', 'searched'], 'searched', 'more than once'),
    (['usnet'], 'usnet', 'at least two'),
    (['uniform=a.json', 'usnet'], 'usnet', 'NAME=FILE'),
])
def test_bad_arm_lists_are_refused(specs, baseline, match):
    with pytest.raises(ValueError, match=match):
        parse_arms(specs, baseline)


def test_cli_refuses_an_arm_list_without_baseline(tmp_path):
    out = tmp_path / 'configs'
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/analysis/compare_search.py'),
         'prepare', DIGITS, '--out', str(out), '--arms', 'searched',
         'uniform'], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert "baseline 'usnet' is not one of the arms" in proc.stderr
    assert not out.exists()


def test_every_arm_gets_the_same_label_rule(tmp_path):
    space = digits_model().backbone.space
    searched = [dict(space[i]) for i in (0, 5, 13)]
    searched[1]['stage4'] = searched[0]['stage4']  # non-uniform
    (tmp_path / 'search').mkdir()
    (tmp_path / 'search' / 'subnets.json').write_text(
        json.dumps(dict(searched=searched)))
    hand = tmp_path / 'hand.json'
    hand.write_text(json.dumps([dict(space[0]), dict(space[13])]))
    for weight in (0.0, 0.5):
        out = tmp_path / f'configs{weight}'
        paths = prepare_arms(
            DIGITS, str(out), ['searched', 'uniform', 'usnet',
                               f'hand={hand}'], 'usnet',
            search_dir=str(tmp_path / 'search'), label_weight=weight,
            calib_batches=25, input_shape=(3, 32, 32))
        arms = json.load(open(paths['arms']))
        assert arms['lists']['searched'] == searched
        assert arms['lists']['uniform'] == arms['lists']['usnet']
        for name, sampling in (('searched', 'list'), ('uniform', 'list'),
                               ('usnet', 'usnet'), ('hand', 'list')):
            cfg = Config.fromfile(paths[name])
            model = build_model_from_cfg(cfg)
            assert model.sampling == sampling
            assert model.student_label_weights == (weight, ) * len(
                model.backbone.space)
            assert model.draw_largest is False
            assert cfg.val_cfg.calibrate.num_batches == 25
            assert [dict(s) for s in model.backbone.space] == \
                arms['lists'][name]
    # the uniform list follows the searched MAdds, one ratio per member
    madds = arms['madds']
    assert len(madds['uniform']) == len(madds['searched'])
    for a, b in zip(madds['uniform'], madds['searched']):
        assert abs(a - b) / b < 0.05
