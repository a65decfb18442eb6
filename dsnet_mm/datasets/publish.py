# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Write a data set folder all at once, or not at all.

:func:`write_atomically` fills a temporary folder next to the destination
(the writer puts its completion marker last) and renames it into place in
one step, so that:

- an interrupted run never leaves a partial folder that looks complete (the
  temporary folder is removed, or is left under a hidden ``.<name>-tmp-*``
  name that nothing reads);
- a destination that is not complete (no marker, damaged files) is moved
  aside under a hidden ``.<name>-stale-*`` folder and deleted, and replaced;
- writers that run at once (several test workers, ranks) are safe: the
  destination is checked again just before the rename, and a rename that
  fails because another writer's folder arrived first is accepted when that
  folder is complete.
"""
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable

Complete = Callable[[str], bool]


def publish(tmp: str, final: str, complete: Complete) -> None:
    """Rename the finished folder ``tmp`` to ``final``.

    Args:
        tmp (str): The filled temporary folder (next to ``final``).
        final (str): The destination.
        complete (Callable[[str], bool]): Whether a folder is a complete,
            intact data set; one at ``final`` is kept, any other replaced.
    """
    name = osp.basename(final)
    if osp.lexists(final):
        if complete(final):  # another process finished first
            return
        stale = tempfile.mkdtemp(
            prefix=f'.{name}-stale-', dir=osp.dirname(final))
        os.rename(final, osp.join(stale, name))
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not complete(final):
            raise


def write_atomically(root: str, name: str, complete: Complete,
                     fill: Callable[[str], None]) -> str:
    """Write the folder ``root/name`` with ``fill`` unless it is complete.

    Args:
        root (str): The data root, created if missing.
        name (str): The data set's folder under ``root``.
        complete (Callable[[str], bool]): Whether a folder is a complete,
            intact data set (nothing is written when ``root/name`` is).
        fill (Callable[[str], None]): Writes the data set into the folder
            it is given, its completion marker last; may raise, which
            leaves ``root/name`` as it was.

    Returns:
        str: The data set's folder, ``root/name`` (absolute).
    """
    root = osp.abspath(root)
    final = osp.join(root, name)
    if complete(final):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{name}-tmp-', dir=root)
    try:
        fill(tmp)
        publish(tmp, final, complete)
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final
