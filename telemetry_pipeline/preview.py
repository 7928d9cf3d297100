"""One night's summary straight from the source, without Dagster: what `preview` prints.

It calls the same extract functions and payload builder as the assets, in the same order.
"""

from __future__ import annotations

import datetime as dt

from telemetry_pipeline.codestream_config import InstallationConfig
from telemetry_pipeline.rules.payload import NightSummary, build_night_summary
from telemetry_pipeline.source import extract
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline.source.schema import SOURCE_TABLES


def extract_night(database: SourceDatabase, night: dt.date) -> dict[str, list[dict]]:
    """The night's rows, as the extract assets read them, keyed as ``build_night_summary`` takes them."""
    with database.connect() as conn:
        conn.check_tables(list(SOURCE_TABLES))
        return {
            name: fn(conn, [night]).to_pylist()
            for name, fn in [
                ("companies", extract.extract_companies), ("teams", extract.extract_teams),
                ("users", extract.extract_users), ("activity", extract.extract_user_activity),
                ("code_reviews", extract.extract_code_reviews),
            ]
        }


def summarize_night(database: SourceDatabase, config: InstallationConfig, night: dt.date) -> NightSummary:
    return build_night_summary(night, config.facts, **extract_night(database, night))
