"""The payload of one night, read from a real SQLite file and a real PostgreSQL schema.

The expected payload below is written by hand from contract section 5, not from the code.
Both databases are built with a collation that does not sort by code point ("alpha" before
"Zeta"), so the order of the payload's lists must come from the pipeline, not the database.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.source import extract
from telemetry_pipeline.source.database import SourceConnection, SourceDatabase
from telemetry_pipeline.source.schema import SOURCE_TABLES, create_table_statements
from telemetry_pipeline_tests.conftest import new_postgres_schema
from telemetry_pipeline_tests.installation import Installation, at, write_config

D = dt.date(2024, 2, 29)  # a leap day: the night before is 02-28, the night after 03-01
P = D - dt.timedelta(days=1)
N = D + dt.timedelta(days=1)
END = at(N)  # D+1 00:00:00.000, the first instant that is no longer night D
BACKENDS = ["sqlite", "postgres"]


# ---------------------------------------------------------------------------------------------
# Writing an installation with our own DDL (a non-code-point collation, or a broken schema)
# ---------------------------------------------------------------------------------------------

def _statements(backend: str, collate: bool, transform) -> list[str]:
    statements = create_table_statements()
    if collate:
        # Text compared without regard to code points: "alpha" < "Zeta" in the database.
        collation = ' COLLATE "und-x-icu"' if backend == "postgres" else " COLLATE NOCASE"
        statements = [s.replace(" TEXT", " TEXT" + collation) if s.startswith("CREATE TABLE") else s
                      for s in statements]
    return [transform(s) for s in statements] if transform else statements


def write_source(backend: str, target, installation: Installation, *, collate: bool = False,
                 transform=None, after: tuple[str, ...] = ()) -> str:
    """Create the contract's tables (optionally altered), insert the rows, run ``after``; returns the URL."""
    statements = _statements(backend, collate, transform)
    if backend == "sqlite":
        path = Path(target)
        db = sqlite3.connect(path)
        marker = "?"
        cursor = db.cursor()
    else:
        import psycopg2

        db = psycopg2.connect(target)
        marker = "%s"
        cursor = db.cursor()
    try:
        for statement in statements:
            cursor.execute(statement)
        for table, rows in installation.rows.items():
            if rows:
                width = len(SOURCE_TABLES[table])
                cursor.executemany(f"INSERT INTO {table} VALUES ({', '.join([marker] * width)})", rows)
        for statement in after:
            cursor.execute(statement)
        db.commit()
    finally:
        db.close()
    return f"sqlite://{path.resolve()}" if backend == "sqlite" else target


# ---------------------------------------------------------------------------------------------
# The rich installation: every edge of contract section 5 around night D
# ---------------------------------------------------------------------------------------------

