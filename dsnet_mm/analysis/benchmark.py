# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Latency of the ways a sub-network can run, measured side by side.

Modes (all compute the same function of the input):

- ``slice``: the DS model running the sub-network on prefix slices, with
  its inference cache on (:func:`~dsnet_mm.ops.inference_cache`), each
  forward one checked span of it, as a call of the model is;
- ``static``: a plain torch network built at the sub-network's widths with
  the sliced weights copied in and BN folded (the exported model: the limit
  slicing should reach; in inference the slice path folds BN as well);
- ``mask``: the full-width model with every channel beyond the sub-network's
  widths zeroed (the reference code's dynamic mode);
- ``index``: the full weights gathered by ``index_select`` on every forward
  (the approach of mmrazor's dynamic ops);
- ``dynamic``: the gated model on real images through the bucketed path,
  next to a ``static`` network whose MAdds equal the dynamic mean
  (``subnet='equal_madds'``).

The modes of one sub-network and batch size are timed round-robin (warm-up
rounds first), so machine noise falls on all of them alike, and one
sub-network after the other, as a deployment runs it (interleaving every
sub-network would also defeat the sliced ops' inference cache, which keeps
a few recent widths). The median and the 90th percentile of the rounds are
reported; a sample averages back-to-back calls when one call is short.
On CUDA, CUDA events time each sample.
"""
import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dsnet_mm.deploy import static_subnet
from dsnet_mm.models.routing import MaskedRouting
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import InferenceCacheBlock, inference_cache
from dsnet_mm.ops.utils import check_choice, check_float, check_int
from .complexity import count_complexity
from .index_baseline import indexed_subnet
from .subnet_table import classifier_forward, subnet_complexity

MODES = ('slice', 'static', 'mask', 'index', 'dynamic')
# the modes that run the DS model's sliced ops
DS_MODES = ('slice', 'mask', 'dynamic')
DEVICES = ('cpu', 'cuda')

Runner = Callable[[], object]
Key = Tuple[str, str]  # (mode, subnet name)


def check_device(device: str) -> torch.device:
    """The torch device for ``--device``, refusing CUDA without a GPU."""
    check_choice('device', device, DEVICES)
    if device == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device=cuda, but torch sees no CUDA GPU here '
                         f'(torch {torch.__version__}); use device=cpu')
    return torch.device(device)


def check_modes(modes: Sequence[str], gated: bool) -> None:
    if not modes:
        raise ValueError(f'modes is empty; allowed: {MODES}')
    for mode in modes:
        check_choice('mode', mode, MODES)
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


def _static(model: nn.Module, spec: SubnetSpec, device: torch.device,
            channels_last: bool) -> nn.Module:
    net = static_subnet(model, spec).to(device)
    return net.to(memory_format=torch.channels_last) if channels_last \
        else net


def subnet_runners(model: nn.Module, spec: SubnetSpec, modes: Sequence[str],
                   x: torch.Tensor, channels_last: bool) -> Dict[str, Runner]:
    """One runner per static mode (slice, static, mask, index) for ``spec``."""
    backbone = model.backbone
    runners: Dict[str, Runner] = {}

    def run_slice():
        backbone.set_subnet(spec)
        return classifier_forward(model, x)

    if 'slice' in modes:
        runners['slice'] = run_slice
    if 'static' in modes:
        runners['static'] = _bind(
            _static(model, spec, x.device, channels_last), x)
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
              progress: Optional[Callable[[str], None]] = None
              ) -> List[Dict]:
    """Latency rows ``{mode, subnet, batch_size, madds, median_ms, p90_ms}``.

    Args:
        model (nn.Module): A DS-MobileNetV1 or DS-ResNet classifier in eval
            mode on
            ``device`` (a ``DSGateClassifier`` for mode ``dynamic``).
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
            ``[N, C, H, W]`` for mode ``dynamic`` (cycled to the batch size).
        min_sample_ms (float): A sample averages back-to-back calls over
            about this long (see :func:`measure`). Defaults to 50.
        progress (Callable[[str], None], optional): Receives progress lines.

    Returns:
        list[dict]: one row per (mode, sub-network, batch size); the
        ``dynamic`` rows carry ``routing`` (images per sub-network).
    """
    check_modes(modes, hasattr(model, 'forward_dynamic'))
    check_batch_sizes(batch_sizes)
    if 'dynamic' in modes and images is None:
        raise ValueError('mode dynamic needs real images')
    say = progress or (lambda line: None)
    static_modes = [m for m in modes if m != 'dynamic']
    specs = list(specs) if static_modes else []
    largest = model.backbone.space.largest
    if 'mask' in modes and not any(s is largest for s in specs):
        specs.append(largest)  # the full width that masking runs at
    madds = {r['name']: r['madds']
             for r in subnet_complexity(model, specs, shape)}
    rows = []
    for bs in batch_sizes:
        x = _to_memory_format(
            torch.randn(bs, *shape, device=device), channels_last)
        groups: List[Dict[Key, Runner]] = []
        cost: Dict[Key, float] = {}
        extra: Dict[Key, Dict] = {}
        for spec in specs:
            group = {}
            for mode, run in subnet_runners(model, spec, static_modes, x,
                                            channels_last).items():
                if mode == 'mask' and spec is largest:
                    continue  # masking nothing is the full-width slice
                group[(mode, spec.name)] = run
                cost[(mode, spec.name)] = madds[spec.name]
            if group:
                groups.append(group)
        if 'dynamic' in modes:
            batch = _cycle(images, bs).to(device)
            batch = _to_memory_format(batch, channels_last)
            routed, mean_madds = _routing(model, batch)
            spec, spec_madds = equal_madds_spec(model, mean_madds, shape)
            groups.append({
                ('dynamic', 'routed'):
                lambda b=batch: model.forward_dynamic(b, 'bucket'),
                ('static', 'equal_madds'):
                _bind(_static(model, spec, device, channels_last), batch)
            })
            cost[('dynamic', 'routed')] = mean_madds
            extra[('dynamic', 'routed')] = dict(routing=routed)
            cost[('static', 'equal_madds')] = spec_madds
            extra[('static', 'equal_madds')] = dict(widths=dict(spec))
        for g, group in enumerate(groups, 1):
            say(f'batch size {bs}: group {g}/{len(groups)} '
                f'({", ".join(f"{m} {n}" for m, n in group)})')
            with inference_cache(model) as cache:
                times = measure(
                    {key: _checked(cache, run) if key[0] in DS_MODES else run
                     for key, run in group.items()}, Timer(device), warmup,
                    repeats, min_sample_ms)
            for (mode, name), t in times.items():
                rows.append(dict(mode=mode, subnet=name, batch_size=bs,
                                 madds=cost[(mode, name)], **_stats(t),
                                 **extra.get((mode, name), {})))
    return rows


def _checked(cache: InferenceCacheBlock, run: Runner) -> Runner:
    """``run`` as one checked span of the inference cache, as a call of the
    model is: the DS modes call the backbone's and head's methods."""

    def checked_run():
        with cache.checked():
            return run()

    return checked_run


def _cycle(images: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:n].contiguous()


@torch.no_grad()
def _routing(model: nn.Module, batch: torch.Tensor) -> Tuple[Dict, float]:
    """Images per routed sub-network, and the mean MAdds per image."""
    _, _, choice = model.forward_dynamic(batch, 'bucket')
    madds = model.window_madds(batch.shape[1:])
    counts = torch.bincount(choice, minlength=len(model.window)).tolist()
    routed = {s.name: c for s, c in zip(model.window, counts)}
    mean = sum(m * c for m, c in zip(madds, counts)) / batch.shape[0]
    return routed, float(mean)


def summarize(rows: Sequence[Dict]) -> Dict[str, Dict]:
    """The ratios that say whether slicing pays, per batch size.

    - ``slice_over_static``: slice latency / static latency per sub-network
      (1.0 is the limit);
    - ``index_over_slice``: gather-indexing latency / slice latency;
    - ``mask_speedup``: full-width latency (the largest, sliced) / mask
      latency per sub-network (1.0 means masking saves nothing);
    - ``scaling``: from the cheapest to the costliest listed sub-network
      (the largest excluded), the slice latency ratio against the MAdds
      ratio, and their quotient ``efficiency``;
    - ``dynamic_throughput_ratio``: latency of the static network of equal
      MAdds / latency of the bucketed dynamic model.
    """
    by = {(r['mode'], r['subnet'], r['batch_size']): r for r in rows}
    summary = {}
    for bs in sorted({r['batch_size'] for r in rows}):
        ms = {(m, s): r['median_ms'] for (m, s, b), r in by.items()
              if b == bs}
        names = [r['subnet'] for r in rows if r['batch_size'] == bs and
                 r['mode'] == 'slice' and r['subnet'] != 'largest']
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
        if len(names) > 1:
            cost = {n: by[('slice', n, bs)]['madds'] for n in names}
            cheap, dear = min(names, key=cost.get), max(names, key=cost.get)
            latency = ms[('slice', dear)] / ms[('slice', cheap)]
            madds = cost[dear] / cost[cheap]
            out['scaling'] = dict(
                narrowest=cheap, widest=dear, latency_ratio=latency,
                madds_ratio=madds, efficiency=latency / madds)
        if ('dynamic', 'routed') in ms and ('static', 'equal_madds') in ms:
            out['dynamic_throughput_ratio'] = \
                ms[('static', 'equal_madds')] / ms[('dynamic', 'routed')]
        summary[str(bs)] = out
    return summary


def plot_latency(rows: Sequence[Dict], path: str) -> None:
    """Median latency against MAdds, one line per mode, a panel per batch
    size; the dynamic model and its equal-MAdds static network as points."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sizes = sorted({r['batch_size'] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2),
                             squeeze=False)
    for ax, bs in zip(axes[0], sizes):
        batch = [r for r in rows if r['batch_size'] == bs]
        for mode in MODES:
            line = sorted((r for r in batch if r['mode'] == mode
                           and r['subnet'] not in ('routed', 'equal_madds')),
                          key=lambda r: r['madds'])
            if line:
                ax.plot([r['madds'] / 1e6 for r in line],
                        [r['median_ms'] for r in line], 'o-', ms=3,
                        label=mode)
        for r in batch:
            if r['subnet'] in ('routed', 'equal_madds'):
                label = 'dynamic (bucketed)' if r['mode'] == 'dynamic' \
                    else 'static, equal MAdds'
                ax.plot(r['madds'] / 1e6, r['median_ms'],
                        '*' if r['mode'] == 'dynamic' else 's', ms=10,
                        label=label)
        ax.set_title(f'batch size {bs}')
        ax.set_xlabel('MAdds per image (M)')
        ax.set_ylabel('median latency (ms)')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
