# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Channel zero-padding that remembers how many channels carry data.

A detector's neck and head are built for the backbone's widest outputs; a
narrower sub-network's outputs reach them zero-padded, which for a plain
conv equals the conv with its input weights sliced (see
:func:`~dsnet_mm.models.detectors.pad_to`). The padded tensor carries the
width it was padded from (``used_channels``), so that a MAdds counter can
count that conv at the sliced width it stands for, not at the padded one.
The mark is a plain Python attribute of the tensor: it lives as long as the
tensor, and a new tensor (any op's output) does not have it.
"""
import torch
import torch.nn.functional as F

_MARK = '_dsnet_used_channels'


def zero_pad_channels(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` (``[N, C, ...]``) with zero channels appended up to ``width``,
    marked with ``C`` (see :func:`used_channels`); ``x`` itself if it is
    already ``width`` wide."""
    channels = x.shape[1]
    if channels == width:
        return x
    padded = F.pad(x, (0, 0) * (x.dim() - 2) + (0, width - channels))
    setattr(padded, _MARK, channels)
    return padded


def used_channels(x: torch.Tensor) -> int:
    """The channels of ``x`` that carry data: its width before
    :func:`zero_pad_channels`, else all of them."""
    return getattr(x, _MARK, x.shape[1])
