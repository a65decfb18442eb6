# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A paired, multi-seed comparison of sub-network lists trained alike.

Every **arm** is one Stage I training of the same config with the same
recipe; only the sub-network list and how the random widths are drawn
differ:

- ``searched``: the searched list (``subnets.json`` of a search), sampled
  from the list;
- ``uniform``: the uniform list (one width ratio for every group) matched
  in MAdds to another arm's list, sampled from the list;
- ``usnet``: the same uniform list, the random widths drawn as US-Net draws
  them (``sampling='usnet'``);
- ``NAME=FILE``: an explicit list of width vectors (a JSON list, or an
  object with ``subnets``), sampled from the list; e.g. a hand-made
  non-uniform list.

Every arm gets the same label-loss rule (``student_label_weight``, one
weight for every width; 0 by default: the students learn from the teacher
alone, as in the paper), leaves the largest out of its random draws where
its widest is the largest (``draw_largest=False``), and recalibrates BN on
the same number of batches before each sub-network is evaluated.

The report pairs the arms by seed: for each seed and each arm, the top-1 of
its sub-networks minus the baseline arm's curve of the same seed,
interpolated at equal MAdds (:func:`~dsnet_mm.analysis.search_report.
matched_gaps`); then the mean over seeds of the per-seed mean gap with its
95 % confidence interval (Student t with ``n - 1`` degrees of freedom).
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from dsnet_mm.analysis.report import (TOP1, _figure, curve_rows,
                                      save_madds_plot)
from dsnet_mm.analysis.search_report import (comparison_paths,
                                             load_subnet_rows, matched_gaps)

BUILTIN_ARMS = ('searched', 'uniform', 'usnet')
LEVEL = 0.95


# --- statistics ---------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified
    Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) *
                                                  (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) +
                     a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """Student t distribution function with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student t with ``df`` degrees of freedom (by
    bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f'p must be in (0, 1), got {p!r}')
    if not isinstance(df, int) or df < 1:
        raise ValueError(f'df must be an int >= 1, got {df!r}')
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Dict:
    """Mean, sample standard deviation and the two-sided ``level``
    confidence interval of the mean (Student t); with one value the
    interval is unknown (None)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError('mean_ci needs at least one value')
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return dict(n=1, mean=mean, sd=None, half_width=None, low=None,
                    high=None)
    sd = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return dict(n=n, mean=mean, sd=sd, half_width=half, low=mean - half,
                high=mean + half)


# --- arms ---------------------------------------------------------------
def parse_arms(specs: Sequence[str], baseline: str) -> List[Dict]:
    """The arms named by ``specs`` (``searched``, ``uniform``, ``usnet`` or
    ``NAME=FILE``), checked: unique names, a baseline among them."""
    arms, names = [], []
    for spec in specs:
        name, sep, path = spec.partition('=')
        if sep:
            if not name or not path or name in BUILTIN_ARMS:
                raise ValueError(
                    f'arms: {spec!r} must be NAME=FILE with NAME none of '
                    f'{BUILTIN_ARMS}')
            arms.append(dict(name=name, kind='list', path=path))
        elif spec in BUILTIN_ARMS:
            arms.append(dict(name=spec, kind=spec))
        else:
            raise ValueError(f'arms: unknown arm {spec!r}; allowed: '
                             f'{BUILTIN_ARMS} or NAME=FILE (a list of '
                             'width vectors)')
        names.append(arms[-1]['name'])
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'arms: names {duplicates} given more than once')
    if baseline not in names:
        raise ValueError(f'baseline {baseline!r} is not one of the arms '
                         f'{names}: the gaps are measured against it')
    if len(arms) < 2:
        raise ValueError(f'arms: at least two are needed (the baseline and '
                         f'one to compare with it), got {names}')
    return arms


