"""The night's reads from the installation's database, one function per extract asset.

Each takes an open connection and the nights of a run (one night, or many in a backfill) and
returns one Arrow table with a ``night`` column, so a run over many nights computes each night
exactly as a run of that night alone would. Time windows are applied in SQL; rows are checked
against the contract (NOT NULL columns, unique keys) before anything is built from them.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import night_bounds_ms
from telemetry_pipeline.source.database import Query, SourceConnection, first_null_row
from telemetry_pipeline.source.schema import SOURCE_TABLES, column

NIGHT = pa.field("night", pa.string(), nullable=False)


def _schema(table: str, names: list[str], *extra: pa.Field) -> pa.Schema:
    return pa.schema([pa.field(n, column(table, n).arrow_type) for n in names] + list(extra))


COMPANY_COLUMNS = ["id", "name", "plan", "deactivated", "created_at", "creator_id"]
TEAM_COLUMNS = [
    "id", "company_id", "name", "deactivated", "created_at", "creator_id", "live_view",
    "review_approval", "review_assignment",
]
USER_COLUMNS = [
    "id", "email", "is_registered", "deactivated", "created_at", "registered_at", "join_method",
    "last_login", "last_origin", "last_origin_detail",
]

COMPANIES_SCHEMA = _schema("companies", COMPANY_COLUMNS).insert(0, NIGHT)
TEAMS_SCHEMA = _schema("teams", TEAM_COLUMNS).insert(0, NIGHT)
USERS_SCHEMA = _schema(
    "users", USER_COLUMNS,
    pa.field("is_admin", pa.bool_()),
    pa.field("team_ids", pa.list_(pa.string())),
    pa.field("providers", pa.list_(pa.string())),
).insert(0, NIGHT)
CODE_REVIEWS_SCHEMA = pa.schema([
    NIGHT, pa.field("review_id", pa.string()), pa.field("team_id", pa.string()),
    pa.field("created_at", pa.int64()), pa.field("approved_at", pa.int64()),
])
ACTIVITY_COUNTS = ["codemarks", "codemarks_in_reviews", "reviews", "replies"]
USER_ACTIVITY_SCHEMA = pa.schema(
    [NIGHT, pa.field("user_id", pa.string())] + [pa.field(n, pa.int64()) for n in ACTIVITY_COUNTS]
)


def _window(nights: list[dt.date]) -> dict[str, int]:
    return {"start": night_bounds_ms(nights[0])[0], "end": night_bounds_ms(nights[-1])[1]}


def _check_rows(conn: SourceConnection, rows: pa.Table, table: str, key: tuple[str, ...] = ("id",)) -> None:
    """NULL in a NOT NULL column, or a repeated primary key: name table, column and row (what
    the database's own NOT NULL and primary keys rule out is not looked for again)."""
    id_column = key[0] if key[0] in rows.column_names else None
    required = {c.name for c in SOURCE_TABLES[table] if not c.nullable}
    for name in (n for n in rows.column_names if n in required and not conn.enforces_not_null(table, n)):
        row = first_null_row(rows, name, id_column)
        if row is not None:
            raise TelemetryError(f"table {table}: column {name} is NULL in row {id_column or 'row'}={row!r}")
    if conn.enforces_unique(table, key):  # a primary key or unique index: repeats cannot exist
        return
    counts = rows.group_by(list(key)).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts["count_all"], 1))
    if repeated.num_rows:
        value = ", ".join(f"{k}={repeated[k][0].as_py()!r}" for k in key)
        raise TelemetryError(f"table {table}: duplicate primary key {value}")


def _per_night(rows: pa.Table, nights: list[dt.date], *, created_by_night_end: bool) -> pa.Table:
    """One copy of a snapshot table per night, tagged with it (optionally only rows existing by then).

    The copies share the snapshot's memory: sorted by created_at, the rows existing by a night's
    end are a prefix, a slice rather than a copy, so a backfill of a year holds the snapshot once.
    """
    rows = rows.combine_chunks()
    if created_by_night_end:
        rows = rows.take(pc.sort_indices(rows["created_at"]))
        created = rows["created_at"].to_numpy()
    parts = []
    for night in nights:
        count = int(np.searchsorted(created, night_bounds_ms(night)[1])) if created_by_night_end else rows.num_rows
        parts.append(rows.slice(0, count).add_column(0, NIGHT, _repeated(night.isoformat(), count)))
    return pa.concat_tables(parts)


