# Copyright (c) dsnet_mm contributors. All rights reserved.
"""What every sandwich-trained DS detector shares: the zero-padding of a
sub-network's features to the widest widths, the sub-network that runs, and
the sandwich step."""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.optim import OptimWrapper

from dsnet_mm.ops import zero_pad_channels
from ..sandwich import check_finite_loss, sample_random_subnets
from ..run_state import SubnetRunMixin
from ..subnet import SubnetSpec

def float32_outputs(module: torch.nn.Module, args, outputs):
    """A forward hook: the module's bfloat16 / float16 outputs (tensors in
    nested tuples and lists) in float32, the others unchanged."""
    if isinstance(outputs, torch.Tensor):
        low = outputs.dtype in (torch.bfloat16, torch.float16)
        return outputs.float() if low else outputs
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(float32_outputs(module, args, o)
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


class SandwichDetectorMixin(SubnetRunMixin):
    """The sub-network interface and the sandwich step of an mmdet detector
    over a DS backbone; mixed in before mmdet's detector class
    (``SingleStageDetector``, ``TwoStageDetector``), whose ``loss``,
    ``predict`` and ``_forward`` read the features through
    :meth:`extract_feat`.

    **Features.** The neck (or the first head) is built for the widest
    widths, the backbone's outputs at the largest architecture
    (``backbone.out_widths``); :meth:`extract_feat` zero-pads a narrower
    sub-network's outputs to them (:func:`pad_to`), which for a plain-conv
    consumer equals slicing its input weights.

    **Testing.** The backbone's active sub-network is the one that runs
    (:meth:`subnet`, :meth:`set_subnet`, or the backbone's own; the largest
    by default): mmdet's ``val_step``/``test_step`` run it unchanged, and
    ``SubnetValLoop``/``SubnetTestLoop`` evaluate each sub-network by making
    it active.

    **Training.** :meth:`train_step` runs, on the same batch, the largest
    architecture, ``num_random`` random sub-networks and the smallest
    (DS-Net's sandwich rule; the random ones drawn as the classifier draws
    them, by ``sample_random_subnets`` of
    :mod:`dsnet_mm.models.classifiers.ds_image_classifier`), back-propagates
    each one's detection losses (the sum of everything the detector's
    ``loss`` returns) as soon as they are computed, so that the gradients of
    their sum accumulate, and makes a single optimizer step. Every width
    learns from the ground truth.

    The class using it calls :meth:`_check_ds_backbone` and
    :meth:`_init_sandwich` after mmdet's constructor has built the
    backbone.
    """

    # --- construction ---------------------------------------------------
    def _check_ds_backbone(self) -> None:
        """Refuse a backbone without a sub-network space."""
        if not hasattr(self.backbone, 'space'):
            name = type(self).__name__
            raise ValueError(
                f'{type(self.backbone).__name__} is not a DS backbone: '
                f'{name} needs a backbone with a sub-network space (e.g. '
                "type='mmpretrain.DSMobileNetV1' or 'mmpretrain.DSResNet')")

    def _check_consumer(self, backbone: dict, field: str,
                        cfg: dict) -> None:
        """The first module reading the backbone (config ``cfg`` of model
        field ``field``) must be built for its widest output widths, one
        per ``out_indices`` entry."""
        widths = tuple(self.backbone.out_widths)
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

    def _init_sandwich(self, num_random: int, seed: int, sampling: str,
                       usnet_divisor: int) -> None:
        """Keep the sampler's settings (checked by
        ``check_sandwich_sampling`` before the model is built) and the
        iteration counter (a buffer: a checkpoint resumes the draws)."""
        self.num_random = num_random
        self.seed = seed
        self.sampling = sampling
        self.usnet_divisor = usnet_divisor
        self.register_buffer('sandwich_iter',
                             torch.zeros((), dtype=torch.long))

    def extract_feat(self, batch_inputs: torch.Tensor
                     ) -> Tuple[torch.Tensor, ...]:
        """Backbone at the active sub-network, its outputs zero-padded to
        the widest widths, then the neck."""
        x = pad_to(self.backbone(batch_inputs), self.backbone.out_widths)
        if self.with_neck:
            x = self.neck(x)
        return x

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
            component summed over the members (``loss_cls``, ...; a
            two-stage detector's ``loss_rpn_cls``, ``loss_rpn_bbox``,
            ``loss_cls``, ``loss_bbox``) and each logged value that is not
            a loss averaged over them (the RoI head's ``acc``), each
            member's total
            (``loss_largest``, ``loss_random0``, ..., ``loss_smallest``) and
            the random members' indices (``subnet_random0``, ...).
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
        for name, value in components.items():
            if 'loss' not in name:  # a logged metric (the RoI head's acc)
                components[name] = value / len(members)
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        self.sandwich_iter += 1
        outputs = OrderedDict(loss=total)
        outputs.update(components)
        outputs.update(totals)
        for kind, spec in members:
            if kind.startswith('random'):
                outputs[f'subnet_{kind}'] = torch.tensor(float(spec.stats))
        return outputs
