# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Groups of runners timed together, and the rows they give."""
import time
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import InferenceCacheBlock, inference_cache
from .checks import (COMPILED, COMPILED_MODES, DS_MODES, ORT_MODES, Key,
                     Runner)
from .runners import OnnxExports, static_runner, subnet_runners
from .timing import Timer, measure, stats


class Group:
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


def subnet_group(model: nn.Module, spec: SubnetSpec, modes: Sequence[str],
                  x: torch.Tensor, variants: Sequence[str], madds: float,
                  exports: Optional[OnnxExports]) -> Group:
    """The static modes of ``spec`` on every backend that runs them."""
    group = Group()
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



def time_group(model: nn.Module, group: Group, timed: Sequence[Key],
                bs: int, device: torch.device, warmup: int, repeats: int,
                min_sample_ms: float, compile: bool) -> List[Dict]:
    """Rows of the ``timed`` runners of one group, timed in the model's
    inference cache (fresh: it keeps only a few sub-networks)."""
    if compile:
        torch._dynamo.reset()  # a group compiles afresh, timed
    rows = []
    with torch.no_grad(), inference_cache(model) as cache:
        runners = {
            key: checked(cache, run, key[2] == COMPILED)
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
                   madds=group.madds[key], **stats(times[key]),
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


def checked(cache: InferenceCacheBlock, run: Runner,
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
