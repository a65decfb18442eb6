# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Squeeze-and-excitation on a sliced channel prefix."""
import torch
import torch.nn as nn

from .conv import DSConv2d


class DSSqueezeExcite(nn.Module):
    """SE attention whose reduce width stays fixed while its input is sliced.

    As in the reference supernet, the squeeze width is computed once from the
    widest input (``round(se_ratio * in_channels)``) and does not change with
    the active width; only the reduce conv's input and the expand conv's output
    are sliced.

    Args:
        in_channels (int): Widest input width.
        se_ratio (float): Squeeze ratio of the widest input. Defaults to 0.25.
    """

    def __init__(self, in_channels: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        self.reduce_channels = max(1, round(se_ratio * in_channels))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = DSConv2d(
            in_channels, self.reduce_channels, 1, bias=True)
        self.conv_expand = DSConv2d(
            self.reduce_channels, in_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """The shared reduced vector (also the input of a gate's heads)."""
        return self.act(self.conv_reduce(self.pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.squeeze(x), out_channels=x.shape[1])
        return x * scale.sigmoid()
