# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The DS detector: a single-stage mmdet detector over a DS backbone, trained
by the sandwich rule."""
from collections import OrderedDict
from contextlib import contextmanager
from typing import (Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple, Union)

import torch
from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS
from mmengine.optim import OptimWrapper

from dsnet_mm.ops import zero_pad_channels
from dsnet_mm.ops.utils import check_type
from ..classifiers.ds_image_classifier import (check_finite_loss,
                                               check_sandwich_sampling,
                                               sample_random_subnets)
from ..subnet import SubnetSpec

SubnetKey = Union[int, str, SubnetSpec]


def _float32_outputs(module: torch.nn.Module, args, outputs):
    """A forward hook: the module's bfloat16 / float16 outputs (tensors in
    nested tuples and lists) in float32, the others unchanged."""
    if isinstance(outputs, torch.Tensor):
        low = outputs.dtype in (torch.bfloat16, torch.float16)
        return outputs.float() if low else outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(_float32_outputs(module, args, o)
                             for o in outputs)
    return outputs


def pad_to(feats: Sequence[torch.Tensor],
           widths: Sequence[int]) -> Tuple[torch.Tensor, ...]:
    """Zero-pad each feature map's channels up to ``widths``.

    A neck and head built for the widest widths then read a narrower
    sub-network's features. For a consumer whose first layer is a plain conv
    (an FPN lateral 1x1, RetinaNet's ``'on_input'`` P6 conv, SSDNeck's first
    extra 1x1, a non-depthwise SSDHead conv) this is exactly the conv with its
    input weights sliced to the narrower width, ``w[:, :c]``: the padded
    channels multiply weights that slicing would drop. It is not exact for a
    depthwise conv followed by BN (SSDLite's ``use_depthwise=True`` head),
    which turns a zero channel into a constant.

    A padded map remembers its width (:func:`~dsnet_mm.ops.used_channels`):
    the MAdds counter counts a plain conv reading it at that width, as the
    sliced conv it equals.

    Args:
        feats (Sequence[torch.Tensor]): ``[N, C_i, H_i, W_i]`` maps.
        widths (Sequence[int]): The channel count each must reach.

    Raises:
        ValueError: a feature map wider than its width.
    """
    if len(feats) != len(widths):
        raise ValueError(f'{len(feats)} feature maps for {len(widths)} '
                         f'widths {tuple(widths)}')
    padded = []
    for i, (x, width) in enumerate(zip(feats, widths)):
        channels = x.shape[1]
        if channels > width:
            raise ValueError(
                f'feature map {i} has {channels} channels, more than the '
                f'{width} its consumer reads')
        padded.append(zero_pad_channels(x, width))
    return tuple(padded)


@MODELS.register_module()
class DSSingleStageDetector(SingleStageDetector):
    """An mmdet single-stage detector (SSD, RetinaNet) over a DS backbone,
    trained by the sandwich rule.

    The neck and head are static and built for the widest widths: the
    backbone's outputs at the largest architecture
    (``backbone.out_widths``). A narrower sub-network's outputs are
    zero-padded to those widths (:func:`pad_to`), which for a plain-conv
    consumer equals slicing its input weights.

    One ``train_step`` runs, on the same batch, the largest architecture,
    ``num_random`` random sub-networks and the smallest (DS-Net's sandwich
    rule; the random ones drawn as the classifier draws them, by
    ``sample_random_subnets`` of
    :mod:`dsnet_mm.models.classifiers.ds_image_classifier`),
    back-propagates each one's detection losses as soon as they are
    computed (the gradients of their sum accumulate) and makes a single
    optimizer step, as the slimmable-networks detection port does. Every
    width learns from the ground truth: detection has no soft target of the
    in-place bootstrapping kind here.

    For testing, the backbone's active sub-network is the one that runs
    (:meth:`subnet`, :meth:`set_subnet`, or the backbone's own; the largest
    by default): mmdet's ``val_step``/``test_step`` run it unchanged.

    Under autocast (mixed precision) the head's outputs are taken to
    float32 (a forward hook): its losses, box decoding and NMS are computed
    from float32 scores and box deltas.

    Under distributed training use the project's wrapper,
    ``model_wrapper_cfg=dict(type='DSDistributedDataParallel',
    find_unused_parameters=True)``: mmengine's runs one plain forward.

    Args:
        backbone (dict): A DS backbone config, e.g.
            ``dict(type='mmpretrain.DSMobileNetV1', out_indices=(2, 3, 4))``.
        neck (dict, optional): Neck config; its ``in_channels`` must be the
            backbone's ``out_widths``. Defaults to None.
        bbox_head (dict): Head config (its ``in_channels`` must be those
            widths when there is no neck).
        train_cfg (dict, optional): mmdet's train config of the head.
        test_cfg (dict, optional): mmdet's test config of the head.
        data_preprocessor (dict, optional): ``DetDataPreprocessor`` config.
        num_random (int): Random sub-networks per step. Defaults to 2.
        seed (int): Seed of the sub-network sampler. Defaults to 0.
        sampling (str): ``'list'`` or ``'usnet'`` (see
            :class:`~dsnet_mm.models.classifiers.DSImageClassifier`).
            Defaults to ``'list'``.
        usnet_divisor (int): Width multiple of the ``'usnet'`` widths.
            Defaults to 1.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 bbox_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 num_random: int = 2,
                 seed: int = 0,
                 sampling: str = 'list',
                 usnet_divisor: int = 1,
                 init_cfg: Optional[dict] = None) -> None:
        check_type('backbone', backbone, dict, 'a backbone config dict')
        check_type('bbox_head', bbox_head, dict, 'a head config dict')
        check_sandwich_sampling(num_random, seed, sampling, usnet_divisor)
        super().__init__(backbone, neck=neck, bbox_head=bbox_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if not hasattr(self.backbone, 'space'):
            raise ValueError(
                f'{type(self.backbone).__name__} is not a DS backbone: '
                'DSSingleStageDetector needs a backbone with a sub-network '
                "space (e.g. type='mmpretrain.DSMobileNetV1')")
        self._check_consumer(backbone, neck, bbox_head)
        if not hasattr(self.bbox_head, 'loss_cls'):
            # mmdet 3.3.0's BaseDenseHead._predict_by_feat_single reads
            # self.loss_cls, which SSDHead never sets, so SSD cannot predict
            # (open-mmlab/mmdetection#11063, #11780; fix PR #11524 unmerged):
            # None makes that check false, as the head's own loss intends
            self.bbox_head.loss_cls = None
        self.bbox_head.register_forward_hook(_float32_outputs)
        self.num_random = num_random
        self.seed = seed
        self.sampling = sampling
        self.usnet_divisor = usnet_divisor
        self.register_buffer('sandwich_iter',
                             torch.zeros((), dtype=torch.long))

    def _check_consumer(self, backbone: dict, neck: Optional[dict],
                        bbox_head: dict) -> None:
        """The first module reading the backbone must be built for its
        widest output widths, one per ``out_indices`` entry."""
        widths = tuple(self.backbone.out_widths)
        field, cfg = ('neck', neck) if neck is not None \
            else ('bbox_head', bbox_head)
        in_channels = cfg.get('in_channels')
        if in_channels is None:
            return
        if isinstance(in_channels, int) and not isinstance(in_channels, bool):
            # a head whose every level has one width
            got = (in_channels, ) * len(widths)
        else:
            got = tuple(in_channels)
        if got != widths:
            raise ValueError(
                f'model.{field}.in_channels={in_channels!r} does not match '
                f'the backbone: {type(self.backbone).__name__} with '
                f'model.backbone.out_indices='
                f"{backbone.get('out_indices', '(default)')!r} "
                f'(stages {self.backbone.out_indices}) gives {len(widths)} '
                f'feature maps whose widest widths are {widths}. Set '
                f'model.{field}.in_channels to {list(widths)} (the largest '
                'architecture\'s; narrower sub-networks are zero-padded to '
                'it) or choose out_indices for the neck')

    @property
    def space(self):
        return self.backbone.space

    # --- the sub-network that runs --------------------------------------
    @property
    def active_subnet(self) -> SubnetSpec:
        return self.backbone.active_subnet

    def set_subnet(self, key: SubnetKey) -> SubnetSpec:
        """Make a sub-network (index, name or spec) the one that runs."""
        return self.backbone.set_subnet(key)

    @contextmanager
    def subnet(self, key: SubnetKey) -> Iterator[SubnetSpec]:
        """Run the block with a sub-network active, then restore the old."""
        with self.backbone.subnet(key) as spec:
            yield spec

    def extract_feat(self, batch_inputs: torch.Tensor
                     ) -> Tuple[torch.Tensor, ...]:
        """Backbone at the active sub-network, its outputs zero-padded to
        the widest widths, then the neck."""
        x = pad_to(self.backbone(batch_inputs), self.backbone.out_widths)
        if self.with_neck:
            x = self.neck(x)
        return x

    def forward(self,
                inputs: torch.Tensor,
                data_samples=None,
                mode: str = 'tensor',
                spec: Optional[SubnetSpec] = None):
        """mmdet's modes, at sub-network ``spec`` if given (else the active
        one). The sandwich step calls its forwards through this method, so
        that under DDP they run through the wrapper and gradients are
        reduced."""
        if spec is None:
            return super().forward(inputs, data_samples, mode)
        with self.backbone.subnet(spec):
            return super().forward(inputs, data_samples, mode)

    # --- training -------------------------------------------------------
    def sample_random_subnets(self) -> List[SubnetSpec]:
        """The random sub-networks of the current iteration."""
        return sample_random_subnets(self.space, self.num_random, self.seed,
                                     int(self.sandwich_iter), self.sampling,
                                     self.usnet_divisor)

    def sandwich(self) -> List[Tuple[str, SubnetSpec]]:
        """(name, sub-network) of every member of the current iteration:
        ``largest``, ``random0``.., ``smallest``."""
        return [('largest', self.space.largest)] + [
            (f'random{i}', s)
            for i, s in enumerate(self.sample_random_subnets())
        ] + [('smallest', self.space.smallest)]

    def _check_finite(self, loss: torch.Tensor, spec: SubnetSpec) -> None:
        check_finite_loss(loss, int(self.sandwich_iter), spec,
                          'the annotations')

    def train_step(self,
                   data: dict,
                   optim_wrapper: OptimWrapper,
                   forward: Optional[Callable] = None
                   ) -> Dict[str, torch.Tensor]:
        """One sandwich iteration: several sub-networks, one optimizer step.

        Args:
            data (dict): A batch from the dataloader.
            optim_wrapper (OptimWrapper): The optimizer wrapper.
            forward (Callable, optional): What runs the forwards: the DDP
                wrapper in distributed training. Defaults to the model.

        Returns:
            dict: ``loss`` (the sum that was back-propagated), each loss
            component summed over the members (``loss_cls``, ...), each
            member's total (``loss_largest``, ``loss_random0``, ...,
            ``loss_smallest``) and the random members' indices
            (``subnet_random0``, ...).
        """
        forward = self if forward is None else forward
        data = self.data_preprocessor(data, True)
        members = self.sandwich()
        total = 0.
        components: Dict[str, torch.Tensor] = OrderedDict()
        totals: Dict[str, torch.Tensor] = OrderedDict()
        with optim_wrapper.optim_context(self):
            for kind, spec in members:
                losses = forward(data['inputs'], data['data_samples'],
                                 mode='loss', spec=spec)
                loss, log_vars = self.parse_losses(losses)
                self._check_finite(loss, spec)
                optim_wrapper.backward(loss)
                loss = loss.detach()
                total = total + loss
                totals[f'loss_{kind}'] = loss
                for name, value in log_vars.items():
                    if name != 'loss':
                        components[name] = components.get(name, 0.) + \
                            value.detach()
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        self.sandwich_iter += 1
        outputs = OrderedDict(loss=total)
        outputs.update(components)
        outputs.update(totals)
        for kind, spec in members:
            if kind.startswith('random'):
                outputs[f'subnet_{kind}'] = torch.tensor(float(spec.index))
        return outputs
