# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Markdown table and accuracy-vs-MAdds plot of evaluated sub-networks.

The results are typed in :mod:`.schema` (:class:`SubnetRow`,
:class:`DynamicResult`), whose JSON form is shown here; the tables are in
:mod:`.tables`, the plots in :mod:`.plots`, and :func:`write_report` writes
them all. Every public function takes the dataclasses or their JSON form.

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
from typing import Dict, Optional, Sequence

from .plots import (honest_ylim, plot_accuracy_vs_madds,
                    plot_routing_by_level, save_madds_plot, standard_error,
                    _figure)
from .schema import (DYNAMIC_KEYS, LARGEST, ROW_KEYS, TOP1, DynamicLike,
                     DynamicResult, LevelResult, RowLike, SubnetRow, as_dynamic,
                     as_rows, check_dynamic, check_rows, report_dicts)
from .tables import (curve_rows, dynamic_section, level_table, levels_of,
                     markdown_table, metric_label, routing_by_level,
                     static_curve_at, static_table, widest_in_window)

__all__ = [
    'DYNAMIC_KEYS', 'LARGEST', 'ROW_KEYS', 'TOP1', 'DynamicResult',
    'LevelResult', 'SubnetRow', 'as_dynamic', 'as_rows', 'check_dynamic',
    'check_rows', 'curve_rows', 'dynamic_section', 'honest_ylim',
    'level_table', 'levels_of', 'markdown_table', 'metric_label',
    'plot_accuracy_vs_madds', 'plot_routing_by_level', 'routing_by_level',
    'save_madds_plot', 'standard_error', 'static_curve_at', 'static_table',
    'widest_in_window', 'write_report', '_figure'
]


def write_report(rows: Sequence[RowLike],
                 out_dir: str,
                 dynamic: Optional[DynamicLike] = None,
                 title: str = 'DS-Net results',
                 num_images: Optional[int] = None,
                 metric: str = TOP1) -> Dict[str, str]:
    """Write ``report.md`` and ``accuracy_vs_madds.png`` into ``out_dir``,
    and ``routing_by_level.png`` when the dynamic model has ``levels``.

    Args:
        rows (Sequence[dict | SubnetRow]): Static sub-network rows with
            ``name``, ``madds``, ``params`` and ``metrics['accuracy/top1']``;
            a row named ``'largest'`` is plotted apart.
        out_dir (str): Directory to write into (created if missing).
        dynamic (dict | DynamicResult, optional): Results of the dynamic
            model, see :func:`markdown_table`. Defaults to None.
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
    rows, dynamic = report_dicts(rows, dynamic, metric)
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
