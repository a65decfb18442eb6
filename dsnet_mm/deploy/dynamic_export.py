# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A gated DS classifier as a deployable dynamic model: ONNX files that
route every image to its own sub-network.

The window's members share everything before the gate, so the model is cut
there (:func:`~dsnet_mm.deploy.static_gate_parts`, BN folded):

- ``pre_gate.onnx``: normalised images to the features after the gate's
  attention (``features``) and the slimming logits (``gate_logits``);
- ``post_gate_<sub-network>.onnx`` per window member: those features to
  class logits (``logits``);
- ``dynamic.json``: the manifest (window, MAdds and relative costs, the cost
  penalty, the input normalisation and shape, the files, the opset, and the
  differences the export measured).

:class:`~dsnet_mm.deploy.OrtDynamicModel` runs the folder with onnxruntime
and nothing else: it routes as ``DSGateClassifier.route`` does
(``argmax(gate_logits - cost_penalty * relative_costs)`` in float64) and
buckets the batch by route.
"""
import json
import os
import os.path as osp
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from dsnet_mm.models.classifiers import DSGateClassifier
from dsnet_mm.ops.utils import check_float, check_int, check_ints
from .builder import input_normalisation, static_gate_parts
from .ort_dynamic import MANIFEST, OrtDynamicModel

PRE_GATE = 'pre_gate.onnx'
ONNX_OPSET = 17


class ExportMismatchError(RuntimeError):
    """The exported model does not reproduce the PyTorch model."""


def export_onnx(net: nn.Module, example: torch.Tensor, path: str,
                input_name: str, output_names: Sequence[str],
                opset: int = ONNX_OPSET) -> None:
    """Export ``net`` (one input, batch dimension dynamic) to ONNX at
    ``opset`` (default 17)."""
    torch.onnx.export(
        net, (example, ), path, dynamo=False, opset_version=opset,
        input_names=[input_name], output_names=list(output_names),
        dynamic_axes={name: {0: 'batch'}
                      for name in (input_name, *output_names)})


def export_dynamic(model: DSGateClassifier,
                   out_dir: str,
                   shape: Sequence[int],
                   batch_size: int = 8,
                   opset: int = ONNX_OPSET,
                   tolerance: float = 1e-4,
                   seed: int = 0) -> dict:
    """Export a gated classifier as ONNX files that route each image, and
    check them.

    The check runs a random batch through ``model.forward_dynamic(x,
    'bucket')`` and through :class:`~dsnet_mm.deploy.OrtDynamicModel` on the
    written files, and records the largest absolute differences of the class
    and gate logits (beside the largest class logit, their scale), whether
    every image took the same route, and the images each member ran.

    Args:
        model (DSGateClassifier): The gated classifier (a DS-MobileNetV1,
            DS-ResNet or DS-ViT backbone).
        out_dir (str): The folder to write.
        shape (Sequence[int]): Image size ``(H, W)``; the files take this
            size only, and the routing costs are counted at it.
        batch_size (int): Images of the check. Defaults to 8.
        opset (int): ONNX opset. Defaults to 17.
        tolerance (float): The largest difference of class logits allowed,
            relative to the largest class logit (absolute below 1): float32
            resolves logits of a few hundred to about 1e-5 only. Defaults
            to 1e-4.
        seed (int): Seed of the check's images. Defaults to 0.

    Returns:
        dict: The manifest written to ``out_dir/dynamic.json``.

    Raises:
        ExportMismatchError: If the class logits differ by more than
            ``tolerance`` times the largest class logit (at least 1) or an
            image is routed differently (the manifest is written first, with
            the differences).
    """
    if not isinstance(model, DSGateClassifier):
        raise TypeError('model must be a DSGateClassifier (a Stage II model '
                        f'with a gate), got a {type(model).__name__}')
    check_ints('shape', shape, 1, length=2)
    check_int('batch_size', batch_size, 1)
    check_int('opset', opset, 7)
    check_float('tolerance', tolerance, 0)
    image_shape = (model.backbone.in_channels, *shape)
    param = next(model.parameters())
    x = torch.randn(batch_size, *image_shape,
                    generator=torch.Generator().manual_seed(seed)).to(param)
    pre, posts = static_gate_parts(model)
    with torch.no_grad():
        expected, gate_logits, routes = model.forward_dynamic(x, 'bucket')
        features = pre(x)[0]
    os.makedirs(out_dir, exist_ok=True)
    export_onnx(pre, x, osp.join(out_dir, PRE_GATE), 'input',
                ('features', 'gate_logits'), opset)
    madds = model.window_madds(image_shape)
    costs = model.relative_costs(image_shape).tolist()
    window = []
    for k, (spec, post) in enumerate(zip(model.window, posts)):
        name = f'post_gate_{spec.name}.onnx'
        export_onnx(post, features, osp.join(out_dir, name), 'features',
                    ('logits', ), opset)
        window.append(dict(name=spec.name, index=spec.position, madds=madds[k],
                           relative_cost=costs[k], file=name))
    manifest = dict(
        backbone=type(model.backbone).__name__,
        input_shape=list(image_shape),
        normalisation=input_normalisation(model),
        opset=opset,
        pre_gate=PRE_GATE,
        window=window,
        cost_penalty=float(model.cost_penalty))
    _write(out_dir, manifest)
    manifest['check'] = check = _check(
        OrtDynamicModel(out_dir), x, expected, gate_logits, routes)
    _write(out_dir, manifest)
    allowed = tolerance * max(1.0, check['logits_max_abs'])
    if check['logits_max_diff'] > allowed or not check['routes_identical']:
        raise ExportMismatchError(
            f'the exported dynamic model in {out_dir} does not reproduce the '
            f"model: class logits differ by {check['logits_max_diff']:.2e} "
            f'(allowed {allowed:.2e}: {tolerance:.0e} of the largest logit, '
            f"{check['logits_max_abs']:.3g}), routes identical: "
            f"{check['routes_identical']}")
    return manifest


def _check(ort: OrtDynamicModel, x: torch.Tensor, expected: torch.Tensor,
           gate_logits: torch.Tensor, routes: torch.Tensor) -> dict:
    """The differences between the onnxruntime model and the PyTorch
    model's outputs on ``x``."""
    images = x.cpu().numpy()
    ort_logits, ort_routes = ort(images)

    def max_diff(a: np.ndarray, b: torch.Tensor) -> float:
        return float(np.abs(a - b.cpu().numpy()).max())

    return dict(
        batch_size=len(images),
        logits_max_abs=float(expected.abs().max()),
        logits_max_diff=max_diff(ort_logits, expected),
        gate_logits_max_diff=max_diff(ort.pre_gate(images)[1], gate_logits),
        routes_identical=bool((ort_routes == routes.cpu().numpy()).all()),
        images_per_member=np.bincount(
            ort_routes, minlength=len(ort.window)).tolist())


def _write(out_dir: str, manifest: dict) -> None:
    with open(osp.join(out_dir, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=2)
