"""The process's memory settings, applied once when the package is imported."""

from __future__ import annotations

import ctypes
import sys

_PR_SET_THP_DISABLE = 41  # linux/prctl.h


def without_transparent_huge_pages() -> bool:
    """Transparent huge pages off for this process (Linux only); True when the kernel agreed.

    Arrow's allocator (mimalloc) and numpy ask for 2 MB pages for large buffers. A night's buffers
    are tens of megabytes, and a huge page is zeroed whole the first time it is touched; on VMs that
    give freed memory back to their host, as the one docs/PERFORMANCE.md measures, that costs
    2.4 ms a megabyte against 0.4 ms with ordinary pages: one large night took 1.4-1.5 s with them
    and 1.1 s without. Redis and MongoDB give their servers the same advice."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
