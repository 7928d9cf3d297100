"""Publish: send each night's summary home, or into the outbox, unless the gate is closed."""

import dagster as dg
import pyarrow as pa

from telemetry_pipeline import archive, gate
from telemetry_pipeline.assets.summary import summary_row
from telemetry_pipeline.delivery import idempotency_key
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.io_manager import NIGHTLY_TABLE, NightlyTables, night_table, read_ahead
from telemetry_pipeline.partitions import OWNERS, SINGLE_RUN, failing_clearly, nightly_partitions, run_nights
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource
from telemetry_pipeline.rules.payload import sha256_hex


def night_metadata(outcome: dict) -> dict:
    """What one night's materialization shows: its own outcome, not that of the run's last night."""
    return {
        "outcome": outcome["outcome"],
        "reason": outcome["reason"],
        "destination": outcome.get("destination", "none"),
        "http_status": outcome.get("http_status") or 0,
        "attempts": outcome.get("attempts", 0),
        "payload_bytes": outcome["payload_bytes"],
        "payload_sha256": outcome["payload_sha256"],
        "idempotency_key": outcome.get("idempotency_key", "none"),
        "archived_body": outcome.get("archived_body", "none"),
    }


# Nothing is stored: each night's record is its own materialization's metadata.
DELIVERY_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("night", "string", "the night, YYYY-MM-DD (UTC)"),
    dg.TableColumn("outcome", "string", "sent, written to outbox, or not sent"),
    dg.TableColumn("reason", "string", "why: the send decision, the opt-out or the gate that was closed"),
    dg.TableColumn("destination", "string", "the collector's URL (no credentials) or the outbox file"),
    dg.TableColumn("http_status", "int", "the collector's reply; 0 when nothing was posted"),
    dg.TableColumn("attempts", "int", "tries within the run, retries included"),
    dg.TableColumn("payload_bytes", "int", "size of the payload"),
    dg.TableColumn("payload_sha256", "string", "SHA-256 of the payload, as frozen by night_summary"),
    dg.TableColumn("idempotency_key", "string", "<installationId>:<night>, the same on every try"),
    dg.TableColumn("archived_body", "string", "the archived copy of the body that was posted"),
])


