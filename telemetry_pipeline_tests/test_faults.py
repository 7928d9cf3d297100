"""The fault matrix (telemetry_pipeline/reliability/faults.py), run against real servers on
loopback: what is retried, what fails, and that the night arrives once the fault clears with the
same bytes and Idempotency-Key. The report in docs/RELIABILITY.md runs the same table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from telemetry_pipeline import cli
from telemetry_pipeline.delivery import DeliveryFailed, post_payload
from telemetry_pipeline.reliability import faults
from telemetry_pipeline.reliability.bad_input import BAD_INPUTS
from telemetry_pipeline.reliability.faults import (
    BODY,
    FAST,
    FAULTS,
    HUGE,
    INSTALLATION,
    KEY,
    NIGHT,
    PAYLOAD,
    RETRIES,
    SENSOR_FAULTS,
    catch_up_through_the_sensor,
    fault_named,
    run_fault,
)
from telemetry_pipeline.reliability.loopback import LoopbackCollector, Reply, make_certificates

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_trust_from_the_environment(monkeypatch):
    """The untrusted certificate must stay untrusted: no CA bundle from the developer's shell."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "TELEMETRY_ALLOW_PLAIN_HTTP"):
        monkeypatch.delenv(name, raising=False)


def test_the_matrix_covers_the_faults_the_issue_names():
    names = {f.name for f in FAULTS}
    for required in ("refused connection", "reset mid-response", "reply slower than the read timeout",
                     "HTTP 500", "HTTP 502", "HTTP 503", "HTTP 504", "HTTP 429 with Retry-After: 1", "HTTP 400",
                     "HTTP 401", "HTTP 403", "HTTP 404", "HTTP 413 with Retry-After: 0", "untrusted TLS certificate",
                     "redirect 302 to another host", "huge reply body on success"):
        assert required in names
    assert RETRIES >= 3  # the contract: at least three retries


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault, tmp_path):
    result = run_fault(fault, tmp_path)
    assert result.problems == []
    # The night arrives once the fault clears, with the bytes and keys of every earlier try.
    assert result.delivered_later and result.same_bytes and result.same_key
    assert result.requests_elsewhere == 0
    if fault.failure:
        assert result.attempts == (RETRIES + 1 if fault.retried else 1)
        assert fault.failure in result.failure and "\n" not in result.failure and KEY not in result.failure
    if fault.retried and fault.kind == "reply":
        assert result.recovered_in_run


@pytest.mark.parametrize("name", SENSOR_FAULTS)
def test_the_sensor_delivers_the_failed_night_later_with_the_frozen_bytes(name, tmp_path):
    result = catch_up_through_the_sensor(fault_named(name), tmp_path)
    assert result.problems == []
    assert result.failed_run and fault_named(name).failure in result.failed_run
    assert result.asked_during_backoff == 0
    assert result.delivered == 1 and result.same_bytes and result.same_key and result.settled


# --- the same properties, stated plainly on their own


def test_a_redirect_to_another_host_never_receives_the_key():
    with LoopbackCollector(host="127.0.0.2") as elsewhere, LoopbackCollector() as collector:
        collector.always(Reply(307, headers=(("Location", f"{elsewhere.url}/phone-home"),)))
        with pytest.raises(DeliveryFailed) as failed:
            post_payload(collector.url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
    assert failed.value.status == 307 and failed.value.attempts == 1
    assert elsewhere.requests == []
    assert [r.header("X-CS-Phone-Home-Key") for r in collector.requests] == [KEY]


def test_an_untrusted_certificate_is_refused_and_trusted_only_when_the_operator_says_so(tmp_path, monkeypatch):
    certificates = make_certificates(tmp_path)
    with LoopbackCollector(tls=certificates.server_context()) as collector:
        with pytest.raises(DeliveryFailed) as failed:
            post_payload(collector.url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
        assert "TLS certificate not trusted" in str(failed.value) and failed.value.attempts == 1
        assert collector.wait_until(lambda c: c.refused_handshakes == 1)
        assert collector.requests == []  # nothing went, the key least of all
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates.ca_path))  # the operator trusts the CA
        delivery = post_payload(collector.url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
    assert delivery.outcome == "sent" and [r.body for r in collector.requests] == [BODY]


@pytest.mark.parametrize("status", [200, 503])
def test_a_huge_reply_is_never_read_whole(status):
    with LoopbackCollector() as collector:
        collector.always(Reply(status, body_size=HUGE))
        try:
            post_payload(collector.url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
        except DeliveryFailed as failed:
            assert failed.status == 503 and failed.attempts == RETRIES + 1
    # Only what fits the socket buffers left the collector, over every try; not 10 GiB.
    assert 0 < collector.body_bytes_written < faults.READ_BOUND


def test_a_reply_cut_after_a_2xx_status_is_a_delivery():
    with LoopbackCollector() as collector:
        collector.always(Reply(202, body_size=1000, cut_after=10))
        delivery = post_payload(collector.url, KEY, INSTALLATION, NIGHT, PAYLOAD, FAST)
    assert (delivery.outcome, delivery.status, delivery.attempts) == ("sent", 202, 1)


# --- the published figures


def test_the_published_page_shows_every_case_of_the_tables():
    """docs/RELIABILITY.md is generated; a case added without regenerating it fails here."""
    page = (REPOSITORY / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    assert page.startswith("# Reliability, privacy and bad input")
    assert "Generated by `telemetry-pipeline reliability-report`" in page
    for fault in FAULTS:
        assert f"| {fault.name} |" in page, fault.name
    for case in BAD_INPUTS:
        assert f"| {case.name} | `{case.where}` |" in page, case.name
    assert re.search(r"\| nights lost \| \*\*0\*\* \|", page)
    assert re.search(r"\| key leaks found \| \*\*0\*\* \|", page)
    assert re.search(r"\| emails leaked \| \*\*0\*\* \|", page)
    assert "**NO**" not in page


def test_the_report_command_is_there(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["reliability-report", "--help"])
    assert done.value.code == 0
    assert "--postgres" in capsys.readouterr().out


def test_the_report_renders_what_was_measured(tmp_path):
    from telemetry_pipeline.reliability import bad_input, privacy
    from telemetry_pipeline.reliability.report import Figures, render

    figures = Figures(
        faults=[run_fault(fault_named("HTTP 401"), tmp_path / "fault")],
        bad_inputs=[bad_input.run_bad_input(BAD_INPUTS[0], "sqlite", tmp_path / "bad")],
        installations={"sqlite": [privacy.check_installation(
            privacy.random_installation(privacy.SeededPicker(7)), tmp_path / "privacy")]},
    )
    page = render(figures, str(tmp_path))
    assert "| faults tried | 1 |" in page and "| faults survived | 1 of 1 |" in page
    assert "| bad inputs answered | 1 of 1 |" in page
    assert "HTTP 401 Unauthorized after 1 attempt (not retried)" in page
    assert "127.0.0.1:PORT" in page and str(tmp_path) not in page  # nothing that changes from run to run
