# Copyright (c) dsnet_mm contributors. All rights reserved.
import math
import numbers
from typing import Mapping, Optional, Sequence, Tuple, Union


def check_width(field: str,
                width: int,
                max_width: int,
                multiple_of: Optional[int] = None) -> None:
    """Raise a ValueError when a runtime width does not fit the stored one."""
    if not 1 <= width <= max_width:
        raise ValueError(f'{field}={width} is outside the stored range '
                         f'1..{max_width}')
    if multiple_of is not None and width % multiple_of:
        raise ValueError(f'{field}={width} must be a multiple of the group '
                         f'width {multiple_of}')


def check_choice(field: str, value, allowed: Sequence) -> None:
    """Raise a ValueError naming the field when ``value`` is not allowed."""
    if value not in allowed:
        raise ValueError(f'{field}={value!r} is not one of {allowed}')


def _interval(low, high, low_open: bool = False,
              high_open: bool = False) -> str:
    """`` in [low, high)``, `` >= low`` and the like, for messages."""
    if low is not None and high is not None:
        return (f" in {'(' if low_open else '['}{low}, {high}"
                f"{')' if high_open else ']'}")
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ''


def check_int(field: str, value, low: Optional[int] = None,
              high: Optional[int] = None) -> None:
    """Raise a TypeError naming the field unless ``value`` is an int (a bool
    is not), a ValueError unless ``low <= value <= high`` (either bound may
    be None)."""
    bounds = f' in {low}..{high}' if low is not None and high is not None \
        else _interval(low, high)
    message = f'{field} must be an int{bounds}, got {value!r}'
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(message)
    if (low is not None and value < low) or (high is not None
                                              and value > high):
        raise ValueError(message)


def check_float(field: str, value, low: Optional[float] = None,
                high: Optional[float] = None, low_open: bool = False,
                high_open: bool = False) -> None:
    """Raise a TypeError naming the field unless ``value`` is a real number
    (int or float, not a bool), a ValueError unless it is finite and within
    the bounds (``low_open`` / ``high_open``: the bound itself excluded)."""
    bounds = _interval(low, high, low_open, high_open)
    message = f'{field} must be a number{bounds}, got {value!r}'
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message)
    if not math.isfinite(value) or (
            low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and
                (value >= high if high_open else value > high)):
        raise ValueError(message)


def check_bool(field: str, value) -> None:
    """Raise a TypeError naming the field unless ``value`` is a bool (a
    string such as ``'False'`` would be true)."""
    if not isinstance(value, bool):
        raise TypeError(f'{field} must be True or False, got {value!r}')


def check_type(field: str, value, types: Union[type, Tuple[type, ...]],
               what: str) -> None:
    """Raise a TypeError naming the field unless ``value`` is one of
    ``types`` (``what`` says which in the message, e.g. ``'a dict'``)."""
    if not isinstance(value, types):
        raise TypeError(f'{field} must be {what}, got {value!r}')


def check_keys(field: str, value, required: Sequence[str] = (),
               optional: Sequence[str] = ()) -> None:
    """Raise a TypeError naming the field unless ``value`` is a dict, a
    ValueError if it lacks a required key or has one not allowed."""
    check_type(field, value, Mapping, 'a dict')
    missing = [k for k in required if k not in value]
    unknown = set(value) - {*required, *optional}
    if missing or unknown:
        allowed = f'needs the keys {list(required)}' + (
            f' (and optionally {list(optional)})' if optional else '') \
            if required else f'takes only the keys {list(optional)}'
        raise ValueError(f'{field} {allowed}, got {sorted(value, key=str)}')


def check_ints(field: str, values, low: Optional[int] = None,
               high: Optional[int] = None,
               length: Optional[int] = None) -> None:
    """A list or tuple (of ``length`` entries, if given) of ints, each
    checked as :func:`check_int` under ``field[i]``."""
    check_type(field, values, (list, tuple), 'a list or tuple of ints')
    if length is not None and len(values) != length:
        raise ValueError(f'{field} must hold {length} ints, got {values!r}')
    for i, value in enumerate(values):
        check_int(f'{field}[{i}]', value, low, high)
