"""Stores each night's slice of a table as its own Parquet file, so runs over many nights and
runs of one night read and write the same files.

A run of many nights (a single-run backfill of a year) never needs all of them in memory:

- an input may be taken as ``NightlyTables`` (declare it with ``NIGHTLY_TABLE``), which reads a
  night's file only when that night is asked for, and says which nights it hands over from memory;
- an asset whose nights are too large to hold together (the summary's payloads) writes each
  night as it is built with ``SpilledNights`` and returns them; the files are moved into place;
- within one in-process run, what the run itself just stored is handed to its readers from
  memory instead of being read back (the extracts share one snapshot's buffers across nights).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

NIGHT = "night"
# Parquet writing and reading release the GIL: two threads keep both cores busy.
_THREADS = 2


def write_night(table: pa.Table, stream) -> None:
    """One night's table as Parquet. Statistics only for the night column: min and max of a
    35 MB payload would be copied twice and dropped (too long to keep) anyway."""
    statistics = [NIGHT] if NIGHT in table.column_names else False
    pq.write_table(table, stream, compression="lz4", use_dictionary=False, write_statistics=statistics)


def read_night(stream) -> pa.Table:
    return pq.read_table(stream)


class NightlyTables(Mapping):
    """An asset's nights, oldest first, one Arrow table each, read (or built) when asked for."""

    def __init__(self, nights: Sequence[str], read: Callable[[str], pa.Table],
                 files: Mapping[str, Path] | None = None, held: Mapping[str, pa.Table] | None = None):
        self._nights = list(nights)
        self._read = read  # a night not held
        self.files = files  # when every night is already a file: night -> path
        self.held = dict(held or {})  # nights also still in memory, handed to the run's readers as they are

    def __getitem__(self, night: str) -> pa.Table:
        if night not in self._nights:
            raise KeyError(night)
        held = self.held.get(night)
        return held if held is not None else self._read(night)

    def __iter__(self) -> Iterator[str]:
        return iter(self._nights)

    def __len__(self) -> int:
        return len(self._nights)

    def to_table(self) -> pa.Table:
        """Every night in one table (all of them in memory: for small inputs and tests)."""
        return pa.concat_tables([self[night] for night in self._nights])


def _type_check(_context, value) -> dg.TypeCheck:
    return dg.TypeCheck(success=isinstance(value, (pa.Table, NightlyTables)),
                        description=None if isinstance(value, (pa.Table, NightlyTables)) else
                        f"expected a pyarrow Table or NightlyTables, got {type(value).__name__}")


NIGHTLY_TABLE = dg.DagsterType(
    name="NightlyTable",
    type_check_fn=_type_check,
    description="Rows with a night column: a pyarrow Table, or NightlyTables read one night at a time.",
)


def nights_of(value: pa.Table | NightlyTables) -> list[str]:
    """The nights an input holds, oldest first."""
    if isinstance(value, NightlyTables):
        return list(value)
    return sorted(pc.unique(value[NIGHT]).to_pylist()) if value.num_rows else []


def night_table(value: pa.Table | NightlyTables, night: str) -> pa.Table:
    """One night's rows of an input, whichever form it came in (empty when it has none)."""
    if isinstance(value, NightlyTables):
        return value[night]
    if value.num_rows and [bound.as_py() for bound in pc.min_max(value[NIGHT]).values()] == [night, night]:
        return value  # a run of one night: all of it, uncopied
    return value.filter(pc.equal(value[NIGHT], night))


def read_ahead(items: Sequence, load: Callable, *, ahead: int = 2) -> Iterator[tuple]:
    """``(item, load(item))`` in order, the next ``ahead`` items loading meanwhile, a thread each."""
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        upcoming = deque(pool.submit(load, item) for item in items[:ahead])
        for index, item in enumerate(items):
            loaded = upcoming.popleft().result()
            if index + ahead < len(items):
                upcoming.append(pool.submit(load, items[index + ahead]))
            yield item, loaded


class SpilledNights:
    """Nights written to Parquet files as they are built (by the asset's own threads, while it
    works on the next night), in a folder of their own; the IO manager moves the files into place.
    Memory holds the last night, however many the run has: the run's readers take it from there."""

    def __init__(self):
        self._folder = Path(tempfile.mkdtemp(prefix="telemetry-nights-"))
        self._files: dict[str, Path] = {}
        self._last: tuple[str, pa.Table] | None = None
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, ignore_errors=True)

    def add(self, night: str, table: pa.Table) -> None:
        path = self._folder / f"{night}.parquet"
        _write_file(table, path)
        self._files[night] = path
        self._last = (night, table)

    def tables(self) -> NightlyTables:
        files, held = dict(self._files), dict([self._last] if self._last else [])
        tables = NightlyTables(list(files), lambda night: _read_file(files[night]), files=files, held=held)
        tables._spill = self  # the folder lives as long as the tables that point into it
        return tables


def _write_file(table: pa.Table, path: Path) -> None:
    with open(path, "wb") as stream:
        write_night(table, stream)


