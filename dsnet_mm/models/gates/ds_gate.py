# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The double-headed dynamic gate of DS-Net."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.ops import DSSqueezeExcite
from dsnet_mm.ops.utils import check_choice, check_int

GATE_FEATURES = ('squeeze', 'pooled')
GATE_HEAD_INITS = ('torch', 'tf')


class DSGate(DSSqueezeExcite):
    """SE attention plus a slimming head that picks a sub-network per input.

    A shared squeeze (global pooling, 1x1 reduce, ReLU) feeds the attention
    head (1x1 expand and sigmoid, scaling the channels: the block's SE). The
    slimming head (a 1x1 conv without bias) gives one logit per sub-network
    of the routing window from:

    - ``features='squeeze'`` (the reference's ``MultiHeadGate``): the SE's
      reduced vector, shared with the attention head;
    - ``features='pooled'``: the globally pooled gate input itself, before
      the SE's reduce and ReLU. The reduced vector is trained in Stage I for
      attention only: it is narrow (``se_ratio`` of the input) and mostly
      zero after the ReLU, and on the graded digits a linear read of it
      separates the difficulty levels far worse than one of the pooled
      input (see ``docs/graded_digits_demo.md``, "Stage II").

    The slimming head starts from ``head_init``:

    - ``'torch'``: PyTorch's default for a conv (uniform in
      ``+-1 / sqrt(fan_in)``, std ``1 / sqrt(3 * fan_in)``);
    - ``'tf'`` (the reference DS-Net code, whose model applies the TF-style
      init of timm's EfficientNet to every conv): normal with std
      ``sqrt(2 / fan_out)``, ``fan_out = num_choices`` for the 1x1 head.
      On the reference gate (66 inputs, 4 choices) that std is 0.71, about
      10x the PyTorch default's 0.071, so the first routings depend more on
      the input and the Gumbel noise matters less.

    Used as a plain SE (``forward``) when a fixed sub-network runs, e.g. in
    Stage I, where the slimming head gets no gradient. With ``tokens`` the
    gate reads a ViT's token sequence (see
    :class:`~dsnet_mm.ops.DSSqueezeExcite`): the class token or the mean
    patch token is what both heads see.

    Args:
        in_channels (int): Widest input width.
        num_choices (int): Size of the routing window.
        se_ratio (float): Squeeze ratio of the widest input. Defaults to 0.25.
        features (str): What the slimming head reads, ``'squeeze'`` or
            ``'pooled'``. Defaults to ``'squeeze'``.
        tokens (str, optional): ``None`` (feature maps), ``'cls_token'`` or
            ``'mean'`` (token sequences). Defaults to None.
        head_init (str): The slimming head's init, ``'torch'`` or ``'tf'``.
            Defaults to ``'torch'``.
    """

    def __init__(self, in_channels: int, num_choices: int,
                 se_ratio: float = 0.25, features: str = 'squeeze',
                 tokens: Optional[str] = None,
                 head_init: str = 'torch') -> None:
        super().__init__(in_channels, se_ratio, tokens)
        check_choice('gate.features', features, GATE_FEATURES)
        check_choice('gate.head_init', head_init, GATE_HEAD_INITS)
        check_int('num_choices', num_choices, 1)
        self.num_choices = num_choices
        self.features = features
        self.head_init = head_init
        self.slim_head = nn.Conv2d(
            self.reduce_channels if features == 'squeeze' else in_channels,
            num_choices, 1, bias=False)
        if head_init == 'tf':  # 'torch': the conv's own init, as built
            nn.init.normal_(self.slim_head.weight, 0,
                            math.sqrt(2.0 / num_choices))

    def head_madds(self, in_width: int) -> int:
        """MAdds of the slimming head on an input of ``in_width`` channels
        (the squeeze itself is the SE's, counted with the network)."""
        width = self.reduce_channels if self.features == 'squeeze' \
            else in_width
        return width * self.num_choices

    def forward_gate(self,
                     x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(``x`` scaled by attention, slimming logits ``[B, num_choices]``)."""
        pooled = self.pool(x)
        r = self.act(self.conv_reduce(pooled))
        scale = self.conv_expand(r, out_channels=self.width(x)).sigmoid()
        logits = self._slim_logits(r if self.features == 'squeeze'
                                   else pooled)
        return self.rescale(x, scale), logits.flatten(1)

    def _slim_logits(self, v: torch.Tensor) -> torch.Tensor:
        """The slimming head on ``v``, its input columns sliced to ``v``'s
        width (a pooled input narrower than the widest)."""
        if v.shape[1] == self.slim_head.in_channels:
            return self.slim_head(v)
        return F.conv2d(v, self.slim_head.weight[:, :v.shape[1]])