def _repeated(text: str, count: int) -> pa.Array:
    """``count`` times the same string, built from buffers instead of a Python list."""
    data = text.encode("utf-8")
    offsets = np.arange(count + 1, dtype=np.int32) * len(data)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data * count))


def extract_companies(conn: SourceConnection, nights: list[dt.date]) -> pa.Table:
    """All companies: redaction and the opt-out look at every company, the payload at those of the night."""
    rows = conn.fetch(
        f"SELECT {', '.join(COMPANY_COLUMNS)} FROM companies",
        {}, _schema("companies", COMPANY_COLUMNS), table="companies",
    )
    _check_rows(conn, rows, "companies")
    return _per_night(rows, nights, created_by_night_end=False)


def extract_teams(conn: SourceConnection, nights: list[dt.date]) -> pa.Table:
    """All teams: a user's companies come from every team the user is a member of."""
    rows = conn.fetch(
        f"SELECT {', '.join(TEAM_COLUMNS)} FROM teams", {}, _schema("teams", TEAM_COLUMNS), table="teams"
    )
    _check_rows(conn, rows, "teams")
    return _per_night(rows, nights, created_by_night_end=False)


def extract_users(conn: SourceConnection, nights: list[dt.date]) -> pa.Table:
    """Users that exist by the end of each night, with their memberships, admin flag and integrations."""
    window = _window(nights)
    conn.refuse_bad_values("users", "created_at")
    conn.refuse_bad_values("provider_tokens", "has_access_token", id_column="user_id")
    users, members, tokens = conn.fetch_together([
        Query(f"SELECT {', '.join(USER_COLUMNS)} FROM users WHERE created_at < :end",
              window, _schema("users", USER_COLUMNS), "users"),
        Query("SELECT tm.team_id, tm.user_id, tm.is_admin FROM team_members tm"
              " JOIN users u ON u.id = tm.user_id WHERE u.created_at < :end",
              window, _schema("team_members", ["team_id", "user_id", "is_admin"]), "team_members"),
        Query("SELECT pt.user_id, pt.provider FROM provider_tokens pt"
              " JOIN users u ON u.id = pt.user_id WHERE u.created_at < :end AND pt.has_access_token",
              window, _schema("provider_tokens", ["user_id", "provider"]), "provider_tokens"),
    ])
    _check_rows(conn, users, "users")
    _check_rows(conn, members, "team_members", key=("team_id", "user_id"))
    for name in ("user_id", "provider"):
        if (row := first_null_row(tokens, name, None)) is not None:
            raise TelemetryError(f"table provider_tokens: column {name} is NULL in row {row}")

    # Each membership's and token's user by position among the users: one hash of the users' ids
    # (the costly part) for both.
    owners = pc.index_in(pa.chunked_array(members["user_id"].chunks + tokens["user_id"].chunks, pa.string()),
                         value_set=users["id"])
    member_owners, token_owners = owners.slice(0, members.num_rows), owners.slice(members.num_rows)
    admin_owners = pc.drop_null(pc.filter(member_owners, members["is_admin"])).to_numpy().astype(np.int64)
    users = (
        users.append_column("is_admin", pa.array(np.bincount(admin_owners, minlength=users.num_rows) > 0))
        .append_column("team_ids", _sorted_lists(member_owners, members["team_id"], users.num_rows, distinct=False))
        .append_column("providers", _sorted_lists(token_owners, tokens["provider"], users.num_rows, distinct=True))
    )
    return _per_night(users, nights, created_by_night_end=True).cast(USERS_SCHEMA)


