"""The bad-input catalog: broken databases, configuration files and settings, each with its answer.

Every case starts from one small, valid installation, breaks one thing, and runs the night the
way the pipeline does (configuration, the extract functions, the payload, the delivery) against
a real collector on loopback. The answer is either the correct payload, checked on the bytes the
collector received, or one line naming the table, column and row, or the key, with nothing sent.
Tests and ``telemetry-pipeline reliability-report`` run these same cases.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from telemetry_pipeline.codestream_config import PHONE_HOME_URL_ENV
from telemetry_pipeline.delivery import ALLOW_PLAIN_HTTP_ENV
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import first_night, night_start_ms
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.reliability.loopback import LoopbackCollector
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline.rules.payload import encode_payload
from telemetry_pipeline.source.database import SOURCE_URL_ENV
from telemetry_pipeline.source.schema import PRIMARY_KEYS, SOURCE_TABLES, create_table_statements

NIGHT = dt.date(2024, 2, 29)
START = night_start_ms(NIGHT)
END = START + 86_400_000
HOUR = 3_600_000
KEY = "phk-catalog-9f3Qz-never-printed"  # the phone-home key of every case's configuration
CONFIG_ENV = "CODESTREAM_CONFIG"
MEGABYTE_NAME = "N" * 1_000_000
ODD_IDS = ("c'; DROP TABLE users; --", 't" OR "1"="1', "u%_\\:end $1 ?1 ;")
SETTING_NAMES = (SOURCE_URL_ENV, CONFIG_ENV, PHONE_HOME_URL_ENV, "TELEMETRY_START_DATE", ALLOW_PLAIN_HTTP_ENV)


# ---------------------------------------------------------------------------------------------
# The installation every case starts from, and how a case changes it
# ---------------------------------------------------------------------------------------------

def _baseline_rows() -> dict[str, list[dict]]:
    return {
        "companies": [
            {"id": "c-free", "name": "Free Co", "plan": "FREEPLAN", "deactivated": False,
             "created_at": START - 240 * HOUR, "creator_id": None},
            {"id": "c-paid", "name": "Paid Co", "plan": "BUSINESS", "deactivated": False,
             "created_at": START - 240 * HOUR, "creator_id": "u-paid"},
        ],
        "teams": [
            _team("t-free", "c-free"), _team("t-paid", "c-paid"),
        ],
        "users": [
            _user("u-free", "free@example.com"), _user("u-paid", "paid@example.com"),
        ],
        "team_members": [
            {"team_id": "t-free", "user_id": "u-free", "is_admin": True},
            {"team_id": "t-paid", "user_id": "u-paid", "is_admin": False},
        ],
        "provider_tokens": [
            {"user_id": "u-free", "team_id": "t-free", "provider": "github", "has_access_token": True},
        ],
        "posts": [
            _post("p1", "u-free", START + HOUR), _post("p2", "u-free", START + 2 * HOUR, codemark_id="cm1"),
        ],
        "codemarks": [
            {"id": "cm1", "team_id": "t-free", "creator_id": "u-free", "created_at": START + 2 * HOUR,
             "review_id": None},
        ],
        "reviews": [
            {"id": "r1", "team_id": "t-paid", "creator_id": "u-paid", "created_at": START + 3 * HOUR,
             "approved_at": None},
        ],
    }


def _team(id, company_id):
    return {"id": id, "company_id": company_id, "name": f"Team {id}", "deactivated": False,
            "created_at": START - 200 * HOUR, "creator_id": None, "live_view": None,
            "review_approval": None, "review_assignment": None}


def _user(id, email):
    return {"id": id, "email": email, "is_registered": True, "deactivated": False,
            "created_at": START - 100 * HOUR, "registered_at": START - 99 * HOUR, "join_method": "Web Signup",
            "last_login": START + HOUR, "last_origin": "VS Code", "last_origin_detail": "1.86.0"}


def _post(id, creator_id, created_at, codemark_id=None, review_id=None):
    return {"id": id, "team_id": "t-free", "creator_id": creator_id, "created_at": created_at,
            "codemark_id": codemark_id, "review_id": review_id}


def _baseline_config() -> dict:
    return {
        "apiServer": {"installationId": "inst-1", "phoneHomeUrl": "{collector}"},
        "onprem": {"installationVersion": "14.2.0"},
        "email": {"suppressEmails": False},
        "slack": {"interactiveComponentsEnabled": True},
        "universalSecrets": {"telemetry": KEY},
    }


@dataclass
class Setup:
    """One case's installation before it is written: rows, schema changes, configuration, settings."""

    backend: str
    rows: dict[str, list[dict]] = field(default_factory=_baseline_rows)
    nullable: set[str] = field(default_factory=set)  # "table.column" declared without NOT NULL
    no_primary_key: set[str] = field(default_factory=set)
    after: list[str] = field(default_factory=list)  # SQL run once the rows are in
    database_bytes: bytes | None = None  # SQLite: this file instead of a database
    config: dict = field(default_factory=_baseline_config)
    config_bytes: bytes | None = None  # this file instead of the configuration
    env: dict[str, str] = field(default_factory=dict)

    def row(self, table: str, row_id: str) -> dict:
        return next(r for r in self.rows[table] if r.get("id", r.get("user_id")) == row_id)

    def set(self, table: str, row_id: str, **values) -> Setup:
        self.row(table, row_id).update(values)
        return self

    def null(self, table: str, column: str, row_id: str) -> Setup:
        """A NULL where the contract forbids it (the column's NOT NULL is dropped to let it in)."""
        self.nullable.add(f"{table}.{column}")
        if table == "team_members":
            self.rows[table][0][column] = None
        else:
            self.set(table, row_id, **{column: None})
        return self

    def duplicate(self, table: str, index: int = 0, **changes) -> Setup:
        """A second row with the same primary key (the key constraint is dropped to let it in)."""
        self.no_primary_key.add(table)
        self.rows[table].append({**self.rows[table][index], **changes})
        return self


