"""The process's memory settings, applied once when the package is imported."""

from __future__ import annotations

import ctypes
import os
import sys

_PR_SET_THP_DISABLE = 41  # linux/prctl.h
# mimalloc's own setting, read once when pyarrow (which links it) loads.
_ARROW_PURGE_DELAY = "MIMALLOC_PURGE_DELAY"


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


def keeping_freed_memory() -> bool:
    """Arrow's allocator keeps the memory a night frees for the next night's buffers, instead of
    handing it back to the system (10 ms after it is freed, by default); True when it will.

    Each night builds buffers of the same sizes as the night before (a 35 MB payload, its copies,
    its compressed form). Handed back, they are fresh memory again the next night, and fresh memory
    is what costs on VMs like the one docs/PERFORMANCE.md measures: a 30-night run took half its
    page faults and 1.1-1.3 s less system time with it. The setting is read when pyarrow loads, so
    it applies only when the package is imported first; one set in the environment is kept."""
    if "pyarrow" in sys.modules:
        return os.environ.get(_ARROW_PURGE_DELAY) == "-1"
    os.environ.setdefault(_ARROW_PURGE_DELAY, "-1")
    return os.environ[_ARROW_PURGE_DELAY] == "-1"
