# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Keep freed memory in the process for CPU inference.

glibc's ``malloc`` serves every block above its mmap threshold (at most
32 MiB) with a fresh ``mmap`` and returns it on ``free``. An activation of a
batch-32 ImageNet forward is up to 51 MiB, so each forward pass then
page-faults its largest activations in anew: writing into freshly mapped
memory costs several times what writing into reused memory does, a large
share of a narrow sub-network's forward on a small CPU. Which blocks cross
the threshold also depends on the allocation history, so two networks doing
the same work (a sliced sub-network and its static copy) can differ in
latency for no reason of their own (docs/benchmark.md). PyTorch's
performance guide answers this with jemalloc or tcmalloc;
:func:`reuse_freed_memory` gets the same effect from glibc itself, through
``mallopt``, without a preloaded library.
"""
import ctypes
import ctypes.util
import sys
from typing import Optional

# mallopt parameters of glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# keep up to 1 GiB of free memory at the top of the heap
TRIM_THRESHOLD = 2**30


def reuse_freed_memory() -> Optional[str]:
    """Make glibc's ``malloc`` serve large blocks from the heap and keep
    freed memory for reuse (``M_MMAP_MAX=0``, a 1 GiB trim threshold), for
    the rest of the process.

    The process then holds on to its peak memory, which suits a benchmark
    or an inference server, not a process that should shrink after a peak.

    Returns:
        str | None: What was set, or None where the C library is not glibc
        (the call then changes nothing).
    """
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD,
                                               TRIM_THRESHOLD)):
        return None
    return 'glibc malloc, freed memory reused (M_MMAP_MAX=0)'