# ---------------------------------------------------------------------------------------------
# What a case expects
# ---------------------------------------------------------------------------------------------

PayloadCheck = Callable[[dict], list[str]]


@dataclass(frozen=True)
class BadInput:
    name: str
    where: str  # the table.column, file or setting the case breaks
    change: Callable[[Setup], object]
    error: tuple[str, ...] = ()  # fragments the one-line error must hold; empty: a payload is expected
    payload: PayloadCheck | None = None  # problems with the payload received, empty when right
    expected: str = ""  # the correct payload, in words, for the report
    backends: tuple[str, ...] = ("sqlite",)
    secret_free: tuple[str, ...] = ()  # text that must not appear in the error (data from the case)

    @property
    def answer(self) -> str:
        return f"one line naming {', '.join(self.error)}" if self.error else self.expected


def _users(payload: dict) -> dict[str, dict]:
    return {u["id"]: u for u in payload["users"]}


def _expect(condition: bool, problem: str) -> list[str]:
    return [] if condition else [problem]


def _unchanged_baseline(payload: dict) -> list[str]:
    users = _users(payload)
    return (
        _expect(list(users) == ["u-free", "u-paid"], f"users are {list(users)}, expected u-free, u-paid")
        + _expect(users.get("u-free", {}).get("email") == "free@example.com", "u-free's email is missing")
        + _expect("email" not in users.get("u-paid", {}), "u-paid's email is present")
        + _expect(users.get("u-free", {}).get("replies") == 1 and users.get("u-free", {}).get("codemarks") == 1,
                  "u-free's counts changed")
        + _expect(payload["integrations"] == ["github"], f"integrations are {payload['integrations']}")
    )


def _odd_ids(s: Setup) -> None:
    company, team, user = ODD_IDS
    s.rows["companies"].append({**s.rows["companies"][0], "id": company, "name": "Odd Co"})
    s.rows["teams"].append(_team(team, company))
    s.rows["users"].append(_user(user, "odd@example.com"))
    s.rows["team_members"].append({"team_id": team, "user_id": user, "is_admin": False})
    s.rows["posts"].append({**_post("p-odd", user, START + 5 * HOUR), "team_id": team})


