# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Searched-vs-uniform comparison and the plot of a search trajectory."""
import json
import math
import os.path as osp

import pytest
from conftest import run_tool

from dsnet_mm.analysis.search_report import (comparison_markdown,
                                             matched_gaps, plot_comparison,
                                             plot_trajectory,
                                             write_comparison)

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
TOOL = 'tools/analysis/compare_subnets.py'


def row(name, madds, top1, index=0):
    return dict(name=name, index=index, madds=madds, params=1000,
                metrics={'accuracy/top1': top1})


def uniform_rows():
    # the curve: 70 at 1 M, 80 at 2 M, 90 at 4 M; 'largest' (5 M, 95) must
    # not stretch it
    return [row('u_2', 4_000_000, 90.0, 2), row('u_0', 1_000_000, 70.0, 0),
            row('largest', 5_000_000, 95.0, 3),
            row('u_1', 2_000_000, 80.0, 1)]


def searched_rows():
    return [
        row('s_0', 1_500_000, 78.0, 0),   # curve 75.0 -> +3.0
        row('s_1', 3_000_000, 84.0, 1),   # curve 85.0 -> -1.0
        row('s_2', 500_000, 60.0, 2),     # below the range
        row('s_3', 4_500_000, 99.0, 3),   # above u_2, inside only 'largest'
        row('s_4', 4_000_000, 91.0, 4),   # on the edge -> +1.0
        row('largest', 2_000_000, 10.0, 5),  # ignored, would be -70
    ]


def write_results(path, rows):
    with open(path, 'w') as f:
        json.dump(dict(subnets=rows, dynamic=None), f)
    return str(path)


def test_gaps_interpolate_and_exclude():
    gaps = matched_gaps(searched_rows(), uniform_rows())
    points = gaps['points']
    # by MAdds; the edge of the range counts, 'largest' never
    assert [p['name'] for p in points] == ['s_0', 's_1', 's_4']
    assert [p['madds'] for p in points] == [1_500_000, 3_000_000, 4_000_000]
    assert [p['searched'] for p in points] == [78.0, 84.0, 91.0]
    assert [p['uniform'] for p in points] == pytest.approx([75.0, 85.0, 90.0])
    assert [p['gap'] for p in points] == pytest.approx([3.0, -1.0, 1.0])
    assert gaps['mean_gap'] == pytest.approx(1.0)
    assert gaps['max_gap'] == pytest.approx(3.0)
    assert gaps['min_gap'] == pytest.approx(-1.0)
    assert gaps['num_matched'] == 3
    assert gaps['outside'] == ['s_2', 's_3']
    assert gaps['uniform_range'] == [1_000_000, 4_000_000]


def test_gaps_on_a_non_monotone_curve():
    # the curve is read between neighbours by MAdds, not by top-1
    uniform = [row('u_0', 1e6, 80.0), row('u_1', 2e6, 76.0),
               row('u_2', 3e6, 86.0)]
    gaps = matched_gaps([row('s', 1.25e6, 80.0), row('t', 2.5e6, 80.0)],
                        uniform)
    assert [p['uniform'] for p in gaps['points']] == pytest.approx(
        [79.0, 81.0])
    assert gaps['mean_gap'] == pytest.approx(0.0)


def test_gaps_fail_clearly():
    with pytest.raises(ValueError, match='no searched sub-network lies '
                       'inside the uniform MAdds range'):
        matched_gaps([row('s_2', 500_000, 60.0),
                      row('s_3', 4_500_000, 99.0)], uniform_rows())
    with pytest.raises(ValueError, match="uniform rows hold no sub-network "
                       "but 'largest'"):
        matched_gaps(searched_rows(), [row('largest', 5e6, 95.0)])
    with pytest.raises(ValueError, match="searched rows hold no "
                       "sub-network but 'largest'"):
        matched_gaps([row('largest', 2e6, 95.0)], uniform_rows())
    bad = uniform_rows()
    del bad[1]['metrics']['accuracy/top1']
    with pytest.raises(ValueError, match=r"uniform rows: row 1 \('u_0'\) "
                       "misses the key 'accuracy/top1'"):
        matched_gaps(searched_rows(), bad)


