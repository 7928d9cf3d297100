"""Files that must survive a crash whole (outbox payloads, archived bodies, receipts)."""

from __future__ import annotations

import contextlib
import errno
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
            written = _write_direct(handle, view)
            while written < len(view):
                written += _written(os.pwrite(handle, view[written:], written))
            _sync_data(handle)
            with contextlib.suppress(OSError, AttributeError):  # only a hint
                os.posix_fadvise(handle, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(handle)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)  # the rename itself survives a crash


def _write_direct(handle: int, view: memoryview) -> int:
    """The whole blocks at the start of ``view`` written to ``handle`` past the page cache; how
    many bytes were written (0 when the data is small or unaligned, or the filesystem cannot)."""
    if not hasattr(os, "O_DIRECT") or len(view) < _DIRECT_FROM or np.frombuffer(view, np.uint8).ctypes.data % _BLOCK:
        return 0
    import fcntl

    blocks = len(view) - len(view) % _BLOCK
    flags = fcntl.fcntl(handle, fcntl.F_GETFL)
    written = 0
    try:
        fcntl.fcntl(handle, fcntl.F_SETFL, flags | os.O_DIRECT)
        while written < blocks:
            written += _written(os.pwrite(handle, view[written:blocks], written))
    except OSError:  # no direct I/O here (tmpfs), or refused part way: all of it the usual way
        written = 0
    finally:
        fcntl.fcntl(handle, fcntl.F_SETFL, flags)
    return written


def _written(count: int) -> int:
    if count <= 0:
        raise OSError(errno.EIO, "nothing written")
    return count


def _sync_data(descriptor: int) -> None:
    (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(descriptor)


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform whose folders cannot be opened (Windows): the rename is what it is
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # a folder that cannot be synced
            raise
    finally:
        os.close(descriptor)
