"""Connections to a real PostgreSQL: the session settings, queries fetched together, a backfill's
nights fetched on two connections, and the run's shared connection (opened once, dropped after a
failure, closed at the end of the run)."""

from __future__ import annotations

import urllib.parse

import dagster as dg
import pyarrow as pa
import pytest

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.resources import SourceDatabaseResource
from telemetry_pipeline.source.database import (
    FETCH_EACH_CONNECTIONS,
    FETCH_TOGETHER_MIN_ROWS,
    Query,
    SourceDatabase,
    postgresql_statement,
)

SCHEMA = pa.schema([("n", pa.int64())])


def _sessions(url: str) -> int:
    """Open sessions of the test's own database, other than the one asking."""
    import psycopg2

    database = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg2.connect(url) as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                       (database,))
        return cursor.fetchone()[0]


def _setting(conn, name: str) -> str:
    return conn.fetch(f"SELECT current_setting('{name}') AS value", {}, pa.schema([("value", pa.string())]),
                      table="settings")["value"][0].as_py()


def test_a_connection_plans_for_one_night_without_jit(postgres_url):
    with SourceDatabase(postgres_url).connect() as conn:
        assert _setting(conn, "jit") == "off"
        assert _setting(conn, "random_page_cost") == "1.1"
        assert _setting(conn, "work_mem") == "64MB"


