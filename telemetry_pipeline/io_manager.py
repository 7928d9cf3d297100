"""Stores each night's slice of a table as its own Parquet file, so runs over many nights and
runs of one night read and write the same files."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath


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

    def _path(self, asset_key: dg.AssetKey, night: str) -> UPath:
        return self.root.joinpath(*asset_key.path) / f"{night}.parquet"

    def handle_output(self, context: dg.OutputContext, table: pa.Table) -> None:
        for night in context.asset_partition_keys:
            part = table.filter(pc.equal(table["night"], night))
            path = self._path(context.asset_key, night)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as stream:
                pq.write_table(part, stream)

    def load_input(self, context: dg.InputContext) -> pa.Table:
        parts = []
        for night in context.asset_partition_keys:
            path = self._path(context.asset_key, night)
            if not path.exists():
                raise dg.Failure(
                    f"no stored {context.asset_key.to_user_string()} for night {night}: materialize it first",
                    allow_retries=False,
                )
            with path.open("rb") as stream:
                parts.append(pq.read_table(stream))
        return pa.concat_tables(parts)