@dg.asset(
    group_name="publish",
    owners=OWNERS,
    kinds={"python", "api"},
    partitions_def=nightly_partitions,
    backfill_policy=SINGLE_RUN,
    ins={"night_summary": dg.AssetIn(dagster_type=NIGHTLY_TABLE)},  # many nights: read one at a time
    pool="phone_home",  # one sender at a time: two runs never send the same night together
    metadata={"dagster/column_schema": DELIVERY_SCHEMA},
)
def phone_home_delivery(
    context: dg.AssetExecutionContext,
    codestream_config: CodeStreamConfigResource,
    phone_home: PhoneHomeResource,
    night_summary: "pa.Table | NightlyTables",
) -> dg.MaterializeResult:
    """The night's payload delivered to the collector (or the outbox), or the stated reason it was not."""
    with failing_clearly():
        config = codestream_config.load()
    outcomes = []
    nights = run_nights(context)
    history = gate.summary_history(context.instance, [night.isoformat() for night in nights])
    checks_by_run: dict[str, gate.Gate] = {}  # a backfill's nights share their summary's run
    # Oldest first; the next two nights' summaries are read and hashed while this one is delivered.
    for night, (row, payload, stored_sha256) in read_ahead(
        nights, lambda night: _stored_night(night_summary, night.isoformat())
    ):
        key = night.isoformat()
        latest = history[key][0] if history[key] else None  # the summary whose checks open the gate
        decision = gate.summary_gate(row, config.disable_phone_home)
        if decision.open:
            decision = gate.opted_out_gate(history[key])
        if decision.open and latest is None:
            decision = gate.Gate(False, "no summary")
        elif decision.open:
            if latest.run_id not in checks_by_run:
                checks_by_run[latest.run_id] = gate.checks_gate(context.instance, latest)
            decision = checks_by_run[latest.run_id]
        outcome = {"night": key, "payload_sha256": row["payload_sha256"], "payload_bytes": row["payload_bytes"]}
        if not decision.open:
            context.log.info(f"night {key}: not sent: {decision.reason}")
            outcomes.append({**outcome, "outcome": "not sent", "reason": decision.reason})
            context.add_asset_metadata(night_metadata(outcomes[-1]), partition_key=key)
            continue
        if row["send_reason"] != "phone home enabled":
            context.log.warning(f"night {key}: {row['send_reason']}")
        try:
            _same_as_checked(key, row, stored_sha256, latest)
            delivered = phone_home.deliver(config, night, payload)
        except TelemetryError as error:
            context.log.error(f"night {key}: {error}")
            _materialize_nights_done(context, outcomes)
            raise dg.Failure(
                description=str(error),
                metadata={"night": key, "http_status": getattr(error, "status", None) or 0,
                          "attempts": getattr(error, "attempts", 0), "nights_sent_before_failure": len(outcomes)},
                allow_retries=False,
            ) from None
        context.log.info(f"night {key}: {delivered.outcome}: {delivered.destination}")
        archived = None
        if delivered.outcome == "sent":
            try:
                archived = archive.record_delivery(
                    phone_home.archive(), config.installation_id, key, payload, delivered,
                    sent_by=f"dagster run {context.run.run_id}",
                )
            except TelemetryError as error:
                # Sent, but not provably: fail loudly; the sensor sends it again, same Idempotency-Key.
                context.log.error(f"night {key}: sent, but not archived: {error}")
                _materialize_nights_done(context, outcomes)
                raise dg.Failure(
                    description=f"night {key} was sent (HTTP {delivered.status}) but not archived: {error}",
                    metadata={"night": key, "http_status": delivered.status or 0, "attempts": delivered.attempts},
                    allow_retries=False,
                ) from None
        outcomes.append({
            **outcome, "outcome": delivered.outcome, "reason": row["send_reason"],
            "destination": delivered.destination, "http_status": delivered.status,
            "attempts": delivered.attempts, "idempotency_key": idempotency_key(config.installation_id, key),
            **({"archived_body": str(archived.body_path)} if archived else {}),
        })
        context.add_asset_metadata(night_metadata(outcomes[-1]), partition_key=key)
    # Each night's own outcome was added above, per partition. No list of the run's nights here:
    # it would be copied into every night's event, quadratic in the length of a backfill.
    return dg.MaterializeResult(metadata={"nights_in_run": len(outcomes)})


def _stored_night(night_summary: "pa.Table | NightlyTables", night: str) -> tuple[dict, memoryview, str]:
    """The night's summary row, its payload as stored, and that payload's SHA-256: taken again of
    a payload read back from storage. A night this run's summary handed over in memory is the
    very buffer the summary hashed (Arrow's buffers do not change), so its row's hash is its own."""
    table = night_table(night_summary, night)
    row, payload = summary_row(table)
    in_memory = isinstance(night_summary, NightlyTables) and night_summary.held.get(night) is table
    return row, payload, row["payload_sha256"] if in_memory else sha256_hex(payload)


def _same_as_checked(night: str, row: dict, stored_sha256: str, summary: dg.EventLogRecord) -> None:
    """The checks read each payload as the summary built it: what goes is those bytes, or nothing.
    The stored payload's hash must be the one its row records, and the one recorded by the
    summary whose checks opened the gate (another run may have built the night again since)."""
    recorded = summary.asset_materialization.metadata.get("payload_sha256")
    if stored_sha256 != row["payload_sha256"] or (recorded is not None and recorded.value != stored_sha256):
        raise TelemetryError(f"night {night}: the stored payload is not the one the summary built and checked"
                             f" (SHA-256 {row['payload_sha256'][:16]}…): not sent; materialize night_summary again")


def _materialize_nights_done(context: dg.AssetExecutionContext, outcomes: list[dict]) -> None:
    """Before a failure ends the run, the nights already handled are recorded as what they are."""
    for outcome in outcomes:
        context.log_event(dg.AssetMaterialization(
            asset_key=context.asset_key, partition=outcome["night"],
            metadata=night_metadata(outcome),
        ))
