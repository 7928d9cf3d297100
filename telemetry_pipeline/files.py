"""Files that must survive a crash whole (outbox payloads, archived bodies, receipts)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

# Large files go to disk without the page cache (O_DIRECT), in whole blocks from a block-aligned
# buffer; the last partial block, small files and filesystems without direct I/O go the usual way.
_BLOCK = 4096
_DIRECT_FROM = 4 * 2**20


def write_durably(target: Path, data: bytes | memoryview, *, prefix: str, suffix: str = ".tmp") -> None:
    """``data`` as ``target``, mode 0600: written aside, on disk, then renamed into place, so a
    reader (or a crash) sees the old file or the new one, never half of one.

    Nothing reads these files back soon, and a backfill writes gigabytes of them, so they do not stay
    in the page cache: a large file is written directly to disk, the rest dropped once on disk.
    Cached, each would take fresh memory, which on VMs that return freed memory to their host costs
    more than writing it (docs/PERFORMANCE.md)."""
    view = memoryview(data).cast("B")
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=suffix)  # 0600
    try:
        try:
            written = _write_direct(temporary, view)
            while written < len(view):
                written += os.pwrite(handle, view[written:], written)
            _sync_data(handle)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(handle)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)  # the rename itself survives a crash


def _write_direct(path: str, view: memoryview) -> int:
    """The whole blocks at the start of ``view`` written past the page cache; how many bytes were
    written (0 when the data is small or unaligned, or the filesystem cannot)."""
    if not hasattr(os, "O_DIRECT") or len(view) < _DIRECT_FROM or np.frombuffer(view, np.uint8).ctypes.data % _BLOCK:
        return 0
    blocks = len(view) - len(view) % _BLOCK
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_DIRECT)
    except OSError:  # tmpfs and others: no direct I/O
        return 0
    written = 0
    try:
        while written < blocks:
            written += os.write(descriptor, view[written:blocks])
    except OSError:  # refused part way: all of it is written again the usual way
        return 0
    finally:
        os.close(descriptor)
    return written


def _sync_data(descriptor: int) -> None:
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(descriptor)


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): the rename is what it is
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
