"""The nightly partitions shared by every asset, and how a run learns its nights."""

import contextlib
import datetime as dt
import warnings
from collections.abc import Iterator

import dagster as dg

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import first_night, nights_between

# end_offset=0: the newest partition is the last complete UTC night.
nightly_partitions = dg.DailyPartitionsDefinition(
    start_date=first_night().isoformat(), timezone="UTC", end_offset=0
)

# A backfill of many nights is one run whose steps see the whole range at once. Backfill
# policies are marked beta in Dagster 1.13; the warning would greet every command, so it is
# silenced here, once, for that parameter alone.
SINGLE_RUN = dg.BackfillPolicy.single_run()
warnings.filterwarnings("ignore", message=".*`backfill_policy`.*", category=dg.BetaWarning)

OWNERS = ["team:telemetry"]


def run_nights(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The nights of this run, oldest first: one for a nightly run, many for a backfill."""
    window = context.partition_time_window
    return nights_between(window.start.date(), (window.end - dt.timedelta(days=1)).date())


@contextlib.contextmanager
def failing_clearly() -> Iterator[None]:
    """Bad input fails the run with its one-line message, not a traceback to dig through."""
    try:
        yield
    except TelemetryError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from None