def read_width_list(path: str) -> List[Dict[str, int]]:
    """An explicit arm's list: a JSON list of width vectors (narrowest
    first), or an object holding it under ``subnets``."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f'arms: cannot read the list {path}: {e}') from None
    if isinstance(data, dict):
        data = data.get('subnets')
    if not isinstance(data, list) or not data or not all(
            isinstance(w, dict) for w in data):
        raise ValueError(f'{path}: expected a non-empty list of width '
                         'vectors (dicts of group -> width)')
    return [dict(w) for w in data]


def arm_model(arm: Mapping, subnets: Sequence[Mapping[str, int]],
              label_weight: float, divisor: int) -> Dict:
    """The model overrides of one arm: its list, its sampling, the common
    label-loss rule and no largest among the random draws."""
    if not isinstance(label_weight, (int, float)) or label_weight < 0:
        raise ValueError(f'label_weight must be a number >= 0, got '
                         f'{label_weight!r}')
    return dict(backbone=dict(subnets=[dict(w) for w in subnets]),
                sampling='usnet' if arm['kind'] == 'usnet' else 'list',
                usnet_divisor=divisor,
                student_label_weight=float(label_weight),
                draw_largest=False)


def arm_lists(arms: Sequence[Mapping], search_dir: Optional[str],
              match: Optional[str],
              uniform_for) -> Dict[str, List[Dict[str, int]]]:
    """Each arm's list; ``uniform_for(list)`` gives the uniform list
    matched in MAdds to the list of the arm ``match``."""
    lists = {}
    for arm in arms:
        if arm['kind'] == 'searched':
            if search_dir is None:
                raise ValueError("arm 'searched' needs search_dir (a "
                                 'finished search with subnets.json)')
            path = osp.join(search_dir, 'subnets.json')
            if not osp.isfile(path):
                raise ValueError(f'search_dir: no {path}; run the search '
                                 'first')
            with open(path) as f:
                lists[arm['name']] = json.load(f)['searched']
        elif arm['kind'] == 'list':
            lists[arm['name']] = read_width_list(arm['path'])
    if any(a['kind'] in ('uniform', 'usnet') for a in arms):
        if match is None:
            match = next(iter(lists), None)
        if match not in lists:
            raise ValueError(
                f'match {match!r} must name an arm with its own list '
                f'(searched or NAME=FILE) among {sorted(lists)}: the uniform '
                'list is matched to its MAdds')
        uniform = uniform_for(lists[match])
        for arm in arms:
            if arm['kind'] in ('uniform', 'usnet'):
                lists[arm['name']] = uniform
    return {a['name']: lists[a['name']] for a in arms}


def write_arm_config(path: str, base: str, model: Dict,
                     calib_batches: int) -> None:
    """One arm's Stage I config over ``base``; every sub-network is
    evaluated after BN recalibration on ``calib_batches`` batches."""
    calibrate = dict(calibrate=dict(num_batches=calib_batches))
    with open(path, 'w') as f:
        f.write('# Written by tools/analysis/compare_search.py\n'
                f'_base_ = [{base!r}]\n'
                f'model = {model!r}\n'
                f'val_cfg = {calibrate!r}\n'
                f'test_cfg = {calibrate!r}\n')


def _input_shape(cfg, model) -> List[int]:
    """(C, H, W) of one preprocessed image of the config's val split."""
    from mmengine.runner import Runner
    loader = dict(cfg.val_dataloader, num_workers=0, persistent_workers=False)
    batch = next(iter(Runner.build_dataloader(loader)))
    return list(model.data_preprocessor(batch, False)['inputs'].shape[1:])


