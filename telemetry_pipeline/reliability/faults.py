"""The fault matrix: every way the way home can fail, tried against real servers on loopback.

Each fault is tried three times over, with the production retry count (urllib3 ``Retry``, 4
retries) and short waits so the matrix runs in seconds:

1. once: the fault hits the first try only. A retried fault is overcome within the run;
2. lasting: the fault hits every try. What is retried is tried 5 times, what is not once, and
   the night fails with one line that names the cause;
3. cleared: the fault is gone, and the night is sent (as the sensor sends it again later) with
   the same bytes and the same Idempotency-Key as every try before.

``catch_up_through_the_sensor`` does the same through Dagster for a representative few: the
publish run fails, the sensor backs off, then asks again, and the night arrives.
Tests and ``telemetry-pipeline reliability-report`` run these same cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from telemetry_pipeline.delivery import Delivery, DeliveryFailed, RetrySettings, idempotency_key, post_payload
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.reliability.loopback import (
    Certificates,
    LoopbackCollector,
    Received,
    Reply,
    free_loopback_port,
    make_certificates,
)
from telemetry_pipeline.rules.payload import encode_payload

NIGHT = "2024-02-29"
INSTALLATION = "inst-1"
KEY = "phk-faults-Zx81-never-printed"
RETRIES = 4  # as in production (RetrySettings, PhoneHomeResource)
READ_TIMEOUT = 0.3
FAST = RetrySettings(retries=RETRIES, backoff_factor=0.01, backoff_max=0.05, connect_timeout=1.0,
                     read_timeout=READ_TIMEOUT)
HUGE = 10 * 1024**3  # a 10 GiB reply body
READ_BOUND = 64 * 1024**2  # what a bounded read may let the collector push, at most, over all tries
PAYLOAD = encode_payload({
    "date": NIGHT, "installationId": INSTALLATION, "installationVersion": "14.2.0", "outboundEmailEnabled": True,
    "slackInteractiveComponentsEnabled": False, "integrations": ["github"],
    "companies": [{"id": "c-1", "name": "Émile & Søn ☃", "isDeactivated": False,
                   "createdAt": "2024-02-28T00:00:00.000Z", "creatorId": None, "plan": "FREEPLAN"}],
    "teams": [], "users": [], "codeReviews": [],
})
BODY = b"[" + PAYLOAD + b"]"

REFUSED = "refused"
UNTRUSTED = "untrusted certificate"
REDIRECT = "redirect"
ELSEWHERE = "{elsewhere}"


@dataclass(frozen=True)
class Fault:
    name: str
    how: str  # how the fault is made, for the report
    reply: Reply | None = None  # the collector's reply while the fault lasts
    kind: str = "reply"  # or REFUSED, UNTRUSTED, REDIRECT
    retried: bool = True  # tried again within the run
    failure: str = ""  # words of the one-line failure while it lasts; empty: the night goes through anyway


def _status(code: int, retried: bool, how: str = "", headers=()) -> Fault:
    return Fault(f"HTTP {code}" + (f" {how}" if how else ""), f"the collector answers {code}" + (f" {how}" if how else ""),
                 Reply(code, headers=headers), retried=retried, failure=f"HTTP {code}")


def _redirect(code: int) -> Fault:
    return Fault(f"redirect {code} to another host", f"the collector answers {code} with Location on 127.0.0.2",
                 Reply(code, headers=(("Location", f"{ELSEWHERE}/phone-home"),)), kind=REDIRECT, retried=False,
                 failure=f"HTTP {code}")


FAULTS: tuple[Fault, ...] = (
    Fault("refused connection", "nothing listens on the collector's port", kind=REFUSED,
          failure="connection refused"),
    Fault("reset mid-response", "the collector reads the request, then resets the connection (TCP RST)",
          Reply(reset=True), failure="connection reset"),
    Fault("reply slower than the read timeout", f"the collector waits {3 * READ_TIMEOUT:g} s; the read timeout is"
          f" {READ_TIMEOUT:g} s", Reply(stall=3 * READ_TIMEOUT), failure="no reply within the read timeout"),
    _status(500, True), _status(502, True), _status(503, True), _status(504, True),
    _status(429, True, "with Retry-After: 1", headers=(("Retry-After", "1"),)),
    _status(400, False), _status(401, False), _status(403, False), _status(404, False),
    _status(413, False, "with Retry-After: 0", headers=(("Retry-After", "0"),)),
    Fault("untrusted TLS certificate", "HTTPS with a certificate from a CA the sender does not trust",
          kind=UNTRUSTED, retried=False, failure="TLS certificate not trusted"),
    _redirect(302), _redirect(307), _redirect(308),
    Fault("huge reply body on success", "the collector answers 200 with a 10 GiB body",
          Reply(200, body_size=HUGE), retried=False),
    Fault("huge reply body on 503", "the collector answers 503 with a 10 GiB body",
          Reply(503, body_size=HUGE), failure="HTTP 503"),
    Fault("2xx reply cut off mid-body", "the collector answers 200, sends 10 of 1,000 body bytes, then resets",
          Reply(200, body_size=1000, cut_after=10), retried=False),
)


@dataclass
class FaultResult:
    fault: Fault
    recovered_in_run: bool | None = None  # a single occurrence overcome within the run (None: not retried)
    failure: str | None = None  # the one-line failure while the fault lasted
    attempts: int = 0  # tries the sender made while the fault lasted
    tries_seen: int = 0  # of those, the requests the collector received
    delivered_later: bool = False  # sent once the fault cleared
    same_bytes: bool = False  # every request the collector saw carried the night's exact body
    same_key: bool = False  # ... and its Idempotency-Key and phone-home key
    requests_elsewhere: int = 0  # requests that reached another host
    reply_bytes_written: int = 0  # reply body bytes the collector could push while the fault lasted
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def survived(self) -> bool:
        return not self.problems


def _send(url: str) -> Delivery | DeliveryFailed:
    try:
        return post_payload(url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
    except DeliveryFailed as failed:
        return failed


@contextlib.contextmanager
def trusting(ca_path: Path | None) -> Iterator[None]:
    """The operator installs the collector's CA: requests' REQUESTS_CA_BUNDLE, as in production."""
    saved = os.environ.get("REQUESTS_CA_BUNDLE")
    if ca_path is not None:
        os.environ["REQUESTS_CA_BUNDLE"] = str(ca_path)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = saved


def run_fault(fault: Fault, workdir: Path) -> FaultResult:
    """Try ``fault`` once, lasting, and cleared; judge each against what the fault says."""
    started = time.monotonic()
    result = FaultResult(fault)
    with LoopbackCollector(host="127.0.0.2") as elsewhere:
        reply = _placed(fault.reply, elsewhere)
        if fault.retried and fault.kind == "reply":
            with LoopbackCollector() as flaky:
                flaky.reply_with(reply)
                began = time.monotonic()
                once = _send(flaky.url)
                waited = time.monotonic() - began
            result.recovered_in_run = isinstance(once, Delivery) and once.attempts == 2
            if not result.recovered_in_run:
                result.problems.append(f"a single {fault.name} was not overcome within the run: {once}")
            retry_after = int(dict(reply.headers).get("Retry-After", 0))
            if waited < retry_after:
                result.problems.append(f"Retry-After: {retry_after} was not honoured: the retry came after {waited:.2f} s")
            _check_requests(result, flaky.requests, "the run that recovered")

        certificates = make_certificates(workdir / "tls") if fault.kind == UNTRUSTED else None
        with _collector_with_fault(fault, reply, certificates) as (collector, clear):
            lasting = _send(collector.url)
            tries_seen = len(collector.requests)
            result.reply_bytes_written = collector.body_bytes_written
            ca_path = clear()
            with trusting(ca_path):
                later = _send(collector.url)
            requests = list(collector.requests)
        result.requests_elsewhere = len(elsewhere.requests)

    _judge_lasting(result, lasting, tries_seen)
    result.delivered_later = isinstance(later, Delivery) and later.outcome == "sent"
    if not result.delivered_later:
        result.problems.append(f"not delivered once the fault cleared: {later}")
    _check_requests(result, requests, "the tries")
    if result.requests_elsewhere:
        result.problems.append(f"{result.requests_elsewhere} requests reached another host")
    if fault.reply is not None and fault.reply.body_size == HUGE and result.reply_bytes_written > READ_BOUND:
        result.problems.append(f"{result.reply_bytes_written:,} reply bytes were read: the read is not bounded")
    result.seconds = time.monotonic() - started
    return result


def _placed(reply: Reply | None, elsewhere: LoopbackCollector) -> Reply | None:
    if reply is None:
        return None
    headers = tuple((name, value.replace(ELSEWHERE, elsewhere.url)) for name, value in reply.headers)
    return dataclasses.replace(reply, headers=headers)


@contextlib.contextmanager
def _collector_with_fault(fault: Fault, reply: Reply | None, certificates: Certificates | None):
    """A collector showing the fault, and how to clear it: yields (collector, clear), where clear()
    returns the CA file the sender must trust from then on, if any."""
    if fault.kind == REFUSED:
        port = free_loopback_port()
        collector = LoopbackCollector(port=port)  # not started: its port refuses connections

        def clear():
            collector.start()  # the collector comes back on the same port

        try:
            yield collector, clear
        finally:
            collector.stop()
        return
    if fault.kind == UNTRUSTED:
        with LoopbackCollector(tls=certificates.server_context()) as collector:
            yield collector, lambda: certificates.ca_path
        return
    with LoopbackCollector() as collector:
        collector.always(reply)

        def answer_again():
            collector.always(Reply())

        yield collector, answer_again


def _judge_lasting(result: FaultResult, lasting, tries_seen: int) -> None:
    fault = result.fault
    result.tries_seen = tries_seen
    if not fault.failure:
        if not (isinstance(lasting, Delivery) and lasting.outcome == "sent"):
            result.problems.append(f"expected the night to go through, got: {lasting}")
        result.attempts = getattr(lasting, "attempts", 0)
        return
    if not isinstance(lasting, DeliveryFailed):
        result.problems.append(f"expected a failure, got: {lasting}")
        return
    result.failure, result.attempts = str(lasting), lasting.attempts
    expected = RETRIES + 1 if fault.retried else 1
    if lasting.attempts != expected:
        result.problems.append(f"{lasting.attempts} tries, expected {expected}")
    if fault.kind in ("reply", REDIRECT) and tries_seen != expected:
        result.problems.append(f"the collector saw {tries_seen} tries, expected {expected}")
    if fault.kind in (REFUSED, UNTRUSTED) and tries_seen:
        result.problems.append(f"the collector saw {tries_seen} requests through a fault that allows none")
    if fault.failure not in result.failure:
        result.problems.append(f"the failure does not say {fault.failure!r}: {result.failure}")
    if "\n" in result.failure or KEY in result.failure:
        result.problems.append("the failure is not one clean line")


def _check_requests(result: FaultResult, requests: list[Received], what: str) -> None:
    if not requests:
        result.problems.append(f"{what}: no request reached the collector")
        return
    result.same_bytes = all(r.body == BODY for r in requests)
    result.same_key = all(
        r.header("Idempotency-Key") == idempotency_key(INSTALLATION, NIGHT) and r.header("X-CS-Phone-Home-Key") == KEY
        for r in requests
    )
    if not result.same_bytes:
        result.problems.append(f"{what}: a request carried other bytes than the night's")
    if not result.same_key:
        result.problems.append(f"{what}: a request carried another Idempotency-Key or phone-home key")


# ---------------------------------------------------------------------------------------------
# Through Dagster: the publish run fails, the sensor backs off, asks again, the night arrives
# ---------------------------------------------------------------------------------------------

SENSOR_FAULTS = ("refused connection", "HTTP 503", "HTTP 401", "untrusted TLS certificate", "redirect 307 to another host")


@dataclass
class CatchUpResult:
    fault: Fault
    failed_run: str | None = None  # the publish run's one-line failure
    asked_during_backoff: int = 0  # runs the sensor asked for before the backoff ended
    delivered: int = 0  # deliveries of the night once the fault cleared
    same_bytes: bool = False  # every request carried the bytes frozen in the night's summary
    same_key: bool = False
    settled: bool = False  # nothing pending afterwards
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def survived(self) -> bool:
        return not self.problems


def catch_up_through_the_sensor(fault: Fault, workdir: Path) -> CatchUpResult:
    """Build the night, let its publish fail under ``fault``, and let the sensor deliver it later."""
    import dagster as dg

    from telemetry_pipeline.automation import nightly_job, phone_home_sensor, plan_publish, publish_job
    from telemetry_pipeline.definitions import ASSETS
    from telemetry_pipeline.io_manager import NightlyParquetIOManager
    from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource

    started = time.monotonic()
    result = CatchUpResult(fault)
    workdir.mkdir(parents=True, exist_ok=True)
    source_url = _small_installation(workdir / "codestream.db")
    (workdir / "dagster").mkdir(exist_ok=True)
    certificates = make_certificates(workdir / "tls") if fault.kind == UNTRUSTED else None
    with LoopbackCollector(host="127.0.0.2") as elsewhere, \
            _collector_with_fault(fault, _placed(fault.reply, elsewhere), certificates) as (collector, clear), \
            dg.DagsterInstance.ephemeral() as instance:
        config = workdir / "codestream.json"
        config.write_text(json.dumps({
            "apiServer": {"installationId": INSTALLATION, "phoneHomeUrl": collector.url},
            "universalSecrets": {"telemetry": KEY},
        }))
        resources = {
            "source_database": SourceDatabaseResource(url=source_url),
            "codestream_config": CodeStreamConfigResource(path=str(config)),
            "phone_home": PhoneHomeResource(outbox_dir=str(workdir / "outbox"), archive_dir=str(workdir / "archive"),
                                            retries=RETRIES, backoff_factor=0.01, connect_timeout_seconds=1,
                                            read_timeout_seconds=READ_TIMEOUT),
            "parquet_io_manager": NightlyParquetIOManager(base_path=str(workdir / "storage")),
        }
        defs = dg.Definitions(assets=ASSETS, jobs=[nightly_job, publish_job],
                              sensors=[phone_home_sensor], resources=resources)
        quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
        if not defs.resolve_job_def("nightly_job").execute_in_process(
                partition_key=NIGHT, instance=instance, run_config=quiet).success:
            raise TelemetryError(f"the night {NIGHT} of the catch-up installation did not build")
        context = dg.build_sensor_context(instance=instance, resources={"codestream_config": resources["codestream_config"]})
        requests = phone_home_sensor(context)
        cursor = context.cursor
        publish = defs.resolve_job_def("publish_job")
        failed = publish.execute_in_process(partition_key=NIGHT, instance=instance, tags=requests[0].tags,
                                            run_config=quiet, raise_on_error=False)
        failure = next((e.step_failure_data for e in failed.all_events if e.is_step_failure), None)
        if failed.success or failure is None:
            result.problems.append("the publish run did not fail while the collector was faulty")
        else:
            result.failed_run = (failure.user_failure_data.description if failure.user_failure_data
                                 else failure.error.message).strip()
            if fault.failure not in result.failed_run or "\n" in result.failed_run:
                result.problems.append(f"the run's failure does not say {fault.failure!r}: {result.failed_run}")

        now = dt.datetime.now(dt.timezone.utc)
        result.asked_during_backoff = len(plan_publish(instance, cursor, False, now).run_requests)
        if result.asked_during_backoff:
            result.problems.append("the sensor asked again before its backoff ended")
        ca_path = clear()
        again = plan_publish(instance, cursor, False, now + dt.timedelta(seconds=61)).run_requests
        if [r.partition_key for r in again] != [NIGHT]:
            result.problems.append(f"after the backoff the sensor asked for {[r.partition_key for r in again]}")
        else:
            with trusting(ca_path):
                if not publish.execute_in_process(partition_key=NIGHT, instance=instance, tags=again[0].tags,
                                                  run_config=quiet, raise_on_error=False).success:
                    result.problems.append("the publish run after the backoff failed")
        settled = plan_publish(instance, cursor, False, now + dt.timedelta(hours=2))
        result.settled = not settled.run_requests and '"pending": {}' in settled.cursor
        if not result.settled:
            result.problems.append("the night is still pending after it was delivered")

        frozen = _frozen_body(workdir / "storage")
        result.delivered = len(collector.delivered)
        result.same_bytes = bool(collector.requests) and all(r.body == frozen for r in collector.requests)
        result.same_key = all(r.header("Idempotency-Key") == idempotency_key(INSTALLATION, NIGHT)
                              for r in collector.requests)
        if result.delivered != 1:
            result.problems.append(f"the night was delivered {result.delivered} times, expected once")
        if not (result.same_bytes and result.same_key):
            result.problems.append("a try carried other bytes or another key than the frozen summary's")
        if elsewhere.requests:
            result.problems.append(f"{len(elsewhere.requests)} requests reached another host")
    result.seconds = time.monotonic() - started
    return result


def _frozen_body(storage: Path) -> bytes:
    """The request body the night's summary froze: ``[`` + its payload + ``]``."""
    import pyarrow.parquet as pq

    table = pq.read_table(storage / "telemetry" / "night_summary" / f"{NIGHT}.parquet")
    return b"[" + table["payload"][0].as_py().encode("utf-8") + b"]"


def _small_installation(path: Path) -> str:
    from telemetry_pipeline.nights import night_start_ms
    from telemetry_pipeline.source.schema import create_table_statements

    start = night_start_ms(dt.date.fromisoformat(NIGHT))
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    with db:
        for statement in create_table_statements():
            db.execute(statement)
        db.execute("INSERT INTO companies VALUES ('c-1', 'Émile & Søn', 'FREEPLAN', 0, 0, NULL)")
        db.execute("INSERT INTO teams VALUES ('t-1', 'c-1', 'Team', 0, 0, NULL, NULL, NULL, NULL)")
        db.execute("INSERT INTO users VALUES ('u-1', 'u1@example.com', 1, 0, 0, NULL, NULL, NULL, NULL, NULL)")
        db.execute("INSERT INTO team_members VALUES ('t-1', 'u-1', 1)")
        db.execute("INSERT INTO posts VALUES ('p-1', 't-1', 'u-1', ?, NULL, NULL)", (start + 3_600_000,))
    db.close()
    return f"sqlite://{path.resolve()}"


def fault_named(name: str) -> Fault:
    return next(f for f in FAULTS if f.name == name)
