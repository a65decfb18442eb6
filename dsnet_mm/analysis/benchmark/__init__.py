# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Latency of the ways a sub-network can run, measured side by side.

Modes (all compute the same function of the input):

- ``slice``: the DS model at the sub-network with its inference cache on
  (:func:`~dsnet_mm.ops.inference_cache`), each forward one checked span of
  it, as a call of the model is: the backbone runs the sub-network as the
  static network built once from the cached, BN-folded weights
  (:mod:`dsnet_mm.deploy.static_like`), so what slicing costs beyond ``static``
  is the DS model's own dispatch;
- ``static``: a plain torch network built at the sub-network's widths with
  the sliced weights copied in and BN folded (the exported model: the limit
  slicing should reach);
- ``mask``: the full-width model with every channel beyond the sub-network's
  widths zeroed (the reference code's dynamic mode);
- ``index``: the full weights gathered by ``index_select`` on every forward
  (the approach of mmrazor's dynamic ops);
- ``dynamic``: the gated model through the bucketed path (``routed``),
  routed by its gate on real images or by a fixed routing mix, next to a
  ``static`` network whose MAdds equal the dynamic mean (``equal_madds``)
  and to the per-image static limit (``routed_limit``: each window member's
  static network on its images, one call per member, plus the gate's
  slimming head on the batch).

Backends (a ``backend`` field in every row):

- ``torch``: eager PyTorch;
- ``inductor`` (``compile=True``): ``torch.compile`` with frozen weights
  (:func:`~dsnet_mm.static.cached.compile_static`), for the static networks
  and, in modes ``slice`` and ``dynamic``, for the inference cache's static
  networks (:attr:`~dsnet_mm.ops.InferenceCacheBlock.compile`); each row
  records the first call's time (``compile_s``);
- ``ort``: onnxruntime on ONNX exports, for modes ``static`` (the static
  networks) and ``dynamic`` (:func:`~dsnet_mm.deploy.export_dynamic`), with
  as many intra-op threads as torch uses.

Rows of a backend other than eager torch carry ``max_abs_diff``, their
largest absolute difference to eager torch's output for the same input, and
``max_rel_diff``, that over the largest absolute output (random weights give
tiny logits).

The modes and backends of one sub-network and batch size are timed
round-robin (warm-up rounds first), so machine noise falls on all of them
alike, and one sub-network after the other, as a deployment runs it
(interleaving every sub-network would also defeat the inference cache,
which keeps a few recent widths). The median and the 90th percentile of the
rounds are reported; a sample averages back-to-back calls when one call is
short. On CUDA, CUDA events time each sample.
"""
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.models.subnet_table import subnet_complexity
from .checks import (BACKENDS, COMPILED, COMPILED_MODES, DETECTOR_MODES,
                     DEVICES, DS_MODES, DYNAMIC_ROWS, MODES, ORT_MODES,
                     RECOMPILE_LIMIT, check_backends, check_batch_sizes,
                     check_device, check_modes, check_routing_mix,
                     check_timing)
from .dynamic import (cycle_images, dynamic_group, equal_madds_spec,
                      mix_counts, mix_routes)
from .groups import subnet_group, time_group
from .runners import (OnnxExports, static_runner, subnet_runners,
                      to_memory_format)
from .summary import plot_latency, summarize
from .timing import Timer, measure

__all__ = [
    'BACKENDS', 'COMPILED', 'COMPILED_MODES', 'DETECTOR_MODES', 'DEVICES',
    'DS_MODES', 'DYNAMIC_ROWS', 'MODES', 'ORT_MODES', 'BenchmarkOptions',
    'OnnxExports', 'Timer', 'benchmark', 'check_backends',
    'check_batch_sizes', 'check_device', 'check_modes', 'check_routing_mix',
    'check_timing', 'equal_madds_spec', 'measure', 'mix_counts',
    'mix_routes', 'plot_latency', 'static_runner', 'subnet_runners',
    'summarize'
]


@dataclass(frozen=True)
class BenchmarkOptions:
    """What :func:`benchmark` times, and how.

    Args:
        modes (Sequence[str]): Modes among :data:`MODES` (a detector:
            :data:`DETECTOR_MODES`). Defaults to every mode but ``dynamic``.
        batch_sizes (Sequence[int]): Batch sizes. Defaults to ``(1, 32)``.
        warmup (int): Untimed rounds. Defaults to 3.
        repeats (int): Timed rounds. Defaults to 10.
        min_sample_ms (float): A sample averages back-to-back calls over
            about this long (see :func:`measure`). Defaults to 50.
        channels_last (bool): Run inputs (and static networks) in
            channels-last memory format. Defaults to False.
        backends (Sequence[str]): Backends among :data:`BACKENDS`, timed
            side by side. Defaults to ``('torch', )``.
        compile (bool): Also time ``torch.compile`` (backend
            :data:`COMPILED`) in modes :data:`COMPILED_MODES`. Defaults to
            False.
        routing_mix (Sequence[float], optional): For mode ``dynamic``: the
            fraction of each batch routed to each window member, which
            replaces the gate (:func:`mix_routes`; random images). Defaults
            to None (the gate routes the images given to :func:`benchmark`).
    """
    modes: Sequence[str] = ('slice', 'static', 'mask', 'index')
    batch_sizes: Sequence[int] = (1, 32)
    warmup: int = 3
    repeats: int = 10
    min_sample_ms: float = 50.0
    channels_last: bool = False
    backends: Sequence[str] = ('torch', )
    compile: bool = False
    routing_mix: Optional[Sequence[float]] = None

    def check(self, model: nn.Module, device: torch.device,
              images: Optional[torch.Tensor]) -> Optional[List[float]]:
        """Raise ``ValueError`` unless the options fit ``model`` on
        ``device``; return the routing mix as checked floats (or None)."""
        detector = hasattr(model, 'bbox_head')
        check_modes(self.modes, hasattr(model, 'forward_dynamic'), detector)
        check_batch_sizes(self.batch_sizes)
        check_backends(self.backends, device)
        if detector and (self.compile or list(self.backends) != ['torch']):
            raise ValueError(
                f'a detector is timed in eager torch only (backends '
                f'{list(self.backends)}, compile={self.compile}): give '
                "backends=['torch'] and no compile")
        if self.routing_mix is not None:
            if 'dynamic' not in self.modes:
                raise ValueError('routing_mix (--routing-mix) fixes the '
                                 'routing of mode dynamic: add dynamic to '
                                 'the modes')
            return check_routing_mix(self.routing_mix, model.window)
        if 'dynamic' in self.modes and images is None:
            raise ValueError('mode dynamic needs real images (routed by the '
                             'gate) or a routing_mix')
        return None


def benchmark(model: nn.Module,
              specs: Sequence[SubnetSpec],
              shape: Sequence[int],
              device: torch.device,
              options: BenchmarkOptions = BenchmarkOptions(),
              images: Optional[torch.Tensor] = None,
              progress: Optional[Callable[[str], None]] = None) -> List[Dict]:
    """Latency rows ``{mode, subnet, batch_size, madds, median_ms, p90_ms,
    backend}``.

    Args:
        model (nn.Module): A DS-MobileNetV1, DS-ResNet or DS-ViT classifier
            in eval mode on ``device`` (a ``DSGateClassifier`` for mode
            ``dynamic``), or a DS detector (modes :data:`DETECTOR_MODES`,
            eager torch: images to the dense head's raw outputs).
        specs (Sequence[SubnetSpec]): Sub-networks of the static modes.
        shape (Sequence[int]): ``(C, H, W)`` of an image.
        device (torch.device): Where to run.
        options (BenchmarkOptions): Modes, batch sizes, rounds, backends.
            Defaults to ``BenchmarkOptions()``.
        images (torch.Tensor, optional): Preprocessed real images
            ``[N, C, H, W]`` for mode ``dynamic`` routed by the gate
            (cycled to the batch size).
        progress (Callable[[str], None], optional): Receives progress lines.

    Returns:
        list[dict]: one row per (mode, sub-network, batch size, backend);
        the ``dynamic`` and ``routed_limit`` rows carry ``routing`` (images
        per window member), the ``equal_madds`` rows ``widths``, compiled
        rows ``compile_s`` and rows of other backends than eager torch
        ``max_abs_diff`` and ``max_rel_diff``.
    """
    routing_mix = options.check(model, device, images)
    modes, backends = options.modes, options.backends
    compile, channels_last = options.compile, options.channels_last
    say = progress or (lambda line: None)
    variants = list(backends) + ([COMPILED] if compile else [])
    static_modes = [m for m in modes if m != 'dynamic']
    specs = list(specs) if static_modes else []
    largest = model.backbone.space.largest
    if 'mask' in modes and not any(s is largest for s in specs):
        specs.append(largest)  # the full width that masking runs at
    madds = {r['name']: r['madds']
             for r in subnet_complexity(model, specs, shape)}
    exports = OnnxExports(model, shape) if 'ort' in backends else None
    rows = []
    with ExitStack() as stack:
        if exports is not None:
            stack.callback(exports.close)
        if compile:
            # torch 2.7 renamed cache_size_limit to recompile_limit
            limit = ('recompile_limit'
                     if hasattr(torch._dynamo.config, 'recompile_limit')
                     else 'cache_size_limit')
            stack.enter_context(torch._dynamo.config.patch(
                **{limit: RECOMPILE_LIMIT}))
        for bs in options.batch_sizes:
            x = to_memory_format(
                torch.randn(bs, *shape, device=device), channels_last)
            groups = [
                subnet_group(model, spec, static_modes, x, variants,
                             madds[spec.name], exports)
                for spec in specs
            ]
            if 'dynamic' in modes:
                batch = x if images is None else to_memory_format(
                    cycle_images(images, bs).to(device), channels_last)
                groups.append(dynamic_group(model, batch, shape, variants,
                                            routing_mix, exports))
            for g, group in enumerate(groups, 1):
                timed = [k for k in group.runners if k[2] in variants]
                say(f'batch size {bs}: group {g}/{len(groups)} ('
                    + ', '.join(' '.join(k) for k in timed) + ')')
                rows += time_group(model, group, timed, bs, device,
                                   options.warmup, options.repeats,
                                   options.min_sample_ms, compile)
    return rows
