"""Operator commands around the Dagster instance: open it with clear errors, run a range of nights."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from telemetry_pipeline.errors import TelemetryError


def _env_names(node) -> list[str]:
    """Every ``{env: NAME}`` reference in a dagster.yaml document."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            return [node["env"]]
        return [name for value in node.values() for name in _env_names(value)]
    if isinstance(node, list):
        return [name for value in node for name in _env_names(value)]
    return []


def open_instance() -> dg.DagsterInstance:
    """The instance of DAGSTER_HOME, checked: its variables set and its database reachable.

    Without DAGSTER_HOME, a throwaway instance, as the dagster command line uses.
    """
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        return dg.DagsterInstance.ephemeral()
    config_file = Path(home) / "dagster.yaml"
    if config_file.exists():
        try:
            document = yaml.safe_load(config_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise TelemetryError(f"{config_file}: cannot be read: {' '.join(str(error).split())[:200]}") from None
        missing = [name for name in _env_names(document) if name not in os.environ]
        if missing:
            raise TelemetryError(f"{config_file}: environment variable {', '.join(missing)} not set")
        _probe_postgres_storage(config_file, document)
    try:
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # touches the run storage: its database must answer
    except Exception as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        password = os.environ.get("DAGSTER_PG_PASSWORD")
        if password:
            first_line = first_line.replace(password, "***")
        raise TelemetryError(f"the Dagster instance of DAGSTER_HOME={home} is unusable: {first_line.strip()[:300]}") from None
    return instance


def _resolve(value):
    return os.environ[value["env"]] if isinstance(value, dict) and "env" in value else value


def _probe_postgres_storage(config_file: Path, document: dict) -> None:
    """Reach the instance's PostgreSQL once, quickly, before Dagster retries it at length."""
    import psycopg2

    db = ((document.get("storage") or {}).get("postgres") or {}).get("postgres_db")
    if not isinstance(db, dict):
        return
    fields = {key: _resolve(db.get(key)) for key in ("hostname", "port", "username", "password", "db_name")}
    shown = f"postgresql://{fields['username']}@{fields['hostname']}:{fields['port'] or 5432}/{fields['db_name']}"
    try:
        psycopg2.connect(
            host=fields["hostname"], port=fields["port"] or 5432, user=fields["username"],
            password=fields["password"] or None, dbname=fields["db_name"], connect_timeout=5,
        ).close()
    except psycopg2.Error as error:
        reason = " ".join(str(error).split())
        if fields["password"]:
            reason = reason.replace(str(fields["password"]), "***")
        raise TelemetryError(
            f"cannot reach the Dagster instance database {shown} ({config_file}): {reason[:200]}"
        ) from None


def materialize_nights(instance: dg.DagsterInstance, first: dt.date, last: dt.date) -> dg.ExecuteInProcessResult:
    """Every asset and check for nights ``first``..``last`` as one run: the single-run backfill."""
    from telemetry_pipeline.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: first.isoformat(), ASSET_PARTITION_RANGE_END_TAG: last.isoformat()},
        raise_on_error=False,
    )
