# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Detection Stage II: the dynamic detector's gate trained by sandwich gate
sparsification (SGS) on the detection losses, the rest frozen."""
from typing import Callable, Dict, List, Optional

import torch
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.optim import OptimWrapper

from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_keys, check_type)
from ..gate_training import GateTrainingMixin
from ..routing import (GATE_LOSS_INPUTS, SGS_CLASS_WEIGHTS, gumbel_route,
                       sgs_cross_entropy)
from ..subnet import SubnetSpec
from .ds_gate_detector import DSGateDetector

MARGIN_MODES = ('relative', 'absolute')
GATE_TRAINING_REQUIRED = ('margin', 'margin_mode')
"""The keys ``gate_training`` must give: which margin fits depends on the
detector's loss (see :class:`DSSGSDetector`)."""
GATE_TRAINING_DEFAULTS = dict(
    class_weight='balanced',
    label_smooth=0.1,
    complexity_weight=0.0,
    madds_unit=1e8,
    tau=1.0,
    gate_loss_input='logits',
    keep_stage1_head=False)
"""The other keys of ``DSSGSDetector(gate_training=dict(...))`` and their
defaults."""


def check_gate_training(cfg: dict) -> dict:
    """``cfg`` (a dict) completed with the defaults, each value
    validated."""
    if isinstance(cfg, dict) and 'mask_position' in cfg:
        raise ValueError(
            'gate_training.mask_position is not an option of detection SGS: '
            'its gate learns from the SGS and complexity losses only, with '
            'no routed task loss through channel masks whose placement '
            'could change its gradient (DSGateClassifier takes '
            'mask_position)')
    check_keys('gate_training', cfg, required=GATE_TRAINING_REQUIRED,
               optional=tuple(GATE_TRAINING_DEFAULTS))
    cfg = {**GATE_TRAINING_DEFAULTS, **cfg}
    check_float('gate_training.margin', cfg['margin'], 0)
    check_choice('gate_training.margin_mode', cfg['margin_mode'],
                 MARGIN_MODES)
    check_choice('gate_training.class_weight', cfg['class_weight'],
                 SGS_CLASS_WEIGHTS)
    check_float('gate_training.label_smooth', cfg['label_smooth'], 0, 1,
                high_open=True)
    check_float('gate_training.complexity_weight', cfg['complexity_weight'],
                0)
    check_float('gate_training.madds_unit', cfg['madds_unit'], 0,
                low_open=True)
    check_float('gate_training.tau', cfg['tau'], 0, low_open=True)
    check_choice('gate_training.gate_loss_input', cfg['gate_loss_input'],
                 GATE_LOSS_INPUTS)
    check_bool('gate_training.keep_stage1_head', cfg['keep_stage1_head'])
    return cfg


