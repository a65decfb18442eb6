# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Markdown tables of a report: the static sub-networks, the dynamic model
against them, and both per difficulty level.

The functions read the JSON form of the schema (:mod:`.schema`): rows and
the dynamic summary as dicts; :func:`markdown_table` also takes the
dataclasses, and checks them.
"""
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from .schema import (LARGEST, TOP1, DynamicLike, RowLike, report_dicts)


def metric_label(metric: str) -> str:
    """How tables and plots name a metric key: ``'Top-1 (%)'`` for
    ``accuracy/top1``, ``'mAP'`` for ``.../mAP``, else the key."""
    if metric == TOP1:
        return 'Top-1 (%)'
    return metric.rsplit('/', 1)[-1] if metric.endswith('/mAP') else metric


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



def markdown_table(rows: Sequence[RowLike],
                   dynamic: Optional[DynamicLike] = None,
                   metric: str = TOP1) -> str:
    """Markdown of the static sub-networks and, if given, the dynamic model.

    Args:
        rows (Sequence[dict | SubnetRow]): Static sub-network rows with
            ``name``, ``madds``, ``params`` and ``metrics['accuracy/top1']``
            (:class:`~.schema.SubnetRow`).
        dynamic (dict | DynamicResult, optional): Results of the dynamic
            model with ``accuracy/top1``, ``madds`` (mean per image),
            ``routing`` (images per sub-network) and ``window`` (sub-network
            names) (:class:`~.schema.DynamicResult`). Defaults to None.
        metric (str): The metric key of the tables (in the rows' metrics
            and in ``dynamic``). Defaults to ``accuracy/top1``.

    Returns:
        str: The markdown sections, without a document title.
    """
    rows, dynamic = report_dicts(rows, dynamic, metric)
    sections = ['## Static sub-networks', static_table(rows, metric)]
    if dynamic is not None:
        sections += ['## Dynamic model',
                     dynamic_section(rows, dynamic, metric)]
    by_level = level_table(rows, dynamic)
    if by_level:
        sections += ['## By difficulty level', by_level]
    return '\n\n'.join(sections) + '\n'