def _odd_ids_sent(payload: dict) -> list[str]:
    company, team, user = ODD_IDS
    users = _users(payload)
    return (
        _expect([c["id"] for c in payload["companies"]] == sorted(["c-free", "c-paid", company]),
                f"company ids are {[c['id'] for c in payload['companies']]}")
        + _expect(any(t["id"] == team and t["companyId"] == company for t in payload["teams"]), "odd team missing")
        + _expect(users.get(user, {}).get("email") == "odd@example.com" and users[user]["replies"] == 1,
                  "odd user missing, redacted or miscounted")
        + _unchanged_baseline({**payload, "users": [u for u in payload["users"] if u["id"] != user]})
    )


def _team_of_unknown_company(s: Setup) -> None:
    s.rows["teams"].append(_team("t-ghost", "c-nowhere"))
    s.rows["team_members"].append({"team_id": "t-ghost", "user_id": "u-free", "is_admin": False})


def _ghost_team_sent(payload: dict) -> list[str]:
    ghost = next((t for t in payload["teams"] if t["id"] == "t-ghost"), {})
    return (_expect(ghost.get("companyId") == "c-nowhere", "t-ghost is not listed with its company id")
            + _expect("email" not in _users(payload)["u-free"], "u-free's email is sent although a company is unknown"))


def _pg_retype(table: str, column: str, row_id: str, value: str) -> Callable[[Setup], None]:
    """A column of another type: SQLite takes any value in any column; PostgreSQL needs a text column."""
    def change(s: Setup) -> None:
        if s.backend == "postgresql":
            s.after += [f"ALTER TABLE {table} ALTER COLUMN {column} TYPE text",
                        f"UPDATE {table} SET {column} = '{value}' WHERE id = '{row_id}'"]
        else:
            s.set(table, row_id, **{column: value})
    return change


def _config(path: str, value) -> Callable[[Setup], None]:
    def change(s: Setup) -> None:
        *parents, last = path.split(".")
        node = s.config
        for part in parents:
            node = node.setdefault(part, {})
        if value is _ABSENT:
            node.pop(last, None)
        else:
            node[last] = value
    return change


_ABSENT = object()
BOTH = ("sqlite", "postgresql")
NOT_UTF8 = "X'7A71C3A9C328406D61696C2E74657374'"  # b"zq\xc3\xa9\xc3(@mail.test": not UTF-8

