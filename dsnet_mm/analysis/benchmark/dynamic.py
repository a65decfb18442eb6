# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Mode ``dynamic``: the routing of a batch (by the gate or by a fixed mix),
the static network of equal MAdds, and the group of runners that times the
bucketed dynamic model against both static references."""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from dsnet_mm.deploy import OrtDynamicModel, static_subnet
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.models.complexity import count_complexity
from .checks import ort_providers
from .groups import Group
from .runners import OnnxExports, limit_runner, numpy_input, static_runner


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


def equal_madds_spec(model: nn.Module, madds: float,
                     shape: Sequence[int]) -> Tuple[SubnetSpec, int]:
    """Widths whose static network costs ``madds`` per image.

    Walks the sub-network list as a piecewise-linear path of widths
    (rounded per group) and bisects it for the MAdds. Returns the spec
    (ad-hoc, named ``'equal_madds'``, with the BN row of the sub-network
    below it) and its MAdds.
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
        return SubnetSpec(widths, k, 'equal_madds', adhoc=True)

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


def dynamic_group(model: nn.Module, batch: torch.Tensor,
                   shape: Sequence[int], variants: Sequence[str],
                   routing_mix: Optional[Sequence[float]],
                   exports: Optional[OnnxExports]) -> Group:
    """The bucketed dynamic model, the static network of equal MAdds and
    the per-image static limit, on every backend."""
    if routing_mix is None:
        routes = gate_routes(model, batch)
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
    group = Group()

    def run_dynamic():
        return model.forward_dynamic(batch, 'bucket', given)[0]

    for backend in ['torch'] + [v for v in variants if v != 'torch']:
        if backend == 'ort':
            ort_model = OrtDynamicModel(
                exports.dynamic(), ort_providers(batch.device),
                torch.get_num_threads(), spinning=False)
            images = numpy_input(batch)
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
                  limit_runner(model, routes, batch, backend, exports),
                  mean, **extra)
    return group


def cycle_images(images: torch.Tensor, n: int) -> torch.Tensor:
    reps = -(-n // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:n].contiguous()


@torch.no_grad()
def gate_routes(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The window position the gate routes each image of ``batch`` to."""
    return model.forward_dynamic(batch, 'bucket')[2]
