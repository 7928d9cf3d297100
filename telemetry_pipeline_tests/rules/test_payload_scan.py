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
