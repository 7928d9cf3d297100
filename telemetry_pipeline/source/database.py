"""Connections to the installation's database, PostgreSQL or SQLite, behind one interface.

Queries are written once with ``:name`` parameters and bound, never formatted in; on PostgreSQL,
values of type ``int`` alone are written in as literals (``postgresql_statement``: digits only).
PostgreSQL is read through ADBC straight into Arrow; SQLite through the standard library,
whose rows are typed here against the contract's column types.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.source.schema import SOURCE_TABLES, column

SOURCE_URL_ENV = "TELEMETRY_SOURCE_URL"
# Queries are fetched together (fetch_together) only from a first table this large.
FETCH_TOGETHER_MIN_ROWS = 20_000
# Connections open_extra_connections opens beside this one: what fetch_together (the users' three
# queries) and fetch_each (two nights at a time) read on.
EXTRA_CONNECTIONS = 2
# fetch_each: a backfill's nights, one query each, this many at a time on as many connections,
# each query in one process. PostgreSQL would otherwise start two parallel workers for every
# night's query (six processes for two cores); one process a query, two at a time, counts a
# year's nights 1.5 times faster on two cores, and bounds what a backfill asks of the database.
FETCH_EACH_CONNECTIONS = 2
_ONE_PROCESS_A_QUERY = "max_parallel_workers_per_gather"
T = TypeVar("T")
# For this connection only. Every query reads one night: a small part of large tables, mostly
# from cache, by key. With the default random_page_cost (tuned for spinning disks) the planner may
# scan all ten million codemarks instead of looking up a night's few thousand, ten times slower;
# a night's rows, grouped by user, sort in memory; and compiling a night's query (JIT) costs a
# third of running it (25-50 ms a night on the large reference installation).
POSTGRESQL_SESSION_SETTINGS = ("SET random_page_cost = 1.1", "SET work_mem = '64MB'", "SET jit = off")
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)")


def _bind(sql: str, params: Mapping[str, Any], marker: str, *, integers_inline: bool = False) -> tuple[str, tuple]:
    """Rewrite ``:name`` into numbered markers (``$1`` or ``?1``) and order the values to match.

    With ``integers_inline``, integer values are written into the text as decimal literals instead
    (nothing but digits and a minus sign can come of an int; a negative one goes in parentheses):
    PostgreSQL then sends the rows by COPY, which ADBC cannot use for a query with parameters, and
    which fetches 100,000 users in half the time. Every other value is still bound."""
    order: list[str] = []

    def number(match: re.Match) -> str:
        name = match.group(1)
        if integers_inline and type(params[name]) is int:  # not bool, whose type is bool
            return str(params[name]) if params[name] >= 0 else f"({params[name]})"
        if name not in order:
            order.append(name)
        return f"{marker}{order.index(name) + 1}"

    return _PARAMETER.sub(number, sql), tuple(params[name] for name in order)


def postgresql_statement(sql: str, params: Mapping[str, Any]) -> tuple[str, tuple]:
    """What is sent to PostgreSQL for ``sql`` and ``params``: integers inline, the rest bound."""
    return _bind(sql, params, "$", integers_inline=True)


class SourceDatabase:
    """The installation's database, named by a URL: ``postgresql://…`` or ``sqlite:///abs/path.db``."""

    def __init__(self, url: str):
        self._url = url
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme in ("postgresql", "postgres"):
            self.dialect = "postgresql"
            host = parsed.hostname or "localhost"
            port = f":{parsed.port}" if parsed.port else ""
            user = f"{parsed.username}@" if parsed.username else ""
            # Shown in errors and metadata: everything but the password.
            self.display = f"postgresql://{user}{host}{port}{parsed.path}"
            self._password = parsed.password
        elif parsed.scheme == "sqlite":
            self.dialect = "sqlite"
            self.path = urllib.parse.unquote(url[len("sqlite://"):])
            self.display = f"sqlite://{self.path}"
            self._password = None
        else:
            raise TelemetryError(
                f"{SOURCE_URL_ENV}: unsupported database URL scheme {parsed.scheme!r};"
                " expected postgresql://user@host:port/db or sqlite:///abs/path.db"
            )

    def __repr__(self) -> str:
        return f"SourceDatabase({self.display!r})"

    def _scrub(self, message: str) -> str:
        message = " ".join(str(message).split())
        if self._password:
            message = message.replace(self._password, "***")
        return message

    @contextlib.contextmanager
    def connect(self) -> Iterator[SourceConnection]:
        if self.dialect == "sqlite":
            connection = self._connect_sqlite()
        else:
            connection = self._connect_postgresql()
        opened = SourceConnection(self, connection)
        try:
            yield opened
        finally:
            try:
                opened.close_extra_connections()
            finally:
                connection.close()

    def _connect_sqlite(self):
        if not self.path.startswith("/"):
            raise TelemetryError(f"{SOURCE_URL_ENV}: SQLite path must be absolute: {self.display}")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as error:
            raise TelemetryError(f"source database {self.path}: {error.strerror}") from None
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro"
        return sqlite3.connect(uri, uri=True)

    def _connect_postgresql(self):
        import adbc_driver_postgresql.dbapi as adbc_postgresql

        try:
            # Autocommit: every query only reads, and a run keeps its connection from step to step;
            # in one transaction it would hold its locks on the installation's tables all run long.
            connection = adbc_postgresql.connect(self._url, autocommit=True)
        except Exception as error:  # the driver raises several types; all mean "cannot connect"
            raise TelemetryError(
                f"cannot connect to source database {self.display}: {self._scrub(error)}"
            ) from None
        setting = POSTGRESQL_SESSION_SETTINGS[0]
        try:
            cursor = connection.cursor()
            try:
                for setting in POSTGRESQL_SESSION_SETTINGS:
                    cursor.execute(setting)
            finally:
                cursor.close()
        except Exception as error:
            connection.close()
            raise TelemetryError(
                f"source database {self.display}: cannot apply {setting!r}: {self._scrub(error)}"
            ) from None
        return connection


