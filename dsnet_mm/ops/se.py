# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Squeeze-and-excitation on a sliced channel prefix, for feature maps and
for token sequences."""
from typing import Optional

import torch
import torch.nn as nn

from .conv import DSConv2d
from .utils import check_choice, check_float, check_int

TOKEN_POOLS = ('cls_token', 'mean')


class TokenPool(nn.Module):
    """Pools a token sequence ``[B, N, C]`` to ``[B, C, 1, 1]``, the shape
    an SE squeeze reads: the class token (``'cls_token'``, token 0) or the
    mean of the other tokens (``'mean'``, the patch tokens)."""

    def __init__(self, mode: str = 'cls_token') -> None:
        super().__init__()
        check_choice('tokens', mode, TOKEN_POOLS)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0] if self.mode == 'cls_token' else x[:, 1:].mean(dim=1)
        return v[..., None, None]

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}'


class DSSqueezeExcite(nn.Module):
    """SE attention whose reduce width stays fixed while its input is sliced.

    As in the reference supernet, the squeeze width is computed once from the
    widest input (``round(se_ratio * in_channels)``) and does not change with
    the active width; only the reduce conv's input and the expand conv's output
    are sliced.

    With ``tokens`` set the input is a token sequence ``[B, N, C]`` (channels
    last, a ViT block's output): the squeeze reads the class token or the
    mean patch token (:class:`TokenPool`) and the scale multiplies every
    token's channels.

    Args:
        in_channels (int): Widest input width.
        se_ratio (float): Squeeze ratio of the widest input. Defaults to 0.25.
        tokens (str, optional): ``None`` (feature maps ``[B, C, H, W]``),
            ``'cls_token'`` or ``'mean'``. Defaults to None.
    """

    def __init__(self, in_channels: int, se_ratio: float = 0.25,
                 tokens: Optional[str] = None) -> None:
        super().__init__()
        check_int('in_channels', in_channels, 1)
        check_float('se_ratio', se_ratio, 0, 1, low_open=True)
        self.reduce_channels = max(1, round(se_ratio * in_channels))
        self.tokens = tokens
        self.pool = nn.AdaptiveAvgPool2d(1) if tokens is None \
            else TokenPool(tokens)
        self.conv_reduce = DSConv2d(
            in_channels, self.reduce_channels, 1, bias=True)
        self.conv_expand = DSConv2d(
            self.reduce_channels, in_channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)

    def width(self, x: torch.Tensor) -> int:
        """The active channel width of an input."""
        return x.shape[1] if self.tokens is None else x.shape[-1]

    def rescale(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``x`` with its channels multiplied by ``scale`` (``[B, C, 1, 1]``
        after the sigmoid)."""
        if self.tokens is None:
            return x * scale
        return x * scale.flatten(1).unsqueeze(1)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        """The shared reduced vector (also the input of a gate's heads)."""
        return self.act(self.conv_reduce(self.pool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.squeeze(x), out_channels=self.width(x))
        return self.rescale(x, scale.sigmoid())
