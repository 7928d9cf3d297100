"""`telemetry-pipeline upload DIR`: an air-gapped installation's outbox sent later, against a real
loopback collector, through the real command line."""

import fcntl
import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from telemetry_pipeline import archive
from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.delivery import Delivery, RetrySettings, write_to_outbox
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.rules.payload import encode_payload
from telemetry_pipeline.upload import pending_nights, upload_outbox
from telemetry_pipeline_tests.installation import write_config

CLI = [sys.executable, "-m", "telemetry_pipeline.cli"]
KEY = "s3cr3t-phone-home-key"
A, D, C = "2026-11-24", "2026-11-25", "2026-11-26"
FAST = RetrySettings(retries=1, backoff_factor=0.01, connect_timeout=2, read_timeout=5)


def payload(night: str, installation: str = "inst-1", note: str = "") -> bytes:
    """A payload with the contract's keys; each night differs, and non-ASCII text checks the bytes."""
    return encode_payload({
        "date": night, "installationId": installation, "installationVersion": "14.2.0",
        "outboundEmailEnabled": True, "slackInteractiveComponentsEnabled": False, "integrations": ["github"],
        "companies": [{"id": "c1", "name": f"Zürich AG {note}", "isDeactivated": False,
                       "createdAt": "2026-01-01T00:00:00.000Z", "creatorId": None, "plan": "FREEPLAN"}],
        "teams": [], "users": [], "codeReviews": [],
    })


@pytest.fixture
def outbox(tmp_path):
    """An outbox as offline mode leaves it: three nights, written out of order."""
    folder = tmp_path / "outbox"
    for night in (C, A, D):
        write_to_outbox(folder, "inst-1", night, payload(night))
    return folder


@pytest.fixture
def env(tmp_path, collector):
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    return {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "CODESTREAM_CONFIG": str(config)}


def upload(folder, env):
    return subprocess.run([*CLI, "upload", str(folder)], env=env, capture_output=True, text=True, timeout=120)


