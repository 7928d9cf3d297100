"""Transform: the night's payload, with the plan-based email redaction applied."""

import json
from concurrent.futures import Future, ThreadPoolExecutor

import dagster as dg
import numpy as np
import pyarrow as pa

from telemetry_pipeline.checks import (
    SUMMARY_CHECK_SPECS,
    EmailAllowance,
    NightVerdict,
    check_payload,
    check_results,
)
from telemetry_pipeline.io_manager import NIGHTLY_TABLE, NightlyTables, SpilledNights, night_table
from telemetry_pipeline.partitions import OWNERS, SINGLE_RUN, failing_clearly, nightly_partitions, run_nights
from telemetry_pipeline.resources import CodeStreamConfigResource
from telemetry_pipeline.rules.payload import sha256_hex
from telemetry_pipeline.rules.payload_columns import NightEncoder, string_offsets
from telemetry_pipeline.rules.payload_scan import PayloadScanner
from telemetry_pipeline.rules.redaction import redaction_by_company

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

# Redaction per company, in the summary's metadata: counts only, never an address.
REDACTION_ROWS_SHOWN = 100
REDACTION_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("company", "string"), dg.TableColumn("plan", "string"), dg.TableColumn("free", "bool"),
    dg.TableColumn("users", "int"), dg.TableColumn("emails_included", "int"), dg.TableColumn("emails_withheld", "int"),
])


def summary_row(table: pa.Table) -> tuple[dict, memoryview]:
    """A night's summary row without its payload, and the payload's bytes where they lie in the
    column's buffer (tens of megabytes on a large installation: neither a str nor a copy)."""
    payload = table.combine_chunks()["payload"].chunk(0)  # a table's combine_chunks keeps a single chunk uncopied
    offsets = string_offsets(payload)
    row = table.drop_columns(["payload"]).slice(0, 1).to_pylist()[0]
    return row, memoryview(payload.buffers()[2].slice(int(offsets[0]), int(offsets[1] - offsets[0])))


def _summary_fields(night: str, facts, encoded) -> dict:
    """The night's summary row, but for the payload and its hash."""
    return {
        "night": night,
        "installation_id": facts.installation_id,
        "send": encoded.send.send,
        "send_reason": encoded.send.reason,
        "paid_companies": encoded.paid_companies,
        "companies": encoded.companies,
        "teams": encoded.teams,
        "users": encoded.users,
        "active_users": encoded.active_users,
        "code_reviews": encoded.code_reviews,
        "emails_included": encoded.emails_included,
        "emails_withheld": encoded.emails_withheld,
        "email_decisions": json.dumps(dict(sorted(encoded.email_reasons.items()))),
    }


def _finish_night(fields: dict, payload: bytes | pa.Buffer, spilled: SpilledNights) -> dict:
    """The night's hash, and its one-row table written to disk."""
    row = {**fields, "payload_sha256": sha256_hex(payload), "payload_bytes": len(payload)}
    spilled.add(row["night"], _summary_table(row, payload))
    return row


def _check_night(night: str, payload: bytes | pa.Buffer, may_leave: Future, scanner: PayloadScanner) -> NightVerdict:
    # Run by the checker, which takes its tasks in order: may_leave is done by then, and the
    # scanner sees the nights one after another.
    return check_payload(night, payload, may_leave.result(), scanner)


def _summary_table(row: dict, payload: bytes | pa.Buffer) -> pa.Table:
    """The night's one row; the payload's bytes become the column's buffer as they are, uncopied."""
    offsets = np.array([0, len(payload)], dtype=np.int32)
    payload_column = pa.StringArray.from_buffers(1, pa.py_buffer(offsets), pa.py_buffer(payload))
    columns = {name: [row[name]] for name in NIGHT_SUMMARY_SCHEMA.names if name != "payload"}
    return pa.table({**columns, "payload": payload_column}).select(NIGHT_SUMMARY_SCHEMA.names).cast(
        NIGHT_SUMMARY_SCHEMA)


