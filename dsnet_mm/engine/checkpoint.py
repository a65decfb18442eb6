# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Safe checkpoints: weights-only loading and atomic writes.

**Loading.** mmengine checkpoints load under
``torch.load(weights_only=True)``.

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

**Writing.** mmengine writes a checkpoint straight into its final path, so a
crash mid-write leaves a truncated ``latest`` one. :class:`AtomicLocalBackend`
replaces mmengine's local file backend: it writes next to the target, syncs,
then renames over it, so a reader sees the old file or the new one.

**Resuming.** :func:`latest_checkpoint` finds the newest complete checkpoint
of a work dir even when a kill broke mmengine's ``last_checkpoint`` pointer.
"""
import glob
import os
import os.path as osp
import pickle
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from mmengine.fileio import LocalBackend, io, register_backend
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
    # numpy 2 moved it to numpy._core; numpy 1.26 has a numpy._core
    # without it
    core = getattr(np, '_core', None)
    multiarray = core.multiarray if hasattr(core, 'multiarray') \
        else np.core.multiarray
    # a checkpoint names these functions by the module of the numpy that
    # wrote it: numpy.core.multiarray (1.x) or numpy._core.multiarray (2.x)
    numpy_functions = [(getattr(multiarray, name), f'{module}.{name}')
                       for name in ('_reconstruct', 'scalar')
                       for module in ('numpy.core.multiarray',
                                      'numpy._core.multiarray')]
    return [
        HistoryBuffer, np.ndarray, np.dtype, *numpy_functions,
        (_history_buffer_method, '__builtin__.getattr'),
        (_history_buffer_method, 'builtins.getattr')
    ] + [type(np.dtype(c)) for c in 'bBhHiIlLqQefdgFD?']


def register_safe_globals() -> None:
    """Allow-list :func:`safe_globals` for ``weights_only`` loading."""
    torch.serialization.add_safe_globals(safe_globals())


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` is write-then-rename."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        folder = osp.dirname(osp.abspath(filepath))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise


def register_atomic_backend() -> None:
    """Make :class:`AtomicLocalBackend` the backend of local paths."""
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    # drop a local backend mmengine may have built and cached already
    for key in [k for k in io.backend_instances if k.startswith(':')]:
        del io.backend_instances[key]


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` continues from; None for a work dir
    without a ``last_checkpoint`` pointer (a fresh run).

    mmengine's ``CheckpointHook`` rewrites the pointer in place after each
    checkpoint, and with ``max_keep_ckpts`` it deletes the oldest checkpoint
    before writing the next: a kill while the pointer is rewritten leaves it
    empty, and with ``max_keep_ckpts=1`` a kill during the write leaves it
    naming a deleted file. Then the newest ``epoch_*.pth`` or ``iter_*.pth``
    of the work dir is taken, which is complete (every write is atomic).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(pointer):
        return None
    with open(pointer) as f:
        named = f.read().strip()
    if named and osp.isfile(named):
        return named
    found = [p for pattern in ('epoch_*.pth', 'iter_*.pth')
             for p in glob.glob(osp.join(work_dir, pattern))]
    if not found:
        raise FileNotFoundError(
            f'{pointer} names {named!r}, which does not exist, and '
            f'{work_dir} holds no epoch_*.pth or iter_*.pth to resume from '
            '(with max_keep_ckpts=1 a run killed while writing a checkpoint '
            'has deleted the previous one: keep at least 2)')
    return max(found, key=lambda p: (osp.getmtime(p), p))
