# Copyright (c) dsnet_mm contributors. All rights reserved.
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS


def build_model_from_cfg(cfg: Config) -> nn.Module:
    """Build ``cfg.model`` as mmengine's Runner does, outside a Runner.

    The top-level ``data_preprocessor`` (normalisation) goes into the model
    unless the model sets its own: a tool that skipped it would feed raw
    pixels, and BN statistics recalibrated on those would be wrong.
    """
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model_cfg = cfg.model.copy()
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model_cfg)
