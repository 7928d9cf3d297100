"""The leak scan: run nights through Dagster the way production wires them, then search every
log line, metadata entry, error and file those runs left for the phone-home key.

The runs use the resources ``definitions.default_resources()`` builds from the environment, a
real collector on loopback, and a process umask of 000, so a file written without an explicit
mode would show up as world-readable. The only place the key may be is the configuration file
(and the header of the request the collector received).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from telemetry_pipeline.reliability.bad_input import (
    CONFIG_ENV, NIGHT, Setup, environment, source_database, write_config,
)
from telemetry_pipeline.reliability.loopback import LoopbackCollector, Reply

KEY = "phk-LEAKSCAN-7c1d9e-not-for-logs"
PRIVATE_FOLDERS = ("outbox", "archive")  # their files must be mode 0600


@dataclass(frozen=True)
class Scenario:
    name: str
    reply: Reply | None  # the collector's answer; None: offline (no phone-home URL)
    broken_source: bool = False  # a NULL where the contract forbids it: the run fails on the source
    succeeds: bool = True
    planted: bool = False  # a control: the key is also a company's name, so it must be found


# Not one of the scenarios: the key planted in the data, to show the scan finds what is there.
PLANTED = Scenario("control: the key is also a company name", Reply(200), planted=True)

SCENARIOS = (
    Scenario("sent (HTTP 200)", Reply(200)),
    Scenario("collector down (HTTP 503, retried, failed)", Reply(503), succeeds=False),
    Scenario("key refused (HTTP 401)", Reply(401), succeeds=False),
    Scenario("offline: written to the outbox", None),
    Scenario("bad source: the run fails before sending", Reply(200), broken_source=True, succeeds=False),
)


@dataclass
class ScanResult:
    scenario: Scenario
    succeeded: bool
    log_lines: int = 0  # console output lines of the run
    events: int = 0  # event log entries (each log message, metadata entry and failure is one)
    metadata_entries: int = 0
    errors: int = 0  # failure messages of the run
    files: int = 0  # files the run left, the configuration aside
    leaks: list[str] = field(default_factory=list)  # where the key was found
    loose_files: list[str] = field(default_factory=list)  # outbox/archive files not mode 0600
    private_files: int = 0  # outbox/archive files checked for their mode
    key_sent: bool = False  # the key did reach the collector, in its header (so the scan is not vacuous)
    seconds: float = 0.0

    @property
    def places(self) -> int:
        return self.log_lines + self.events + self.errors + self.files

    @property
    def problems(self) -> list[str]:
        problems = [] if self.scenario.planted else [f"key found in {place}" for place in self.leaks]
        problems += [f"{path} is not mode 0600" for path in self.loose_files]
        if self.succeeded != self.scenario.succeeds:
            problems.append(f"the run {'succeeded' if self.succeeded else 'failed'}, not as the scenario says")
        if self.scenario.reply is not None and not self.scenario.broken_source and not self.key_sent:
            problems.append("the key never reached the collector: the scan proves nothing")
        return problems


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def scan_run(scenario: Scenario, workdir: Path) -> ScanResult:
    """Run one night end to end under ``scenario`` and search all it left for the key."""
    import dagster as dg

    from telemetry_pipeline.definitions import ASSETS, default_resources

    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    setup = Setup("sqlite")
    setup.config["universalSecrets"]["telemetry"] = KEY
    if scenario.reply is None:
        setup.config["apiServer"].pop("phoneHomeUrl")
    if scenario.broken_source:
        setup.null("companies", "name", "c-free")
    if scenario.planted:
        setup.set("companies", "c-free", name=KEY)
    output = io.StringIO()
    with LoopbackCollector() as collector, source_database(setup, workdir / "source", None) as source_url:
        collector.always(scenario.reply or Reply())
        config = write_config(setup, workdir / "codestream.json", collector.url)
        env = {
            "TELEMETRY_SOURCE_URL": source_url, CONFIG_ENV: str(config),
            "TELEMETRY_OUTBOX_DIR": str(workdir / "outbox"), "TELEMETRY_ARCHIVE_DIR": str(workdir / "archive"),
            "TELEMETRY_STORAGE_URL": str(workdir / "storage"), "XDG_DATA_HOME": str(workdir / "xdg"),
        }
        with environment(env, cleared=()), _umask(0), dg.DagsterInstance.ephemeral() as instance, \
                contextlib.redirect_stderr(output), contextlib.redirect_stdout(output):
            resources = default_resources()
            production = resources["phone_home"]  # the production wiring, with shorter waits
            fields = {name: getattr(production, name) for name in type(production).model_fields}
            resources["phone_home"] = type(production)(**{**fields, "retries": 2, "backoff_factor": 0.01})
            result = dg.materialize(
                ASSETS, partition_key=NIGHT.isoformat(), instance=instance,
                resources=resources, raise_on_error=False,
            )
            entries = instance.all_logs(result.run_id)
        key_sent = any(r.header("X-CS-Phone-Home-Key") == KEY for r in collector.requests)

    scan = ScanResult(scenario, result.success, key_sent=key_sent)
    lines = output.getvalue().splitlines()
    scan.log_lines = len(lines)
    _search(scan, "console output", "\n".join(lines))
    for entry in entries:
        scan.events += 1
        event = entry.dagster_event
        metadata = getattr(getattr(event, "event_specific_data", None), "materialization", None)
        scan.metadata_entries += len(metadata.metadata) if metadata is not None else 0
        _search(scan, f"event {entry.dagster_event_type or 'log'}", dg.serialize_value(entry))
    for event in result.all_events:
        if event.is_step_failure:
            scan.errors += 1
            data = event.step_failure_data
            _search(scan, "a step failure", json.dumps([data.error.message if data.error else "",
                                                        getattr(data.user_failure_data, "description", "")]))
    for path in sorted(p for p in workdir.rglob("*") if p.is_file() and p != config):
        scan.files += 1
        where = str(path.relative_to(workdir))
        _search(scan, f"file {where}", path.read_bytes().decode("utf-8", "replace"))
        if path.suffix == ".parquet":  # compressed: search the values too
            import pyarrow.parquet as pq

            _search(scan, f"file {where} (decoded)", json.dumps(pq.read_table(path).to_pylist(), default=str))
        if path.relative_to(workdir).parts[0] in PRIVATE_FOLDERS:
            scan.private_files += 1
            if stat.S_IMODE(path.stat().st_mode) != 0o600:
                scan.loose_files.append(f"{where} ({oct(stat.S_IMODE(path.stat().st_mode))})")
    scan.seconds = time.monotonic() - started
    return scan


def _search(scan: ScanResult, place: str, text: str) -> None:
    if KEY in text:
        scan.leaks.append(place)


def scan_all(workdir: Path) -> list[ScanResult]:
    return [scan_run(scenario, workdir / f"scenario-{index}") for index, scenario in enumerate(SCENARIOS)]
