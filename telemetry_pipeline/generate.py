"""Reference installations: deterministic CodeStream databases of a given size, for benchmarks.

``generate(size, url)`` fills a PostgreSQL database (through ADBC's bulk ingest, which is COPY)
or a SQLite file (executemany in one transaction) with the contract's tables. The same seed and
end date give the same rows. Activity ends with the night ``end_date`` (default: the night
before today). Columns are built with numpy and Arrow, never row by row in Python, so the large
size (about 45 million posts) loads in minutes.

The shapes are those of a real installation: companies on free and paid plans, a few large
companies holding most teams, users joining over the years, most of them idle on a given night
and a few very active (a heavy-tailed activity weight per user), more posts on weekdays than at
weekends, reviews approved days after they were opened (some never), codemarks inside reviews,
posts pointing at deleted codemarks, names with accents and quotes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import DAY_MS, last_complete_night, night_start_ms
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline.source.schema import SOURCE_TABLES, create_table_statements

DEFAULT_SEED = 20261126
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Size:
    companies: int
    teams: int
    users: int
    nights: int
    weekend_posts: int  # posts on a Saturday or Sunday night
    weekday_posts: int  # posts on a working night
    history_days: int  # how long the installation existed before the first night of activity


SIZES = {
    "small": Size(companies=4, teams=8, users=50, nights=30, weekend_posts=40, weekday_posts=70,
                  history_days=200),
    "medium": Size(companies=60, teams=200, users=5_000, nights=365, weekend_posts=16_000,
                   weekday_posts=21_500, history_days=730),
    "large": Size(companies=500, teams=2_000, users=100_000, nights=365, weekend_posts=100_000,
                  weekday_posts=130_000, history_days=730),
}

PLANS = ["FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", None, "BUSINESS", "ENTERPRISE", "TEAMS"]
PLAN_WEIGHTS = [0.38, 0.08, 0.06, 0.05, 0.25, 0.15, 0.03]
PROVIDERS = ["github", "gitlab", "bitbucket", "jira", "slack", "msteams", "trello", "asana", "youtrack",
             "azuredevops", "github_enterprise", "linear"]
PROVIDER_WEIGHTS = [0.34, 0.12, 0.06, 0.2, 0.12, 0.06, 0.02, 0.02, 0.01, 0.02, 0.02, 0.01]
FIRST_NAMES = ["ada", "björn", "chloé", "dmitri", "eve", "fatima", "grace", "hiro", "inès", "jamal", "kai",
               "łukasz", "maria", "nuno", "olga", "pat", "quinn", "raj", "søren", "tomás", "uma", "valentina",
               "wei", "xavier", "yusuf", "zoë"]
LAST_NAMES = ["anders", "brown", "chen", "dubois", "eriksen", "fernández", "garcía", "hughes", "ivanova",
              "jensen", "kowalski", "lópez", "müller", "nakamura", "o'brien", "patel", "quispe", "rossi",
              "schmidt", "tanaka", "ueda", "vargas", "wójcik", "xu", "yilmaz", "zhang"]
WORDS = ["Acme", "Blue", "Cloud", "Data", "Echo", "Forge", "Giga", "Helix", "Iron", "Jade", "Kite", "Lumen",
         "Metro", "Nova", "Orbit", "Pixel", "Quant", "Rapid", "Solar", "Terra", "Ultra", "Vertex", "Wave",
         "Xeno", "Yield", "Zenith", "Über", "Café", 'The "Best"', "Back\\slash"]
SUFFIXES = ["Labs", "Systems", "Corp", "GmbH", "S.A.", "Inc.", "AB", "Studio", "Group", "Ltd"]
TEAM_NAMES = ["Platform", "Mobile", "Payments", "Search", "Data", "Infra", "Web", "Security", "Growth", "Core",
              "API", "Design", "QA", "DevEx", "Billing", "Ops"]
JOIN_METHODS = ["Created Team", "Invitation", "Web Signup", "Added to Team", "Observer Invite"]
ORIGINS = {  # last_origin -> its details
    "VS Code": ["Visual Studio Code 1.89", "Visual Studio Code 1.90", "VSCodium 1.90"],
    "JetBrains": ["IntelliJ IDEA", "PyCharm", "WebStorm", "GoLand", "Rider"],
    "Visual Studio": ["Visual Studio 2022"],
}


def _table_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in SOURCE_TABLES[table]])


def _strings(values) -> pa.Array:
    return pa.array(list(values), pa.string())


def _object_ids(seconds: np.ndarray, counter: np.ndarray, salt: int) -> pa.Array:
    """Mongo-style ids (24 hex digits: creation second, a per-table salt, a counter), built in numpy."""
    n = len(seconds)
    raw = np.empty((n, 12), dtype=np.uint8)
    raw[:, 0:4] = np.asarray(seconds, dtype=">u4").view(np.uint8).reshape(n, 4)
    raw[:, 4:9] = np.frombuffer(salt.to_bytes(5, "big"), dtype=np.uint8)
    raw[:, 9:12] = np.asarray(counter % (1 << 24), dtype=">u4").view(np.uint8).reshape(n, 4)[:, 1:]
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((n, 24), dtype=np.uint8)
    text[:, 0::2] = hex_digits[raw >> 4]
    text[:, 1::2] = hex_digits[raw & 15]
    offsets = np.arange(0, 24 * (n + 1), 24, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _pick(rng: np.random.Generator, choices: list, weights: list[float], n: int) -> pa.Array:
    """``n`` draws from ``choices`` (None is NULL) with ``weights``, as an Arrow array."""
    index = rng.choice(len(choices), size=n, p=np.asarray(weights) / sum(weights))
    return pa.array(choices, type=pa.string() if isinstance(choices[0], str) or choices[0] is None
                    else None).take(pa.array(index))


def _plans(rng: np.random.Generator, n: int) -> pa.Array:
    """Plans by their weights; with two companies or more, at least one free and one paid."""
    plans = _pick(rng, PLANS, PLAN_WEIGHTS, n).to_pylist()
    free = [plan is None or plan in ("FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED") for plan in plans]
    if n >= 2 and all(free):
        plans[int(rng.integers(n))] = "BUSINESS"
    elif n >= 2 and not any(free):
        plans[int(rng.integers(n))] = "FREEPLAN"
    return pa.array(plans, pa.string())


def _with_nulls(rng: np.random.Generator, values: pa.Array, share: float) -> pa.Array:
    mask = pa.array(rng.random(len(values)) < share)
    return pc.if_else(mask, pa.nulls(len(values), values.type), values)


@dataclass
class Installation:
    """The snapshot tables; posts, codemarks and reviews come night by night from ``activity``."""

    companies: pa.Table
    teams: pa.Table
    users: pa.Table
    team_members: pa.Table
    provider_tokens: pa.Table
    # per user (in ``users`` order): the team of their posts (None: posts nothing) and activity weight
    user_team: np.ndarray
    user_weight: np.ndarray
    user_created: np.ndarray


def build_snapshot(size: Size, seed: int, end_date: dt.date) -> Installation:
    rng = np.random.default_rng([seed, 1])
    end = night_start_ms(end_date) + DAY_MS
    activity_start = end - size.nights * DAY_MS
    born = activity_start - size.history_days * DAY_MS

    # Companies: created over the history, most before the activity starts.
    c_created = np.sort(born + (rng.random(size.companies) ** 1.5 * (end - born - DAY_MS)).astype(np.int64))
    c_ids = _object_ids(c_created // 1000, np.arange(size.companies), salt=0xC0)
    names = pc.binary_join_element_wise(
        _pick(rng, WORDS, [1] * len(WORDS), size.companies), _pick(rng, SUFFIXES, [1] * len(SUFFIXES),
                                                                   size.companies),
        pc.cast(pa.array(np.arange(size.companies)), pa.string()), " ")
    companies = pa.table({
        "id": c_ids, "name": names,
        "plan": _plans(rng, size.companies),
        "deactivated": pa.array(rng.random(size.companies) < 0.03),
        "created_at": pa.array(c_created),
        "creator_id": pa.nulls(size.companies, pa.string()),  # filled once users exist
    }, schema=_table_schema("companies"))

    # Teams: a few large companies hold most teams (Zipf-like), each team created after its company.
    company_weight = 1.0 / np.arange(1, size.companies + 1) ** 1.1
    company_weight = rng.permutation(company_weight)
    team_company = np.sort(rng.choice(size.companies, size=size.teams, p=company_weight / company_weight.sum()))
    team_company[: min(size.companies, size.teams)] = np.arange(min(size.companies, size.teams))  # none empty
    t_created = c_created[team_company] + (rng.random(size.teams) * np.maximum(
        end - DAY_MS - c_created[team_company], 1) * 0.5).astype(np.int64)
    order = np.argsort(t_created, kind="stable")
    team_company, t_created = team_company[order], t_created[order]
    t_ids = _object_ids(t_created // 1000, np.arange(size.teams), salt=0x7E)
    teams = pa.table({
        "id": t_ids,
        "company_id": c_ids.take(pa.array(team_company)),
        "name": pc.binary_join_element_wise(_pick(rng, TEAM_NAMES, [1] * len(TEAM_NAMES), size.teams),
                                            pc.cast(pa.array(np.arange(size.teams)), pa.string()), " "),
        "deactivated": pa.array(rng.random(size.teams) < 0.04),
        "created_at": pa.array(t_created),
        "creator_id": pa.nulls(size.teams, pa.string()),
        "live_view": _pick(rng, [None, "off", "on"], [0.8, 0.15, 0.05], size.teams),
        "review_approval": _pick(rng, [None, "anyone", "all", "user"], [0.7, 0.15, 0.1, 0.05], size.teams),
        "review_assignment": _pick(rng, [None, "random", "roundRobin", "none", "authorship1"],
                                   [0.7, 0.1, 0.1, 0.05, 0.05], size.teams),
    }, schema=_table_schema("teams"))

    # Users: 60% joined before the activity window, the rest during it (the installation grows).
    n = size.users
    before = rng.random(n) < 0.6
    u_created = np.where(
        before, born + (rng.random(n) * (activity_start - born)),
        activity_start + rng.random(n) * (end - activity_start - HOUR_MS),
    ).astype(np.int64)
    u_created.sort()
    u_ids = _object_ids(u_created // 1000, np.arange(n), salt=0x05E)
    # Each user's first team: a team that exists when the user joins, larger teams more likely.
    team_weight = rng.pareto(1.5, size.teams) + 0.2
    existing = np.searchsorted(t_created, u_created, side="right")
    first_team = np.minimum((rng.random(n) ** 1.3 * np.maximum(existing, 1)).astype(np.int64), size.teams - 1)
    first_team = np.where(rng.random(n) < 0.5, first_team, _weighted_below(rng, team_weight, existing))
    orphan = rng.random(n) < 0.015  # left every team, or never joined one
    registered = rng.random(n) < 0.9
    deactivated = rng.random(n) < 0.03
    registered_at = np.where(registered, u_created + (rng.exponential(2.0, n) * HOUR_MS).astype(np.int64), 0)
    logged_in = registered & (rng.random(n) < 0.95)
    last_login = end - (rng.exponential(0.08, n) * (end - registered_at)).astype(np.int64)
    last_login = np.clip(last_login, registered_at, end - 1)
    origin = _pick(rng, list(ORIGINS), [0.62, 0.3, 0.08], n)
    detail = _origin_detail(origin, rng.integers(0, 5, n))
    company_of_user = team_company[first_team]
    first = _pick(rng, FIRST_NAMES, [1] * len(FIRST_NAMES), n)
    last = _pick(rng, LAST_NAMES, [1] * len(LAST_NAMES), n)
    domain = pc.binary_join_element_wise(
        "example-", pc.cast(pa.array(company_of_user), pa.string()), ".com", "")
    local = pc.binary_join_element_wise(first, ".", pc.utf8_replace_slice(last, 40, 40, ""),
                                        pc.cast(pa.array(np.arange(n)), pa.string()), "")
    email = pc.binary_join_element_wise(local, domain, "@")
    users = pa.table({
        "id": u_ids,
        "email": _with_nulls(rng, email, 0.01),
        "is_registered": pa.array(registered),
        "deactivated": pa.array(deactivated),
        "created_at": pa.array(u_created),
        "registered_at": pa.array(registered_at, mask=~registered),
        "join_method": pa.array(rng.choice(JOIN_METHODS, n, p=[0.1, 0.55, 0.2, 0.1, 0.05]), mask=~registered),
        "last_login": pa.array(last_login, mask=~logged_in),
        "last_origin": pc.if_else(pa.array(logged_in), origin, pa.nulls(n, pa.string())),
        "last_origin_detail": pc.if_else(pa.array(logged_in & (rng.random(n) < 0.97)), detail,
                                         pa.nulls(n, pa.string())),
    }, schema=_table_schema("users"))

    # Memberships: the first team, and for one user in eight one or two more; orphans have none.
    extra = rng.random(n) < 0.125
    second = _weighted_below(rng, team_weight, existing)
    third = _weighted_below(rng, team_weight, existing)
    more = extra & (rng.random(n) < 0.3)
    everyone = np.arange(n)
    member_user = np.concatenate([everyone[~orphan], everyone[extra & ~orphan], everyone[more & ~orphan]])
    member_team = np.concatenate([first_team[~orphan], second[extra & ~orphan], third[more & ~orphan]])
    pairs = np.unique(member_team.astype(np.int64) * (n + 1) + member_user)
    member_team, member_user = pairs // (n + 1), pairs % (n + 1)
    # The first member of each team made it, and is its admin; a few more admins besides.
    first_member = np.r_[True, member_team[1:] != member_team[:-1]]
    is_admin = first_member | (rng.random(len(pairs)) < 0.04)
    team_members = pa.table({
        "team_id": t_ids.take(pa.array(member_team)),
        "user_id": u_ids.take(pa.array(member_user)),
        "is_admin": pa.array(is_admin),
    }, schema=_table_schema("team_members"))
    creator_of_team = np.full(size.teams, -1)
    creator_of_team[member_team[first_member]] = member_user[first_member]
    teams = teams.set_column(5, "creator_id", u_ids.take(pa.array(creator_of_team, mask=creator_of_team < 0)))
    creator_of_company = np.full(size.companies, -1)
    creator_of_company[team_company[::-1]] = creator_of_team[::-1]  # the creator of its first team
    companies = companies.set_column(
        5, "creator_id", u_ids.take(pa.array(creator_of_company, mask=creator_of_company < 0)))

    # Integrations: about a third of the users hold one or two credentials.
    holders = np.flatnonzero(rng.random(n) < 0.35)
    holders = np.concatenate([holders, holders[rng.random(len(holders)) < 0.4]])
    provider_tokens = pa.table({
        "user_id": u_ids.take(pa.array(holders)),
        "team_id": t_ids.take(pa.array(first_team[holders])),
        "provider": _pick(rng, PROVIDERS, PROVIDER_WEIGHTS, len(holders)),
        "has_access_token": pa.array(rng.random(len(holders)) < 0.9),
    }, schema=_table_schema("provider_tokens"))

    # Activity weight: heavy-tailed, so most users are idle on a given night and a few post a lot.
    weight = rng.lognormal(0.0, 2.2, n)
    weight[orphan | deactivated | ~registered | (rng.random(n) < 0.2)] = 0.0
    return Installation(companies, teams, users, team_members, provider_tokens,
                        user_team=first_team, user_weight=weight, user_created=u_created)


def _weighted_below(rng: np.random.Generator, weight: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Per entry, an index below ``limit`` (at least 1) drawn with ``weight``."""
    cumulative = np.cumsum(weight)
    limit = np.maximum(limit, 1)
    return np.minimum(np.searchsorted(cumulative, rng.random(len(limit)) * cumulative[limit - 1], side="right"),
                      limit - 1)


