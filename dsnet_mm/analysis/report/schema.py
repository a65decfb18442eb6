# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The results a report is made of: one row per static sub-network and the
summary of the dynamic model, as dataclasses with a JSON form.

:meth:`SubnetRow.to_dict` and :meth:`DynamicResult.to_dict` give the dicts
that ``subnet_results.json`` holds and that the tables and plots read;
``from_dict`` reads such a dict back and raises ``ValueError`` naming the
field that is missing or of the wrong type.
"""
import numbers
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

TOP1 = 'accuracy/top1'
LARGEST = 'largest'
ROW_KEYS = ('name', 'madds', 'params', 'metrics')
DYNAMIC_KEYS = ('madds', 'routing', 'window')
LEVEL_KEYS = ('images', 'madds', 'routing')


def _is_number(value: Any) -> bool:
    """A real number (a Python, numpy or 0-d tensor scalar), not a bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Real) or (
        hasattr(value, '__float__') and getattr(value, 'ndim', None) == 0)


def _is_count(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _require(data: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f'{where} must be a dict, got '
                         f'{type(data).__name__}')
    for key in keys:
        if key not in data:
            raise ValueError(f'{where} misses the key {key!r}')


def _check(where: str, key: str, value: Any, ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f'{where}: {key!r} must be {what}, got '
                         f'{type(value).__name__} {value!r}')


def _check_routing(where: str, key: str, routing: Any) -> Dict[str, int]:
    _check(where, key, routing, isinstance(routing, Mapping) and all(
        isinstance(k, str) and _is_count(v) for k, v in routing.items()),
        'a dict of sub-network name to image count')
    return dict(routing)


@dataclass
class SubnetRow:
    """One evaluated static sub-network.

    Args:
        name (str): The sub-network's name (``'subnet_3'``, ``'largest'``).
        madds (float): MAdds per image.
        params (float): Parameters.
        metrics (dict): The evaluator's metrics (``'accuracy/top1'``...).
        index (int, optional): Its index in the sub-network list.
        backbone_madds (float, optional): The backbone's share of ``madds``
            (a detector).
        extra (dict): Any other keys of the row, kept as they are.
    """
    name: str
    madds: float
    params: float
    metrics: Dict[str, Any]
    index: Optional[int] = None
    backbone_madds: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = dict(name=self.name)
        if self.index is not None:
            out['index'] = self.index
        out.update(madds=self.madds, params=self.params,
                   metrics=dict(self.metrics))
        if self.backbone_madds is not None:
            out['backbone_madds'] = self.backbone_madds
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping, where: str = 'row') -> 'SubnetRow':
        """The row of ``data``; ``where`` names it in errors."""
        _require(data, ROW_KEYS, where)
        _check(where, 'name', data['name'], isinstance(data['name'], str),
               'a str')
        for key in ('madds', 'params'):
            _check(where, key, data[key], _is_number(data[key]), 'a number')
        _check(where, 'metrics', data['metrics'],
               isinstance(data['metrics'], Mapping),
               'a dict of metric name to value')
        index = data.get('index')
        _check(where, 'index', index, index is None or _is_count(index),
               'an int')
        backbone = data.get('backbone_madds')
        _check(where, 'backbone_madds', backbone,
               backbone is None or _is_number(backbone), 'a number')
        known = set(ROW_KEYS) | {'index', 'backbone_madds'}
        return cls(data['name'], data['madds'], data['params'],
                   dict(data['metrics']), index, backbone,
                   {k: v for k, v in data.items() if k not in known})


@dataclass
class LevelResult:
    """The dynamic model on the images of one difficulty level.

    Args:
        images (int): Images of the level.
        madds (float): Mean routed MAdds per image.
        routing (dict): Images per sub-network.
        top1 (float, optional): Top-1 (%) on the level, if measured.
    """
    images: int
    madds: float
    routing: Dict[str, int]
    top1: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        return {'images': self.images, 'madds': self.madds, TOP1: self.top1,
                'routing': dict(self.routing)}

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> 'LevelResult':
        _require(data, LEVEL_KEYS, where)
        _check(where, 'images', data['images'], _is_count(data['images']),
               'an int')
        _check(where, 'madds', data['madds'], _is_number(data['madds']),
               'a number')
        top1 = data.get(TOP1)
        _check(where, TOP1, top1, top1 is None or _is_number(top1),
               'a number or None')
        return cls(data['images'], data['madds'],
                   _check_routing(where, 'routing', data['routing']), top1)


def _level_key(where: str, key: Any) -> int:
    """A level number: an int, or its digits (a JSON object's key)."""
    if _is_count(key):
        return int(key)
    _check(where, 'levels', key, isinstance(key, str) and key.isdigit(),
           'a dict keyed by level number')
    return int(key)


