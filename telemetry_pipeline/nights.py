"""Nights: UTC calendar days, the unit of every partition, query window and payload."""

from __future__ import annotations

import datetime as dt
import os
import re

from telemetry_pipeline.errors import TelemetryError

DAY_MS = 86_400_000
DEFAULT_START_DATE = "2020-01-01"


_NIGHT_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_night(text: str, *, what: str = "date") -> dt.date:
    """A night written as YYYY-MM-DD, and only so (fromisoformat alone also takes 20261126)."""
    try:
        if not _NIGHT_FORMAT.fullmatch(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise TelemetryError(f"{what} {text!r} is not a night: expected YYYY-MM-DD") from None


def night_start_ms(night: dt.date) -> int:
    """Milliseconds since the epoch at the night's first instant, 00:00:00.000Z."""
    return (night - dt.date(1970, 1, 1)).days * DAY_MS


def night_bounds_ms(night: dt.date) -> tuple[int, int]:
    """The half-open interval [start, end) of the night, in epoch milliseconds."""
    start = night_start_ms(night)
    return start, start + DAY_MS


def last_complete_night(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)


def first_night() -> dt.date:
    """The first night of the partitions: ``TELEMETRY_START_DATE``, else 2020-01-01."""
    return parse_night(
        os.environ.get("TELEMETRY_START_DATE") or DEFAULT_START_DATE, what="TELEMETRY_START_DATE"
    )


def nights_between(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def check_night_in_range(night: dt.date) -> None:
    """Refuse a night outside the partitions, as Dagster would, but in one line."""
    first, last = first_night(), last_complete_night()
    if not first <= night <= last:
        raise TelemetryError(
            f"night {night.isoformat()} is outside the partitions {first.isoformat()}..{last.isoformat()}"
            " (first night from TELEMETRY_START_DATE; the last is the last complete UTC night)"
        )
