# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Markdown report and accuracy-vs-MAdds plot of evaluated sub-networks."""
import copy
import os.path as osp

import pytest

from dsnet_mm.analysis.report import markdown_table, write_report

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def make_rows():
    def row(name, index, madds, params, top1):
        return dict(name=name, index=index, madds=madds, params=params,
                    metrics={'accuracy/top1': top1})

    return [row('subnet_0', 0, 1278992, 129000, 98.05),
            row('subnet_1', 1, 2000000, 201400, 98.5),
            row('subnet_2', 2, 3456789, 350000, 99.0),
            row('subnet_3', 3, 4000000, 512345, 99.2),
            row('largest', 4, 5000000, 700000, 99.3)]


def make_dynamic():
    return {'accuracy/top1': 99.0, 'madds': 3000000.0,
            'routing': {'subnet_0': 1, 'subnet_3': 3},
            'window': ['subnet_0', 'subnet_1', 'subnet_2', 'subnet_3']}


def test_static_lines_are_rounded():
    text = markdown_table(make_rows())
    lines = text.splitlines()
    # MAdds in M with 2 decimals, params in M with 3, top-1 with 2
    assert '| subnet_0 | 1.28 | 0.129 | 98.05 |' in lines
    assert '| subnet_1 | 2.00 | 0.201 | 98.50 |' in lines
    assert '| subnet_2 | 3.46 | 0.350 | 99.00 |' in lines
    assert '| subnet_3 | 4.00 | 0.512 | 99.20 |' in lines
    assert '| largest | 5.00 | 0.700 | 99.30 |' in lines
    assert 'Dynamic' not in text


def test_dynamic_section():
    text = markdown_table(make_rows(), make_dynamic())
    lines = text.splitlines()
    # compared with the widest of the window (subnet_3, 4 M MAdds), not with
    # 'largest': 3 M / 4 M = 75 %, 99.0 - 99.2 = -0.2
    assert '- Top-1: 99.00 %' in lines
    assert '- Mean MAdds: 3.00 M' in lines
    assert '- MAdds vs subnet_3: 75.00 %' in lines
    assert '- Top-1 vs subnet_3: -0.20' in lines
    # every sub-network of the window, 4 images in all
    assert '| subnet_0 | 1 | 25.00 |' in lines
    assert '| subnet_1 | 0 | 0.00 |' in lines
    assert '| subnet_2 | 0 | 0.00 |' in lines
    assert '| subnet_3 | 3 | 75.00 |' in lines
    histogram = lines[lines.index('| Sub-network | Images | Share (%) |')
                      + 2:]
    assert [line.split(' | ')[0] for line in histogram] == [
        '| subnet_0', '| subnet_1', '| subnet_2', '| subnet_3']


