"""Production operations on a Dagster instance kept in PostgreSQL by the repository's dagster.yaml:
schedule to sensor to collector, backfills, catch-up after an outage or a killed run."""

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from telemetry_pipeline.automation import (
    STALE_PUBLISH_RUN_SECONDS,
    nightly_job,
    nightly_schedule,
    phone_home_sensor,
    plan_publish,
    publish_job,
)
from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.definitions import ASSETS
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline.rules.payload import encode_payload
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline_tests.conftest import POSTGRES_ADMIN_URL
from telemetry_pipeline_tests.installation import Installation, at, write_config

REPOSITORY = Path(__file__).resolve().parents[1]
NIGHTS = [f"2026-11-{day}" for day in range(20, 27)]
NIGHT = NIGHTS[-1]
BIN = Path(sys.executable).parent


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    """DAGSTER_HOME holding the repository's dagster.yaml, over a fresh PostgreSQL database."""
    name = f"dagster_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(POSTGRES_ADMIN_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPOSITORY / "dagster.yaml", home / "dagster.yaml")
    server = psycopg2.extensions.parse_dsn(POSTGRES_ADMIN_URL)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", server.get("host", "127.0.0.1"))
    monkeypatch.setenv("DAGSTER_PG_PORT", server.get("port", "5432"))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", server.get("user", "postgres"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", server.get("password", ""))
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    try:
        yield home
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def site(tmp_path, collector):
    """An installation with activity on each of seven nights, and a config pointing at the collector."""
    installation = Installation().company("c-1", plan="FREEPLAN").team("t-1", "c-1")
    installation.user("u-1", teams=["t-1"], admin_of=["t-1"]).user("u-2", teams=["t-1"])
    for index, night in enumerate(NIGHTS):
        for n in range(index + 1):  # a different count each night, so nights cannot be confused
            installation.post(f"p-{night}-{n}", "u-1" if n % 2 else "u-2", at(night, 1 + n))
    source_url = installation.write_sqlite(tmp_path / "source.db")
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    env = {
        "TELEMETRY_SOURCE_URL": source_url,
        "CODESTREAM_CONFIG": str(config),
        "TELEMETRY_OUTBOX_DIR": str(tmp_path / "outbox"),
        "TELEMETRY_STORAGE_URL": str(tmp_path / "storage"),
    }
    resources = {
        "source_database": SourceDatabaseResource(url=source_url),
        "codestream_config": CodeStreamConfigResource(path=str(config)),
        "phone_home": PhoneHomeResource(outbox_dir=env["TELEMETRY_OUTBOX_DIR"], retries=2, backoff_factor=0.01),
        "parquet_io_manager": NightlyParquetIOManager(base_path=env["TELEMETRY_STORAGE_URL"]),
    }
    defs = dg.Definitions(
        assets=ASSETS, jobs=[nightly_job, publish_job],
        schedules=[nightly_schedule], sensors=[phone_home_sensor], resources=resources,
    )
    return {"env": env, "resources": resources, "defs": defs}


def preview_body(site, night: str) -> bytes:
    summary = summarize_night(
        SourceDatabase(site["env"]["TELEMETRY_SOURCE_URL"]),
        load_installation_config(site["env"]["CODESTREAM_CONFIG"]),
        dt.date.fromisoformat(night),
    )
    return b"[" + encode_payload(summary.payload) + b"]"


def sensor_tick(site, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"codestream_config": site["resources"]["codestream_config"]}
    )
    return phone_home_sensor(context), context.cursor


def test_the_repository_dagster_yaml_keeps_the_instance_in_postgres(dagster_home):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = dg.DagsterInstance.get()
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    concurrency = instance.get_concurrency_config()  # what the run queue daemon reads
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert concurrency.pool_config.default_pool_limit == 1
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.telemetry_enabled is False


def test_a_schedule_tick_builds_the_night_and_its_summary_sends_it(dagster_home, site, collector):
    instance = dg.DagsterInstance.get()
    tick = dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.timezone.utc)
    request = nightly_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
    assert request.partition_key == NIGHT
    built = site["defs"].resolve_job_def("nightly_job").execute_in_process(
        partition_key=request.partition_key, instance=instance, tags=request.tags
    )
    assert built.success and collector.requests == []  # the schedule builds; only the sensor sends

    requests, cursor = sensor_tick(site, instance)
    assert [r.partition_key for r in requests] == [NIGHT]
    sent = site["defs"].resolve_job_def("publish_job").execute_in_process(
        partition_key=NIGHT, instance=instance, tags=requests[0].tags
    )
    assert sent.success
    assert [r["body"] for r in collector.requests] == [preview_body(site, NIGHT)]
    assert collector.requests[0]["headers"]["Idempotency-Key"] == f"inst-1:{NIGHT}"
    after, _ = sensor_tick(site, instance, cursor)
    assert isinstance(after, dg.SkipReason)


def test_a_seven_night_range_through_the_cli_is_one_run_sending_each_night_in_order(dagster_home, site, collector):
    done = subprocess.run(
        [BIN / "dagster", "asset", "materialize", "-m", "telemetry_pipeline", "--select", "*",
         "--partition-range", f"{NIGHTS[0]}...{NIGHTS[-1]}"],
        env={**os.environ, **site["env"]}, capture_output=True, text=True, timeout=300, cwd=dagster_home,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["headers"]["Idempotency-Key"] for r in collector.requests] == [f"inst-1:{n}" for n in NIGHTS]
    assert [r["body"] for r in collector.requests] == [preview_body(site, n) for n in NIGHTS]
    assert len(dg.DagsterInstance.get().get_runs()) == 1


