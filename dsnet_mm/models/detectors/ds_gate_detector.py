# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The dynamic detector: the gate in the DS backbone picks each image's
sub-network; neck and head run once on the whole batch."""
import os.path as osp
from typing import List, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.logging import print_log

from dsnet_mm.ops.utils import check_type
from ..checkpoint_io import (check_state_dict, read_state_dict,
                             strip_module_prefix)
from ..backbones.pretrained import partial_loading
from ..gated import GatedRoutingMixin, check_routing
from ..subnet import SubnetSpec
from .ds_single_stage import DSSingleStageDetector, pad_to

SGS_ONLY = ('gate_training', 'stage1_checkpoint')
"""Arguments of :class:`~dsnet_mm.models.detectors.DSSGSDetector` that
:class:`DSGateDetector` refuses by name."""


@MODELS.register_module()
class DSGateDetector(GatedRoutingMixin, DSSingleStageDetector):
    """A :class:`DSSingleStageDetector` whose backbone's gate routes every
    image to a sub-network of its window at inference.

    The backbone runs up to the gate once for the batch (the window's
    sub-networks share every layer before it); the gate picks a window
    position per image, and the rest of the backbone runs by
    ``routing_mode`` (see :mod:`dsnet_mm.models.gated`): ``'bucket'``
    (default: images grouped by choice, each group sliced), ``'slice'`` (one
    image at a time: the batch-1 path) or ``'mask'`` (the window's widest
    with per-image channel masks). Each image's backbone outputs are
    zero-padded to the widest widths (:func:`pad_to`, exact for a plain-conv
    consumer), and the static neck and head run once on the whole batch, so
    the three paths give the same detections.

    Every prediction gets ``routed_subnet`` (index in the sub-network list)
    and ``routed_madds``: the MAdds per image of its sub-network's static
    detector at the batch's input shape (backbone, neck and head, the
    neck's first convs at the routed widths, no NMS) plus the gate's
    slimming head (:meth:`~dsnet_mm.models.gated.GatedRoutingMixin.
    window_madds`); ``RoutingMetric`` averages them and counts the routing.
    Within :meth:`subnet` (or given ``forward(spec=...)``) that
    sub-network runs instead, as in :class:`DSSingleStageDetector`.

    Training is the sandwich rule of :class:`DSSingleStageDetector`, which
    never runs the gate's slimming head: a gate loaded with the backbone
    (``init_cfg=dict(type='Pretrained', prefix='backbone.')`` on a
    classification Stage II checkpoint) stays as trained there. For testing
    a detection Stage I checkpoint (trained without the gate: it has every
    key but the slimming head) under a classification gate, give
    ``gate_checkpoint``: the slimming head is loaded when the model is
    built, because a test run calls no ``init_weights``, and mmengine's
    ``load_from`` (not strict) leaves it. The gate routes by its own logits
    (``cost_penalty`` starts at 0: a budget fitted to the classifier's MAdds
    does not carry over). ``'tensor'`` mode (mmdet's ``get_flops.py``) runs
    the active sub-network.

    Detection Stage II, the gate trained on the detection losses with the
    rest frozen, is :class:`~dsnet_mm.models.detectors.DSSGSDetector`;
    this class refuses its ``gate_training`` and ``stage1_checkpoint``.

    Args:
        backbone (dict): A DS backbone config with ``gate`` set, e.g.
            ``gate=dict(stage='stage4', window=(0, 14))``.
        routing_mode (str): Inference path. Defaults to ``'bucket'``.
        gate_checkpoint (str, optional): A checkpoint holding the gate's
            slimming head under ``backbone.`` (a classification Stage II
            checkpoint of the same backbone), loaded at construction.
            Defaults to None.
        **kwargs: Passed to :class:`DSSingleStageDetector`.

    Raises:
        ValueError: ``gate_training`` or ``stage1_checkpoint`` is given (the
            arguments of :class:`~dsnet_mm.models.detectors.DSSGSDetector`).
    """

    def __init__(self,
                 backbone: dict,
                 routing_mode: str = 'bucket',
                 gate_checkpoint: Optional[str] = None,
                 **kwargs) -> None:
        for key in SGS_ONLY:
            if key in kwargs:
                raise ValueError(
                    f'{key} is not an argument of {type(self).__name__}: '
                    "detection Stage II is type='DSSGSDetector'")
        check_routing(routing_mode)
        check_type('gate_checkpoint', gate_checkpoint, (type(None), str),
                   'None or a checkpoint path')
        super().__init__(backbone, **kwargs)
        self._init_routing(routing_mode)
        # what a loaded checkpoint may lack (CheckpointMatchHook): the gate
        # and its budget penalty, once the gate came from its own file
        self.loaded_elsewhere: Tuple[str, ...] = ()
        if gate_checkpoint is not None:
            self.load_gate(gate_checkpoint)
            self.loaded_elsewhere = (self.gate_prefix, 'cost_penalty')

    def load_gate(self, path: str) -> None:
        """Load the gate's slimming head from checkpoint ``path`` (read
        weights-only); every other key of the file is ignored.

        Raises:
            FileNotFoundError: ``path`` is not a file.
            ValueError: the file has no slimming head, or one of another
                shape (a gate over another window or backbone).
        """
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'gate_checkpoint={path!r} is not a file: give the '
                'classification Stage II checkpoint whose gate routes the '
                'detector')
        prefix = self.gate_prefix
        state = {k: v for k, v in strip_module_prefix(
                     read_state_dict(path)).items()
                 if k.startswith(prefix)}
        own = {k: v for k, v in self.state_dict().items()
               if k.startswith(prefix)}
        if not state:
            raise ValueError(
                f'gate_checkpoint={path!r} holds no {prefix}* key: it is not '
                'a Stage II checkpoint of a gated backbone')
        check_state_dict(own, state, f'the gate of {path}')
        with partial_loading(self):  # the gate only, checked above
            self.load_state_dict(state, strict=False)
        print_log(f'loaded the gate ({", ".join(sorted(state))}) from {path}',
                  logger='current')

    # --- what the routing paths run -------------------------------------
    def _pre_gate(
        self, inputs: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        return self.backbone.forward_pre_gate(inputs)

    def _run_window(self, h: torch.Tensor, early: List[torch.Tensor],
                    spec: SubnetSpec) -> Tuple[torch.Tensor, ...]:
        """The backbone's outputs at window member ``spec`` (or a masked
        routing) from the features after the gate, padded to the widest."""
        late = self.backbone.forward_post_gate(h, spec)
        return pad_to(tuple(early) + tuple(late), self.backbone.out_widths)

    def predict(self,
                batch_inputs: torch.Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True,
                mode: Optional[str] = None) -> SampleList:
        """mmdet's ``predict`` on the routed backbone features (``mode``:
        the routing path, default ``routing_mode``)."""
        if self._routing_off:
            return super().predict(batch_inputs, batch_data_samples,
                                   rescale=rescale)
        feats, _, choice = self.forward_dynamic(batch_inputs, mode)
        x = self.neck(feats) if self.with_neck else feats
        results = self.bbox_head.predict(x, batch_data_samples,
                                         rescale=rescale)
        samples = self.add_pred_to_datasample(batch_data_samples, results)
        madds = self.window_madds(batch_inputs.shape[1:])
        for sample, k in zip(samples, choice.tolist()):
            sample.set_metainfo(dict(routed_subnet=self.window[k].position,
                                     routed_madds=madds[k]))
        return samples
