# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Stage II: gate training with sandwich gate sparsification, and dynamic
inference that routes every image to its own sub-network."""
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_type)
from ..gate_training import GateTrainingMixin
from ..gated import GatedRoutingMixin, check_routing
from ..routing import (GATE_LOSS_INPUTS, SGS_CLASS_WEIGHTS, MaskedRouting,
                       gumbel_route, sgs_cross_entropy)
from ..subnet import SubnetSpec

SGS_RULES = ('smallest', 'smallest_widest', 'narrowest_correct')


@MODELS.register_module()
class DSGateClassifier(GateTrainingMixin, GatedRoutingMixin,
                       ImageClassifier):
    """A DS classifier whose gate picks the sub-network of each image.

    **Stage II training (SGS).** The supernet and its BN statistics are frozen
    (every parameter but the gate's slimming head has ``requires_grad=False``
    and every module stays in eval mode); only the slimming head learns, from:

    - the SGS loss: cross-entropy of the gate *logits* against online
      targets (``gate_loss_input='logits'``, the default: the gate trained
      as a classifier of its targets, noise-free). With
      ``gate_loss_input='gumbel_probs'`` (the reference DS-Net code) it is
      the label-smoothed cross-entropy of the soft Gumbel-softmax sample
      ``softmax((logits + noise) / tau)`` that also routes the task loss,
      i.e. a second softmax over noisy probabilities (each in [0, 1], so
      over ``K`` choices the loss never falls below ``log(1 + (K - 1) /
      e)``, and its gradient passes through a second softmax's Jacobian).
      With ``sgs_rule='smallest'`` (the reference code), an image that the
      window's narrowest sub-network classifies correctly is easy (target:
      narrowest), any other is hard (target: widest of the window). With
      ``'smallest_widest'``, hard images that even the widest gets wrong are
      ignored. With ``'narrowest_correct'`` (not in the paper) the target is
      the narrowest window member that classifies the image correctly, so
      the gate learns the middle of the window too (each member runs on
      the images the narrower ones got wrong). With
      ``sgs_class_weight='balanced'`` every target present in the batch
      weighs the same in that loss (the mean over targets of each target's
      mean loss), so a rare hard target is not drowned by easy ones;
    - the task loss of the routed model, run on the mask path with a
      straight-through Gumbel-softmax so it reaches the gate. Where the
      channel masks sit sets the gradient it gives the gate (the outputs
      are the same, see :class:`~dsnet_mm.models.routing.MaskedRouting`):
      after each activation (``mask_position='after_act'``, the default: a
      dropped channel's gradient is what it would have added) or, as the
      reference DS-Net code does, on each conv's and BN's output before the
      activation (``'before_act'``: a dropped channel's gradient is
      ``a'(0) * bn(0)``, the same whatever the image);
    - ``complexity_weight * (mean routed MAdds / madds_unit) ** 2``.

    **Start.** ``stage1_checkpoint`` gives the supernet. The slimming head
    starts from its init (the gate's ``head_init``: PyTorch's default or
    the reference's TF-style init, see
    :class:`~dsnet_mm.models.gates.DSGate`), or with ``keep_stage1_head``
    from the Stage I checkpoint's head, as the reference code resumes its
    whole supernet, slimming head included (a Stage I run that holds the
    gate, as DS-ViT's, never trains that head: it is its own Stage I init).

    **Inference.** ``predict`` routes by the argmax of the gate (no noise) and
    runs ``routing_mode``: ``'bucket'`` (default: group the batch by chosen
    sub-network, run each group sliced), ``'slice'`` (one image at a time) or
    ``'mask'`` (widest width with channel masks). Each data sample gets
    ``routed_subnet`` (index in the sub-network list) and ``routed_madds``.
    Within :meth:`subnet` (or given ``forward(spec=...)``) that sub-network
    runs instead.
    Within the model's :func:`~dsnet_mm.ops.inference_cache` the part before
    the gate and each bucket's part after it run as the window members'
    static networks cut at the gate (built once from the same folded
    weights: the parts :func:`~dsnet_mm.deploy.export_dynamic` exports).
    The routing itself (gate, decision, the three paths, MAdds per window
    member) is :class:`~dsnet_mm.models.gated.GatedRoutingMixin`, shared
    with the dynamic detector; the freezing and the end of a Stage II step
    are :class:`~dsnet_mm.models.gate_training.GateTrainingMixin`, shared
    with the detector's Stage II; this class supplies the part after the
    gate (class logits) and its Stage II.

    **MAdds budget.** Inference routes by ``argmax(logits - cost_penalty *
    relative MAdds)`` (:meth:`route`); ``cost_penalty`` (a buffer, 0 unless
    fitted, saved
    with the checkpoint) is set by :meth:`fit_budget`, e.g. by
    :class:`~dsnet_mm.engine.RoutingBudgetHook`, so that the mean MAdds on
    given images is a chosen share of the window's widest. The squared
    complexity term of Stage II sets the trade-off only loosely: where it
    lands depends on the Stage I supernet.

    Args:
        backbone (dict): A DS backbone config with ``gate`` set.
        neck (dict, optional): Neck config.
        head (dict, optional): Head config (its loss is the task loss).
        sgs_rule (str): ``'smallest'``, ``'smallest_widest'`` or
            ``'narrowest_correct'``.
        gate_label_smooth (float): Label smoothing of the SGS loss.
            Defaults to 0.1 (reference).
        sgs_class_weight (str, optional): ``None`` (reference: the plain
            mean over images) or ``'balanced'`` (each target present in the
            batch weighted by the inverse of its count, as scikit-learn's
            ``class_weight='balanced'``). Defaults to None.
        complexity_weight (float): Weight of the squared MAdds term.
            Defaults to 0.5 (reference).
        madds_unit (float): MAdds unit of that term. Defaults to 1e9 (GMac).
        tau (float): Gumbel-softmax temperature. Defaults to 1.0.
        routing_mode (str): Inference path. Defaults to ``'bucket'``.
        stage1_checkpoint (str, optional): Stage I checkpoint to start from,
            loaded by ``init_weights``; every key but the slimming head must
            match. Defaults to None.
        mask_position (str): Where the task loss's mask path zeroes
            channels: ``'after_act'`` or ``'before_act'`` (the reference's,
            for a CNN backbone). Defaults to ``'after_act'``.
        gate_loss_input (str): What the SGS loss reads: ``'logits'`` or
            ``'gumbel_probs'`` (the reference's). Defaults to ``'logits'``.
        keep_stage1_head (bool): Start the slimming head from the one in
            ``stage1_checkpoint`` (which must hold it, with this window's
            shape) instead of its init. Defaults to False.
        **kwargs: Passed to ``ImageClassifier``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 sgs_rule: str = 'smallest',
                 gate_label_smooth: float = 0.1,
                 sgs_class_weight: Optional[str] = None,
                 complexity_weight: float = 0.5,
                 madds_unit: float = 1e9,
                 tau: float = 1.0,
                 routing_mode: str = 'bucket',
                 stage1_checkpoint: Optional[str] = None,
                 mask_position: str = 'after_act',
                 gate_loss_input: str = 'logits',
                 keep_stage1_head: bool = False,
                 **kwargs) -> None:
        check_type('backbone', backbone, (dict, nn.Module),
                   'a backbone config dict')
        check_choice('sgs_rule', sgs_rule, SGS_RULES)
        check_routing(routing_mode, tau, mask_position)
        check_choice('gate_loss_input', gate_loss_input, GATE_LOSS_INPUTS)
        check_bool('keep_stage1_head', keep_stage1_head)
        check_choice('sgs_class_weight', sgs_class_weight, SGS_CLASS_WEIGHTS)
        check_float('gate_label_smooth', gate_label_smooth, 0, 1,
                    high_open=True)
        check_float('complexity_weight', complexity_weight, 0)
        check_float('madds_unit', madds_unit, 0, low_open=True)
        check_type('stage1_checkpoint', stage1_checkpoint, (type(None), str),
                   'None or a checkpoint path')
        super().__init__(backbone, neck=neck, head=head, **kwargs)
        self._init_routing(routing_mode, tau, mask_position)
        self.gate_loss_input = gate_loss_input
        self.keep_stage1_head = keep_stage1_head
        self.sgs_rule = sgs_rule
        self.gate_label_smooth = gate_label_smooth
        self.sgs_class_weight = sgs_class_weight
        self.complexity_weight = complexity_weight
        self.madds_unit = madds_unit
        self.stage1_checkpoint = stage1_checkpoint
        self._freeze_but_gate()

    # --- routing (the paths: GatedRoutingMixin) ---------------------
    def _logits(self, early: List[torch.Tensor], late: List[torch.Tensor]):
        feats = tuple(early + late)
        if self.with_neck:
            feats = self.neck(feats)
        return self.head(feats)

    def _run_window(self, h, early, spec: SubnetSpec) -> torch.Tensor:
        """Class logits of window member ``spec`` from the features after
        the gate (in the inference cache: its static network's part)."""
        static = self.backbone.cached_static(h, spec)
        if static is not None:
            return static.post_gate(h)
        return self._logits(early, self.backbone.forward_post_gate(h, spec))

    def _pre_gate(
        self, inputs: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """``backbone.forward_pre_gate`` (in the inference cache: the static
        network's part, which has no earlier outputs)."""
        static = self.backbone.cached_static(inputs, self.window[0])
        if static is not None:
            return (*static.pre_gate(inputs), [])
        return self.backbone.forward_pre_gate(inputs)

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        if self._routing_off:
            return super().predict(inputs, data_samples, **kwargs)
        logits, _, choice = self.forward_dynamic(inputs)
        samples = self.head._get_predictions(logits, data_samples)
        madds = self.window_madds(inputs.shape[1:])
        for sample, k in zip(samples, choice.tolist()):
            sample.set_field(self.window[k].position, 'routed_subnet',
                             field_type='metainfo')
            sample.set_field(madds[k], 'routed_madds', field_type='metainfo')
        return samples

    # --- Stage II --------------------------------------------------------
    @torch.no_grad()
    def sgs_targets(self, h: torch.Tensor, early: List[torch.Tensor],
                    labels: torch.Tensor) -> torch.Tensor:
        """Online gate targets: narrowest for easy images, widest for hard.

        With ``sgs_rule='smallest_widest'`` a hard image that the widest
        sub-network of the window also misclassifies gets -100 (ignored).
        With ``'narrowest_correct'`` the target is the narrowest window
        member that classifies the image correctly (-100 where none does).
        """
        last = len(self.window) - 1
        if self.sgs_rule == 'narrowest_correct':
            return self._narrowest_correct(h, early, labels)
        easy = self._run_window(h, early,
                                self.window[0]).argmax(-1) == labels
        target = torch.where(easy, 0, last)
        if self.sgs_rule == 'smallest_widest':
            widest_ok = self._run_window(
                h, early, self.window[-1]).argmax(-1) == labels
            target = torch.where(easy | widest_ok, target, -100)
        return target

    def _narrowest_correct(self, h: torch.Tensor, early: List[torch.Tensor],
                           labels: torch.Tensor) -> torch.Tensor:
        """The narrowest window position classifying each image correctly
        (-100 where none does). Each member runs only on the images every
        narrower one got wrong (a few, past the first): the frozen network
        in eval mode treats each image alone, so the targets are those of
        running every member on the whole batch."""
        target = torch.full_like(labels, -100)
        pending = torch.arange(len(labels), device=labels.device)
        for k, spec in enumerate(self.window):
            if not len(pending):
                break
            logits = self._run_window(h[pending],
                                      [e[pending] for e in early], spec)
            right = logits.argmax(-1) == labels[pending]
            target[pending[right]] = k
            pending = pending[~right]
        return target

    def sgs_loss(self, scores: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        """The SGS loss (:func:`~dsnet_mm.models.routing.sgs_cross_entropy`)
        at this model's label smoothing and class weighting, of ``scores``:
        the gate logits, or with ``gate_loss_input='gumbel_probs'`` the
        soft Gumbel-softmax sample (taken as logits: a second softmax)."""
        return sgs_cross_entropy(scores, target, self.gate_label_smooth,
                                 self.sgs_class_weight)

    extra_modes = ('sgs', )

    def _forward_sgs(self, inputs: torch.Tensor,
                     data_samples: List[DataSample]):
        """``forward(mode='sgs')``: the Stage II forward for the labels of
        ``data_samples``: class logits of the routed model (mask path at
        ``mask_position``, straight-through Gumbel), what the SGS loss reads
        (the gate logits, or the soft Gumbel sample, see
        ``gate_loss_input``), routing weights and SGS targets."""
        labels = torch.cat([s.gt_label for s in data_samples]).to(
            inputs.device)
        h, gate_logits, early = self.backbone.forward_pre_gate(inputs)
        target = self.sgs_targets(h, early, labels)
        weights, probs = gumbel_route(gate_logits, self.tau)
        logits = self._run_window(
            h, early, MaskedRouting(self.window, weights, self.mask_position))
        scores = probs if self.gate_loss_input == 'gumbel_probs' \
            else gate_logits
        return logits, scores, weights, target

    def train_step(self,
                   data: dict,
                   optim_wrapper: OptimWrapper,
                   forward: Optional[Callable] = None
                   ) -> Dict[str, torch.Tensor]:
        """One SGS step: only the gate's slimming head is updated.

        ``forward`` runs the Stage II forward: the DDP wrapper in distributed
        training (default: the model itself).
        """
        forward = self if forward is None else forward
        data = self.data_preprocessor(data, True)
        inputs, data_samples = data['inputs'], data['data_samples']
        with optim_wrapper.optim_context(self):
            logits, scores, weights, target = forward(
                inputs, data_samples, mode='sgs')
            losses = dict(loss_task=self.head._get_loss(
                logits, data_samples)['loss'])
            if (target >= 0).any():
                losses['loss_gate'] = self.sgs_loss(scores, target)
            return self._update_gate(optim_wrapper, losses, weights, target,
                                     inputs.shape[1:],
                                     self.complexity_weight, self.madds_unit)