def test_the_backfill_command_does_the_same_on_the_instance(dagster_home, site, collector):
    done = subprocess.run(
        [BIN / "telemetry-pipeline", "backfill", "--from", NIGHTS[0], "--to", NIGHTS[2]],
        env={**os.environ, **site["env"]}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[:2] for line in done.stdout.splitlines()[:3]] == [[n, "sent"] for n in NIGHTS[:3]]
    assert [r["body"] for r in collector.requests] == [preview_body(site, n) for n in NIGHTS[:3]]


def test_a_night_missed_while_the_collector_was_down_arrives_once_with_the_same_key_and_bytes(
    dagster_home, site, collector
):
    instance = dg.DagsterInstance.get()
    assert site["defs"].resolve_job_def("nightly_job").execute_in_process(partition_key=NIGHT, instance=instance).success
    requests, cursor = sensor_tick(site, instance)
    collector.reply_with(503, 503, 503)  # down for every try of the first run
    failed = site["defs"].resolve_job_def("publish_job").execute_in_process(
        partition_key=NIGHT, instance=instance, tags=requests[0].tags, raise_on_error=False
    )
    assert not failed.success and collector.delivered == []

    now = dt.datetime.now(dt.timezone.utc)
    assert plan_publish(instance, cursor, False, now).run_requests == []  # backing off
    retry = plan_publish(instance, cursor, False, now + dt.timedelta(seconds=61)).run_requests
    assert [r.partition_key for r in retry] == [NIGHT]
    assert site["defs"].resolve_job_def("publish_job").execute_in_process(
        partition_key=NIGHT, instance=instance, tags=retry[0].tags
    ).success

    assert len(collector.delivered) == 1
    assert {r["body"] for r in collector.requests} == {preview_body(site, NIGHT)}
    assert {r["headers"]["Idempotency-Key"] for r in collector.requests} == {f"inst-1:{NIGHT}"}
    settled = plan_publish(instance, cursor, False, now + dt.timedelta(hours=2))
    assert settled.run_requests == [] and '"pending": {}' in settled.cursor


PUBLISH_IN_A_PROCESS = """
import json, sys
import dagster as dg
from telemetry_pipeline import defs
tags = json.loads(sys.argv[1])
defs.resolve_job_def("publish_job").execute_in_process(
    partition_key=tags["telemetry/night"], instance=dg.DagsterInstance.get(), tags=tags)
"""


def test_a_publish_run_killed_mid_send_is_followed_by_a_delivery_of_that_night(dagster_home, site, collector):
    instance = dg.DagsterInstance.get()
    assert site["defs"].resolve_job_def("nightly_job").execute_in_process(partition_key=NIGHT, instance=instance).success
    requests, cursor = sensor_tick(site, instance)
    collector.reply_with((200, {}, 30))  # the first request hangs until the sender is killed
    sender = subprocess.Popen(
        [sys.executable, "-c", PUBLISH_IN_A_PROCESS, json.dumps(requests[0].tags)],
        env={**os.environ, **site["env"]}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not collector.requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert collector.requests, "the publish process never reached the collector"
    sender.send_signal(signal.SIGKILL)
    sender.wait(timeout=30)

    [killed] = instance.get_runs(dg.RunsFilter(tags=requests[0].tags))
    assert not killed.is_finished  # nobody told Dagster: the run looks alive
    now = dt.datetime.now(dt.timezone.utc)
    waiting = plan_publish(instance, cursor, False, now)
    assert waiting.run_requests == [] and any("under way" in note for note in waiting.notes)

    later = now + dt.timedelta(seconds=STALE_PUBLISH_RUN_SECONDS + 120)
    retry = plan_publish(instance, cursor, False, later).run_requests
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert [r.run_key for r in retry] == [requests[0].run_key[:-1] + "1"]
    assert site["defs"].resolve_job_def("publish_job").execute_in_process(
        partition_key=NIGHT, instance=instance, tags=retry[0].tags
    ).success
    assert [r["body"] for r in collector.requests] == [preview_body(site, NIGHT)] * 2
    assert [r["headers"]["Idempotency-Key"] for r in collector.requests] == [f"inst-1:{NIGHT}"] * 2


def test_ticks_in_a_row_and_a_restarted_daemon_ask_for_a_night_under_one_run_key(dagster_home, site):
    instance = dg.DagsterInstance.get()
    assert site["defs"].resolve_job_def("nightly_job").execute_in_process(partition_key=NIGHT, instance=instance).success
    first, cursor = sensor_tick(site, instance)
    second, cursor = sensor_tick(site, instance, cursor)
    restarted, _ = sensor_tick(site, dg.DagsterInstance.get(), cursor)  # a new process, the stored cursor
    keys = {r.run_key for r in [*first, *second, *restarted]}
    assert len(keys) == 1


@pytest.mark.parametrize(
    "args, env_change, message",
    [
        (["--from", "2019-12-30", "--to", "2020-01-02"], {}, "outside the partitions"),
        (["--from", NIGHTS[0], "--to", NIGHTS[1]], {"DAGSTER_PG_PORT": "1"}, "cannot reach the Dagster instance database postgresql://"),
        (["--from", NIGHTS[0], "--to", NIGHTS[1]], {"DAGSTER_PG_HOST": None}, "environment variable DAGSTER_PG_HOST not set"),
    ],
)
def test_operational_mistakes_get_one_clear_line(dagster_home, site, args, env_change, message):
    env = {**os.environ, **site["env"], "DAGSTER_PG_PASSWORD": "hunter2-secret"}
    for name, value in env_change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    done = subprocess.run([BIN / "telemetry-pipeline", "backfill", *args], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "hunter2-secret" not in done.stderr
