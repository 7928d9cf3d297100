"""Publish: send each night's summary home, or into the outbox, unless the gate is closed."""

import dagster as dg
import pyarrow as pa

from telemetry_pipeline import gate
from telemetry_pipeline.delivery import idempotency_key
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.partitions import OWNERS, SINGLE_RUN, failing_clearly, nightly_partitions, run_nights
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource


@dg.asset(
    group_name="publish",
    owners=OWNERS,
    kinds={"python", "api"},
    partitions_def=nightly_partitions,
    backfill_policy=SINGLE_RUN,
    ins={"night_summary": dg.AssetIn()},
    pool="phone_home",  # one sender at a time: two runs never send the same night together
)
def phone_home_delivery(
    context: dg.AssetExecutionContext,
    codestream_config: CodeStreamConfigResource,
    phone_home: PhoneHomeResource,
    night_summary: pa.Table,
) -> dg.MaterializeResult:
    """The night's payload delivered to the collector (or the outbox), or the stated reason it was not."""
    with failing_clearly():
        config = codestream_config.load()
    summaries = {row["night"]: row for row in night_summary.to_pylist()}
    outcomes = []
    for night in run_nights(context):  # oldest first
        key = night.isoformat()
        row = summaries[key]
        decision = gate.summary_gate(row, config.disable_phone_home)
        if decision.open:
            decision = gate.opted_out_history_gate(context.instance, key)
        if decision.open:
            record = gate.latest_summary_record(context.instance, key)
            decision = gate.checks_gate(context.instance, record) if record else gate.Gate(False, "no summary")
        outcome = {"night": key, "payload_sha256": row["payload_sha256"], "payload_bytes": row["payload_bytes"]}
        if not decision.open:
            context.log.info(f"night {key}: not sent: {decision.reason}")
            outcomes.append({**outcome, "outcome": "not sent", "reason": decision.reason})
            continue
        if row["send_reason"] != "phone home enabled":
            context.log.warning(f"night {key}: {row['send_reason']}")
        payload = row["payload"].encode("utf-8")
        try:
            delivered = phone_home.deliver(config, night, payload)
        except TelemetryError as error:
            context.log.error(f"night {key}: {error}")
            raise dg.Failure(
                description=str(error),
                metadata={"night": key, "http_status": getattr(error, "status", None) or 0,
                          "attempts": getattr(error, "attempts", 0), "nights_sent_before_failure": len(outcomes)},
                allow_retries=False,
            ) from None
        context.log.info(f"night {key}: {delivered.outcome}: {delivered.destination}")
        outcomes.append({
            **outcome, "outcome": delivered.outcome, "reason": row["send_reason"],
            "destination": delivered.destination, "http_status": delivered.status,
            "attempts": delivered.attempts, "idempotency_key": idempotency_key(config.installation_id, key),
        })
    last = outcomes[-1]
    return dg.MaterializeResult(metadata={
        "outcome": last["outcome"],
        "reason": last["reason"],
        "destination": last.get("destination", "none"),
        "http_status": last.get("http_status") or 0,
        "attempts": last.get("attempts", 0),
        "payload_bytes": last["payload_bytes"],
        "payload_sha256": last["payload_sha256"],
        "nights": dg.MetadataValue.json(outcomes),
    })