def prepare_arms(config: str, out_dir: str, arm_specs: Sequence[str],
                 baseline: str, search_dir: Optional[str] = None,
                 match: Optional[str] = None, label_weight: float = 0.0,
                 calib_batches: int = 40,
                 input_shape: Optional[Sequence[int]] = None
                 ) -> Dict[str, str]:
    """Write one Stage I config per arm (``out_dir/NAME.py``) and
    ``out_dir/arms.json`` (the lists and the common settings).

    Args:
        config (str): The search config (a Stage I config with ``search``
            options): every arm's ``_base_``.
        out_dir (str): Where the configs go.
        arm_specs (Sequence[str]): See :func:`parse_arms`.
        baseline (str): The arm the report measures the others against.
        search_dir (str, optional): A finished search (``subnets.json``,
            ``trajectory.json``); needed by the ``searched`` arm, and gives
            the uniform ladder's ends and the input shape when present.
        match (str, optional): The arm whose MAdds the uniform list is
            matched to. Defaults to the first arm with its own list.
        label_weight (float): ``student_label_weight`` of every arm.
            Defaults to 0 (the students learn from the teacher alone).
        calib_batches (int): BN recalibration batches before each
            sub-network is evaluated. Defaults to 40.
        input_shape (Sequence[int], optional): (C, H, W) for MAdds.
            Defaults to the search's, else one image of the val split.

    Returns:
        dict: arm name -> config path, and ``'arms'`` -> ``arms.json``.
    """
    from mmengine.config import Config

    from dsnet_mm.engine import build_model_from_cfg
    from .runner import matched_uniform, search_options
    from .training import madds_at
    arms = parse_arms(arm_specs, baseline)
    if not isinstance(calib_batches, int) or calib_batches < 1:
        raise ValueError(f'calib_batches must be an int >= 1, got '
                         f'{calib_batches!r}')
    arm_model(arms[0], [], label_weight, 1)  # checks label_weight
    cfg = Config.fromfile(config)
    options = search_options(cfg.get('search'), {})
    model = build_model_from_cfg(cfg)
    space = model.backbone.space
    start = dict(space[-1])
    record = {}
    if search_dir is not None and osp.isfile(
            osp.join(search_dir, 'trajectory.json')):
        with open(osp.join(search_dir, 'trajectory.json')) as f:
            record = json.load(f)
    groups = options['search_groups'] or [
        g for g in space.groups if space.smallest[g] != start[g]]
    min_widths = record.get('min_widths') or {
        g: max(1, math.ceil(options['min_ratio'] * start[g] - 1e-9))
        for g in groups}
    shape = list(input_shape or record.get('input_shape') or
                 _input_shape(cfg, model))
    divisor = options['divisor']

    def uniform_for(subnets):
        targets = [madds_at(model, w, shape) for w in subnets]
        return matched_uniform(model, start, min_widths, targets, divisor,
                               shape)

    lists = arm_lists(arms, search_dir, match, uniform_for)
    models = {a['name']: arm_model(a, lists[a['name']], label_weight,
                                   divisor) for a in arms}
    for name, override in models.items():  # a bad list fails here
        checked = cfg.copy()
        checked.merge_from_dict(dict(model=override))
        try:
            build_model_from_cfg(checked)
        except (ValueError, TypeError) as e:
            raise ValueError(f'arm {name!r}: {e}') from None
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for name, override in models.items():
        paths[name] = osp.join(out_dir, f'{name}.py')
        write_arm_config(paths[name], osp.abspath(config), override,
                         calib_batches)
    paths['arms'] = osp.join(out_dir, 'arms.json')
    with open(paths['arms'], 'w') as f:
        json.dump(dict(config=osp.abspath(config), baseline=baseline,
                       arms=arms, lists=lists, label_weight=label_weight,
                       calib_batches=calib_batches, input_shape=shape,
                       madds={n: [madds_at(model, w, shape) for w in ws]
                              for n, ws in lists.items()}), f, indent=1)
    return paths


# --- the report -----------------------------------------------------------
def results_path(runs_dir: str, seed: int, arm: str) -> str:
    """Where the run of ``arm`` with ``seed`` writes its results."""
    return osp.join(runs_dir, f'seed{seed}', arm, 'subnet_results.json')


def load_runs(runs_dir: str, seeds: Sequence[int],
              arms: Sequence[str]) -> Dict[int, Dict[str, List[Dict]]]:
    """``{seed: {arm: rows}}``; every seed needs every arm (the pairs)."""
    missing = [results_path(runs_dir, s, a) for s in seeds for a in arms
               if not osp.isfile(results_path(runs_dir, s, a))]
    if missing:
        raise ValueError(f'missing runs (every seed needs every arm): '
                         f'{missing}')
    return {s: {a: load_subnet_rows(results_path(runs_dir, s, a))
                for a in arms} for s in seeds}


def paired_comparison(runs: Mapping[int, Mapping[str, Sequence[Dict]]],
                      baseline: str, level: float = LEVEL) -> Dict:
    """Per-seed gaps of every arm against the baseline of the same seed,
    and their mean over seeds with its confidence interval.

    Args:
        runs (Mapping): ``{seed: {arm: subnet rows}}``.
        baseline (str): The arm the others are measured against.
        level (float): Confidence level. Defaults to 0.95.

    Returns:
        dict: ``arms`` (each with ``per_seed``: ``{seed: dict(mean_gap,
        max_gap, min_gap, num_matched)}``, and ``mean_gap``, ``max_gap``,
        ``min_gap``: :func:`mean_ci` of the per-seed values over seeds),
        ``baseline``, ``seeds`` and ``level``.
    """
    seeds = sorted(runs)
    if not seeds:
        raise ValueError('no runs to compare')
    names = list(runs[seeds[0]])
    if baseline not in names:
        raise ValueError(f'baseline {baseline!r} is not one of the arms '
                         f'{names}')
    out = dict(baseline=baseline, seeds=seeds, level=level, arms={})
    for name in names:
        if name == baseline:
            continue
        per_seed = {}
        for seed in seeds:
            gaps = matched_gaps(runs[seed][name], runs[seed][baseline])
            per_seed[seed] = {k: gaps[k] for k in (
                'mean_gap', 'max_gap', 'min_gap', 'num_matched')}
        out['arms'][name] = dict(per_seed=per_seed, **{
            k: mean_ci([per_seed[s][k] for s in seeds], level)
            for k in ('mean_gap', 'max_gap', 'min_gap')})
    return out


