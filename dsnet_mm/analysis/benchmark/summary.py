# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The ratios that say whether slicing pays, and the latency plot."""
from typing import Dict, Optional, Sequence, Tuple

from .checks import DYNAMIC_ROWS, MODES


def _backend(row: Dict) -> str:
    return row.get('backend', 'torch')  # rows written before backends


def _scaling(by: Dict[Tuple[str, str], Dict], mode: str) -> Optional[Dict]:
    """From the cheapest to the costliest sub-network timed in ``mode``
    (the largest and the dynamic rows excluded): latency ratio, MAdds ratio
    and their quotient."""
    names = [n for m, n in by if m == mode and n != 'largest'
             and n not in DYNAMIC_ROWS]
    if len(names) < 2:
        return None
    cost = {n: by[(mode, n)]['madds'] for n in names}
    cheap, dear = min(names, key=cost.get), max(names, key=cost.get)
    latency = by[(mode, dear)]['median_ms'] / by[(mode, cheap)]['median_ms']
    madds = cost[dear] / cost[cheap]
    return dict(narrowest=cheap, widest=dear, latency_ratio=latency,
                madds_ratio=madds, efficiency=latency / madds)


def _ratios(rows: Sequence[Dict]) -> Dict:
    """The ratios of one backend's rows of one batch size (see
    :func:`summarize`)."""
    by = {(r['mode'], r['subnet']): r for r in rows}
    ms = {key: r['median_ms'] for key, r in by.items()}
    names = [r['subnet'] for r in rows
             if r['mode'] == 'slice' and r['subnet'] != 'largest']
    out: Dict = {}
    for key, num, den in (('slice_over_static', 'slice', 'static'),
                          ('index_over_slice', 'index', 'slice')):
        ratios = {n: ms[(num, n)] / ms[(den, n)] for n in names
                  if (num, n) in ms and (den, n) in ms}
        if ratios:
            out[key] = ratios
    if ('slice', 'largest') in ms:
        speedups = {n: ms[('slice', 'largest')] / ms[('mask', n)]
                    for n in names if ('mask', n) in ms}
        if speedups:
            out['mask_speedup'] = speedups
    for key, mode in (('scaling', 'slice'), ('static_scaling', 'static')):
        scaling = _scaling(by, mode)
        if scaling is not None:
            out[key] = scaling
    if 'scaling' in out and 'static_scaling' in out:
        out['scaling_over_static'] = out['scaling']['latency_ratio'] / \
            out['static_scaling']['latency_ratio']
    if ('dynamic', 'routed') in ms:
        if ('static', 'equal_madds') in ms:
            out['dynamic_throughput_ratio'] = \
                ms[('static', 'equal_madds')] / ms[('dynamic', 'routed')]
        if ('static', 'routed_limit') in ms:
            out['dynamic_over_routed_limit'] = \
                ms[('dynamic', 'routed')] / ms[('static', 'routed_limit')]
    return out


def summarize(rows: Sequence[Dict]) -> Dict[str, Dict]:
    """The ratios that say whether slicing pays, per batch size.

    For the eager torch rows:

    - ``slice_over_static``: slice latency / static latency per sub-network
      (1.0 is the limit);
    - ``index_over_slice``: gather-indexing latency / slice latency;
    - ``mask_speedup``: full-width latency (the largest, sliced) / mask
      latency per sub-network (1.0 means masking saves nothing);
    - ``scaling`` (``static_scaling``): from the cheapest to the costliest
      listed sub-network (the largest excluded), the slice (static) latency
      ratio against the MAdds ratio, and their quotient ``efficiency``;
      ``scaling_over_static``: slicing's speed-up over the static
      networks' own (1.0 is the limit);
    - ``dynamic_throughput_ratio``: latency of the static network of equal
      MAdds / latency of the bucketed dynamic model;
    - ``dynamic_over_routed_limit``: latency of the bucketed dynamic model /
      the per-image static limit (1.0 is the limit).

    The same ratios of every other backend under its name (``'ort'``,
    ``'inductor'``), with ``speedup_over_torch``: eager torch latency / the
    backend's, per ``'<mode> <sub-network>'``.
    """
    summary = {}
    for bs in sorted({r['batch_size'] for r in rows}):
        batch = [r for r in rows if r['batch_size'] == bs]
        out = _ratios([r for r in batch if _backend(r) == 'torch'])
        eager = {(r['mode'], r['subnet']): r['median_ms'] for r in batch
                 if _backend(r) == 'torch'}
        for backend in dict.fromkeys(map(_backend, batch)):
            if backend == 'torch':
                continue
            mine = [r for r in batch if _backend(r) == backend]
            ratios = _ratios(mine)
            speedup = {
                f"{r['mode']} {r['subnet']}":
                eager[(r['mode'], r['subnet'])] / r['median_ms']
                for r in mine if (r['mode'], r['subnet']) in eager
            }
            if speedup:
                ratios['speedup_over_torch'] = speedup
            out[backend] = ratios
        summary[str(bs)] = out
    return summary


def plot_latency(rows: Sequence[Dict], path: str) -> None:
    """Median latency against MAdds, one line per mode and backend, a panel
    per batch size; the dynamic model and its static references as
    points."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = sorted({r['batch_size'] for r in rows})
    backends = list(dict.fromkeys(map(_backend, rows)))
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2),
                             squeeze=False)
    markers = dict(routed='*', equal_madds='s', routed_limit='D')
    labels = dict(routed='dynamic (bucketed)',
                  equal_madds='static, equal MAdds',
                  routed_limit='static, per-image limit')
    for ax, bs in zip(axes[0], sizes):
        batch = [r for r in rows if r['batch_size'] == bs]
        for backend in backends:
            suffix = '' if backend == 'torch' else f' ({backend})'
            for mode in MODES:
                line = sorted((r for r in batch if r['mode'] == mode
                               and _backend(r) == backend
                               and r['subnet'] not in DYNAMIC_ROWS),
                              key=lambda r: r['madds'])
                if line:
                    ax.plot([r['madds'] / 1e6 for r in line],
                            [r['median_ms'] for r in line], 'o-', ms=3,
                            label=mode + suffix)
            for r in batch:
                if r['subnet'] in DYNAMIC_ROWS and _backend(r) == backend:
                    ax.plot(r['madds'] / 1e6, r['median_ms'],
                            markers[r['subnet']], ms=10,
                            label=labels[r['subnet']] + suffix)
        ax.set_title(f'batch size {bs}')
        ax.set_xlabel('MAdds per image (M)')
        ax.set_ylabel('median latency (ms)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
