"""Connections to the installation's database, PostgreSQL or SQLite, behind one interface.

Queries are written once with ``:name`` parameters and always bound, never formatted in.
PostgreSQL is read through ADBC straight into Arrow; SQLite through the standard library,
whose rows are typed here against the contract's column types.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.source.schema import SOURCE_TABLES, column

SOURCE_URL_ENV = "TELEMETRY_SOURCE_URL"
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)")


def _bind(sql: str, params: Mapping[str, Any], marker: str) -> tuple[str, tuple]:
    """Rewrite ``:name`` into numbered markers (``$1`` or ``?1``) and order the values to match."""
    order: list[str] = []

    def number(match: re.Match) -> str:
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"{marker}{order.index(name) + 1}"

    return _PARAMETER.sub(number, sql), tuple(params[name] for name in order)


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
        try:
            yield SourceConnection(self, connection)
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
            return adbc_postgresql.connect(self._url)
        except Exception as error:  # the driver raises several types; all mean "cannot connect"
            raise TelemetryError(
                f"cannot connect to source database {self.display}: {self._scrub(error)}"
            ) from None


class SourceConnection:
    def __init__(self, database: SourceDatabase, connection):
        self.database = database
        self._connection = connection

    def fetch(self, sql: str, params: Mapping[str, Any], schema: pa.Schema, *, table: str) -> pa.Table:
        """Run one query and return its rows typed as ``schema`` (result columns in schema order)."""
        try:
            if self.database.dialect == "sqlite":
                return self._fetch_sqlite(sql, params, schema, table)
            return self._fetch_postgresql(sql, params, schema, table)
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
        rows = cursor.fetchall()
        columns = list(zip(*rows)) if rows else [()] * len(schema)
        arrays = [_typed_array(list(values), field, table) for values, field in zip(columns, schema)]
        return pa.Table.from_arrays(arrays, schema=schema)

    def _fetch_postgresql(self, sql, params, schema, table) -> pa.Table:
        text, values = _bind(sql, params, "$")
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
        """Fail in one line on the first contract table or column the database lacks."""
        present = self._columns_by_table()
        for table in tables:
            if table not in present:
                raise TelemetryError(f"source database {self.database.display}: table {table} is missing")
            for col in SOURCE_TABLES[table]:
                if col.name not in present[table]:
                    raise TelemetryError(
                        f"source database {self.database.display}: table {table} has no column {col.name}"
                    )

    def refuse_bad_values(self, table: str, column_name: str, id_column: str = "id") -> None:
        """Check a column the night's SQL filters on but never fetches: NULL where the contract
        forbids it, and (SQLite, which types values, not columns) a value of the wrong type."""
        col = column(table, column_name)
        probes = []
        if not col.nullable:
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

    def _columns_by_table(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        if self.database.dialect == "sqlite":
            names = self._connection.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
            for (name,) in names.fetchall():
                info = self._connection.execute("SELECT name FROM pragma_table_info(?)", (name,))
                found[name] = {row[0] for row in info.fetchall()}
            return found
        cursor = self._connection.cursor()
        try:
            cursor.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema()"
            )
            for table, name in cursor.fetchall():
                found.setdefault(table, set()).add(name)
        finally:
            cursor.close()
        return found


def _typed_array(values: list, field: pa.Field, table: str) -> pa.Array:
    """SQLite stores any value in any column: type it by the contract, or name the column."""
    if pa.types.is_boolean(field.type):
        truth = {0: False, 1: True}
        bad = next((v for v in values if v is not None and (type(v) not in (int, bool) or v not in truth)), None)
        if bad is not None:
            raise TelemetryError(f"table {table}: column {field.name} holds {bad!r}, expected a boolean")
        values = [None if v is None else truth[v] for v in values]
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        expected = {"string": "text", "int64": "an integer"}.get(str(field.type), str(field.type))
        bad = next(v for v in values if v is not None and not _fits(v, field.type))
        raise TelemetryError(
            f"table {table}: column {field.name} holds {str(bad)[:40]!r}, expected {expected}"
        ) from None


def _fits(value: Any, arrow_type: pa.DataType) -> bool:
    if pa.types.is_string(arrow_type):
        return isinstance(value, str)
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def first_null_row(table: pa.Table, column: str, id_column: str | None) -> Any:
    """The id (or row number) of the first row where ``column`` is NULL, else None."""
    mask = pc.is_null(table[column])
    if not pc.any(mask).as_py():
        return None
    index = pc.index(mask, True).as_py()
    return table[id_column][index].as_py() if id_column else f"#{index + 1}"