def test_markdown_holds_the_numbers():
    text = comparison_markdown(matched_gaps(searched_rows(), uniform_rows()),
                               labels=('DS', 'US'))
    lines = text.splitlines()
    assert lines[0] == ('| Sub-network | MAdds (M) | DS top-1 (%) '
                        '| US top-1 at equal MAdds (%) | Gap |')
    assert lines[2:5] == ['| s_0 | 1.50 | 78.00 | 75.00 | +3.00 |',
                          '| s_1 | 3.00 | 84.00 | 85.00 | -1.00 |',
                          '| s_4 | 4.00 | 91.00 | 90.00 | +1.00 |']
    summary = [line for line in lines if line.startswith('Gap')]
    assert summary == ['Gap (DS - US, US interpolated at equal MAdds): '
                       'mean +1.00, max +3.00 (s_0), min -1.00 (s_1) over '
                       '3 matched sub-networks.']
    assert 'Outside the US MAdds range (not counted): s_2, s_3.' in lines
    assert 'largest' not in text
    with pytest.raises(ValueError, match='labels must be two names'):
        comparison_markdown(matched_gaps(searched_rows(), uniform_rows()),
                            labels=('only one', ))


def test_plot_comparison_draws_the_gaps(tmp_path):
    path = str(tmp_path / 'c.png')
    fig = plot_comparison(searched_rows(), uniform_rows(), path,
                          num_images=360)
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    ax = fig.axes[0]
    # one dotted segment per matched point, from the curve to the point
    dotted = [line for line in ax.get_lines()
              if line.get_linestyle() == ':']
    segments = sorted(tuple(line.get_xydata().ravel()) for line in dotted)
    assert len(segments) == 3
    for got, want in zip(segments, [(1.5, 75.0, 1.5, 78.0),
                                    (3.0, 85.0, 3.0, 84.0),
                                    (4.0, 90.0, 4.0, 91.0)]):
        assert got == pytest.approx(want)
    legend = {text.get_text() for text in ax.get_legend().get_texts()}
    assert legend == {'uniform', 'searched',
                      'gap at equal MAdds (mean +1.00)'}
    assert {t.get_text() for t in ax.texts} == {'+3.00', '-1.00', '+1.00'}
    # the y range holds s_2 (60) and s_3 (99) with their +-1 s.e. bars and a
    # margin of 8 %, not 'largest' of the searched rows (10)
    bottom = 60 - 100 * math.sqrt(0.6 * 0.4 / 360)
    top = 99 + 100 * math.sqrt(0.99 * 0.01 / 360)
    pad = 0.08 * (top - bottom)
    assert ax.get_ylim() == pytest.approx((bottom - pad, top + pad))
    assert not ax.xaxis_inverted()


def test_write_comparison(tmp_path):
    searched = write_results(tmp_path / 'searched.json', searched_rows())
    uniform = write_results(tmp_path / 'uniform.json', uniform_rows())
    out = tmp_path / 'deep' / 'out'
    paths = write_comparison(searched, uniform, str(out), title='T')
    assert paths == dict(markdown=str(out / 'comparison.md'),
                         plot=str(out / 'comparison.png'),
                         json=str(out / 'comparison.json'))
    with open(paths['plot'], 'rb') as f:
        data = f.read()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    with open(paths['json']) as f:
        assert json.load(f) == json.loads(json.dumps(
            matched_gaps(searched_rows(), uniform_rows())))
    with open(paths['markdown']) as f:
        text = f.read()
    assert text.startswith('# T\n')
    assert '| s_1 | 3.00 | 84.00 | 85.00 | -1.00 |' in text


def test_write_comparison_names_the_bad_file(tmp_path):
    good = write_results(tmp_path / 'good.json', uniform_rows())
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(rows=[])))
    with pytest.raises(ValueError, match='bad.json: no "subnets" list'):
        write_comparison(good, str(bad), str(tmp_path / 'out'))
    assert not osp.exists(tmp_path / 'out')


def trajectory(threshold=80.0):
    widths = dict(stem=8, stage2=16)
    steps = [dict(step=0, widths=widths, madds=5_548_704, score=91.2,
                  removed=None, fine_tuned=False),
             dict(step=1, widths=widths, madds=4_000_000, score=90.0,
                  removed='stage3', fine_tuned=False),
             dict(step=2, widths=widths, madds=3_000_000, score=86.5,
                  removed='stage2', fine_tuned=True),
             dict(step=3, widths=widths, madds=2_000_000, score=83.0,
                  removed='stem', fine_tuned=False)]
    return dict(groups=['stem', 'stage2', 'stage3'], threshold=threshold,
                steps=steps, kept=[3, 2, 0])