def _origin_detail(origin: pa.Array, k: np.ndarray) -> pa.Array:
    """For each user, the ``k``-th detail (wrapping around) of their origin."""
    details = [d[j % len(d)] for d in ORIGINS.values() for j in range(5)]
    origin_index = pc.index_in(origin, value_set=pa.array(list(ORIGINS))).to_numpy(zero_copy_only=False)
    return pa.array(details, pa.string()).take(pa.array(origin_index * 5 + k))


def activity(installation: Installation, size: Size, seed: int, end_date: dt.date,
             nights_per_batch: int = 15) -> Iterator[tuple[int, dict[str, pa.Table]]]:
    """Posts, codemarks and reviews, a batch of nights at a time: (nights in the batch, tables)."""
    end = night_start_ms(end_date) + DAY_MS
    first_night = end_date - dt.timedelta(days=size.nights - 1)
    u_ids = installation.users["id"]
    t_ids = installation.teams["id"]
    cumulative = np.cumsum(installation.user_weight)
    counters = {"posts": 0, "codemarks": 0, "reviews": 0}
    for batch_start in range(0, size.nights, nights_per_batch):
        batch_nights = range(batch_start, min(batch_start + nights_per_batch, size.nights))
        rng = np.random.default_rng([seed, 2, batch_start])
        created, creators = [], []
        for index in batch_nights:
            night = first_night + dt.timedelta(days=index)
            start = night_start_ms(night)
            count = size.weekend_posts if night.weekday() >= 5 else size.weekday_posts
            # Only users that exist by the night's start post; each with their weight.
            existing = int(np.searchsorted(installation.user_created, start, side="right"))
            if existing == 0 or cumulative[existing - 1] == 0:
                continue
            creators.append(np.searchsorted(cumulative, rng.random(count) * cumulative[existing - 1],
                                            side="right"))
            # Working hours are busier than the small hours.
            hours = rng.normal(14.0, 4.5, count) % 24.0
            created.append(start + (hours * HOUR_MS).astype(np.int64))
        if not created:
            yield len(batch_nights), {}
            continue
        created_at = np.concatenate(created)
        creator = np.concatenate(creators)
        order = np.argsort(created_at, kind="stable")
        created_at, creator = created_at[order], creator[order]
        count = len(created_at)
        kind = rng.choice(4, size=count, p=[0.72, 0.18, 0.05, 0.05])  # reply, codemark, review, cm in review
        team = t_ids.take(pa.array(installation.user_team[creator]))
        creator_ids = u_ids.take(pa.array(creator))

        is_review = kind == 2
        r_index = np.flatnonzero(is_review)
        r_ids = _object_ids(created_at[r_index] // 1000, counters["reviews"] + np.arange(len(r_index)), 0x4E)
        counters["reviews"] += len(r_index)
        # Approved days after they were opened, now and then the same day; a third never.
        delay_days = np.where(rng.random(len(r_index)) < 0.12, rng.random(len(r_index)) * 0.4,
                              1 + rng.exponential(2.5, len(r_index)))
        approved = created_at[r_index] + (delay_days * DAY_MS).astype(np.int64)
        never = (rng.random(len(r_index)) < 0.3) | (approved >= end)
        reviews = pa.table({
            "id": r_ids, "team_id": team.take(pa.array(r_index)), "creator_id": creator_ids.take(pa.array(r_index)),
            "created_at": pa.array(created_at[r_index]), "approved_at": pa.array(approved, mask=never),
        }, schema=_table_schema("reviews"))

        is_codemark = (kind == 1) | (kind == 3)
        c_index = np.flatnonzero(is_codemark)
        c_ids = _object_ids(created_at[c_index] // 1000, counters["codemarks"] + np.arange(len(c_index)), 0xC3)
        counters["codemarks"] += len(c_index)
        in_review = kind[c_index] == 3
        review_of = pa.nulls(len(c_index), pa.string())
        if len(r_index):
            # A codemark in a review points at a review opened earlier in the batch (or the first one).
            earlier = np.maximum(np.searchsorted(r_index, c_index) - 1, 0)
            review_of = r_ids.take(pa.array(earlier, mask=~in_review))
        kept = rng.random(len(c_index)) >= 0.02  # a few codemarks were deleted since
        codemarks = pa.table({
            "id": c_ids, "team_id": team.take(pa.array(c_index)), "creator_id": creator_ids.take(pa.array(c_index)),
            "created_at": pa.array(created_at[c_index]), "review_id": review_of,
        }, schema=_table_schema("codemarks")).filter(pa.array(kept))

        post_codemark = np.full(count, -1)
        post_codemark[c_index] = np.arange(len(c_index))
        post_review = np.full(count, -1)
        post_review[r_index] = np.arange(len(r_index))
        posts = pa.table({
            "id": _object_ids(created_at // 1000, counters["posts"] + np.arange(count), 0x9057),
            "team_id": team, "creator_id": creator_ids, "created_at": pa.array(created_at),
            "codemark_id": c_ids.take(pa.array(np.maximum(post_codemark, 0), mask=post_codemark < 0))
            if len(c_index) else pa.nulls(count, pa.string()),
            "review_id": r_ids.take(pa.array(np.maximum(post_review, 0), mask=post_review < 0))
            if len(r_index) else pa.nulls(count, pa.string()),
        }, schema=_table_schema("posts"))
        counters["posts"] += count
        yield len(batch_nights), {"posts": posts, "codemarks": codemarks, "reviews": reviews}


def parse_seed(text: str | None) -> int:
    if text is None:
        return DEFAULT_SEED
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise TelemetryError(f"--seed {text!r} is not a seed: expected a whole number, 0 or more")
    return seed


def parse_size(text: str) -> Size:
    if text not in SIZES:
        raise TelemetryError(f"--size {text!r} is not a size: expected {', '.join(SIZES)}")
    return SIZES[text]


def generate(size_name: str, url: str, *, seed: int = DEFAULT_SEED, end_date: dt.date | None = None,
             replace: bool = False, progress: bool | None = None) -> dict[str, int]:
    """Fill the database at ``url`` with the ``size_name`` installation; returns rows per table."""
    size = parse_size(size_name)
    end_date = end_date or last_complete_night()
    database = SourceDatabase(url)
    if progress is None:
        progress = sys.stderr.isatty()
    snapshot = build_snapshot(size, seed, end_date)
    statements = create_table_statements()
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    indexes = [s for s in statements if not s.startswith("CREATE TABLE")]
    counts = dict.fromkeys(SOURCE_TABLES, 0)
    from tqdm import tqdm

    with _writer(database, replace) as write, tqdm(
        total=size.nights + 1, disable=not progress, unit="night", desc=f"generate {size_name}",
        file=sys.stderr,
    ) as bar:
        write.execute(tables)
        for name in ("companies", "teams", "users", "team_members", "provider_tokens"):
            write.ingest(name, getattr(snapshot, name))
            counts[name] = getattr(snapshot, name).num_rows
        bar.update(1)
        for nights, batch in activity(snapshot, size, seed, end_date):
            for name, rows in batch.items():
                write.ingest(name, rows)
                counts[name] += rows.num_rows
            bar.update(nights)
        bar.set_postfix_str("indexes")
        write.execute(indexes)
        write.finish()
    return counts


class _Writer:
    def execute(self, statements: list[str]) -> None: ...
    def ingest(self, table: str, rows: pa.Table) -> None: ...
    def finish(self) -> None: ...


class _PostgresWriter(_Writer):
    """COPY through ADBC's bulk ingest, in one transaction; indexes are built after the load."""

    def __init__(self, connection):
        self.connection = connection

    def execute(self, statements):
        with self.connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def ingest(self, table, rows):
        with self.connection.cursor() as cursor:
            cursor.adbc_ingest(table, rows, mode="append")

    def finish(self):
        self.connection.commit()
        with self.connection.cursor() as cursor:
            for table in SOURCE_TABLES:
                cursor.execute(f"ANALYZE {table}")
        self.connection.commit()


class _SQLiteWriter(_Writer):
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def execute(self, statements):
        for statement in statements:
            self.connection.execute(statement)

    def ingest(self, table, rows):
        marks = ", ".join("?" * rows.num_columns)
        for batch in rows.to_batches(max_chunksize=200_000):
            columns = [column.to_pylist() for column in batch.columns]
            self.connection.executemany(f"INSERT INTO {table} VALUES ({marks})", zip(*columns))

    def finish(self):
        self.connection.commit()


@contextlib.contextmanager
def _writer(database: SourceDatabase, replace: bool) -> Iterator[_Writer]:
    if database.dialect == "sqlite":
        with _sqlite_connection(database, replace) as connection:
            yield _SQLiteWriter(connection)
    else:
        with _postgres_connection(database, replace) as connection:
            yield _PostgresWriter(connection)


def _refuse_or_drop(existing: list[str], display: str, replace: bool, drop) -> None:
    if existing and not replace:
        raise TelemetryError(
            f"{display} already holds table {existing[0]}; pass --replace to drop the contract's tables"
            " and generate them again"
        )
    for table in existing:
        drop(table)


@contextlib.contextmanager
def _sqlite_connection(database: SourceDatabase, replace: bool) -> Iterator[sqlite3.Connection]:
    if not database.path.startswith("/"):
        raise TelemetryError(f"--url: SQLite path must be absolute: {database.display}")
    try:
        connection = sqlite3.connect(database.path)
    except sqlite3.Error as error:
        raise TelemetryError(f"cannot open {database.display}: {error}") from None
    try:
        existing = [name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'") if name in SOURCE_TABLES]
        _refuse_or_drop(existing, database.display, replace, lambda t: connection.execute(f"DROP TABLE {t}"))
        connection.execute("PRAGMA journal_mode = OFF")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("BEGIN")
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def _postgres_connection(database: SourceDatabase, replace: bool):
    import adbc_driver_postgresql.dbapi as adbc_postgresql

    _create_postgres_database(database)
    try:
        connection = adbc_postgresql.connect(database._url)
    except Exception as error:
        raise TelemetryError(f"cannot connect to {database.display}: {database._scrub(error)}") from None
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            present = {row[0] for row in cursor.fetchall()}
        existing = [t for t in SOURCE_TABLES if t in present]

        def drop(table):
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {table}")

        _refuse_or_drop(existing, database.display, replace, drop)
        yield connection
    except Exception as error:
        if isinstance(error, TelemetryError):
            raise
        raise TelemetryError(f"writing {database.display} failed: {database._scrub(error)}") from None
    finally:
        connection.close()


def _create_postgres_database(database: SourceDatabase) -> None:
    """Create the database named by the URL when the server does not have it yet."""
    import psycopg2

    parsed = urllib.parse.urlsplit(database._url)
    name = urllib.parse.unquote(parsed.path.lstrip("/"))
    if not name:
        raise TelemetryError(f"--url {database.display}: names no database")
    maintenance = urllib.parse.urlunsplit(parsed._replace(path="/postgres", query=""))
    try:
        admin = psycopg2.connect(maintenance, connect_timeout=10)
    except psycopg2.Error as error:
        raise TelemetryError(f"cannot connect to {database.display}: {database._scrub(error)}") from None
    try:
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                from psycopg2 import sql

                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.Error as error:
        raise TelemetryError(f"cannot create database {name} on {database.display}: "
                             f"{database._scrub(error)}") from None
    finally:
        admin.close()
