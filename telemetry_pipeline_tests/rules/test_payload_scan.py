"""Reading a payload back as the checks do: its key problems and its emailed users, against json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telemetry_pipeline.rules import payload_scan
from telemetry_pipeline.rules.payload import payload_key_problems
from telemetry_pipeline.rules.payload_columns import encode_night
from telemetry_pipeline_tests.rules.test_payload_columns import FACTS, NIGHT, nights_rows, tables


def _emailed_by_json(payload) -> list[str]:
    return [user["id"] for user in json.loads(bytes(payload))["users"] if "email" in user]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights_rows())
def test_the_scan_of_a_built_payload_finds_exactly_the_users_json_finds(rows):
    payload = encode_night(NIGHT, FACTS, *tables(*rows)).payload
    scan = payload_scan.scan_payload(payload)
    assert scan.key_problems == []
    assert scan.emailed_user_ids.to_pylist() == _emailed_by_json(payload)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights_rows(), st.sampled_from(["spaced", "extra key", "nested"]))
def test_a_payload_off_the_compact_grammar_is_judged_by_json(rows, change):
    document = json.loads(bytes(encode_night(NIGHT, FACTS, *tables(*rows)).payload))
    if change == "extra key":
        document["hostname"] = "build-01"
    elif change == "nested":
        document["installationVersion"] = {"v": 1}
    payload = json.dumps(document, indent=1, ensure_ascii=False).encode()
    scan = payload_scan.scan_payload(payload)
    assert scan.key_problems == payload_key_problems(document)
    assert scan.emailed_user_ids.to_pylist() == _emailed_by_json(payload)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # the same chunk size for every input
@given(data=st.binary(max_size=200), pattern=st.sampled_from([b'},{"id":', b"ab", b"x", b"aa"]))
def test_occurrences_are_found_across_chunk_edges(monkeypatch, chunk, data, pattern):
    monkeypatch.setattr(payload_scan, "_CHUNK", chunk)
    text = data.replace(b"\x00", pattern)  # plant the pattern where the data had a zero byte
    expected, at = [], text.find(pattern)
    while at != -1:
        expected.append(at)
        at = text.find(pattern, at + 1)
    assert payload_scan._occurrences(np.frombuffer(text, dtype=np.uint8), pattern).tolist() == expected


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), pattern=st.sampled_from([b'],"codeReviews":[', b"ab", b"x"]))
def test_the_first_and_last_occurrence_are_found_across_chunk_edges(monkeypatch, chunk, data, pattern):
    monkeypatch.setattr(payload_scan, "_CHUNK", chunk)
    text = data.replace(b"\x00", pattern)
    found = np.frombuffer(text, dtype=np.uint8)
    assert payload_scan._first(found, pattern) == text.find(pattern)
    assert payload_scan._last(found, pattern) == text.rfind(pattern)


def _compact(document) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _same_scan(actual, expected):
    assert actual.key_problems == expected.key_problems
    assert actual.emailed_user_ids.to_pylist() == expected.emailed_user_ids.to_pylist()


# Ways a night's payload may differ from the one before: built from other rows, or its compact text
# made to break the grammar in one place (a user's object, what comes before or after the users).
CHANGES = ["more users", "a user changed", "a user gone", "a user in between", "no users", "the same",
           "extra key in a user", "nested value in a user", "first user without its id",
           "extra key before the users", "nested value after the users", "spaced", "not JSON",
           "an id with escapes, emailed", "a user's value holding the separator",
           "a user active and newly emailed", "a user's count nested", "a user's count as text",
           "a user's value holding the counts' key", "a user's counts cut short", "a user's counts given twice",
           "a user active, a key renamed in as many bytes"]


_A_USER = {"id": "zz", "isRegistered": True, "isDeactivated": False, "isAdmin": False, "registeredAt": None,
           "joinMethod": None, "lastLogin": None, "lastOrigin": None, "lastOriginDetail": None, "codemarks": 0,
           "codemarksInReviews": 0, "reviews": 0, "replies": 0}


_NOT_JSON = ("not JSON", "a user's counts given twice")


def _plus(count, more: int) -> int:
    """A count made larger, or set, when an earlier change left something else there."""
    return count + more if isinstance(count, int) else more


def _changed_payload(document: dict, change: str, at: int) -> bytes:
    document = json.loads(json.dumps(document))
    users = document["users"]
    user = users[at % len(users)] if users else None
    if change == "more users":
        users.append({"id": "zz-new", "email": "new@example.com", **{k: v for k, v in _A_USER.items() if k != "id"}})
        users.sort(key=lambda u: str(u.get("id")))
    elif change == "a user changed" and user:
        user["replies"] = _plus(user.get("replies"), 1)
    elif change == "a user gone" and user:
        users.remove(user)
    elif change == "a user in between" and user:
        users.insert(at % len(users), {**user, "id": str(user.get("id")) + "-twin"})
    elif change == "no users":
        users.clear()
    elif change == "extra key in a user" and user:
        user["hostname"] = "build-01"
    elif change == "nested value in a user" and user:
        user["lastOrigin"] = {"name": "VS Code"}
    elif change == "first user without its id" and users:
        users[0].pop("id", None)
    elif change == "extra key before the users":
        document = {**{k: v for k, v in document.items() if k != "users"}, "hostname": "x", "users": users,
                    "codeReviews": document["codeReviews"]}
    elif change == "nested value after the users":
        document["codeReviews"] = [{"teamId": {"id": "t"}, "reviewId": "r", "createdAt": None, "approvedAt": None}]
    elif change == "spaced":
        return json.dumps(document, indent=1).encode()
    elif change == "not JSON":
        return _compact(document)[:-1]
    elif change == "an id with escapes, emailed" and user:
        user.update({"id": 'q"\\uote', "email": "q@example.com"})
        users.sort(key=lambda u: str(u.get("id")))
    elif change == "a user active and newly emailed" and user:
        at_place = users.index(user)
        users[at_place] = {"id": user.get("id"), "email": "active@example.com",
                           **{k: v for k, v in user.items() if k not in ("id", "email")}}
        users[at_place]["codemarks"] = _plus(users[at_place].get("codemarks"), 2)
    elif change == "a user's count nested" and user:
        user["reviews"] = [1]
    elif change == "a user's count as text" and user:
        user["replies"] = "7"
    elif change == "a user's value holding the counts' key" and user:
        user["lastOriginDetail"] = ',"codemarks":1}'
        user["codemarks"] = _plus(user.get("codemarks"), 1)
    elif change == "a user active, a key renamed in as many bytes" and user:
        # Its text before the counts keeps its length: only its bytes say it changed.
        at_place = users.index(user)
        users[at_place] = {("isAdmiN" if key == "isAdmin" else key): value for key, value in user.items()}
        users[at_place]["replies"] = _plus(user.get("replies"), 1)
    elif change == "a user's counts given twice" and user:
        compact = _compact(document)
        text = _compact(user)
        counts = text[text.index(b',"codemarks":'):]
        return compact.replace(text, text + counts, 1)
    elif change == "a user's counts cut short" and user:
        user.pop("replies", None)
    elif change == "a user's value holding the separator" and user:
        user["lastOriginDetail"] = '},{"id":"ghost","email":"ghost@example.com"'
    return _compact({key: document[key] for key in document})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nights_rows(), st.lists(st.tuples(st.sampled_from(CHANGES), st.integers(0, 20)), min_size=1, max_size=4))
def test_scanning_night_after_night_finds_what_scanning_each_night_alone_finds(rows, changes):
    """Whatever the night before was (matching or not), the scanner's verdict on a night is
    ``scan_payload``'s: a payload breaking the grammar in one user, before or after the users, or
    not JSON at all, is never taken for one that matches."""
    first = encode_night(NIGHT, FACTS, *tables(*rows)).payload
    scanner = payload_scan.PayloadScanner()
    _same_scan(scanner(first), payload_scan.scan_payload(first))
    document = json.loads(bytes(first))
    for change, at in changes:
        payload = _changed_payload(document, change, at)
        _same_scan(scanner(payload), payload_scan.scan_payload(payload))
        if change not in _NOT_JSON:
            document = json.loads(payload)


def test_a_user_breaking_the_grammar_after_a_matching_night_is_judged_by_json():
    users = [{"id": f"u{i}", **({"email": f"u{i}@example.com"} if i % 2 else {}), "isRegistered": True,
              "isDeactivated": False, "isAdmin": False, "registeredAt": None, "joinMethod": None,
              "lastLogin": None, "lastOrigin": None, "lastOriginDetail": None, "codemarks": 0,
              "codemarksInReviews": 0, "reviews": 0, "replies": 0} for i in range(5)]
    document = {"date": "2026-11-26", "installationId": "i", "installationVersion": "1",
                "outboundEmailEnabled": False, "slackInteractiveComponentsEnabled": False, "integrations": [],
                "companies": [], "teams": [], "users": users, "codeReviews": []}
    scanner = payload_scan.PayloadScanner()
    assert scanner(_compact(document)).emailed_user_ids.to_pylist() == ["u1", "u3"]
    users[2] = {"hostname": "build-01", **users[2]}  # the night after: one user's keys are not the contract's
    scan = scanner(_compact(document))
    assert scan.key_problems == [f"users[2] has keys {list(users[2])}"]
    assert scan.emailed_user_ids.to_pylist() == ["u1", "u3"]
    del users[2]["hostname"]  # and the night after that matches again, its users read anew
    users[4]["email"] = "u4@example.com"
    users[4] = {"id": "u4", "email": "u4@example.com", **users[4]}
    _same_scan(scanner(_compact(document)), payload_scan.scan_payload(_compact(document)))
    assert scanner(_compact(document)).emailed_user_ids.to_pylist() == ["u1", "u3", "u4"]