def test_plot_trajectory(tmp_path):
    path = str(tmp_path / 'trajectory.png')
    fig = plot_trajectory(trajectory(), path)
    with open(path, 'rb') as f:
        data = f.read()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    ax = fig.axes[0]
    assert not ax.xaxis_inverted()
    # kept steps labelled by their position in 'kept', at their points
    labels = {t.get_text(): t.xy for t in ax.texts}
    assert labels == {'0': (2.0, 83.0), '1': (3.0, 86.5),
                      '2': (pytest.approx(5.548704), 91.2)}
    threshold = [line for line in ax.get_lines()
                 if line.get_linestyle() == '--']
    assert len(threshold) == 1
    assert set(threshold[0].get_ydata()) == {80.0}
    # the kept steps and the fine-tuned one are point sets of their own
    offsets = {tuple(map(tuple, c.get_offsets())) for c in ax.collections}
    assert offsets == {((2.0, 83.0), (3.0, 86.5), (5.548704, 91.2)),
                       ((3.0, 86.5), )}
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert 'fine-tuned (1)' in legend and 'threshold 80.00' in legend
    # honest: spans the threshold and the scores, a margin of 8 % only
    pad = 0.08 * (91.2 - 80.0)
    assert ax.get_ylim() == pytest.approx((80.0 - pad, 91.2 + pad))


def test_plot_trajectory_without_threshold(tmp_path):
    path = str(tmp_path / 't.png')
    fig = plot_trajectory(trajectory(threshold=None), path, title='X')
    ax = fig.axes[0]
    assert not [line for line in ax.get_lines()
                if line.get_linestyle() == '--']
    assert ax.get_title() == 'X'
    # the y range follows the scores alone
    pad = 0.08 * (91.2 - 83.0)
    assert ax.get_ylim() == pytest.approx((83.0 - pad, 91.2 + pad))
    broken = trajectory()
    broken['kept'] = [0, 9]
    with pytest.raises(ValueError, match=r'kept names steps \[9\]'):
        plot_trajectory(broken, path)
    broken = trajectory()
    broken['steps'][2]['score'] = None
    with pytest.raises(ValueError, match="step 2 misses the key 'score'"):
        plot_trajectory(broken, path)
    with pytest.raises(ValueError, match='trajectory has no steps'):
        plot_trajectory(dict(trajectory(), steps=[]), path)


def test_cli_end_to_end(tmp_path):
    searched = write_results(tmp_path / 'searched.json', searched_rows())
    uniform = write_results(tmp_path / 'uniform.json', uniform_rows())
    out = tmp_path / 'out'
    proc = run_tool(TOOL, searched, uniform, '--out', str(out), '--labels',
                    'DS', 'US', '--title', 'Digits', '--num-images', '360')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('# Digits\n')
    assert '| s_0 | 1.50 | 78.00 | 75.00 | +3.00 |' in proc.stdout
    assert 'mean +1.00' in proc.stdout
    for name in ('comparison.md', 'comparison.png', 'comparison.json'):
        assert f'wrote {out / name}' in proc.stderr
        assert osp.getsize(out / name) > 0


def test_cli_names_the_bad_argument(tmp_path):
    uniform = write_results(tmp_path / 'uniform.json', uniform_rows())
    missing = str(tmp_path / 'nope.json')
    proc = run_tool(TOOL, missing, uniform, '--out', str(tmp_path / 'o'))
    assert proc.returncode == 2
    assert f'argument SEARCHED_JSON: no such file: {missing}' in proc.stderr
    no_subnets = tmp_path / 'other.json'
    no_subnets.write_text(json.dumps(dict(results=[])))
    proc = run_tool(TOOL, uniform, str(no_subnets), '--out',
                    str(tmp_path / 'o'))
    assert proc.returncode == 2
    assert 'argument UNIFORM_JSON:' in proc.stderr
    assert 'has no "subnets"' in proc.stderr
    assert not osp.exists(tmp_path / 'o')
