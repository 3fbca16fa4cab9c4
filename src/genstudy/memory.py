"""Keep freed memory in the process between training steps (glibc's malloc).

A training step allocates the same large tensors every time (E2's convnet: 17 MB for the
first conv's output and again for its gradient; E7's at batch 512: 51 MB each). glibc
serves blocks above its mmap threshold with fresh mmap()s and returns freed memory at the
top of the heap to the OS once more than the trim threshold is free, so every step touches
new pages, and each first touch is a page fault: ~10,000 faults per E2 step, ~94,000 per E7
step, costing the plain E2 step about a third of its time on this machine (a virtual
machine, where a page fault is dear). Raising both thresholds lets the blocks be reused.
Only where the memory comes from changes, never a value computed.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3   # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20   # the largest glibc accepts; bigger blocks still come from mmap
TRIM_THRESHOLD = 1 << 30    # hand memory back to the OS only when a GiB is free at the top

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; False where not glibc.

    The process then keeps up to its peak memory until it exits (the study's stages are
    one run each, so nothing else is waiting for that memory).
    """
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # musl and other libcs have no mallopt
        return False
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    ok_trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    _done = bool(ok_mmap and ok_trim)
    return _done
