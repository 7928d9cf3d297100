"""The source tables of contract section 3: the one place their columns are named."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

ARROW_TYPES = {"text": pa.string(), "bigint": pa.int64(), "boolean": pa.bool_()}


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # text, bigint or boolean
    nullable: bool

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.sql_type]


def _columns(*specs: str) -> tuple[Column, ...]:
    """``"name type"`` is NOT NULL, ``"name type?"`` is nullable."""
    columns = []
    for spec in specs:
        name, sql_type = spec.split()
        columns.append(Column(name, sql_type.rstrip("?"), sql_type.endswith("?")))
    return tuple(columns)


SOURCE_TABLES: dict[str, tuple[Column, ...]] = {
    "companies": _columns(
        "id text", "name text", "plan text?", "deactivated boolean", "created_at bigint",
        "creator_id text?",
    ),
    "teams": _columns(
        "id text", "company_id text", "name text", "deactivated boolean", "created_at bigint",
        "creator_id text?", "live_view text?", "review_approval text?", "review_assignment text?",
    ),
    "users": _columns(
        "id text", "email text?", "is_registered boolean", "deactivated boolean",
        "created_at bigint", "registered_at bigint?", "join_method text?", "last_login bigint?",
        "last_origin text?", "last_origin_detail text?",
    ),
    "team_members": _columns("team_id text", "user_id text", "is_admin boolean"),
    "provider_tokens": _columns(
        "user_id text", "team_id text", "provider text", "has_access_token boolean"
    ),
    "posts": _columns(
        "id text", "team_id text", "creator_id text", "created_at bigint", "codemark_id text?",
        "review_id text?",
    ),
    "codemarks": _columns(
        "id text", "team_id text", "creator_id text", "created_at bigint", "review_id text?"
    ),
    "reviews": _columns(
        "id text", "team_id text", "creator_id text", "created_at bigint", "approved_at bigint?"
    ),
}

PRIMARY_KEYS = {
    "companies": ("id",), "teams": ("id",), "users": ("id",), "team_members": ("team_id", "user_id"),
    "posts": ("id",), "codemarks": ("id",), "reviews": ("id",),
}

# The indexes a CodeStream installation keeps; the night's queries rely on them.
INDEXES = {
    "posts": ("created_at",), "reviews": ("created_at", "approved_at"),
    "team_members": ("user_id",), "provider_tokens": ("user_id",),
}


def column(table: str, name: str) -> Column:
    return next(c for c in SOURCE_TABLES[table] if c.name == name)


def create_table_statements() -> list[str]:
    """DDL for the source tables, valid in both SQLite and PostgreSQL (demo and test databases)."""
    statements = []
    for table, columns in SOURCE_TABLES.items():
        lines = [f"{c.name} {c.sql_type.upper()}{'' if c.nullable else ' NOT NULL'}" for c in columns]
        if table in PRIMARY_KEYS:
            lines.append(f"PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})")
        statements.append(f"CREATE TABLE {table} (\n  " + ",\n  ".join(lines) + "\n)")
    for table, indexed in INDEXES.items():
        for name in indexed:
            statements.append(f"CREATE INDEX {table}_{name}_idx ON {table} ({name})")
    return statements
