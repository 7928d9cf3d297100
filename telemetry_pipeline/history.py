"""What became of each night: sent, in the outbox, opted out, blocked, failed, or pending.

Read from the archive (what left, with its receipts), the outbox, and the Dagster instance
(summaries, publish materializations, failed runs). A plain function over those; `telemetry-pipeline
history` prints it.

For each night, first match wins:

1. **failed**: the newest thing that happened to the night is a failed run (its error is shown);
   the sensor tries a failed publish again by itself;
2. **sent**: a delivery is on record: a receipt in the archive, or a publish that says "sent";
3. **in outbox**: its payload was written to the outbox (offline mode) and is waiting for
   `telemetry-pipeline upload`, or has left the outbox since;
4. **opted out**: a summary of the night was built while the opt-out held, or its publish said so;
5. **blocked**: its publish refused it for another reason (a check on the summary);
6. **pending**: its summary is built and nothing has sent it yet (the sensor will).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from telemetry_pipeline import archive, gate
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import nights_between, parse_night
from telemetry_pipeline.upload import OUTBOX_NAME, SENT_FOLDER

PAGE = 1000
FAILED_STATUSES = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass(frozen=True)
class NightState:
    night: str
    state: str  # sent, in outbox, opted out, blocked, failed, pending
    detail: str
    at: str | None = None  # when the deciding event happened, ISO UTC
    http_status: int | None = None
    attempts: int | None = None
    body_sha256: str | None = None
    payload_sha256: str | None = None
    archived_body: str | None = None
    run_id: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Failure:
    at: float
    run_id: str
    error: str


@dataclass
class _Night:
    summary: dg.EventLogRecord | None = None
    opted_out_reason: str | None = None
    publish: dg.EventLogRecord | None = None
    failure: _Failure | None = None
    delivery: archive.ArchivedNight | None = None
    outbox_file: Path | None = None


def night_history(
    instance: dg.DagsterInstance | None,
    archive_dirs: list[str | os.PathLike],
    outbox_dir: str | os.PathLike | None = None,
    first: dt.date | None = None,
    last: dt.date | None = None,
) -> list[NightState]:
    """Each night anything is known of, oldest first, with its state; ``first``/``last`` bound it."""
    nights: dict[str, _Night] = {}

    def night(key: str) -> _Night:
        return nights.setdefault(key, _Night())

    for folder in archive_dirs:
        for entry in archive.read_archive(folder):
            known = night(entry.night).delivery
            if known is None or entry.latest["sentAt"] > known.latest["sentAt"]:
                night(entry.night).delivery = entry
    if outbox_dir and Path(outbox_dir).is_dir():
        for path in Path(outbox_dir).iterdir():
            match = OUTBOX_NAME.fullmatch(path.name)
            if match and path.is_file():
                night(match["night"]).outbox_file = path
    if instance is not None:
        _read_instance(instance, night)

    low, high = first.isoformat() if first else "", last.isoformat() if last else "9999"
    return [_state(key, nights[key]) for key in sorted(nights) if low <= key <= high]


def _read_instance(instance: dg.DagsterInstance, night) -> None:
    for record in _all_materializations(instance, gate.SUMMARY_KEY):  # oldest first
        known = night(record.partition_key)
        known.summary = record
        send = record.asset_materialization.metadata.get("send")
        if send is not None and send.value is False and known.opted_out_reason is None:
            known.opted_out_reason = record.asset_materialization.metadata["send_reason"].value
    for record in _all_materializations(instance, gate.PUBLISH_KEY):
        night(record.partition_key).publish = record
    for run_record in instance.get_run_records(dg.RunsFilter(statuses=FAILED_STATUSES)):
        run = run_record.dagster_run
        at = (run_record.end_time or run_record.update_timestamp.timestamp())
        for key, error in _failures_of_run(instance, run).items():
            known = night(key)
            if known.failure is None or at > known.failure.at:
                known.failure = _Failure(at, run.run_id, error)


def _all_materializations(instance: dg.DagsterInstance, asset_key: dg.AssetKey):
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key), limit=PAGE, cursor=cursor, ascending=True
        )
        yield from (r for r in result.records if r.partition_key)
        if not result.has_more:
            return
        cursor = result.cursor


def _run_nights(run: dg.DagsterRun) -> list[str]:
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    if ASSET_PARTITION_RANGE_START_TAG in tags and ASSET_PARTITION_RANGE_END_TAG in tags:
        try:
            first = parse_night(tags[ASSET_PARTITION_RANGE_START_TAG])
            last = parse_night(tags[ASSET_PARTITION_RANGE_END_TAG])
        except TelemetryError:  # a hand-made tag; such a run is no night's
            return []
        return [n.isoformat() for n in nights_between(first, last)]
    return []


def _failures_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dict[str, str]:
    """night -> error: a publish failure names its night; any other failure is every night's."""
    run_nights = _run_nights(run)
    if not run_nights:
        return {}
    errors: dict[str, str] = {}
    everyone: str | None = None
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data
        user = data.user_failure_data
        message = _one_line(user.description if user and user.description else None) or _one_line(
            data.error.message if data.error else ""
        ) or f"step {event.step_key} failed"
        night_value = user.metadata.get("night") if user and user.metadata else None
        if night_value is not None and night_value.value in run_nights:
            errors[night_value.value] = message
        elif everyone is None:
            everyone = f"step {event.step_key} failed: {message}"
    if everyone is None and not errors:
        records = instance.get_records_for_run(
            run.run_id, of_type={dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED}
        ).records
        messages = [r.event_log_entry.dagster_event.message or "" for r in records]
        everyone = _one_line(messages[-1] if messages else "") or f"the run ended {run.status.value.lower()}"
    if everyone is not None:
        for key in run_nights:
            errors.setdefault(key, everyone)
    return errors