BAD_INPUTS: tuple[BadInput, ...] = (
    # --- NULL in a NOT NULL column
    BadInput("NULL in a NOT NULL column", "companies.name", lambda s: s.null("companies", "name", "c-free"),
             error=("table companies", "column name", "NULL", "c-free"), backends=BOTH),
    BadInput("NULL in a NOT NULL column", "teams.company_id", lambda s: s.null("teams", "company_id", "t-paid"),
             error=("table teams", "column company_id", "NULL", "t-paid"), backends=BOTH),
    BadInput("NULL in a NOT NULL column", "users.deactivated", lambda s: s.null("users", "deactivated", "u-paid"),
             error=("table users", "column deactivated", "NULL", "u-paid"), backends=BOTH),
    BadInput("NULL in a NOT NULL column", "team_members.is_admin",
             lambda s: s.null("team_members", "is_admin", "u-free"),
             error=("table team_members", "column is_admin", "NULL", "t-free"), backends=BOTH),
    BadInput("NULL in a NOT NULL column", "posts.creator_id", lambda s: s.null("posts", "creator_id", "p1"),
             error=("table posts", "column creator_id", "NULL", "p1"), backends=BOTH),
    BadInput("NULL in a NOT NULL column", "reviews.created_at", lambda s: s.null("reviews", "created_at", "r1"),
             error=("table reviews", "column created_at", "NULL", "r1"), backends=BOTH),
    BadInput("NULL in a NOT NULL column", "provider_tokens.has_access_token",
             lambda s: s.null("provider_tokens", "has_access_token", "u-free"),
             error=("table provider_tokens", "column has_access_token", "NULL", "u-free"), backends=BOTH),
    # --- wrong column types
    BadInput("text in a bigint column", "companies.created_at",
             _pg_retype("companies", "created_at", "c-free", "yesterday"),
             error=("companies", "created_at"), backends=BOTH, secret_free=("yesterday",)),
    BadInput("text in a bigint column", "users.last_login", lambda s: s.set("users", "u-free", last_login="last week"),
             error=("table users", "column last_login", "text", "u-free"), secret_free=("last week",)),
    BadInput("an email in a bigint column", "users.created_at",
             lambda s: s.set("users", "u-paid", created_at="paid@example.com"),
             error=("table users", "column created_at", "u-paid"), secret_free=("paid@example.com",)),
    BadInput("a real number in a bigint column", "users.registered_at",
             lambda s: s.set("users", "u-free", registered_at=1_700_000_000_000.5),
             error=("table users", "column registered_at", "real number", "u-free")),
    BadInput("text in a boolean column", "companies.deactivated",
             _pg_retype("companies", "deactivated", "c-free", "yes"),
             error=("companies", "deactivated"), backends=BOTH),
    BadInput("2 in a boolean column", "team_members.is_admin", lambda s: s.rows["team_members"][1].update(is_admin=2),
             error=("table team_members", "column is_admin", "boolean", "u-paid")),
    BadInput("a blob in a text column", "teams.name", lambda s: s.set("teams", "t-free", name=b"\x00\x01blob"),
             error=("table teams", "column name", "blob", "t-free")),
    # --- negative or absurd timestamps
    BadInput("negative timestamp (before 1970)", "companies.created_at",
             lambda s: s.set("companies", "c-free", created_at=-1), backends=BOTH,
             payload=lambda p: _expect(p["companies"][0]["createdAt"] == "1969-12-31T23:59:59.999Z",
                                       f"createdAt is {p['companies'][0]['createdAt']}"),
             expected="createdAt 1969-12-31T23:59:59.999Z"),
    BadInput("absurd past timestamp (-2^62 ms)", "companies.created_at",
             lambda s: s.set("companies", "c-free", created_at=-(2**62)), backends=BOTH,
             error=("table companies", "column created_at", "not a time", "c-free")),
    BadInput("absurd future timestamp (2^62 ms)", "users.last_login",
             lambda s: s.set("users", "u-free", last_login=2**62), backends=BOTH,
             error=("table users", "column last_login", "not a time", "u-free")),
    BadInput("year 10000 timestamp", "reviews.approved_at",
             lambda s: s.set("reviews", "r1", approved_at=253_402_300_800_000), backends=BOTH,
             error=("table reviews", "column approved_at", "not a time", "r1")),
    BadInput("absurd future creation (2^62 ms)", "companies.created_at",
             lambda s: s.set("companies", "c-paid", created_at=2**62), backends=BOTH,
             payload=lambda p: _expect([c["id"] for c in p["companies"]] == ["c-free"], "c-paid is listed"),
             expected="the company is not listed (created after the night)"),
    BadInput("absurd post time (2^62 ms)", "posts.created_at",
             lambda s: s.set("posts", "p1", created_at=2**62), backends=BOTH,
             payload=lambda p: _expect(_users(p)["u-free"]["replies"] == 0, "the post is counted"),
             expected="the post is not counted"),
    # --- duplicate primary keys
    BadInput("duplicate primary key", "companies.id", lambda s: s.duplicate("companies", name="Other Co"),
             error=("table companies", "duplicate primary key", "c-free"), backends=BOTH),
    BadInput("duplicate primary key", "users.id", lambda s: s.duplicate("users", 1, email="other@example.com"),
             error=("table users", "duplicate primary key", "u-paid"), backends=BOTH,
             secret_free=("other@example.com", "paid@example.com")),
    BadInput("duplicate primary key", "team_members.(team_id, user_id)",
             lambda s: s.duplicate("team_members", is_admin=False),
             error=("table team_members", "duplicate primary key", "t-free", "u-free"), backends=BOTH),
    BadInput("duplicate primary key", "posts.id", lambda s: s.duplicate("posts"),
             error=("table posts", "duplicate primary key", "p1"), backends=BOTH),
    BadInput("duplicate primary key", "reviews.id", lambda s: s.duplicate("reviews"),
             error=("table reviews", "duplicate primary key", "r1"), backends=BOTH),
    # --- references to rows that do not exist
    BadInput("a team of an unknown company", "teams.company_id", _team_of_unknown_company, backends=BOTH,
             payload=_ghost_team_sent, expected="the team is listed; its members' emails are withheld"),
    BadInput("a membership of an unknown user", "team_members.user_id",
             lambda s: s.rows["team_members"].append({"team_id": "t-free", "user_id": "u-nobody", "is_admin": True}),
             backends=BOTH, payload=_unchanged_baseline, expected="the membership is ignored"),
    BadInput("a membership in an unknown team", "team_members.team_id",
             lambda s: s.rows["team_members"].append({"team_id": "t-nowhere", "user_id": "u-free", "is_admin": False}),
             backends=BOTH,
             payload=lambda p: _expect("email" not in _users(p)["u-free"], "u-free's email is sent"),
             expected="the user's email is withheld"),
    BadInput("a credential of an unknown user", "provider_tokens.user_id",
             lambda s: s.rows["provider_tokens"].append(
                 {"user_id": "u-nobody", "team_id": "t-free", "provider": "gitlab", "has_access_token": True}),
             backends=BOTH, payload=_unchanged_baseline, expected="the integration is not listed"),
    BadInput("a post of an unknown user", "posts.creator_id",
             lambda s: s.rows["posts"].append(_post("p-ghost", "u-nobody", START + HOUR)),
             backends=BOTH, payload=_unchanged_baseline, expected="the post is counted for nobody"),
    BadInput("a post citing an unknown codemark", "posts.codemark_id",
             lambda s: s.set("posts", "p2", codemark_id="cm-nowhere"), backends=BOTH,
             payload=lambda p: _expect(_users(p)["u-free"]["codemarks"] == 0 and _users(p)["u-free"]["replies"] == 1,
                                       "the post is counted"),
             expected="the post is counted nowhere"),
    # --- text that is not what it seems
    BadInput("invalid UTF-8", "users.email",
             lambda s: s.after.append(f"UPDATE users SET email = CAST({NOT_UTF8} AS TEXT) WHERE id = 'u-free'"),
             error=("table users", "column email", "not valid UTF-8", "u-free"), secret_free=("zq", "mail.test")),
    BadInput("invalid UTF-8 in a primary key", "companies.id",
             lambda s: s.after.append(f"UPDATE companies SET id = CAST({NOT_UTF8} AS TEXT) WHERE id = 'c-free'"),
             error=("table companies", "column id", "not valid UTF-8", "row #"), secret_free=("zq", "mail.test")),
    BadInput("a 1 MB name", "companies.name", lambda s: s.set("companies", "c-free", name=MEGABYTE_NAME),
             backends=BOTH, payload=lambda p: _expect(p["companies"][0]["name"] == MEGABYTE_NAME, "name cut or changed"),
             expected="the name, all 1,000,000 characters"),
    BadInput("SQL metacharacters in ids", "companies.id, teams.id, users.id", _odd_ids, backends=BOTH,
             payload=_odd_ids_sent, expected="the ids verbatim, sorted; nothing else changes"),
    BadInput("NUL and control characters", "companies.name",
             lambda s: s.set("companies", "c-free", name="a\x00b\u2028c\nd\"e"),
             payload=lambda p: _expect(p["companies"][0]["name"] == "a\x00b\u2028c\nd\"e", "name changed"),
             expected="the name, escaped as JSON"),
    # --- the database itself
    BadInput("a missing table", "reviews", lambda s: s.after.append("DROP TABLE reviews"),
             error=("table reviews", "missing"), backends=BOTH),
    BadInput("a missing column", "users.last_origin_detail",
             lambda s: s.after.append("ALTER TABLE users DROP COLUMN last_origin_detail"),
             error=("table users", "last_origin_detail"), backends=BOTH),
    BadInput("a column of another type", "users.created_at",
             lambda s: s.after.append("ALTER TABLE users ALTER COLUMN created_at TYPE text"),
             error=("table users", "column created_at", "text", "expected bigint"), backends=("postgresql",)),
    BadInput("an empty database file", "TELEMETRY_SOURCE_URL", lambda s: setattr(s, "database_bytes", b""),
             error=("table companies", "missing")),
    BadInput("a file that is not a database", "TELEMETRY_SOURCE_URL",
             lambda s: setattr(s, "database_bytes", b"companies,teams\nnot,sqlite\n" * 200),
             error=("source database", "not a database")),
    # --- the configuration file
    BadInput("an empty file", "configuration file", lambda s: setattr(s, "config_bytes", b""),
             error=("codestream.json", "invalid JSON", "line 1")),
    BadInput("not JSON", "configuration file",
             lambda s: setattr(s, "config_bytes", b'{"apiServer": {"installationId": "inst-1",}}'),
             error=("codestream.json", "invalid JSON", "line 1")),
    BadInput("a JSON array", "configuration file", lambda s: setattr(s, "config_bytes", b"[]"),
             error=("codestream.json", "must be a JSON object")),
    BadInput("invalid UTF-8", "configuration file",
             lambda s: setattr(s, "config_bytes", b'{"apiServer": {"installationId": "inst-\xe9"}}'),
             error=("codestream.json", "cannot be read")),
    BadInput("a missing key", "apiServer.installationId", _config("apiServer.installationId", _ABSENT),
             error=("codestream.json", "apiServer.installationId", "missing")),
    BadInput("a number for a string", "apiServer.installationId", _config("apiServer.installationId", 42),
             error=("codestream.json", "apiServer.installationId", "must be a string")),
    BadInput("a string for a boolean", "apiServer.disablePhoneHome", _config("apiServer.disablePhoneHome", "yes"),
             error=("codestream.json", "apiServer.disablePhoneHome", "must be a boolean")),
    BadInput("a number for a boolean", "email.suppressEmails", _config("email.suppressEmails", 0),
             error=("codestream.json", "email.suppressEmails", "must be a boolean")),
    BadInput("null for a boolean", "slack.interactiveComponentsEnabled",
             _config("slack.interactiveComponentsEnabled", None),
             error=("codestream.json", "slack.interactiveComponentsEnabled", "null")),
    BadInput("an array for a string", "onprem.installationVersion", _config("onprem.installationVersion", ["14"]),
             error=("codestream.json", "onprem.installationVersion", "must be a string")),
    BadInput("a list for a section", "apiServer", lambda s: s.config.update(apiServer=["inst-1"]),
             error=("codestream.json", "apiServer", "must be an object")),
    BadInput("a number for the key", "universalSecrets.telemetry", _config("universalSecrets.telemetry", 12345),
             error=("codestream.json", "universalSecrets.telemetry", "must be a string"), secret_free=("12345",)),
    BadInput("a missing key", "universalSecrets.telemetry", _config("universalSecrets.telemetry", _ABSENT),
             error=("universalSecrets.telemetry", "missing")),
    BadInput("a key with a line break", "universalSecrets.telemetry",
             _config("universalSecrets.telemetry", KEY + "\nX-Injected: 1"),
             error=("universalSecrets.telemetry", "cannot be sent as a header")),
    BadInput("a number for a URL", "apiServer.phoneHomeUrl", _config("apiServer.phoneHomeUrl", 8080),
             error=("codestream.json", "apiServer.phoneHomeUrl", "must be a string")),
    BadInput("not an http(s) URL", "apiServer.phoneHomeUrl", _config("apiServer.phoneHomeUrl", "ftp://127.0.0.1/"),
             error=("apiServer.phoneHomeUrl", "http://", "https://")),
    BadInput("plain http to another machine", "apiServer.phoneHomeUrl",
             _config("apiServer.phoneHomeUrl", "http://192.0.2.10:8080"),
             error=("apiServer.phoneHomeUrl", "plain http", ALLOW_PLAIN_HTTP_ENV)),
    BadInput("a path separator in the id, offline", "apiServer.installationId",
             lambda s: s.config["apiServer"].update(installationId="../escape", phoneHomeUrl=""),
             error=("apiServer.installationId", "path separator")),
    # --- settings in the environment
    BadInput("an unsupported database URL", SOURCE_URL_ENV,
             lambda s: s.env.update({SOURCE_URL_ENV: "mysql://root@127.0.0.1/codestream"}),
             error=(SOURCE_URL_ENV, "mysql")),
    BadInput("a relative SQLite path", SOURCE_URL_ENV,
             lambda s: s.env.update({SOURCE_URL_ENV: "sqlite://codestream.db"}),
             error=(SOURCE_URL_ENV, "absolute")),
    BadInput("a date that does not exist", "TELEMETRY_START_DATE",
             lambda s: s.env.update({"TELEMETRY_START_DATE": "2020-13-01"}),
             error=("TELEMETRY_START_DATE", "2020-13-01")),
    BadInput("a word for a flag", ALLOW_PLAIN_HTTP_ENV, lambda s: s.env.update({ALLOW_PLAIN_HTTP_ENV: "yes"}),
             error=(ALLOW_PLAIN_HTTP_ENV, "must be 1")),
    BadInput("not a URL", PHONE_HOME_URL_ENV, lambda s: s.env.update({PHONE_HOME_URL_ENV: "collector.example"}),
             error=("apiServer.phoneHomeUrl", PHONE_HOME_URL_ENV)),
)


