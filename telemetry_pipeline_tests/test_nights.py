"""Nights (contract section 2): UTC calendar days, half-open [D 00:00Z, D+1 00:00Z)."""

from __future__ import annotations

import datetime as dt

import pytest

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import check_night_in_range, last_complete_night, night_bounds_ms, parse_night

UTC = dt.timezone.utc


# --- night_bounds_ms


@pytest.mark.parametrize("night, bounds", [
    (dt.date(1970, 1, 1), (0, 86_400_000)),
    (dt.date(1969, 12, 31), (-86_400_000, 0)),
    (dt.date(2026, 11, 26), (1_795_651_200_000, 1_795_737_600_000)),
    (dt.date(2028, 2, 29), (1_835_395_200_000, 1_835_481_600_000)),
])
def test_night_bounds_ms(night, bounds):
    assert night_bounds_ms(night) == bounds


def test_consecutive_nights_touch_without_overlap():
    assert night_bounds_ms(dt.date(2026, 12, 31))[1] == night_bounds_ms(dt.date(2027, 1, 1))[0]
    assert night_bounds_ms(dt.date(2028, 2, 28))[1] == night_bounds_ms(dt.date(2028, 2, 29))[0]


def test_bounds_are_integers():
    start, end = night_bounds_ms(dt.date(2026, 11, 26))
    assert type(start) is int and type(end) is int


# --- last_complete_night


@pytest.mark.parametrize("now, night", [
    (dt.datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC), dt.date(2026, 11, 26)),
    (dt.datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC), dt.date(2026, 11, 26)),
    (dt.datetime(2026, 11, 27, 23, 59, 59, 999_999, tzinfo=UTC), dt.date(2026, 11, 26)),
    (dt.datetime(2026, 11, 26, 23, 59, 59, 999_999, tzinfo=UTC), dt.date(2026, 11, 25)),
    (dt.datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC), dt.date(2026, 12, 31)),
    (dt.datetime(2028, 3, 1, 0, 0, 0, tzinfo=UTC), dt.date(2028, 2, 29)),
])
def test_last_complete_night(now, night):
    assert last_complete_night(now) == night


@pytest.mark.parametrize("now, night", [
    # 01:00 at UTC+2 is 23:00Z the day before: night D-1 is not yet complete.
    (dt.datetime(2026, 11, 27, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), dt.date(2026, 11, 25)),
    # 20:00 at UTC-5 is 01:00Z the next day.
    (dt.datetime(2026, 11, 26, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), dt.date(2026, 11, 26)),
])
def test_last_complete_night_is_in_utc_whatever_the_clocks_zone(now, night):
    assert last_complete_night(now) == night


def test_last_complete_night_defaults_to_now():
    before = dt.datetime.now(UTC).date() - dt.timedelta(days=1)
    result = last_complete_night()
    after = dt.datetime.now(UTC).date() - dt.timedelta(days=1)
    assert result in (before, after)


# --- parse_night


def test_parse_night():
    assert parse_night("2026-11-26") == dt.date(2026, 11, 26)
    assert parse_night("2028-02-29") == dt.date(2028, 2, 29)


@pytest.mark.parametrize("text", [
    "2026-13-01", "2026-02-30", "2027-02-29", "26/11/2026", "2026/11/26", "", "2026-11-26T00:00",
    "2026-1-1", "2026-11", "yesterday", " 2026-11-26", "2026-11-26 ",
])
def test_parse_night_errors(text):
    with pytest.raises(TelemetryError) as caught:
        parse_night(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "YYYY-MM-DD" in message
    assert "\n" not in message


def test_parse_night_error_names_what_was_parsed():
    with pytest.raises(TelemetryError) as caught:
        parse_night("nope", what="--date")
    assert "--date" in str(caught.value)


def test_parse_night_none_is_a_telemetry_error():
    with pytest.raises(TelemetryError):
        parse_night(None)


@pytest.mark.parametrize("text", ["20261126", "2026-W48-4", "2026W484"])
def test_parse_night_accepts_only_yyyy_mm_dd(text):
    with pytest.raises(TelemetryError):
        parse_night(text)


# --- check_night_in_range


def today_utc() -> dt.date:
    return dt.datetime.now(UTC).date()


def test_night_before_the_start_date_is_refused(monkeypatch):
    monkeypatch.setenv("TELEMETRY_START_DATE", "2026-01-01")
    with pytest.raises(TelemetryError) as caught:
        check_night_in_range(dt.date(2025, 12, 31))
    message = str(caught.value)
    assert "2025-12-31" in message
    assert "2026-01-01" in message
    assert "TELEMETRY_START_DATE" in message
    assert "\n" not in message


def test_the_start_date_itself_and_the_last_complete_night_are_in_range(monkeypatch):
    monkeypatch.setenv("TELEMETRY_START_DATE", "2026-01-01")
    check_night_in_range(dt.date(2026, 1, 1))
    check_night_in_range(today_utc() - dt.timedelta(days=1))


def test_today_is_not_complete_and_is_refused(monkeypatch):
    monkeypatch.setenv("TELEMETRY_START_DATE", "2026-01-01")
    for night in (today_utc(), today_utc() + dt.timedelta(days=1)):
        with pytest.raises(TelemetryError) as caught:
            check_night_in_range(night)
        assert night.isoformat() in str(caught.value)


def test_start_date_moves_the_first_night(monkeypatch):
    night = dt.date(2026, 3, 10)
    monkeypatch.setenv("TELEMETRY_START_DATE", "2026-03-10")
    check_night_in_range(night)
    monkeypatch.setenv("TELEMETRY_START_DATE", "2026-03-11")
    with pytest.raises(TelemetryError):
        check_night_in_range(night)


@pytest.mark.parametrize("value", ["2026/01/01", "01-01-2026", "soon", "2026-02-30"])
def test_invalid_start_date_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("TELEMETRY_START_DATE", value)
    with pytest.raises(TelemetryError) as caught:
        check_night_in_range(dt.date(2026, 11, 26))
    message = str(caught.value)
    assert "TELEMETRY_START_DATE" in message
    assert value in message