def _sorted_lists(owners: pa.ChunkedArray, values: pa.ChunkedArray, count: int, *, distinct: bool) -> pa.ListArray:
    """For each of ``count`` users, the ``values`` whose owner it is (``owners``: the user's
    position, NULL for no user of them), sorted by code point; empty when none. ``values`` hold no
    NULL (the callers have refused them).

    Sorted by one integer a pair: the owner's position times the number of distinct values, plus
    the value's rank among them (Arrow orders strings by their UTF-8 bytes, code point order)."""
    kept = pc.is_valid(owners)
    position = pc.drop_null(owners).to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(pc.filter(values, kept)).combine_chunks()
    by_code_point = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(by_code_point), dtype=np.int64)
    rank[by_code_point] = np.arange(len(by_code_point))
    distinct_values = max(len(by_code_point), 1)
    keys = position * distinct_values + rank[encoded.indices.to_numpy(zero_copy_only=False)]
    keys = np.unique(keys) if distinct else np.sort(keys, kind="stable")
    counts = np.bincount(keys // distinct_values, minlength=count)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    listed = encoded.dictionary.take(pa.array(by_code_point[keys % distinct_values])).cast(pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), listed)


def extract_code_reviews(conn: SourceConnection, nights: list[dt.date]) -> pa.Table:
    """Reviews created or approved during each night; one created and approved the same night once."""
    window = _window(nights)
    conn.refuse_bad_values("reviews", "created_at")
    conn.refuse_bad_values("reviews", "approved_at")
    # Two rows of one id would both be read below: refuse them first, for the whole window (unless
    # the database's own primary key rules them out); a night's rows are a part of the window's,
    # so none of its ids repeats either.
    if not conn.enforces_unique("reviews", ("id",)):
        repeated = conn.fetch(
            "SELECT id FROM reviews WHERE (created_at >= :start AND created_at < :end)"
            " OR (approved_at >= :start AND approved_at < :end) GROUP BY id HAVING COUNT(*) > 1 LIMIT 1",
            window, pa.schema([("id", pa.string())]), table="reviews",
        )
        if repeated.num_rows:
            raise TelemetryError(f"table reviews: duplicate primary key id={repeated['id'][0].as_py()!r}")
    # One query per night, as for the activity: each night's rows, checks and memory are its own.
    parts = []
    fetched = conn.fetch_each([Query(REVIEWS_SQL, _window([night]), _REVIEWS_FETCHED, "reviews") for night in nights])
    for night, rows in zip(nights, fetched):
        for name in ("review_id", "team_id", "created_at"):
            if (row := first_null_row(rows, name, "review_id")) is not None:
                source_name = "id" if name == "review_id" else name
                raise TelemetryError(f"table reviews: column {source_name} is NULL in row id={row!r}")
        parts.append(_tagged(rows, night, CODE_REVIEWS_SCHEMA))
    return pa.concat_tables(parts)


# One night's window: a review created and approved the same night is one row, the first part's.
# (Not UNION, which would compare every row with every other to drop no more than that.)
REVIEWS_SQL = """
        SELECT id, team_id, created_at, approved_at FROM reviews WHERE created_at >= :start AND created_at < :end
        UNION ALL
        SELECT id, team_id, created_at, approved_at FROM reviews WHERE approved_at >= :start AND approved_at < :end
          AND (created_at < :start OR created_at >= :end OR created_at IS NULL)
        """
_REVIEWS_FETCHED = pa.schema([("review_id", pa.string()), ("team_id", pa.string()),
                              ("created_at", pa.int64()), ("approved_at", pa.int64())])


def extract_user_activity(conn: SourceConnection, nights: list[dt.date]) -> pa.Table:
    """Per user and night, the posts created that night counted as contract section 5 says."""
    conn.refuse_bad_values("posts", "created_at")
    _refuse_offending_posts(conn, _window(nights))
    # One night at a time: each counts its own night's posts and groups them in memory. One query
    # over a year would join every post with every codemark and spill to disk: no faster, and its
    # memory grows with the year.
    if conn.orders_alike(("posts", "codemark_id"), ("codemarks", "id")):
        fetched = conn.read_each(_night_activity_in_range, nights, table="posts")
    else:
        fetched = conn.fetch_each([Query(ACTIVITY_SQL, _window([night]), _ACTIVITY_FETCHED, "posts")
                                   for night in nights])
    return pa.concat_tables([_tagged(rows, night, USER_ACTIVITY_SCHEMA) for night, rows in zip(nights, fetched)])


def _night_activity_in_range(conn: SourceConnection, night: dt.date) -> pa.Table:
    """The night's counts per user, its codemarks looked up within the range of ids its posts
    point at, read first. With that range in the query the planner finds a night's codemarks in
    one pass over that part of the primary key instead of one lookup a post (a night's codemarks
    are mostly made with its posts, their ids close together); where the range is wide it looks
    them up one by one, as ACTIVITY_SQL does. Sound only where both id columns order alike (the
    caller asks), and both reads see one snapshot: no post written in between can point outside."""
    window = _window([night])
    with conn.one_snapshot(table="posts"):
        bounds = conn.fetch(CODEMARK_RANGE_SQL, window, _CODEMARK_RANGE, table="posts")
        first, last = bounds["first"][0].as_py(), bounds["last"][0].as_py()
        if first is None:  # no post of the night carries a codemark
            return conn.fetch(ACTIVITY_SQL, window, _ACTIVITY_FETCHED, table="posts")
        return conn.fetch(ACTIVITY_IN_RANGE_SQL, {**window, "first_codemark": first, "last_codemark": last},
                          _ACTIVITY_FETCHED, table="posts")


# A post's counts: contract section 5, with c the codemark it points at (NULL when none exists).
_COUNTS_SQL = """
          SUM(CASE WHEN p.review_id IS NULL AND p.codemark_id IS NOT NULL
                    AND c.id IS NOT NULL AND c.review_id IS NULL THEN 1 ELSE 0 END),
          SUM(CASE WHEN p.review_id IS NULL AND p.codemark_id IS NOT NULL
                    AND c.review_id IS NOT NULL THEN 1 ELSE 0 END),
          SUM(CASE WHEN p.review_id IS NOT NULL THEN 1 ELSE 0 END),
          SUM(CASE WHEN p.review_id IS NULL AND p.codemark_id IS NULL THEN 1 ELSE 0 END)"""
# One night's window.
ACTIVITY_SQL = f"""
        SELECT p.creator_id,{_COUNTS_SQL}
        FROM posts p LEFT JOIN codemarks c ON c.id = p.codemark_id
        WHERE p.created_at >= :start AND p.created_at < :end
        GROUP BY p.creator_id
        """
_ACTIVITY_FETCHED = pa.schema([("user_id", pa.string())]
                              + [(n, pa.int64()) for n in ACTIVITY_COUNTS])
CODEMARK_RANGE_SQL = ("SELECT MIN(codemark_id), MAX(codemark_id) FROM posts"
                      " WHERE created_at >= :start AND created_at < :end")
_CODEMARK_RANGE = pa.schema([("first", pa.string()), ("last", pa.string())])
# One night's window and the range of its posts' codemark ids.
ACTIVITY_IN_RANGE_SQL = f"""
        SELECT p.creator_id,{_COUNTS_SQL}
        FROM posts p LEFT JOIN codemarks c ON c.id = p.codemark_id
          AND c.id >= CAST(:first_codemark AS TEXT) AND c.id <= CAST(:last_codemark AS TEXT)
        WHERE p.created_at >= :start AND p.created_at < :end
        GROUP BY p.creator_id
        """


def _refuse_offending_posts(conn: SourceConnection, window: dict[str, int]) -> None:
    """The night's posts are counted in SQL, so their contract is checked in SQL too."""
    in_window = "created_at >= :start AND created_at < :end"
    # What the database's own NOT NULL and primary keys rule out is not looked for again.
    probes = [
        (f"SELECT id FROM posts WHERE {in_window} AND {name} IS NULL",
         f"table posts: column {name} is NULL in row id={{!r}}")
        for name in ("creator_id", "team_id") if not conn.enforces_not_null("posts", name)
    ]
    if not conn.enforces_unique("posts", ("id",)):
        probes.append((f"SELECT id FROM posts WHERE {in_window} GROUP BY id HAVING COUNT(*) > 1",
                       "table posts: duplicate primary key id={!r}"))
    if not conn.enforces_unique("codemarks", ("id",)):
        probes.append((f"SELECT id FROM codemarks WHERE id IN (SELECT codemark_id FROM posts WHERE {in_window})"
                       " GROUP BY id HAVING COUNT(*) > 1", "table codemarks: duplicate primary key id={!r}"))
    for sql, message in probes:
        found = conn.fetch(sql + " LIMIT 1", window, pa.schema([("id", pa.string())]), table="posts")
        if found.num_rows:
            raise TelemetryError(message.format(found["id"][0].as_py()))


def _tagged(rows: pa.Table, night: dt.date, schema: pa.Schema) -> pa.Table:
    return rows.add_column(0, NIGHT, _repeated(night.isoformat(), rows.num_rows)).cast(schema)

