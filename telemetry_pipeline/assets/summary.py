"""Transform: the night's payload, with the plan-based email redaction applied."""

import json

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.partitions import OWNERS, SINGLE_RUN, failing_clearly, nightly_partitions, run_nights
from telemetry_pipeline.resources import CodeStreamConfigResource
from telemetry_pipeline.rules.payload import build_night_summary, encode_payload, sha256_hex
from telemetry_pipeline.rules.plans import is_free_plan

NIGHT_SUMMARY_SCHEMA = pa.schema([
    ("night", pa.string()),
    ("installation_id", pa.string()),
    ("payload", pa.string()),  # the exact JSON that is sent, frozen here so every retry sends the same bytes
    ("payload_sha256", pa.string()),
    ("payload_bytes", pa.int64()),
    ("send", pa.bool_()),
    ("send_reason", pa.string()),
    ("paid_companies", pa.int64()),
    ("companies", pa.int64()),
    ("teams", pa.int64()),
    ("users", pa.int64()),
    ("active_users", pa.int64()),
    ("code_reviews", pa.int64()),
    ("emails_included", pa.int64()),
    ("emails_withheld", pa.int64()),
    ("email_decisions", pa.string()),  # JSON: users per reason, never addresses
])


def _night_rows(table: pa.Table, night: str) -> list[dict]:
    return table.filter(pc.equal(table["night"], night)).to_pylist()


@dg.asset(
    group_name="transform",
    owners=OWNERS,
    kinds={"python", "parquet"},
    partitions_def=nightly_partitions,
    backfill_policy=SINGLE_RUN,
    io_manager_key="parquet_io_manager",
    metadata={"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type)) for f in NIGHT_SUMMARY_SCHEMA]
    )},
)
def night_summary(
    context: dg.AssetExecutionContext,
    codestream_config: CodeStreamConfigResource,
    companies: pa.Table,
    teams: pa.Table,
    users: pa.Table,
    user_activity: pa.Table,
    code_reviews: pa.Table,
) -> pa.Table:
    """The night's phone-home payload, emails redacted by plan, and whether it may be sent."""
    with failing_clearly():
        facts = codestream_config.load().facts
        rows = []
        for night in run_nights(context):
            key = night.isoformat()
            night_companies = _night_rows(companies, key)
            summary = build_night_summary(
                night, facts, night_companies, _night_rows(teams, key), _night_rows(users, key),
                _night_rows(user_activity, key), _night_rows(code_reviews, key),
            )
            payload = encode_payload(summary.payload)
            rows.append({
                "night": key,
                "installation_id": facts.installation_id,
                "payload": payload.decode("utf-8"),
                "payload_sha256": sha256_hex(payload),
                "payload_bytes": len(payload),
                "send": summary.send.send,
                "send_reason": summary.send.reason,
                "paid_companies": sum(1 for c in night_companies if not is_free_plan(c["plan"])),
                "companies": len(summary.payload["companies"]),
                "teams": len(summary.payload["teams"]),
                "users": len(summary.payload["users"]),
                "active_users": sum(1 for u in summary.payload["users"]
                                    if u["codemarks"] + u["codemarksInReviews"] + u["reviews"] + u["replies"]),
                "code_reviews": len(summary.payload["codeReviews"]),
                "emails_included": summary.emails_included,
                "emails_withheld": summary.emails_withheld,
                "email_decisions": json.dumps(dict(sorted(summary.email_reasons.items()))),
            })
    last = rows[-1]
    context.add_output_metadata({
        "nights": len(rows),
        "companies": last["companies"],
        "teams": last["teams"],
        "users": last["users"],
        "active_users": last["active_users"],
        "emails_included": last["emails_included"],
        "emails_withheld": last["emails_withheld"],
        "code_reviews": last["code_reviews"],
        "payload_bytes": last["payload_bytes"],
        "payload_sha256": last["payload_sha256"],
        "send": last["send"],
        "send_reason": last["send_reason"],
        "paid_companies": last["paid_companies"],
        "email_decisions": last["email_decisions"],
    })
    return pa.Table.from_pylist(rows, schema=NIGHT_SUMMARY_SCHEMA)