# ---------------------------------------------------------------------------------------------
# Running a case
# ---------------------------------------------------------------------------------------------

@dataclass
class BadInputResult:
    case: BadInput
    backend: str
    error: str | None  # the one line, when the night was refused
    requests: int  # requests the collector received
    problems: list[str]  # how the answer differs from the case's expectation; empty: answered
    seconds: float

    @property
    def answered(self) -> bool:
        return not self.problems


def run_bad_input(case: BadInput, backend: str, workdir: Path, postgres_url: str | None = None) -> BadInputResult:
    """Break the installation as ``case`` says, run its night, and judge the answer."""
    started = time.monotonic()
    setup = Setup(backend)
    case.change(setup)
    workdir.mkdir(parents=True, exist_ok=True)
    error = None
    problems: list[str] = []
    with LoopbackCollector() as collector, source_database(setup, workdir, postgres_url) as source_url:
        env = {
            SOURCE_URL_ENV: source_url,
            CONFIG_ENV: str(write_config(setup, workdir / "codestream.json", collector.url)),
            **setup.env,
        }
        try:
            send_night(env, NIGHT, workdir / "outbox")
        except TelemetryError as raised:
            error = str(raised)
        received = [json.loads(r.body) for r in collector.requests]
    if case.error:
        if error is None:
            problems.append("no error: the night was accepted")
        else:
            problems += [f"the error does not name {f!r}" for f in case.error if f not in error]
            problems += _expect("\n" not in error and error.strip() == error, "the error is not one line")
            problems += [f"the error quotes {s!r}" for s in (KEY, *case.secret_free) if s in error]
        problems += _expect(not received, f"{len(received)} requests were sent")
    else:
        if error is not None:
            problems.append(f"refused: {error}")
        elif len(received) != 1:
            problems.append(f"{len(received)} requests were sent, expected 1")
        else:
            problems += case.payload(received[0][0])
    return BadInputResult(case, backend, error, len(received), problems, time.monotonic() - started)


