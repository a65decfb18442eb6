# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The plots of a report: top-1 (or another metric) against MAdds, and the
dynamic model's routing per difficulty level.

Like the tables, they read the JSON form of the schema (:mod:`.schema`);
the dataclasses are accepted and turned into it.
"""
from typing import Dict, Optional, Sequence

import numpy as np

from .schema import (LARGEST, TOP1, DynamicLike, RowLike, dynamic_dict,
                     row_dicts)
from .tables import curve_rows, levels_of, metric_label, static_curve_at


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


def plot_accuracy_vs_madds(rows: Sequence[RowLike], path: str,
                           dynamic: Optional[DynamicLike] = None,
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
    rows, dynamic = row_dicts(rows), dynamic_dict(dynamic)
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


def plot_routing_by_level(rows: Sequence[RowLike], dynamic: DynamicLike,
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

    rows, dynamic = row_dicts(rows), dynamic_dict(dynamic)
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
