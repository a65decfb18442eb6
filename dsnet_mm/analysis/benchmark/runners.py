# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Runners of one sub-network per mode and backend: the DS model sliced,
masked or index-gathered, its static network in eager torch, compiled or on
onnxruntime (from ONNX files exported once), and the per-image static limit
of a routed batch."""
import copy
import os.path as osp
import tempfile
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.deploy import (ExportMismatchError, export_dynamic,
                             export_onnx, static_subnet)
from dsnet_mm.deploy.ort_dynamic import ort_session_options
from dsnet_mm.deploy.static_like import static_subnet_like
from dsnet_mm.models.routing import MaskedRouting
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.static.cached import compile_static
from ..index_baseline import indexed_subnet
from dsnet_mm.models.subnet_table import network_forward
from .checks import COMPILED, Runner, ort_providers


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) \
        if channels_last else x



class OnnxExports:
    """ONNX files of the static networks and of the dynamic model, each
    written once into a temporary folder (removed by :meth:`close`), from
    the model on the CPU (a copy if it is elsewhere).

    Args:
        model (nn.Module): The DS classifier (a ``DSGateClassifier`` for
            :meth:`dynamic`).
        shape (Sequence[int]): ``(C, H, W)`` of an image.
    """

    def __init__(self, model: nn.Module, shape: Sequence[int]) -> None:
        on_cpu = next(model.parameters()).device.type == 'cpu'
        self.model = model if on_cpu else copy.deepcopy(model).cpu()
        self.shape = tuple(shape)
        self._dir = tempfile.TemporaryDirectory(prefix='dsnet_benchmark_')
        self._static: Dict[Tuple, str] = {}
        self._dynamic: Optional[str] = None

    def static(self, spec: SubnetSpec) -> str:
        """The static network of ``spec`` (batch dimension dynamic)."""
        key = (spec.stats, tuple(spec.items()))
        if key not in self._static:
            path = osp.join(self._dir.name,
                            f'{spec.name}_{len(self._static)}.onnx')
            export_onnx(static_subnet(self.model, spec),
                        torch.zeros(1, *self.shape), path, 'input',
                        ('logits', ))
            self._static[key] = path
        return self._static[key]

    def dynamic(self) -> str:
        """The folder :func:`~dsnet_mm.deploy.export_dynamic` wrote."""
        if self._dynamic is None:
            out = osp.join(self._dir.name, 'dynamic')
            try:
                export_dynamic(self.model, out, self.shape[1:])
            except ExportMismatchError:
                pass  # the rows report their own difference to torch
            self._dynamic = out
        return self._dynamic

    def close(self) -> None:
        self._dir.cleanup()


def ort_options() -> 'onnxruntime.SessionOptions':  # noqa: F821
    """Sessions on torch's thread count that do not spin after a run (their
    spinning threads would slow the torch rows timed between them)."""
    return ort_session_options(torch.get_num_threads(), spinning=False)


def numpy_input(x: torch.Tensor) -> np.ndarray:
    """NCHW float32 host memory, what onnxruntime reads."""
    return x.detach().float().contiguous().cpu().numpy()


def static_runner(model: nn.Module,
                  spec: SubnetSpec,
                  x: torch.Tensor,
                  backend: str = 'torch',
                  exports: Optional[OnnxExports] = None) -> Runner:
    """The static network of ``spec`` on ``x`` (its device, dtype and
    memory format): eager torch, ``torch.compile``d (:data:`COMPILED`) or
    on onnxruntime (``'ort'``, from ``exports``)."""
    if backend == 'ort':
        import onnxruntime
        session = onnxruntime.InferenceSession(
            exports.static(spec), ort_options(),
            providers=list(ort_providers(x.device)))
        feed = {'input': numpy_input(x)}
        return lambda: session.run(None, feed)[0]
    net = static_subnet_like(model, spec, x)
    return bind(compile_static(net) if backend == COMPILED else net, x)


def subnet_runners(model: nn.Module, spec: SubnetSpec, modes: Sequence[str],
                   x: torch.Tensor) -> Dict[str, Runner]:
    """One eager torch runner per static mode (slice, static, mask, index)
    for ``spec``."""
    backbone = model.backbone
    runners: Dict[str, Runner] = {}

    def run_slice():
        backbone.set_subnet(spec)
        return network_forward(model, x)

    if 'slice' in modes:
        runners['slice'] = run_slice
    if 'static' in modes:
        runners['static'] = static_runner(model, spec, x)
    if 'mask' in modes:
        # the window [spec, largest] with every image on spec: full widths,
        # channels beyond spec's widths zeroed, spec's BN statistics
        window = [spec, backbone.space.largest]
        weights = F.one_hot(
            torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
            2).float()

        def run_mask():
            feats = backbone.forward_spec(x, MaskedRouting(window, weights))
            if model.with_neck:
                feats = model.neck(feats)
            return model.head(feats)

        runners['mask'] = run_mask
    if 'index' in modes:
        runners['index'] = bind(indexed_subnet(model, spec), x)
    return runners


def bind(net: nn.Module, x: torch.Tensor) -> Runner:
    return lambda: net(x)


def limit_runner(model: nn.Module, routes: torch.Tensor, batch: torch.Tensor,
                  backend: str, exports: Optional[OnnxExports]) -> Runner:
    """The per-image static limit of the routed batch: each window member's
    static network on as many images as are routed to it (one call per
    member), and the gate's slimming head on the whole batch (in torch on
    every backend: a ``[B, C] x [C, window]`` product)."""
    parts = [
        static_runner(model, spec, batch[:n], backend, exports)
        for spec, n in zip(model.window,
                           torch.bincount(routes, minlength=len(
                               model.window)).tolist()) if n
    ]
    gate = model.gate
    if gate.features == 'squeeze':
        width = gate.reduce_channels
    else:
        with torch.no_grad():
            h = model.backbone.forward_pre_gate(batch[:1])[0]
        width = model.backbone.gate_input_width(h)
    v = batch.new_zeros(batch.shape[0], width, 1, 1)

    def run():
        for part in parts:
            part()
        gate._slim_logits(v)

    return run
