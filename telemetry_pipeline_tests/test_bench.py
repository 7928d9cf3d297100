"""`telemetry-pipeline bench`: a smoke test on the small size and a couple of nights. Benchmarks
report figures; nothing here asserts a time, only that every figure is there and positive."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "telemetry_pipeline.cli"]


def _numbers(value, where="figures"):
    """Every number in the figures, with where it is."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{where}[{index}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield where, value


def test_bench_on_the_small_size_prints_a_table_and_one_json_line(postgres_url, tmp_path):
    # The schema is empty: bench generates the small installation first, then measures.
    done = subprocess.run([*CLI, "bench", "--size", "small", "--url", postgres_url, "--nights", "2",
                           "--default-runs", "1"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert {"size", "database", "nights", "one_night", "floor", "extraction", "backfill_single_run",
            "one_run_per_night", "speedup", "machine"} <= set(figures)
    assert figures["size"] == "small" and figures["nights"]["count"] == 2
    assert {"seconds", "peak_rss_mb", "steps", "rows", "payload_bytes"} <= set(figures["one_night"])
    assert {"sql_seconds", "noop_dagster_seconds", "seconds", "night_over_floor"} <= set(figures["floor"])
    assert {"seconds", "bare_fetch_seconds", "ratio", "queries"} <= set(figures["extraction"])
    assert {"seconds", "peak_rss_mb", "seconds_per_night", "steps"} <= set(figures["backfill_single_run"])
    runs = figures["one_run_per_night"]
    assert runs["runs_measured"] == 1 and runs["extrapolated"] is True and len(runs["seconds_per_run"]) == 1
    assert set(figures["one_night"]["steps"]) >= {"companies", "teams", "users", "code_reviews", "user_activity",
                                                  "night_summary", "phone_home_delivery"}
    numbers = dict(_numbers({k: v for k, v in figures.items() if k != "machine"}))
    assert numbers and all(value > 0 for value in numbers.values()), [w for w, v in numbers.items() if v <= 0]
    # The table before it names each measurement; the password-free database is shown.
    table = "\n".join(lines[:-1])
    for words in ("one night end to end", "floor: the night's SQL alone", "floor: no-op graph",
                  "2 nights, one run (in process)", "one run per night, multiprocess (1 measured, 1 extrapolated)"):
        assert words in table, table
    assert not list(tmp_path.iterdir())  # its throwaway files are gone


@pytest.mark.parametrize("args, message", [
    (["--size", "tiny"], "--size 'tiny' is not a size"),
    (["--size", "small", "--nights", "0"], "--nights '0' is not a number of nights"),
    (["--size", "small", "--default-runs", "x"], "--default-runs 'x'"),
    (["--size", "small", "--url", "postgresql://bench:Secr3t-pw@127.0.0.1:1/x"], "127.0.0.1"),
])
def test_bad_arguments_are_one_clear_line(args, message):
    done = subprocess.run([*CLI, "bench", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Secr3t-pw" not in done.stderr and "Traceback" not in done.stderr
