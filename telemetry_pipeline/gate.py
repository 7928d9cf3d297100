"""The publish gate, read from the Dagster instance: shared by the sensor and the publish asset.

A night may go home only when its latest summary says it may (no opt-out on a paid
installation) and every check on that summary passed in the run that made it.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

SUMMARY_KEY = dg.AssetKey("night_summary")
PUBLISH_KEY = dg.AssetKey("phone_home_delivery")
GATING_CHECKS = ("no_email_outside_free_companies", "payload_has_documented_keys")
_HISTORY_PAGE = 1000  # records a query of summary_history


@dataclass(frozen=True)
class Gate:
    open: bool
    reason: str


def summary_history(instance: dg.DagsterInstance, nights: list[str]) -> dict[str, list[dg.EventLogRecord]]:
    """Every materialization of the summary for each of these nights, newest first: for a
    backfill's nights, a few queries in all instead of two a night."""
    history: dict[str, list[dg.EventLogRecord]] = {night: [] for night in nights}
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SUMMARY_KEY, asset_partitions=nights), limit=_HISTORY_PAGE, cursor=cursor,
            ascending=False,
        )
        for record in result.records:
            history[record.partition_key].append(record)
        if not result.has_more:
            return history
        cursor = result.cursor


def opted_out_history_gate(instance: dg.DagsterInstance, night: str) -> Gate:
    """A night built while opted out is never sent, even if rebuilt after the opt-out is lifted."""
    return opted_out_gate(summary_history(instance, [night])[night])


def opted_out_gate(summary_records: list[dg.EventLogRecord]) -> Gate:
    """``opted_out_history_gate`` on a night's summary records (``summary_history``)."""
    for record in summary_records:
        send = record.asset_materialization.metadata.get("send")
        if send is not None and send.value is False:
            reason = record.asset_materialization.metadata["send_reason"].value
            return Gate(False, f"the night was built while opted out ({reason})")
    return Gate(True, "never opted out")


def checks_gate(instance: dg.DagsterInstance, summary_record: dg.EventLogRecord) -> Gate:
    """Open only if each gating check ran in the summary's run and passed."""
    records = instance.get_records_for_run(
        summary_record.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    passed: dict[str, bool] = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.asset_key == SUMMARY_KEY and evaluation.check_name in GATING_CHECKS:
            passed[evaluation.check_name] = passed.get(evaluation.check_name, True) and evaluation.passed
    failed = [name for name in GATING_CHECKS if not passed.get(name, False)]
    if failed:
        missing = [name for name in failed if name not in passed]
        how = "did not run" if missing == failed else "failed"
        return Gate(False, f"check {', '.join(failed)} {how} on the summary (run {summary_record.run_id[:8]})")
    return Gate(True, "checks passed")


def summary_gate(summary_row: dict, disable_phone_home_now: bool) -> Gate:
    """The opt-out as the summary recorded it, and as the configuration says now."""
    if not summary_row["send"]:
        return Gate(False, summary_row["send_reason"])
    if disable_phone_home_now and summary_row["paid_companies"]:
        return Gate(False, "opted out: apiServer.disablePhoneHome is now true and a company is on a paid plan")
    return Gate(True, summary_row["send_reason"])
