"""CodeStream's nightly phone home as Dagster assets: extract, redact and summarise, publish."""

from telemetry_pipeline.definitions import defs

__all__ = ["defs"]