def rich_installation() -> Installation:
    i = Installation()
    # Companies. Sorted by code point: Zeta, alpha, beta-null, delta-expired, gamma-trial,
    # lower-freeplan, Ωmega; late-co is created at D+1 00:00:00.000 and is not listed.
    i.company("Zeta", plan="BUSINESS", name="Zeta Corp", created_at=at(D, -24 * 30), creator_id="Uma")
    i.company("alpha", plan="FREEPLAN", name="Alpha", created_at=END - 1)
    i.company("beta-null", plan=None, name="Beta", deactivated=True, created_at=at(P, 12), creator_id="u-mixed")
    i.company("delta-expired", plan="TRIALEXPIRED", name="Delta", created_at=at(D) + 29_730_123)
    i.company("gamma-trial", plan="30DAYTRIAL", name="Gamma", created_at=0)
    i.company("lower-freeplan", plan="freeplan", name="Lower", created_at=1_700_000_000_000)  # any other string: paid
    i.company("Ωmega", plan="FREEPLAN", name="Omega", created_at=at(D, 0.5))
    i.company("late-co", plan="ENTERPRISE", name="Late", created_at=END)

    # Teams. t-ghost's company does not exist; t-late is created at D+1 00:00:00.000.
    i.team("T-free", "alpha", name="Free team", created_at=at(P))
    i.team("t-null", "beta-null", name="Null plan team", created_at=at(D), creator_id="Uma",
           live_view="off", review_approval="anyone", review_assignment="roundrobin")
    i.team("t-trial", "gamma-trial", name="Trial team", created_at=at(P, 1), live_view="off")
    i.team("t-paid", "Zeta", name="Paid team", deactivated=True, created_at=at(P, 2))
    i.team("t-lowerfree", "lower-freeplan", name="Lower team", created_at=at(P, 3))
    i.team("t-ghost", "c-missing", name="Ghost team", created_at=END - 1)
    i.team("t-late", "alpha", name="Late team", created_at=END)
    i.team("ü-team", "delta-expired", name="Umlaut team", created_at=at(P, 4), review_assignment="random")

    # Users.
    i.user("Uma", email="uma@example.com", teams=["T-free", "t-null", "t-trial"], admin_of=["T-free"],
           created_at=at(P), registered_at=at(P, 1), join_method="Web Signup",
           last_login=at(D) + 29_730_123, last_origin="VS Code", last_origin_detail="1.86.0")
    i.user("u-mixed", email="mixed@example.com", teams=["T-free", "t-paid"], admin_of=["t-paid"],
           created_at=at(P), registered_at=at(D, 6), join_method="Invitation", last_login=None)
    i.user("u-expired", email="expired@example.com", teams=["ü-team"], created_at=at(P))
    i.user("u-lowerfree", email="lower@example.com", teams=["t-lowerfree"], created_at=at(P))
    i.user("u-noteam", email="noteam@example.com", is_registered=False, deactivated=True, created_at=at(P))
    i.user("u-ghost", email="ghost@example.com", teams=["t-ghost"], created_at=at(P))
    i.user("u-edge", email="edge@example.com", teams=["T-free"], created_at=END - 1)
    i.user("u-late", email="late@example.com", teams=["T-free"], admin_of=["T-free"], created_at=END)
    i.user("ß-user", email="sz@example.com", teams=["t-trial"], created_at=at(P),
           last_origin="JetBrains", last_origin_detail="IntelliJ IDEA")

    # Integrations: distinct providers with an access token, of users existing by the end of D.
    i.token("Uma", "github", team_id="T-free")
    i.token("Uma", "github", team_id="t-null")
    i.token("Uma", "jira", team_id="T-free")
    i.token("u-noteam", "jira")
    i.token("u-mixed", "slack", team_id="t-paid", has_access_token=False)
    i.token("u-edge", "YouTrack", team_id="T-free")
    i.token("ß-user", "msteams", team_id="t-trial")
    i.token("u-late", "bitbucket", team_id="T-free")  # user created at D+1 00:00:00.000
    i.token("u-nobody", "gitlab")  # no such user

    # Codemarks (their own creation time does not matter, the post's does).
    i.codemark("cm-plain", "Uma", at(P, -100))
    i.codemark("cm-plain2", "Uma", at(D, 1))
    i.codemark("cm-inrev", "Uma", at(P, 5), review_id="r-any")

    # Posts: Uma has codemarks 2, codemarksInReviews 1, reviews 3, replies 2 during D.
    i.post("p-prev", "Uma", at(D) - 1)  # D-1 23:59:59.999: not D
    i.post("p-start", "Uma", at(D))  # D 00:00:00.000: counts
    i.post("p-end", "Uma", END - 1)  # D 23:59:59.999: counts
    i.post("p-next", "Uma", END)  # D+1 00:00:00.000: not D
    i.post("p-cm", "Uma", at(D, 1), codemark_id="cm-plain")
    i.post("p-cm2", "Uma", at(D, 2), codemark_id="cm-plain2")
    i.post("p-cmrev", "Uma", at(D, 3), codemark_id="cm-inrev")
    i.post("p-cmmissing", "Uma", at(D, 4), codemark_id="cm-missing")  # counted nowhere
    i.post("p-both", "Uma", at(D, 5), codemark_id="cm-plain", review_id="r-x")  # a review
    i.post("p-both-missing", "Uma", at(D, 6), codemark_id="cm-missing", review_id="r-y")  # a review
    i.post("p-rev", "Uma", at(D, 7), review_id="r-z")
    i.post("p-m1", "u-mixed", at(D, 12))
    i.post("p-m2", "u-mixed", at(D, 13), codemark_id="cm-inrev")
    i.post("p-e1", "u-edge", END - 1, codemark_id="cm-missing")  # counted nowhere: all zeros
    i.post("p-s1", "ß-user", at(P, 23))  # night before
    i.post("p-s2", "ß-user", at(N, 1), codemark_id="cm-plain")  # night after
    i.post("p-nobody", "u-nobody", at(D, 1))  # no such user

    # Reviews.
    i.review("R-created", "Uma", at(D, 9), team_id="t-null")
    i.review("r-approved", "Uma", at(D, -72), team_id="T-free", approved_at=at(D, 10.5))
    i.review("r-later", "u-mixed", at(D, 11), team_id="t-paid", approved_at=at(N, 24))
    i.review("r-same", "Uma", at(D, 1), team_id="T-free", approved_at=at(D, 2))
    i.review("r-prev", "Uma", at(P, -48), team_id="T-free", approved_at=at(D) - 1)
    i.review("r-start", "Uma", at(D), team_id="T-free")
    i.review("r-end", "Uma", END, team_id="T-free")
    i.review("r-approved-end", "Uma", at(P, 3), team_id="t-trial", approved_at=END - 1)
    i.review("r-approved-next", "Uma", at(P, 3), team_id="t-trial", approved_at=END)
    i.review("r-before", "Uma", at(D) - 1, team_id="T-free", approved_at=END)
    i.review("é-review", "ß-user", at(D, 20), team_id="t-trial")
    return i


