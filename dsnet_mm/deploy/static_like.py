# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static networks for the benchmark, built like an input."""
from typing import Callable

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.static import StaticLayers
from dsnet_mm.static.cached import build_subnet, built_like
from .builder import static_subnet

__all__ = ['static_subnet_like']


def static_subnet_like(model: nn.Module, spec: SubnetSpec,
                       like: torch.Tensor,
                       network_only: bool = False) -> nn.Module:
    """:func:`~dsnet_mm.deploy.static_subnet` (BN folded) for inputs like
    ``like`` (:func:`~dsnet_mm.static.cached.built_like`). With
    ``network_only`` a detector's is its backbone network alone (no neck
    or head copied)."""
    build: Callable[[], nn.Module] = (
        lambda: build_subnet(model, spec, StaticLayers(True))) \
        if network_only else (lambda: static_subnet(model, spec))
    return built_like(build, like)
