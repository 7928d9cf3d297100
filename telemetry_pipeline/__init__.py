"""CodeStream's nightly phone home as Dagster assets: extract, redact and summarise, publish."""

from telemetry_pipeline.memory import keeping_freed_memory, without_transparent_huge_pages

# Before pyarrow loads and before the first large buffer: see memory.py.
keeping_freed_memory()
without_transparent_huge_pages()

from telemetry_pipeline.definitions import defs  # noqa: E402

__all__ = ["defs"]