def test_write_report(tmp_path):
    from matplotlib.image import imread

    out_dir = osp.join(str(tmp_path), 'report')
    paths = write_report(make_rows(), out_dir, make_dynamic(), title='Digits')
    assert paths == dict(markdown=osp.join(out_dir, 'report.md'),
                         plot=osp.join(out_dir, 'accuracy_vs_madds.png'))
    with open(paths['markdown']) as f:
        text = f.read()
    assert text.startswith('# Digits\n')
    assert '| subnet_0 | 1.28 | 0.129 | 98.05 |' in text
    assert '- MAdds vs subnet_3: 75.00 %' in text

    with open(paths['plot'], 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    image = imread(paths['plot'])
    assert image.ndim == 3 and image.shape[:2] == (540, 720)  # 6x4.5 at 120
    assert image.std() > 0.01  # not a blank canvas


def test_write_report_without_dynamic_or_largest(tmp_path):
    paths = write_report(make_rows()[:4], str(tmp_path))
    with open(paths['plot'], 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE
    with open(paths['markdown']) as f:
        assert f.read().startswith('# DS-Net results\n')


def test_empty_rows():
    with pytest.raises(ValueError, match='empty'):
        markdown_table([])


@pytest.mark.parametrize('key', ['name', 'madds', 'params', 'metrics'])
def test_missing_row_key(key):
    rows = make_rows()
    del rows[2][key]
    with pytest.raises(ValueError, match=f"row 2.*'{key}'"):
        markdown_table(rows)


def test_missing_top1_names_row():
    rows = make_rows()
    rows[1]['metrics'] = {'accuracy/top5': 100.0}
    with pytest.raises(ValueError,
                       match="row 1 \\('subnet_1'\\).*'accuracy/top1'"):
        markdown_table(rows)


@pytest.mark.parametrize('key', ['accuracy/top1', 'madds', 'routing',
                                 'window'])
def test_missing_dynamic_key(key):
    dynamic = make_dynamic()
    del dynamic[key]
    with pytest.raises(ValueError, match=f"dynamic.*'{key}'"):
        markdown_table(make_rows(), dynamic)


def test_dynamic_must_fit_rows():
    dynamic = make_dynamic()
    dynamic['window'] = ['subnet_0', 'subnet_9']
    with pytest.raises(ValueError, match='subnet_9'):
        markdown_table(make_rows(), dynamic)
    dynamic = make_dynamic()
    dynamic['routing'] = dict(dynamic['routing'], largest=2)
    with pytest.raises(ValueError, match='largest'):
        markdown_table(make_rows(), dynamic)


def test_inputs_are_not_modified():
    rows, dynamic = make_rows(), make_dynamic()
    expected = copy.deepcopy((rows, dynamic))
    markdown_table(rows, dynamic)
    assert (rows, dynamic) == expected


def make_level_rows():
    rows = make_rows()
    per_level = {'subnet_0': (99.0, 90.0), 'subnet_1': (99.5, 93.0),
                 'subnet_2': (99.5, 96.0), 'subnet_3': (100.0, 97.0),
                 'largest': (100.0, 97.5)}
    for row in rows:
        for level, top1 in enumerate(per_level[row['name']]):
            row['metrics'][f'accuracy/level_{level}/top1'] = top1
    return rows


def make_level_dynamic():
    return dict(make_dynamic(), levels={
        0: {'images': 2, 'madds': 1.5e6, 'accuracy/top1': 99.0,
            'routing': {'subnet_0': 1, 'subnet_3': 1}},
        1: {'images': 2, 'madds': 4e6, 'accuracy/top1': 97.0,
            'routing': {'subnet_3': 2}},
    })


def test_static_curve_is_interpolated_between_subnets():
    from dsnet_mm.analysis.report import static_curve_at
    rows = make_rows()
    # halfway between subnet_0 (1278992, 98.05) and subnet_1 (2e6, 98.5)
    assert static_curve_at(rows, (1278992 + 2e6) / 2) == \
        pytest.approx(98.275)
    # 'largest' is not on the curve: beyond subnet_3 it stays at 99.2
    assert static_curve_at(rows, 4.8e6) == pytest.approx(99.2)
    text = markdown_table(rows, make_dynamic())
    # dynamic at 3 M: subnet_1 (2 M, 98.5) .. subnet_2 (3.456789 M, 99.0)
    expected = 98.5 + 0.5 * 1e6 / 1456789
    assert (f'- Static curve at 3.00 M (interpolated): {expected:.2f} %; '
            f'dynamic vs it: {99.0 - expected:+.2f}') in text.splitlines()


def test_level_tables():
    text = markdown_table(make_level_rows(), make_level_dynamic())
    lines = text.splitlines()
    assert '## By difficulty level' in lines
    assert ('| Sub-network | MAdds (M) | Top-1 (%) | Level 0 (%) | '
            'Level 1 (%) |') in lines
    assert '| subnet_0 | 1.28 | 98.05 | 99.00 | 90.00 |' in lines
    assert '| dynamic | 3.00 | 99.00 | 99.00 | 97.00 |' in lines
    # only the sub-networks that got images get a column
    assert ('| Level | Images | Top-1 (%) | Mean MAdds (M) | subnet_0 | '
            'subnet_3 |') in lines
    assert '| 0 | 2 | 99.00 | 1.50 | 1 | 1 |' in lines
    assert '| 1 | 2 | 97.00 | 4.00 | 0 | 2 |' in lines
    assert 'By difficulty level' not in markdown_table(make_rows(),
                                                       make_dynamic())


def test_write_report_draws_the_routing_by_level(tmp_path):
    from matplotlib.image import imread

    paths = write_report(make_level_rows(), str(tmp_path),
                         make_level_dynamic(), num_images=1440)
    assert paths['levels'] == osp.join(str(tmp_path), 'routing_by_level.png')
    image = imread(paths['levels'])
    assert image.shape[:2] == (462, 1540)  # 14x4.2 at 110 dpi
    assert image.std() > 0.01
    assert 'levels' not in write_report(make_level_rows(), str(tmp_path),
                                        make_dynamic())


def test_routing_by_level_without_a_top1_per_level(tmp_path):
    """A detector's rows have an mAP and no top-1 per level: the routing
    and cost panels are drawn, the top-1 panel is left out."""
    from matplotlib.image import imread

    rows = [dict(row, metrics={'pascal_voc/mAP': 0.5}) for row in make_rows()]
    dynamic = make_level_dynamic()
    dynamic['pascal_voc/mAP'] = dynamic.pop('accuracy/top1')
    for level in dynamic['levels'].values():
        del level['accuracy/top1']
    paths = write_report(rows, str(tmp_path), dynamic,
                         metric='pascal_voc/mAP')
    image = imread(paths['levels'])
    assert image.shape[:2] == (462, 1045)  # 9.5x4.2 at 110 dpi
    assert image.std() > 0.01


def test_standard_error():
    from dsnet_mm.analysis.report import standard_error
    assert standard_error(90.0, 100) == pytest.approx(3.0)
    assert standard_error(90.0, None) == 0.0
