"""Secrets and files: the phone-home key is in no log line, metadata entry, error or file of a run
(telemetry_pipeline/reliability/leaks.py); outbox and archive files are mode 0600; the key goes over
plain http only to this machine unless TELEMETRY_ALLOW_PLAIN_HTTP=1 says otherwise."""

from __future__ import annotations

import datetime as dt
import os
import socket
import stat

import dagster as dg
import pytest

from telemetry_pipeline.codestream_config import InstallationConfig, Secret
from telemetry_pipeline.definitions import default_resources
from telemetry_pipeline.delivery import (
    ALLOW_PLAIN_HTTP_ENV,
    check_collector_url,
    plain_http_allowed,
    post_payload,
    write_to_outbox,
)
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.reliability.faults import FAST, INSTALLATION, KEY, NIGHT, PAYLOAD
from telemetry_pipeline.reliability.leaks import PLANTED, SCENARIOS, scan_run
from telemetry_pipeline.reliability.loopback import LoopbackCollector


@pytest.fixture(autouse=True)
def no_plain_http_allowance(monkeypatch):
    monkeypatch.delenv(ALLOW_PLAIN_HTTP_ENV, raising=False)


# --- the key in everything a run leaves


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_no_trace_of_the_key_in_anything_a_run_leaves(scenario, tmp_path):
    scan = scan_run(scenario, tmp_path)
    assert scan.problems == []
    assert scan.leaks == [] and scan.loose_files == []
    assert scan.log_lines > 0 and scan.events > 0 and scan.files > 0
    if not scenario.succeeds:
        assert scan.errors >= 1
    if scenario.reply is None:
        assert scan.private_files == 1  # the outbox file
    elif scenario.succeeds:
        assert scan.private_files >= 1 and scan.key_sent  # the archive; the key went only into the header


def test_the_scan_finds_the_key_where_it_is(tmp_path):
    """Control: with the key planted in the data, the scan finds it in the files the payload reaches."""
    scan = scan_run(PLANTED, tmp_path)
    assert any(place.startswith("file storage/") for place in scan.leaks), scan.leaks
    assert any(place.startswith("file archive/") for place in scan.leaks), scan.leaks


# --- file modes


def test_outbox_files_are_0600_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        write_to_outbox(tmp_path, INSTALLATION, NIGHT, PAYLOAD)
    finally:
        os.umask(previous)
    [written] = list(tmp_path.iterdir())
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


# --- plain http


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://127.8.9.10", "http://[::1]:9", "http://localhost:1",
                                 "http://LOCALHOST", "https://collector.example", "https://10.0.0.1:8443/base"])
def test_https_anywhere_and_plain_http_to_this_machine_are_allowed(url):
    check_collector_url(url)


@pytest.mark.parametrize("url", ["http://collector.example", "http://10.0.0.1:8080", "http://0.0.0.0:8080",
                                 "http://localhost.example.com", "http://127.0.0.1.nip.io", "http://[::ffff:10.0.0.1]"])
def test_plain_http_to_another_machine_is_refused_naming_the_key_and_the_way_out(url):
    with pytest.raises(TelemetryError) as refused:
        check_collector_url(url)
    message = str(refused.value)
    assert "apiServer.phoneHomeUrl" in message and ALLOW_PLAIN_HTTP_ENV in message and "\n" not in message
    check_collector_url(url, allow_plain_http=True)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "http://", "127.0.0.1:8080", "http://h:port"])
def test_a_url_that_is_not_http_is_refused(url):
    with pytest.raises(TelemetryError) as refused:
        check_collector_url(url, allow_plain_http=True)
    assert "apiServer.phoneHomeUrl" in str(refused.value)


@pytest.mark.parametrize("value, allowed", [(None, False), ("", False), ("0", False), ("1", True)])
def test_the_allowance_is_1_or_0(value, allowed):
    assert plain_http_allowed(value) is allowed


def _this_machine_by_name() -> str:
    """A name of this machine that is not a loopback literal (it may still resolve to one)."""
    return socket.gethostname()


def test_the_key_does_not_go_over_plain_http_to_a_name_unless_allowed(monkeypatch):
    """The collector listens on every address, so without the rule the key would arrive."""
    with LoopbackCollector(host="0.0.0.0") as collector:
        url = f"http://{_this_machine_by_name()}:{collector.port}"
        with pytest.raises(TelemetryError) as refused:
            post_payload(url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
        assert KEY not in str(refused.value)
        assert collector.requests == []

        # The allowance, read through PhoneHomeResource as definitions wires it.
        monkeypatch.setenv(ALLOW_PLAIN_HTTP_ENV, "1")
        config = InstallationConfig(
            path="codestream.json", installation_id=INSTALLATION, installation_version="1", phone_home_url=url,
            disable_phone_home=False, outbound_email_enabled=False, slack_interactive_components_enabled=False,
            phone_home_key=Secret(KEY),
        )
        with dg.build_resources({"phone_home": default_resources()["phone_home"]}) as resources:
            delivery = resources.phone_home.deliver(config, dt.date.fromisoformat(NIGHT), PAYLOAD)
    assert delivery.outcome == "sent"
    assert [r.header("X-CS-Phone-Home-Key") for r in collector.requests] == [KEY]
