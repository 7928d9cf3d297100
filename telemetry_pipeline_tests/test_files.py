"""Files that must survive a crash whole: written aside, on disk, renamed into place, mode 0600."""

import mmap
import os
import stat

import pytest

from telemetry_pipeline import files
from telemetry_pipeline.files import write_durably


def test_the_file_holds_exactly_the_bytes_and_only_its_owner_reads_it(tmp_path):
    target = tmp_path / "night.json"
    write_durably(target, memoryview(b'{"date":"2026-11-26"}'), prefix=".pending-")
    assert target.read_bytes() == b'{"date":"2026-11-26"}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["night.json"]


def test_a_file_is_replaced_whole(tmp_path):
    target = tmp_path / "night.json"
    write_durably(target, b"old, and longer than the new one", prefix=".pending-")
    write_durably(target, b"new", prefix=".pending-")
    assert target.read_bytes() == b"new"


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path, monkeypatch):
    target = tmp_path / "night.json"
    write_durably(target, b"old", prefix=".pending-")

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "_sync_data", disk_full)  # fails once the new bytes are written aside
    with pytest.raises(OSError, match="No space left"):
        write_durably(target, b"new", prefix=".pending-")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["night.json"]


def _direct_io_works(folder) -> bool:
    path = folder / "probe"
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
        return True
    except (OSError, AttributeError):
        return False
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("offset", [0, 1])  # a block-aligned buffer goes past the page cache; another cannot
def test_a_large_file_holds_exactly_the_bytes_whichever_way_it_was_written(tmp_path, monkeypatch, offset):
    if offset == 0 and not _direct_io_works(tmp_path):
        pytest.skip("this filesystem has no direct I/O")
    size = 5 * 2**20 + 123  # whole blocks, then a partial one
    aligned = mmap.mmap(-1, size + offset)  # page-aligned memory
    aligned[:] = os.urandom(size + offset)
    data = memoryview(aligned)[offset:]
    direct, write_direct = [], files._write_direct

    def recording(handle, view):
        direct.append(write_direct(handle, view))
        return direct[-1]

    monkeypatch.setattr(files, "_write_direct", recording)
    target = tmp_path / "night.json"
    write_durably(target, data, prefix=".pending-")
    assert target.read_bytes() == bytes(data)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert direct == [size - size % 4096 if offset == 0 else 0]
