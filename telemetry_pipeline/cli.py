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
    if args.explain:
        from telemetry_pipeline.explain import explain_night, render
        from telemetry_pipeline.locations import OUTBOX_DIR_ENV, default_outbox_dir
        from telemetry_pipeline.preview import extract_night

        outbox = os.environ.get(OUTBOX_DIR_ENV) or default_outbox_dir()
        sys.stdout.buffer.write(render(explain_night(night, config, extract_night(database, night), outbox)))
        sys.stdout.flush()
        return 0
    summary = summarize_night(database, config, night)
    sys.stdout.buffer.write(encode_payload(summary.payload) + b"\n")
    sys.stdout.flush()
    return 0


def _upload(args: argparse.Namespace) -> int:
    from telemetry_pipeline.codestream_config import PHONE_HOME_URL_ENV, load_installation_config
    from telemetry_pipeline.definitions import CONFIG_PATH_ENV
    from telemetry_pipeline.delivery import ALLOW_PLAIN_HTTP_ENV, plain_http_allowed
    from telemetry_pipeline.upload import SENT_FOLDER, upload_outbox

    config_path = os.environ.get(CONFIG_PATH_ENV)
    if not config_path:
        raise TelemetryError(
            f"{CONFIG_PATH_ENV} is not set: upload needs the configuration holding universalSecrets.telemetry"
        )
    config = load_installation_config(config_path, phone_home_url_override=os.environ.get(PHONE_HOME_URL_ENV) or None)
    result = upload_outbox(
        args.outbox, config, report=lambda line: print(line, flush=True),
        allow_plain_http=plain_http_allowed(os.environ.get(ALLOW_PLAIN_HTTP_ENV)),
    )
    if not result.sent and not result.already_sent:
        print(f"nothing to upload in {args.outbox}")
    else:
        print(f"{len(result.sent)} sent, {len(result.already_sent)} already sent;"
              f" bodies and receipts in {os.path.join(args.outbox, SENT_FOLDER)}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from telemetry_pipeline.history import default_sources, format_json, format_table, night_history
    from telemetry_pipeline.operations import open_instance

    first = parse_night(args.first, what="--from") if args.first else None
    last = parse_night(args.last, what="--to") if args.last else None
    archives, outbox = default_sources()
    instance = open_instance() if os.environ.get("DAGSTER_HOME") else None
    states = night_history(instance, archives, outbox, first, last)
    if args.json:
        print(format_json(states))
        return 0
    where = f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}" if instance else "no Dagster instance (DAGSTER_HOME unset)"
    print(f"# from {where}, the archive {archives[0]}, the outbox {outbox}")
    print(format_table(states) if states else "no night is known yet")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import dagster as dg

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
                ASSETS,
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
    nights = sorted(result.asset_materializations_for_node("phone_home_delivery"), key=lambda e: e.partition)
    for event in nights:  # each night's materialization carries its own outcome
        night = {key: value.value for key, value in event.metadata.items()}
        where = night["destination"] if night["destination"] != "none" else night["reason"]
        print(f"{event.partition}  {night['outcome']}  {where}")
    print(f"{len(nights)} nights in run {result.run_id}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from telemetry_pipeline.generate import generate, parse_seed

    end_date = parse_night(args.end_date, what="--end-date") if args.end_date else None
    counts = generate(args.size, args.url, seed=parse_seed(args.seed), end_date=end_date, replace=args.replace)
    print(", ".join(f"{table} {rows:,}" for table, rows in counts.items()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from telemetry_pipeline.bench import run_bench

    run_bench(args)
    return 0


def _reliability_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from telemetry_pipeline.reliability.report import write_report

    figures = write_report(Path(args.output), args.postgres, args.installations)
    print(f"{args.output}: {'every case holds' if figures.all_hold else 'SOME CASES FAIL: see the page'}")
    return 0 if figures.all_hold else 1


def _docs(args: argparse.Namespace) -> int:
    from telemetry_pipeline.whatissent import page_is_current, write_page

    if args.check:
        if page_is_current(args.output):
            print(f"{args.output} matches the code")
            return 0
        print(f"telemetry-pipeline: {args.output} differs from the code; run `telemetry-pipeline docs`",
              file=sys.stderr)
        return 1
    print(f"wrote {write_page(args.output)}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from telemetry_pipeline.doctor import FAIL, report, run_checks

    checks = run_checks(timeout=args.timeout)
    print(report(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


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
    preview.add_argument(
        "--explain", action="store_true",
        help="print {explanation, payload}: each company's plan, whose email goes and why, the opt-out",
    )
    preview.set_defaults(run=_preview)
    upload = commands.add_parser(
        "upload", help="send the nights waiting in an outbox folder (air-gapped installations), oldest first"
    )
    upload.add_argument("outbox", help="the outbox folder, as written in offline mode")
    upload.set_defaults(run=_upload)
    history = commands.add_parser("history", help="each night's state: sent, in outbox, opted out, failed, pending")
    history.add_argument("--from", dest="first", help="first night to list, YYYY-MM-DD")
    history.add_argument("--to", dest="last", help="last night to list, YYYY-MM-DD")
    history.add_argument("--json", action="store_true", help="one JSON object per night, with every field")
    history.set_defaults(run=_history)
    demo = commands.add_parser("demo", help="run one night end to end on the embedded demo installation")
    demo.add_argument("--date", help="the night, YYYY-MM-DD (default: the last complete UTC night)")
    demo.set_defaults(run=_demo)
    backfill = commands.add_parser(
        "backfill", help="build and publish a range of nights as one run on the DAGSTER_HOME instance"
    )
    backfill.add_argument("--from", dest="first", required=True, help="first night, YYYY-MM-DD")
    backfill.add_argument("--to", dest="last", required=True, help="last night, YYYY-MM-DD")
    backfill.set_defaults(run=_backfill)
    generate = commands.add_parser(
        "generate", help="fill a database with a deterministic reference installation (benchmarks)"
    )
    generate.add_argument("--size", required=True, help="small, medium or large")
    generate.add_argument("--url", required=True, help="postgresql://user@host:port/db or sqlite:///abs/path.db")
    generate.add_argument("--seed", default=None, help="random seed (default: fixed)")
    generate.add_argument("--end-date", help="the last night of activity, YYYY-MM-DD (default: the night before today)")
    generate.add_argument("--replace", action="store_true", help="drop the contract's tables first if present")
    generate.set_defaults(run=_generate)
    bench = commands.add_parser("bench", help="measure a night, a backfill and their floors; see docs/PERFORMANCE.md")
    from telemetry_pipeline.bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(run=_bench)
    docs = commands.add_parser("docs", help="write docs/WHAT_IS_SENT.md from the payload's definition in the code")
    docs.add_argument("--output", default="docs/WHAT_IS_SENT.md", help="the page (default: %(default)s)")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 when the page differs from the code")
    docs.set_defaults(run=_docs)
    doctor = commands.add_parser(
        "doctor", help="check configuration, source database, outbox and the road to the collector; sends nothing"
    )
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds per network check (default: 10)")
    doctor.set_defaults(run=_doctor)
    reliability = commands.add_parser(
        "reliability-report", help="run the fault matrix, bad-input catalog and leak scan; write docs/RELIABILITY.md"
    )
    reliability.add_argument("--output", default="docs/RELIABILITY.md", help="the page (default: %(default)s)")
    reliability.add_argument("--postgres", help="a PostgreSQL URL to run the PostgreSQL cases in (fresh schemas)")
    reliability.add_argument("--installations", type=int, default=200, help="random installations (default: 200)")
    reliability.set_defaults(run=_reliability_report)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except TelemetryError as error:
        print(f"telemetry-pipeline: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
