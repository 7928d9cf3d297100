"""CodeStream's nightly phone home as Dagster assets: extract, redact and summarise, publish."""

from telemetry_pipeline.memory import without_transparent_huge_pages

without_transparent_huge_pages()  # before the first large buffer: see memory.py

from telemetry_pipeline.definitions import defs  # noqa: E402

__all__ = ["defs"]
