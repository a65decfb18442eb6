# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sub-network specs: ladders, explicit lists and build-time errors."""
import pytest

from dsnet_mm.models.subnet import SubnetSpace

MAX = dict(a=16, b=64)


def test_ladder_steps_every_group_evenly():
    space = SubnetSpace(MAX, dict(smallest=dict(a=8, b=16),
                                  widest=dict(a=8, b=64), num=4))
    assert [dict(s) for s in space] == [
        dict(a=8, b=16), dict(a=8, b=32), dict(a=8, b=48), dict(a=8, b=64)]
    assert [s.position for s in space] == [0, 1, 2, 3]
    assert [s.stats for s in space] == [0, 1, 2, 3]
    assert dict(space.largest) == MAX and space.largest.position == 4
    assert space.largest.stats == 4
    assert space.num_stats == 5


def test_non_uniform_explicit_list():
    space = SubnetSpace(MAX, [dict(a=4, b=40), dict(a=12, b=40),
                              dict(a=12, b=56)])
    assert space[1]['a'] == 12 and space.smallest['b'] == 40


def test_lookup_by_name_and_index():
    space = SubnetSpace(MAX, [dict(a=4, b=40), dict(a=12, b=56)])
    assert space.get('largest') is space.largest
    assert space.get('smallest') is space[0]
    assert space.get('subnet_1') is space[1]
    assert space.get(-1) is space[1]
    with pytest.raises(ValueError, match=r'outside 0..1'):
        space.get(2)
    with pytest.raises(ValueError, match="'largest', 'smallest'"):
        space.get('biggest')


def test_adhoc_spec_has_a_stats_row_and_no_position():
    space = SubnetSpace(MAX, [dict(a=4, b=40), dict(a=12, b=56)])
    spec = space.adhoc(dict(a=8, b=48))
    assert spec.stats == 1 and spec.position is None  # subnet_1's row
    assert space.adhoc(dict(a=16, b=64)).stats == space.largest.stats
    assert space.adhoc(dict(a=4, b=40), stats=0).position is None
    again = space.get(spec)
    assert again.adhoc and again.stats == 1 and again.position is None
    assert dict(again) == dict(spec)
    assert space.get(space[1]) is space[1]
    assert space.get(space.largest) is space.largest
    other = SubnetSpace(MAX, [dict(a=4, b=40), dict(a=12, b=48)])
    with pytest.raises(ValueError, match='is not a sub-network'):
        space.get(other[1])


def test_unknown_group_names_allowed_groups():
    with pytest.raises(ValueError, match=r"subnets\[1\] names unknown width "
                       r"group\(s\) \['c'\]; allowed groups: \['a', 'b'\]"):
        SubnetSpace(MAX, [dict(a=4, b=8), dict(a=4, b=9, c=3)])


def test_width_above_stored_maximum():
    with pytest.raises(ValueError,
                       match=r'subnets\[0\].b must be an int in 1..64, '
                       r'got 65'):
        SubnetSpace(MAX, [dict(a=4, b=65)])


def test_widths_not_increasing():
    with pytest.raises(ValueError, match=r'subnets\[1\] is not wider than '
                       r'subnets\[0\] \(b: 32 -> 24\)'):
        SubnetSpace(MAX, [dict(a=4, b=32), dict(a=8, b=24)])
    with pytest.raises(ValueError, match='identical widths'):
        SubnetSpace(MAX, [dict(a=4, b=32), dict(a=4, b=32)])


def test_ladder_that_narrows_or_cannot_step():
    with pytest.raises(ValueError, match="group 'b' must not narrow"):
        SubnetSpace(MAX, dict(smallest=dict(a=4, b=32),
                              widest=dict(a=4, b=16), num=3))
    with pytest.raises(ValueError, match="cannot step from 16 to 63 in 2"):
        SubnetSpace(MAX, dict(smallest=dict(a=4, b=16),
                              widest=dict(a=4, b=63), num=3))


def test_missing_group():
    with pytest.raises(ValueError, match=r"lacks width group\(s\) \['b'\]"):
        SubnetSpace(MAX, [dict(a=4)])
