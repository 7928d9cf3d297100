"""Where the pipeline keeps its own files when the environment does not say."""

from __future__ import annotations

import os
from pathlib import Path

OUTBOX_DIR_ENV = "TELEMETRY_OUTBOX_DIR"
ARCHIVE_DIR_ENV = "TELEMETRY_ARCHIVE_DIR"


def data_dir() -> Path:
    """``$XDG_DATA_HOME/telemetry-pipeline``, by default ``~/.local/share/telemetry-pipeline``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "telemetry-pipeline"


def default_outbox_dir() -> Path:
    return data_dir() / "outbox"


def default_archive_dir() -> Path:
    return data_dir() / "archive"


def archive_dir() -> Path:
    """Where every delivered payload is kept: ``TELEMETRY_ARCHIVE_DIR``, else ``<data dir>/archive``."""
    return Path(os.environ.get(ARCHIVE_DIR_ENV) or default_archive_dir())


def demo_dir() -> Path:
    return data_dir() / "demo"