def pending(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def test_upload_sends_each_night_oldest_first_exactly_as_written_and_marks_it_sent(outbox, env, collector, tmp_path):
    written = {night: (outbox / f"inst-1_{night}.json").read_bytes() for night in (A, D, C)}
    done = upload(outbox, env)
    assert done.returncode == 0, done.stderr

    assert [r["headers"]["Idempotency-Key"] for r in collector.requests] == [f"inst-1:{n}" for n in (A, D, C)]
    for request, night in zip(collector.requests, (A, D, C)):
        assert request["path"] == "/phone-home"
        assert request["headers"]["X-CS-Phone-Home-Key"] == KEY
        assert request["headers"]["Content-Type"] == "application/json"
        assert request["body"] == b"[" + written[night] + b"]"  # the file's bytes, untouched

    assert pending(outbox) == []
    sent = outbox / "sent"
    for night in (A, D, C):
        body, receipt_file = sent / f"inst-1_{night}.json", sent / f"inst-1_{night}.receipt.json"
        assert body.read_bytes() == b"[" + written[night] + b"]"
        receipt = json.loads(receipt_file.read_text())
        assert receipt["idempotencyKey"] == f"inst-1:{night}"
        [delivery] = receipt["deliveries"]
        assert (delivery["httpStatus"], delivery["attempts"]) == (200, 1)
        assert delivery["bodySha256"] == archive.sha256_hex(body.read_bytes())
        assert delivery["payloadSha256"] == archive.sha256_hex(written[night])
        assert delivery["destination"] == f"{collector.url}/phone-home"
        for path in (body, receipt_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "codestream.json":
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [[A, "sent"], [D, "sent"], [C, "sent"]]
    assert lines[-1].startswith("3 sent, 0 already sent")


def test_a_second_run_sends_nothing_new(outbox, env, collector):
    assert upload(outbox, env).returncode == 0
    again = upload(outbox, env)
    assert again.returncode == 0, again.stderr
    assert len(collector.requests) == 3
    assert again.stdout.strip() == f"nothing to upload in {outbox}"


def test_a_failure_midway_stops_at_that_night_and_a_later_run_sends_the_rest(outbox, env, collector):
    collector.reply_with(200, 401)
    done = upload(outbox, env)
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()
    assert len(error) == 1, done.stderr
    assert f"inst-1_{D}.json not sent" in error[0] and "HTTP 401" in error[0]
    assert "1 sent before it, 2 still pending" in error[0]
    assert KEY not in done.stderr
    assert len(collector.requests) == 2  # C was not tried after D failed
    assert pending(outbox) == [f"inst-1_{D}.json", f"inst-1_{C}.json"]
    assert not (outbox / "sent" / f"inst-1_{D}.receipt.json").exists()

    retry = upload(outbox, env)
    assert retry.returncode == 0, retry.stderr
    keys = [r["headers"]["Idempotency-Key"] for r in collector.requests]
    assert keys == [f"inst-1:{A}", f"inst-1:{D}", f"inst-1:{D}", f"inst-1:{C}"]
    assert collector.requests[1]["body"] == collector.requests[2]["body"]  # the same bytes, the same key
    assert pending(outbox) == []
    assert len(collector.delivered) == 3


def test_a_night_whose_receipt_was_written_is_not_sent_again(outbox, collector, tmp_path):
    """A run that stopped after the receipt but before clearing the outbox: the next one clears it."""
    config = load_installation_config(write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url))
    archive.record_delivery(outbox / "sent", "inst-1", A, payload(A), Delivery("sent", collector.url, 1, 200),
                            sent_by="telemetry-pipeline upload")
    result = upload_outbox(outbox, config, FAST)
    assert [n.night for n in result.already_sent] == [A]
    assert [n.night for n in result.sent] == [D, C]
    assert [r["headers"]["Idempotency-Key"] for r in collector.requests] == [f"inst-1:{D}", f"inst-1:{C}"]
    assert pending(outbox) == []


def test_the_url_comes_from_cs_api_phone_home_url_over_the_configuration(outbox, collector, tmp_path):
    config = write_config(tmp_path / "cs.json", phoneHomeUrl="http://127.0.0.1:9/unused")
    env = {**os.environ, "CODESTREAM_CONFIG": str(config), "CS_API_PHONE_HOME_URL": collector.url}
    done = upload(outbox, env)
    assert done.returncode == 0, done.stderr
    assert len(collector.delivered) == 3


def test_an_unreachable_collector_is_retried_then_stated_in_one_line(outbox, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = load_installation_config(write_config(tmp_path / "cs.json", phoneHomeUrl=f"http://127.0.0.1:{port}"))
    with pytest.raises(TelemetryError) as raised:
        upload_outbox(outbox, config, FAST)
    message = str(raised.value)
    assert f"inst-1_{A}.json not sent" in message and "after 2 attempts" in message
    assert "\n" not in message and KEY not in message
    assert len(pending(outbox)) == 3


@pytest.mark.parametrize("name, content, says", [
    (f"inst-1_{D}.json", payload(A), "its date is '2026-11-24', its name says '2026-11-25'"),
    (f"other_{D}.json", payload(D), "its installationId is 'inst-1', its name says 'other'"),
    ("notes.json", b"{}", "the name is not <installationId>_<YYYY-MM-DD>.json"),
    (f"inst-1_{D}.json", b"not json", "not a JSON payload"),
    (f"inst-1_{D}.json", json.dumps({"date": D, "installationId": "inst-1"}).encode(), "not a phone-home payload"),
    ("inst-1_2026-02-30.json", payload("2026-02-30"), "is not a night"),
])
def test_a_bad_outbox_file_stops_the_upload_before_anything_is_sent(tmp_path, collector, name, content, says):
    folder = tmp_path / "outbox"
    write_to_outbox(folder, "inst-1", A, payload(A))
    (folder / name).write_bytes(content)
    config = load_installation_config(write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url))
    with pytest.raises(TelemetryError) as raised:
        upload_outbox(folder, config, FAST)
    assert says in str(raised.value) and name in str(raised.value)
    assert collector.requests == []


def test_writer_temporaries_and_the_sent_folder_are_not_pending(outbox):
    (outbox / ".pending-abc.json").write_bytes(b"half a fil")
    (outbox / "README.txt").write_text("copied from the installation on 2026-11-27")
    assert [n.night for n in pending_nights(outbox)] == [A, D, C]


@pytest.mark.parametrize("change, says", [
    ({"CODESTREAM_CONFIG": None}, "CODESTREAM_CONFIG is not set"),
    ({"phoneHomeUrl": None}, "no collector to upload to"),
    ({"key": None}, "universalSecrets.telemetry is missing"),
    ({"outbox": "missing"}, "does not exist"),
    ({"phoneHomeUrl": "http://collector.example"}, "plain http would send the phone-home key unencrypted"),
])
def test_what_upload_needs_is_named_in_one_line(outbox, collector, tmp_path, change, says):
    url = change.get("phoneHomeUrl", collector.url)
    config = write_config(tmp_path / "cs.json", **({"phoneHomeUrl": url} if url else {}))
    if "key" in change:
        document = json.loads(config.read_text())
        del document["universalSecrets"]
        config.write_text(json.dumps(document))
    env = {k: v for k, v in os.environ.items() if k != "CODESTREAM_CONFIG"}
    if "CODESTREAM_CONFIG" not in change:
        env["CODESTREAM_CONFIG"] = str(config)
    done = upload(tmp_path / change.get("outbox", "outbox"), env)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    assert collector.requests == [] and len(pending(outbox)) == 3


def test_two_uploads_of_one_outbox_never_run_at_once(outbox, collector, tmp_path):
    config = load_installation_config(write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url))
    with open(outbox / ".upload.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TelemetryError, match="another upload is running"):
            upload_outbox(outbox, config, FAST)
    assert collector.requests == []
    assert len(upload_outbox(outbox, config, FAST).sent) == 3
