"""The one place the Dagster definitions are assembled."""

from __future__ import annotations

import os

import dagster as dg

from telemetry_pipeline.assets.extract import EXTRACT_ASSETS
from telemetry_pipeline.assets.publish import phone_home_delivery
from telemetry_pipeline.assets.summary import night_summary
from telemetry_pipeline.automation import nightly_job, nightly_schedule, phone_home_sensor, publish_job
from telemetry_pipeline.codestream_config import PHONE_HOME_URL_ENV
from telemetry_pipeline.delivery import ALLOW_PLAIN_HTTP_ENV
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.locations import ARCHIVE_DIR_ENV, OUTBOX_DIR_ENV
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline.source.database import SOURCE_URL_ENV

CONFIG_PATH_ENV = "CODESTREAM_CONFIG"
STORAGE_URL_ENV = "TELEMETRY_STORAGE_URL"

ASSETS = [*EXTRACT_ASSETS, night_summary, phone_home_delivery]


def _env(name: str) -> dg.EnvVar | None:
    """An optional setting: read from the environment at run time when set, else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict:
    return {
        "source_database": SourceDatabaseResource(url=_env(SOURCE_URL_ENV)),
        "codestream_config": CodeStreamConfigResource(
            path=_env(CONFIG_PATH_ENV), phone_home_url=_env(PHONE_HOME_URL_ENV)
        ),
        "phone_home": PhoneHomeResource(
            outbox_dir=_env(OUTBOX_DIR_ENV), archive_dir=_env(ARCHIVE_DIR_ENV),
            allow_plain_http=_env(ALLOW_PLAIN_HTTP_ENV),
        ),
        "parquet_io_manager": NightlyParquetIOManager(base_path=_env(STORAGE_URL_ENV)),
    }


defs = dg.Definitions(
    assets=ASSETS,
    jobs=[nightly_job, publish_job],
    schedules=[nightly_schedule],
    sensors=[phone_home_sensor],
    resources=default_resources(),
)
