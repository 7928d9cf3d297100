"""``telemetry-pipeline reliability-report``: run the fault matrix, the bad-input catalog, the
privacy properties and the leak scan for real, and write their figures to docs/RELIABILITY.md."""

from __future__ import annotations

import datetime as dt
import platform
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from telemetry_pipeline.reliability import bad_input, faults, leaks, privacy

DEFAULT_OUTPUT = Path("docs") / "RELIABILITY.md"
DEFAULT_INSTALLATIONS = 200
POSTGRES_INSTALLATIONS = 50
SEED = 20240229


@dataclass
class Figures:
    faults: list[faults.FaultResult] = field(default_factory=list)
    catch_ups: list[faults.CatchUpResult] = field(default_factory=list)
    bad_inputs: list[bad_input.BadInputResult] = field(default_factory=list)
    installations: dict[str, list[privacy.InstallationResult]] = field(default_factory=dict)
    scans: list[leaks.ScanResult] = field(default_factory=list)
    postgres: bool = False
    seconds: float = 0.0

    @property
    def nights_lost(self) -> int:
        return (sum(1 for r in self.faults if not r.delivered_later)
                + sum(1 for r in self.catch_ups if r.delivered != 1))

    @property
    def key_leaks(self) -> int:
        return sum(len(s.leaks) for s in self.scans)

    @property
    def email_leaks(self) -> int:
        return sum(len(r.problems[privacy.PROPERTIES[0]]) for runs in self.installations.values() for r in runs)

    @property
    def all_hold(self) -> bool:
        return (all(r.survived for r in self.faults) and all(r.survived for r in self.catch_ups)
                and all(r.answered for r in self.bad_inputs)
                and all(r.holds for runs in self.installations.values() for r in runs)
                and not any(s.problems for s in self.scans))


def run_everything(workdir: Path, postgres_url: str | None = None, installations: int = DEFAULT_INSTALLATIONS,
                   say: Callable[[str], None] = print) -> Figures:
    started = time.monotonic()
    figures = Figures(postgres=postgres_url is not None)
    backends = ("sqlite", "postgresql") if postgres_url else ("sqlite",)

    for index, fault in enumerate(faults.FAULTS):
        figures.faults.append(faults.run_fault(fault, workdir / "faults" / str(index)))
    say(f"fault matrix: {sum(r.survived for r in figures.faults)} of {len(figures.faults)} survived")
    for name in faults.SENSOR_FAULTS:
        figures.catch_ups.append(faults.catch_up_through_the_sensor(
            faults.fault_named(name), workdir / "sensor" / re.sub(r"\W+", "-", name)))
    say(f"through the sensor: {sum(r.delivered == 1 for r in figures.catch_ups)} of {len(figures.catch_ups)}"
        " nights delivered later")

    for index, (case, backend) in enumerate(bad_input.catalog_runs(backends)):
        figures.bad_inputs.append(bad_input.run_bad_input(case, backend, workdir / "bad" / str(index), postgres_url))
    say(f"bad inputs: {sum(r.answered for r in figures.bad_inputs)} of {len(figures.bad_inputs)} answered")

    counts = {"sqlite": installations, "postgresql": min(installations, POSTGRES_INSTALLATIONS)}
    for backend in backends:
        figures.installations[backend] = [
            privacy.check_installation(privacy.random_installation(privacy.SeededPicker(SEED + n)),
                                       workdir / "privacy" / backend / str(n), backend, postgres_url)
            for n in range(counts[backend])
        ]
    say(f"privacy: {sum(r.holds for runs in figures.installations.values() for r in runs)} of"
        f" {sum(len(runs) for runs in figures.installations.values())} random installations hold")

    figures.scans = leaks.scan_all(workdir / "leaks")
    say(f"leak scan: {figures.key_leaks} leaks in {sum(s.places for s in figures.scans):,} places")
    figures.seconds = time.monotonic() - started
    return figures


