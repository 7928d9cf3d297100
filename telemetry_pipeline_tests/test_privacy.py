"""Privacy properties (telemetry_pipeline/reliability/privacy.py) over random installations, with
hypothesis: no withheld email in the bytes that leave, exactly the documented keys and types, code
point order, and the payload an oracle written from the contract expects. And the summary's
metadata explains redaction per company with counts, never addresses."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import dagster as dg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry_pipeline.assets.extract import EXTRACT_ASSETS
from telemetry_pipeline.assets.summary import night_summary
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.reliability.bad_input import NIGHT, START, Setup, source_database, write_config
from telemetry_pipeline.reliability.privacy import (
    PROPERTIES,
    check_installation,
    emails_allowed,
    expected_payload,
    leak_problems,
    order_problems,
    random_installation,
    shape_problems,
    withheld_emails,
)
from telemetry_pipeline.resources import CodeStreamConfigResource, SourceDatabaseResource
from telemetry_pipeline.rules.redaction import UNKNOWN_PLAN, redaction_by_company


class DrawPicker:
    """The installation's choices drawn by hypothesis, so a failure shrinks to a small installation."""

    def __init__(self, data):
        self._data = data

    def choice(self, options):
        return self._data.draw(st.sampled_from(options))

    def integer(self, low, high):
        return self._data.draw(st.integers(low, high))


def _holds(rows, backend="sqlite", postgres_url=None):
    with tempfile.TemporaryDirectory() as workdir:
        result = check_installation(rows, Path(workdir), backend, postgres_url)
    assert {name: problems for name, problems in result.problems.items() if problems} == {}
    return result


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_installations_on_sqlite(data):
    _holds(random_installation(DrawPicker(data)))


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_installations_on_postgresql(data, postgres_database):
    _holds(random_installation(DrawPicker(data)), "postgresql", postgres_database)


# --- the checks themselves catch what they are meant to catch (else the properties prove nothing)


def _two_users() -> dict:
    setup = Setup("sqlite")
    return setup.rows  # u-free (FREEPLAN, email goes) and u-paid (BUSINESS, withheld)


def test_the_leak_check_finds_a_withheld_email_in_any_form():
    rows = _two_users()
    assert withheld_emails(rows) == ["paid@example.com"]
    assert leak_problems(b'[{"users":[{"email":"free@example.com"}]}]', rows) == []
    assert leak_problems(b'X-Note: paid@example.com\r\n\r\n[]', rows) != []
    rows["users"][1]["email"] = 'pa"id@example.com'
    assert leak_problems(b'{"x":"pa\\"id@example.com"}', rows) != []  # as JSON escapes it


def test_the_shape_and_order_checks_find_a_stray_key_a_wrong_type_and_disorder():
    payload = expected_payload(_two_users(), Setup("sqlite").config)
    assert shape_problems(payload) == [] and order_problems(payload) == []
    assert shape_problems({**payload, "extra": 1}) != []
    stray = json.loads(json.dumps(payload))
    stray["users"][0]["isAdmin"] = "yes"
    assert shape_problems(stray) != []
    stray = json.loads(json.dumps(payload))
    stray["companies"][0]["createdAt"] = "2024-02-29 00:00:00"
    assert shape_problems(stray) != []
    assert order_problems({**payload, "users": payload["users"][::-1]}) != []


def test_the_oracle_reads_the_contract_as_written():
    rows = _two_users()
    rows["posts"].append({"id": "p-edge", "team_id": "t-free", "creator_id": "u-free", "created_at": START - 1,
                          "codemark_id": None, "review_id": None})
    users = {u["id"]: u for u in expected_payload(rows, Setup("sqlite").config)["users"]}
    assert users["u-free"]["email"] == "free@example.com" and "email" not in users["u-paid"]
    assert (users["u-free"]["replies"], users["u-free"]["codemarks"]) == (1, 1)  # the post before the night is not


def test_a_single_installation_is_checked_on_every_property(tmp_path):
    rows = _two_users()
    result = _holds(rows)
    assert set(result.problems) == set(PROPERTIES)
    assert (result.emails_withheld, result.emails_sent) == (1, 1)


