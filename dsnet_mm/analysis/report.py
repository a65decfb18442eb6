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
"""
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

TOP1 = 'accuracy/top1'
LARGEST = 'largest'
ROW_KEYS = ('name', 'madds', 'params', 'metrics')
DYNAMIC_KEYS = (TOP1, 'madds', 'routing', 'window')


def _row_label(row: Dict, position: int) -> str:
    """How an error message names a row."""
    return f"row {position} ({row['name']!r})" if 'name' in row \
        else f'row {position}'


def check_rows(rows: Sequence[Dict]) -> None:
    """Raise ``ValueError`` unless every row holds what the report needs.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
    """
    if not rows:
        raise ValueError('rows is empty: nothing to report')
    for position, row in enumerate(rows):
        for key in ROW_KEYS:
            if key not in row:
                raise ValueError(f'{_row_label(row, position)} misses the '
                                 f'key {key!r}')
        if TOP1 not in row['metrics']:
            raise ValueError(f'{_row_label(row, position)} misses the key '
                             f'{TOP1!r} in its metrics')


def check_dynamic(dynamic: Dict, rows: Sequence[Dict]) -> None:
    """Raise ``ValueError`` unless ``dynamic`` fits the static ``rows``.

    Args:
        dynamic (dict): Results of the dynamic model.
        rows (Sequence[dict]): Static sub-network rows (already checked).
    """
    for key in DYNAMIC_KEYS:
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


def static_table(rows: Sequence[Dict]) -> str:
    """Markdown table with one line per static sub-network.

    Args:
        rows (Sequence[dict]): Static sub-network rows.

    Returns:
        str: The table, MAdds and params in millions.
    """
    lines = ['| Sub-network | MAdds (M) | Params (M) | Top-1 (%) |',
             '| --- | ---: | ---: | ---: |']
    for row in rows:
        lines.append(f"| {row['name']} | {row['madds'] / 1e6:.2f} "
                     f"| {row['params'] / 1e6:.3f} "
                     f"| {row['metrics'][TOP1]:.2f} |")
    return '\n'.join(lines)


def dynamic_section(rows: Sequence[Dict], dynamic: Dict) -> str:
    """Summary of the dynamic model against the widest row of its window.

    Args:
        rows (Sequence[dict]): Static sub-network rows.
        dynamic (dict): Results of the dynamic model.

    Returns:
        str: Markdown with the summary and the routing histogram.
    """
    widest = widest_in_window(rows, dynamic['window'])
    share = 100 * dynamic['madds'] / widest['madds']
    delta = dynamic[TOP1] - widest['metrics'][TOP1]
    lines = [
        f"- Top-1: {dynamic[TOP1]:.2f} %",
        f"- Mean MAdds: {dynamic['madds'] / 1e6:.2f} M",
        f"- MAdds vs {widest['name']}: {share:.2f} %",
        f"- Top-1 vs {widest['name']}: {delta:+.2f}",
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
                   dynamic: Optional[Dict] = None) -> str:
    """Markdown of the static sub-networks and, if given, the dynamic model.

    Args:
        rows (Sequence[dict]): Static sub-network rows with ``name``,
            ``madds``, ``params`` and ``metrics['accuracy/top1']``.
        dynamic (dict, optional): Results of the dynamic model with
            ``accuracy/top1``, ``madds`` (mean per image), ``routing``
            (images per sub-network) and ``window`` (sub-network names).
            Defaults to None.

    Returns:
        str: The markdown sections, without a document title.
    """
    check_rows(rows)
    sections = ['## Static sub-networks', static_table(rows)]
    if dynamic is not None:
        check_dynamic(dynamic, rows)
        sections += ['## Dynamic model', dynamic_section(rows, dynamic)]
    return '\n\n'.join(sections) + '\n'


def plot_accuracy_vs_madds(rows: Sequence[Dict], path: str,
                           dynamic: Optional[Dict] = None,
                           title: str = 'DS-Net results') -> None:
    """Save top-1 against MAdds of the sub-networks as a PNG.

    Args:
        rows (Sequence[dict]): Static sub-network rows (already checked).
        path (str): Where to write the PNG.
        dynamic (dict, optional): Results of the dynamic model, drawn as a
            star. Defaults to None.
        title (str): Title of the plot. Defaults to 'DS-Net results'.
    """
    # Imported here so that the package imports without matplotlib.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    subnets = [row for row in rows if row['name'] != LARGEST]
    if subnets:
        ax.plot([row['madds'] / 1e6 for row in subnets],
                [row['metrics'][TOP1] for row in subnets],
                marker='o', label='static sub-networks')
    for row in rows:
        if row['name'] == LARGEST:
            ax.scatter(row['madds'] / 1e6, row['metrics'][TOP1], marker='D',
                       s=60, color='tab:red', label=LARGEST, zorder=3)
    if dynamic is not None:
        ax.scatter(dynamic['madds'] / 1e6, dynamic[TOP1], marker='*', s=200,
                   color='tab:orange', label='dynamic', zorder=4)
    ax.set_xlabel('MAdds (M)')
    ax.set_ylabel('Top-1 accuracy (%)')
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(rows: List[Dict],
                 out_dir: str,
                 dynamic: Optional[Dict] = None,
                 title: str = 'DS-Net results') -> Dict[str, str]:
    """Write ``report.md`` and ``accuracy_vs_madds.png`` into ``out_dir``.

    Args:
        rows (list[dict]): Static sub-network rows with ``name``, ``madds``,
            ``params`` and ``metrics['accuracy/top1']``; a row named
            ``'largest'`` is plotted apart.
        out_dir (str): Directory to write into (created if missing).
        dynamic (dict, optional): Results of the dynamic model, see
            :func:`markdown_table`. Defaults to None.
        title (str): Title of the report and of the plot.
            Defaults to 'DS-Net results'.

    Returns:
        dict: ``{'markdown': path, 'plot': path}``.
    """
    body = markdown_table(rows, dynamic)
    os.makedirs(out_dir, exist_ok=True)
    paths = dict(markdown=osp.join(out_dir, 'report.md'),
                 plot=osp.join(out_dir, 'accuracy_vs_madds.png'))
    with open(paths['markdown'], 'w') as f:
        f.write(f'# {title}\n\n{body}')
    plot_accuracy_vs_madds(rows, paths['plot'], dynamic, title)
    return paths