def test_a_connection_holds_no_transaction_open_between_queries(postgres_url):
    """A run keeps its connection from step to step: idle, it must not hold locks on the tables."""
    import psycopg2

    _numbers(postgres_url, 10)
    database = urllib.parse.urlsplit(postgres_url).path.lstrip("/")
    with SourceDatabase(postgres_url).connect() as conn:
        conn.fetch("SELECT n FROM numbers", {}, SCHEMA, table="numbers")
        with psycopg2.connect(postgres_url) as db, db.cursor() as cursor:
            cursor.execute("SELECT state FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                           (database,))
            assert [state for (state,) in cursor.fetchall()] == ["idle"]


def _numbers(url: str, rows: int, table: str = "numbers") -> None:
    import psycopg2

    with psycopg2.connect(url) as db, db.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {table} AS SELECT generate_series(1, %s)::bigint AS n", (rows,))
        cursor.execute(f"ANALYZE {table}")


def _queries() -> list:
    return [Query(f"SELECT n + {i} AS n FROM numbers WHERE n <= :n", {"n": 1000 * (i + 1)}, SCHEMA, "numbers")
            for i in range(3)]


def test_queries_fetched_together_equal_each_fetched_alone(postgres_url):
    _numbers(postgres_url, FETCH_TOGETHER_MIN_ROWS)
    with SourceDatabase(postgres_url).connect() as conn:
        alone = [conn.fetch(sql, params, schema, table=table) for sql, params, schema, table in _queries()]
        together = conn.fetch_together(_queries())
        again = conn.fetch_together(_queries())  # on the connections the first call opened
        assert [t.num_rows for t in together] == [1000, 2000, 3000]
        assert together == alone and again == alone
        assert _sessions(postgres_url) == 3
    assert _sessions(postgres_url) == 0  # the extra connections close with the one that opened them


def test_queries_on_a_small_table_are_fetched_one_after_another(postgres_url):
    _numbers(postgres_url, 5000)  # opening connections would cost more than fetching together saves
    with SourceDatabase(postgres_url).connect() as conn:
        assert [t.num_rows for t in conn.fetch_together(_queries())] == [1000, 2000, 3000]
        assert _sessions(postgres_url) == 1


def test_a_failed_query_among_those_fetched_together_is_named(postgres_url):
    _numbers(postgres_url, FETCH_TOGETHER_MIN_ROWS)
    queries = [Query("SELECT n FROM numbers", {}, SCHEMA, "numbers"),
               Query("SELECT n FROM no_such_table", {}, SCHEMA, "posts")]
    with SourceDatabase(postgres_url).connect() as conn:
        with pytest.raises(TelemetryError, match="reading table posts failed"):
            conn.fetch_together(queries)
    assert _sessions(postgres_url) == 0


def test_the_run_shares_one_connection_and_drops_it_after_a_failure(postgres_url):
    resource = SourceDatabaseResource(url=postgres_url)
    with resource.connection() as first:
        pass
    with resource.connection() as second:
        assert second is first  # the next step of the run reads on the same connection
    with pytest.raises(TelemetryError):
        with resource.connection() as conn:
            conn.fetch("SELECT n FROM no_such_table", {}, SCHEMA, table="posts")
    assert _sessions(postgres_url) == 0  # PostgreSQL refuses everything after an error: dropped
    with resource.connection() as fresh:
        assert fresh is not first
        assert _sessions(postgres_url) == 1
    resource.teardown_after_execution(dg.build_init_resource_context())
    assert _sessions(postgres_url) == 0


def _nights_queries(count: int) -> list:
    return [Query("SELECT n FROM numbers WHERE n % :nights = :night", {"nights": count, "night": i}, SCHEMA,
                  "numbers") for i in range(count)]


def test_a_backfills_nights_fetched_on_two_connections_come_back_in_order(postgres_url):
    _numbers(postgres_url, 3000)
    with SourceDatabase(postgres_url).connect() as conn:
        parallel_workers = _setting(conn, "max_parallel_workers_per_gather")
        alone = [conn.fetch(sql, params, schema, table=table) for sql, params, schema, table in _nights_queries(9)]
        each = conn.fetch_each(_nights_queries(9))
        assert each == alone and [t["n"][0].as_py() for t in each] == [9, *range(1, 9)]
        assert _sessions(postgres_url) == FETCH_EACH_CONNECTIONS  # this one and one extra, kept
        # Each night's query ran in one process; a single night's query may use parallel workers again.
        assert _setting(conn, "max_parallel_workers_per_gather") == parallel_workers
        assert _setting(conn._extra_connection(1), "max_parallel_workers_per_gather") == parallel_workers


def test_a_failed_night_among_those_fetched_on_two_connections_is_named(postgres_url):
    _numbers(postgres_url, 100)
    queries = [*_nights_queries(3), Query("SELECT n FROM no_such_table", {}, SCHEMA, "posts")]
    with SourceDatabase(postgres_url).connect() as conn:
        with pytest.raises(TelemetryError, match="reading table posts failed"):
            conn.fetch_each(queries)
    assert _sessions(postgres_url) == 0


def test_integers_go_into_the_sql_text_and_everything_else_is_bound():
    text, values = postgresql_statement(
        "SELECT id FROM posts WHERE created_at >= :start AND created_at < :end AND id <> :id AND x = :flag - :low",
        {"start": 1_795_132_800_000, "end": 1_795_219_200_000, "id": "p-1", "flag": True, "low": -5})
    assert text == ("SELECT id FROM posts WHERE created_at >= 1795132800000 AND created_at < 1795219200000"
                    " AND id <> $1 AND x = $2 - (-5)")
    assert values == ("p-1", True)


def test_a_second_step_on_the_runs_connection_opens_the_users_extra_connections(postgres_url):
    _numbers(postgres_url, FETCH_TOGETHER_MIN_ROWS, table="users")
    resource = SourceDatabaseResource(url=postgres_url)
    with resource.connection():
        pass
    assert _sessions(postgres_url) == 1  # one step: perhaps the only one in its process
    with resource.connection() as conn:
        assert sorted(conn._extra_by_slot) == [1, 2]  # opening in the background
        conn.fetch_together([Query("SELECT n FROM users", {}, SCHEMA, "users")] * 3)  # on the two opened early
        assert _sessions(postgres_url) == 3
    resource.teardown_after_execution(dg.build_init_resource_context())
    assert _sessions(postgres_url) == 0
