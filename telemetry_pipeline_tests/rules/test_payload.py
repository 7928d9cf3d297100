"""The payload of night D (contract section 5), with expected payloads written out by hand."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.rules.payload import (
    InstallationFacts,
    build_night_summary,
    encode_payload,
    iso_ms,
    payload_key_problems,
)

NIGHT = dt.date(2026, 11, 26)
START = 1_795_651_200_000  # 2026-11-26T00:00:00.000Z
END = 1_795_737_600_000  # 2026-11-27T00:00:00.000Z
DAY = 86_400_000

FACTS = InstallationFacts(
    installation_id="inst-1",
    installation_version="14.2.0",
    outbound_email_enabled=False,
    slack_interactive_components_enabled=True,
    disable_phone_home=False,
)


def company(id, *, plan="FREEPLAN", name=None, deactivated=False, created_at=0, creator_id=None):
    return {"id": id, "name": name or f"Company {id}", "plan": plan, "deactivated": deactivated,
            "created_at": created_at, "creator_id": creator_id}


def team(id, company_id, *, name=None, deactivated=False, created_at=0, creator_id=None, live_view=None,
         review_approval=None, review_assignment=None):
    return {"id": id, "company_id": company_id, "name": name or f"Team {id}", "deactivated": deactivated,
            "created_at": created_at, "creator_id": creator_id, "live_view": live_view,
            "review_approval": review_approval, "review_assignment": review_assignment}


def user(id, *, email="x@example.com", team_ids=(), is_admin=False, providers=(), is_registered=True,
         deactivated=False, created_at=0, registered_at=None, join_method=None, last_login=None,
         last_origin=None, last_origin_detail=None):
    return {"id": id, "email": email, "is_registered": is_registered, "deactivated": deactivated,
            "created_at": created_at, "registered_at": registered_at, "join_method": join_method,
            "last_login": last_login, "last_origin": last_origin, "last_origin_detail": last_origin_detail,
            "is_admin": is_admin, "team_ids": list(team_ids), "providers": list(providers)}


def build(companies=(), teams=(), users=(), activity=(), code_reviews=(), facts=FACTS, night=NIGHT):
    return build_night_summary(night, facts, list(companies), list(teams), list(users), list(activity),
                               list(code_reviews))


def assert_same_key_order(actual, expected, where="payload"):
    """Equal values and, in every object at every level, the same key order."""
    assert type(actual) is type(expected), where
    if isinstance(expected, dict):
        assert list(actual) == list(expected), where
        for key in expected:
            assert_same_key_order(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same_key_order(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, where


# --- a whole night, written out


def whole_night_inputs():
    companies = [
        company("c-paid", name="Paid Co", plan="BUSINESS", created_at=0, creator_id=None),
        company("c-free", name="Free Co", plan="FREEPLAN", created_at=START - 1000, creator_id="u-a"),
        company("c-null", name="Null Plan Co", plan=None, deactivated=True, created_at=END - 1, creator_id=None),
        company("c-late", name="Late Co", plan="ENTERPRISE", created_at=END, creator_id="u-a"),
    ]
    teams = [
        team("t-paid", "c-paid", name="Paid Team", created_at=0),
        team("t-late", "c-free", name="Late Team", created_at=END),
        team("t-free", "c-free", name="Free Team", created_at=START + 29_730_123, creator_id="u-a"),
        team("t-null", "c-null", name="Null Team", deactivated=True, created_at=END - 1, creator_id="u-b",
             live_view="off", review_approval="anyone", review_assignment="none"),
    ]
    users = [
        user("u-d", email="d@example.com", team_ids=[], providers=["slack", "github"]),
        user("u-b", email="b@example.com", team_ids=["t-free", "t-paid"], providers=["github"],
             is_registered=False),
        user("u-a", email="a@example.com", team_ids=["t-free", "t-null"], is_admin=True,
             providers=["github", "jira"], registered_at=START - DAY, join_method="Created Team",
             last_login=START + 1, last_origin="VS Code", last_origin_detail="VS Code 1.90"),
        user("u-c", email=None, team_ids=["t-free"], deactivated=True),
        user("u-e", email="e@example.com", team_ids=["t-gone"]),
    ]
    activity = [
        {"user_id": "u-a", "codemarks": 2, "codemarks_in_reviews": 1, "reviews": 3, "replies": 4},
        {"user_id": "u-d", "codemarks": 0, "codemarks_in_reviews": 0, "reviews": 0, "replies": 7},
    ]
    code_reviews = [
        {"review_id": "r-2", "team_id": "t-free", "created_at": START + 1000, "approved_at": None},
        {"review_id": "r-1", "team_id": "t-paid", "created_at": START - 5 * DAY, "approved_at": END - 1},
    ]
    return companies, teams, users, activity, code_reviews


EXPECTED_WHOLE_NIGHT = {
    "date": "2026-11-26",
    "installationId": "inst-1",
    "installationVersion": "14.2.0",
    "outboundEmailEnabled": False,
    "slackInteractiveComponentsEnabled": True,
    "integrations": ["github", "jira", "slack"],
    "companies": [
        {"id": "c-free", "name": "Free Co", "isDeactivated": False, "createdAt": "2026-11-25T23:59:59.000Z",
         "creatorId": "u-a", "plan": "FREEPLAN"},
        {"id": "c-null", "name": "Null Plan Co", "isDeactivated": True, "createdAt": "2026-11-26T23:59:59.999Z",
         "creatorId": None, "plan": None},
        {"id": "c-paid", "name": "Paid Co", "isDeactivated": False, "createdAt": "1970-01-01T00:00:00.000Z",
         "creatorId": None, "plan": "BUSINESS"},
    ],
    "teams": [
        {"id": "t-free", "name": "Free Team", "companyId": "c-free", "isDeactivated": False,
         "createdAt": "2026-11-26T08:15:30.123Z", "creatorId": "u-a", "liveView": "on",
         "codeReviewApproval": "user", "codeReviewAssignment": "authorship2"},
        {"id": "t-null", "name": "Null Team", "companyId": "c-null", "isDeactivated": True,
         "createdAt": "2026-11-26T23:59:59.999Z", "creatorId": "u-b", "liveView": "off",
         "codeReviewApproval": "anyone", "codeReviewAssignment": "none"},
        {"id": "t-paid", "name": "Paid Team", "companyId": "c-paid", "isDeactivated": False,
         "createdAt": "1970-01-01T00:00:00.000Z", "creatorId": None, "liveView": "on",
         "codeReviewApproval": "user", "codeReviewAssignment": "authorship2"},
    ],
    "users": [
        {"id": "u-a", "email": "a@example.com", "isRegistered": True, "isDeactivated": False, "isAdmin": True,
         "registeredAt": "2026-11-25T00:00:00.000Z", "joinMethod": "Created Team",
         "lastLogin": "2026-11-26T00:00:00.001Z", "lastOrigin": "VS Code", "lastOriginDetail": "VS Code 1.90",
         "codemarks": 2, "codemarksInReviews": 1, "reviews": 3, "replies": 4},
        {"id": "u-b", "isRegistered": False, "isDeactivated": False, "isAdmin": False, "registeredAt": None,
         "joinMethod": None, "lastLogin": None, "lastOrigin": None, "lastOriginDetail": None,
         "codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 0},
        {"id": "u-c", "email": None, "isRegistered": True, "isDeactivated": True, "isAdmin": False,
         "registeredAt": None, "joinMethod": None, "lastLogin": None, "lastOrigin": None,
         "lastOriginDetail": None, "codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 0},
        {"id": "u-d", "isRegistered": True, "isDeactivated": False, "isAdmin": False, "registeredAt": None,
         "joinMethod": None, "lastLogin": None, "lastOrigin": None, "lastOriginDetail": None,
         "codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 7},
        {"id": "u-e", "isRegistered": True, "isDeactivated": False, "isAdmin": False, "registeredAt": None,
         "joinMethod": None, "lastLogin": None, "lastOrigin": None, "lastOriginDetail": None,
         "codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 0},
    ],
    "codeReviews": [
        {"teamId": "t-paid", "reviewId": "r-1", "createdAt": "2026-11-21T00:00:00.000Z",
         "approvedAt": "2026-11-26T23:59:59.999Z"},
        {"teamId": "t-free", "reviewId": "r-2", "createdAt": "2026-11-26T00:00:01.000Z", "approvedAt": None},
    ],
}


def test_whole_night_payload_equals_the_hand_written_one():
    summary = build(*whole_night_inputs())
    assert summary.payload == EXPECTED_WHOLE_NIGHT


def test_whole_night_payload_key_order_at_every_level():
    summary = build(*whole_night_inputs())
    assert_same_key_order(summary.payload, EXPECTED_WHOLE_NIGHT)


def test_whole_night_top_level_key_order_is_the_contracts():
    payload = build(*whole_night_inputs()).payload
    assert list(payload) == ["date", "installationId", "installationVersion", "outboundEmailEnabled",
                             "slackInteractiveComponentsEnabled", "integrations", "companies", "teams", "users",
                             "codeReviews"]


def test_whole_night_encoded_bytes_keep_the_order():
    encoded = encode_payload(build(*whole_night_inputs()).payload)
    assert encoded.startswith(b'{"date":"2026-11-26","installationId":"inst-1","installationVersion":"14.2.0",'
                              b'"outboundEmailEnabled":false,"slackInteractiveComponentsEnabled":true,'
                              b'"integrations":["github","jira","slack"],"companies":[{"id":"c-free",')
    assert b'{"id":"u-c","email":null,"isRegistered":true,' in encoded
    assert b'{"id":"u-b","isRegistered":false,' in encoded


def test_whole_night_passes_the_key_check():
    assert payload_key_problems(build(*whole_night_inputs()).payload) == []


def test_whole_night_email_reasons_count_included_and_withheld():
    summary = build(*whole_night_inputs())
    assert summary.emails_included == 2  # u-a, u-c
    assert summary.emails_withheld == 3  # u-b paid, u-d orphan, u-e missing team


def test_opt_out_decision_looks_at_every_company_even_those_created_after_the_night():
    facts = InstallationFacts("inst-1", "1", False, False, disable_phone_home=True)
    summary = build(companies=[company("c-free", plan="FREEPLAN"), company("c-late", plan="BUSINESS",
                                                                             created_at=END)], facts=facts)
    assert [c["id"] for c in summary.payload["companies"]] == ["c-free"]
    assert summary.send.send is False


def test_opt_out_on_free_installation_is_sent():
    facts = InstallationFacts("inst-1", "1", False, False, disable_phone_home=True)
    summary = build(companies=[company("c-free", plan="FREEPLAN"), company("c-null", plan=None)], facts=facts)
    assert summary.send.send is True


# --- sorting by Unicode code point


UNSORTED_IDS = ["É", "a", "Z", "B", "_", "ä", "0"]
CODE_POINT_ORDER = ["0", "B", "Z", "_", "a", "É", "ä"]  # U+00C9 < U+00E4


def test_code_point_order_expectation_is_what_python_str_sorting_gives():
    assert sorted(UNSORTED_IDS) == CODE_POINT_ORDER


def test_companies_teams_users_and_reviews_sorted_by_code_point():
    payload = build(
        companies=[company(i) for i in UNSORTED_IDS],
        teams=[team(i, "É") for i in UNSORTED_IDS],
        users=[user(i) for i in UNSORTED_IDS],
        code_reviews=[{"review_id": i, "team_id": "B", "created_at": START, "approved_at": None}
                      for i in UNSORTED_IDS],
    ).payload
    assert [c["id"] for c in payload["companies"]] == CODE_POINT_ORDER
    assert [t["id"] for t in payload["teams"]] == CODE_POINT_ORDER
    assert [u["id"] for u in payload["users"]] == CODE_POINT_ORDER
    assert [r["reviewId"] for r in payload["codeReviews"]] == CODE_POINT_ORDER


def test_integrations_sorted_distinct_by_code_point():
    payload = build(users=[user("u1", providers=["slack", "GitHub", "jira"]),
                           user("u2", providers=["jira", "github", "slack"]),
                           user("u3", providers=[])]).payload
    assert payload["integrations"] == ["GitHub", "github", "jira", "slack"]


def test_no_users_no_integrations():
    payload = build().payload
    assert payload["integrations"] == []
    assert payload["companies"] == [] and payload["teams"] == [] and payload["users"] == []
    assert payload["codeReviews"] == []


# --- the night's end


def test_company_created_exactly_at_the_nights_end_is_excluded_one_ms_before_included():
    payload = build(companies=[company("at-end", created_at=END), company("before-end", created_at=END - 1),
                               company("at-start", created_at=START)]).payload
    assert [c["id"] for c in payload["companies"]] == ["at-start", "before-end"]
    assert payload["companies"][1]["createdAt"] == "2026-11-26T23:59:59.999Z"
    assert payload["companies"][0]["createdAt"] == "2026-11-26T00:00:00.000Z"


def test_team_created_exactly_at_the_nights_end_is_excluded_one_ms_before_included():
    payload = build(teams=[team("at-end", "c", created_at=END), team("before-end", "c", created_at=END - 1)]).payload
    assert [t["id"] for t in payload["teams"]] == ["before-end"]
    assert payload["teams"][0]["createdAt"] == "2026-11-26T23:59:59.999Z"


def test_the_night_end_follows_the_night():
    # The same company is inside night 2026-11-27 but not 2026-11-26.
    rows = [company("c", created_at=END)]
    assert build(companies=rows).payload["companies"] == []
    later = build(companies=rows, night=dt.date(2026, 11, 27)).payload
    assert later["date"] == "2026-11-27"
    assert [c["id"] for c in later["companies"]] == ["c"]


# --- team settings


def test_null_team_settings_become_the_defaults():
    entry = build(teams=[team("t", "c")]).payload["teams"][0]
    assert (entry["liveView"], entry["codeReviewApproval"], entry["codeReviewAssignment"]) == (
        "on", "user", "authorship2")


def test_set_team_settings_are_sent_as_stored_including_empty_string():
    entry = build(teams=[team("t", "c", live_view="off", review_approval="", review_assignment="random")]
                  ).payload["teams"][0]
    assert (entry["liveView"], entry["codeReviewApproval"], entry["codeReviewAssignment"]) == (
        "off", "", "random")


def test_each_setting_defaults_independently():
    entry = build(teams=[team("t", "c", review_approval="anyone")]).payload["teams"][0]
    assert (entry["liveView"], entry["codeReviewApproval"], entry["codeReviewAssignment"]) == (
        "on", "anyone", "authorship2")


# --- plan as stored


@pytest.mark.parametrize("plan", [None, "FREEPLAN", "freeplan", "", "SOMETHING ELSE"])
def test_plan_is_sent_as_stored(plan):
    assert build(companies=[company("c", plan=plan)]).payload["companies"][0]["plan"] == plan


# --- email present or absent


def emails_of(companies, teams, users):
    return {u["id"]: u for u in build(companies=companies, teams=teams, users=users).payload["users"]}


def test_email_present_for_all_free_companies_and_absent_otherwise():
    users = emails_of(
        [company("cf", plan="FREEPLAN"), company("ct", plan="30DAYTRIAL"), company("cn", plan=None),
         company("cp", plan="ENTERPRISE")],
        [team("tf", "cf"), team("tt", "ct"), team("tn", "cn"), team("tp", "cp"), team("tx", "c-missing")],
        [user("free", email="free@x.io", team_ids=["tf", "tt", "tn"]),
         user("mixed", email="mixed@x.io", team_ids=["tf", "tp"]),
         user("paid", email="paid@x.io", team_ids=["tp"]),
         user("orphan", email="orphan@x.io", team_ids=[]),
         user("noteam", email="noteam@x.io", team_ids=["t-missing"]),
         user("nocompany", email="nocompany@x.io", team_ids=["tx"])],
    )
    assert users["free"]["email"] == "free@x.io"
    assert list(users["free"])[:3] == ["id", "email", "isRegistered"]
    for name in ("mixed", "paid", "orphan", "noteam", "nocompany"):
        assert "email" not in users[name], name
        assert list(users[name])[:2] == ["id", "isRegistered"], name


def test_null_email_of_a_free_user_is_present_as_null():
    users = emails_of([company("cf", plan="FREEPLAN")], [team("tf", "cf")],
                      [user("u", email=None, team_ids=["tf"])])
    assert "email" in users["u"]
    assert users["u"]["email"] is None
    assert b'"email":null' in encode_payload({"users": [users["u"]]})


def test_null_email_of_a_paid_user_is_absent():
    users = emails_of([company("cp", plan="BUSINESS")], [team("tp", "cp")], [user("u", email=None, team_ids=["tp"])])
    assert "email" not in users["u"]


def test_email_is_decided_by_companies_of_teams_created_after_the_night_too():
    # The user's companies are the companies of the teams the user is a member of.
    users = emails_of([company("cf"), company("cp", plan="BUSINESS", created_at=END)],
                      [team("tf", "cf"), team("tp", "cp", created_at=END)],
                      [user("u", email="u@x.io", team_ids=["tf", "tp"])])
    assert "email" not in users["u"]


# --- isAdmin and activity counts


def test_is_admin_is_sent_as_given():
    users = {u["id"]: u for u in build(users=[user("admin", is_admin=True), user("plain")]).payload["users"]}
    assert users["admin"]["isAdmin"] is True
    assert users["plain"]["isAdmin"] is False


def test_activity_counts_default_to_zero_and_belong_to_their_user():
    payload = build(
        users=[user("u1"), user("u2"), user("u3")],
        activity=[{"user_id": "u2", "codemarks": 5, "codemarks_in_reviews": 6, "reviews": 7, "replies": 8},
                  {"user_id": "ghost", "codemarks": 1, "codemarks_in_reviews": 1, "reviews": 1, "replies": 1}],
    ).payload
    counts = {u["id"]: [u["codemarks"], u["codemarksInReviews"], u["reviews"], u["replies"]]
              for u in payload["users"]}
    assert counts == {"u1": [0, 0, 0, 0], "u2": [5, 6, 7, 8], "u3": [0, 0, 0, 0]}
    assert [u["id"] for u in payload["users"]] == ["u1", "u2", "u3"]


# --- iso_ms


@pytest.mark.parametrize("ms, expected", [
    (0, "1970-01-01T00:00:00.000Z"),
    (1, "1970-01-01T00:00:00.001Z"),
    (999, "1970-01-01T00:00:00.999Z"),
    (-1, "1969-12-31T23:59:59.999Z"),
    (-86_400_000, "1969-12-31T00:00:00.000Z"),
    (1_795_651_200_000 + 29_730_123, "2026-11-26T08:15:30.123Z"),
    (1_795_737_599_999, "2026-11-26T23:59:59.999Z"),
    (951_782_400_000, "2000-02-29T00:00:00.000Z"),
    (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
])
def test_iso_ms(ms, expected):
    assert iso_ms(ms, table="t", column="c", row_id="r") == expected


def test_iso_ms_null_stays_null():
    assert iso_ms(None, table="t", column="c", row_id="r") is None


@pytest.mark.parametrize("ms", [253_402_300_800_000, 10**20, -62_135_596_800_001, -(10**20)])
def test_iso_ms_out_of_calendar_names_table_column_row(ms):
    with pytest.raises(TelemetryError) as caught:
        iso_ms(ms, table="users", column="last_login", row_id="u-42")
    message = str(caught.value)
    assert "users" in message and "last_login" in message and "u-42" in message
    assert "\n" not in message


@pytest.mark.parametrize("field, value, table, column, row", [
    ("last_login", 10**18, "users", "last_login", "u-big"),
    ("registered_at", -(10**18), "users", "registered_at", "u-big"),
])
def test_a_user_time_too_large_fails_the_build_naming_table_column_row(field, value, table, column, row):
    with pytest.raises(TelemetryError) as caught:
        build(users=[user("u-big", **{field: value})])
    message = str(caught.value)
    assert table in message and column in message and row in message


def test_a_review_time_too_large_names_reviews_and_the_review():
    with pytest.raises(TelemetryError) as caught:
        build(code_reviews=[{"review_id": "r-big", "team_id": "t", "created_at": START, "approved_at": 10**18}])
    message = str(caught.value)
    assert "reviews" in message and "approved_at" in message and "r-big" in message


def test_a_company_time_too_large_names_companies_created_at_and_row():
    # created_at far in the past is before the night's end, so it is formatted and must fail.
    with pytest.raises(TelemetryError) as caught:
        build(companies=[company("c-old", created_at=-(10**18))])
    message = str(caught.value)
    assert "companies" in message and "created_at" in message and "c-old" in message


# --- encode_payload


def test_encode_payload_is_compact_utf8_json_keeping_non_ascii():
    payload = {"b": "Émile ☃ 𝄞", "a": [1, {"x": None, "y": True}], "c": ""}
    encoded = encode_payload(payload)
    assert isinstance(encoded, bytes)
    assert encoded == '{"b":"Émile ☃ 𝄞","a":[1,{"x":null,"y":true}],"c":""}'.encode("utf-8")
    assert b"\\u" not in encoded
    assert json.loads(encoded.decode("utf-8")) == payload


def test_encode_payload_escapes_what_json_requires():
    assert encode_payload({"k": 'a"b\\c\n'}) == b'{"k":"a\\"b\\\\c\\n"}'


# --- payload_key_problems


def good_payload():
    return {
        "date": "2026-11-26", "installationId": "i", "installationVersion": "v", "outboundEmailEnabled": False,
        "slackInteractiveComponentsEnabled": False, "integrations": [],
        "companies": [{"id": "c", "name": "n", "isDeactivated": False, "createdAt": None, "creatorId": None,
                       "plan": None}],
        "teams": [{"id": "t", "name": "n", "companyId": "c", "isDeactivated": False, "createdAt": None,
                   "creatorId": None, "liveView": "on", "codeReviewApproval": "user",
                   "codeReviewAssignment": "authorship2"}],
        "users": [
            {"id": "u1", "email": "a@b.c", "isRegistered": True, "isDeactivated": False, "isAdmin": False,
             "registeredAt": None, "joinMethod": None, "lastLogin": None, "lastOrigin": None,
             "lastOriginDetail": None, "codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 0},
            {"id": "u2", "isRegistered": True, "isDeactivated": False, "isAdmin": False,
             "registeredAt": None, "joinMethod": None, "lastLogin": None, "lastOrigin": None,
             "lastOriginDetail": None, "codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 0},
        ],
        "codeReviews": [{"teamId": "t", "reviewId": "r", "createdAt": None, "approvedAt": None}],
    }


def test_key_problems_none_for_an_exact_payload_with_and_without_email():
    assert payload_key_problems(good_payload()) == []


def test_key_problems_extra_top_level_key():
    payload = good_payload()
    payload["extra"] = 1
    assert len(payload_key_problems(payload)) == 1


def test_key_problems_missing_top_level_key():
    payload = good_payload()
    del payload["integrations"]
    assert len(payload_key_problems(payload)) == 1


def test_key_problems_reordered_top_level_keys():
    payload = good_payload()
    reordered = {"installationId": payload.pop("installationId"), **payload}
    assert len(payload_key_problems(reordered)) == 1


@pytest.mark.parametrize("section", ["companies", "teams", "codeReviews", "users"])
def test_key_problems_reordered_nested_keys(section):
    payload = good_payload()
    entry = payload[section][0]
    keys = list(entry)
    keys[1], keys[2] = keys[2], keys[1]
    payload[section][0] = {k: entry[k] for k in keys}
    problems = payload_key_problems(payload)
    assert len(problems) == 1
    assert section in problems[0]


@pytest.mark.parametrize("section", ["companies", "teams", "codeReviews", "users"])
def test_key_problems_extra_nested_key(section):
    payload = good_payload()
    payload[section][-1]["secret"] = "x"
    problems = payload_key_problems(payload)
    assert len(problems) == 1
    assert section in problems[0]


@pytest.mark.parametrize("section, key", [("companies", "plan"), ("teams", "liveView"),
                                          ("codeReviews", "approvedAt"), ("users", "replies")])
def test_key_problems_missing_nested_key(section, key):
    payload = good_payload()
    del payload[section][0][key]
    problems = payload_key_problems(payload)
    assert len(problems) == 1
    assert section in problems[0]


def test_key_problems_user_email_in_the_wrong_place():
    payload = good_payload()
    entry = payload["users"][1]
    payload["users"][1] = {**entry, "email": "late@x.io"}  # email last instead of second
    assert len(payload_key_problems(payload)) == 1


def test_key_problems_not_an_object():
    assert payload_key_problems([good_payload()]) != []
