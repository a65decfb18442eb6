# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The double-headed dynamic gate of DS-Net."""
from typing import Tuple

import torch
import torch.nn as nn

from dsnet_mm.ops import DSSqueezeExcite


class DSGate(DSSqueezeExcite):
    """SE attention plus a slimming head that picks a sub-network per input.

    A shared squeeze (global pooling, 1x1 reduce, ReLU) feeds two heads: the
    attention head (1x1 expand and sigmoid, scaling the channels: the block's
    SE) and the slimming head (a 1x1 conv without bias) that gives one logit
    per sub-network of the routing window. Used as a plain SE (``forward``)
    when a fixed sub-network runs, e.g. in Stage I, where the slimming head
    gets no gradient.

    Args:
        in_channels (int): Widest input width.
        num_choices (int): Size of the routing window.
        se_ratio (float): Squeeze ratio of the widest input. Defaults to 0.25.
    """

    def __init__(self, in_channels: int, num_choices: int,
                 se_ratio: float = 0.25) -> None:
        super().__init__(in_channels, se_ratio)
        self.num_choices = num_choices
        self.slim_head = nn.Conv2d(
            self.reduce_channels, num_choices, 1, bias=False)

    def forward_gate(self,
                     x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(``x`` scaled by attention, slimming logits ``[B, num_choices]``)."""
        r = self.squeeze(x)
        scale = self.conv_expand(r, out_channels=x.shape[1]).sigmoid()
        return x * scale, self.slim_head(r).flatten(1)
