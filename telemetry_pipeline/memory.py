"""How the pipeline's process keeps the memory Arrow frees, for the next night to reuse.

A night of a large installation passes hundreds of megabytes through Arrow (a 35 MB payload
built, hashed, written, read back). Arrow's default allocator hands freed memory back to the
system within milliseconds; on a virtual machine that returns free memory to its host (free page
reporting, as on the machines measured in docs/PERFORMANCE.md) every megabyte taken back costs
about 2 ms to touch again, a second or more of a large night. jemalloc, with a decay of a minute,
keeps what a run freed for the run to reuse, and still returns it once the run is done with it.
"""

from __future__ import annotations

import pyarrow as pa

FREED_MEMORY_KEPT_MS = 60_000


def reuse_freed_memory() -> None:
    """Make jemalloc (decay a minute) Arrow's allocator, where pyarrow has it; else leave the default."""
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(FREED_MEMORY_KEPT_MS)
    except NotImplementedError:  # a pyarrow built without jemalloc
        return
    pa.set_memory_pool(pool)
