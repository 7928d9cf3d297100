"""The nightly schedule that builds each night, and the sensor that sends what it built."""

import datetime as dt
import json
import os
from dataclasses import dataclass, field

import dagster as dg

from telemetry_pipeline import gate
from telemetry_pipeline.nights import first_night, last_complete_night
from telemetry_pipeline.resources import CodeStreamConfigResource

SCHEDULE_CRON_ENV = "TELEMETRY_SCHEDULE_CRON"
DEFAULT_SCHEDULE_CRON = "0 6 * * *"  # 06:00 UTC
SENSOR_INTERVAL_SECONDS = 60
MAX_RUNS_PER_TICK = 10
RETRY_BACKOFF_FIRST_SECONDS = 60
RETRY_BACKOFF_MAX_SECONDS = 3600
# Longer than the longest publish: 5 tries with backoff, Retry-After capped at 300 s, timeouts.
STALE_PUBLISH_RUN_SECONDS = 3600
NIGHT_TAG = "telemetry/night"
SUMMARY_TAG = "telemetry/summary_storage_id"

nightly_job = dg.define_asset_job(
    "nightly_job",
    selection=dg.AssetSelection.assets(gate.SUMMARY_KEY).upstream(),
    description="Extract the night and build its summary; the sensor then publishes it.",
)
publish_job = dg.define_asset_job(
    "publish_job",
    selection=dg.AssetSelection.assets(gate.PUBLISH_KEY),
    description="Send one night's summary home.",
    # The sensor re-sends a failed night with backoff; an immediate run retry would not wait.
    tags={"dagster/max_retries": "0"},
)


@dg.schedule(
    job=nightly_job,
    cron_schedule=os.environ.get(SCHEDULE_CRON_ENV) or DEFAULT_SCHEDULE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_schedule(context: dg.ScheduleEvaluationContext):
    """Builds the most recent complete UTC night."""
    night = last_complete_night(context.scheduled_execution_time)
    if night < first_night():
        return dg.SkipReason(f"night {night} is before TELEMETRY_START_DATE")
    return dg.RunRequest(run_key=night.isoformat(), partition_key=night.isoformat())


@dataclass
class PublishPlan:
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cursor: str = ""


def retry_backoff_seconds(failures: int) -> int:
    """About a minute after the first failed try, doubling, capped at an hour."""
    return min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_FIRST_SECONDS * 2 ** max(0, failures - 1))


def plan_publish(
    instance: dg.DagsterInstance, cursor: str | None, disable_phone_home_now: bool, now: dt.datetime
) -> PublishPlan:
    """Which nights to send on this tick, oldest first, and the cursor to keep.

    The cursor holds the last summary event seen and the nights still waiting for delivery
    (night -> storage id of the summary to deliver), so a tick reads only what is new.
    """
    state = json.loads(cursor) if cursor else {}
    after: int | None = state.get("after")
    pending: dict[str, int] = state.get("pending", {})
    storage = instance.event_log_storage
    new = storage.get_latest_storage_id_by_partition(
        gate.SUMMARY_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, after_cursor=after
    )
    for night, storage_id in new.items():
        pending[night] = storage_id
        after = max(after or 0, storage_id)
    if pending:
        published = storage.get_latest_storage_id_by_partition(
            gate.PUBLISH_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=set(pending)
        )
        for night, storage_id in published.items():
            if storage_id > pending.get(night, storage_id):
                del pending[night]

    plan = PublishPlan()
    for night in sorted(pending):
        if len(plan.run_requests) >= MAX_RUNS_PER_TICK:
            plan.notes.append(f"{len(pending) - len(plan.run_requests)} more nights wait for the next tick")
            break
        summary_id = pending[night]
        verdict = _night_verdict(instance, night, summary_id, disable_phone_home_now, now)
        if isinstance(verdict, dg.RunRequest):
            plan.run_requests.append(verdict)
            continue
        settled, note = verdict
        plan.notes.append(f"night {night}: {note}")
        if settled:
            del pending[night]
    plan.cursor = json.dumps({"after": after, "pending": pending}, sort_keys=True)
    return plan


def _night_verdict(instance, night, summary_id, disable_phone_home_now, now):
    """A run request, or (settled, why not now): settled nights leave the cursor for good."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=gate.SUMMARY_KEY, storage_ids=[summary_id]), limit=1
    ).records
    if not records:
        return True, "its summary is gone from the instance"
    record = records[0]
    summary_run = instance.get_run_by_id(record.run_id)
    if summary_run is not None and not summary_run.is_finished:
        return False, "waiting for the run that built its summary to finish"
    metadata = record.asset_materialization.metadata
    summary_row = {
        "send": metadata["send"].value,
        "send_reason": metadata["send_reason"].value,
        "paid_companies": metadata["paid_companies"].value,
    }
    decision = gate.summary_gate(summary_row, disable_phone_home_now)
    if decision.open:
        decision = gate.opted_out_history_gate(instance, night)
    if decision.open:
        decision = gate.checks_gate(instance, record)
    if not decision.open:
        return True, f"not sent: {decision.reason}"

    tags = {NIGHT_TAG: night, SUMMARY_TAG: str(summary_id)}
    runs = instance.get_runs(dg.RunsFilter(tags=tags))
    for run in runs:
        if run.is_finished:
            continue
        started = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
        if now.timestamp() - started < STALE_PUBLISH_RUN_SECONDS:
            return False, "a publish run is under way"
        # The default run launcher cannot see a killed process; a publish run silent this long
        # is dead, and the night goes again (the collector dedupes by Idempotency-Key).
        instance.report_run_failed(run, message=f"no end after {STALE_PUBLISH_RUN_SECONDS} s: presumed killed")
        # A dead sender still holds the phone_home pool's one slot; give it back.
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    runs = instance.get_runs(dg.RunsFilter(tags=tags))
    failed = [run for run in runs if run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
    if failed:
        last_end = max((instance.get_run_record_by_id(run.run_id).end_time or 0) for run in failed)
        wait = retry_backoff_seconds(len(failed))
        if now.timestamp() < last_end + wait:
            return False, f"{len(failed)} failed tries; next try after {wait} s backoff"
    return dg.RunRequest(
        run_key=f"{night}:{summary_id}:{len(failed)}", partition_key=night, tags=tags
    )


@dg.sensor(
    job=publish_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def phone_home_sensor(context: dg.SensorEvaluationContext, codestream_config: CodeStreamConfigResource):
    """Sends each new night summary whose gate is open, and re-sends failed nights with backoff."""
    try:
        disable_now = codestream_config.load().disable_phone_home
    except Exception as error:  # a broken configuration is stated, and nothing is requested
        return dg.SkipReason(f"configuration unusable: {error}")
    plan = plan_publish(context.instance, context.cursor, disable_now, dt.datetime.now(dt.timezone.utc))
    context.update_cursor(plan.cursor)
    if plan.run_requests:
        for note in plan.notes:
            context.log.info(note)
        return plan.run_requests
    return dg.SkipReason("; ".join(plan.notes) or "no new night summary")