def write_report(output: Path, postgres_url: str | None, installations: int,
                 say: Callable[[str], None] = print) -> Figures:
    with tempfile.TemporaryDirectory(prefix="telemetry-reliability-") as workdir:
        figures = run_everything(Path(workdir), postgres_url, installations, say)
        text = render(figures, workdir)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return figures


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------

def _clean(text: str | None, workdir: str) -> str:
    """A message fit for the document: no temporary paths, no random ports, no table breakers."""
    text = (text or "").replace(workdir, "…")
    text = re.sub(r"(127\.0\.0\.\d+|\[::1\]|localhost):\d+", r"\1:PORT", text)
    return text.replace("|", "\\|")


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "**NO**")


def render(figures: Figures, workdir: str = "") -> str:
    tried = len(figures.faults)
    survived = sum(r.survived for r in figures.faults)
    retried = [r for r in figures.faults if r.fault.retried]
    failing_at_once = sum(1 for r in figures.faults if not r.fault.retried and r.fault.failure)
    refused_runs = [r for r in figures.bad_inputs if r.case.error]
    answered = sum(r.answered for r in figures.bad_inputs)
    per_backend = Counter(r.backend for r in figures.bad_inputs)
    installs = [r for runs in figures.installations.values() for r in runs]
    withheld = sum(r.emails_withheld for r in installs)
    scanned = sum(s.places for s in figures.scans)
    private_files = sum(s.private_files for s in figures.scans)
    loose = sum(len(s.loose_files) for s in figures.scans)
    backends = "SQLite and PostgreSQL" if figures.postgres else "SQLite (PostgreSQL not given: `--postgres URL`)"
    lines = [
        "# Reliability, privacy and bad input: the figures",
        "",
        f"Generated by `telemetry-pipeline reliability-report` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
        f" in {figures.seconds:.0f} s (Python {platform.python_version()}, {sys.platform}); do not edit by hand.",
        "Every figure below comes from running the case tables in `telemetry_pipeline/reliability/` for real:",
        "real HTTP and HTTPS servers on loopback, real SQLite files and PostgreSQL schemas, real Dagster runs.",
        "The test suite runs the same tables (`telemetry_pipeline_tests/test_faults.py`, `test_bad_input.py`,",
        "`test_privacy.py`, `test_secrets.py`), so a regression fails CI before it reaches this page.",
        "",
        "## Figures",
        "",
        "| | figure | how it is tested |",
        "| --- | ---: | --- |",
        f"| faults tried | {tried} | each against a real server on loopback: once, lasting and cleared (below) |",
        f"| faults survived | {survived} of {tried} | the night is delivered once the fault clears, with the same"
        " bytes and Idempotency-Key as every failed try; nothing reaches another host |",
        f"| nights lost | **{figures.nights_lost}** | {tried} nights of the matrix and {len(figures.catch_ups)} carried"
        " through Dagster: publish run fails, the sensor backs off, asks again, the night arrives once |",
        f"| faults retried within the run | {len(retried)} | 5 tries each (4 retries), then the night fails in one"
        " line; a single occurrence is overcome in the same run |",
        f"| faults not retried | {tried - len(retried)} | 1 try: {failing_at_once} fail the night at once in one"
        " line naming the status or cause; a 2xx with a huge or cut-off body is a delivery |",
        f"| bad inputs tried | {len(figures.bad_inputs)} | {len(bad_input.BAD_INPUTS)} cases of source, configuration"
        f" and settings; {', '.join(f'{n} on {b}' for b, n in sorted(per_backend.items()))} |",
        f"| bad inputs answered | {answered} of {len(figures.bad_inputs)} | {len(refused_runs)} one-line errors naming"
        f" table, column and row or the key, nothing sent; {len(figures.bad_inputs) - len(refused_runs)} correct"
        " payloads checked on the bytes received |",
        f"| random installations | {len(installs)} | {', '.join(f'{len(v)} on {k}' for k, v in figures.installations.items())};"
        f" seeded, odd ids, plans and times on both night boundaries |",
        f"| withheld emails searched for | {withheld:,} | in every byte of every request the collector received |",
        f"| emails leaked | **{figures.email_leaks}** | also: keys and types, code point order and an oracle"
        " written from the contract (below) |",
        f"| places searched for the phone-home key | {scanned:,} | console lines, events, metadata, errors and"
        f" files of {len(figures.scans)} end-to-end runs (below) |",
        f"| key leaks found | **{figures.key_leaks}** | the only copies are the configuration and the request"
        " header the collector received |",
        f"| outbox and archive files not mode 0600 | {loose} of {private_files} | written under umask 000 |",
        "",
        f"Backends: {backends}.",
        "",
        "## Beside comparable phone-home systems",
        "",
        "| | this pipeline | GitLab Service Ping | CodeStream's original phone home |",
        "| --- | --- | --- | --- |",
        "| how often | nightly | weekly | nightly |",
        "| retries within the run | 4, exponential backoff (urllib3 `Retry`), `Retry-After` honoured up to 5 min"
        " | the Sidekiq job's own retries (next row) | none |",
        "| a night that failed | `phone_home_sensor` sends it again after 1 min, doubling to at most 1 h, for as"
        " long as it takes: same bytes, same `Idempotency-Key`, nobody has to act | retried 3 times, 8 h, 16 h and"
        " 24 h after each failure, then dropped | kept in its database and sent again with the next night |",
        "| history of undelivered nights | every one, until it is delivered; nothing expires | none (`dead: false`)"
        " | re-sends up to 100 of them with the next night |",
        "| success | any 2xx | | HTTP 200 only |",
        "| redirects | never followed, so the key cannot follow one to another host | | node-fetch's default:"
        " followed, the key header with it |",
        f"| nights lost in the fault matrix above | {figures.nights_lost} | not measured | not measured |",
        "",
        "Sources: GitLab's `app/workers/gitlab_service_ping_worker.rb` (`sidekiq_options retry: 3, dead: false`,"
        " `sidekiq_retry_in { |count| (count + 1) * 8.hours }`); CodeStream's"
        " `api_server/modules/phone_home/phone_home_service.js` (`transmit`: all stored nights in one POST, the"
        " store emptied on HTTP 200).",
        "",
    ]
    lines += _fault_table(figures, workdir)
    lines += _catch_up_table(figures, workdir)
    lines += _bad_input_table(figures, workdir)
    lines += _privacy_table(figures)
    lines += _scan_table(figures)
    return "\n".join(lines) + "\n"


