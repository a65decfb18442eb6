# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The typed results of a report: JSON round trips and errors that name the
field."""
import copy
import json

import numpy as np
import pytest

from dsnet_mm.analysis.report import (DynamicResult, LevelResult, SubnetRow,
                                      markdown_table)


def row_dict(**changes):
    row = dict(name='subnet_3', index=3, madds=4000000, params=512345,
               metrics={'accuracy/top1': 99.2, 'accuracy/top5': 100.0})
    row.update(changes)
    return row


def dynamic_dict():
    return {
        'accuracy/top1': 99.0, 'madds': 3000000.0,
        'routing': {'subnet_0': 1, 'subnet_3': 3},
        'window': ['subnet_0', 'subnet_1', 'subnet_2', 'subnet_3'],
        'levels': {
            0: {'images': 3, 'madds': 2e6, 'accuracy/top1': 100.0,
                'routing': {'subnet_0': 1, 'subnet_3': 2}},
            1: {'images': 1, 'madds': 4e6, 'accuracy/top1': None,
                'routing': {'subnet_3': 1}},
        },
    }


@pytest.mark.parametrize('row', [
    row_dict(),
    row_dict(backbone_madds=3000000),
    {k: v for k, v in row_dict().items() if k != 'index'},
    row_dict(widths={'stage1': 8}),  # another key is kept as it is
])
def test_row_round_trips(row):
    expected = copy.deepcopy(row)
    typed = SubnetRow.from_dict(row)
    assert typed.to_dict() == expected
    assert list(typed.to_dict()) == list(expected)  # and keeps the order
    assert row == expected  # the input is not modified


def test_row_fields():
    typed = SubnetRow.from_dict(row_dict(backbone_madds=3000000))
    assert (typed.name, typed.index, typed.madds, typed.params,
            typed.backbone_madds) == ('subnet_3', 3, 4000000, 512345,
                                      3000000)
    assert typed.metrics['accuracy/top1'] == 99.2
    # numpy scalars are numbers
    assert SubnetRow.from_dict(row_dict(madds=np.int64(5))).madds == 5


@pytest.mark.parametrize('key', ['name', 'madds', 'params', 'metrics'])
def test_row_missing_field_is_named(key):
    row = row_dict()
    del row[key]
    with pytest.raises(ValueError,
                       match=f"row 7 misses the key '{key}'"):
        SubnetRow.from_dict(row, 'row 7')


@pytest.mark.parametrize('key, value, what', [
    ('name', 3, 'a str'),
    ('madds', '4M', 'a number'),
    ('params', None, 'a number'),
    ('madds', True, 'a number'),
    ('metrics', [99.2], 'a dict'),
    ('index', 3.5, 'an int'),
    ('backbone_madds', 'x', 'a number'),
])
def test_row_wrong_type_is_named(key, value, what):
    with pytest.raises(ValueError, match=f"row: '{key}' must be {what}"):
        SubnetRow.from_dict(row_dict(**{key: value}))


def test_row_must_be_a_dict():
    with pytest.raises(ValueError, match='row must be a dict, got list'):
        SubnetRow.from_dict([1, 2])


def test_dynamic_round_trips():
    dynamic = dynamic_dict()
    expected = copy.deepcopy(dynamic)
    typed = DynamicResult.from_dict(dynamic)
    assert typed.to_dict() == expected
    assert list(typed.to_dict()) == list(expected)
    assert dynamic == expected
    assert typed.value == 99.0 and typed.metric == 'accuracy/top1'
    assert typed.levels[0] == LevelResult(3, 2e6, {'subnet_0': 1,
                                                   'subnet_3': 2}, 100.0)
    del dynamic['levels']
    assert DynamicResult.from_dict(dynamic).to_dict() == dynamic


def test_dynamic_of_another_metric_round_trips():
    dynamic = dynamic_dict()
    dynamic['pascal_voc/mAP'] = dynamic.pop('accuracy/top1')
    typed = DynamicResult.from_dict(dynamic, 'pascal_voc/mAP')
    assert typed.value == 99.0 and typed.to_dict() == dynamic
    with pytest.raises(ValueError,
                       match="dynamic misses the key 'accuracy/top1'"):
        DynamicResult.from_dict(dynamic)


def test_dynamic_levels_of_a_json_file_read_back_as_ints():
    loaded = json.loads(json.dumps(dynamic_dict()))
    assert set(loaded['levels']) == {'0', '1'}
    assert DynamicResult.from_dict(loaded).to_dict() == dynamic_dict()


@pytest.mark.parametrize('key', ['accuracy/top1', 'madds', 'routing',
                                 'window'])
def test_dynamic_missing_field_is_named(key):
    dynamic = dynamic_dict()
    del dynamic[key]
    with pytest.raises(ValueError, match=f"dynamic misses the key '{key}'"):
        DynamicResult.from_dict(dynamic)


@pytest.mark.parametrize('key, value, match', [
    ('accuracy/top1', '99', "'accuracy/top1' must be a number"),
    ('madds', None, "'madds' must be a number"),
    ('routing', {'subnet_0': 1.5}, "'routing' must be a dict of sub-network "
     'name to image count'),
    ('routing', [1, 3], "'routing' must be a dict"),
    ('window', 'subnet_0', "'window' must be a list of sub-network names"),
    ('levels', [1], "'levels' must be a dict keyed by level number"),
    ('levels', {'easy': {}}, "'levels' must be a dict keyed by level"),
])
def test_dynamic_wrong_type_is_named(key, value, match):
    dynamic = dynamic_dict()
    dynamic[key] = value
    with pytest.raises(ValueError, match=f'dynamic: {match}'):
        DynamicResult.from_dict(dynamic)


@pytest.mark.parametrize('key, value, match', [
    ('images', None, r"dynamic levels\[1\] misses the key 'images'"),
    ('images', 1.0, r"dynamic levels\[1\]: 'images' must be an int"),
    ('madds', 'x', r"dynamic levels\[1\]: 'madds' must be a number"),
    ('accuracy/top1', 'x', r"levels\[1\]: 'accuracy/top1' must be a number "
     'or None'),
    ('routing', {'subnet_3': '1'}, r"levels\[1\]: 'routing' must be a dict"),
])
def test_dynamic_level_field_is_named(key, value, match):
    dynamic = dynamic_dict()
    if value is None:
        del dynamic['levels'][1][key]
    else:
        dynamic['levels'][1][key] = value
    with pytest.raises(ValueError, match=match):
        DynamicResult.from_dict(dynamic)


def test_report_reads_dataclasses_as_their_dicts():
    rows = [row_dict(name=f'subnet_{k}', index=k, madds=1e6 * (k + 1))
            for k in range(4)]
    dynamic = dynamic_dict()
    typed_rows = [SubnetRow.from_dict(r) for r in rows]
    typed = DynamicResult.from_dict(dynamic)
    assert markdown_table(typed_rows, typed) == markdown_table(rows, dynamic)


def test_report_checks_the_metric_value():
    rows = [row_dict(metrics={'accuracy/top1': '99'})]
    with pytest.raises(ValueError, match=r"row 0 \('subnet_3'\): "
                       "'accuracy/top1' must be a number"):
        markdown_table(rows)
