# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The dynamic detector: the gate in the DS backbone picks each image's
sub-network; neck and head run once on the whole batch."""
import os.path as osp
from typing import Callable, Dict, List, Optional, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper

from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_keys, check_type)
from ..checkpoint_io import (check_stage1_head, check_state_dict,
                             load_stage1_weights, read_state_dict,
                             strip_module_prefix)
from ..backbones.pretrained import partial_loading
from ..gated import GatedRoutingMixin, check_routing
from ..routing import (GATE_LOSS_INPUTS, SGS_CLASS_WEIGHTS, gumbel_route,
                       sgs_cross_entropy)
from ..subnet import SubnetSpec
from .ds_single_stage import DSSingleStageDetector, pad_to

MARGIN_MODES = ('relative', 'absolute')
GATE_TRAINING_REQUIRED = ('margin', 'margin_mode')
"""The keys ``gate_training`` must give: which margin fits depends on the
detector's loss (see :class:`DSGateDetector`)."""
GATE_TRAINING_DEFAULTS = dict(
    class_weight='balanced',
    label_smooth=0.1,
    complexity_weight=0.0,
    madds_unit=1e8,
    tau=1.0,
    gate_loss_input='logits',
    keep_stage1_head=False)
"""The other keys of ``DSGateDetector(gate_training=dict(...))`` and their
defaults."""


def check_gate_training(cfg: Optional[dict]) -> Optional[dict]:
    """``cfg`` completed with the defaults (None stays None), each value
    validated."""
    if cfg is None:
        return None
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
    Within :meth:`without_routing` the backbone's active sub-network runs
    instead, as in :class:`DSSingleStageDetector`.

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

    **Detection SGS** (``gate_training=dict(...)``: the gate's Stage II on
    the detection data). As in the classifier's Stage II, everything but the
    gate's slimming head is frozen (eval mode, BN statistics included), the
    supernet comes from ``stage1_checkpoint`` (a detection Stage I
    checkpoint, its slimming head left at its init) and the gate learns from
    online targets on the window's two ends. An image is **easy** (target:
    the window's narrowest) when the narrowest sub-network's detection loss
    on it is within a margin of the widest's, else **hard** (target: the
    widest):

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
    image alone). Mean average precision is not defined per image; the loss
    is what the detector minimises and is lower where it detects better.
    The gate loss is :func:`~dsnet_mm.models.routing.sgs_cross_entropy`
    (``class_weight``, ``label_smooth``) of the gate logits, or with
    ``gate_loss_input='gumbel_probs'`` of the soft Gumbel-softmax sample
    (the reference DS-Net code's reading, as in
    :class:`~dsnet_mm.models.classifiers.DSGateClassifier`), plus
    ``complexity_weight * (mean MAdds of that Gumbel routing /
    madds_unit) ** 2``. The routed task loss of the classifier's Stage II
    is left out: it would run the window's widest detector once more per
    step. So is the classifier's ``mask_position``, which only sets the
    gradient of that loss (``gate_training`` refuses it). With
    ``keep_stage1_head`` the slimming head starts from the one in
    ``stage1_checkpoint`` instead of its init (the gate's ``head_init``).

    Args:
        backbone (dict): A DS backbone config with ``gate`` set, e.g.
            ``gate=dict(stage='stage4', window=(0, 14))``.
        routing_mode (str): Inference path. Defaults to ``'bucket'``.
        gate_checkpoint (str, optional): A checkpoint holding the gate's
            slimming head under ``backbone.`` (a classification Stage II
            checkpoint of the same backbone), loaded at construction.
            Defaults to None.
        gate_training (dict, optional): Train the gate by detection SGS
            instead of the supernet by the sandwich rule; keys ``margin``
            and ``margin_mode`` (required), ``class_weight``
            (``'balanced'``), ``label_smooth`` (0.1),
            ``complexity_weight`` (0), ``madds_unit`` (1e8), ``tau`` (1),
            ``gate_loss_input`` (``'logits'``; or ``'gumbel_probs'``),
            ``keep_stage1_head`` (False). Defaults to None.
        stage1_checkpoint (str, optional): The detection Stage I checkpoint
            that gate training starts from, loaded by ``init_weights``;
            every key but the gate's slimming head must match. Defaults to
            None.
        **kwargs: Passed to :class:`DSSingleStageDetector`.
    """

    def __init__(self,
                 backbone: dict,
                 routing_mode: str = 'bucket',
                 gate_checkpoint: Optional[str] = None,
                 gate_training: Optional[dict] = None,
                 stage1_checkpoint: Optional[str] = None,
                 **kwargs) -> None:
        check_routing(routing_mode)
        check_type('gate_checkpoint', gate_checkpoint, (type(None), str),
                   'None or a checkpoint path')
        check_type('stage1_checkpoint', stage1_checkpoint, (type(None), str),
                   'None or a checkpoint path')
        gate_training = check_gate_training(gate_training)
        super().__init__(backbone, **kwargs)
        self._init_routing(routing_mode, 1.0 if gate_training is None else
                           gate_training['tau'])
        self.gate_training = gate_training
        self.stage1_checkpoint = stage1_checkpoint
        if gate_training is not None:
            self._freeze_but_gate()
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

    def init_weights(self) -> None:
        super().init_weights()
        if self.stage1_checkpoint is not None:
            # a detection Stage I checkpoint: the sandwich's iteration
            # counter is not carried over, the budget is this stage's own
            # and so is the gate's slimming head unless kept
            new_prefixes = ('cost_penalty', 'sandwich_iter')
            if self.gate_training is not None and \
                    self.gate_training['keep_stage1_head']:
                check_stage1_head(self.stage1_checkpoint, self.gate_prefix)
            else:
                new_prefixes += (self.gate_prefix, )
            load_stage1_weights(self, self.stage1_checkpoint,
                                new_prefixes=new_prefixes)

    # --- detection SGS ---------------------------------------------------
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
        """The sandwich step of :class:`DSSingleStageDetector`, or with
        ``gate_training`` one detection SGS step (only the gate's slimming
        head is updated; ``forward``, the DDP wrapper in distributed
        training, runs the gate so that its gradients are reduced)."""
        if self.gate_training is None:
            return super().train_step(data, optim_wrapper, forward)
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

    def forward(self,
                inputs: torch.Tensor,
                data_samples=None,
                mode: str = 'tensor',
                spec: Optional[SubnetSpec] = None):
        """As :meth:`DSSingleStageDetector.forward`; a given ``spec`` runs
        that sub-network in every mode, ``'predict'`` included (no
        routing). ``mode='sgs'`` runs detection SGS's forward: the gate
        logits and the gate targets of the batch."""
        if mode == 'sgs':
            h, gate_logits, early = self._pre_gate(inputs)
            return gate_logits, self.sgs_targets(h, early, data_samples)
        if spec is None:
            return super().forward(inputs, data_samples, mode)
        with self.without_routing():
            return super().forward(inputs, data_samples, mode, spec)

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
            sample.set_metainfo(dict(routed_subnet=self.window[k].index,
                                     routed_madds=madds[k]))
        return samples
