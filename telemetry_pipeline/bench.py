"""The benchmark: a night, a backfill and their floors, measured side by side in one run.

    telemetry-pipeline bench --size medium|large [--url URL] [--nights 30] [--default-runs N]

On a reference installation (``telemetry-pipeline generate``; made here first when the database
is empty), for the last night of its activity and the ``--nights`` nights ending with it:

- one night end to end through Dagster, extract to publish into the outbox, as one run in
  process (what ``telemetry-pipeline backfill --from D --to D`` does);
- its floor: the same SQL queries alone, fetched into Arrow through ADBC and nothing else, and
  a run of a no-op copy of the same graph (same assets, checks, partitions; bodies that do
  nothing); the extraction itself against that bare fetch; these three measured in turn, three
  times, the median of each kept;
- the nights as one single-run backfill (in process), and as one run per night the way Dagster
  runs them by default (multiprocess executor). With ``--default-runs`` smaller than
  ``--nights`` only that many runs are measured and the rest extrapolated, which the output says;
- peak resident memory of each run in process.

Each measurement runs in a fresh Python process, so its peak memory is its own and no cache of
one warms another, on a throwaway Dagster instance, storage and outbox in a temporary folder
removed at the end. The database is read once before timing (warm cache), as a nightly run finds
it. Nothing is asserted: the table and the JSON line report; docs/PERFORMANCE.md has the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from telemetry_pipeline.errors import TelemetryError

SIZES = ("small", "medium", "large")
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/telemetry_bench_{size}"
DEFAULT_NIGHTS = 30
ONE_NIGHT_RUNS = 3
# One run per night costs seconds of process start-up each; on the large size that many runs take
# many minutes, so by default a few are measured and the rest extrapolated (and said to be).
DEFAULT_RUNS_MEASURED = {"small": 30, "medium": 10, "large": 5}
INSTALLATION_ID = "bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", required=True, help="small, medium or large")
    parser.add_argument("--url", help="the reference installation's database (default: "
                                      + DEFAULT_URL.format(size="<size>") + ")")
    parser.add_argument("--nights", default=str(DEFAULT_NIGHTS),
                        help=f"nights of the backfill, ending with the last night of activity (default {DEFAULT_NIGHTS})")
    parser.add_argument("--default-runs", help="runs of one night to measure the default way (default: all the"
                                               " nights on small, 10 on medium, 5 on large; the rest extrapolated)")


def _positive(text: str, what: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise TelemetryError(f"{what} {text!r} is not a number of nights: expected a whole number, 1 or more")
    return value


def run_bench(args: argparse.Namespace) -> dict:
    """Measure, print the table and the JSON line; returns the figures."""
    if args.size not in SIZES:
        raise TelemetryError(f"--size {args.size!r} is not a size: expected small, medium or large")
    nights = _positive(args.nights, "--nights")
    default_runs = min(nights, _positive(args.default_runs, "--default-runs") if args.default_runs
                       else DEFAULT_RUNS_MEASURED[args.size])
    url = args.url or DEFAULT_URL.format(size=args.size)
    last = _last_night_of(url, args.size)
    first = last - dt.timedelta(days=nights - 1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as folder:
        work = Path(folder)
        config = work / "codestream.json"
        config.write_text(json.dumps({"apiServer": {"installationId": INSTALLATION_ID}}))
        env = {**os.environ, "TELEMETRY_SOURCE_URL": url, "CODESTREAM_CONFIG": str(config),
               "TELEMETRY_START_DATE": first.isoformat()}
        env.pop("DAGSTER_HOME", None)
        env.pop("CS_API_PHONE_HOME_URL", None)

        def child(scenario: str, **kwargs) -> dict:
            where = work / scenario
            where.mkdir()
            result = _run_child(scenario, {**env, "TELEMETRY_OUTBOX_DIR": str(where / "outbox"),
                                           "TELEMETRY_STORAGE_URL": str(where / "storage"),
                                           "TELEMETRY_ARCHIVE_DIR": str(where / "archive")},
                                {**kwargs, "workdir": str(where)})
            shutil.rmtree(where, ignore_errors=True)  # a year of large payloads is gigabytes
            return result

        # A night and its floor each vary by a fifth from one run to the next on a shared VM, whose
        # speed also drifts within minutes: each is measured three times, in turn with the others,
        # and its median kept.
        rounds = [{scenario: child(scenario, first=last.isoformat(), last=last.isoformat())
                   for scenario in ("extract", "pipeline", "noop")} for _ in range(ONE_NIGHT_RUNS)]
        extraction, one_night, noop = (_medians([measured[scenario] for measured in rounds])
                                       for scenario in ("extract", "pipeline", "noop"))
        backfill = child("pipeline", first=first.isoformat(), last=last.isoformat())
        default = child("default_runs", first=first.isoformat(), runs=default_runs)
    figures = _figures(args.size, url, first, last, nights, extraction, one_night, noop, backfill, default)
    figures["machine"]["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    print(_table(figures))
    print(json.dumps(figures, sort_keys=True))
    return figures


def _medians(runs: list[dict]) -> dict:
    """Each number at the top level of the runs' figures, their median (all the values in
    ``all_<name>``); the rest (a run's steps) are those of the run of median seconds, if timed."""
    middle = len(runs) // 2
    medians = dict(sorted(runs, key=lambda run: run["seconds"])[middle] if "seconds" in runs[0] else runs[-1])
    for name, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [run[name] for run in runs]
            medians[name], medians[f"all_{name}"] = sorted(values)[middle], values
    return medians


def _last_night_of(url: str, size: str) -> dt.date:
    """The last night with posts in the installation; generated first when it has no tables."""
    from telemetry_pipeline.source.database import SourceDatabase

    database = SourceDatabase(url)
    try:
        latest = _latest_post(database)
    except TelemetryError as error:
        if "missing" not in str(error) and "does not exist" not in str(error):
            raise
        latest = None
    if latest is None:
        from telemetry_pipeline.generate import generate

        print(f"{database.display} holds no reference installation: generating the {size} one first",
              file=sys.stderr)
        generate(size, url)
        latest = _latest_post(database)
    return dt.datetime.fromtimestamp(latest / 1000, dt.timezone.utc).date()


def _latest_post(database) -> int | None:
    import pyarrow as pa

    try:
        connection = database.connect()
        conn = connection.__enter__()
    except TelemetryError as error:
        if "does not exist" in str(error):
            return None
        raise
    try:
        conn.check_tables(["posts"])
        found = conn.fetch("SELECT MAX(created_at) FROM posts", {}, pa.schema([("latest", pa.int64())]),
                           table="posts")
        return found["latest"][0].as_py()
    finally:
        connection.__exit__(None, None, None)


def _run_child(scenario: str, env: dict, arguments: dict) -> dict:
    """One measurement in a fresh process; its last stdout line is its JSON result."""
    done = subprocess.run([sys.executable, "-m", "telemetry_pipeline.bench", scenario, json.dumps(arguments)],
                          env=env, capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last_error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TelemetryError(f"bench: measuring {scenario} failed: {last_error}")
    return json.loads(lines[-1])


def _figures(size, url, first, last, nights, extraction, one_night, noop, backfill, default) -> dict:
    from telemetry_pipeline.source.database import SourceDatabase

    per_run = default["seconds_per_run"]
    measured = len(per_run)
    mean_run = sum(per_run) / measured
    one_run_per_night = mean_run * nights
    floor = extraction["bare_fetch_seconds"] + noop["seconds"]
    return {
        "size": size,
        "database": SourceDatabase(url).display,
        "nights": {"first": first.isoformat(), "last": last.isoformat(), "count": nights},
        "one_night": {"seconds": one_night["seconds"], "runs_seconds": one_night["all_seconds"],
                      "peak_rss_mb": one_night["peak_rss_mb"],
                      "steps": one_night["steps"], "rows": extraction["rows"],
                      "payload_bytes": one_night["payload_bytes"]},
        "floor": {"sql_seconds": extraction["bare_fetch_seconds"], "noop_dagster_seconds": noop["seconds"],
                  "sql_runs_seconds": extraction["all_bare_fetch_seconds"],
                  "noop_runs_seconds": noop["all_seconds"],
                  "seconds": round(floor, 3), "night_over_floor": round(one_night["seconds"] / floor, 2)},
        "extraction": {"seconds": extraction["extract_seconds"], "bare_fetch_seconds": extraction["bare_fetch_seconds"],
                       "ratio": round(extraction["extract_seconds"] / extraction["bare_fetch_seconds"], 2),
                       "queries": extraction["queries"]},
        "backfill_single_run": {"seconds": backfill["seconds"], "peak_rss_mb": backfill["peak_rss_mb"],
                                "seconds_per_night": round(backfill["seconds"] / nights, 3),
                                "steps": backfill["steps"]},
        "one_run_per_night": {
            "runs_measured": measured, "seconds_per_run": [round(s, 2) for s in per_run],
            "mean_seconds_per_run": round(mean_run, 2),
            "seconds": round(one_run_per_night, 1), "extrapolated": measured < nights,
            "noop_run_seconds": default["noop_run_seconds"],
        },
        "speedup": round(one_run_per_night / backfill["seconds"], 1),
        "machine": _machine(url),
    }


def _machine(url: str) -> dict:
    import dagster
    import pyarrow

    model = "unknown"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {"cpus": os.cpu_count(), "cpu": model, "memory_gb": memory_gb, "python": platform.python_version(),
            "dagster": dagster.__version__, "pyarrow": pyarrow.__version__,
            "database": "PostgreSQL" if url.startswith("postgres") else "SQLite"}


def _table(f: dict) -> str:
    n = f["nights"]["count"]
    runs = f["one_run_per_night"]
    how = (f"{runs['runs_measured']} measured, {n - runs['runs_measured']} extrapolated"
           if runs["extrapolated"] else f"all {n} measured")
    rows = [
        (f"one night end to end (1 run, in process; median of {ONE_NIGHT_RUNS})", f["one_night"]["seconds"],
         f["one_night"]["peak_rss_mb"]),
        (f"  floor: the night's SQL alone (ADBC to Arrow; median of {ONE_NIGHT_RUNS})", f["floor"]["sql_seconds"],
         None),
        (f"  floor: no-op graph, one night (in process; median of {ONE_NIGHT_RUNS})",
         f["floor"]["noop_dagster_seconds"], None),
        ("  extraction (the five extract functions)", f["extraction"]["seconds"], None),
        (f"{n} nights, one run (in process)", f["backfill_single_run"]["seconds"],
         f["backfill_single_run"]["peak_rss_mb"]),
        (f"{n} nights, one run per night, multiprocess ({how})", runs["seconds"], None),
        ("  no-op graph, one run, multiprocess", runs["noop_run_seconds"], None),
    ]
    lines = [f"bench --size {f['size']}: {f['database']}, nights {f['nights']['first']}..{f['nights']['last']}"
             f" ({f['machine']['cpus']} CPUs, {f['machine']['memory_gb']} GB;"
             f" load {f['machine']['load_average_before_after'][0]} before,"
             f" {f['machine']['load_average_before_after'][1]} after)",
             f"{'measure':<70} {'seconds':>9} {'peak MB':>8}"]
    for name, seconds, peak in rows:
        lines.append(f"{name:<70} {seconds:>9.2f} {'' if peak is None else f'{peak:>8.0f}'}")
    lines += [
        f"one night / floor: {f['floor']['night_over_floor']} (target at most 2)",
        f"extraction / bare fetch: {f['extraction']['ratio']} (target at most 1.5)",
        f"one run per night / single run: {f['speedup']}x (target at least 50)",
        f"single run: {f['backfill_single_run']['seconds_per_night']} s a night",
    ]
    return "\n".join(lines)


# --- the measurements, each in its own process (python -m telemetry_pipeline.bench SCENARIO ARGS)


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _step_seconds(result) -> dict:
    import dagster as dg

    steps = {}
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            steps[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 3)
    return steps


def _measure_pipeline(first: str, last: str, workdir: str) -> dict:
    """The whole graph for first..last as one run in process: the production backfill path."""
    import dagster as dg

    from telemetry_pipeline.operations import materialize_nights

    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = materialize_nights(instance, dt.date.fromisoformat(first), dt.date.fromisoformat(last))
        seconds = time.perf_counter() - started
    if not result.success:
        raise TelemetryError("the measured run failed")
    outbox = Path(os.environ["TELEMETRY_OUTBOX_DIR"])
    written = sorted(outbox.glob(f"{INSTALLATION_ID}_*.json"))
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb(), "steps": _step_seconds(result),
            "nights_written": len(written), "payload_bytes": written[-1].stat().st_size if written else 0}


def _measure_noop(first: str, last: str, workdir: str) -> dict:
    """The no-op copy of the graph for first..last, as one run in process."""
    import dagster as dg

    job = noop_definitions().resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags={
            "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
        seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "peak_rss_mb": _peak_rss_mb(), "success": result.success}


def _measure_extract(first: str, last: str, workdir: str) -> dict:
    """The five extract functions for the nights, and the very same queries fetched bare (ADBC
    to Arrow, nothing else); each twice, the second time counted (warm cache)."""
    from telemetry_pipeline.source import extract
    from telemetry_pipeline.source.database import (
        POSTGRESQL_SESSION_SETTINGS,
        SourceConnection,
        SourceDatabase,
        _bind,
        postgresql_statement,
    )

    nights = _nights(first, last)
    database = SourceDatabase(os.environ["TELEMETRY_SOURCE_URL"])
    functions = [extract.extract_companies, extract.extract_teams, extract.extract_users,
                 extract.extract_code_reviews, extract.extract_user_activity]
    queries: list[tuple[str, dict]] = []
    original = SourceConnection.fetch

    def recording(self, sql, params, schema, *, table):
        queries.append((sql, dict(params)))
        return original(self, sql, params, schema, table=table)

    extract_seconds, bare_seconds, rows = [], [], {}
    for _ in range(2):
        queries.clear()
        SourceConnection.fetch = recording
        try:
            started = time.perf_counter()
            with database.connect() as conn:
                for function in functions:
                    rows[function.__name__.removeprefix("extract_")] = function(conn, nights).num_rows
            extract_seconds.append(time.perf_counter() - started)
        finally:
            SourceConnection.fetch = original
        started = time.perf_counter()
        if database.dialect == "postgresql":
            import adbc_driver_postgresql.dbapi as adbc_postgresql

            connection = adbc_postgresql.connect(database._url)
            cursor = connection.cursor()
            # The same session settings as the extraction, so the same plans.
            for setting in POSTGRESQL_SESSION_SETTINGS:
                cursor.execute(setting)
            for sql, params in queries:
                text, values = postgresql_statement(sql, params)  # as the extraction sends it
                cursor.execute(text, parameters=values or None)
                cursor.fetch_arrow_table()
            cursor.close()
            connection.close()
        else:
            import sqlite3

            connection = sqlite3.connect(database.path)
            for sql, params in queries:
                text, values = _bind(sql, params, "?")
                connection.execute(text, values).fetchall()
            connection.close()
        bare_seconds.append(time.perf_counter() - started)
    return {"extract_seconds": round(extract_seconds[-1], 3), "bare_fetch_seconds": round(bare_seconds[-1], 3),
            "queries": len(queries), "rows": rows}


def _measure_default_runs(first: str, runs: int, workdir: str) -> dict:
    """``runs`` nights from ``first``, one run each, launched as Dagster launches runs by default
    (execute_job: the multiprocess executor, a process per step), on a persistent throwaway
    instance; then one run of the no-op graph the same way."""
    import dagster as dg

    seconds = []
    (Path(workdir) / "instance").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(Path(workdir) / "instance"),
                                       overrides={"telemetry": {"enabled": False}}) as instance:
        for night in _nights(first, (dt.date.fromisoformat(first) + dt.timedelta(days=runs - 1)).isoformat()):
            started = time.perf_counter()
            result = dg.execute_job(dg.reconstructable(pipeline_job), instance=instance,
                                    tags={"dagster/partition": night.isoformat()})
            seconds.append(time.perf_counter() - started)
            if not result.success:
                raise TelemetryError(f"the run of night {night} failed")
        started = time.perf_counter()
        result = dg.execute_job(dg.reconstructable(noop_job), instance=instance,
                                tags={"dagster/partition": first})
        noop_seconds = time.perf_counter() - started
    return {"seconds_per_run": seconds, "noop_run_seconds": round(noop_seconds, 3)}


