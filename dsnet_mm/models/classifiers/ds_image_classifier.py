# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The DS classifier: Stage I supernet training by the sandwich rule."""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS

from dsnet_mm.ops.utils import (check_choice, check_float, check_keys,
                                check_type)
from ..ema import LiveEMA
from ..mvco import (MVCO_MODES, cross_view_target, view_mean_target,
                    views_symmetric_kl)
from ..sandwich import (check_finite_loss, check_sandwich_sampling,
                        sample_random_subnets)
from ..run_state import SubnetRunMixin
from ..subnet import SubnetSpec

BOOTSTRAP_MODES = ('ib', 'ieb', 'inplace')
@MODELS.register_module()
class DSImageClassifier(SubnetRunMixin, ImageClassifier):
    """An ``ImageClassifier`` over a DS backbone, trained by the sandwich rule.

    One ``train_step`` runs, on the same batch, the largest architecture, ``N``
    random sub-networks (indices ``1..len-1``, as the reference draws them) and
    the smallest, back-propagates each loss as soon as it is computed
    (accumulating gradients) and makes a single optimizer step. The largest
    learns from the labels through the head's loss (with dropout before the
    classifier); every other width learns from a soft target (and, with
    ``student_label_weight``, from the labels too):

    - ``'ib'`` (in-place bootstrapping, the reference default): the softmax of
      an EMA copy of the model run as the largest, in eval mode;
    - ``'ieb'`` (in-place ensemble bootstrapping): as ``'ib'`` for the random
      widths; the smallest learns from the mean of the EMA teacher's softmax
      at the largest and at each sampled width. The teacher runs the *same*
      widths as the students (the reference code re-draws them, a bug);
    - ``'inplace'``: in-place distillation from the live largest (detached),
      as AutoSlim and US-Net do.

    The random sub-networks come from the list (``sampling='list'``), or,
    as the US-Net baseline of the progressive search (``'usnet'``), from
    one width ratio ``t ~ U(0, 1)`` applied to every group between the
    smallest and the widest sub-network (rounded to ``usnet_divisor``; see
    :meth:`~dsnet_mm.models.subnet.SubnetSpace.interpolate`): then the list
    only says where the supernet is evaluated. An off-list width updates the
    BN statistics row of the narrowest listed sub-network as wide; every
    row is recalibrated before evaluation anyway.

    **Multi-view consistency** (``mvco``, DS-Net++'s Stage I for DS-ViT;
    see :mod:`dsnet_mm.models.mvco` for its options): the batch holds ``V``
    augmented views of each image (mmpretrain's ``MultiView`` transform and
    :class:`~dsnet_mm.models.MultiViewClsDataPreprocessor`), the largest
    learns from the labels on every view and the other widths from a
    view-consistent soft target, built from the bootstrap mode's teacher
    (so IB, IEB and in-place combine with it).

    The EMA teacher is kept for every mode (it is what the reference evaluates
    and it costs one parameter copy) and updated after each optimizer step
    (:class:`~dsnet_mm.models.ema.LiveEMA`: it follows the model across
    ``.to(device)``, dtype changes, ``deepcopy`` and resume).
    The sampled indices come from a generator seeded by ``seed`` and the
    iteration counter (a buffer, so a resumed run draws the same widths and
    every rank of a distributed run draws alike).

    Args:
        backbone (dict): A DS backbone config (e.g. ``DSMobileNetV1``).
        neck (dict, optional): Neck config. Defaults to None.
        head (dict, optional): Head config, e.g. ``DSLinearClsHead``.
        bootstrap (str): ``'ib'``, ``'ieb'`` or ``'inplace'``.
            Defaults to ``'ib'``.
        num_random (int): Random sub-networks per step. Defaults to 2.
        ema_momentum (float): Teacher EMA momentum, ``1 - decay``
            (reference decay 0.997). Defaults to 0.003.
        largest_dropout (float): Dropout before the classifier, on the
            largest only. Defaults to 0.2.
        distill_loss (dict): Soft-target loss config.
            Defaults to ``dict(type='SoftTargetCrossEntropy')``.
        seed (int): Seed of the sub-network sampler. Defaults to 0.
        sampling (str): ``'list'`` or ``'usnet'``. Defaults to ``'list'``.
        usnet_divisor (int): Width multiple of the ``'usnet'`` widths.
            Defaults to 1.
        mvco (dict, optional): ``dict(mode='view_mean' | 'cross_view' |
            'largest_consistency', consistency_weight=1.0)`` (the weight of
            the last mode's sym-KL). Defaults to None (one view).
        student_label_weight (float | Sequence[float]): Weight of the
            head's loss on the labels added to every other width's
            soft-target loss (not in the paper, whose students learn from
            the teacher alone; OFA's sub-networks learn from both): one for
            every width, or one per sub-network of the list (an off-list
            ``'usnet'`` width takes the weight of its statistics row, the
            narrowest listed sub-network as wide). Defaults to 0.
        draw_largest (bool): With ``sampling='list'``, whether the random
            draws may take the list's widest when it equals the largest.
            Defaults to True.
        **kwargs: Passed to ``ImageClassifier``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 bootstrap: str = 'ib',
                 num_random: int = 2,
                 ema_momentum: float = 0.003,
                 largest_dropout: float = 0.2,
                 distill_loss: dict = dict(type='SoftTargetCrossEntropy'),
                 seed: int = 0,
                 sampling: str = 'list',
                 usnet_divisor: int = 1,
                 mvco: Optional[dict] = None,
                 student_label_weight: Union[float, Sequence[float]] = 0.0,
                 draw_largest: bool = True,
                 **kwargs) -> None:
        check_type('backbone', backbone, (dict, nn.Module),
                   'a backbone config dict')
        check_choice('bootstrap', bootstrap, BOOTSTRAP_MODES)
        check_sandwich_sampling(num_random, seed, sampling, usnet_divisor)
        check_float('ema_momentum', ema_momentum, 0, 1, low_open=True)
        check_float('largest_dropout', largest_dropout, 0, 1,
                    high_open=True)
        check_type('distill_loss', distill_loss, dict, 'a loss config dict')
        check_type('draw_largest', draw_largest, bool, 'a bool')
        super().__init__(backbone, neck=neck, head=head, **kwargs)
        if not hasattr(self.backbone, 'space'):
            raise ValueError(
                f'{type(self.backbone).__name__} is not a DS backbone: '
                'DSImageClassifier needs a backbone with a sub-network space '
                '(e.g. DSMobileNetV1)')
        self.mvco = self._check_mvco(mvco)
        self.student_label_weights = self._check_label_weights(
            student_label_weight)
        self.bootstrap = bootstrap
        self.num_random = num_random
        self.seed = seed
        self.sampling = sampling
        self.usnet_divisor = usnet_divisor
        self.draw_largest = draw_largest
        self.dropout = nn.Dropout(largest_dropout)
        self.distill_loss = MODELS.build(distill_loss)
        self.teacher = LiveEMA(self._student(), momentum=ema_momentum,
                               update_buffers=True)
        self.register_buffer('sandwich_iter', torch.zeros((), dtype=torch.long))
        self._register_load_state_dict_pre_hook(self._teacher_on_load)

    def start_teacher_from_student(self, state: dict,
                                   prefix: str = '') -> bool:
        """Give a checkpoint without the EMA teacher (a static network's,
        a Stage II student's) the teacher a new run starts with: a copy of
        the loaded student (the teacher's ``module.`` keys from the
        student's), at step 0, with the sampler's counter at 0. ``state`` is
        edited in place; a checkpoint holding any teacher key, or no key of
        the student, is left as it is. Returns whether it was filled."""
        teacher = prefix + 'teacher.'
        parts = tuple(f'{prefix}{p}.' for p in self._student())
        student = [k for k in state if k.startswith(parts)]
        if not student or any(k.startswith(teacher) for k in state):
            return False
        for key in student:
            state[f'{teacher}module.{key[len(prefix):]}'] = state[key]
        state[teacher + 'steps'] = torch.zeros_like(self.teacher.steps)
        state.setdefault(prefix + 'sandwich_iter',
                         torch.zeros_like(self.sandwich_iter))
        return True

    def _teacher_on_load(self, state_dict: dict, prefix: str, *args) -> None:
        if self.start_teacher_from_student(state_dict, prefix):
            print_log('the checkpoint holds no EMA teacher: the teacher '
                      'starts as a copy of the loaded student',
                      logger='current')

    @staticmethod
    def _check_mvco(mvco: Optional[dict]) -> Optional[dict]:
        if mvco is None:
            return None
        check_keys('mvco', mvco, optional=('mode', 'consistency_weight'))
        cfg = dict(dict(mode='view_mean', consistency_weight=1.0), **mvco)
        check_choice('mvco.mode', cfg['mode'], MVCO_MODES)
        check_float('mvco.consistency_weight', cfg['consistency_weight'], 0)
        return cfg

    def _views(self, inputs) -> List[torch.Tensor]:
        """The batch's views: one tensor, or ``V >= 2`` with ``mvco``."""
        views = list(inputs) if isinstance(inputs, (list, tuple)) \
            else [inputs]
        if self.mvco is None and len(views) > 1:
            raise ValueError(
                f'the batch holds {len(views)} views of each image but '
                'mvco is not set: set model.mvco=dict(mode=...) or drop '
                'the MultiView transform')
        if self.mvco is not None and len(views) < 2:
            raise ValueError(
                'mvco needs at least 2 views of each image: wrap the train '
                "pipeline's augmentations in dict(type='MultiView', "
                "num_views=2, transforms=[[...]]) and use "
                "data_preprocessor=dict(type='MultiViewClsDataPreprocessor')")
        return views

    def _student_input(self, member: int, views: List[torch.Tensor],
                       inputs: torch.Tensor, probs: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(input, soft target) of sandwich member ``member`` (0-based,
        after the largest) from the teacher's probabilities on ``inputs``,
        all the views in one batch."""
        num_views = len(views)
        if num_views == 1:
            return inputs, probs
        if self.mvco['mode'] == 'cross_view':
            view = member % num_views
            return views[view], cross_view_target(probs, num_views, view)
        return inputs, view_mean_target(probs, num_views)

    def _student(self) -> nn.ModuleDict:
        """The parts the teacher averages, under the names it stores."""
        parts = dict(backbone=self.backbone, head=self.head)
        if self.with_neck:
            parts['neck'] = self.neck
        return nn.ModuleDict(parts)

    def train(self, mode: bool = True) -> 'DSImageClassifier':
        super().train(mode)
        self.teacher.eval()  # the teacher always uses running statistics
        return self

    def _check_label_weights(self, weight) -> Tuple[float, ...]:
        """``student_label_weight`` as one weight per listed sub-network."""
        num = len(self.backbone.space)
        if not isinstance(weight, (list, tuple)):
            check_float('student_label_weight', weight, 0)
            return (float(weight), ) * num
        if len(weight) != num:
            raise ValueError(
                f'student_label_weight must be a number or hold one weight '
                f'per sub-network ({num}), got {len(weight)}: {weight!r}')
        for i, w in enumerate(weight):
            check_float(f'student_label_weight[{i}]', w, 0)
        return tuple(float(w) for w in weight)

    # --- sub-network sampling -------------------------------------------
    def sample_random_subnets(self) -> List[SubnetSpec]:
        """The random sub-networks of the current iteration."""
        return sample_random_subnets(self.space, self.num_random, self.seed,
                                     int(self.sandwich_iter), self.sampling,
                                     self.usnet_divisor, self.draw_largest)

    # --- forward helpers ------------------------------------------------
    extra_modes = ('dropout', )

    def _forward_dropout(self, inputs: torch.Tensor,
                         data_samples=None) -> torch.Tensor:
        """``forward(mode='dropout')``: the logits with ``largest_dropout``
        before the classifier (Stage I's largest member)."""
        feats = self.extract_feat(inputs)
        return self.head(tuple(self.dropout(f) for f in feats))

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor,
                       spec: SubnetSpec) -> torch.Tensor:
        """Logits of the EMA teacher run at ``spec``, in eval mode."""
        t = self.teacher.module
        with t.backbone.subnet(spec):
            feats = t.backbone(inputs)
        if 'neck' in t:
            feats = t.neck(feats)
        return t.head(feats)

    def _soft_targets(self, inputs: torch.Tensor,
                      largest_logits: torch.Tensor,
                      randoms: List[SubnetSpec]) -> Tuple[torch.Tensor, ...]:
        """(target of the random widths, target of the smallest): the
        teacher's probabilities on every image of ``inputs``."""
        if self.bootstrap == 'inplace':
            target = F.softmax(largest_logits.detach().float(), dim=-1)
            return target, target
        target = F.softmax(self.teacher_logits(
            inputs, self.space.largest).float(), dim=-1)
        if self.bootstrap == 'ib' or not randoms:
            return target, target
        ensemble = [target] + [
            F.softmax(self.teacher_logits(inputs, s).float(), dim=-1)
            for s in randoms
        ]
        return target, torch.stack(ensemble).mean(0)

    # --- training -------------------------------------------------------
    def _check_finite(self, loss: torch.Tensor, spec: SubnetSpec) -> None:
        check_finite_loss(loss, int(self.sandwich_iter), spec, 'the data')

    def train_step(self,
                   data: dict,
                   optim_wrapper: OptimWrapper,
                   forward: Optional[Callable] = None
                   ) -> Dict[str, torch.Tensor]:
        """One sandwich iteration: several sub-networks, one optimizer step.

        Args:
            data (dict): A batch from the dataloader.
            optim_wrapper (OptimWrapper): The optimizer wrapper.
            forward (Callable, optional): What runs the student forwards: the
                DDP wrapper in distributed training. Defaults to the model.
        """
        forward = self if forward is None else forward
        if int(self.teacher.steps) == 0:
            self.teacher.update_parameters(self._student())  # exact copy
        data = self.data_preprocessor(data, True)
        views = self._views(data['inputs'])
        inputs = torch.cat(views) if len(views) > 1 else views[0]
        data_samples = list(data['data_samples']) * len(views)
        randoms = self.sample_random_subnets()
        losses = {}
        with optim_wrapper.optim_context(self):
            largest = forward(inputs, mode='dropout',
                              spec=self.space.largest)
            loss = self.head._get_loss(largest, data_samples)['loss']
            if self.mvco and self.mvco['mode'] == 'largest_consistency':
                consistency = self.mvco['consistency_weight'] * \
                    views_symmetric_kl(largest, len(views))
                losses['loss_consistency'] = consistency.detach()
                loss = loss + consistency
            self._check_finite(loss, self.space.largest)
            optim_wrapper.backward(loss)
            losses['loss_largest'] = loss.detach()
            random_probs, smallest_probs = self._soft_targets(
                inputs, largest, randoms)
            students = [(f'random{i}', s, random_probs)
                        for i, s in enumerate(randoms)]
            students.append(('smallest', self.space.smallest,
                             smallest_probs))
            for member, (kind, spec, probs) in enumerate(students):
                x, target = self._student_input(member, views, inputs,
                                                probs)
                logits = forward(x, mode='tensor', spec=spec)
                loss = self.distill_loss(logits, target)
                label_weight = self.student_label_weights[spec.stats]
                if label_weight:
                    # x holds whole views, each labelled as data_samples
                    loss = loss + label_weight * self.head._get_loss(
                        logits, data_samples[:len(logits)])['loss']
                self._check_finite(loss, spec)
                optim_wrapper.backward(loss)
                losses[f'loss_{kind}'] = loss.detach()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        self.teacher.update_parameters(self._student())
        for i, s in enumerate(randoms):
            losses[f'subnet_random{i}'] = torch.tensor(float(s.stats))
        self.sandwich_iter += 1
        _, log_vars = self.parse_losses(losses)
        return log_vars