def _user(id, *, email=..., registered=True, deactivated=False, admin=False, registered_at=None,
          join_method=None, last_login=None, last_origin=None, last_origin_detail=None,
          codemarks=0, in_reviews=0, reviews=0, replies=0):
    entry = {"id": id}
    if email is not ...:
        entry["email"] = email
    entry.update({
        "isRegistered": registered, "isDeactivated": deactivated, "isAdmin": admin,
        "registeredAt": registered_at, "joinMethod": join_method, "lastLogin": last_login,
        "lastOrigin": last_origin, "lastOriginDetail": last_origin_detail, "codemarks": codemarks,
        "codemarksInReviews": in_reviews, "reviews": reviews, "replies": replies,
    })
    return entry


def _team(id, name, company, created, *, deactivated=False, creator=None, live="on", approval="user",
          assignment="authorship2"):
    return {"id": id, "name": name, "companyId": company, "isDeactivated": deactivated, "createdAt": created,
            "creatorId": creator, "liveView": live, "codeReviewApproval": approval,
            "codeReviewAssignment": assignment}


def _company(id, name, created, plan, *, deactivated=False, creator=None):
    return {"id": id, "name": name, "isDeactivated": deactivated, "createdAt": created, "creatorId": creator,
            "plan": plan}


def _review(team, id, created, approved):
    return {"teamId": team, "reviewId": id, "createdAt": created, "approvedAt": approved}


