"""The column-wise encoder against the reference: byte for byte what
``encode_payload(build_night_summary(...).payload)`` gives, for any rows, night after night."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.rules.payload import InstallationFacts, build_night_summary, encode_payload
from telemetry_pipeline.rules import payload_columns
from telemetry_pipeline.rules.payload_columns import NightEncoder, encode_night
from telemetry_pipeline.source.extract import (
    CODE_REVIEWS_SCHEMA,
    COMPANIES_SCHEMA,
    TEAMS_SCHEMA,
    USER_ACTIVITY_SCHEMA,
    USERS_SCHEMA,
)

NIGHT = dt.date(2026, 11, 26)
START = 1_795_651_200_000
END = START + 86_400_000
FACTS = InstallationFacts("inst-\"1\"", "14.2.0 ☃", True, False, disable_phone_home=True)

# Ids and text that exercise sorting by code point and every JSON escape.
TEXT = st.sampled_from(["", "a", "B", "Zeta", "alpha", "é", "É", "ä", "☃", "𝄞", 'q"uote', "back\\slash",
                        "new\nline", "tab\t", "\x00nul", "\x1f", "\u2028", "/slash", "a b"])
IDS = st.text(alphabet=st.sampled_from(list("aAbBzZ0_-é☃\"\\")), min_size=1, max_size=4)
TIMES = st.one_of(st.none(), st.integers(-62_135_596_800_000, 253_402_300_799_999),
                  st.integers(START - 86_400_000, END + 86_400_000))
PLANS = st.sampled_from([None, "FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", "BUSINESS", "freeplan", ""])


@st.composite
def nights_rows(draw):
    company_ids = draw(st.lists(IDS, max_size=5, unique=True))
    team_ids = draw(st.lists(IDS, max_size=6, unique=True))
    user_ids = draw(st.lists(IDS, max_size=12, unique=True))
    known_companies = company_ids + ["c-missing"]
    companies = [{"id": c, "name": draw(TEXT), "plan": draw(PLANS), "deactivated": draw(st.booleans()),
                  "created_at": draw(st.integers(START - 10**9, END + 10)), "creator_id": draw(st.none() | IDS)}
                 for c in company_ids]
    teams = [{"id": t, "company_id": draw(st.sampled_from(known_companies)), "name": draw(TEXT),
              "deactivated": draw(st.booleans()), "created_at": draw(st.integers(START - 10**9, END + 10)),
              "creator_id": draw(st.none() | IDS), "live_view": draw(st.none() | TEXT),
              "review_approval": draw(st.none() | TEXT), "review_assignment": draw(st.none() | TEXT)}
             for t in team_ids]
    users = [{"id": u, "email": draw(st.none() | TEXT), "is_registered": draw(st.booleans()),
              "deactivated": draw(st.booleans()), "created_at": START - 1000, "registered_at": draw(TIMES),
              "join_method": draw(st.none() | TEXT), "last_login": draw(TIMES), "last_origin": draw(st.none() | TEXT),
              "last_origin_detail": draw(st.none() | TEXT), "is_admin": draw(st.booleans()),
              "team_ids": sorted(draw(st.lists(st.sampled_from(team_ids + ["t-missing"]), max_size=3, unique=True))),
              "providers": sorted(draw(st.lists(TEXT, max_size=3, unique=True)))}
             for u in user_ids]
    activity = [{"user_id": u, "codemarks": draw(st.integers(0, 9)), "codemarks_in_reviews": draw(st.integers(0, 9)),
                 "reviews": draw(st.integers(0, 9)), "replies": draw(st.integers(0, 9))}
                for u in draw(st.lists(st.sampled_from(user_ids + ["ghost"]), max_size=5, unique=True))]
    reviews = [{"review_id": r, "team_id": draw(IDS), "created_at": draw(st.integers(START - 10**9, END - 1)),
                "approved_at": draw(st.none() | st.integers(START, END - 1))}
               for r in draw(st.lists(IDS, max_size=4, unique=True))]
    return companies, teams, users, activity, reviews


def tables(companies, teams, users, activity, reviews, night=NIGHT):
    tag = {"night": night.isoformat()}
    return [pa.Table.from_pylist([{**tag, **row} for row in rows], schema=schema) for rows, schema in (
        (companies, COMPANIES_SCHEMA), (teams, TEAMS_SCHEMA), (users, USERS_SCHEMA),
        (activity, USER_ACTIVITY_SCHEMA), (reviews, CODE_REVIEWS_SCHEMA))]


def reference(night, companies, teams, users, activity, reviews):
    return build_night_summary(night, FACTS, companies, teams, users, activity, reviews)


def assert_same(encoded, summary):
    assert bytes(encoded.payload) == encode_payload(summary.payload)
    assert encoded.email_reasons == summary.email_reasons
    assert encoded.send == summary.send
    assert (encoded.companies, encoded.teams, encoded.users, encoded.code_reviews) == tuple(
        len(summary.payload[k]) for k in ("companies", "teams", "users", "codeReviews"))
    assert encoded.active_users == sum(
        1 for u in summary.payload["users"] if u["codemarks"] + u["codemarksInReviews"] + u["reviews"] + u["replies"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights_rows())
def test_the_column_encoder_writes_the_reference_bytes(rows):
    assert_same(encode_night(NIGHT, FACTS, *tables(*rows)), reference(NIGHT, *rows))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights_rows(), st.data())
def test_night_after_night_reused_users_are_still_the_reference_bytes(rows, data):
    """The second night reuses the first night's users: unchanged, with new ones after them, with a
    changed row, or with another plan for a company (whose users' emails then go or stop going)."""
    companies, teams, users, activity, reviews = rows
    encoder = NightEncoder(FACTS)
    assert_same(encoder.encode(NIGHT, *tables(*rows)), reference(NIGHT, *rows))
    later = NIGHT + dt.timedelta(days=1)
    more = [{**u, "id": u["id"] + "+"} for u in data.draw(st.lists(st.sampled_from(users), max_size=3))] if users else []
    next_users = [dict(u) for u in users] + more
    if next_users and data.draw(st.booleans()):
        changed = data.draw(st.integers(0, len(next_users) - 1))
        next_users[changed]["last_origin"] = data.draw(TEXT)
    next_activity = data.draw(st.lists(st.sampled_from([dict(a) for a in activity]), max_size=3,
                                       unique_by=lambda a: a["user_id"])) if activity else []
    if next_users and data.draw(st.booleans()):  # a user leaves a team, or joins one
        changed = data.draw(st.integers(0, len(next_users) - 1))
        next_users[changed]["team_ids"] = sorted(set(next_users[changed]["team_ids"]) ^ {"t-missing"})
    if next_users and data.draw(st.booleans()):  # a user is gone
        del next_users[data.draw(st.integers(0, len(next_users) - 1))]
    next_companies = [dict(c) for c in companies]
    if next_companies and data.draw(st.booleans()):
        next_companies[data.draw(st.integers(0, len(next_companies) - 1))]["plan"] = data.draw(PLANS)
    next_teams = [dict(t) for t in teams]
    if next_teams and data.draw(st.booleans()):  # a team moves to another company
        next_teams[data.draw(st.integers(0, len(next_teams) - 1))]["company_id"] = data.draw(
            st.sampled_from([c["id"] for c in companies] + ["c-missing"]))
    next_rows = (next_companies, next_teams, next_users, next_activity, reviews)
    assert_same(encoder.encode(later, *tables(*next_rows, night=later)), reference(later, *next_rows))
    third = later + dt.timedelta(days=1)  # and a night that changes nothing reuses it all again
    assert_same(encoder.encode(third, *tables(*next_rows, night=third)), reference(third, *next_rows))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(nights_rows())
def test_users_encoded_in_two_halves_are_still_the_reference_bytes(monkeypatch, rows):
    monkeypatch.setattr(payload_columns, "_HALVES_FROM", 1)  # as a large night's first 100,000 users are
    assert_same(encode_night(NIGHT, FACTS, *tables(*rows)), reference(NIGHT, *rows))


def test_a_repeated_company_id_is_resolved_as_the_reference_does():
    companies = [{"id": "c", "name": "first", "plan": "BUSINESS", "deactivated": False, "created_at": 0,
                  "creator_id": None},
                 {"id": "c", "name": "second", "plan": "FREEPLAN", "deactivated": False, "created_at": 0,
                  "creator_id": None}]
    teams = [{"id": "t", "company_id": "c", "name": "T", "deactivated": False, "created_at": 0, "creator_id": None,
              "live_view": None, "review_approval": None, "review_assignment": None}]
    users = [{"id": "u", "email": "u@x.io", "is_registered": True, "deactivated": False, "created_at": 0,
              "registered_at": None, "join_method": None, "last_login": None, "last_origin": None,
              "last_origin_detail": None, "is_admin": False, "team_ids": ["t"], "providers": []}]
    rows = (companies, teams, users, [], [])
    encoded = encode_night(NIGHT, FACTS, *tables(*rows))
    assert_same(encoded, reference(NIGHT, *rows))
    assert b'"email":"u@x.io"' in bytes(encoded.payload)  # the last row of "c" (free) wins, as in a dict


@pytest.mark.parametrize("field, value", [("last_login", 253_402_300_800_000), ("registered_at", -(10**18))])
def test_a_time_outside_the_calendar_fails_with_the_reference_message(field, value):
    users = [{"id": "u-big", "email": None, "is_registered": True, "deactivated": False, "created_at": 0,
              "registered_at": None, "join_method": None, "last_login": None, "last_origin": None,
              "last_origin_detail": None, "is_admin": False, "team_ids": [], "providers": [], field: value}]
    rows = ([], [], users, [], [])
    with pytest.raises(TelemetryError) as expected:
        reference(NIGHT, *rows)
    with pytest.raises(TelemetryError) as raised:
        encode_night(NIGHT, FACTS, *tables(*rows))
    assert str(raised.value) == str(expected.value)
    assert "users" in str(raised.value) and field in str(raised.value) and "u-big" in str(raised.value)


def _user(id, **fields):
    return {"id": id, "email": f"{id}@x.io", "is_registered": True, "deactivated": False, "created_at": 0,
            "registered_at": None, "join_method": None, "last_login": None, "last_origin": None,
            "last_origin_detail": None, "is_admin": False, "team_ids": [], "providers": [], **fields}


def test_new_users_slot_in_between_the_users_of_the_night_before():
    encoder = NightEncoder(FACTS)
    first = ([], [], [_user("b"), _user("d")], [], [])
    assert_same(encoder.encode(NIGHT, *tables(*first)), reference(NIGHT, *first))
    later = NIGHT + dt.timedelta(days=1)
    activity = [{"user_id": "b", "codemarks": 1, "codemarks_in_reviews": 0, "reviews": 0, "replies": 2}]
    second = ([], [], [_user("a"), _user("b"), _user("c"), _user("d"), _user("é")], activity, [])
    encoded = encoder.encode(later, *tables(*second, night=later))
    assert_same(encoded, reference(later, *second))
    assert [u["id"] for u in reference(later, *second).payload["users"]] == ["a", "b", "c", "d", "é"]
