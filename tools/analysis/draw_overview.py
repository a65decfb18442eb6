# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Draw the overview figure of the documentation (docs/figures/overview.png).

    python tools/analysis/draw_overview.py [--out docs/figures/overview.png]

A schematic of a dynamic slimmable network: the layers before the gate,
shared by every sub-network; the double-headed gate; the layers after it,
whose weights every sub-network uses a dense prefix of; and the two
training stages. Only matplotlib is needed.
"""
import argparse

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

NARROW, WIDE, SHARED, GATE = '#4C72B0', '#C44E52', '#8C8C8C', '#DD8452'


def box(ax, x, y, w, h, color, text='', alpha=1.0, fontsize=9, **kw):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor='black',
                           linewidth=0.8, alpha=alpha, **kw))
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha='center', va='center',
                fontsize=fontsize)


def arrow(ax, start, end, color='black', style='-|>', **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style,
                                 mutation_scale=12, color=color,
                                 linewidth=1.2, **kw))


def draw(out: str) -> None:
    fig, ax = plt.subplots(figsize=(10, 3.9))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 40)
    ax.axis('off')

    # images of two difficulties
    box(ax, 1, 24, 7, 7, '#F2F2F2', 'easy\nimage', fontsize=8)
    box(ax, 1, 9, 7, 7, '#F2F2F2', 'hard\nimage', fontsize=8)
    arrow(ax, (8, 27.5), (12, 21))
    arrow(ax, (8, 12.5), (12, 19))

    # layers before the gate: shared by the window's sub-networks
    box(ax, 12, 12, 14, 16, SHARED, 'stem and\nearly stages\n(shared)',
        alpha=0.5)
    arrow(ax, (26, 20), (30, 20))

    # the double-headed gate
    box(ax, 30, 12, 13, 16, GATE, '', alpha=0.6)
    ax.text(36.5, 25.5, 'gate', ha='center', va='center', fontsize=9,
            weight='bold')
    box(ax, 31, 18.5, 11, 4.5, 'white', 'attention\n(SE)', fontsize=7)
    box(ax, 31, 13, 11, 4.5, 'white', 'slimming\nhead', fontsize=7)

    # the routed layers: nested prefixes of the stored weights
    x0, y0, w, h = 50, 6, 26, 28
    box(ax, x0, y0, w, h, 'white', '')
    for k, (frac, color, alpha) in enumerate(
            [(1.0, WIDE, 0.25), (0.7, '#937860', 0.3), (0.45, NARROW, 0.45)]):
        ax.add_patch(Rectangle((x0, y0 + h * (1 - frac)), w * frac, h * frac,
                               facecolor=color, alpha=alpha,
                               edgecolor='black', linewidth=0.6))
    ax.text(x0 + w * 0.22, y0 + h * 0.78, 'narrow\nsub-network', ha='center',
            va='center', fontsize=7.5, color=NARROW, weight='bold')
    ax.text(x0 + w * 0.84, y0 + h * 0.12, 'widest', ha='center', va='center',
            fontsize=7.5, color=WIDE, weight='bold')
    ax.text(x0 + w / 2, y0 + h + 2, 'stored weights after the gate:\n'
            'each sub-network runs W[:c_out, :c_in]', ha='center',
            va='bottom', fontsize=8)
    arrow(ax, (43, 21), (50, 29), color=NARROW,
          connectionstyle='arc3,rad=-0.2')
    ax.text(46.3, 28.6, 'easy', ha='right', fontsize=7.5, color=NARROW)
    arrow(ax, (43, 17), (50, 10), color=WIDE,
          connectionstyle='arc3,rad=0.2')
    ax.text(46.3, 10.5, 'hard', ha='right', fontsize=7.5, color=WIDE)

    # classifier
    arrow(ax, (76, 20), (80, 20))
    box(ax, 80, 15, 8, 10, SHARED, 'classifier\n(sliced\ninput)',
        alpha=0.5, fontsize=7.5)
    arrow(ax, (88, 20), (92, 20))
    ax.text(93, 20, 'class', va='center', fontsize=8)

    # the two stages
    ax.text(1, 2.2, 'Stage I: the supernet, sandwich rule (largest, random, '
            'smallest) with in-place bootstrapping; BN recalibrated per '
            'sub-network.   Stage II: only the slimming head, by sandwich '
            'gate sparsification.', fontsize=7.5, va='center')
    fig.savefig(out, dpi=110, bbox_inches='tight')
    plt.close(fig)
    print(f'wrote {out}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='docs/figures/overview.png',
                        help='output PNG (default: docs/figures/overview.png)')
    draw(parser.parse_args().out)


if __name__ == '__main__':
    main()
