"""docs/WHAT_IS_SENT.md: generated from the field registry, and the registry tells the truth."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from telemetry_pipeline import cli
from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.delivery import RetrySettings, post_payload
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.rules import plans
from telemetry_pipeline.rules.payload import (
    CODE_REVIEW_KEYS, COMPANY_KEYS, PAYLOAD_FIELDS, PAYLOAD_KEYS, TEAM_KEYS, TEAM_SETTING_DEFAULTS, USER_KEYS,
    iso_ms,
)
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline.source.schema import SOURCE_TABLES, column
from telemetry_pipeline.whatissent import EMAIL_REASONS, EVENT_TELEMETRY_OFF, PHONE_HOME_OFF, SENT_HEADERS, render_page
from telemetry_pipeline_tests.installation import Installation, at, write_config

REPOSITORY_PAGE = Path(__file__).resolve().parents[1] / "docs" / "WHAT_IS_SENT.md"
NIGHT = "2026-11-26"

# Contract section 5, written out by hand: the registry must derive exactly these.
CONTRACT_KEYS = {
    "payload": ["date", "installationId", "installationVersion", "outboundEmailEnabled",
                "slackInteractiveComponentsEnabled", "integrations", "companies", "teams", "users", "codeReviews"],
    "companies": ["id", "name", "isDeactivated", "createdAt", "creatorId", "plan"],
    "teams": ["id", "name", "companyId", "isDeactivated", "createdAt", "creatorId", "liveView",
              "codeReviewApproval", "codeReviewAssignment"],
    "users": ["id", "email", "isRegistered", "isDeactivated", "isAdmin", "registeredAt", "joinMethod", "lastLogin",
              "lastOrigin", "lastOriginDetail", "codemarks", "codemarksInReviews", "reviews", "replies"],
    "codeReviews": ["teamId", "reviewId", "createdAt", "approvedAt"],
}
ITEMS = {f.key: f.items for f in PAYLOAD_FIELDS if f.items}
# Which source row each entry of a list comes from, and the key that names it.
ENTRY_ROWS = {"companies": ("companies", "id"), "teams": ("teams", "id"), "users": ("users", "id"),
              "codeReviews": ("reviews", "reviewId")}


def _page_tables(text: str) -> dict[str, list[str]]:
    """The keys of each table on the page: "payload" for the first, then one per list."""
    tables, current = {}, "payload"
    for line in text.splitlines():
        if match := re.fullmatch(r"### Each entry of `(\w+)`", line):
            current = match.group(1)
        if match := re.match(r"\| `(\w+)` \|", line):
            tables.setdefault(current, []).append(match.group(1))
    return {name: keys for name, keys in tables.items() if name in CONTRACT_KEYS}


def test_the_page_in_the_repository_is_what_the_code_renders():
    assert REPOSITORY_PAGE.read_text(encoding="utf-8") == render_page(), (
        "docs/WHAT_IS_SENT.md differs from the code: run `telemetry-pipeline docs` and commit the page"
    )


def test_the_key_tuples_derived_from_the_registry_are_the_contracts():
    assert list(PAYLOAD_KEYS) == CONTRACT_KEYS["payload"]
    assert list(COMPANY_KEYS) == CONTRACT_KEYS["companies"]
    assert list(TEAM_KEYS) == CONTRACT_KEYS["teams"]
    assert list(USER_KEYS) == CONTRACT_KEYS["users"]
    assert list(CODE_REVIEW_KEYS) == CONTRACT_KEYS["codeReviews"]


def test_the_page_lists_every_key_of_the_contract_in_order():
    assert _page_tables(render_page()) == CONTRACT_KEYS


def test_docs_writes_the_page_and_check_fails_when_page_and_code_disagree(tmp_path, capsys):
    page = tmp_path / "docs" / "WHAT_IS_SENT.md"
    assert cli.main(["docs", "--check", "--output", str(page)]) == 1  # no page yet
    assert cli.main(["docs", "--output", str(page)]) == 0
    assert page.read_text(encoding="utf-8") == render_page()
    assert cli.main(["docs", "--check", "--output", str(page)]) == 0

    page.write_text(render_page().replace("| `lastOriginDetail` |", "| `lastOriginDetails` |"), encoding="utf-8")
    assert cli.main(["docs", "--check", "--output", str(page)]) == 1
    assert "differs from the code" in capsys.readouterr().err


def test_every_source_column_exists_and_types_agree_with_the_schema():
    kinds = {"text": "string", "boolean": "boolean", "bigint": ("time", "integer")}
    for parent, fields in [("payload", PAYLOAD_FIELDS), *ITEMS.items()]:
        for field in fields:
            assert bool(field.columns) + bool(field.config_key) <= 1, f"{parent}.{field.key}: one kind of source"
            for name in field.columns:
                table, col = name.split(".")
                assert table in SOURCE_TABLES and column_exists(table, col), f"{parent}.{field.key}: {name}"
            if len(field.columns) != 1 or parent == "payload":
                continue
            table, col = field.columns[0].split(".")
            source = column(table, col)
            assert field.type.split(" or ")[0] in kinds[source.sql_type], f"{parent}.{field.key}"
            defaulted = table == "teams" and col in TEAM_SETTING_DEFAULTS
            assert field.type.endswith(" or null") == (source.nullable and not defaulted), f"{parent}.{field.key}"


def column_exists(table: str, name: str) -> bool:
    return any(c.name == name for c in SOURCE_TABLES[table])


def test_every_email_reason_of_the_redaction_rule_is_on_the_page():
    reasons = {value for name, value in vars(plans).items()
               if name.startswith(("EMAIL_", "WITHHELD_")) and isinstance(value, str)}
    assert reasons == set(EMAIL_REASONS)
    page = render_page()
    assert all(f"- {reason}\n" in page for reason in reasons)
    assert all(f"`{plan}`" in page for plan in plans.FREE_PLANS)


@pytest.fixture
def installation(tmp_path):
    """Every column the payload copies holds a distinct value, on a real SQLite file."""
    url = (
        Installation()
        .company("c-free", plan=None, name="Free Co", created_at=at(NIGHT, -50), creator_id="u-1")
        .company("c-paid", plan="BUSINESS", name="Paid Co", deactivated=True, created_at=at(NIGHT, -40))
        .team("t-1", "c-free", name="One", created_at=at(NIGHT, -30), creator_id="u-1", live_view="off",
              review_approval="anyone", review_assignment="random")
        .team("t-2", "c-paid", name="Two", deactivated=True, created_at=at(NIGHT, -20))
        .user("u-1", email="one@example.com", teams=["t-1"], admin_of=["t-1"], created_at=at(NIGHT, -10),
              registered_at=at(NIGHT, -9), join_method="Web Signup", last_login=at(NIGHT, 3),
              last_origin="VS Code", last_origin_detail="1.95")
        .user("u-2", email="two@example.com", teams=["t-2"], is_registered=False, deactivated=True,
              created_at=at(NIGHT, -8))
        .token("u-1", "github")
        .review("r-1", "u-1", at(NIGHT, 1), team_id="t-1", approved_at=at(NIGHT, 2))
        .review("r-2", "u-2", at(NIGHT, -30), team_id="t-2", approved_at=at(NIGHT, 5))
        .write_sqlite(tmp_path / "codestream.db")
    )
    return url


def _config(tmp_path: Path, name: str = "config.json", **sections) -> Path:
    path = write_config(tmp_path / name)
    document = json.loads(path.read_text())
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    path.write_text(json.dumps(document))
    return path


def _summary(url: str, config_path: Path):
    return summarize_night(SourceDatabase(url), load_installation_config(config_path), dt.date.fromisoformat(NIGHT))


def _as_sent(value, field, table, col):
    if field.type.startswith("time"):
        return iso_ms(value, table=table, column=col, row_id=None)
    if value is None and table == "teams" and col in TEAM_SETTING_DEFAULTS:
        return TEAM_SETTING_DEFAULTS[col]
    return value


def test_each_field_copied_from_one_column_holds_that_columns_value(installation, tmp_path):
    payload = _summary(installation, _config(tmp_path)).payload
    compared = 0
    for list_key, fields in ITEMS.items():
        table, id_key = ENTRY_ROWS[list_key]
        names = [c.name for c in SOURCE_TABLES[table]]
        rows = {row[0]: dict(zip(names, row)) for row in _rows_of(installation, table)}
        assert payload[list_key], list_key
        for entry in payload[list_key]:
            row = rows[entry[id_key]]
            for field in fields:
                if len(field.columns) != 1 or field.key not in entry:
                    continue
                source_table, col = field.columns[0].split(".")
                if source_table != table:
                    continue
                assert entry[field.key] == _as_sent(row[col], field, table, col), f"{list_key}.{field.key}"
                compared += 1
    assert compared >= 30  # every entry of every list was compared


def _rows_of(url: str, table: str) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(url.removeprefix("sqlite://")) as db:
        rows = db.execute(f"SELECT * FROM {table}").fetchall()
    db.close()
    return rows


def test_each_field_read_from_the_configuration_follows_its_key(installation, tmp_path):
    """Changing only the key the registry names changes only that field."""
    alternatives = {"apiServer.installationId": ("inst-a", "inst-b"), "onprem.installationVersion": ("1.0", "2.0"),
                    "email.suppressEmails": (True, False), "slack.interactiveComponentsEnabled": (True, False)}
    config_fields = [f for f in PAYLOAD_FIELDS if f.config_key]
    assert {f.config_key for f in config_fields} == set(alternatives)
    for field in config_fields:
        section, key = field.config_key.split(".")
        payloads = [_summary(installation, _config(tmp_path, f"{key}-{i}.json", **{section: {key: value}})).payload
                    for i, value in enumerate(alternatives[field.config_key])]
        changed = [k for k in PAYLOAD_KEYS if payloads[0][k] != payloads[1][k]]
        assert changed == [field.key], field.config_key


def test_turning_the_phone_home_off_as_the_page_says(installation, tmp_path):
    page = render_page()
    assert json.dumps(PHONE_HOME_OFF, indent=2) in page and json.dumps(EVENT_TELEMETRY_OFF, indent=2) in page
    plain = _summary(installation, _config(tmp_path))
    assert plain.send.send

    # The installation has a paid company: the opt-out is honoured.
    opted_out = _summary(installation, _config(tmp_path, "off.json", **PHONE_HOME_OFF))
    assert not opted_out.send.send and "opted out" in opted_out.send.reason

    # Event telemetry's switch is another one: the phone home neither reads it nor stops.
    events_off = _summary(installation, _config(tmp_path, "events.json", **EVENT_TELEMETRY_OFF))
    assert events_off.send.send and events_off.payload == plain.payload


def test_a_free_installation_cannot_turn_the_phone_home_off(tmp_path):
    url = Installation().company("c-1", plan="FREEPLAN").team("t-1", "c-1").user("u-1", teams=["t-1"]) \
        .write_sqlite(tmp_path / "free.db")
    summary = _summary(url, _config(tmp_path, "off.json", **PHONE_HOME_OFF))
    assert summary.send.send and "honoured only when a company is on a paid plan" in summary.send.reason


def test_the_headers_on_the_page_are_the_headers_sent(collector):
    post_payload(collector.url, "k3y", "inst-1", NIGHT, b"{}", RetrySettings(retries=0))
    sent = {name.lower() for name in collector.requests[0]["headers"]}
    transport = {"host", "user-agent", "accept-encoding", "accept", "connection", "content-length"}
    assert sent - transport == {name.lower() for name in SENT_HEADERS}
