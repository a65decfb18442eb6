# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The modes, backends and devices of the latency benchmark, and the checks
of its arguments."""
import math
from typing import Callable, List, Sequence, Tuple

import torch

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops.utils import check_choice, check_float, check_int

MODES = ('slice', 'static', 'mask', 'index', 'dynamic')
# the modes that run the DS model's sliced ops
DS_MODES = ('slice', 'mask', 'dynamic')
DEVICES = ('cpu', 'cuda')
BACKENDS = ('torch', 'ort')
# the backend of torch.compile rows, and the modes it runs
COMPILED = 'inductor'
COMPILED_MODES = ('slice', 'static', 'dynamic')
ORT_MODES = ('static', 'dynamic')
# what runs for a detector (images to the dense head's raw outputs): the
# sliced DS detector and its static sub-network, in eager torch
DETECTOR_MODES = ('slice', 'static')
# the rows of mode dynamic: the gated model and the two static references
DYNAMIC_ROWS = ('routed', 'equal_madds', 'routed_limit')
# torch.compile may compile one code object (StaticNet.forward) for every
# network of a group: the window's parts, the limit's and equal-MAdds nets
RECOMPILE_LIMIT = 64

Runner = Callable[[], object]
Key = Tuple[str, str, str]  # (mode, subnet name, backend)


def check_device(device: str) -> torch.device:
    """The torch device for ``--device``, refusing CUDA without a GPU."""
    check_choice('device', device, DEVICES)
    if device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device=cuda, but torch sees no CUDA GPU here '
                         f'(torch {torch.__version__}); use device=cpu')
    return torch.device(device)


def check_modes(modes: Sequence[str], gated: bool,
                detector: bool = False) -> None:
    if not modes:
        raise ValueError(f'modes is empty; allowed: {MODES}')
    for mode in modes:
        check_choice('mode', mode, DETECTOR_MODES if detector else MODES)
    if 'dynamic' in modes and not gated:
        raise ValueError('mode dynamic needs a gated model (a '
                         'DSGateClassifier config such as '
                         'configs/ds_mbnet_digits_gate.py)')


def check_batch_sizes(batch_sizes: Sequence[int]) -> None:
    if not batch_sizes:
        raise ValueError('batch_sizes is empty')
    for b in batch_sizes:
        if not isinstance(b, int) or b < 1:
            raise ValueError(f'batch size must be an int >= 1, got {b!r}')


def check_timing(warmup: int, repeats: int, min_sample_ms: float) -> None:
    check_int('warmup', warmup, 0)
    check_int('repeats', repeats, 1)
    check_float('min_sample_ms', min_sample_ms, 0)


def check_backends(backends: Sequence[str], device: torch.device) -> None:
    """Refuse an unknown backend, and ``ort`` where onnxruntime cannot run
    on ``device``."""
    if not backends:
        raise ValueError(f'backends is empty; allowed: {BACKENDS}')
    for backend in backends:
        check_choice('backend', backend, BACKENDS)
    if 'ort' in backends:
        try:
            import onnxruntime
        except ImportError as e:
            raise ValueError('backend ort needs onnxruntime (pip install '
                             f'onnxruntime): {e}') from e
        missing = set(ort_providers(device)) - set(
            onnxruntime.get_available_providers())
        if missing:
            raise ValueError(
                f'backend ort on device {device.type} needs the '
                f'onnxruntime providers {sorted(missing)}; this onnxruntime '
                f'has {onnxruntime.get_available_providers()}')


def check_routing_mix(mix: Sequence[float],
                      window: Sequence[SubnetSpec]) -> List[float]:
    """The routing mix as floats, if it gives every member of the routing
    ``window`` a fraction >= 0 and the fractions sum to 1 (within 1e-6)."""
    names = ', '.join(s.name for s in window)
    mix = [float(f) for f in mix]
    total = math.fsum(mix)
    if len(mix) != len(window) or not all(
            math.isfinite(f) and f >= 0 for f in mix) or \
            abs(total - 1) > 1e-6:
        raise ValueError(
            f'routing_mix (--routing-mix) must give one fraction >= 0 per '
            f'member of the routing window (window size {len(window)}: '
            f'{names}), summing to 1 within 1e-6; got {len(mix)} fractions '
            f'{mix} summing to {total:g}')
    return mix


def ort_providers(device: torch.device) -> Tuple[str, ...]:
    """The onnxruntime execution providers that run on ``device``."""
    return ('CUDAExecutionProvider', 'CPUExecutionProvider') \
        if device.type == 'cuda' else ('CPUExecutionProvider', )
