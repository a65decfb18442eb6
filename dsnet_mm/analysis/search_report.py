# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Searched sub-networks against a uniform (US-Net) baseline, and the plot of
a progressive search.

The comparison measures, at matched MAdds, how much top-1 the searched
sub-networks gain over uniformly slimmed ones: for every searched
sub-network whose MAdds lies inside the MAdds range of the uniform curve,
the gap is its top-1 minus the uniform curve read at the same MAdds, the
curve being linear between the two uniform sub-networks around it
(:func:`~dsnet_mm.analysis.report.static_curve_at`). This is how the
progressive search paper sets its searched widths against US-Net's
(``docs/reference/progressive_search.md``). Points outside the uniform
range are listed apart, never extrapolated; ``largest`` is no point of
either curve.

Both inputs are ``subnet_results.json`` files of the evaluation loop::

    {"subnets": [dict(name='subnet_0', index=0, madds=273252,
                      params=21264, metrics={'accuracy/top1': 82.98}), ...],
     "dynamic": {...} or null}

A search trajectory (:func:`plot_trajectory`) is::

    {"groups": ["stage2", ...], "threshold": 80.0 or null,
     "steps": [dict(step=0, widths={'stem': 8, ...}, madds=5548704,
                    score=91.2, removed=None, fine_tuned=False), ...],
     "kept": [0, 7, 15, ...]}