class Query(NamedTuple):
    """One query for ``SourceConnection.fetch_together``: what ``fetch`` takes."""

    sql: str
    params: Mapping[str, Any]
    schema: pa.Schema
    table: str


class SourceConnection:
    def __init__(self, database: SourceDatabase, connection):
        self.database = database
        self._connection = connection
        self._unique_keys: dict[tuple[str, tuple[str, ...]], bool] = {}
        self._not_null: dict[str, set[str]] = {}
        self._catalogued: dict[str, _TableConstraints | None] = {}  # PostgreSQL: by table, None when missing
        self._row_estimates: dict[str, float] = {}
        self._present: dict[str, dict[str, str | None]] | None = None
        self._extra = contextlib.ExitStack()  # the connections of fetch_together, kept as long as this one
        self._extra_by_slot: dict[int, Future[SourceConnection]] = {}
        self._extra_lock = threading.Lock()
        self._opener: ThreadPoolExecutor | None = None
        self._extra_planned = False  # open_extra_connections has decided

    def close_extra_connections(self) -> None:
        with self._extra_lock:
            opening, self._extra_by_slot = list(self._extra_by_slot.values()), {}
        for future in opening:  # one still opening is closed too, once open
            with contextlib.suppress(Exception):
                future.result()
        if self._opener is not None:
            self._opener.shutdown()
            self._opener = None
        self._extra.close()

    def open_extra_connections(self, table: str) -> None:
        """Start opening, in the background, the extra connections that ``fetch_together`` and
        ``fetch_each`` read on, when ``table`` is large enough for ``fetch_together`` (opening one
        takes about 40 ms: by the time a run's users are fetched, they are ready)."""
        if self._extra_planned or self.database.dialect != "postgresql":
            return
        self._extra_planned = True
        if self._estimated_rows(table) >= FETCH_TOGETHER_MIN_ROWS:
            for slot in range(1, EXTRA_CONNECTIONS + 1):
                self._extra_opening(slot)

    def fetch_together(self, queries: list[Query]) -> list[pa.Table]:
        """Several queries, each as ``fetch`` runs it, at the same time on PostgreSQL when their
        first table is large enough for it to pay. One caller at a time, like ``fetch``.

        Turning a result into Arrow costs the client far more than the server its query (100,000
        users: 16 ms in PostgreSQL, 150 ms fetched), and ADBC does it without the GIL: on one
        connection each, three queries take the time of the longest. Connections beyond this one
        are opened in their own thread (about 40 ms each), then kept as long as this one; below
        FETCH_TOGETHER_MIN_ROWS rows (the planner's estimate) opening them costs more than it saves."""
        if (self.database.dialect == "sqlite" or len(queries) < 2
                or self._estimated_rows(queries[0].table) < FETCH_TOGETHER_MIN_ROWS):
            return [self.fetch(q.sql, q.params, q.schema, table=q.table) for q in queries]

        def run(slot: int) -> pa.Table:
            query = queries[slot]
            connection = self if slot == 0 else self._extra_connection(slot)
            return connection.fetch(query.sql, query.params, query.schema, table=query.table)

        with ThreadPoolExecutor(max_workers=len(queries)) as pool:
            return list(pool.map(run, range(len(queries))))

    def fetch_each(self, queries: list[Query]) -> list[pa.Table]:
        """Many queries (a backfill's nights), each as ``fetch`` runs it, in order; on PostgreSQL
        FETCH_EACH_CONNECTIONS at a time (see ``read_each``). One caller at a time, like ``fetch``."""
        if not queries:
            return []
        return self.read_each(lambda connection, q: connection.fetch(q.sql, q.params, q.schema, table=q.table),
                              queries, table=queries[0].table)

    def read_each(self, read: Callable[[SourceConnection, T], pa.Table], items: Sequence[T], *,
                  table: str) -> list[pa.Table]:
        """``read(connection, item)`` for each item (a backfill's nights), in order; on PostgreSQL
        FETCH_EACH_CONNECTIONS items at a time, each on a connection of its own (this one and extra
        ones kept as ``fetch_together`` keeps them), each query of an item without parallel
        workers. ``table`` names what is read, in errors. One caller at a time, like ``fetch``."""
        if self.database.dialect == "sqlite" or len(items) < 2:
            return [read(self, item) for item in items]
        slots = itertools.count()
        mine = threading.local()  # each thread of the pool reads on a connection of its own
        used: list[SourceConnection] = []

        def run(item: T) -> pa.Table:
            if not hasattr(mine, "slot"):
                mine.slot = next(slots)  # once a thread: a connection that fails to open is retried, not added to
            if not hasattr(mine, "connection"):
                connection = self if mine.slot == 0 else self._extra_connection(mine.slot)
                connection.execute(f"SET {_ONE_PROCESS_A_QUERY} = 0", table=table)
                used.append(connection)
                mine.connection = connection
            return read(mine.connection, item)

        try:
            with ThreadPoolExecutor(max_workers=FETCH_EACH_CONNECTIONS) as pool:
                return list(pool.map(run, items))
        finally:
            for connection in used:  # a single night's query is faster with parallel workers
                with contextlib.suppress(TelemetryError):  # a broken connection fails its next query clearly
                    connection.execute(f"RESET {_ONE_PROCESS_A_QUERY}", table=table)

    @contextlib.contextmanager
    def one_snapshot(self, table: str) -> Iterator[None]:
        """PostgreSQL: the reads inside see the database as it was at the first of them, rows
        written meanwhile by others unseen (one REPEATABLE READ transaction, ended when they are
        done; not declared READ ONLY, which a view calling nextval() would refuse). ``table``
        names what is read, in errors."""
        assert self.database.dialect == "postgresql", "one_snapshot is for PostgreSQL"
        self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ", table=table)
        try:
            yield
        finally:
            with contextlib.suppress(TelemetryError):  # a broken connection fails its next query clearly
                self.execute("COMMIT", table=table)

    def execute(self, statement: str, *, table: str) -> None:
        """A statement without rows (a session setting) on PostgreSQL; errors as ``fetch``'s."""
        with self._reading(table):
            cursor = self._connection.cursor()
            try:
                cursor.execute(statement)
            finally:
                cursor.close()

    def _catalog_rows(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        """PostgreSQL: the rows of a small query of the catalogue, as tuples."""
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, parameters=parameters or None)
            return cursor.fetchall()
        finally:
            cursor.close()

    def _estimated_rows(self, table: str) -> float:
        """PostgreSQL's estimate of the table's rows (pg_class.reltuples; -1 when never analysed),
        read once per connection."""
        if table not in self._row_estimates:
            found = self.fetch("SELECT reltuples::float8 AS rows FROM pg_class WHERE oid = to_regclass(:name)",
                               {"name": table}, pa.schema([("rows", pa.float64())]), table=table)
            known = found.num_rows and found["rows"][0].is_valid
            self._row_estimates[table] = found["rows"][0].as_py() if known else -1.0
        return self._row_estimates[table]

    def _extra_connection(self, slot: int) -> SourceConnection:
        """The extra connection of ``slot`` (each thread of a fetch_together or fetch_each has its
        own), opened on first use or in the background by open_extra_connections."""
        opening = self._extra_opening(slot)
        try:
            return opening.result()
        except BaseException:
            with self._extra_lock:  # not kept: the next call tries again
                if self._extra_by_slot.get(slot) is opening:
                    del self._extra_by_slot[slot]
            raise

    def _extra_opening(self, slot: int) -> Future[SourceConnection]:
        with self._extra_lock:
            if slot not in self._extra_by_slot:
                if self._opener is None:
                    self._opener = ThreadPoolExecutor(max_workers=EXTRA_CONNECTIONS,
                                                      thread_name_prefix="source-connect")
                self._extra_by_slot[slot] = self._opener.submit(self._open_extra)
            return self._extra_by_slot[slot]

    def _open_extra(self) -> SourceConnection:
        opening = self.database.connect()
        extra = opening.__enter__()
        with self._extra_lock:
            self._extra.push(opening.__exit__)
        return extra

    def fetch(self, sql: str, params: Mapping[str, Any], schema: pa.Schema, *, table: str) -> pa.Table:
        """Run one query and return its rows typed as ``schema`` (result columns in schema order)."""
        with self._reading(table):
            if self.database.dialect == "sqlite":
                return self._fetch_sqlite(sql, params, schema, table)
            return self._fetch_postgresql(sql, params, schema, table)

    @contextlib.contextmanager
    def _reading(self, table: str) -> Iterator[None]:
        """A driver's error as one line naming the database (without its password) and the table."""
        try:
            yield
        except TelemetryError:
            raise
        except Exception as error:
            raise TelemetryError(
                f"source database {self.database.display}: reading table {table} failed:"
                f" {self.database._scrub(error)}"
            ) from None

    def _fetch_sqlite(self, sql, params, schema, table) -> pa.Table:
        text, values = _bind(sql, params, "?")
        cursor = self._connection.execute(text, values)
        try:
            rows = cursor.fetchall()
        except sqlite3.OperationalError as error:
            # sqlite3's own message quotes the undecodable text, which may be an email.
            if "decode" not in str(error):
                raise
            raise _not_utf8(self._connection, text, values, schema, table) from None
        columns = list(zip(*rows)) if rows else [()] * len(schema)
        try:
            arrays = [_typed_array(list(values), field, table) for values, field in zip(columns, schema)]
        except _BadValue as bad:
            ids = _row_ids(schema, rows)
            row = f" in row {ids[0]}={ids[1][bad.index]!r}" if ids else f" in row #{bad.index + 1}"
            raise TelemetryError(f"table {table}: column {_source_name(table, bad.column)} {bad.problem}{row}") from None
        return pa.Table.from_arrays(arrays, schema=schema)

    def _fetch_postgresql(self, sql, params, schema, table) -> pa.Table:
        text, values = postgresql_statement(sql, params)
        cursor = self._connection.cursor()
        try:
            cursor.execute(text, parameters=values or None)
            fetched = cursor.fetch_arrow_table()
        finally:
            cursor.close()
        arrays = []
        for field, array in zip(schema, fetched.columns):
            try:
                arrays.append(array.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise TelemetryError(
                    f"table {table}: column {field.name} holds {array.type}, expected {field.type}"
                ) from None
        return pa.Table.from_arrays(arrays, schema=schema)

    def check_tables(self, tables: list[str]) -> None:
        """Fail in one line on the first contract table or column the database lacks, or (PostgreSQL,
        which types columns) a column whose type cannot hold the contract's values."""
        try:
            if self._present is None:  # once per connection: every extract step of a run asks
                self._present = self._columns_by_table()
            present = self._present
        except Exception as error:  # not a database at all, or one we may not read
            raise TelemetryError(
                f"source database {self.database.display}: cannot list its tables: {self.database._scrub(error)}"
            ) from None
        for table in tables:
            if table not in present:
                raise TelemetryError(f"source database {self.database.display}: table {table} is missing")
            for col in SOURCE_TABLES[table]:
                if col.name not in present[table]:
                    raise TelemetryError(
                        f"source database {self.database.display}: table {table} has no column {col.name}"
                    )
                found = present[table][col.name]
                if found is not None and found not in _POSTGRES_TYPES[col.sql_type]:
                    raise TelemetryError(
                        f"source database {self.database.display}: table {table} column {col.name} is"
                        f" {found}, expected {col.sql_type}"
                    )

    def refuse_bad_values(self, table: str, column_name: str, id_column: str = "id") -> None:
        """Check a column the night's SQL filters on but never fetches: NULL where the contract
        forbids it, and (SQLite, which types values, not columns) a value of the wrong type."""
        col = column(table, column_name)
        probes = []
        if not col.nullable and not self.enforces_not_null(table, column_name):
            probes.append((f"{column_name} IS NULL", "is NULL"))
        if self.database.dialect == "sqlite":
            wanted = "text" if col.sql_type == "text" else "integer"
            probes.append((f"{column_name} IS NOT NULL AND typeof({column_name}) != '{wanted}'",
                           f"holds a value that is not {'text' if wanted == 'text' else 'an integer'}"))
            if col.sql_type == "boolean":
                probes.append((f"{column_name} NOT IN (0, 1)", "holds a value that is not a boolean"))
        for condition, problem in probes:
            found = self.fetch(
                f"SELECT {id_column} FROM {table} WHERE {condition} LIMIT 1", {},
                pa.schema([(id_column, pa.string())]), table=table,
            )
            if found.num_rows:
                row = found[id_column][0].as_py()
                raise TelemetryError(f"table {table}: column {column_name} {problem} in row {id_column}={row!r}")

    def enforces_unique(self, table: str, key: tuple[str, ...]) -> bool:
        """True when the database itself keeps ``key`` unique in ``table`` (a primary key or a
        unique index on some of its columns), so a query looking for repeats would find none.

        Looking for repeats means grouping every row of the window; on a year of posts that is
        most of a backfill's time, spent proving what the schema already guarantees.
        """
        if (table, key) not in self._unique_keys:
            self._unique_keys[(table, key)] = self._enforces_constraints(table) and any(
                columns <= set(key) for columns in self._unique_indexes(table)
            )
        return self._unique_keys[(table, key)]

    def enforces_not_null(self, table: str, column_name: str) -> bool:
        """True when the database itself refuses NULL in the column (declared NOT NULL)."""
        if table not in self._not_null:  # once per table and connection: every extract step asks
            if not self._enforces_constraints(table):
                self._not_null[table] = set()
            elif self.database.dialect == "sqlite":
                self._not_null[table] = {name for (name,) in self._connection.execute(
                    'SELECT name FROM pragma_table_info(?) WHERE "notnull"', (table,)).fetchall()}
            else:
                self._not_null[table] = self._constraints(table).not_null
        return column_name in self._not_null[table]

    def _enforces_constraints(self, table: str) -> bool:
        """True when the table's own NOT NULL and unique indexes hold for every row a query of it
        reads. Not so in PostgreSQL for a table with inheritance children (a child may drop NOT
        NULL, and a unique index covers one table only), a foreign table, or a view; partitioned
        tables hold them in every partition."""
        if self.database.dialect == "sqlite":
            return True
        found = self._constraints(table)
        return found is not None and (found.kind == "p" or (found.kind == "r" and not found.has_children))

    def _constraints(self, table: str) -> _TableConstraints | None:
        """PostgreSQL: the table's kind, whether others inherit from it, its NOT NULL columns and its
        unique indexes' columns (None when there is no such table). Read for every contract table
        at once, the first time one is asked for: two queries instead of three for each table,
        which the first step of a run waits for."""
        if table not in self._catalogued:
            tables = sorted({table, *SOURCE_TABLES} - set(self._catalogued))
            self._catalogued.update(dict.fromkeys(tables))
            names = "ARRAY[" + ", ".join(_literal(name) for name in tables) + "]"
            for name, kind, has_children, not_null in self._catalog_rows(
                f"SELECT t.name, c.relkind::text, c.relhassubclass, a.attname::text FROM unnest({names}) AS t(name)"
                " JOIN pg_class c ON c.oid = to_regclass(t.name) LEFT JOIN pg_attribute a ON a.attrelid = c.oid"
                " AND a.attnotnull AND a.attnum > 0 AND NOT a.attisdropped"
            ):
                found = self._catalogued[name] or _TableConstraints(kind, has_children, set(), {})
                if not_null is not None:
                    found.not_null.add(not_null)
                self._catalogued[name] = found
            for name, index, column_name in self._catalog_rows(
                f"SELECT t.name, i.indexrelid::bigint, a.attname::text FROM unnest({names}) AS t(name)"
                " JOIN pg_index i ON i.indrelid = to_regclass(t.name)"
                " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
                " WHERE i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL"
            ):
                self._catalogued[name].unique_indexes.setdefault(index, set()).add(column_name)
        return self._catalogued[table]

    def orders_alike(self, first: tuple[str, str], second: tuple[str, str]) -> bool:
        """True when two text columns (table, column) order their values the same way, so a range
        read off one bounds the values of the other equal to them: on PostgreSQL, both text or
        varchar with the same deterministic collation, in a UTF-8 database. Never in SQLite, where
        a column may hold integers, text and blobs side by side, each ordered its own way."""
        if self.database.dialect == "sqlite":
            return False
        found = self._catalog_rows(
            "SELECT a.atttypid::regtype::text, a.attcollation::bigint, c.collisdeterministic,"
            " current_setting('server_encoding')"
            " FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation WHERE NOT a.attisdropped"
            " AND (a.attrelid, a.attname) IN ((to_regclass($1), $2::name), (to_regclass($3), $4::name))",
            (*first, *second),
        )
        return (len(found) == 2 and found[0][1] == found[1][1]
                and all(kind in ("text", "character varying") and deterministic and encoding == "UTF8"
                        for kind, _, deterministic, encoding in found))

    def _unique_indexes(self, table: str) -> list[set[str]]:
        """The column sets of the table's unique, non-partial, plain-column indexes."""
        if self.database.dialect == "sqlite":
            indexes = self._connection.execute(
                "SELECT name FROM pragma_index_list(?) WHERE \"unique\" = 1 AND partial = 0", (table,)
            ).fetchall()
            found = []
            for (name,) in indexes:
                info = self._connection.execute("SELECT name FROM pragma_index_info(?)", (name,)).fetchall()
                if info and all(column_name is not None for (column_name,) in info):
                    found.append({column_name for (column_name,) in info})
            return found
        found = self._constraints(table)
        return list(found.unique_indexes.values()) if found is not None else []

    def _columns_by_table(self) -> dict[str, dict[str, str | None]]:
        """Columns by table, with their PostgreSQL type (None in SQLite, which types values only)."""
        found: dict[str, dict[str, str | None]] = {}
        if self.database.dialect == "sqlite":
            names = self._connection.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            for (name,) in names.fetchall():
                info = self._connection.execute("SELECT name FROM pragma_table_info(?)", (name,))
                found[name] = {row[0]: None for row in info.fetchall()}
            return found
        for table, name, data_type in self._catalog_rows(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema()"
        ):
            found.setdefault(table, {})[name] = data_type
        return found


class _TableConstraints(NamedTuple):
    """What PostgreSQL's catalogue says of a table (``SourceConnection._constraints``)."""

    kind: str  # pg_class.relkind: r a table, p a partitioned one, v a view, f a foreign table, ...
    has_children: bool  # another table inherits from it
    not_null: set[str]
    unique_indexes: dict[int, set[str]]  # each unique, non-partial, plain-column index: its columns


def _literal(text: str) -> str:
    """A PostgreSQL string literal (the contract's own table names go into catalogue queries)."""
    return "'" + text.replace("'", "''") + "'"


# PostgreSQL column types that hold each contract type's values as they are.
_POSTGRES_TYPES = {
    "text": {"text", "character varying", "character"},
    "bigint": {"bigint", "integer", "smallint"},
    "boolean": {"boolean"},
}
# Result columns named otherwise than their source column.
_SOURCE_NAMES = {("reviews", "review_id"): "id", ("posts", "user_id"): "creator_id"}


def _source_name(table: str, column_name: str) -> str:
    return _SOURCE_NAMES.get((table, column_name), column_name)


class _BadValue(Exception):
    def __init__(self, column: str, index: int, problem: str):
        self.column, self.index, self.problem = column, index, problem


def _row_ids(schema: pa.Schema, rows: list[tuple]) -> tuple[str, list] | None:
    """The name and values of the column that identifies the fetched rows, if any."""
    for name in ("id", "review_id", "user_id", "team_id"):
        if name in schema.names:
            index = schema.names.index(name)
            return ("id" if name == "review_id" else name), [row[index] for row in rows]
    return None


def _kind(value: Any) -> str:
    """What a misplaced value is, never the text itself (it may be someone's email)."""
    if isinstance(value, int):
        return f"the integer {value}"
    return {str: "text", float: "a real number", bytes: "a blob"}.get(type(value), type(value).__name__)


def _not_utf8(connection, sql: str, values: tuple, schema: pa.Schema, table: str) -> TelemetryError:
    """Name the column and row of the first text that is not UTF-8, without quoting the text."""
    connection.text_factory = bytes
    try:
        for number, row in enumerate(connection.execute(sql, values)):
            for field, value in zip(schema, row):
                if isinstance(value, bytes) and not _decodes(value):
                    ids = _row_ids(schema, [row])
                    row_id = ids[1][0] if ids else None
                    where = (f"row {ids[0]}={row_id.decode('utf-8', 'replace')!r}"
                             if isinstance(row_id, bytes) and _decodes(row_id) else f"row #{number + 1}")
                    return TelemetryError(
                        f"table {table}: column {_source_name(table, field.name)} holds text that is not"
                        f" valid UTF-8 in {where}"
                    )
    finally:
        connection.text_factory = str
    return TelemetryError(f"table {table}: holds text that is not valid UTF-8")


def _decodes(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _typed_array(values: list, field: pa.Field, table: str) -> pa.Array:
    """SQLite stores any value in any column: type it by the contract, or name the column and row."""
    if pa.types.is_boolean(field.type):
        truth = {0: False, 1: True}
        bad = next((i for i, v in enumerate(values)
                    if v is not None and (type(v) not in (int, bool) or v not in truth)), None)
        if bad is not None:
            raise _BadValue(field.name, bad, f"holds {_kind(values[bad])}, expected a boolean")
        return pa.array([None if v is None else truth[v] for v in values], type=field.type)
    # Let Arrow infer the type, then compare: given the type up front, it would silently
    # truncate a real number to an integer and take a blob for text.
    try:
        inferred = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        inferred = None
    if inferred is not None and (inferred.type == field.type or pa.types.is_null(inferred.type)):
        return inferred.cast(field.type)
    expected = {"string": "text", "int64": "an integer"}.get(str(field.type), str(field.type))
    bad = next(i for i, v in enumerate(values) if v is not None and not _fits(v, field.type))
    raise _BadValue(field.name, bad, f"holds {_kind(values[bad])}, expected {expected}")


def _fits(value: Any, arrow_type: pa.DataType) -> bool:
    if pa.types.is_string(arrow_type):
        return isinstance(value, str)
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def first_null_row(table: pa.Table, column: str, id_column: str | None) -> Any:
    """The id (or row number, ``#n``) of the first row where ``column`` is NULL, else None."""
    mask = pc.is_null(table[column])
    if not pc.any(mask).as_py():
        return None
    index = pc.index(mask, True).as_py()
    found = table[id_column][index].as_py() if id_column else None
    return found if found is not None else f"#{index + 1}"  # the row number where the id itself is NULL