@dataclass
class DynamicResult:
    """The gated (dynamic) model's evaluation.

    Args:
        metric (str): The metric key the report compares
            (``'accuracy/top1'``, a detector's ``'pascal_voc/mAP'``).
        value (float): The model's value of ``metric``.
        madds (float): Mean routed MAdds per image.
        routing (dict): Images per sub-network (names in ``window``).
        window (list[str]): The sub-networks the gate picks from.
        levels (dict, optional): :class:`LevelResult` per difficulty level.
        extra (dict): Any other keys, kept as they are.
    """
    metric: str
    value: float
    madds: float
    routing: Dict[str, int]
    window: List[str]
    levels: Optional[Dict[int, LevelResult]] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {self.metric: self.value, 'madds': self.madds,
                               'routing': dict(self.routing),
                               'window': list(self.window)}
        if self.levels is not None:
            out['levels'] = {level: part.to_dict()
                             for level, part in self.levels.items()}
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping, metric: str = TOP1,
                  where: str = 'dynamic') -> 'DynamicResult':
        """The result of ``data``, whose ``metric`` key holds the value the
        report compares; ``where`` names it in errors."""
        _require(data, (metric, ) + DYNAMIC_KEYS, where)
        for key in (metric, 'madds'):
            _check(where, key, data[key], _is_number(data[key]), 'a number')
        window = data['window']
        _check(where, 'window', window,
               isinstance(window, (list, tuple))
               and all(isinstance(name, str) for name in window),
               'a list of sub-network names')
        if not window:
            raise ValueError(f'{where} window is empty')
        routing = _check_routing(where, 'routing', data['routing'])
        outside = [name for name in routing if name not in window]
        if outside:
            raise ValueError(f'{where} routing names {outside} outside the '
                             f'window {list(window)}')
        levels = data.get('levels')
        if levels is not None:
            _check(where, 'levels', levels, isinstance(levels, Mapping),
                   'a dict keyed by level number')
            levels = {
                _level_key(where, key):
                LevelResult.from_dict(part, f'{where} levels[{key!r}]')
                for key, part in levels.items()
            }
        known = {metric, 'levels', *DYNAMIC_KEYS}
        return cls(metric, data[metric], data['madds'], routing, list(window),
                   levels, {k: v for k, v in data.items() if k not in known})

    def check_rows(self, rows: Sequence[SubnetRow]) -> None:
        """Raise ``ValueError`` unless every window member has a row."""
        names = {row.name for row in rows}
        unknown = [name for name in self.window if name not in names]
        if unknown:
            raise ValueError(f'dynamic window names {unknown} that no row '
                             'has')


RowLike = Union[Mapping, SubnetRow]
DynamicLike = Union[Mapping, DynamicResult]


def _row_label(row: Any, position: int) -> str:
    """How an error message names a row."""
    name = row.get('name') if isinstance(row, Mapping) else None
    return f'row {position} ({name!r})' if name is not None \
        else f'row {position}'


def as_rows(rows: Sequence[RowLike], metric: str = TOP1) -> List[SubnetRow]:
    """Every row as a :class:`SubnetRow` with a number under ``metric``;
    raise ``ValueError`` naming the row and the field otherwise.

    Args:
        rows (Sequence[dict | SubnetRow]): Static sub-network rows.
        metric (str): The metric key the report reads. Defaults to top-1.
    """
    if not rows:
        raise ValueError('rows is empty: nothing to report')
    out = []
    for position, row in enumerate(rows):
        label = _row_label(row.to_dict() if isinstance(row, SubnetRow)
                           else row, position)
        row = row if isinstance(row, SubnetRow) else SubnetRow.from_dict(
            row, label)
        if metric not in row.metrics:
            raise ValueError(f'{label} misses the key {metric!r} in its '
                             'metrics')
        value = row.metrics[metric]
        _check(label, metric, value, _is_number(value), 'a number')
        out.append(row)
    return out


def as_dynamic(dynamic: DynamicLike, rows: Sequence[SubnetRow],
               metric: str = TOP1) -> DynamicResult:
    """``dynamic`` as a :class:`DynamicResult` that fits the static
    ``rows``; raise ``ValueError`` naming the field otherwise."""
    if not isinstance(dynamic, DynamicResult):
        dynamic = DynamicResult.from_dict(dynamic, metric)
    elif dynamic.metric != metric:
        raise ValueError(f'dynamic holds the metric {dynamic.metric!r}, the '
                         f'report reads {metric!r}')
    dynamic.check_rows(rows)
    return dynamic


def check_rows(rows: Sequence[RowLike], metric: str = TOP1) -> None:
    """Raise ``ValueError`` unless every row holds what the report needs
    (see :func:`as_rows`)."""
    as_rows(rows, metric)


def check_dynamic(dynamic: DynamicLike, rows: Sequence[RowLike],
                  metric: str = TOP1) -> None:
    """Raise ``ValueError`` unless ``dynamic`` fits the static ``rows``
    (see :func:`as_dynamic`)."""
    as_dynamic(dynamic, as_rows(rows, metric), metric)


def report_dicts(rows: Sequence[RowLike], dynamic: Optional[DynamicLike],
                 metric: str = TOP1
                 ) -> Tuple[List[Dict], Optional[Dict]]:
    """The checked JSON form of ``rows`` and ``dynamic``, which the tables
    and plots read."""
    typed = as_rows(rows, metric)
    out = [row.to_dict() for row in typed]
    if dynamic is None:
        return out, None
    return out, as_dynamic(dynamic, typed, metric).to_dict()


def row_dicts(rows: Sequence[RowLike]) -> List[Dict]:
    """The JSON form of ``rows``, unchecked (a plot of checked rows)."""
    return [row.to_dict() if isinstance(row, SubnetRow) else row
            for row in rows]


def dynamic_dict(dynamic: Optional[DynamicLike]) -> Optional[Dict]:
    """The JSON form of ``dynamic``, unchecked."""
    return dynamic.to_dict() if isinstance(dynamic, DynamicResult) \
        else dynamic