EXPECTED = {
    "date": "2024-02-29",
    "installationId": "inst-1",
    "installationVersion": "14.2.0",
    "outboundEmailEnabled": True,
    "slackInteractiveComponentsEnabled": True,
    "integrations": ["YouTrack", "github", "jira", "msteams"],
    "companies": [
        _company("Zeta", "Zeta Corp", "2024-01-30T00:00:00.000Z", "BUSINESS", creator="Uma"),
        _company("alpha", "Alpha", "2024-02-29T23:59:59.999Z", "FREEPLAN"),
        _company("beta-null", "Beta", "2024-02-28T12:00:00.000Z", None, deactivated=True, creator="u-mixed"),
        _company("delta-expired", "Delta", "2024-02-29T08:15:30.123Z", "TRIALEXPIRED"),
        _company("gamma-trial", "Gamma", "1970-01-01T00:00:00.000Z", "30DAYTRIAL"),
        _company("lower-freeplan", "Lower", "2023-11-14T22:13:20.000Z", "freeplan"),
        _company("Ωmega", "Omega", "2024-02-29T00:30:00.000Z", "FREEPLAN"),
    ],
    "teams": [
        _team("T-free", "Free team", "alpha", "2024-02-28T00:00:00.000Z"),
        _team("t-ghost", "Ghost team", "c-missing", "2024-02-29T23:59:59.999Z"),
        _team("t-lowerfree", "Lower team", "lower-freeplan", "2024-02-28T03:00:00.000Z"),
        _team("t-null", "Null plan team", "beta-null", "2024-02-29T00:00:00.000Z", creator="Uma", live="off",
              approval="anyone", assignment="roundrobin"),
        _team("t-paid", "Paid team", "Zeta", "2024-02-28T02:00:00.000Z", deactivated=True),
        _team("t-trial", "Trial team", "gamma-trial", "2024-02-28T01:00:00.000Z", live="off"),
        _team("ü-team", "Umlaut team", "delta-expired", "2024-02-28T04:00:00.000Z", assignment="random"),
    ],
    "users": [
        _user("Uma", email="uma@example.com", admin=True, registered_at="2024-02-28T01:00:00.000Z",
              join_method="Web Signup", last_login="2024-02-29T08:15:30.123Z", last_origin="VS Code",
              last_origin_detail="1.86.0", codemarks=2, in_reviews=1, reviews=3, replies=2),
        _user("u-edge", email="edge@example.com"),
        _user("u-expired", email="expired@example.com"),
        _user("u-ghost"),  # the team's company does not exist
        _user("u-lowerfree"),  # "freeplan" is not FREEPLAN: paid
        _user("u-mixed", admin=True, registered_at="2024-02-29T06:00:00.000Z", join_method="Invitation",
              in_reviews=1, replies=1),
        _user("u-noteam", registered=False, deactivated=True),
        _user("ß-user", email="sz@example.com", last_origin="JetBrains", last_origin_detail="IntelliJ IDEA"),
    ],
    "codeReviews": [
        _review("t-null", "R-created", "2024-02-29T09:00:00.000Z", None),
        _review("T-free", "r-approved", "2024-02-26T00:00:00.000Z", "2024-02-29T10:30:00.000Z"),
        _review("t-trial", "r-approved-end", "2024-02-28T03:00:00.000Z", "2024-02-29T23:59:59.999Z"),
        _review("t-paid", "r-later", "2024-02-29T11:00:00.000Z", "2024-03-02T00:00:00.000Z"),
        _review("T-free", "r-same", "2024-02-29T01:00:00.000Z", "2024-02-29T02:00:00.000Z"),
        _review("T-free", "r-start", "2024-02-29T00:00:00.000Z", None),
        _review("t-trial", "é-review", "2024-02-29T20:00:00.000Z", None),
    ],
}