where ``score`` is top-1 (%) on a held-out part of the training split and
``kept`` the steps (by their ``step``) re-selected as the final
sub-networks.
"""
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from .report import (LARGEST, TOP1, _figure, check_rows, curve_rows,
                     honest_ylim, save_madds_plot, standard_error,
                     static_curve_at)

LABELS = ('searched', 'uniform')
TITLE = 'Searched vs uniform sub-networks'
STEP_KEYS = ('madds', 'score')


def _check_labels(labels: Sequence[str]) -> None:
    if len(labels) != 2:
        raise ValueError(f'labels must be two names (searched, uniform), '
                         f'got {list(labels)}')


def matched_gaps(searched_rows: Sequence[Dict],
                 uniform_rows: Sequence[Dict]) -> Dict:
    """Top-1 gap of every searched sub-network with the uniform curve
    interpolated at its MAdds.

    Args:
        searched_rows (Sequence[dict]): Rows of the searched sub-networks
            (``name``, ``madds``, ``params``, ``metrics['accuracy/top1']``);
            a row named ``'largest'`` is left out.
        uniform_rows (Sequence[dict]): Rows of the uniform baseline, the
            same way; its ``'largest'`` is no point of the curve either.

    Returns:
        dict: ``points`` (by MAdds, each with ``name``, ``madds``,
        ``searched``, ``uniform`` and ``gap``, the last two in top-1 %),
        ``mean_gap``, ``max_gap``, ``min_gap``, ``num_matched``,
        ``outside`` (names of the searched sub-networks beyond the uniform
        MAdds range, not counted) and ``uniform_range`` (its MAdds
        ``[low, high]``).
    """
    for rows, which in ((searched_rows, 'searched'),
                        (uniform_rows, 'uniform')):
        try:
            check_rows(rows)
        except ValueError as e:
            raise ValueError(f'{which} rows: {e}') from None
    uniform = curve_rows(uniform_rows)
    if not uniform:
        raise ValueError(f'uniform rows hold no sub-network but '
                         f'{LARGEST!r}: there is no curve to compare with')
    searched = curve_rows(searched_rows)
    if not searched:
        raise ValueError(f'searched rows hold no sub-network but '
                         f'{LARGEST!r}: nothing to compare')
    low, high = uniform[0]['madds'], uniform[-1]['madds']
    points, outside = [], []
    for row in searched:
        if not low <= row['madds'] <= high:
            outside.append(row['name'])
            continue
        top1 = float(row['metrics'][TOP1])
        curve = static_curve_at(uniform, row['madds'])
        points.append(dict(name=row['name'], madds=row['madds'],
                           searched=top1, uniform=curve, gap=top1 - curve))
    if not points:
        raise ValueError(
            f'no searched sub-network lies inside the uniform MAdds range '
            f'[{low / 1e6:.2f} M, {high / 1e6:.2f} M]: searched MAdds are '
            f"{[round(row['madds'] / 1e6, 2) for row in searched]} M")
    gaps = [point['gap'] for point in points]
    return dict(points=points, mean_gap=float(np.mean(gaps)),
                max_gap=max(gaps), min_gap=min(gaps),
                num_matched=len(points), outside=outside,
                uniform_range=[low, high])


def comparison_markdown(gaps: Dict,
                        labels: Sequence[str] = LABELS) -> str:
    """Markdown table of the matched points and a summary of their gaps.

    Args:
        gaps (dict): The result of :func:`matched_gaps`.
        labels (Sequence[str]): Names of the searched and of the uniform
            sub-networks. Defaults to ('searched', 'uniform').

    Returns:
        str: The table (MAdds in M, top-1 and gap in %, gap signed), the
        summary line and, if any, the searched sub-networks left out.
    """
    _check_labels(labels)
    searched, uniform = labels
    lines = [f'| Sub-network | MAdds (M) | {searched} top-1 (%) '
             f'| {uniform} top-1 at equal MAdds (%) | Gap |',
             '| --- | ---: | ---: | ---: | ---: |']
    for point in gaps['points']:
        lines.append(f"| {point['name']} | {point['madds'] / 1e6:.2f} "
                     f"| {point['searched']:.2f} | {point['uniform']:.2f} "
                     f"| {point['gap']:+.2f} |")
    best = max(gaps['points'], key=lambda point: point['gap'])
    worst = min(gaps['points'], key=lambda point: point['gap'])
    lines += ['', f"Gap ({searched} - {uniform}, {uniform} interpolated at "
              f"equal MAdds): mean {gaps['mean_gap']:+.2f}, "
              f"max {gaps['max_gap']:+.2f} ({best['name']}), "
              f"min {gaps['min_gap']:+.2f} ({worst['name']}) over "
              f"{gaps['num_matched']} matched sub-networks."]
    if gaps.get('outside'):
        lines += ['', f"Outside the {uniform} MAdds range (not counted): "
                  f"{', '.join(gaps['outside'])}."]
    return '\n'.join(lines) + '\n'


def plot_comparison(searched_rows: Sequence[Dict],
                    uniform_rows: Sequence[Dict],
                    path: str,
                    labels: Sequence[str] = LABELS,
                    title: str = TITLE,
                    num_images: Optional[int] = None):
    """Save top-1 against MAdds of the searched and the uniform sub-networks
    as a PNG.

    Both curves share one axis (``largest`` left out); every matched
    searched point has a thin dotted segment to the uniform curve at its
    MAdds, labelled with the gap, and the legend gives the mean gap. With
    ``num_images`` every point gets a +-1 standard-error bar; the y range
    spans the points and their bars.

    Args:
        searched_rows (Sequence[dict]): Rows of the searched sub-networks.
        uniform_rows (Sequence[dict]): Rows of the uniform baseline.
        path (str): Where to write the PNG.
        labels (Sequence[str]): Names of the two curves.
            Defaults to ('searched', 'uniform').
        title (str): Title of the plot.
            Defaults to 'Searched vs uniform sub-networks'.
        num_images (int, optional): Test images behind each top-1.
            Defaults to None (no error bars).

    Returns:
        matplotlib.figure.Figure: The figure written.
    """
    _check_labels(labels)
    gaps = matched_gaps(searched_rows, uniform_rows)
    fig, ax = _figure(6.5, 4.8)
    values = []
    for rows, label, marker, color in (
            (uniform_rows, labels[1], 's', 'tab:blue'),
            (searched_rows, labels[0], 'o', 'tab:green')):
        curve = curve_rows(rows)
        top1 = np.array([row['metrics'][TOP1] for row in curve], float)
        err = standard_error(top1, num_images)
        values.extend(np.concatenate([top1 - err, top1 + err]))
        ax.errorbar([row['madds'] / 1e6 for row in curve], top1,
                    yerr=err if num_images else None, capsize=3,
                    marker=marker, markersize=5, color=color, label=label,
                    zorder=3)
    for pos, point in enumerate(gaps['points']):
        madds = point['madds'] / 1e6
        # drawn over the curves and their bars, ending in a small hollow
        # mark where the uniform curve is read
        ax.plot([madds, madds], [point['uniform'], point['searched']],
                linestyle=':', linewidth=1.2, color='black', zorder=4,
                marker='_', markersize=8, markevery=[0],
                label=(f"gap at equal MAdds (mean {gaps['mean_gap']:+.2f})"
                       if pos == 0 else None))
        ax.annotate(f"{point['gap']:+.2f}",
                    xy=(madds, (point['uniform'] + point['searched']) / 2),
                    xytext=(3, 0), textcoords='offset points', rotation=90,
                    ha='left', va='center', fontsize=6.5, zorder=5,
                    bbox=dict(facecolor='white', alpha=0.8, edgecolor='none',
                              pad=1))
    save_madds_plot(fig, ax, path, values, title, num_images)
    return fig


def load_subnet_rows(path: str) -> List[Dict]:
    """The sub-network rows of a ``subnet_results.json``.

    Args:
        path (str): The file written by the evaluation loop.

    Returns:
        list[dict]: Its ``subnets`` rows, checked by :func:`check_rows`.
    """
    with open(path) as f:
        try:
            results = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f'{path}: not JSON ({e})') from None
    if not isinstance(results, dict) or not isinstance(
            results.get('subnets'), list):
        raise ValueError(f'{path}: no "subnets" list (expected a '
                         'subnet_results.json of the evaluation loop)')
    try:
        check_rows(results['subnets'])
    except ValueError as e:
        raise ValueError(f'{path}: {e}') from None
    return results['subnets']


def comparison_paths(out_dir: str) -> Dict[str, str]:
    """The files a comparison report writes, ``comparison.md``,
    ``comparison.png`` and ``comparison.json`` in ``out_dir`` (created if
    missing), by kind: ``markdown``, ``plot``, ``json``."""
    os.makedirs(out_dir, exist_ok=True)
    return {kind: osp.join(out_dir, f'comparison.{ext}')
            for kind, ext in (('markdown', 'md'), ('plot', 'png'),
                              ('json', 'json'))}


def show_comparison(paths: Dict[str, str]) -> None:
    """What the comparison tools print: the report's markdown on stdout,
    the files written on stderr."""
    with open(paths['markdown']) as f:
        print(f.read(), end='')
    for kind in ('markdown', 'plot', 'json'):
        print(f'wrote {paths[kind]}', file=sys.stderr)


def write_comparison(searched_json: str,
                     uniform_json: str,
                     out_dir: str,
                     labels: Sequence[str] = LABELS,
                     title: str = TITLE,
                     num_images: Optional[int] = None) -> Dict[str, str]:
    """Write ``comparison.md``, ``comparison.png`` and ``comparison.json``
    (the gaps of :func:`matched_gaps`) into ``out_dir``.

    Args:
        searched_json (str): ``subnet_results.json`` of the searched
            sub-networks.
        uniform_json (str): ``subnet_results.json`` of the uniform baseline.
        out_dir (str): Directory to write into (created if missing).
        labels (Sequence[str]): Names of the two sets.
            Defaults to ('searched', 'uniform').
        title (str): Title of the report and of the plot.
            Defaults to 'Searched vs uniform sub-networks'.
        num_images (int, optional): Test images behind each top-1, for the
            plot's error bars. Defaults to None.

    Returns:
        dict: ``{'markdown': path, 'plot': path, 'json': path}``.
    """
    _check_labels(labels)
    searched = load_subnet_rows(searched_json)
    uniform = load_subnet_rows(uniform_json)
    gaps = matched_gaps(searched, uniform)
    body = comparison_markdown(gaps, labels)
    paths = comparison_paths(out_dir)
    with open(paths['markdown'], 'w') as f:
        f.write(f'# {title}\n\n{labels[0]}: `{searched_json}`  \n'
                f'{labels[1]}: `{uniform_json}`\n\n{body}')
    with open(paths['json'], 'w') as f:
        json.dump(gaps, f, indent=2)
    plot_comparison(searched, uniform, paths['plot'], labels, title,
                    num_images)
    return paths


def check_trajectory(trajectory: Dict) -> None:
    """Raise ``ValueError`` unless ``trajectory`` holds what the plot needs.

    Args:
        trajectory (dict): A search trajectory, see the module docstring.
    """
    steps = trajectory.get('steps')
    if not steps:
        raise ValueError('trajectory has no steps')
    for position, step in enumerate(steps):
        for key in STEP_KEYS:
            if step.get(key) is None:
                raise ValueError(f'trajectory step {position} misses the '
                                 f'key {key!r}')
    ids = {step.get('step', position) for position, step in enumerate(steps)}
    unknown = [index for index in trajectory.get('kept') or ()
               if index not in ids]
    if unknown:
        raise ValueError(f'trajectory kept names steps {unknown} that it '
                         'does not have')


def plot_trajectory(trajectory: Dict, path: str,
                    title: str = 'Progressive search'):
    """Save the score against MAdds of every step of a search as a PNG.

    The steps are a line with small markers, the kept steps large circles
    labelled with their position in ``kept``, fine-tuned steps crosses and
    the threshold (if any) a dashed horizontal line. MAdds increase to the
    right; the y range spans the scores and the threshold.

    Args:
        trajectory (dict): A search trajectory, see the module docstring.
        path (str): Where to write the PNG.
        title (str): Title of the plot. Defaults to 'Progressive search'.

    Returns:
        matplotlib.figure.Figure: The figure written.
    """
    check_trajectory(trajectory)
    steps = trajectory['steps']
    by_id = {step.get('step', position): step
             for position, step in enumerate(steps)}
    kept = list(trajectory.get('kept') or ())
    threshold = trajectory.get('threshold')
    fig, ax = _figure(6.5, 4.8)
    madds = np.array([step['madds'] / 1e6 for step in steps])
    scores = np.array([step['score'] for step in steps], float)
    ax.plot(madds, scores, marker='.', markersize=4, linewidth=1,
            color='tab:blue', label=f'search steps ({len(steps)})')
    if kept:
        ax.scatter([by_id[i]['madds'] / 1e6 for i in kept],
                   [by_id[i]['score'] for i in kept], s=110,
                   facecolors='tab:orange', edgecolors='black', zorder=3,
                   label=f'kept ({len(kept)}, labelled by position)')
        for pos, index in enumerate(kept):
            ax.annotate(str(pos), xy=(by_id[index]['madds'] / 1e6,
                                      by_id[index]['score']),
                        xytext=(0, 9), textcoords='offset points',
                        ha='center', fontsize=8)
    tuned = [step for step in steps if step.get('fine_tuned')]
    if tuned:
        ax.scatter([step['madds'] / 1e6 for step in tuned],
                   [step['score'] for step in tuned], marker='x', s=45,
                   color='tab:purple', zorder=4,
                   label=f'fine-tuned ({len(tuned)})')
    values = list(scores)
    if threshold is not None:
        ax.axhline(threshold, linestyle='--', color='tab:red', linewidth=1,
                   label=f'threshold {threshold:.2f}')
        values.append(threshold)
    honest_ylim(ax, values)
    ax.set_xlabel('MAdds per image (M)')
    ax.set_ylabel('Held-out top-1 (%)')
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc='best', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig
