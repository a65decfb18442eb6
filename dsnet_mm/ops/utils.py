# Copyright (c) dsnet_mm contributors. All rights reserved.
from typing import Optional, Sequence


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
