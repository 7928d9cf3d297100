"""Reference installations: `telemetry-pipeline generate` into real SQLite files and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import uuid

import pytest

from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.generate import SIZES, generate
from telemetry_pipeline.nights import DAY_MS, night_start_ms
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline.source.schema import SOURCE_TABLES
from telemetry_pipeline_tests.installation import write_config

END = dt.date(2026, 11, 26)
CLI = [sys.executable, "-m", "telemetry_pipeline.cli"]


def rows_of(url: str) -> dict[str, list[tuple]]:
    """Every row of every contract table, sorted, as plain tuples."""
    if url.startswith("sqlite"):
        db = sqlite3.connect(url[len("sqlite://"):])
        try:
            return {t: sorted(tuple(r) for r in db.execute(f"SELECT * FROM {t}")) for t in SOURCE_TABLES}
        finally:
            db.close()
    import psycopg2

    db = psycopg2.connect(url)
    try:
        with db.cursor() as cursor:
            found = {}
            for table in SOURCE_TABLES:
                cursor.execute(f"SELECT * FROM {table}")
                found[table] = sorted(tuple(int(v) if isinstance(v, bool) else v for v in r) for r in cursor.fetchall())
            return found
    finally:
        db.close()


@pytest.fixture(scope="module")
def small_sqlite(tmp_path_factory):
    url = f"sqlite://{tmp_path_factory.mktemp('small') / 'codestream.db'}"
    generate("small", url, end_date=END)
    return url


def test_same_seed_same_rows_and_postgres_holds_the_same_as_sqlite(small_sqlite, tmp_path, postgres_url):
    again = f"sqlite://{tmp_path / 'again.db'}"
    generate("small", again, end_date=END)
    assert rows_of(again) == rows_of(small_sqlite)
    generate("small", postgres_url, end_date=END)
    assert rows_of(postgres_url) == rows_of(small_sqlite)


def test_another_seed_other_rows(small_sqlite, tmp_path):
    other = f"sqlite://{tmp_path / 'other.db'}"
    generate("small", other, end_date=END, seed=7)
    assert rows_of(other)["posts"] != rows_of(small_sqlite)["posts"]


def test_the_small_shape(small_sqlite):
    rows = rows_of(small_sqlite)
    size = SIZES["small"]
    assert len(rows["users"]) == size.users and len(rows["teams"]) == size.teams
    assert len(rows["companies"]) == size.companies
    end = night_start_ms(END) + DAY_MS
    first = end - size.nights * DAY_MS
    nights = {(p[3] - first) // DAY_MS for p in rows["posts"]}
    assert nights == set(range(size.nights))  # activity every night of the window, none outside it
    per_night = [sum(1 for p in rows["posts"] if (p[3] - first) // DAY_MS == n) for n in range(size.nights)]
    assert min(per_night) >= size.weekend_posts and max(per_night) <= size.weekday_posts
    # Most users are idle on a given night.
    for n in range(size.nights):
        active = {p[2] for p in rows["posts"] if (p[3] - first) // DAY_MS == n}
        existing = sum(1 for u in rows["users"] if u[4] < first + (n + 1) * DAY_MS)
        assert len(active) < existing / 2
    # Plans free and paid, codemarks in reviews, posts pointing at deleted codemarks.
    plans = {c[2] for c in rows["companies"]}
    assert plans & {"FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", None} and plans - {"FREEPLAN", "30DAYTRIAL",
                                                                                  "TRIALEXPIRED", None}
    codemark_ids = {c[0] for c in rows["codemarks"]}
    assert any(p[4] is not None and p[4] not in codemark_ids for p in rows["posts"])
    assert any(c[4] is not None for c in rows["codemarks"])


def test_reviews_are_approved_days_after_they_were_opened(small_sqlite):
    reviews = rows_of(small_sqlite)["reviews"]
    delays = sorted((approved - created) / DAY_MS for _, _, _, created, approved in reviews if approved is not None)
    assert delays and all(d >= 0 for d in delays)
    assert delays[len(delays) // 2] >= 1  # the median review waits a day or more
    assert any(approved is None for *_, approved in reviews)  # some are never approved
    end = night_start_ms(END) + DAY_MS
    assert all(approved < end for *_, approved in reviews if approved is not None)


def test_the_end_date_is_the_last_night_of_activity(tmp_path):
    url = f"sqlite://{tmp_path / 'other-end.db'}"
    generate("small", url, end_date=dt.date(2025, 3, 1))
    rows = rows_of(url)
    last = max(p[3] for p in rows["posts"])
    assert dt.datetime.fromtimestamp(last / 1000, dt.timezone.utc).date() == dt.date(2025, 3, 1)
    assert max(u[4] for u in rows["users"]) < night_start_ms(dt.date(2025, 3, 2))


def test_the_default_end_date_is_the_night_before_today(tmp_path):
    url = f"sqlite://{tmp_path / 'today.db'}"
    generate("small", url)
    last = max(p[3] for p in rows_of(url)["posts"])
    yesterday = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
    assert dt.datetime.fromtimestamp(last / 1000, dt.timezone.utc).date() == yesterday


def test_the_contracts_tables_and_indexes_are_there_and_the_pipeline_reads_them(small_sqlite, postgres_url,
                                                                                 tmp_path):
    generate("small", postgres_url, end_date=END)
    for url in (small_sqlite, postgres_url):
        with SourceDatabase(url).connect() as conn:
            conn.check_tables(list(SOURCE_TABLES))
            assert conn.enforces_unique("posts", ("id",)) and conn.enforces_not_null("posts", "creator_id")
    config = load_installation_config(write_config(tmp_path / "codestream.json"))
    payload = summarize_night(SourceDatabase(postgres_url), config, END).payload
    assert payload["date"] == END.isoformat() and len(payload["users"]) == SIZES["small"].users
    assert any(u["replies"] for u in payload["users"])


def test_an_existing_installation_is_refused_unless_replaced(small_sqlite, tmp_path):
    url = f"sqlite://{tmp_path / 'twice.db'}"
    generate("small", url, end_date=END)
    done = subprocess.run([*CLI, "generate", "--size", "small", "--url", url], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "already holds table" in done.stderr and "--replace" in done.stderr
    done = subprocess.run([*CLI, "generate", "--size", "small", "--url", url, "--replace", "--end-date", "2026-11-26"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rows_of(url) == rows_of(small_sqlite)


def test_generate_creates_the_postgres_database_it_is_given(postgres_database):
    import psycopg2

    name = f"telemetry_gen_{uuid.uuid4().hex[:10]}"
    url = postgres_database.rsplit("/", 1)[0] + f"/{name}"
    try:
        done = subprocess.run([*CLI, "generate", "--size", "small", "--url", url], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "posts" in done.stdout
        assert len(rows_of(url)["users"]) == SIZES["small"].users
    finally:
        admin = psycopg2.connect(postgres_database.rsplit("/", 1)[0] + "/postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.mark.parametrize("args, message", [
    (["--size", "huge", "--url", "sqlite:///tmp/x.db"], "--size 'huge' is not a size"),
    (["--size", "small", "--url", "sqlite:///tmp/x.db", "--seed", "soon"], "--seed 'soon' is not a seed"),
    (["--size", "small", "--url", "sqlite:///tmp/x.db", "--end-date", "2026-02-30"], "--end-date '2026-02-30'"),
    (["--size", "small", "--url", "mysql://h/db"], "unsupported database URL scheme"),
    (["--size", "small", "--url", "sqlite://relative.db"], "must be absolute"),
    (["--size", "small", "--url", "postgresql://telemetry:Secr3t-pw@127.0.0.1:1/x"], "127.0.0.1"),
])
def test_bad_arguments_are_one_clear_line(args, message, tmp_path):
    done = subprocess.run([*CLI, "generate", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Secr3t-pw" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "relative.db").exists()