# --- redaction explained per company in the summary's metadata


def redaction_installation() -> dict:
    rows = Setup("sqlite").rows
    rows["teams"].append({**rows["teams"][0], "id": "t-ghost", "company_id": "c-nowhere"})
    rows["users"].append({**rows["users"][0], "id": "u-both", "email": "both@example.com"})
    rows["users"].append({**rows["users"][0], "id": "u-ghost", "email": "ghost@example.com"})
    rows["users"].append({**rows["users"][0], "id": "u-alone", "email": "alone@example.com"})
    rows["team_members"] += [
        {"team_id": "t-free", "user_id": "u-both", "is_admin": False},
        {"team_id": "t-paid", "user_id": "u-both", "is_admin": False},
        {"team_id": "t-ghost", "user_id": "u-ghost", "is_admin": False},
    ]
    return rows


def test_redaction_by_company_counts_users_and_emails_per_company():
    rows = redaction_installation()
    team_ids = {}
    for m in rows["team_members"]:
        team_ids.setdefault(m["user_id"], []).append(m["team_id"])
    users = [{**u, "team_ids": team_ids.get(u["id"], [])} for u in rows["users"]]
    assert redaction_by_company(rows["companies"], rows["teams"], users) == [
        {"company": "c-free", "plan": "FREEPLAN", "free": True, "users": 2, "emails_included": 1, "emails_withheld": 1},
        {"company": "c-nowhere", "plan": UNKNOWN_PLAN, "free": False, "users": 1, "emails_included": 0,
         "emails_withheld": 1},
        {"company": "c-paid", "plan": "BUSINESS", "free": False, "users": 2, "emails_included": 0,
         "emails_withheld": 2},
    ]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_redaction_by_company_agrees_with_the_oracle(data):
    rows = random_installation(DrawPicker(data))
    team_ids = {}
    for m in rows["team_members"]:
        team_ids.setdefault(m["user_id"], []).append(m["team_id"])
    users = [{**u, "team_ids": team_ids.get(u["id"], [])} for u in rows["users"]]
    allowed = emails_allowed(rows)
    company_of = {t["id"]: t["company_id"] for t in rows["teams"]}
    for row in redaction_by_company(rows["companies"], rows["teams"], users):
        members = [u for u in users if row["company"] in {company_of.get(t) for t in u["team_ids"]}]
        assert row["users"] == len(members)
        assert row["emails_included"] == sum(1 for u in members if allowed[u["id"]])
        assert row["emails_included"] + row["emails_withheld"] == row["users"]


def test_the_summary_metadata_explains_redaction_per_company_without_an_address(tmp_path):
    setup = Setup("sqlite", rows=redaction_installation())
    with source_database(setup, tmp_path / "source", None) as source_url, dg.DagsterInstance.ephemeral() as instance:
        config = write_config(setup, tmp_path / "codestream.json", "http://127.0.0.1:9")
        result = dg.materialize(
            [*EXTRACT_ASSETS, night_summary], partition_key=NIGHT.isoformat(), instance=instance,
            resources={
                "source_database": SourceDatabaseResource(url=source_url),
                "codestream_config": CodeStreamConfigResource(path=str(config)),
                "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
            },
        )
        logs = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    [materialization] = result.asset_materializations_for_node("night_summary")
    table = materialization.metadata["redaction_by_company"]
    rows = [record.data for record in table.records]
    assert [(r["company"], r["plan"], r["users"], r["emails_included"], r["emails_withheld"]) for r in rows] == [
        ("c-free", "FREEPLAN", 2, 1, 1), ("c-nowhere", UNKNOWN_PLAN, 1, 0, 1), ("c-paid", "BUSINESS", 2, 0, 2),
    ]
    assert any("redaction_by_company" in text for text in logs)  # the scan below sees the metadata
    for user in setup.rows["users"]:
        for text in logs:
            assert user["email"] not in text, user["email"]
