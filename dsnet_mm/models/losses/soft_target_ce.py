# Copyright (c) dsnet_mm contributors. All rights reserved.
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS


@MODELS.register_module()
class SoftTargetCrossEntropy(nn.Module):
    """Cross-entropy against a probability target (temperature 1).

    ``loss = mean_batch( sum_c -p_c * log_softmax(z)_c )``: the distillation
    loss with which sub-networks learn from the (EMA) teacher's softmax in
    in-place bootstrapping. It is computed in float32 whatever the dtype of
    the logits (bfloat16 ones under autocast).

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
    """

    def __init__(self, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, logits: torch.Tensor,
                target_probs: torch.Tensor) -> torch.Tensor:
        if logits.shape != target_probs.shape:
            raise ValueError(f'logits {tuple(logits.shape)} and target '
                             f'{tuple(target_probs.shape)} differ in shape')
        loss = torch.sum(
            -target_probs.float() * F.log_softmax(logits.float(), dim=-1), -1)
        return self.loss_weight * loss.mean()
