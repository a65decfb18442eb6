# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Latency of the ways a sub-network can run, measured side by side.

Modes (all compute the same function of the input):

- ``slice``: the DS model at the sub-network with its inference cache on
  (:func:`~dsnet_mm.ops.inference_cache`), each forward one checked span of
  it, as a call of the model is: the backbone runs the sub-network as the
  static network built once from the cached, BN-folded weights
  (:mod:`dsnet_mm.deploy.plain`), so what slicing costs beyond ``static``
  is the DS model's own dispatch;
- ``static``: a plain torch network built at the sub-network's widths with
  the sliced weights copied in and BN folded (the exported model: the limit
  slicing should reach);
- ``mask``: the full-width model with every channel beyond the sub-network's
  widths zeroed (the reference code's dynamic mode);
- ``index``: the full weights gathered by ``index_select`` on every forward
  (the approach of mmrazor's dynamic ops);
- ``dynamic``: the gated model through the bucketed path (``routed``),
  routed by its gate on real images or by a fixed routing mix, next to a
  ``static`` network whose MAdds equal the dynamic mean (``equal_madds``)
  and to the per-image static limit (``routed_limit``: each window member's
  static network on its images, one call per member, plus the gate's
  slimming head on the batch).

Backends (a ``backend`` field in every row):

- ``torch``: eager PyTorch;
- ``inductor`` (``compile=True``): ``torch.compile`` with frozen weights
  (:func:`~dsnet_mm.deploy.plain.compile_static`), for the static networks
  and, in modes ``slice`` and ``dynamic``, for the inference cache's static
  networks (:attr:`~dsnet_mm.ops.InferenceCacheBlock.compile`); each row
  records the first call's time (``compile_s``);
- ``ort``: onnxruntime on ONNX exports, for modes ``static`` (the static
  networks) and ``dynamic`` (:func:`~dsnet_mm.deploy.export_dynamic`), with
  as many intra-op threads as torch uses.

Rows of a backend other than eager torch carry ``max_abs_diff``, their
largest absolute difference to eager torch's output for the same input, and
``max_rel_diff``, that over the largest absolute output (random weights give
tiny logits).

The modes and backends of one sub-network and batch size are timed
round-robin (warm-up rounds first), so machine noise falls on all of them
alike, and one sub-network after the other, as a deployment runs it
(interleaving every sub-network would also defeat the inference cache,
which keeps a few recent widths). The median and the 90th percentile of the
rounds are reported; a sample averages back-to-back calls when one call is
short. On CUDA, CUDA events time each sample.
"""
import copy
import math
import os.path as osp
import tempfile
import time
from contextlib import ExitStack
from typing import (Callable, Dict, List, Optional, Sequence, Tuple)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.deploy import (ExportMismatchError, OrtDynamicModel,
                             export_dynamic, export_onnx, static_subnet)
from dsnet_mm.deploy.ort_dynamic import ort_session_options
from dsnet_mm.deploy.plain import compile_static, static_subnet_like
from dsnet_mm.models.routing import MaskedRouting
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import InferenceCacheBlock, inference_cache
from dsnet_mm.ops.utils import check_choice, check_float, check_int
from .complexity import count_complexity
from .index_baseline import indexed_subnet
from .subnet_table import network_forward, subnet_complexity

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
        missing = set(_ort_providers(device)) - set(
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


def mix_counts(mix: Sequence[float], n: int) -> List[int]:
    """Images per window member when ``n`` images are routed by ``mix``.

    Largest-remainder rounding (Hamilton's method): member ``k`` gets
    ``floor(mix[k] * n)`` images, and the images left over go one each to
    the members with the largest remainders ``mix[k] * n - floor(...)``
    (ties to the narrower member). The counts sum to ``n`` and each is
    within one of ``mix[k] * n``; a member with fraction 0 gets none. E.g.
    ``0.5,0,0,0.5`` routes one image to the narrowest, three of seven to the
    widest.
    """
    total = math.fsum(mix)
    exact = [f / total * n for f in mix]
    counts = [math.floor(e) for e in exact]
    left = n - sum(counts)
    order = sorted(range(len(mix)), key=lambda k: (counts[k] - exact[k], k))
    for k in order[:max(left, 0)]:
        counts[k] += 1
    return counts


def mix_routes(mix: Sequence[float], n: int, seed: int = 0) -> torch.Tensor:
    """``[n]`` window positions with exactly :func:`mix_counts` images per
    member, assigned to the images in a random order fixed by ``seed``."""
    counts = torch.tensor(mix_counts(mix, n))
    routes = torch.repeat_interleave(torch.arange(len(counts)), counts)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return routes[order]


class Timer:
    """Milliseconds per call of ``calls`` back-to-back calls: wall clock on
    CPU, CUDA events on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == 'cuda'

    def __call__(self, run: Runner, calls: int = 1) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls):
                run()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / calls
        start = time.perf_counter()
        for _ in range(calls):
            run()
        return (time.perf_counter() - start) * 1e3 / calls


def measure(runners: Dict[Key, Runner],
            timer: Timer,
            warmup: int,
            repeats: int,
            min_sample_ms: float = 0.0) -> Dict[Key, List[float]]:
    """Time every runner ``repeats`` times, round-robin, after ``warmup``
    untimed rounds.

    A sample is the mean of as many back-to-back calls as last about
    ``min_sample_ms`` (counted per runner in the warm-up), which steadies
    the short latencies of small batches against timer and scheduler noise;
    a runner slower than that is timed call by call.
    """
    check_timing(warmup, repeats, min_sample_ms)
    times: Dict[Key, List[float]] = {key: [] for key in runners}
    calls = {key: 1 for key in runners}
    with torch.no_grad():
        for r in range(warmup + repeats):
            for key, run in runners.items():
                ms = timer(run, calls[key])
                if r >= warmup:
                    times[key].append(ms)
                else:
                    calls[key] = max(1, math.ceil(min_sample_ms / ms))
    return times


def _to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) \
        if channels_last else x


def _ort_providers(device: torch.device) -> Tuple[str, ...]:
    return ('CUDAExecutionProvider', 'CPUExecutionProvider') \
        if device.type == 'cuda' else ('CPUExecutionProvider', )


class OnnxExports:
    """ONNX files of the static networks and of the dynamic model, each
    written once into a temporary folder (removed by :meth:`close`), from
    the model on the CPU (a copy if it is elsewhere).

    Args:
        model (nn.Module): The DS classifier (a ``DSGateClassifier`` for
            :meth:`dynamic`).
        shape (Sequence[int]): ``(C, H, W)`` of an image.
    """

    def __init__(self, model: nn.Module, shape: Sequence[int]) -> None:
        on_cpu = next(model.parameters()).device.type == 'cpu'
        self.model = model if on_cpu else copy.deepcopy(model).cpu()
        self.shape = tuple(shape)
        self._dir = tempfile.TemporaryDirectory(prefix='dsnet_benchmark_')
        self._static: Dict[Tuple, str] = {}
        self._dynamic: Optional[str] = None

    def static(self, spec: SubnetSpec) -> str:
        """The static network of ``spec`` (batch dimension dynamic)."""
        key = (spec.index, tuple(spec.items()))
        if key not in self._static:
            path = osp.join(self._dir.name,
                            f'{spec.name}_{len(self._static)}.onnx')
            export_onnx(static_subnet(self.model, spec),
                        torch.zeros(1, *self.shape), path, 'input',
                        ('logits', ))
            self._static[key] = path
        return self._static[key]

    def dynamic(self) -> str:
        """The folder :func:`~dsnet_mm.deploy.export_dynamic` wrote."""
        if self._dynamic is None:
            out = osp.join(self._dir.name, 'dynamic')
            try:
                export_dynamic(self.model, out, self.shape[1:])
            except ExportMismatchError:
                pass  # the rows report their own difference to torch
            self._dynamic = out
        return self._dynamic

    def close(self) -> None:
        self._dir.cleanup()


def _ort_options() -> 'onnxruntime.SessionOptions':  # noqa: F821
    """Sessions on torch's thread count that do not spin after a run (their
    spinning threads would slow the torch rows timed between them)."""
    return ort_session_options(torch.get_num_threads(), spinning=False)


def _numpy(x: torch.Tensor) -> np.ndarray:
    """NCHW float32 host memory, what onnxruntime reads."""
    return x.detach().float().contiguous().cpu().numpy()


def static_runner(model: nn.Module,
                  spec: SubnetSpec,
                  x: torch.Tensor,
                  backend: str = 'torch',
                  exports: Optional[OnnxExports] = None) -> Runner:
    """The static network of ``spec`` on ``x`` (its device, dtype and
    memory format): eager torch, ``torch.compile``d (:data:`COMPILED`) or
    on onnxruntime (``'ort'``, from ``exports``)."""
    if backend == 'ort':
        import onnxruntime
        session = onnxruntime.InferenceSession(
            exports.static(spec), _ort_options(),
            providers=list(_ort_providers(x.device)))
        feed = {'input': _numpy(x)}
        return lambda: session.run(None, feed)[0]
    net = static_subnet_like(model, spec, x)
    return _bind(compile_static(net) if backend == COMPILED else net, x)


def subnet_runners(model: nn.Module, spec: SubnetSpec, modes: Sequence[str],
                   x: torch.Tensor) -> Dict[str, Runner]:
    """One eager torch runner per static mode (slice, static, mask, index)
    for ``spec``."""
    backbone = model.backbone
    runners: Dict[str, Runner] = {}

    def run_slice():
        backbone.set_subnet(spec)
        return network_forward(model, x)

    if 'slice' in modes:
        runners['slice'] = run_slice
    if 'static' in modes:
        runners['static'] = static_runner(model, spec, x)
    if 'mask' in modes:
        # the window [spec, largest] with every image on spec: full widths,
        # channels beyond spec's widths zeroed, spec's BN statistics
        window = [spec, backbone.space.largest]
        weights = F.one_hot(
            torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
            2).float()

        def run_mask():
            feats = backbone.forward_spec(x, MaskedRouting(window, weights))
            if model.with_neck:
                feats = model.neck(feats)
            return model.head(feats)

        runners['mask'] = run_mask
    if 'index' in modes:
        runners['index'] = _bind(indexed_subnet(model, spec), x)
    return runners


def _bind(net: nn.Module, x: torch.Tensor) -> Runner:
    return lambda: net(x)


def _limit_runner(model: nn.Module, routes: torch.Tensor, batch: torch.Tensor,
                  backend: str, exports: Optional[OnnxExports]) -> Runner:
    """The per-image static limit of the routed batch: each window member's
    static network on as many images as are routed to it (one call per
    member), and the gate's slimming head on the whole batch (in torch on
    every backend: a ``[B, C] x [C, window]`` product)."""
    parts = [
        static_runner(model, spec, batch[:n], backend, exports)
        for spec, n in zip(model.window,
                           torch.bincount(routes, minlength=len(
                               model.window)).tolist()) if n
    ]
    gate = model.gate
    if gate.features == 'squeeze':
        width = gate.reduce_channels
    else:
        with torch.no_grad():
            h = model.backbone.forward_pre_gate(batch[:1])[0]
        width = model.backbone.gate_input_width(h)
    v = batch.new_zeros(batch.shape[0], width, 1, 1)

    def run():
        for part in parts:
            part()
        gate._slim_logits(v)

    return run


def equal_madds_spec(model: nn.Module, madds: float,
                     shape: Sequence[int]) -> Tuple[SubnetSpec, int]:
    """Widths whose static network costs ``madds`` per image.

    Walks the sub-network list as a piecewise-linear path of widths
    (rounded per group) and bisects it for the MAdds. Returns the spec
    (named ``'equal_madds'``, with the BN row of the sub-network below it)
    and its MAdds.
    """
    space = model.backbone.space
    x = torch.zeros(1, *shape)
    n = len(space)

    def at(t: float) -> SubnetSpec:
        k = min(int(t), n - 2) if n > 1 else 0
        frac = t - k
        lo, hi = space[k], space[min(k + 1, n - 1)]
        widths = {g: int(round(lo[g] + frac * (hi[g] - lo[g])))
                  for g in space.groups}
        return SubnetSpec(widths, k, 'equal_madds')

    def cost(t: float) -> int:
        net = static_subnet(model, at(t))
        return count_complexity(net, lambda: net(x))['madds']

    lo, hi = 0.0, float(n - 1)
    for _ in range(30):
        mid = (lo + hi) / 2
        if cost(mid) < madds:
            lo = mid
        else:
            hi = mid
    cost_lo, cost_hi = cost(lo), cost(hi)
    if abs(cost_lo - madds) <= abs(cost_hi - madds):
        return at(lo), cost_lo
    return at(hi), cost_hi


def _stats(times: List[float]) -> Dict[str, float]:
    return dict(median_ms=float(np.median(times)),
                p90_ms=float(np.percentile(times, 90)))


class _Group:
    """Runners timed together (round-robin), with what their rows carry.
    Eager torch runners are always there, timed or not: the other backends'
    outputs are compared with theirs."""

    def __init__(self) -> None:
        self.runners: Dict[Key, Runner] = {}
        self.ds: Dict[Key, bool] = {}
        self.madds: Dict[Key, float] = {}
        self.extra: Dict[Key, Dict] = {}

    def add(self, key: Key, run: Runner, madds: float, ds: bool = False,
            **extra) -> None:
        self.runners[key] = run
        self.ds[key] = ds
        self.madds[key] = madds
        self.extra[key] = extra


def benchmark(model: nn.Module,
              specs: Sequence[SubnetSpec],
              modes: Sequence[str],
              batch_sizes: Sequence[int],
              shape: Sequence[int],
              device: torch.device,
              warmup: int = 3,
              repeats: int = 10,
              channels_last: bool = False,
              images: Optional[torch.Tensor] = None,
              min_sample_ms: float = 50.0,
              progress: Optional[Callable[[str], None]] = None,
              backends: Sequence[str] = ('torch', ),
              compile: bool = False,
              routing_mix: Optional[Sequence[float]] = None) -> List[Dict]:
    """Latency rows ``{mode, subnet, batch_size, madds, median_ms, p90_ms,
    backend}``.

    Args:
        model (nn.Module): A DS-MobileNetV1, DS-ResNet or DS-ViT classifier
            in eval mode on ``device`` (a ``DSGateClassifier`` for mode
            ``dynamic``), or a DS detector (modes :data:`DETECTOR_MODES`,
            eager torch: images to the dense head's raw outputs).
        specs (Sequence[SubnetSpec]): Sub-networks of the static modes.
        modes (Sequence[str]): Modes among :data:`MODES`.
        batch_sizes (Sequence[int]): Batch sizes.
        shape (Sequence[int]): ``(C, H, W)`` of an image.
        device (torch.device): Where to run.
        warmup (int): Untimed rounds. Defaults to 3.
        repeats (int): Timed rounds. Defaults to 10.
        channels_last (bool): Run inputs (and static networks) in
            channels-last memory format. Defaults to False.
        images (torch.Tensor, optional): Preprocessed real images
            ``[N, C, H, W]`` for mode ``dynamic`` routed by the gate
            (cycled to the batch size).
        min_sample_ms (float): A sample averages back-to-back calls over
            about this long (see :func:`measure`). Defaults to 50.
        progress (Callable[[str], None], optional): Receives progress lines.
        backends (Sequence[str]): Backends among :data:`BACKENDS`, timed
            side by side. Defaults to ``('torch', )``.
        compile (bool): Also time ``torch.compile`` (backend
            :data:`COMPILED`) in modes :data:`COMPILED_MODES`. Defaults to
            False.
        routing_mix (Sequence[float], optional): For mode ``dynamic``: the
            fraction of each batch routed to each window member, which
            replaces the gate (:func:`mix_routes`; random images). Defaults
            to None (the gate routes ``images``).

    Returns:
        list[dict]: one row per (mode, sub-network, batch size, backend);
        the ``dynamic`` and ``routed_limit`` rows carry ``routing`` (images
        per window member), the ``equal_madds`` rows ``widths``, compiled
        rows ``compile_s`` and rows of other backends than eager torch
        ``max_abs_diff`` and ``max_rel_diff``.
    """
    detector = hasattr(model, 'bbox_head')
    check_modes(modes, hasattr(model, 'forward_dynamic'), detector)
    check_batch_sizes(batch_sizes)
    check_backends(backends, device)
    if detector and (compile or list(backends) != ['torch']):
        raise ValueError(
            f'a detector is timed in eager torch only (backends '
            f"{list(backends)}, compile={compile}): give backends=['torch'] "
            'and no compile')
    if routing_mix is not None:
        if 'dynamic' not in modes:
            raise ValueError('routing_mix (--routing-mix) fixes the routing '
                             'of mode dynamic: add dynamic to the modes')
        routing_mix = check_routing_mix(routing_mix, model.window)
    elif 'dynamic' in modes and images is None:
        raise ValueError('mode dynamic needs real images (routed by the '
                         'gate) or a routing_mix')
    say = progress or (lambda line: None)
    variants = list(backends) + ([COMPILED] if compile else [])
    static_modes = [m for m in modes if m != 'dynamic']
    specs = list(specs) if static_modes else []
    largest = model.backbone.space.largest
    if 'mask' in modes and not any(s is largest for s in specs):
        specs.append(largest)  # the full width that masking runs at
    madds = {r['name']: r['madds']
             for r in subnet_complexity(model, specs, shape)}
    exports = OnnxExports(model, shape) if 'ort' in backends else None
    rows = []
    with ExitStack() as stack:
        if exports is not None:
            stack.callback(exports.close)
        if compile:
            # torch 2.7 renamed cache_size_limit to recompile_limit
            limit = ('recompile_limit'
                     if hasattr(torch._dynamo.config, 'recompile_limit')
                     else 'cache_size_limit')
            stack.enter_context(torch._dynamo.config.patch(
                **{limit: RECOMPILE_LIMIT}))
        for bs in batch_sizes:
            x = _to_memory_format(
                torch.randn(bs, *shape, device=device), channels_last)
            groups = [
                _subnet_group(model, spec, static_modes, x, variants,
                              madds[spec.name], exports)
                for spec in specs
            ]
            if 'dynamic' in modes:
                batch = x if images is None else _to_memory_format(
                    _cycle(images, bs).to(device), channels_last)
                groups.append(_dynamic_group(model, batch, shape, variants,
                                             routing_mix, exports))
            for g, group in enumerate(groups, 1):
                timed = [k for k in group.runners if k[2] in variants]
                say(f'batch size {bs}: group {g}/{len(groups)} ('
                    + ', '.join(' '.join(k) for k in timed) + ')')
                rows += _time_group(model, group, timed, bs, device, warmup,
                                    repeats, min_sample_ms, compile)
    return rows


def _subnet_group(model: nn.Module, spec: SubnetSpec, modes: Sequence[str],
                  x: torch.Tensor, variants: Sequence[str], madds: float,
                  exports: Optional[OnnxExports]) -> _Group:
    """The static modes of ``spec`` on every backend that runs them."""
    group = _Group()
    for mode, run in subnet_runners(model, spec, modes, x).items():
        if mode == 'mask' and spec is model.backbone.space.largest:
            continue  # masking nothing is the full-width slice
        ds = mode in DS_MODES
        group.add((mode, spec.name, 'torch'), run, madds, ds)
        if COMPILED in variants and mode in COMPILED_MODES:
            group.add((mode, spec.name, COMPILED),
                      run if ds else static_runner(model, spec, x, COMPILED),
                      madds, ds)
        if 'ort' in variants and mode in ORT_MODES:
            group.add((mode, spec.name, 'ort'),
                      static_runner(model, spec, x, 'ort', exports), madds)
    return group


def _dynamic_group(model: nn.Module, batch: torch.Tensor,
                   shape: Sequence[int], variants: Sequence[str],
                   routing_mix: Optional[Sequence[float]],
                   exports: Optional[OnnxExports]) -> _Group:
    """The bucketed dynamic model, the static network of equal MAdds and
    the per-image static limit, on every backend."""
    if routing_mix is None:
        routes = _gate_routes(model, batch)
        given = None  # the gate routes in every call
    else:
        routes = given = mix_routes(routing_mix, len(batch)).to(batch.device)
    counts = torch.bincount(routes, minlength=len(model.window)).tolist()
    routed = {s.name: c for s, c in zip(model.window, counts)}
    window_madds = model.window_madds(batch.shape[1:])
    mean = sum(m * c for m, c in zip(window_madds, counts)) / len(batch)
    extra = dict(routing=routed)
    if routing_mix is not None:
        extra['routing_mix'] = list(routing_mix)
    spec, spec_madds = equal_madds_spec(model, mean, shape)
    group = _Group()

    def run_dynamic():
        return model.forward_dynamic(batch, 'bucket', given)[0]

    for backend in ['torch'] + [v for v in variants if v != 'torch']:
        if backend == 'ort':
            ort_model = OrtDynamicModel(
                exports.dynamic(), _ort_providers(batch.device),
                torch.get_num_threads(), spinning=False)
            images = _numpy(batch)
            ort_given = None if given is None else given.cpu().numpy()
            group.add(('dynamic', 'routed', backend),
                      lambda: ort_model(images, ort_given)[0], mean, **extra)
        else:
            group.add(('dynamic', 'routed', backend), run_dynamic, mean,
                      True, **extra)
        group.add(('static', 'equal_madds', backend),
                  static_runner(model, spec, batch, backend, exports),
                  spec_madds, widths=dict(spec))
        group.add(('static', 'routed_limit', backend),
                  _limit_runner(model, routes, batch, backend, exports),
                  mean, **extra)
    return group


def _time_group(model: nn.Module, group: _Group, timed: Sequence[Key],
                bs: int, device: torch.device, warmup: int, repeats: int,
                min_sample_ms: float, compile: bool) -> List[Dict]:
    """Rows of the ``timed`` runners of one group, timed in the model's
    inference cache (fresh: it keeps only a few sub-networks)."""
    if compile:
        torch._dynamo.reset()  # a group compiles afresh, timed
    rows = []
    with torch.no_grad(), inference_cache(model) as cache:
        runners = {
            key: _checked(cache, run, key[2] == COMPILED)
            if group.ds[key] else run
            for key, run in group.runners.items()
        }
        # a first call of each: builds, compiles, and gives the outputs
        # that the other backends are compared with
        outputs, first_s = {}, {}
        for key, run in runners.items():
            start = time.perf_counter()
            outputs[key] = run()
            first_s[key] = time.perf_counter() - start
        times = measure({key: runners[key] for key in timed}, Timer(device),
                        warmup, repeats, min_sample_ms)
    for key in timed:
        mode, name, backend = key
        row = dict(mode=mode, subnet=name, batch_size=bs,
                   madds=group.madds[key], **_stats(times[key]),
                   backend=backend, **group.extra[key])
        if backend == COMPILED:
            row['compile_s'] = first_s[key]
        reference = outputs[(mode, name, 'torch')]
        if backend != 'torch' and reference is not None:
            diff = float((torch.as_tensor(outputs[key]).to(reference) -
                          reference).abs().max())
            row['max_abs_diff'] = diff
            row['max_rel_diff'] = diff / float(reference.abs().max())
        rows.append(row)
    return rows


def _checked(cache: InferenceCacheBlock, run: Runner,
             compiled: bool = False) -> Runner:
    """``run`` as one checked span of the inference cache, as a call of the
    model is (the DS modes call the backbone's and head's methods); with
    ``compiled``, the cache's static networks are the compiled ones."""

    def checked_run():
        cache.compile = compiled
        try:
            with cache.checked():
                return run()
        finally:
            cache.compile = False

    return checked_run


def _cycle(images: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:n].contiguous()


@torch.no_grad()
def _gate_routes(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The window position the gate routes each image of ``batch`` to."""
    return model.forward_dynamic(batch, 'bucket')[2]


def _backend(row: Dict) -> str:
    return row.get('backend', 'torch')  # rows written before backends


def _scaling(by: Dict[Tuple[str, str], Dict], mode: str) -> Optional[Dict]:
    """From the cheapest to the costliest sub-network timed in ``mode``
    (the largest and the dynamic rows excluded): latency ratio, MAdds ratio
    and their quotient."""
    names = [n for m, n in by if m == mode and n != 'largest'
             and n not in DYNAMIC_ROWS]
    if len(names) < 2:
        return None
    cost = {n: by[(mode, n)]['madds'] for n in names}
    cheap, dear = min(names, key=cost.get), max(names, key=cost.get)
    latency = by[(mode, dear)]['median_ms'] / by[(mode, cheap)]['median_ms']
    madds = cost[dear] / cost[cheap]
    return dict(narrowest=cheap, widest=dear, latency_ratio=latency,
                madds_ratio=madds, efficiency=latency / madds)


def _ratios(rows: Sequence[Dict]) -> Dict:
    """The ratios of one backend's rows of one batch size (see
    :func:`summarize`)."""
    by = {(r['mode'], r['subnet']): r for r in rows}
    ms = {key: r['median_ms'] for key, r in by.items()}
    names = [r['subnet'] for r in rows
             if r['mode'] == 'slice' and r['subnet'] != 'largest']
    out: Dict = {}
    for key, num, den in (('slice_over_static', 'slice', 'static'),
                          ('index_over_slice', 'index', 'slice')):
        ratios = {n: ms[(num, n)] / ms[(den, n)] for n in names
                  if (num, n) in ms and (den, n) in ms}
        if ratios:
            out[key] = ratios
    if ('slice', 'largest') in ms:
        speedups = {n: ms[('slice', 'largest')] / ms[('mask', n)]
                    for n in names if ('mask', n) in ms}
        if speedups:
            out['mask_speedup'] = speedups
    for key, mode in (('scaling', 'slice'), ('static_scaling', 'static')):
        scaling = _scaling(by, mode)
        if scaling is not None:
            out[key] = scaling
    if 'scaling' in out and 'static_scaling' in out:
        out['scaling_over_static'] = out['scaling']['latency_ratio'] / \
            out['static_scaling']['latency_ratio']
    if ('dynamic', 'routed') in ms:
        if ('static', 'equal_madds') in ms:
            out['dynamic_throughput_ratio'] = \
                ms[('static', 'equal_madds')] / ms[('dynamic', 'routed')]
        if ('static', 'routed_limit') in ms:
            out['dynamic_over_routed_limit'] = \
                ms[('dynamic', 'routed')] / ms[('static', 'routed_limit')]
    return out


def summarize(rows: Sequence[Dict]) -> Dict[str, Dict]:
    """The ratios that say whether slicing pays, per batch size.

    For the eager torch rows:

    - ``slice_over_static``: slice latency / static latency per sub-network
      (1.0 is the limit);
    - ``index_over_slice``: gather-indexing latency / slice latency;
    - ``mask_speedup``: full-width latency (the largest, sliced) / mask
      latency per sub-network (1.0 means masking saves nothing);
    - ``scaling`` (``static_scaling``): from the cheapest to the costliest
      listed sub-network (the largest excluded), the slice (static) latency
      ratio against the MAdds ratio, and their quotient ``efficiency``;
      ``scaling_over_static``: slicing's speed-up over the static
      networks' own (1.0 is the limit);
    - ``dynamic_throughput_ratio``: latency of the static network of equal
      MAdds / latency of the bucketed dynamic model;
    - ``dynamic_over_routed_limit``: latency of the bucketed dynamic model /
      the per-image static limit (1.0 is the limit).

    The same ratios of every other backend under its name (``'ort'``,
    ``'inductor'``), with ``speedup_over_torch``: eager torch latency / the
    backend's, per ``'<mode> <sub-network>'``.
    """
    summary = {}
    for bs in sorted({r['batch_size'] for r in rows}):
        batch = [r for r in rows if r['batch_size'] == bs]
        out = _ratios([r for r in batch if _backend(r) == 'torch'])
        eager = {(r['mode'], r['subnet']): r['median_ms'] for r in batch
                 if _backend(r) == 'torch'}
        for backend in dict.fromkeys(map(_backend, batch)):
            if backend == 'torch':
                continue
            mine = [r for r in batch if _backend(r) == backend]
            ratios = _ratios(mine)
            speedup = {
                f"{r['mode']} {r['subnet']}":
                eager[(r['mode'], r['subnet'])] / r['median_ms']
                for r in mine if (r['mode'], r['subnet']) in eager
            }
            if speedup:
                ratios['speedup_over_torch'] = speedup
            out[backend] = ratios
        summary[str(bs)] = out
    return summary


def plot_latency(rows: Sequence[Dict], path: str) -> None:
    """Median latency against MAdds, one line per mode and backend, a panel
    per batch size; the dynamic model and its static references as
    points."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = sorted({r['batch_size'] for r in rows})
    backends = list(dict.fromkeys(map(_backend, rows)))
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2),
                             squeeze=False)
    markers = dict(routed='*', equal_madds='s', routed_limit='D')
    labels = dict(routed='dynamic (bucketed)',
                  equal_madds='static, equal MAdds',
                  routed_limit='static, per-image limit')
    for ax, bs in zip(axes[0], sizes):
        batch = [r for r in rows if r['batch_size'] == bs]
        for backend in backends:
            suffix = '' if backend == 'torch' else f' ({backend})'
            for mode in MODES:
                line = sorted((r for r in batch if r['mode'] == mode
                               and _backend(r) == backend
                               and r['subnet'] not in DYNAMIC_ROWS),
                              key=lambda r: r['madds'])
                if line:
                    ax.plot([r['madds'] / 1e6 for r in line],
                            [r['median_ms'] for r in line], 'o-', ms=3,
                            label=mode + suffix)
            for r in batch:
                if r['subnet'] in DYNAMIC_ROWS and _backend(r) == backend:
                    ax.plot(r['madds'] / 1e6, r['median_ms'],
                            markers[r['subnet']], ms=10,
                            label=labels[r['subnet']] + suffix)
        ax.set_title(f'batch size {bs}')
        ax.set_xlabel('MAdds per image (M)')
        ax.set_ylabel('median latency (ms)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