def _read_file(path: Path) -> pa.Table:
    with open(path, "rb") as stream:
        return read_night(stream)


def split_by_night(table: pa.Table) -> dict[str, pa.Table]:
    """The table's rows by night, without copying rows that already come grouped by night."""
    parts: dict[str, list[pa.RecordBatch]] = {}
    mixed = []
    for batch in table.to_batches():
        if batch.num_rows == 0:
            continue
        low, high = pc.min_max(batch.column(NIGHT)).values()
        if low.as_py() == high.as_py():
            parts.setdefault(low.as_py(), []).append(batch)
        else:
            mixed.append(batch)
    if mixed:
        rows = pa.Table.from_batches(mixed, table.schema).combine_chunks()
        encoded = pc.dictionary_encode(rows[NIGHT]).combine_chunks()
        codes = encoded.indices.to_numpy()
        order = np.argsort(codes, kind="stable")
        rows, codes = rows.take(pa.array(order)), codes[order]
        bounds = np.searchsorted(codes, np.arange(len(encoded.dictionary) + 1))
        for code, night in enumerate(encoded.dictionary.to_pylist()):
            part = rows.slice(int(bounds[code]), int(bounds[code + 1] - bounds[code]))
            parts.setdefault(night, []).extend(part.to_batches())
    return {night: pa.Table.from_batches(batches, table.schema) for night, batches in parts.items()}


def _cheap_to_keep(table: pa.Table) -> bool:
    """Worth keeping in memory for the run's readers: small, or nights sharing one snapshot's
    buffers (a year of users is one snapshot sliced 365 times). A year of activity, row after
    row, is read back a night at a time instead."""
    held = table.get_total_buffer_size()  # shared buffers counted once
    return held <= 64 * 2**20 or held * 4 <= table.nbytes


class NightlyParquetIOManager(dg.ConfigurableIOManagerFactory):
    """Parquet per asset and night under ``base_path`` (a local path or a UPath such as ``s3://…``);
    unset, under the Dagster instance's storage directory."""

    base_path: str | None = None

    def create_io_manager(self, context: dg.InitResourceContext) -> _NightlyParquetStore:
        root = self.base_path or context.instance.storage_directory()
        return _NightlyParquetStore(UPath(root) / "telemetry")


class _NightlyParquetStore(dg.IOManager):
    def __init__(self, root: UPath):
        self.root = root
        # What this run stored, by asset and night: its readers in the same process take it from
        # here instead of reading the file back. Tables, and the spilled nights still held in memory.
        self._stored: dict[tuple[tuple[str, ...], str], pa.Table] = {}

    def _path(self, asset_key: dg.AssetKey, night: str) -> UPath:
        return self.root.joinpath(*asset_key.path) / f"{night}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | NightlyTables) -> None:
        nights = context.asset_partition_keys
        folder = self._path(context.asset_key, nights[0]).parent
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(obj, NightlyTables):
            for night in nights:
                if obj.files is not None:
                    self._place_file(obj.files[night], self._path(context.asset_key, night))
                else:
                    self._write(obj[night], self._path(context.asset_key, night))
            for night, table in obj.held.items():
                self._stored[(tuple(context.asset_key.path), night)] = table
            return
        parts = split_by_night(obj)
        empty = obj.slice(0, 0)
        with ThreadPoolExecutor(max_workers=_THREADS) as pool:
            for written in pool.map(
                lambda night: self._write(parts.get(night, empty), self._path(context.asset_key, night)), nights
            ):
                pass
        if _cheap_to_keep(obj):
            for night in nights:
                self._stored[(tuple(context.asset_key.path), night)] = parts.get(night, empty)

    def _write(self, table: pa.Table, path: UPath) -> None:
        with path.open("wb") as stream:
            write_night(table, stream)

    def _place_file(self, source: Path, target: UPath) -> None:
        """A spilled night into place: renamed when on the same local disk, else copied."""
        if target.protocol in ("", "file", "local"):
            try:
                os.replace(source, target.path)
                return
            except OSError:
                pass
        with open(source, "rb") as reader, target.open("wb") as writer:
            shutil.copyfileobj(reader, writer, 4 * 1024 * 1024)

    def load_input(self, context: dg.InputContext) -> pa.Table | NightlyTables:
        nights = context.asset_partition_keys
        key = tuple(context.asset_key.path)
        for night in nights:
            if (key, night) not in self._stored and not self._path(context.asset_key, night).exists():
                raise dg.Failure(
                    f"no stored {context.asset_key.to_user_string()} for night {night}: materialize it first",
                    allow_retries=False,
                )

        def read(night: str) -> pa.Table:
            with self._path(context.asset_key, night).open("rb") as stream:
                return read_night(stream)

        tables = NightlyTables(nights, read, held={night: self._stored[(key, night)] for night in nights
                                                   if (key, night) in self._stored})
        return tables if context.dagster_type.key == NIGHTLY_TABLE.key else tables.to_table()
