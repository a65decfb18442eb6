# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Let mmengine checkpoints load under ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default and mmengine 0.10.7
calls ``torch.load`` without that argument, so resuming fails on the few
non-tensor objects an mmengine checkpoint holds. A checkpoint is a pickle:
turning ``weights_only`` off would let a file run code. Instead the few
classes those checkpoints need are allow-listed here:

- numpy arrays, dtypes and scalars (logged values, dataset metadata);
- mmengine's ``HistoryBuffer`` (the message hub's logs). It pickles its
  statistics methods as ``getattr(HistoryBuffer, 'mean')``; a general
  ``getattr`` would open the door to arbitrary code, so the global is
  mapped to :func:`_history_buffer_method`, which returns only those methods.
"""
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_method(owner, name: str):
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods."""
    allowed = set(_DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({owner!r}, {name!r}) in a weights-only load: only '
        'HistoryBuffer statistics methods are allowed')


def safe_globals() -> list:
    """The globals an mmengine / dsnet_mm checkpoint may reference."""
    multiarray = np._core.multiarray if hasattr(np, '_core') \
        else np.core.multiarray
    return [
        HistoryBuffer, np.ndarray, np.dtype, multiarray._reconstruct,
        multiarray.scalar, (_history_buffer_method, '__builtin__.getattr'),
        (_history_buffer_method, 'builtins.getattr')
    ] + [type(np.dtype(c)) for c in 'bBhHiIlLqQefdgFD?']


def register_safe_globals() -> None:
    """Allow-list :func:`safe_globals` for ``weights_only`` loading."""
    torch.serialization.add_safe_globals(safe_globals())
