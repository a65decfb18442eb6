# Copyright (c) dsnet_mm contributors. All rights reserved.
"""mmpretrain ``VisionTransformer``'s conventions on DS-ViT: DeiT's
initialisation under ``init_cfg``, ``frozen_stages`` and the layer depth of
layer-wise learning-rate decay."""
from typing import List, Tuple

import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_

from dsnet_mm.ops import DSLinear, DSQKVLinear
from .pretrained import with_ds_layer_kinds


class ViTConventionsMixin:
    """What ``VisionTransformer`` does beyond its forward, for a DS-ViT
    (put it first in the bases): it reads the backbone's ``pos_embed``,
    ``cls_token``, ``patch_embed``, ``drop_after_pos``, ``pre_norm``,
    ``layers``, ``num_layers``, ``frozen_stages`` and ``gate_block``."""

    def init_weights(self) -> None:
        """DeiT's initialisation (truncated normal, std 0.02, for every
        linear weight of the blocks, zero biases; the position embedding
        likewise), then the ``init_cfg`` entries over it (their layer kinds
        reaching the DS layers, see
        :func:`~dsnet_mm.models.backbones.pretrained.with_ds_layer_kinds`),
        then a ``Pretrained`` checkpoint, loaded whole."""
        if not self.is_init:
            trunc_normal_(self.pos_embed, std=.02)
            for m in self.modules():
                if isinstance(m, (DSLinear, DSQKVLinear)):
                    trunc_normal_(m.weight, std=.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        init_cfg = self.init_cfg
        self.init_cfg = with_ds_layer_kinds(init_cfg)
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg

    def _freeze_stages(self) -> None:
        if self.frozen_stages <= 0:
            return
        modules: List[nn.Module] = [self.patch_embed, self.drop_after_pos,
                                    self.pre_norm,
                                    *self.layers[:self.frozen_stages]]
        if self.frozen_stages == self.num_layers:
            modules.extend(getattr(self, n) for n in ('ln1', 'ln2')
                           if hasattr(self, n))
        params = [p for p in (self.cls_token, self.pos_embed)
                  if p is not None]
        for m in modules:
            m.eval()
            params.extend(m.parameters())
        for p in params:
            p.requires_grad = False

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """The layer-wise depth of a parameter, for layer-wise learning-rate
        decay (mmpretrain's ``LearningRateDecayOptimWrapperConstructor``),
        as ``VisionTransformer``'s: the embeddings at 0, block ``i`` at
        ``i + 1``, anything else (final norms, the head) at
        ``num_layers + 1``, of ``num_layers + 2`` depths. The gate after
        block ``k`` is at block ``k``'s depth.

        Args:
            param_name (str): The parameter's name.
            prefix (str): The backbone's prefix in ``param_name``.
                Defaults to ''.

        Returns:
            Tuple[int, int]: The depth and the number of depths.
        """
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name in ('cls_token', 'pos_embed') or \
                name.startswith('patch_embed'):
            return 0, num_layers
        if name.startswith('layers.'):
            return int(name.split('.')[1]) + 1, num_layers
        if name.startswith('gate.') and self.gate_block is not None:
            return self.gate_block + 1, num_layers
        return num_layers - 1, num_layers