def send_night(env: Mapping[str, str], night: dt.date, outbox_dir: Path):
    """One night made and sent the way the pipeline does it, its settings taken from ``env``."""
    with environment(env):
        first_night()  # TELEMETRY_START_DATE, checked as the partitions check it
        config = CodeStreamConfigResource(path=env.get(CONFIG_ENV), phone_home_url=env.get(PHONE_HOME_URL_ENV)).load()
        database = SourceDatabaseResource(url=env.get(SOURCE_URL_ENV)).database()
        payload = encode_payload(summarize_night(database, config, night).payload)
        sender = PhoneHomeResource(outbox_dir=str(outbox_dir), retries=0, read_timeout_seconds=10,
                                   allow_plain_http=env.get(ALLOW_PLAIN_HTTP_ENV))
        return sender.deliver(config, night, payload)


@contextlib.contextmanager
def environment(env: Mapping[str, str], cleared: tuple[str, ...] = SETTING_NAMES) -> Iterator[None]:
    """The pipeline's settings as ``env`` says (the ``cleared`` ones unset), restored afterwards."""
    saved = {name: os.environ.get(name) for name in (*cleared, *env)}
    try:
        for name in cleared:
            os.environ.pop(name, None)
        os.environ.update(env)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_config(setup: Setup, path: Path, collector_url: str) -> Path:
    if setup.config_bytes is not None:
        path.write_bytes(setup.config_bytes)
    else:
        path.write_text(json.dumps(setup.config).replace("{collector}", collector_url))
    return path