def _one_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def _iso(timestamp: float) -> str:
    moment = dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _meta(record: dg.EventLogRecord, name: str, default=None):
    value = record.asset_materialization.metadata.get(name)
    return default if value is None else value.value


def _state(key: str, n: _Night) -> NightState:
    delivered_at = archive.parse_iso(n.delivery.latest["sentAt"]).timestamp() if n.delivery else None
    publish_at = n.publish.timestamp if n.publish else None
    summary_at = n.summary.timestamp if n.summary else None
    newest_else = max([t for t in (delivered_at, publish_at, summary_at) if t is not None], default=None)

    if n.failure and (newest_else is None or n.failure.at > newest_else):
        before = f" (sent before, {n.delivery.latest['sentAt']})" if n.delivery else ""
        return NightState(key, "failed", f"{n.failure.error} [run {n.failure.run_id[:8]}]{before}",
                          at=_iso(n.failure.at), run_id=n.failure.run_id)
    if n.delivery:  # it left: nothing that happened since undoes that
        return _sent(key, n.delivery)

    outcome = _meta(n.publish, "outcome") if n.publish else None
    if outcome == "sent":
        return NightState(key, "sent", f"HTTP {_meta(n.publish, 'http_status')} after {_meta(n.publish, 'attempts')}"
                          f" attempt(s) to {_meta(n.publish, 'destination')}; NOT IN THE ARCHIVE",
                          at=_iso(publish_at), http_status=_meta(n.publish, "http_status"),
                          attempts=_meta(n.publish, "attempts"), payload_sha256=_meta(n.publish, "payload_sha256"),
                          run_id=n.publish.run_id)
    if n.outbox_file is not None:
        return NightState(key, "in outbox", f"{n.outbox_file}: waiting for `telemetry-pipeline upload`",
                          at=_iso(publish_at) if publish_at else None)
    if outcome == "written to outbox":
        return NightState(key, "in outbox", f"{_meta(n.publish, 'destination')}: no longer in the outbox"
                          " (uploaded from elsewhere, or removed)", at=_iso(publish_at), run_id=n.publish.run_id)

    reason = _meta(n.publish, "reason", "") if outcome == "not sent" else ""
    if n.opted_out_reason or "opted out" in reason:
        return NightState(key, "opted out", n.opted_out_reason or reason,
                          at=_iso(publish_at or summary_at) if (publish_at or summary_at) else None)
    if outcome == "not sent":
        return NightState(key, "blocked", reason, at=_iso(publish_at), run_id=n.publish.run_id)
    if n.summary is not None:
        return NightState(key, "pending", f"summary built {_iso(summary_at)}; the phone_home_sensor sends it next",
                          at=_iso(summary_at), payload_sha256=_meta(n.summary, "payload_sha256"),
                          run_id=n.summary.run_id)
    return NightState(key, "pending", "nothing built yet")


def _sent(key: str, delivery: archive.ArchivedNight) -> NightState:
    latest = delivery.latest
    attempts = latest["attempts"]
    detail = (
        f"{latest['sentAt']}: HTTP {latest['httpStatus']} after {attempts} attempt{'s' if attempts != 1 else ''}"
        f" to {latest['destination']}, by {latest['sentBy']}; body sha256 {latest['bodySha256']}"
    )
    if len(delivery.deliveries) > 1:
        detail += f"; sent {len(delivery.deliveries)} times"
    problems = delivery.problems()
    detail += f"; ARCHIVE DAMAGED: {', '.join(problems)}" if problems else f"; kept in {delivery.body_path}"
    return NightState(key, "sent", detail, at=latest["sentAt"], http_status=latest["httpStatus"], attempts=attempts,
                      body_sha256=latest["bodySha256"], payload_sha256=latest["payloadSha256"],
                      archived_body=str(delivery.body_path))


def default_sources() -> tuple[list[Path], Path]:
    """The archive folders and the outbox this installation uses: the archive, and the outbox's sent/."""
    from telemetry_pipeline.locations import OUTBOX_DIR_ENV, archive_dir, default_outbox_dir

    outbox = Path(os.environ.get(OUTBOX_DIR_ENV) or default_outbox_dir())
    return [archive_dir(), outbox / SENT_FOLDER], outbox


def format_table(states: list[NightState]) -> str:
    width = max([len(s.state) for s in states], default=0)
    return "\n".join(f"{s.night}  {s.state.ljust(width)}  {s.detail}" for s in states)


def format_json(states: list[NightState]) -> str:
    return json.dumps([s.as_dict() for s in states], indent=2, ensure_ascii=False)