@MODELS.register_module()
class DSSGSDetector(GateTrainingMixin, DSGateDetector):
    """Detection Stage II: the gate of a :class:`DSGateDetector` trained by
    SGS on the detection data.

    As in the classifier's Stage II
    (:class:`~dsnet_mm.models.classifiers.DSGateClassifier`), everything
    but the gate's slimming head is frozen (every other parameter has
    ``requires_grad=False`` and every module stays in eval mode, BN
    statistics included: :class:`~dsnet_mm.models.gate_training.
    GateTrainingMixin`), the supernet comes from ``stage1_checkpoint`` (a
    detection Stage I checkpoint, its slimming head left at its init) and
    the gate learns from online targets on the window's two ends. An image
    is **easy** (target: the window's narrowest) when the narrowest
    sub-network's detection loss on it is within a margin of the widest's,
    else **hard** (target: the widest):

    - ``margin_mode='relative'``: ``loss_narrow <= (1 + margin) *
      loss_wide``, the margin a share of the image's own loss (scale-free:
      SSD's and RetinaNet's losses differ in scale);
    - ``margin_mode='absolute'``: ``loss_narrow <= loss_wide + margin``.

    Neither has a default: which separates easy from hard images depends on
    the detector and its Stage I (on the digits SSD the narrowest's loss is
    a similar multiple of the widest's on every difficulty level, while
    the difference grows with it: there only the absolute rule works).

    The loss of an image is its detector's total training loss (the head's
    classification and box losses against its ground truth, computed for the
    image alone: :meth:`image_losses`). Mean average precision is not
    defined per image; the loss is what the detector minimises and is lower
    where it detects better. The gate loss is
    :func:`~dsnet_mm.models.routing.sgs_cross_entropy` (``class_weight``,
    ``label_smooth``) of the gate logits, or with
    ``gate_loss_input='gumbel_probs'`` of the soft Gumbel-softmax sample
    (the reference DS-Net code's reading, as in the classifier's Stage II),
    plus ``complexity_weight * (mean MAdds of that Gumbel routing /
    madds_unit) ** 2``. The routed task loss of the classifier's Stage II
    is left out: it would run the window's widest detector once more per
    step. So is the classifier's ``mask_position``, which only sets the
    gradient of that loss (``gate_training`` refuses it). With
    ``keep_stage1_head`` the slimming head starts from the one in
    ``stage1_checkpoint`` instead of its init (the gate's ``head_init``).

    Inference (``predict``, the routing paths, ``routed_subnet`` and
    ``routed_madds``) is that of :class:`DSGateDetector`, at the gate's
    current weights.

    Args:
        backbone (dict): A DS backbone config with ``gate`` set.
        gate_training (dict): The SGS options: ``margin`` and
            ``margin_mode`` (required), ``class_weight`` (``'balanced'``),
            ``label_smooth`` (0.1), ``complexity_weight`` (0),
            ``madds_unit`` (1e8), ``tau`` (the Gumbel-softmax temperature,
            1), ``gate_loss_input`` (``'logits'``; or ``'gumbel_probs'``),
            ``keep_stage1_head`` (False).
        stage1_checkpoint (str, optional): The detection Stage I checkpoint
            that gate training starts from, loaded by ``init_weights``;
            every key but the gate's slimming head must match. Defaults to
            None.
        **kwargs: Passed to :class:`DSGateDetector` (``routing_mode``,
            ``gate_checkpoint``, the detector's parts).
    """

    # a detection Stage I checkpoint: the sandwich's iteration counter is
    # not carried over either
    stage1_new_prefixes = ('cost_penalty', 'sandwich_iter')

    def __init__(self,
                 backbone: dict,
                 gate_training: dict,
                 stage1_checkpoint: Optional[str] = None,
                 **kwargs) -> None:
        check_type('stage1_checkpoint', stage1_checkpoint, (type(None), str),
                   'None or a checkpoint path')
        gate_training = check_gate_training(gate_training)
        super().__init__(backbone, **kwargs)
        self.tau = gate_training['tau']
        self.gate_training = gate_training
        self.stage1_checkpoint = stage1_checkpoint
        self.keep_stage1_head = gate_training['keep_stage1_head']
        self._freeze_but_gate()

    @torch.no_grad()
    def image_losses(self, h: torch.Tensor, early: List[torch.Tensor],
                     spec: SubnetSpec,
                     data_samples: SampleList) -> torch.Tensor:
        """``[B]``: each image's total detection loss at window member
        ``spec``, from the features after the gate (the head's loss of the
        image alone)."""
        feats = self._run_window(h, early, spec)
        x = self.neck(feats) if self.with_neck else feats
        out = []
        for i, sample in enumerate(data_samples):
            losses = self.bbox_head.loss(tuple(f[i:i + 1] for f in x),
                                         [sample])
            out.append(self.parse_losses(losses)[0])
        return torch.stack(out)

    def sgs_targets(self, h: torch.Tensor, early: List[torch.Tensor],
                    data_samples: SampleList) -> torch.Tensor:
        """Gate targets: 0 (narrowest) for an image whose loss at the
        window's narrowest is within the margin of the widest's, else the
        widest's position."""
        narrow = self.image_losses(h, early, self.window[0], data_samples)
        wide = self.image_losses(h, early, self.window[-1], data_samples)
        margin = self.gate_training['margin']
        bound = wide * (1 + margin) \
            if self.gate_training['margin_mode'] == 'relative' \
            else wide + margin
        return torch.where(narrow <= bound, 0, len(self.window) - 1)

    def train_step(self,
                   data: dict,
                   optim_wrapper: OptimWrapper,
                   forward: Optional[Callable] = None
                   ) -> Dict[str, torch.Tensor]:
        """One detection SGS step: only the gate's slimming head is updated
        (``forward``, the DDP wrapper in distributed training, runs the gate
        so that its gradients are reduced; default: the model itself)."""
        forward = self if forward is None else forward
        data = self.data_preprocessor(data, True)
        inputs = data['inputs']
        cfg = self.gate_training
        with optim_wrapper.optim_context(self):
            gate_logits, target = forward(inputs, data['data_samples'],
                                          mode='sgs')
            weights, probs = gumbel_route(gate_logits, cfg['tau'])
            scores = probs if cfg['gate_loss_input'] == 'gumbel_probs' \
                else gate_logits
            losses = dict()
            if (target >= 0).any():
                losses['loss_gate'] = sgs_cross_entropy(
                    scores, target, cfg['label_smooth'],
                    cfg['class_weight'])
            return self._update_gate(
                optim_wrapper, losses, weights, target, inputs.shape[1:],
                cfg['complexity_weight'], cfg['madds_unit'])

    extra_modes = ('sgs', )

    def _forward_sgs(self, inputs: torch.Tensor,
                     data_samples: SampleList):
        """``forward(mode='sgs')``: detection SGS's forward, the gate
        logits and the gate targets of the batch."""
        h, gate_logits, early = self._pre_gate(inputs)
        return gate_logits, self.sgs_targets(h, early, data_samples)
