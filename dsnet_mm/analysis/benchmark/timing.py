# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Timing of runners: a timer per device, round-robin samples, and their
statistics."""
import math
import time
from typing import Dict, List

import numpy as np
import torch

from .checks import Key, Runner, check_timing


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
    ``min_sample_ms`` (counted per runner from its fastest warm-up call, so
    one pre-empted warm-up call does not shorten every sample), which
    steadies the short latencies of small batches against timer and
    scheduler noise; a runner slower than that is timed call by call.
    """
    check_timing(warmup, repeats, min_sample_ms)
    times: Dict[Key, List[float]] = {key: [] for key in runners}
    fastest = {key: math.inf for key in runners}
    with torch.no_grad():
        for r in range(warmup + repeats):
            for key, run in runners.items():
                calls = max(1, math.ceil(min_sample_ms / fastest[key]))
                ms = timer(run, calls)
                if r >= warmup:
                    times[key].append(ms)
                else:
                    fastest[key] = min(fastest[key], ms)
    return times


def stats(times: List[float]) -> Dict[str, float]:
    return dict(median_ms=float(np.median(times)),
                p90_ms=float(np.percentile(times, 90)))