def _ci_text(stats: Dict) -> str:
    if stats['half_width'] is None:
        return f"{stats['mean']:+.2f} (one seed: no interval)"
    return (f"{stats['mean']:+.2f} [{stats['low']:+.2f}, "
            f"{stats['high']:+.2f}]")


def comparison_markdown(result: Dict) -> str:
    """The per-seed gaps and their means with confidence intervals."""
    base, level = result['baseline'], result['level']
    lines = [f'Gaps in top-1 points against **{base}** of the same seed, '
             f'{base} interpolated at equal MAdds; mean over seeds with its '
             f'{level:.0%} confidence interval (Student t).', '',
             '| arm | seed | mean gap | max gap | min gap | matched |',
             '| --- | ---: | ---: | ---: | ---: | ---: |']
    for name, arm in result['arms'].items():
        for seed, g in arm['per_seed'].items():
            lines.append(f"| {name} | {seed} | {g['mean_gap']:+.2f} | "
                         f"{g['max_gap']:+.2f} | {g['min_gap']:+.2f} | "
                         f"{g['num_matched']} |")
    lines += ['', '| arm | seeds | mean gap | max gap | min gap |',
              '| --- | ---: | ---: | ---: | ---: |']
    for name, arm in result['arms'].items():
        lines.append(f"| {name} | {arm['mean_gap']['n']} | "
                     f"{_ci_text(arm['mean_gap'])} | "
                     f"{_ci_text(arm['max_gap'])} | "
                     f"{_ci_text(arm['min_gap'])} |")
    return '\n'.join(lines) + '\n'


def plot_arms(runs: Mapping[int, Mapping[str, Sequence[Dict]]], path: str,
              title: str, level: float = LEVEL):
    """Top-1 against MAdds of every arm: each seed's curve thin; where
    every seed has as many sub-networks, their mean (at the mean MAdds of
    each position) with the ``level`` confidence interval as error bars."""
    seeds = sorted(runs)
    fig, ax = _figure(6.5, 4.8)
    colors = ['tab:green', 'tab:blue', 'tab:orange', 'tab:purple',
              'tab:red', 'tab:brown']
    values = []
    for k, name in enumerate(runs[seeds[0]]):
        color = colors[k % len(colors)]
        curves = [curve_rows(runs[s][name]) for s in seeds]
        for curve in curves:
            top1 = [row['metrics'][TOP1] for row in curve]
            values.extend(top1)
            ax.plot([row['madds'] / 1e6 for row in curve], top1,
                    color=color, alpha=0.3, linewidth=0.8)
        if len({len(c) for c in curves}) != 1:
            ax.plot([], [], color=color, label=f'{name} (per seed)')
            continue
        top1 = np.array([[row['metrics'][TOP1] for row in c]
                         for c in curves], float)
        madds = np.array([[row['madds'] for row in c] for c in curves],
                         float).mean(0) / 1e6
        stats = [mean_ci(top1[:, i], level) for i in range(top1.shape[1])]
        mean = np.array([s['mean'] for s in stats])
        err = None if len(seeds) < 2 else np.array(
            [s['half_width'] for s in stats])
        if err is not None:
            values.extend(np.concatenate([mean - err, mean + err]))
        ax.errorbar(madds, mean, yerr=err, marker='o', markersize=4,
                    capsize=3, color=color, zorder=3,
                    label=f'{name} (mean of {len(seeds)} seeds'
                    + (f', {level:.0%} CI)' if err is not None else ')'))
    save_madds_plot(fig, ax, path, values, title, None)
    return fig


def write_report(runs_dir: str, seeds: Sequence[int], arms: Sequence[str],
                 baseline: str, out_dir: str,
                 title: str = 'Sub-network lists, paired seeds'
                 ) -> Dict[str, str]:
    """Write ``comparison.md``, ``comparison.json`` and ``comparison.png``
    for the runs under ``runs_dir`` (see :func:`results_path`)."""
    if baseline not in arms:
        raise ValueError(f'baseline {baseline!r} is not one of the arms '
                         f'{list(arms)}')
    runs = load_runs(runs_dir, seeds, arms)
    result = paired_comparison(runs, baseline)
    paths = comparison_paths(out_dir)
    with open(paths['markdown'], 'w') as f:
        f.write(f'# {title}\n\nRuns: `{runs_dir}`, seeds '
                f'{list(seeds)}, arms {list(arms)}.\n\n'
                + comparison_markdown(result))
    with open(paths['json'], 'w') as f:
        json.dump(result, f, indent=1)
    plot_arms(runs, paths['plot'], title)
    return paths
