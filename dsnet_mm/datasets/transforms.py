# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Image loading that names the file of a bad image."""
import logging
from typing import Optional

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmpretrain.registry import TRANSFORMS

from dsnet_mm.ops.utils import check_bool, check_int


@TRANSFORMS.register_module()
class LoadImageChecked(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that names the file of a bad image.

    mmcv stops on a file it cannot decode with a bare ``AssertionError``
    (gone under ``python -O``), and an image with other channels than the
    stem's surfaces much later as a failed ``torch.stack`` of the batch.
    Here a file that cannot be read or decoded (missing, corrupt, truncated)
    and, with ``channels`` set, an image with another number of channels
    raise a ``ValueError`` naming the file (``img_path``) and what is wrong.

    The error is raised in the iteration whose batch holds the sample, so
    the checkpoints written before it stay as they were (dsnet_mm writes
    them atomically). With ``skip_bad=True`` the sample is skipped instead,
    with a warning naming the file: the transform returns None and
    mmengine's training dataset draws another sample (at most
    ``max_refetch`` times in a row); a dataset in test mode cannot skip and
    stops on it.

    Example config::

        dict(type='LoadImageChecked', channels=3)

    Args:
        channels (int, optional): Channels every decoded image must have,
            the backbone's ``in_channels``. Defaults to None (not checked).
        skip_bad (bool): Skip bad samples with a warning instead of
            stopping. Defaults to False.
        **kwargs: Keyword arguments of ``LoadImageFromFile``
            (``color_type``, ``imdecode_backend``, ``backend_args`` ...).
    """

    def __init__(self,
                 channels: Optional[int] = None,
                 skip_bad: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if channels is not None:
            check_int('channels', channels, 1)
        check_bool('skip_bad', skip_bad)
        self.channels = channels
        self.skip_bad = skip_bad

    def transform(self, results: dict) -> Optional[dict]:
        path = results['img_path']
        try:
            results = super().transform(results)
        except Exception as e:  # mmcv's assert, the reader's OSError ...
            return self._bad(path, 'cannot be read or decoded '
                             f'({type(e).__name__}: {e})')
        if results is None:  # mmcv's ignore_empty
            return None
        img = results['img']
        found = img.shape[2] if img.ndim == 3 else 1
        if self.channels is not None and found != self.channels:
            return self._bad(
                path, f'has {found} channel(s), the model takes '
                f'channels={self.channels} (the backbone\'s in_channels)')
        return results

    def _bad(self, path: str, problem: str) -> None:
        """Stop on the bad sample at ``path``, or skip it with a warning."""
        message = f'img_path={path!r}: the image {problem}'
        if not self.skip_bad:
            raise ValueError(
                f'{message}. Fix or remove the file, or set skip_bad=True '
                f'in {type(self).__name__} to skip such samples.')
        print_log(f'{message}; skipped (skip_bad=True)', logger='current',
                  level=logging.WARNING)
        return None