def _ddl(setup: Setup) -> list[str]:
    statements = []
    for statement in create_table_statements():
        for table in setup.no_primary_key:
            if statement.startswith(f"CREATE TABLE {table} ("):
                statement = statement.replace(f",\n  PRIMARY KEY ({', '.join(PRIMARY_KEYS[table])})", "")
        for spec in setup.nullable:
            table, column = spec.split(".")
            if statement.startswith(f"CREATE TABLE {table} ("):
                sql_type = next(c.sql_type.upper() for c in SOURCE_TABLES[table] if c.name == column)
                statement = statement.replace(f"\n  {column} {sql_type} NOT NULL", f"\n  {column} {sql_type}")
        statements.append(statement)
    return statements


def _inserts(setup: Setup, marker: str) -> list[tuple[str, list[tuple]]]:
    work = []
    for table, rows in setup.rows.items():
        if rows:
            names = [c.name for c in SOURCE_TABLES[table]]
            sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join([marker] * len(names))})"
            work.append((sql, [tuple(row[n] for n in names) for row in rows]))
    return work


@contextlib.contextmanager
def source_database(setup: Setup, workdir: Path, postgres_url: str | None) -> Iterator[str]:
    """The case's database, written for real; yields its source URL."""
    if setup.backend == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "codestream.db"
        path.unlink(missing_ok=True)
        if setup.database_bytes is not None:
            path.write_bytes(setup.database_bytes)
        else:
            db = sqlite3.connect(path, isolation_level=None)
            try:
                db.execute("PRAGMA synchronous = OFF")  # a throwaway file: no need to wait for the disk
                db.execute("BEGIN")
                for statement in _ddl(setup):
                    db.execute(statement)
                for sql, rows in _inserts(setup, "?"):
                    db.executemany(sql, rows)
                for statement in setup.after:
                    db.execute(statement)
                db.execute("COMMIT")
            finally:
                db.close()
        yield f"sqlite://{path.resolve()}"
        return
    if not postgres_url:
        raise TelemetryError("this case runs on PostgreSQL: give a PostgreSQL URL")
    import psycopg2

    schema = f"bad_{uuid.uuid4().hex[:12]}"
    db = psycopg2.connect(postgres_url)
    try:
        with db, db.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")  # a throwaway schema: no need to wait for the disk
            cursor.execute(f"CREATE SCHEMA {schema}")
            cursor.execute(f"SET search_path TO {schema}")
            for statement in _ddl(setup):
                cursor.execute(statement)
            for sql, rows in _inserts(setup, "%s"):
                cursor.executemany(sql, rows)
            for statement in setup.after:
                cursor.execute(statement)
        separator = "&" if "?" in postgres_url else "?"
        yield f"{postgres_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with db, db.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")
            cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        db.close()


def catalog_runs(backends: tuple[str, ...] = BOTH) -> list[tuple[BadInput, str]]:
    """Every (case, backend) pair the catalog holds, for the backends at hand."""
    return [(case, backend) for case in BAD_INPUTS for backend in case.backends if backend in backends]
