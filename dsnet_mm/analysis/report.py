# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Markdown table and accuracy-vs-MAdds plot of evaluated sub-networks.

A row describes one static sub-network, as produced by
:func:`subnet_complexity` plus the metrics of its evaluation::

    dict(name='subnet_0', index=0, madds=1278992, params=129000,
         metrics={'accuracy/top1': 98.05})

The optional ``dynamic`` dict describes the gated (dynamic) model::

    dict(madds=1.5e6,                 # mean MAdds per image
         routing=dict(subnet_0=120, subnet_3=880),   # images per sub-network
         window=['subnet_0', 'subnet_1', 'subnet_2', 'subnet_3'],
         **{'accuracy/top1': 97.9})

On data with difficulty levels (the graded digits) a row's metrics also hold
``accuracy/level_{l}/top1``, and ``dynamic`` may hold ``levels``::

    levels={0: dict(images=360, madds=1.3e6, routing=dict(subnet_0=350, ...),
                    **{'accuracy/top1': 99.2}), 1: ...}

which add a per-level table and ``routing_by_level.png``.

The quality column is top-1 unless ``metric`` names another key of the
metrics (a detector's ``'pascal_voc/mAP'``): the tables, the dynamic summary
and the plot then read and label that key, and ``dynamic`` holds it in
place of ``accuracy/top1``. Error bars (binomial) are drawn for top-1 only.
"""
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

TOP1 = 'accuracy/top1'
LARGEST = 'largest'
ROW_KEYS = ('name', 'madds', 'params', 'metrics')
DYNAMIC_KEYS = ('madds', 'routing', 'window')


def metric_label(metric: str) -> str:
    """How tables and plots name a metric key: ``'Top-1 (%)'`` for
    ``accuracy/top1``, ``'mAP'`` for ``.../mAP``, else the key."""
    if metric == TOP1:
        return 'Top-1 (%)'
    return metric.rsplit('/', 1)[-1] if metric.endswith('/mAP') else metric


def _row_label(row: Dict, position: int) -> str:
    """How an error message names a row."""
    return f"row {position} ({row['name']!r})" if 'name' in row \
        else f'row {position}'


def check_rows(rows: Sequence[Dict], metric: str = TOP1) -> None:
    """Raise ``ValueError`` unless every row holds what the report needs.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        metric (str): The metric key the report reads. Defaults to top-1.
    """
    if not rows:
        raise ValueError('rows is empty: nothing to report')
    for position, row in enumerate(rows):
        for key in ROW_KEYS:
            if key not in row:
                raise ValueError(f'{_row_label(row, position)} misses the '
                                 f'key {key!r}')
        if metric not in row['metrics']:
            raise ValueError(f'{_row_label(row, position)} misses the key '
                             f'{metric!r} in its metrics')


def check_dynamic(dynamic: Dict, rows: Sequence[Dict],
                  metric: str = TOP1) -> None:
    """Raise ``ValueError`` unless ``dynamic`` fits the static ``rows``.

    Args:
        dynamic (dict): Results of the dynamic model.
        rows (Sequence[dict]): Static sub-network rows (already checked).
        metric (str): The metric key the report reads. Defaults to top-1.
    """
    for key in (metric, ) + DYNAMIC_KEYS:
        if key not in dynamic:
            raise ValueError(f'dynamic misses the key {key!r}')
    window = dynamic['window']
    if not window:
        raise ValueError('dynamic window is empty')
    names = {row['name'] for row in rows}
    unknown = [name for name in window if name not in names]
    if unknown:
        raise ValueError(f'dynamic window names {unknown} that no row has')
    outside = [name for name in dynamic['routing'] if name not in window]
    if outside:
        raise ValueError(f'dynamic routing names {outside} outside the '
                         f'window {list(window)}')


def widest_in_window(rows: Sequence[Dict], window: Sequence[str]) -> Dict:
    """The row of ``window`` with the most MAdds.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        window (Sequence[str]): Names of the sub-networks the gate picks from.

    Returns:
        dict: The widest row of the window.
    """
    return max((row for row in rows if row['name'] in window),
               key=lambda row: row['madds'])


def static_table(rows: Sequence[Dict], metric: str = TOP1) -> str:
    """Markdown table with one line per static sub-network.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        metric (str): The metric key of the last column. Defaults to top-1.

    Returns:
        str: The table, MAdds and params in millions.
    """
    # a detector's rows also give the backbone's share
    backbone = all('backbone_madds' in row for row in rows)
    lines = ['| Sub-network | MAdds (M) | ' +
             'Backbone MAdds (M) | ' * backbone + 'Params (M) | '
             f'{metric_label(metric)} |',
             '| --- | ---: | ' + '---: | ' * backbone + '---: | ---: |']
    for row in rows:
        part = f"| {row['backbone_madds'] / 1e6:.2f} " if backbone else ''
        lines.append(f"| {row['name']} | {row['madds'] / 1e6:.2f} {part}"
                     f"| {row['params'] / 1e6:.3f} "
                     f"| {_metric_value(row['metrics'][metric], metric)} |")
    return '\n'.join(lines)


def curve_rows(rows: Sequence[Dict]) -> List[Dict]:
    """The rows of the static curve: every sub-network but ``largest``, by
    MAdds."""
    return sorted((row for row in rows if row['name'] != LARGEST),
                  key=lambda row: row['madds'])


def _metric_value(value: float, metric: str) -> str:
    """Top-1 in % with 2 decimals; a 0..1 metric (mAP) with 4."""
    return f'{value:.2f}' if metric == TOP1 else f'{value:.4f}'


def static_curve_at(rows: Sequence[Dict], madds: float,
                    metric: str = TOP1) -> float:
    """Top-1 of the static curve at ``madds``: linear between the two
    sub-networks (not ``largest``) around it, the end value outside them.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        madds (float): Where to read the curve.
        metric (str): The metric key to read. Defaults to top-1.

    Returns:
        float: The interpolated top-1 (or ``metric``).
    """
    curve = curve_rows(rows) or list(rows)
    return float(np.interp(madds, [row['madds'] for row in curve],
                           [row['metrics'][metric] for row in curve]))


def levels_of(rows: Sequence[Dict]) -> List[int]:
    """The difficulty levels that every row has a top-1 for (sorted)."""
    found = None
    for row in rows:
        levels = {int(m.group(1)) for m in map(
            re.compile(r'accuracy/level_(\d+)/top1').fullmatch,
            row['metrics']) if m}
        found = levels if found is None else found & levels
    return sorted(found or ())


def level_table(rows: Sequence[Dict], dynamic: Optional[Dict] = None) -> str:
    """Markdown table of every sub-network's top-1 per difficulty level.

    Args:
        rows (Sequence[dict]): Static sub-network rows with
            ``accuracy/level_{l}/top1`` in their metrics.
        dynamic (dict, optional): Results of the dynamic model; with
            ``levels`` it adds a row of its per-level top-1 and a table of
            its routing per level. Defaults to None.

    Returns:
        str: The markdown: empty if neither the rows nor ``dynamic`` have
        levels; only the routing per level (no top-1) if only ``dynamic``
        has them (a detector's rows have no per-level mAP).
    """
    levels = levels_of(rows)
    if not levels:
        by_level = (dynamic or {}).get('levels')
        return routing_by_level(dynamic, with_top1=False) if by_level else ''
    lines = ['| Sub-network | MAdds (M) | Top-1 (%) | ' +
             ' | '.join(f'Level {lv} (%)' for lv in levels) + ' |',
             '| --- | ---: | ---: | ' + ' | '.join('---:' for _ in levels) +
             ' |']
    for row in rows:
        lines.append(f"| {row['name']} | {row['madds'] / 1e6:.2f} | "
                     f"{row['metrics'][TOP1]:.2f} | " + ' | '.join(
                         f"{row['metrics'][f'accuracy/level_{lv}/top1']:.2f}"
                         for lv in levels) + ' |')
    by_level = (dynamic or {}).get('levels')
    if not by_level:
        return '\n'.join(lines)
    lines.append(f"| dynamic | {dynamic['madds'] / 1e6:.2f} | "
                 f"{dynamic[TOP1]:.2f} | " + ' | '.join(
                     _fmt(by_level[lv].get(TOP1)) for lv in levels) + ' |')
    return '\n'.join(lines + ['', routing_by_level(dynamic)])


def routing_by_level(dynamic: Dict, with_top1: bool = True) -> str:
    """Markdown table of the dynamic model's routing per difficulty level:
    images, (top-1,) mean MAdds and images per sub-network (only those that
    got any)."""
    by_level = dynamic['levels']
    used = [name for name in dynamic['window']
            if any(by_level[lv]['routing'].get(name) for lv in by_level)]
    top1 = ' Top-1 (%) |' if with_top1 else ''
    lines = ['### Routing by level', '',
             f'| Level | Images |{top1} Mean MAdds (M) | ' +
             ' | '.join(used) + ' |',
             '| --- | ---: | ' + '---: | ' * with_top1 + '---: | ' +
             ' | '.join('---:' for _ in used) + ' |']
    for lv in sorted(by_level):
        part = by_level[lv]
        top1 = f' {_fmt(part.get(TOP1))} |' if with_top1 else ''
        lines.append(f"| {lv} | {part['images']} |{top1} "
                     f"{part['madds'] / 1e6:.2f} | " + ' | '.join(
                         str(part['routing'].get(name, 0))
                         for name in used) + ' |')
    return '\n'.join(lines)


def _fmt(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.2f}'


def dynamic_section(rows: Sequence[Dict], dynamic: Dict,
                    metric: str = TOP1) -> str:
    """Summary of the dynamic model against the widest row of its window.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        dynamic (dict): Results of the dynamic model.
        metric (str): The metric key to compare. Defaults to top-1.

    Returns:
        str: Markdown with the summary and the routing histogram.
    """
    widest = widest_in_window(rows, dynamic['window'])
    share = 100 * dynamic['madds'] / widest['madds']
    value = dynamic[metric]
    delta = value - widest['metrics'][metric]
    curve = static_curve_at(rows, dynamic['madds'], metric)
    if metric == TOP1:
        name, unit, fmt = 'Top-1', ' %', '{:.2f}'
    else:
        name, unit, fmt = metric_label(metric), '', '{:.4f}'
    signed = fmt.replace(':', ':+')
    lines = [
        f'- {name}: {fmt.format(value)}{unit}',
        f"- Mean MAdds: {dynamic['madds'] / 1e6:.2f} M",
        f"- MAdds vs {widest['name']}: {share:.2f} %",
        f"- {name} vs {widest['name']}: {signed.format(delta)}",
        f"- Static curve at {dynamic['madds'] / 1e6:.2f} M (interpolated): "
        f'{fmt.format(curve)}{unit}; dynamic vs it: '
        f'{signed.format(value - curve)}',
        '',
        '### Routing',
        '',
        '| Sub-network | Images | Share (%) |',
        '| --- | ---: | ---: |',
    ]
    routing = dynamic['routing']
    total = sum(routing.values())
    for name in dynamic['window']:
        count = routing.get(name, 0)
        percent = 100 * count / total if total else 0.0
        lines.append(f'| {name} | {count} | {percent:.2f} |')
    return '\n'.join(lines)


def markdown_table(rows: Sequence[Dict],
                   dynamic: Optional[Dict] = None,
                   metric: str = TOP1) -> str:
    """Markdown of the static sub-networks and, if given, the dynamic model.

    Args:
        rows (Sequence[dict]): Static sub-network rows with ``name``,
            ``madds``, ``params`` and ``metrics['accuracy/top1']``.
        dynamic (dict, optional): Results of the dynamic model with
            ``accuracy/top1``, ``madds`` (mean per image), ``routing``
            (images per sub-network) and ``window`` (sub-network names).
            Defaults to None.
        metric (str): The metric key of the tables (in the rows' metrics
            and in ``dynamic``). Defaults to ``accuracy/top1``.

    Returns:
        str: The markdown sections, without a document title.
    """
    check_rows(rows, metric)
    sections = ['## Static sub-networks', static_table(rows, metric)]
    if dynamic is not None:
        check_dynamic(dynamic, rows, metric)
        sections += ['## Dynamic model',
                     dynamic_section(rows, dynamic, metric)]
    by_level = level_table(rows, dynamic)
    if by_level:
        sections += ['## By difficulty level', by_level]
    return '\n\n'.join(sections) + '\n'


def standard_error(top1, num_images: Optional[int]):
    """Binomial standard error of a top-1 (%, a number or an array) measured
    on ``num_images`` (0 if unknown)."""
    p = np.asarray(top1, dtype=np.float64) / 100.0
    if not num_images:
        return np.zeros_like(p)
    return 100.0 * np.sqrt(np.clip(p * (1 - p), 0.0, None) / num_images)


def _figure(width: float, height: float, columns: int = 1):
    # Imported here so that the package imports without matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns)


def honest_ylim(ax, values: Sequence[float]) -> None:
    """A y range that spans ``values`` (points and their error bars) with a
    small margin, so differences are not flattened by an axis from 0."""
    low, high = min(values), max(values)
    pad = max(0.5, 0.08 * (high - low))
    ax.set_ylim(low - pad, high + pad)


def save_madds_plot(fig, ax, path: str, values: Sequence[float], title: str,
                    num_images: Optional[int], metric: str = TOP1) -> None:
    """Finish a top-1 (or ``metric``) against MAdds plot (honest y range
    over ``values``, labels, the error bars' note in the title, grid,
    legend) and save it."""
    if metric == TOP1:
        honest_ylim(ax, values)
    else:  # a 0..1 metric: the top-1 margins (0.5 at least) would flatten it
        low, high = min(values), max(values)
        pad = max(0.01, 0.08 * (high - low))
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel('MAdds per image (M)')
    ax.set_ylabel('Top-1 accuracy (%)' if metric == TOP1
                  else metric_label(metric))
    ax.set_title(title if not num_images else
                 f'{title}\n(error bars: +-1 s.e., {num_images} images)')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_accuracy_vs_madds(rows: Sequence[Dict], path: str,
                           dynamic: Optional[Dict] = None,
                           title: str = 'DS-Net results',
                           num_images: Optional[int] = None,
                           metric: str = TOP1) -> None:
    """Save top-1 against MAdds of the sub-networks as a PNG.

    The static sub-networks are a line, ``largest`` a diamond and the
    dynamic model a star, with a dotted segment down (or up) to the static
    curve at its MAdds labelled with the gap. With ``num_images`` every point
    gets a +-1 standard-error bar, so the noise of the test split is seen
    beside the differences; the y range spans the points and their bars.

    Args:
        rows (Sequence[dict]): Static sub-network rows (already checked).
        path (str): Where to write the PNG.
        dynamic (dict, optional): Results of the dynamic model.
            Defaults to None.
        title (str): Title of the plot. Defaults to 'DS-Net results'.
        num_images (int, optional): Test images behind each top-1.
            Defaults to None (no error bars).
        metric (str): The metric key on the y axis. Defaults to top-1;
            another has no error bars (they are binomial).
    """
    fig, ax = _figure(6, 4.5)
    if metric != TOP1:
        num_images = None
    subnets = curve_rows(rows)
    points = []

    def draw(madds, top1, **kwargs):
        err = standard_error(top1, num_images)
        points.extend(np.ravel([np.asarray(top1) - err,
                                np.asarray(top1) + err]))
        ax.errorbar(madds, top1, yerr=err if num_images else None,
                    capsize=3, **kwargs)

    if subnets:
        draw([row['madds'] / 1e6 for row in subnets],
             [row['metrics'][metric] for row in subnets],
             marker='o', label='static sub-networks')
    for row in rows:
        if row['name'] == LARGEST:
            draw(row['madds'] / 1e6, row['metrics'][metric], marker='D',
                 markersize=7, color='tab:red', label=LARGEST, zorder=3)
    if dynamic is not None:
        madds = dynamic['madds'] / 1e6
        value = dynamic[metric]
        draw(madds, value, marker='*', markersize=15,
             color='tab:orange', label='dynamic', zorder=4, linestyle='')
        curve = static_curve_at(rows, dynamic['madds'], metric)
        ax.plot([madds, madds], [curve, value], linestyle=':',
                color='tab:orange', zorder=2)
        gap = f'{value - curve:+.2f}' if metric == TOP1 \
            else f'{value - curve:+.4f}'
        ax.annotate(f'{gap} vs static',
                    xy=(madds, (curve + value) / 2),
                    xytext=(8, 0), textcoords='offset points',
                    va='center', color='tab:orange',
                    bbox=dict(facecolor='white', alpha=0.8,
                              edgecolor='none'))
    save_madds_plot(fig, ax, path, points, title, num_images, metric)


def plot_routing_by_level(rows: Sequence[Dict], dynamic: Dict,
                          path: str) -> None:
    """Save how the dynamic model treats each difficulty level as a PNG.

    Three panels: the routing histogram per level as stacked shares (light
    narrow to dark wide), the mean routed MAdds per level against the
    window's narrowest and widest, and top-1 per level against MAdds for the
    static sub-networks (lines) and the dynamic model (stars); the last only
    where the rows have a top-1 per level (a detector's mAP has none).

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        dynamic (dict): Results of the dynamic model with ``levels``.
        path (str): Where to write the PNG.
    """
    from matplotlib import colormaps

    by_level = dynamic['levels']
    levels = sorted(by_level)
    with_top1 = bool(levels_of(rows))
    fig, axes = _figure(14 if with_top1 else 9.5, 4.2, 3 if with_top1 else 2)
    share_ax, madds_ax = axes[:2]
    window = [row for row in sorted(rows, key=lambda r: r['madds'])
              if row['name'] in dynamic['window']]
    cmap = colormaps['viridis_r']
    bottom = np.zeros(len(levels))
    for pos, row in enumerate(window):
        share = np.array([
            100 * by_level[lv]['routing'].get(row['name'], 0) /
            max(by_level[lv]['images'], 1) for lv in levels])
        if share.any():
            share_ax.bar(levels, share, bottom=bottom,
                         color=cmap(0.1 + 0.8 * pos / max(len(window) - 1, 1)),
                         label=f"{row['name']} ({row['madds'] / 1e6:.2f} M)")
            bottom += share
    share_ax.set_xticks(levels)
    share_ax.set_xlabel('difficulty level')
    share_ax.set_ylabel('images routed (%)')
    share_ax.set_title('Routing per level')
    share_ax.legend(fontsize=7)

    madds_ax.bar(levels, [by_level[lv]['madds'] / 1e6 for lv in levels],
                 color='tab:orange')
    for row, style in ((window[0], '--'), (window[-1], '-.')):
        madds_ax.axhline(row['madds'] / 1e6, linestyle=style, color='grey',
                         label=f"{row['name']} ({row['madds'] / 1e6:.2f} M)")
    madds_ax.set_xticks(levels)
    madds_ax.set_xlabel('difficulty level')
    madds_ax.set_ylabel('mean routed MAdds (M)')
    madds_ax.set_title('Cost per level')
    madds_ax.legend(fontsize=7)

    if with_top1:
        _plot_top1_by_level(axes[2], rows, by_level, levels)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_top1_by_level(top1_ax, rows: Sequence[Dict], by_level: Dict,
                        levels: Sequence[int]) -> None:
    subnets = curve_rows(rows)
    for lv in levels:
        line = top1_ax.plot(
            [row['madds'] / 1e6 for row in subnets],
            [row['metrics'][f'accuracy/level_{lv}/top1'] for row in subnets],
            marker='.', label=f'level {lv} static')[0]
        if by_level[lv].get(TOP1) is not None:
            top1_ax.scatter(by_level[lv]['madds'] / 1e6, by_level[lv][TOP1],
                            marker='*', s=160, color=line.get_color(),
                            edgecolors='black', zorder=3)
    top1_ax.set_xlabel('MAdds per image (M)')
    top1_ax.set_ylabel('top-1 (%)')
    top1_ax.set_title('Top-1 per level (stars: dynamic)')
    top1_ax.grid(True, alpha=0.3)
    top1_ax.legend(fontsize=7)


def write_report(rows: List[Dict],
                 out_dir: str,
                 dynamic: Optional[Dict] = None,
                 title: str = 'DS-Net results',
                 num_images: Optional[int] = None,
                 metric: str = TOP1) -> Dict[str, str]:
    """Write ``report.md`` and ``accuracy_vs_madds.png`` into ``out_dir``,
    and ``routing_by_level.png`` when the dynamic model has ``levels``.

    Args:
        rows (list[dict]): Static sub-network rows with ``name``, ``madds``,
            ``params`` and ``metrics['accuracy/top1']``; a row named
            ``'largest'`` is plotted apart.
        out_dir (str): Directory to write into (created if missing).
        dynamic (dict, optional): Results of the dynamic model, see
            :func:`markdown_table`. Defaults to None.
        title (str): Title of the report and of the plot.
            Defaults to 'DS-Net results'.
        num_images (int, optional): Test images behind each top-1, for the
            plot's error bars. Defaults to None.
        metric (str): The metric key reported (see :func:`markdown_table`).
            Defaults to ``accuracy/top1``.

    Returns:
        dict: ``{'markdown': path, 'plot': path}``, plus ``'levels': path``
        when the routing-by-level plot is written.
    """
    body = markdown_table(rows, dynamic, metric)
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(markdown=osp.join(out_dir, 'report.md'),
                 plot=osp.join(out_dir, 'accuracy_vs_madds.png'))
    with open(paths['markdown'], 'w') as f:
        f.write(f'# {title}\n\n{body}')
    plot_accuracy_vs_madds(rows, paths['plot'], dynamic, title, num_images,
                           metric)
    if dynamic is not None and dynamic.get('levels'):
        paths['levels'] = osp.join(out_dir, 'routing_by_level.png')
        plot_routing_by_level(rows, dynamic, paths['levels'])
    return paths