@dg.asset(
    group_name="transform",
    owners=OWNERS,
    kinds={"python", "parquet"},
    partitions_def=nightly_partitions,
    backfill_policy=SINGLE_RUN,
    io_manager_key="parquet_io_manager",
    # Inputs and output of many nights come and go one night at a time (see io_manager.py).
    ins={name: dg.AssetIn(dagster_type=NIGHTLY_TABLE)
         for name in ("companies", "teams", "users", "user_activity", "code_reviews")},
    dagster_type=NIGHTLY_TABLE,
    check_specs=SUMMARY_CHECK_SPECS,
    metadata={"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type)) for f in NIGHT_SUMMARY_SCHEMA]
    )},
)
def night_summary(
    context: dg.AssetExecutionContext,
    codestream_config: CodeStreamConfigResource,
    companies: "pa.Table | NightlyTables",
    teams: "pa.Table | NightlyTables",
    users: "pa.Table | NightlyTables",
    user_activity: "pa.Table | NightlyTables",
    code_reviews: "pa.Table | NightlyTables",
) -> dg.MaterializeResult:
    """The night's phone-home payload, emails redacted by plan, and whether it may be sent."""
    nights = run_nights(context)
    # A night's payload of 100,000 users is tens of megabytes: each night goes to disk as it is built.
    spilled = SpilledNights()
    with failing_clearly():
        facts = codestream_config.load().facts
        encoder = NightEncoder(facts)  # night after night, reusing what did not change
        # The checks' own reuse, night after night, independent of the encoder's.
        may_leave_of, scanner = EmailAllowance(), PayloadScanner()
        rows, verdicts, finishing, checking = [], [], None, None
        # While a night is encoded, the night before is hashed and stored in one thread and
        # checked in another.
        with ThreadPoolExecutor(max_workers=1) as finisher, ThreadPoolExecutor(max_workers=1) as checker:
            # The last night's redaction per company, for the metadata, while the first night is encoded.
            last_night = nights[-1].isoformat()
            by_company = finisher.submit(redaction_by_company,
                                         *(night_table(t, last_night) for t in (companies, teams, users)))
            for night in nights:
                key = night.isoformat()
                night_companies, night_teams, night_users, night_activity, night_reviews = (
                    night_table(t, key) for t in (companies, teams, users, user_activity, code_reviews))
                # Whose email may leave needs the rows only: worked out while the payload is encoded.
                may_leave = checker.submit(may_leave_of, night_companies, night_teams, night_users)
                encoded = encoder.encode(night, night_companies, night_teams, night_users, night_activity,
                                         night_reviews)
                if finishing is not None:
                    rows.append(finishing.result())
                    verdicts.append(checking.result())
                finishing = finisher.submit(_finish_night, _summary_fields(key, facts, encoded), encoded.payload,
                                            spilled)
                checking = checker.submit(_check_night, key, encoded.payload, may_leave, scanner)
            rows.append(finishing.result())
            verdicts.append(checking.result())
    by_company = by_company.result()
    redaction = {  # the last night's
        "redaction_by_company": dg.MetadataValue.table(
            records=[dg.TableRecord(row) for row in by_company[:REDACTION_ROWS_SHOWN]], schema=REDACTION_SCHEMA
        ),
        "redaction_companies_not_shown": max(0, len(by_company) - REDACTION_ROWS_SHOWN),
    }
    # Each night's event shows its own figures (the UI plots them night by night), the last night's
    # its redaction table too. What goes on the run's output is copied into every night's event:
    # a backfill of a year would store the table 365 times.
    metadata = {"nights": len(rows)}
    if len(rows) == 1:
        metadata.update(night_metadata(rows[0]), **redaction)
    else:
        for row in rows:
            context.add_asset_metadata({**night_metadata(row), **(redaction if row is rows[-1] else {})},
                                       partition_key=row["night"])
    # Dagster runs the summary only with both its checks (it cannot be materialized without them).
    return dg.MaterializeResult(value=spilled.tables(), metadata=metadata,
                                check_results=check_results(verdicts))


NUMERIC_METADATA = (
    "companies", "paid_companies", "teams", "users", "active_users", "emails_included", "emails_withheld",
    "code_reviews", "payload_bytes",
)


def night_metadata(row: dict) -> dict:
    """One night's metadata: plain numbers (the UI plots them), the send decision, a Markdown summary."""
    return {
        **{name: int(row[name]) for name in NUMERIC_METADATA},
        "payload_sha256": row["payload_sha256"],
        "send": bool(row["send"]),
        "send_reason": row["send_reason"],
        "email_decisions": row["email_decisions"],
        "summary": dg.MetadataValue.md(night_markdown(row)),
    }


def night_markdown(row: dict) -> str:
    """The night at a glance: counts and reasons only, never an address or a name."""
    lines = [
        f"### Night {row['night']}",
        "",
        "| | |",
        "| --- | ---: |",
        f"| companies | {row['companies']:,} ({row['paid_companies']:,} on a paid plan) |",
        f"| teams | {row['teams']:,} |",
        f"| users | {row['users']:,} ({row['active_users']:,} active during the night) |",
        f"| emails included | {row['emails_included']:,} |",
        f"| emails withheld | {row['emails_withheld']:,} |",
        f"| code reviews | {row['code_reviews']:,} |",
        f"| payload | {row['payload_bytes']:,} bytes, sha256 `{row['payload_sha256'][:16]}` |",
        "",
        f"**{'May be sent' if row['send'] else 'Not sent'}:** {row['send_reason']}.",
    ]
    decisions = json.loads(row["email_decisions"])
    if decisions:
        lines += ["", "Users per email decision:", ""]
        lines += [f"- {count:,} {reason}" for reason, count in decisions.items()]
    return "\n".join(lines)