def _nights(first: str, last: str) -> list[dt.date]:
    from telemetry_pipeline.nights import nights_between

    return nights_between(dt.date.fromisoformat(first), dt.date.fromisoformat(last))


def pipeline_job():
    """The whole graph as a job, rebuilt in each step's process from the environment."""
    from telemetry_pipeline.definitions import ASSETS, default_resources

    return _all_assets_job(ASSETS, default_resources())


def noop_job():
    return _all_assets_job(noop_definitions().assets, {})


def _all_assets_job(assets, resources):
    """Every asset and its checks, as a named job with the default (multiprocess) executor."""
    import dagster as dg

    job = dg.define_asset_job("bench_every_asset", selection=dg.AssetSelection.all())
    definitions = dg.Definitions(assets=assets, resources=resources, jobs=[job])
    return definitions.resolve_job_def("bench_every_asset")


def noop_definitions():
    """The same graph (asset keys, dependencies, partitions, backfill policy, blocking checks)
    whose bodies do nothing: what Dagster itself costs to run it."""
    import dagster as dg

    from telemetry_pipeline.definitions import ASSETS
    from telemetry_pipeline.partitions import SINGLE_RUN, nightly_partitions

    def noop_asset(definition):
        [spec] = definition.specs
        checks = list(definition.check_specs)

        @dg.asset(key=spec.key, deps=[dep.asset_key for dep in spec.deps], partitions_def=nightly_partitions,
                  backfill_policy=SINGLE_RUN, group_name=spec.group_name, check_specs=checks or None)
        def _noop():
            return dg.MaterializeResult(check_results=[
                dg.AssetCheckResult(check_name=check.name, passed=True) for check in checks])

        return _noop

    return dg.Definitions(assets=[noop_asset(definition) for definition in ASSETS])


_SCENARIOS = {"pipeline": _measure_pipeline, "noop": _measure_noop, "extract": _measure_extract,
              "default_runs": _measure_default_runs}


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    scenario, arguments = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps(_SCENARIOS[scenario](**arguments)))
