"""Keep the memory of freed tensors in the process instead of handing it back at once.

glibc serves large allocations with fresh pages from the kernel and returns them when
they are freed, and torch frees and allocates the same large activations and gradients at
every update. Each new page costs a page fault and a zeroing: in a PPO minibatch of 256
(forward, backward, Adam; 2 threads, bf16) that was 2,900 faults and about 4 ms of system
time in 28-31 ms. Raising the thresholds below makes glibc reuse those pages: 0 faults and
24-25 ms (README, "Why the speed-ups stop where they do"). The heap then keeps up to
`TRIM_BYTES` of freed memory; a run's replay memory or rollout is far larger anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 * 2**20  # glibc's upper limit: blocks up to this come from the heap
TRIM_BYTES = 128 * 2**20  # freed memory at the heap's top kept for reuse
OVERRIDES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own variables


def keep_freed_memory() -> bool:
    """Set glibc's thresholds, unless the environment sets them or the C library is not
    glibc; True when they were set."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in OVERRIDES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
