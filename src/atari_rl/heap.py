"""Keep the memory of freed tensors in the process instead of handing it back at once.

glibc serves large allocations with fresh pages from the kernel and returns them when
they are freed, and torch frees and allocates the same large activations and gradients at
every update. Each new page costs a page fault and a zeroing. One compiled bf16 PPO
minibatch of 256 (forward, backward, Adam; 2 threads) had about 2,900 faults and 4.7 ms of
system time in 28-29 ms; with the thresholds below, 0 faults and 24 ms (README, "Why the
speed-ups stop where they do"). `tests/test_heap.py` counts an eager learner step's:
about 14,000 a step without, 0 with, in bf16 on a CPU with AVX-512 BF16; in fp32 on an
AVX2 CPU 5,400-7,000 without and 640-1,400 with (the rest not traced to their source).
The heap then keeps up to `TRIM_BYTES` of freed memory at its top for reuse.

It is set when atari_rl is imported, before torch loads and allocates: set after, one
eager learner step still faulted about 350 times a step. A user who sets glibc's own
variables keeps them.
"""

from __future__ import annotations

import ctypes
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 * 2**20  # glibc's upper limit: blocks up to this come from the heap
TRIM_BYTES = 128 * 2**20  # freed memory at the heap's top kept for reuse
OVERRIDES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own variables
TUNABLES = ("malloc.mmap_threshold", "malloc.trim_threshold")  # in GLIBC_TUNABLES


def is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or not glibc
        return False


def user_set_thresholds() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(name in os.environ for name in OVERRIDES) or any(t in tunables for t in TUNABLES)


def keep_freed_memory() -> bool:
    """Set glibc's thresholds, unless the environment sets them or the C library is not
    glibc; True when both were set."""
    if not is_glibc() or user_set_thresholds():
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
