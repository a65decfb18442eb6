# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Stage II: gate training with sandwich gate sparsification, and dynamic
inference that routes every image to its own sub-network."""
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.optim import OptimWrapper
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from dsnet_mm.ops.utils import check_choice, check_float, check_type
from ..gates import DSGate
from ..routing import (MaskedRouting, budget_penalty, penalized_choice,
                       route_weights)
from ..subnet import SubnetSpec
from .stage1_loading import load_stage1_weights

ROUTING_MODES = ('slice', 'bucket', 'mask')
SGS_RULES = ('smallest', 'smallest_widest')
SGS_CLASS_WEIGHTS = (None, 'balanced')


@MODELS.register_module()
class DSGateClassifier(ImageClassifier):
    """A DS classifier whose gate picks the sub-network of each image.

    **Stage II training (SGS).** The supernet and its BN statistics are frozen
    (every parameter but the gate's slimming head has ``requires_grad=False``
    and every module stays in eval mode); only the slimming head learns, from:

    - the SGS loss: cross-entropy of the gate *logits* against online targets.
      With ``sgs_rule='smallest'`` (the reference code), an image that the
      window's narrowest sub-network classifies correctly is easy (target:
      narrowest), any other is hard (target: widest of the window). With
      ``'smallest_widest'``, hard images that even the widest gets wrong are
      ignored. With ``sgs_class_weight='balanced'`` every target present in
      the batch weighs the same in that loss (the mean over targets of each
      target's mean loss), so a rare hard target is not drowned by easy ones;
    - the task loss of the routed model, run on the mask path with a
      straight-through Gumbel-softmax so it reaches the gate;
    - ``complexity_weight * (mean routed MAdds / madds_unit) ** 2``.

    **Inference.** ``predict`` routes by the argmax of the gate (no noise) and
    runs ``routing_mode``: ``'bucket'`` (default: group the batch by chosen
    sub-network, run each group sliced), ``'slice'`` (one image at a time) or
    ``'mask'`` (widest width with channel masks). Each data sample gets
    ``routed_subnet`` (index in the sub-network list) and ``routed_madds``.
    Within :meth:`static_predict` the active static sub-network runs instead.
    Within the model's :func:`~dsnet_mm.ops.inference_cache` the part before
    the gate and each bucket's part after it run as the window members'
    static networks cut at the gate (built once from the same folded
    weights: the parts :func:`~dsnet_mm.deploy.export_dynamic` exports).

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
        sgs_rule (str): ``'smallest'`` or ``'smallest_widest'``.
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
                 **kwargs) -> None:
        check_type('backbone', backbone, (dict, nn.Module),
                   'a backbone config dict')
        check_choice('sgs_rule', sgs_rule, SGS_RULES)
        check_choice('routing_mode', routing_mode, ROUTING_MODES)
        check_choice('sgs_class_weight', sgs_class_weight, SGS_CLASS_WEIGHTS)
        check_float('gate_label_smooth', gate_label_smooth, 0, 1,
                    high_open=True)
        check_float('complexity_weight', complexity_weight, 0)
        check_float('madds_unit', madds_unit, 0, low_open=True)
        check_float('tau', tau, 0, low_open=True)
        check_type('stage1_checkpoint', stage1_checkpoint, (type(None), str),
                   'None or a checkpoint path')
        super().__init__(backbone, neck=neck, head=head, **kwargs)
        if getattr(self.backbone, 'gate_stage', None) is None:
            raise ValueError(
                'DSGateClassifier needs a DS backbone with a gate: set '
                "backbone.gate=dict(stage=..., window=(start, size))")
        gates = [n for n, m in self.backbone.named_modules()
                 if isinstance(m, DSGate)]
        if len(gates) != 1:
            raise ValueError(f'the backbone must hold exactly one DSGate, '
                             f'found {len(gates)}: {gates}')
        self._gate_name = gates[0]
        self.sgs_rule = sgs_rule
        self.gate_label_smooth = gate_label_smooth
        self.sgs_class_weight = sgs_class_weight
        self.complexity_weight = complexity_weight
        self.madds_unit = madds_unit
        self.tau = tau
        self.routing_mode = routing_mode
        self.stage1_checkpoint = stage1_checkpoint
        self._static_predict = False
        self._window_madds: Dict[Tuple[int, ...], List[int]] = {}
        # float64: the penalty is fitted to sit between two routings
        self.register_buffer('cost_penalty',
                             torch.zeros((), dtype=torch.float64))
        for name, p in self.named_parameters():
            p.requires_grad = name.startswith(self.gate_prefix)

    @property
    def window(self) -> List[SubnetSpec]:
        return self.backbone.window

    @property
    def gate(self) -> DSGate:
        return self.backbone.get_submodule(self._gate_name)

    @property
    def gate_prefix(self) -> str:
        return f'backbone.{self._gate_name}.slim_head.'

    def init_weights(self) -> None:
        super().init_weights()
        if self.stage1_checkpoint is not None:
            load_stage1_weights(self, self.stage1_checkpoint,
                                new_prefixes=(self.gate_prefix,
                                              'cost_penalty'))

    def train(self, mode: bool = True) -> 'DSGateClassifier':
        """Only the flag changes: the frozen supernet stays in eval mode."""
        super().train(mode)
        for child in self.children():
            child.eval()
        return self

    # --- routing -------------------------------------------------------
    def window_madds(self, shape) -> List[int]:
        """MAdds per image of each sub-network of the window at image shape
        ``(C, H, W)`` (cached per shape)."""
        shape = tuple(shape)
        if shape not in self._window_madds:
            from dsnet_mm.analysis import subnet_complexity
            with self.static_predict():
                rows = subnet_complexity(self, self.window, shape)
            # the gate reads the features entering the gated block
            param = next(self.parameters())
            with torch.no_grad():
                h = self.backbone.forward_pre_gate(
                    param.new_zeros(1, *shape))[0]
            gate_cost = self.gate.head_madds(
                self.backbone.gate_input_width(h))
            self._window_madds[shape] = [r['madds'] + gate_cost for r in rows]
        return self._window_madds[shape]

    def relative_costs(self, shape) -> torch.Tensor:
        """``[window]``: each window member's MAdds over the widest's."""
        madds = torch.tensor(self.window_madds(shape), dtype=torch.float64)
        return madds / madds[-1]

    def route(self, gate_logits: torch.Tensor, shape) -> torch.Tensor:
        """The window position of each image at inference: the argmax of
        the gate logits less the budget's cost penalty."""
        if not self.cost_penalty:
            return gate_logits.argmax(-1)
        return penalized_choice(gate_logits, self.relative_costs(shape),
                                float(self.cost_penalty))

    def fit_budget(self, gate_logits: torch.Tensor, shape,
                   budget: float) -> float:
        """Set ``cost_penalty`` so that routing these gate logits (of
        images of ``shape``) spends ``budget`` times the window's widest
        MAdds on average (see :func:`~dsnet_mm.models.routing.
        budget_penalty`); returns the mean relative MAdds reached."""
        costs = self.relative_costs(shape)
        self.cost_penalty.fill_(budget_penalty(gate_logits, costs, budget))
        return float(costs[self.route(gate_logits, shape)].mean())

    def _logits(self, early: List[torch.Tensor], late: List[torch.Tensor]):
        feats = tuple(early + late)
        if self.with_neck:
            feats = self.neck(feats)
        return self.head(feats)

    def _run_window(self, h, early, spec: SubnetSpec) -> torch.Tensor:
        """Class logits of window member ``spec`` from the features after
        the gate (in the inference cache: its static network's part)."""
        plain = self.backbone.plain_subnet(h, spec)
        if plain is not None:
            return plain.post_gate(h)
        return self._logits(early, self.backbone.forward_post_gate(h, spec))

    def _pre_gate(
        self, inputs: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """``backbone.forward_pre_gate`` (in the inference cache: the static
        network's part, which has no earlier outputs)."""
        plain = self.backbone.plain_subnet(inputs, self.window[0])
        if plain is not None:
            return (*plain.pre_gate(inputs), [])
        return self.backbone.forward_pre_gate(inputs)

    def _check_routes(self, routes: torch.Tensor, n: int) -> torch.Tensor:
        """``routes`` if it is a long tensor of ``n`` window positions."""
        last = len(self.window) - 1
        ok = isinstance(routes, torch.Tensor) and \
            routes.shape == (n, ) and routes.dtype == torch.long
        if ok and n:
            ok = 0 <= int(routes.min()) and int(routes.max()) <= last
        if not ok:
            what = f'shape {list(routes.shape)} of {routes.dtype}' \
                if isinstance(routes, torch.Tensor) else repr(routes)
            raise ValueError(
                f'routes must be a long tensor of {n} window positions in '
                f'0..{last} (not sub-network indices), got {what}')
        return routes

    def forward_dynamic(
        self,
        inputs: torch.Tensor,
        mode: Optional[str] = None,
        routes: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Classify each image with its routed sub-network.

        Args:
            inputs (torch.Tensor): Images ``[B, C, H, W]``.
            mode (str, optional): :data:`ROUTING_MODES` member. Defaults to
                ``routing_mode``.
            routes (torch.Tensor, optional): ``[B]`` window positions that
                replace the gate's choice (e.g. a fixed routing mix for
                benchmarking). Defaults to None (the gate routes).

        Returns:
            tuple: class logits ``[B, num_classes]``, gate logits
            ``[B, window]`` and the chosen window position of each image.
        """
        mode = self.routing_mode if mode is None else mode
        check_choice('mode', mode, ROUTING_MODES)
        h, gate_logits, early = self._pre_gate(inputs)
        if routes is None:
            choice = self.route(gate_logits, inputs.shape[1:])
        else:
            choice = self._check_routes(routes, inputs.shape[0]).to(
                gate_logits.device)
        if mode == 'mask':
            # in training a Gumbel sample, so that gradients reach the gate
            weights = route_weights(gate_logits, self.tau) \
                if self.training and routes is None else F.one_hot(
                    choice, len(self.window)).to(gate_logits)
            routing = MaskedRouting(self.window, weights)
            logits = self._run_window(h, early, routing)
            return logits, gate_logits, weights.argmax(-1)
        if mode == 'slice':
            logits = torch.cat([
                self._run_window(h[b:b + 1], [e[b:b + 1] for e in early],
                                 self.window[int(choice[b])])
                for b in range(h.shape[0])
            ])
            return logits, gate_logits, choice
        logits = None
        for k in choice.unique().tolist():
            sel = (choice == k).nonzero().flatten()
            out = self._run_window(h[sel], [e[sel] for e in early],
                                   self.window[k])
            if logits is None:
                logits = out.new_empty(h.shape[0], out.shape[1])
            logits[sel] = out
        return logits, gate_logits, choice

    @contextmanager
    def static_predict(self) -> Iterator[None]:
        """``predict`` runs the backbone's active sub-network in the block."""
        previous = self._static_predict
        self._static_predict = True
        try:
            yield
        finally:
            self._static_predict = previous

    def predict(self,
                inputs: torch.Tensor,
                data_samples: Optional[List[DataSample]] = None,
                **kwargs) -> List[DataSample]:
        if self._static_predict:
            return super().predict(inputs, data_samples, **kwargs)
        logits, _, choice = self.forward_dynamic(inputs)
        samples = self.head._get_predictions(logits, data_samples)
        madds = self.window_madds(inputs.shape[1:])
        for sample, k in zip(samples, choice.tolist()):
            sample.set_field(self.window[k].index, 'routed_subnet',
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
        """
        last = len(self.window) - 1
        easy = self._run_window(h, early,
                                self.window[0]).argmax(-1) == labels
        target = torch.where(easy, 0, last)
        if self.sgs_rule == 'smallest_widest':
            widest_ok = self._run_window(
                h, early, self.window[-1]).argmax(-1) == labels
            target = torch.where(easy | widest_ok, target, -100)
        return target

    def sgs_loss(self, gate_logits: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy of the gate logits against the SGS
        targets (-100: ignored), averaged as ``sgs_class_weight`` says."""
        loss = F.cross_entropy(gate_logits, target, ignore_index=-100,
                               reduction='none',
                               label_smoothing=self.gate_label_smooth)
        valid = target >= 0
        if self.sgs_class_weight is None:
            return loss[valid].mean()
        # w_i = n / (present targets * n_{t_i}): each target's mean loss,
        # averaged over the targets present in the batch
        count = torch.bincount(target[valid], minlength=gate_logits.shape[1])
        weight = valid.float() / count[target.clamp(min=0)].clamp(min=1)
        return (weight * loss).sum() / (count > 0).sum()

    def forward(self, inputs: torch.Tensor, data_samples=None,
                mode: str = 'tensor', **kwargs):
        """``mode='sgs'`` runs the Stage II forward for ``labels``: class
        logits of the routed model (mask path, straight-through Gumbel), gate
        logits, routing weights and SGS targets. The other modes are
        mmpretrain's. Stage II calls it through the DDP wrapper when there is
        one, so the gate's gradients are reduced."""
        if mode != 'sgs':
            return super().forward(inputs, data_samples, mode)
        h, gate_logits, early = self.backbone.forward_pre_gate(inputs)
        target = self.sgs_targets(h, early, kwargs['labels'])
        weights = route_weights(gate_logits, self.tau)
        logits = self._run_window(h, early, MaskedRouting(self.window, weights))
        return logits, gate_logits, weights, target

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
        labels = torch.cat([s.gt_label for s in data_samples]).to(
            inputs.device)
        madds = inputs.new_tensor(self.window_madds(inputs.shape[1:]))
        with optim_wrapper.optim_context(self):
            logits, gate_logits, weights, target = forward(
                inputs, mode='sgs', labels=labels)
            losses = dict(loss_task=self.head._get_loss(
                logits, data_samples)['loss'])
            if (target >= 0).any():
                losses['loss_gate'] = self.sgs_loss(gate_logits, target)
            mean_madds = (weights @ madds).mean()
            losses['loss_complexity'] = self.complexity_weight * (
                mean_madds / self.madds_unit)**2
            loss, log_vars = self.parse_losses(losses)
            if not torch.isfinite(loss):
                window = ', '.join(s.name for s in self.window)
                raise FloatingPointError(
                    f'Stage II loss is {loss.item()} '
                    f'({ {k: float(v) for k, v in losses.items()} }) in the '
                    f'routed model over {window}; nothing was updated and '
                    'the last checkpoint is untouched')
            optim_wrapper.update_params(loss)
        log_vars['mean_madds'] = mean_madds.detach()
        log_vars['easy_ratio'] = (target == 0).float().mean()
        return log_vars
