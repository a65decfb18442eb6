# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A sub-network of a DS detector as a plain torch network up to the head
outputs."""
import copy
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import used_channels, zero_pad_channels
from dsnet_mm.static import StaticNet

# The image shape at which build_detector runs a detector to find (and
# check) the convolutions that read each backbone tap: large enough for
# the strided extra levels of mmdet's SSD300 and of a five-level FPN.
PROBE_SHAPE = (3, 320, 320)


class StaticDetector(nn.Module):
    """Images to the dense head's raw outputs at one sub-network.

    The backbone is the static sub-network (BN folded or kept) tapped at the
    end of each ``out_indices`` stage; the neck and head are copies of the
    detector's own, in eval mode, built for the widest taps. A narrower tap
    reaches them zero-padded to ``widths`` (as the DS detector does, see
    :func:`~dsnet_mm.models.detectors.pad_to`) unless :func:`build_detector`
    has sliced the convolutions that read it to its width (equal outputs,
    and the cost of the sub-network's width). Box decoding and NMS are
    left to the caller (they are mmdet's ``predict_by_feat``), so an
    exported graph holds convolutions and element-wise ops only and runs
    without dsnet_mm, mmdet or mmcv.

    Returns:
        tuple[torch.Tensor]: the class scores of every level, then the box
        regressions of every level (mmdet's ``(cls_scores, bbox_preds)``
        flattened).
    """

    def __init__(self, backbone: StaticNet, out_indices: Sequence[int],
                 widths: Sequence[int], neck: nn.Module,
                 bbox_head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps = tuple(backbone.stage_ends[i] - 1 for i in out_indices)
        self.widths = tuple(widths)
        self.neck = neck
        self.bbox_head = bbox_head
        self.eval()

    def features(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The backbone's tapped outputs, each zero-padded to ``widths``."""
        x = self.backbone.stem(x)
        feats = []
        for i, layer in enumerate(self.backbone.body):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
        return tuple(
            zero_pad_channels(f, w) for f, w in zip(feats, self.widths))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.head_outputs(self.features(x))

    def head_outputs(self, feats: Tuple[torch.Tensor, ...]
                     ) -> Tuple[torch.Tensor, ...]:
        """The neck and head on the tapped (padded) features."""
        if self.neck is not None:
            feats = self.neck(feats)
        cls_scores, bbox_preds = self.bbox_head(feats)[:2]
        return (*cls_scores, *bbox_preds)


def build_detector(model: nn.Module, spec: SubnetSpec,
                   backbone: StaticNet) -> StaticDetector:
    """Sub-network ``spec`` of a DS detector (``model``: a
    ``DSSingleStageDetector``) on its static ``backbone``, with the
    convolutions that read a narrower tap sliced to its width where that
    gives the same outputs (:func:`slice_tap_readers`)."""
    bb = model.backbone
    neck = copy.deepcopy(model.neck) if model.with_neck else None
    detector = StaticDetector(backbone, bb.out_indices, bb.out_widths, neck,
                              copy.deepcopy(model.bbox_head))
    param = next(model.parameters())
    # its own generator: building a static network leaves the global RNG be
    probe = torch.randn(1, *PROBE_SHAPE,
                        generator=torch.Generator(param.device).manual_seed(0),
                        device=param.device).to(param.dtype)
    return slice_tap_readers(detector, probe)


def _tap_readers(detector: StaticDetector,
                 feats: Tuple[torch.Tensor, ...]) -> Dict[int, List[str]]:
    """For each tap, the names of the neck's and head's leaf modules that
    read it, found by running them on ``feats``; an empty list unless every
    reader is a dense ``nn.Conv2d`` that reads the tap alone, as its input,
    and is not called on anything else."""
    readers = {i: [] for i in range(len(feats))}
    blocked, other_calls, hooks = set(), set(), []

    def record(name):
        def hook(module, args):
            read = False
            for i, f in enumerate(feats):
                if args[:1] and args[0] is f:
                    readers[i].append(name)
                    read = True
                elif any(a is f for a in args[1:]):
                    blocked.add(i)  # a tap as a second operand
            if not read:
                other_calls.add(name)
        return hook

    for name, module in detector.named_modules():
        if name.split('.')[0] in ('neck', 'bbox_head') and \
                not any(module.children()):
            hooks.append(module.register_forward_pre_hook(record(name)))
    try:
        detector.head_outputs(feats)
    finally:
        for h in hooks:
            h.remove()
    modules = dict(detector.named_modules())

    def sliceable(name):
        conv = modules[name]
        return isinstance(conv, nn.Conv2d) and conv.groups == 1 and \
            name not in other_calls

    return {
        i: names if i not in blocked and all(map(sliceable, names)) else []
        for i, names in readers.items()
    }


@torch.no_grad()
def slice_tap_readers(detector: StaticDetector,
                      probe: torch.Tensor) -> StaticDetector:
    """``detector`` with every narrower tap read unpadded by its readers'
    input weights sliced to its width (``w[:, :c]``, which on the padded
    tap gives the same outputs), where that holds: a tap read by anything
    but dense convolutions, or whose sliced copy does not reproduce the
    padded one's outputs on ``probe`` images, stays padded."""
    feats = detector.features(probe)
    expected = detector.head_outputs(feats)
    readers = _tap_readers(detector, feats)
    for i, names in readers.items():
        width = feats[i].shape[1]
        used = used_channels(feats[i])
        if used == width or not names:
            continue
        trial = copy.deepcopy(detector)
        modules = dict(trial.named_modules())
        for name in names:
            conv = modules[name]
            conv.weight = nn.Parameter(conv.weight[:, :used].clone(),
                                       requires_grad=False)
            conv.in_channels = used
        trial.widths = tuple(used if j == i else w
                             for j, w in enumerate(trial.widths))
        try:
            got = trial(probe)
        except RuntimeError:
            continue
        if all(torch.allclose(g, e, rtol=1e-4, atol=1e-5)
               for g, e in zip(got, expected)):
            detector = trial
    return detector


def detector_output_names(model: nn.Module) -> Tuple[str, ...]:
    """ONNX output names of a :class:`StaticDetector`: ``cls_score_<l>`` for
    every level, then ``bbox_pred_<l>``."""
    levels = len(model.bbox_head.prior_generator.strides)
    return tuple(f'{kind}_{level}' for kind in ('cls_score', 'bbox_pred')
                 for level in range(levels))
