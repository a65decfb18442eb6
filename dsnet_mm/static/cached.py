# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static sub-networks standing in for the DS model in cached inference.

Within :func:`~dsnet_mm.ops.inference_cache` every sliced op reuses its
folded arguments, but a forward still walks the DS module structure: a
Python call per block and layer, width look-ups, cache keys (a noticeable
share of a batch-1 forward of DS-MobileNetV1 at 224). The
static network :func:`build_subnet` builds from the same
weights computes the same function with plain torch layers, so the DS
backbone (a fixed sub-network) and ``DSGateClassifier`` (the parts around
the gate, per bucket) run it in their place, built once per sub-network and
kept by the cache block (:meth:`~dsnet_mm.ops.InferenceCacheBlock.static`),
which drops it when a weight changes.
"""
import copy
from typing import Optional

import torch
import torch.nn as nn

from dsnet_mm.ops import InferenceCacheBlock
from dsnet_mm.ops.weight_cache import memory_format
from .builder import LayerBuilder, StaticLayers
from .modules import StaticNet

# dtypes whose values a static network built in float32 holds exactly (a
# float64 model runs its ops)
EXACT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def build_subnet(model: nn.Module, spec, layers: LayerBuilder) -> StaticNet:
    """The classifier's (or detector's) DS backbone at ``spec`` with its
    layers built by ``layers``: the backbone's own ``build_static``, given
    the classifier's linear layer and neck (neither for a detector, whose
    neck and head :func:`~dsnet_mm.deploy.static_subnet` adds)."""
    backbone = model.backbone
    if not hasattr(backbone, 'build_static'):
        raise ValueError(
            f'a {type(backbone).__name__} backbone has no static form: '
            'a DS backbone implements build_static(spec, layers, fc, neck) '
            "(DSBackboneMixin does, from its blocks' build_static)")
    head = getattr(model, 'head', None)
    if head is None:  # a detector: the backbone network alone
        return backbone.build_static(spec, layers)
    neck = model.neck if getattr(model, 'with_neck', False) else None
    return backbone.build_static(spec, layers, head.fc, neck)


def built_like(build, like: torch.Tensor) -> nn.Module:
    """The network ``build()`` makes, for inputs like ``like``: built on its
    device, in its dtype and memory format (the weights in channels-last
    where the input is), without gradients."""
    with torch.device(like.device):
        net = build()
    return net.to(dtype=like.dtype,
                  memory_format=memory_format(like)).requires_grad_(False)


def compile_static(module: nn.Module) -> nn.Module:
    """``torch.compile`` of a static network for inference: inductor with
    frozen weights (constants it may fold and prepack: PyTorch's CPU
    inference setting; a cached static network is rebuilt when a weight changes) and
    static shapes (a new batch size recompiles rather than turning the graph
    dynamic)."""
    return torch.compile(module, dynamic=False, options=dict(freezing=True))


class CachedStatic:
    """Sub-network ``spec`` of a DS classifier as the static modules that run
    in its place (see the module notes).

    Attributes:
        features (nn.Module): The static network's stem and body: a CNN
            backbone's output (its last stage).
        pre_gate (nn.Module, optional): In a gated model, images to the
            features after the gate's attention and the slimming logits
            (:meth:`~dsnet_mm.static.StaticNet.split_at_gate`).
        post_gate (nn.Module, optional): In a gated model, those features
            to class logits (neck and head included).

    Args:
        model (nn.Module): A DS classifier.
        spec (SubnetSpec): The sub-network.
        like (torch.Tensor): An input (device, dtype, memory format).
    """

    def __init__(self, model: nn.Module, spec,
                 like: torch.Tensor) -> None:
        net = built_like(
            lambda: build_subnet(model, spec, StaticLayers(True)), like)
        self.features = nn.Sequential(net.stem, net.body)
        self.pre_gate = self.post_gate = None
        if getattr(model.backbone, 'gated', False):
            self.pre_gate, self.post_gate = net.split_at_gate()
        self._compiled: Optional['CachedStatic'] = None

    def compiled(self) -> 'CachedStatic':
        """The same modules compiled (:func:`compile_static`; each
        compiles on its first call)."""
        if self._compiled is None:
            compiled = copy.copy(self)
            for name in ('features', 'pre_gate', 'post_gate'):
                module = getattr(self, name)
                if module is not None:
                    setattr(compiled, name, compile_static(module))
            self._compiled = compiled
        return self._compiled


def cached_static(block: InferenceCacheBlock, spec,
                 x: torch.Tensor) -> Optional[CachedStatic]:
    """The :class:`CachedStatic` of ``spec`` (a sub-network of the block's
    model) for inputs like ``x``, built
    once per device, dtype and memory format and kept by ``block`` (its
    compiled form where ``block.compile``); None where the ops must run (see
    :meth:`~dsnet_mm.ops.InferenceCacheBlock.static`) or ``x`` is float64."""
    if x.dtype not in EXACT_DTYPES:
        return None
    key = (spec.stats, tuple(spec.items()), x.device, x.dtype,
           memory_format(x))
    static = block.static(key, lambda: CachedStatic(block.model, spec, x))
    return static.compiled() if static is not None and block.compile \
        else static