def _fault_table(figures: Figures, workdir: str) -> list[str]:
    lines = [
        "## Fault matrix",
        "",
        f"Retry settings as in production (`RetrySettings`: {faults.RETRIES} retries), with waits shortened to"
        f" milliseconds and a read timeout of {faults.READ_TIMEOUT:g} s so the matrix runs in seconds.",
        "*Once*: the fault hits the first try only. *Lasting*: every try. *Cleared*: the next delivery, as the"
        " sensor makes it later.",
        "",
        "| fault | how it is made | retried | once: overcome in the run | lasting: tries (seen by the collector)"
        " | lasting: the one line | cleared: delivered | same bytes and key on every try | requests to another host |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in figures.faults:
        failure = _clean(r.failure, workdir) if r.failure else "none: the night is sent"
        if r.fault.reply is not None and r.fault.reply.body_size == faults.HUGE:
            failure += f" (the collector pushed {r.reply_bytes_written / 1024**2:.1f} MiB of 10 GiB before the" \
                       " sender closed)"
        lines.append(
            f"| {r.fault.name} | {r.fault.how} | {'yes' if r.fault.retried else 'no'} | {_yes(r.recovered_in_run)}"
            f" | {r.attempts} ({r.tries_seen}) | {failure} | {_yes(r.delivered_later)}"
            f" | {_yes(r.same_bytes and r.same_key)} | {r.requests_elsewhere} |"
        )
    problems = [f"- {r.fault.name}: {p}" for r in figures.faults for p in r.problems]
    return lines + ([""] + problems if problems else []) + [""]


def _catch_up_table(figures: Figures, workdir: str) -> list[str]:
    lines = [
        "## Through Dagster: the sensor delivers the night later",
        "",
        "The night is built by `nightly_job`; `phone_home_sensor` asks for `publish_job`; the run fails under the"
        " fault; the sensor asks nothing during its backoff, asks again after it, and the night arrives once"
        " with the bytes frozen in its `night_summary`.",
        "",
        "| fault | the publish run's failure | runs asked during the backoff | deliveries once cleared"
        " | same bytes and key as the frozen summary | nothing left pending |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for r in figures.catch_ups:
        lines.append(f"| {r.fault.name} | {_clean(r.failed_run, workdir)} | {r.asked_during_backoff} | {r.delivered}"
                     f" | {_yes(r.same_bytes and r.same_key)} | {_yes(r.settled)} |")
    problems = [f"- {r.fault.name}: {p}" for r in figures.catch_ups for p in r.problems]
    return lines + ([""] + problems if problems else []) + [""]


def _bad_input_table(figures: Figures, workdir: str) -> list[str]:
    lines = [
        "## Bad-input catalog",
        "",
        "Each case breaks one thing in a small valid installation and runs its night against a collector on"
        " loopback. *Answer*: the one line (nothing was sent), or the payload the collector received.",
        "",
        "| case | where | backend | answered | answer |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in figures.bad_inputs:
        answer = f"`{_clean(r.error, workdir)}`" if r.error else f"payload: {r.case.expected}"
        lines.append(f"| {r.case.name} | `{r.case.where}` | {r.backend} | {_yes(r.answered)} | {answer} |")
    problems = [f"- {r.case.name} ({r.backend}): {p}" for r in figures.bad_inputs for p in r.problems]
    return lines + ([""] + problems if problems else []) + [""]


def _privacy_table(figures: Figures) -> list[str]:
    lines = [
        "## Privacy properties over random installations",
        "",
        f"Installations from `privacy.random_installation` with seeds {SEED}…; each night sent to a loopback"
        " collector and checked on the bytes it received. The oracle is contract section 5 written again,"
        " sharing no code with the pipeline.",
        "",
        "| property | backend | installations where it holds |",
        "| --- | --- | ---: |",
    ]
    for backend, runs in figures.installations.items():
        for name in privacy.PROPERTIES:
            holds = sum(1 for r in runs if not r.problems[name])
            lines.append(f"| {name} | {backend} | {holds} of {len(runs)} |")
    for backend, runs in figures.installations.items():
        lines.append("")
        lines.append(f"{backend}: {sum(r.emails_withheld for r in runs):,} withheld emails searched for,"
                     f" {sum(r.emails_sent for r in runs):,} emails rightly sent.")
    problems = [f"- {b}: {n}: {p[:300]}" for b, runs in figures.installations.items()
                for r in runs for n, ps in r.problems.items() for p in ps]
    return lines + ([""] + problems[:20] if problems else []) + [""]


def _scan_table(figures: Figures) -> list[str]:
    lines = [
        "## Leak scan: the phone-home key",
        "",
        "Each run is one night through Dagster with the resources `definitions.default_resources()` builds"
        " from the environment, under umask 000, against a real collector. Then everything the run left is"
        " searched for the key: its console output, every event-log entry (log messages, metadata, check"
        " results, failures), every failure message, and every file (Parquet files decoded too) except the"
        " configuration file.",
        "",
        "| run | outcome | console lines | events (metadata entries) | errors | files | outbox/archive files 0600"
        " | key reached the collector's header | key found elsewhere |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for s in figures.scans:
        private = f"{s.private_files - len(s.loose_files)} of {s.private_files}"
        lines.append(f"| {s.scenario.name} | {'succeeded' if s.succeeded else 'failed'} | {s.log_lines}"
                     f" | {s.events} ({s.metadata_entries}) | {s.errors} | {s.files} | {private}"
                     f" | {'yes' if s.key_sent else 'no'} | {len(s.leaks)} |")
    problems = [f"- {s.scenario.name}: {p}" for s in figures.scans for p in s.problems]
    return lines + ([""] + problems if problems else []) + [""]