def _key_order(value):
    """Every object's keys, in order, throughout the document."""
    if isinstance(value, dict):
        return [(k, _key_order(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_key_order(v) for v in value]
    return None


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def rich_source(request, tmp_path_factory):
    """(backend, url) of the rich installation, written once per backend for this module."""
    backend = request.param
    if backend == "sqlite":
        target = tmp_path_factory.mktemp("rich") / "codestream.db"
    else:
        target = new_postgres_schema(request.getfixturevalue("postgres_database"))
    return backend, write_source(backend, target, rich_installation(), collate=True)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_installation_config(write_config(tmp_path_factory.mktemp("config") / "codestream.json"))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def target(backend, tmp_path, request):
    """Where a fresh database of ``backend`` goes: a file path, or a URL of a fresh schema."""
    return tmp_path / "codestream.db" if backend == "sqlite" else request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------------------------------------
# The full payload
# ---------------------------------------------------------------------------------------------

def test_the_database_collation_is_not_code_point_order(rich_source):
    """Guard for the sorting assertions: the database itself would put "alpha" before "Zeta"."""
    backend, url = rich_source
    with SourceDatabase(url).connect() as conn:
        ids = conn.fetch("SELECT id FROM companies ORDER BY id", {}, pa.schema([("id", pa.string())]),
                         table="companies")["id"].to_pylist()
    assert ids.index("alpha") < ids.index("Zeta")


def test_full_payload_of_the_night(rich_source, config):
    backend, url = rich_source
    payload = summarize_night(SourceDatabase(url), config, D).payload
    assert payload == EXPECTED
    # Same keys, same values, and the contract's order of keys everywhere.
    assert _key_order(payload) == _key_order(EXPECTED)
    assert json.dumps(payload, ensure_ascii=False) == json.dumps(EXPECTED, ensure_ascii=False)


def test_users_without_email_have_no_email_key_at_all(rich_source, config):
    backend, url = rich_source
    users = {u["id"]: u for u in summarize_night(SourceDatabase(url), config, D).payload["users"]}
    for user_id in ("u-ghost", "u-lowerfree", "u-mixed", "u-noteam"):
        assert "email" not in users[user_id], user_id
        assert not any("@" in str(value) for value in users[user_id].values()), user_id


# ---------------------------------------------------------------------------------------------
# Many nights in one call
# ---------------------------------------------------------------------------------------------

def _canonical(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(row, sort_keys=True, ensure_ascii=False) for row in rows)


@pytest.mark.parametrize("name", ["extract_companies", "extract_teams", "extract_users",
                                  "extract_code_reviews", "extract_user_activity"])
def test_three_nights_at_once_equal_each_night_alone(rich_source, name):
    backend, url = rich_source
    function = getattr(extract, name)
    nights = [P, D, N]
    with SourceDatabase(url).connect() as conn:
        together = function(conn, nights).to_pylist()
        alone = {night: function(conn, [night]).to_pylist() for night in nights}
    assert {row["night"] for row in together} <= {n.isoformat() for n in nights}
    for night in nights:
        assert alone[night], f"{name}: night {night} is empty; the comparison would prove nothing"
        assert all(row["night"] == night.isoformat() for row in alone[night])
        mine = [row for row in together if row["night"] == night.isoformat()]
        assert _canonical(mine) == _canonical(alone[night]), f"{name}: night {night}"


# ---------------------------------------------------------------------------------------------
# Counting a night's posts: its codemarks looked up within the range of ids its posts point at
# ---------------------------------------------------------------------------------------------

def _codemarks_either_side(installation: Installation) -> Installation:
    """Two codemarks of the night whose ids order one way by code point ("Z" < "a") and the
    other way in ICU's root collation ("a" < "Z"), one of them made inside a review."""
    installation.codemark("Zcm", "u1", at(D, 4), team_id="t1")
    installation.codemark("acm", "u1", at(D, 4), team_id="t1", review_id="r1")
    installation.post("p-Z", "u1", at(D, 4), team_id="t1", codemark_id="Zcm")
    installation.post("p-a", "u1", at(D, 5), team_id="t1", codemark_id="acm")
    return installation


# p1's codemark cm1, and the two above; p2 a reply.
COUNTED = [{"night": D.isoformat(), "user_id": "u1", "codemarks": 2, "codemarks_in_reviews": 1,
            "reviews": 0, "replies": 1}]


def test_the_id_columns_order_alike_only_with_one_deterministic_collation(backend, target):
    url = write_source(backend, target, small_installation())
    with SourceDatabase(url).connect() as conn:
        alike = conn.orders_alike(("posts", "codemark_id"), ("codemarks", "id"))
    # SQLite never: a column there may hold integers, text and blobs side by side.
    assert alike is (backend == "postgres")


@pytest.mark.parametrize("altered", ["codemarks.id in ICU's root collation", "posts.codemark_id as varchar"])
def test_codemarks_are_counted_whichever_way_the_id_columns_order(postgres_url, altered):
    """With codemarks.id in another collation than posts.codemark_id, a range of ids read off
    the posts does not bound the codemarks: the night is counted without it. With
    posts.codemark_id a varchar in the same collation, the two order alike and the range is used."""
    if altered.startswith("codemarks"):
        transform = _only_in("codemarks", "id TEXT NOT NULL", 'id TEXT COLLATE "und-x-icu" NOT NULL')
    else:
        transform = _only_in("posts", "codemark_id TEXT", "codemark_id VARCHAR(40)")
    url = write_source("postgres", postgres_url, _codemarks_either_side(small_installation()), transform=transform)
    with SourceDatabase(url).connect() as conn:
        alike = conn.orders_alike(("posts", "codemark_id"), ("codemarks", "id"))
        counted = extract.extract_user_activity(conn, [D]).to_pylist()
        in_range = extract._night_activity_in_range(conn, D).to_pylist()
        default_orders_by_code_point = conn.fetch("SELECT 'Z' < 'a' AS z_first", {},
                                                  pa.schema([("z_first", pa.bool_())]), table="posts")
    assert counted == COUNTED
    if altered.startswith("posts"):
        assert alike and in_range == [{k: v for k, v in COUNTED[0].items() if k != "night"}]
        return
    assert not alike
    if default_orders_by_code_point["z_first"][0].as_py():  # as here and in CI (C.UTF-8)
        # Guard for this test: the range read off the posts ("Zcm" to "cm1") holds neither
        # codemark in ICU's order, where "acm" and "cm1" come before "Zcm".
        assert in_range[0]["codemarks"] + in_range[0]["codemarks_in_reviews"] < 3


def test_a_post_written_into_the_night_while_it_is_counted_is_not_half_counted(postgres_url, monkeypatch):
    """The range of codemark ids and the counts are read in one snapshot: a post written in
    between, pointing at a codemark outside the range, is either counted whole or not at all."""
    installation = _codemarks_either_side(small_installation())
    installation.codemark("cm0-before-the-range", "u1", at(P, 1), team_id="t1")
    url = write_source("postgres", postgres_url, installation)
    late = ("p-late", "t1", "u1", at(D, 6), "cm0-before-the-range", None)
    written = []
    original_fetch = SourceConnection.fetch

    def fetch_then_write(self, sql, params, schema, *, table):
        fetched = original_fetch(self, sql, params, schema, table=table)
        if sql == extract.CODEMARK_RANGE_SQL and not written:
            import psycopg2

            writer = psycopg2.connect(url)
            with writer, writer.cursor() as cursor:
                cursor.execute("INSERT INTO posts VALUES (%s, %s, %s, %s, %s, %s)", late)
            writer.close()
            written.append(late)
        return fetched

    monkeypatch.setattr(SourceConnection, "fetch", fetch_then_write)
    with SourceDatabase(url).connect() as conn:
        assert conn.orders_alike(("posts", "codemark_id"), ("codemarks", "id"))
        during = extract.extract_user_activity(conn, [D]).to_pylist()
        after = extract.extract_user_activity(conn, [D]).to_pylist()
    assert written, "the late post was never written: the test proves nothing"
    assert during == COUNTED
    assert after == [{**COUNTED[0], "codemarks": 3}]


# ---------------------------------------------------------------------------------------------
# Bad input: one line that names what is wrong
# ---------------------------------------------------------------------------------------------

def small_installation() -> Installation:
    i = Installation()
    i.company("c1", plan="BUSINESS", created_at=at(P))
    i.team("t1", "c1", created_at=at(P))
    i.user("u1", teams=["t1"], created_at=at(P), last_login=at(D, 3))
    i.token("u1", "github", team_id="t1")
    i.codemark("cm1", "u1", at(D, 1), team_id="t1")
    i.post("p1", "u1", at(D, 1), team_id="t1", codemark_id="cm1")
    i.post("p2", "u1", at(D, 2), team_id="t1")
    i.review("r1", "u1", at(D, 2), team_id="t1", approved_at=at(D, 3))
    return i


def _only_in(table: str, old: str, new: str):
    def transform(statement: str) -> str:
        if statement.startswith(f"CREATE TABLE {table} ("):
            assert old in statement, statement
            return statement.replace(old, new)
        return statement
    return transform


def _failure(url: str, config) -> str:
    with pytest.raises(TelemetryError) as raised:
        summarize_night(SourceDatabase(url), config, D)
    message = str(raised.value)
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message
    return message


def test_small_installation_is_valid(backend, target, config):
    """The baseline for the bad-input tests below: untouched, it reads fine."""
    url = write_source(backend, target, small_installation())
    payload = summarize_night(SourceDatabase(url), config, D).payload
    assert [u["id"] for u in payload["users"]] == ["u1"]
    assert payload["codeReviews"][0]["reviewId"] == "r1"


def test_missing_table_is_named(backend, target, config):
    url = write_source(backend, target, small_installation(), after=("DROP TABLE reviews",))
    message = _failure(url, config)
    assert "reviews" in message and "missing" in message


def test_missing_column_is_named(backend, target, config):
    url = write_source(backend, target, small_installation(),
                       after=("ALTER TABLE users DROP COLUMN last_origin_detail",))
    message = _failure(url, config)
    assert "users" in message and "last_origin_detail" in message


def test_null_in_a_not_null_column_is_named(backend, target, config):
    installation = small_installation()
    installation.rows["companies"][0] = ("c1", None, "BUSINESS", False, at(P), None)
    url = write_source(backend, target, installation,
                       transform=_only_in("companies", "name TEXT NOT NULL", "name TEXT"))
    message = _failure(url, config)
    assert "companies" in message and "name" in message and "NULL" in message


@pytest.mark.parametrize("table, column, row", [
    ("posts", "created_at", "'p-null', 't1', 'u1', NULL, NULL, NULL"),
    ("companies", "name", "'c-null', NULL, NULL, false, 1, NULL"),
])
def test_null_in_a_table_inheriting_the_not_null_is_named(postgres_url, config, table, column, row):
    """A table whose inheritance child dropped the NOT NULL: the parent's declaration does not hold
    for the rows a query of it reads, so they are looked at as where nothing is declared."""
    url = write_source("postgres", postgres_url, small_installation(), after=(
        f"CREATE TABLE {table}_more () INHERITS ({table})",
        f"ALTER TABLE {table}_more ALTER {column} DROP NOT NULL",
        f"INSERT INTO {table}_more VALUES ({row})",
    ))
    with SourceDatabase(url).connect() as conn:
        assert not conn.enforces_not_null(table, column)
        assert not conn.enforces_unique(table, ("id",))  # the child's ids are not in the parent's key
    message = _failure(url, config)
    assert f"table {table}: column {column} is NULL in row id='{row.split(',')[0].strip(chr(39))}'" in message


def test_a_null_id_is_named_by_its_row(backend, target, config):
    installation = small_installation()
    installation.company("c-no-id", plan="BUSINESS", created_at=at(P))
    installation.rows["companies"][-1] = (None, *installation.rows["companies"][-1][1:])
    without_key = _only_in("companies", ",\n  PRIMARY KEY (id)", "")
    url = write_source(backend, target, installation,
                       transform=lambda s: without_key(_only_in("companies", "id TEXT NOT NULL", "id TEXT")(s)))
    assert "table companies: column id is NULL in row id='#2'" in _failure(url, config)


def test_duplicate_primary_key_is_named(backend, target, config):
    installation = small_installation()
    installation.user("u1", created_at=at(P, 1))
    url = write_source(backend, target, installation,
                       transform=_only_in("users", ",\n  PRIMARY KEY (id)", ""))
    message = _failure(url, config)
    assert "users" in message and "duplicate" in message and "u1" in message


@pytest.mark.parametrize("table, column, value", [
    ("companies", "created_at", "yesterday"),
    ("users", "last_login", "last week"),
    ("reviews", "approved_at", "soon"),
    ("companies", "deactivated", "yes"),
    ("team_members", "is_admin", 2),
    ("users", "is_registered", "true"),
])
def test_sqlite_value_of_the_wrong_type_is_named(tmp_path, config, table, column, value):
    installation = small_installation()
    index = [c.name for c in SOURCE_TABLES[table]].index(column)
    row = list(installation.rows[table][0])
    row[index] = value
    installation.rows[table][0] = tuple(row)
    url = write_source("sqlite", tmp_path / "bad.db", installation)
    message = _failure(url, config)
    assert table in message and column in message


def _add_row_with(installation: Installation, table: str, column: str, value) -> None:
    """One more valid row in ``table`` whose ``column`` holds ``value``."""
    if table == "users":
        installation.user("u2", teams=["t1"], created_at=at(P))
    elif table == "posts":
        installation.post("p3", "u1", at(D, 4), team_id="t1")
    elif table == "reviews":
        installation.review("r2", "u1", at(D, 4), team_id="t1")
    elif table == "provider_tokens":
        installation.token("u1", "jira", team_id="t1")
    index = [c.name for c in SOURCE_TABLES[table]].index(column)
    row = list(installation.rows[table][-1])
    row[index] = value
    installation.rows[table][-1] = tuple(row)


def test_the_rows_the_bug_tests_add_are_read_when_valid(backend, target, config):
    """Baseline for the two tests below: with valid values the added rows all show in the payload."""
    installation = small_installation()
    _add_row_with(installation, "users", "created_at", at(P))
    _add_row_with(installation, "posts", "created_at", at(D, 4))
    _add_row_with(installation, "reviews", "created_at", at(D, 4))
    _add_row_with(installation, "provider_tokens", "has_access_token", True)
    payload = summarize_night(SourceDatabase(write_source(backend, target, installation)), config, D).payload
    assert [u["id"] for u in payload["users"]] == ["u1", "u2"]
    assert payload["users"][0]["replies"] == 2
    assert [r["reviewId"] for r in payload["codeReviews"]] == ["r1", "r2"]
    assert payload["integrations"] == ["github", "jira"]


@pytest.mark.parametrize("table, column", [("users", "created_at"), ("posts", "created_at"),
                                           ("reviews", "created_at")])
def test_sqlite_text_in_a_time_filtered_bigint_column_is_named(tmp_path, config, table, column):
    installation = small_installation()
    _add_row_with(installation, table, column, "2024-02-29")
    url = write_source("sqlite", tmp_path / "bad.db", installation)
    message = _failure(url, config)
    assert table in message and column in message


@pytest.mark.parametrize("table, column, sql_type", [
    ("users", "created_at", "BIGINT"),
    ("posts", "created_at", "BIGINT"),
    ("reviews", "created_at", "BIGINT"),  # approved during the night: read, then refused
    ("provider_tokens", "has_access_token", "BOOLEAN"),
])
def test_null_in_a_filtered_not_null_column_is_named(backend, target, config, table, column, sql_type):
    installation = small_installation()
    _add_row_with(installation, table, column, None)
    url = write_source(backend, target, installation,
                       transform=_only_in(table, f"{column} {sql_type} NOT NULL", f"{column} {sql_type}"))
    message = _failure(url, config)
    assert table in message and column in message


def test_sqlite_non_boolean_in_has_access_token_is_named(tmp_path, config):
    installation = small_installation()
    installation.token("u1", "jira", team_id="t1", has_access_token="yes")
    url = write_source("sqlite", tmp_path / "bad.db", installation)
    message = _failure(url, config)
    assert "provider_tokens" in message and "has_access_token" in message


def test_unreachable_postgres_names_the_host_and_hides_the_password(config):
    url = "postgresql://telemetry:Pa55w0rd-never-shown@127.0.0.1:1/codestream"
    message = _failure(url, config)
    assert "127.0.0.1" in message
    assert "Pa55w0rd-never-shown" not in message


def test_missing_sqlite_file_is_named(tmp_path, config):
    path = tmp_path / "nowhere" / "codestream.db"
    message = _failure(f"sqlite://{path}", config)
    assert str(path) in message
    assert not path.exists()  # reading never creates the file


@pytest.mark.parametrize("url", ["mysql://root@127.0.0.1/codestream", "mongodb://127.0.0.1:27017/codestream"])
def test_unsupported_url_scheme_is_named(url, config):
    with pytest.raises(TelemetryError) as raised:
        summarize_night(SourceDatabase(url), config, D)
    message = str(raised.value)
    assert "\n" not in message
    assert url.split(":", 1)[0] in message
