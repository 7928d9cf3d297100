"""The `telemetry-pipeline` command: preview a night's payload, or run the demo."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import check_night_in_range, last_complete_night, parse_night


def _preview(args: argparse.Namespace) -> int:
    from telemetry_pipeline.codestream_config import PHONE_HOME_URL_ENV
    from telemetry_pipeline.definitions import CONFIG_PATH_ENV
    from telemetry_pipeline.preview import summarize_night
    from telemetry_pipeline.resources import CodeStreamConfigResource, SourceDatabaseResource
    from telemetry_pipeline.source.database import SOURCE_URL_ENV
    from telemetry_pipeline.rules.payload import encode_payload

    night = parse_night(args.date, what="--date")
    check_night_in_range(night)
    config = CodeStreamConfigResource(
        path=os.environ.get(CONFIG_PATH_ENV) or None,
        phone_home_url=os.environ.get(PHONE_HOME_URL_ENV) or None,
    ).load()
    database = SourceDatabaseResource(url=os.environ.get(SOURCE_URL_ENV) or None).database()
    summary = summarize_night(database, config, night)
    sys.stdout.buffer.write(encode_payload(summary.payload) + b"\n")
    sys.stdout.flush()
    return 0


def _demo(args: argparse.Namespace) -> int:
    import dagster as dg

    from telemetry_pipeline.checks import SUMMARY_CHECKS
    from telemetry_pipeline.definitions import ASSETS
    from telemetry_pipeline.demo import ensure_demo_installation
    from telemetry_pipeline.io_manager import NightlyParquetIOManager
    from telemetry_pipeline.locations import OUTBOX_DIR_ENV
    from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource

    night = parse_night(args.date, what="--date") if args.date else last_complete_night()
    check_night_in_range(night)
    installation = ensure_demo_installation(last_night=night, refresh=True)
    with tempfile.TemporaryDirectory(prefix="telemetry-demo-") as instance_dir:
        with dg.DagsterInstance.local_temp(
            tempdir=instance_dir, overrides={"telemetry": {"enabled": False}}
        ) as instance:
            result = dg.materialize(
                [*ASSETS, *SUMMARY_CHECKS],
                partition_key=night.isoformat(),
                instance=instance,
                resources={
                    "source_database": SourceDatabaseResource(url=installation.source_url),
                    "codestream_config": CodeStreamConfigResource(path=str(installation.config_path)),
                    "phone_home": PhoneHomeResource(outbox_dir=os.environ.get(OUTBOX_DIR_ENV) or None),
                    "parquet_io_manager": NightlyParquetIOManager(),
                },
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                raise_on_error=False,
            )
            if not result.success:
                failure = next((e for e in result.all_events if e.is_step_failure), None)
                reason = failure.step_failure_data.error.message.strip() if failure else "see the log above"
                raise TelemetryError(f"the demo run failed: {reason.splitlines()[0]}")
            summary = _metadata(result, "night_summary")
            published = _metadata(result, "phone_home_delivery")
    print(_demo_report(night, installation, summary, published))
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from telemetry_pipeline.operations import materialize_nights, open_instance

    first = parse_night(args.first, what="--from")
    last = parse_night(args.last, what="--to")
    if last < first:
        raise TelemetryError(f"--to {last} is before --from {first}")
    check_night_in_range(first)
    check_night_in_range(last)
    instance = open_instance()
    result = materialize_nights(instance, first, last)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        reason = failure.step_failure_data.error.message.strip() if failure else "see the run's log"
        raise TelemetryError(f"the backfill run {result.run_id[:8]} failed: {reason.splitlines()[0]}")
    nights = _metadata(result, "phone_home_delivery")["nights"]
    for night in nights:
        where = night.get("destination") or night.get("reason")
        print(f"{night['night']}  {night['outcome']}  {where}")
    print(f"{len(nights)} nights in run {result.run_id}")
    return 0


def _metadata(result, asset_name: str) -> dict:
    event = result.asset_materializations_for_node(asset_name)[-1]
    return {key: value.value for key, value in event.metadata.items()}


def _demo_report(night: dt.date, installation, summary: dict, published: dict) -> str:
    decisions = json.loads(summary["email_decisions"])
    lines = [
        f"Demo installation: {installation.db_path}",
        f"Night {night.isoformat()} ran end to end through Dagster (throwaway instance, offline mode).",
        f"Payload: {published['outcome']} {published['destination']}"
        f" ({published['payload_bytes']:,} bytes, sha256 {published['payload_sha256'][:16]}…)",
        f"  {summary['companies']} companies, {summary['teams']} teams, {summary['users']} users"
        f" ({summary['active_users']} active that night), {summary['code_reviews']} code reviews",
        f"  emails included: {summary['emails_included']}; withheld: {summary['emails_withheld']}",
    ]
    lines += [f"    {count:3d}  {reason}" for reason, count in decisions.items()]
    lines.append(f"See it again: telemetry-pipeline preview --date {night.isoformat()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telemetry-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    preview = commands.add_parser("preview", help="print a night's payload as it would be sent; send nothing")
    preview.add_argument("--date", required=True, help="the night, YYYY-MM-DD (UTC)")
    preview.set_defaults(run=_preview)
    demo = commands.add_parser("demo", help="run one night end to end on the embedded demo installation")
    demo.add_argument("--date", help="the night, YYYY-MM-DD (default: the last complete UTC night)")
    demo.set_defaults(run=_demo)
    backfill = commands.add_parser(
        "backfill", help="build and publish a range of nights as one run on the DAGSTER_HOME instance"
    )
    backfill.add_argument("--from", dest="first", required=True, help="first night, YYYY-MM-DD")
    backfill.add_argument("--to", dest="last", required=True, help="last night, YYYY-MM-DD")
    backfill.set_defaults(run=_backfill)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TelemetryError as error:
        print(f"telemetry-pipeline: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
