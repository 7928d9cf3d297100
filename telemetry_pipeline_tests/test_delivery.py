"""Sending (contract section 6) against a real loopback collector, and the offline outbox."""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from telemetry_pipeline.delivery import (
    Delivery,
    DeliveryFailed,
    RetrySettings,
    post_payload,
    write_to_outbox,
)
from telemetry_pipeline.errors import TelemetryError

FAST = RetrySettings(retries=3, backoff_factor=0.01, connect_timeout=2, read_timeout=2)
KEY = "phk-7QmX-very-secret"
INSTALLATION = "inst-123"
NIGHT = "2026-11-26"
PAYLOAD = '{"date":"2026-11-26","installationId":"inst-123","name":"Émile ☃"}'.encode("utf-8")


def send(collector, key=KEY, settings=FAST, base_url=None):
    return post_payload(base_url or collector.url, key, INSTALLATION, NIGHT, PAYLOAD, settings)


def send_failing(collector, **kwargs) -> DeliveryFailed:
    with pytest.raises(DeliveryFailed) as caught:
        send(collector, **kwargs)
    error = caught.value
    assert isinstance(error, TelemetryError)
    assert_no_key(error)
    return error


def assert_no_key(error: BaseException):
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert all(KEY not in str(arg) for arg in error.args)


def header(request, name):
    """A request header, looked up without regard to case."""
    matches = [v for k, v in request["headers"].items() if k.lower() == name.lower()]
    assert len(matches) == 1, f"{name}: {matches}"
    return matches[0]


def refused_url():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- success


def test_200_is_sent_in_one_attempt(collector):
    delivery = send(collector)
    assert isinstance(delivery, Delivery)
    assert delivery.outcome == "sent"
    assert delivery.attempts == 1
    assert delivery.status == 200
    assert KEY not in delivery.destination
    assert len(collector.requests) == 1


def test_request_is_a_post_to_phone_home_with_the_contracts_body_and_headers(collector):
    send(collector)
    request = collector.requests[0]
    assert request["path"] == "/phone-home"
    assert request["body"] == b"[" + PAYLOAD + b"]"
    assert header(request, "Content-Type") == "application/json"
    assert header(request, "X-CS-Phone-Home-Key") == KEY
    assert header(request, "Idempotency-Key") == "inst-123:2026-11-26"
    assert collector.bodies == [[{"date": "2026-11-26", "installationId": "inst-123", "name": "Émile ☃"}]]


def test_base_url_with_a_path_and_trailing_slash(collector):
    send(collector, base_url=collector.url + "/base/")
    assert collector.requests[0]["path"] == "/base/phone-home"


@pytest.mark.parametrize("status", [201, 202])
def test_any_2xx_is_success(collector, status):
    collector.reply_with(status)
    delivery = send(collector)
    assert (delivery.outcome, delivery.attempts, delivery.status) == ("sent", 1, status)


# --- retried replies


def test_503_then_200_is_sent_on_the_second_attempt_with_the_same_body_and_key(collector):
    collector.reply_with(503)
    delivery = send(collector)
    assert delivery.outcome == "sent"
    assert delivery.attempts == 2
    assert len(collector.requests) == 2
    first, second = collector.requests
    assert first["body"] == second["body"] == b"[" + PAYLOAD + b"]"
    assert header(first, "Idempotency-Key") == header(second, "Idempotency-Key") == "inst-123:2026-11-26"
    assert header(second, "X-CS-Phone-Home-Key") == KEY


def test_429_retry_after_is_honoured(collector):
    collector.reply_with((429, {"Retry-After": "1"}))
    started = time.monotonic()
    delivery = send(collector)
    elapsed = time.monotonic() - started
    assert delivery.attempts == 2
    assert len(collector.requests) == 2
    assert elapsed >= 0.9


@pytest.mark.parametrize("status", [408, 500, 502, 504, 599])
def test_retryable_statuses_are_retried(collector, status):
    collector.reply_with(status)
    delivery = send(collector)
    assert delivery.outcome == "sent"
    assert delivery.attempts == 2
    assert len(collector.requests) == 2


def test_several_retryable_replies_in_a_row_then_success(collector):
    collector.reply_with(503, (429, {"Retry-After": "0"}), 500)
    delivery = send(collector)
    assert delivery.attempts == 4
    assert len(collector.requests) == 4


def test_retries_exhausted_on_503(collector):
    collector.reply_with(*[503] * 10)
    error = send_failing(collector)
    assert "503" in str(error)
    assert error.status == 503
    assert error.attempts == FAST.retries + 1
    assert len(collector.requests) == FAST.retries + 1


def test_at_least_three_retries_by_default_settings():
    assert RetrySettings().retries >= 3


# --- final replies


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422])
def test_other_statuses_fail_at_once_naming_the_status(collector, status):
    collector.reply_with(status)
    error = send_failing(collector)
    assert str(status) in str(error)
    assert error.status == status
    assert error.attempts == 1
    assert len(collector.requests) == 1


def test_413_with_retry_after_still_fails_at_once(collector):
    collector.reply_with(*[(413, {"Retry-After": "0"})] * 5)
    with pytest.raises(DeliveryFailed) as caught:
        send(collector)
    assert caught.value.status == 413
    assert len(collector.requests) == 1


def test_a_redirect_is_not_followed(collector):
    collector.reply_with((302, {"Location": collector.url + "/elsewhere"}))
    error = send_failing(collector)
    assert "302" in str(error)
    assert error.status == 302
    assert len(collector.requests) == 1
    assert [r["path"] for r in collector.requests] == ["/phone-home"]


# --- connection failures


def test_a_refused_connection_fails_after_the_retries(collector):
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as caught:
        post_payload(refused_url(), KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
    error = caught.value
    assert error.attempts == FAST.retries + 1
    assert error.status is None
    assert "127.0.0.1" in str(error)
    assert_no_key(error)
    assert time.monotonic() - started < 10


# --- the key never appears in an error


def test_the_key_never_appears_in_an_error(collector):
    # send_failing checks this for every failing reply above; here the collector rejects the key itself.
    collector.reply_with(403)
    error = send_failing(collector)
    assert KEY not in str(error)
    assert "403" in str(error)


def test_credentials_in_the_url_are_not_in_the_error(collector):
    collector.reply_with(401)
    base = collector.url.replace("http://", "http://user:pw-in-url-XYZ@")
    with pytest.raises(DeliveryFailed) as caught:
        post_payload(base, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
    assert "pw-in-url-XYZ" not in str(caught.value)
    assert_no_key(caught.value)


def test_a_key_that_is_not_a_valid_header_value_is_not_echoed(collector):
    bad_key = KEY + "\n"
    with pytest.raises(TelemetryError) as caught:
        send(collector, key=bad_key)
    assert KEY not in str(caught.value)


# --- offline: the outbox


def test_write_to_outbox_writes_the_exact_payload_bytes(tmp_path):
    outbox = tmp_path / "outbox"
    delivery = write_to_outbox(outbox, INSTALLATION, NIGHT, PAYLOAD)
    target = outbox / "inst-123_2026-11-26.json"
    assert target.read_bytes() == PAYLOAD
    assert delivery.outcome == "written to outbox"
    assert delivery.destination == str(target)
    assert sorted(p.name for p in outbox.iterdir()) == ["inst-123_2026-11-26.json"]


def test_outbox_file_mode_is_0600(tmp_path):
    write_to_outbox(tmp_path, INSTALLATION, NIGHT, PAYLOAD)
    mode = stat.S_IMODE(os.stat(tmp_path / "inst-123_2026-11-26.json").st_mode)
    assert mode == 0o600


def test_outbox_rerun_replaces_the_file_atomically(tmp_path):
    target = tmp_path / "inst-123_2026-11-26.json"
    write_to_outbox(tmp_path, INSTALLATION, NIGHT, b'{"old":true,"padding":"' + b"x" * 1000 + b'"}')
    with open(target, "rb") as old_reader:
        old_inode = os.fstat(old_reader.fileno()).st_ino
        write_to_outbox(tmp_path, INSTALLATION, NIGHT, PAYLOAD)
        # A reader of the old file still sees the whole old file: the new one was renamed into place.
        assert old_reader.read().startswith(b'{"old":true')
    assert target.read_bytes() == PAYLOAD
    assert os.stat(target).st_ino != old_inode
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inst-123_2026-11-26.json"]


def test_outbox_files_per_night_do_not_overwrite_each_other(tmp_path):
    write_to_outbox(tmp_path, INSTALLATION, "2026-11-25", b"{1}")
    write_to_outbox(tmp_path, INSTALLATION, "2026-11-26", b"{2}")
    assert (tmp_path / "inst-123_2026-11-25.json").read_bytes() == b"{1}"
    assert (tmp_path / "inst-123_2026-11-26.json").read_bytes() == b"{2}"


@pytest.mark.parametrize("installation_id", ["a/b", "../escape", "/abs", "a\\b"])
def test_installation_id_with_a_path_separator_is_refused(tmp_path, installation_id):
    outbox = tmp_path / "outbox"
    with pytest.raises(TelemetryError) as caught:
        write_to_outbox(outbox, installation_id, NIGHT, PAYLOAD)
    assert "installationId" in str(caught.value)
    assert not any(tmp_path.rglob("*.json"))


def test_outbox_that_cannot_be_made_is_a_telemetry_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(TelemetryError) as caught:
        write_to_outbox(blocker / "outbox", INSTALLATION, NIGHT, PAYLOAD)
    assert "\n" not in str(caught.value)
