"""The archive of what was sent, and each night's own metadata on the publish asset: real Dagster
runs on a real instance, a real SQLite installation, a real loopback collector."""

import json
import stat

import dagster as dg
import pytest

from telemetry_pipeline import archive
from telemetry_pipeline.definitions import ASSETS, default_resources
from telemetry_pipeline.delivery import Delivery
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.gate import PUBLISH_KEY
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline.rules.payload import sha256_hex
from telemetry_pipeline_tests.installation import Installation, at, write_config

A, D, C = "2024-02-28", "2024-02-29", "2024-03-01"
KEY = "s3cr3t-phone-home-key"


@pytest.fixture(scope="module")
def source_url(tmp_path_factory):
    """A free installation whose payload differs each night (a new post, a new user on D)."""
    i = Installation().company("c-1", plan="FREEPLAN").team("t-1", "c-1")
    i.user("u-1", teams=["t-1"], created_at=at(A, -48)).user("u-2", teams=["t-1"], created_at=at(D, 3))
    for night, hours in ((A, 1), (D, 2), (C, 3)):
        i.post(f"p-{night}", "u-1", at(night, hours), team_id="t-1")
    return i.write_sqlite(tmp_path_factory.mktemp("source") / "codestream.db")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def resources(tmp_path, source_url, config, archive_dir=None) -> dict:
    return {
        "source_database": SourceDatabaseResource(url=source_url),
        "codestream_config": CodeStreamConfigResource(path=str(config)),
        "phone_home": PhoneHomeResource(outbox_dir=str(tmp_path / "outbox"), archive_dir=archive_dir or
                                        str(tmp_path / "archive"), retries=2, backoff_factor=0.01),
        "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
    }


def run_nights(instance, resources_, first=A, last=C):
    defs = dg.Definitions(assets=ASSETS, resources=resources_)
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def publish_metadata(instance, night) -> dict | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=PUBLISH_KEY, asset_partitions=[night]), limit=1
    ).records
    if not records:
        return None
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def assert_no_key_in_files(folder):
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_each_delivered_night_is_archived_as_the_exact_bytes_sent_with_its_receipt(
    tmp_path, source_url, instance, collector
):
    collector.reply_with(200, 503)  # night D needs a second attempt
    config = write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url)
    result = run_nights(instance, resources(tmp_path, source_url, config))
    assert result.success
    folder = tmp_path / "archive"
    received = {r["headers"]["Idempotency-Key"].split(":")[1]: r["body"] for r in collector.delivered}
    assert sorted(received) == [A, D, C]

    for night, attempts in ((A, 1), (D, 2), (C, 1)):
        body_file = folder / f"inst-1_{night}.json"
        assert body_file.read_bytes() == received[night]  # byte for byte what the collector got
        receipt = json.loads((folder / f"inst-1_{night}.receipt.json").read_text())
        assert receipt["installationId"] == "inst-1" and receipt["idempotencyKey"] == f"inst-1:{night}"
        [delivery] = receipt["deliveries"]
        assert (delivery["httpStatus"], delivery["attempts"]) == (200, attempts)
        assert delivery["bodySha256"] == sha256_hex(received[night])
        assert delivery["sentBy"] == f"dagster run {result.run_id}"
        assert delivery["destination"] == f"{collector.url}/phone-home"
        for path in (body_file, folder / f"inst-1_{night}.receipt.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

        # The UI's materialization of this partition carries this night's own outcome.
        metadata = publish_metadata(instance, night)
        payload = received[night][1:-1]
        assert metadata["outcome"] == "sent"
        assert (metadata["http_status"], metadata["attempts"]) == (200, attempts)
        assert metadata["payload_sha256"] == sha256_hex(payload)
        assert metadata["payload_bytes"] == len(payload)
        assert metadata["idempotency_key"] == f"inst-1:{night}"
        assert metadata["archived_body"] == str(body_file)
    assert len({publish_metadata(instance, n)["payload_sha256"] for n in (A, D, C)}) == 3
    assert_no_key_in_files(folder)
    logs = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    assert not any(KEY in text for text in logs)


def test_a_failure_midway_keeps_the_nights_already_sent_in_the_archive_and_in_the_ui(
    tmp_path, source_url, instance, collector
):
    collector.reply_with(200, 401)
    config = write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url)
    result = run_nights(instance, resources(tmp_path, source_url, config))
    assert not result.success
    assert [r["headers"]["Idempotency-Key"] for r in collector.requests] == [f"inst-1:{A}", f"inst-1:{D}"]
    assert [n.night for n in archive.read_archive(tmp_path / "archive")] == [A]
    sent = publish_metadata(instance, A)
    assert sent["outcome"] == "sent" and sent["archived_body"] == str(tmp_path / "archive" / f"inst-1_{A}.json")
    assert publish_metadata(instance, D) is None and publish_metadata(instance, C) is None


def test_offline_nights_go_to_the_outbox_and_not_to_the_archive(tmp_path, source_url, instance):
    config = write_config(tmp_path / "cs.json")
    result = run_nights(instance, resources(tmp_path, source_url, config), first=D, last=D)
    assert result.success
    assert (tmp_path / "outbox" / f"inst-1_{D}.json").exists()
    assert not (tmp_path / "archive").exists()
    metadata = publish_metadata(instance, D)
    assert metadata["outcome"] == "written to outbox" and metadata["archived_body"] == "none"


def test_an_archive_that_cannot_be_written_fails_the_run_and_says_the_night_was_sent(
    tmp_path, source_url, instance, collector
):
    (tmp_path / "not-a-folder").write_text("")
    config = write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url)
    result = run_nights(instance, resources(tmp_path, source_url, config, str(tmp_path / "not-a-folder")),
                        first=D, last=D)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    message = failure.user_failure_data.description
    assert f"night {D} was sent (HTTP 200) but not archived" in message and "not-a-folder" in message
    assert "\n" not in message and KEY not in message
    assert len(collector.delivered) == 1
    assert publish_metadata(instance, D) is None  # so the sensor sends it again, and archives it then


def test_telemetry_archive_dir_sets_where_the_archive_goes(tmp_path, source_url, instance, collector, monkeypatch):
    config = write_config(tmp_path / "cs.json", phoneHomeUrl=collector.url)
    for name, value in {"TELEMETRY_SOURCE_URL": source_url, "CODESTREAM_CONFIG": str(config),
                        "TELEMETRY_ARCHIVE_DIR": str(tmp_path / "chosen"),
                        "TELEMETRY_STORAGE_URL": str(tmp_path / "storage")}.items():
        monkeypatch.setenv(name, value)
    result = run_nights(instance, default_resources(), first=C, last=C)
    assert result.success
    assert sorted(p.name for p in (tmp_path / "chosen").iterdir()) == [f"inst-1_{C}.json", f"inst-1_{C}.receipt.json"]


def test_without_the_variable_the_archive_is_under_the_data_folder(tmp_path):
    assert PhoneHomeResource().archive() == str(tmp_path / "xdg" / "telemetry-pipeline" / "archive")


# ---------------------------------------------------------------------------------------------
# The archive module on its own
# ---------------------------------------------------------------------------------------------

def _sent(status=200, attempts=1) -> Delivery:
    return Delivery("sent", "https://collector.example/phone-home", attempts, status)


def test_a_night_sent_again_with_other_bytes_keeps_both_bodies(tmp_path):
    first, second = b'{"date":"2024-02-29","v":1}', b'{"date":"2024-02-29","v":2}'
    archive.record_delivery(tmp_path, "inst-1", D, first, _sent(), sent_by="run 1")
    archive.record_delivery(tmp_path, "inst-1", D, first, _sent(attempts=3), sent_by="run 2")  # same bytes
    entry = archive.record_delivery(tmp_path, "inst-1", D, second, _sent(), sent_by="run 3")

    assert [d["sentBy"] for d in entry.deliveries] == ["run 1", "run 2", "run 3"]
    assert (tmp_path / f"inst-1_{D}.json").read_bytes() == b"[" + second + b"]"
    kept = tmp_path / f"inst-1_{D}.{sha256_hex(b'[' + first + b']')[:16]}.json"
    assert kept.read_bytes() == b"[" + first + b"]" and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [d["bodyFile"] for d in entry.deliveries] == [kept.name, kept.name, f"inst-1_{D}.json"]
    assert archive.read_night(tmp_path, "inst-1", D).problems() == []


def test_a_body_changed_after_it_was_archived_is_reported(tmp_path):
    archive.record_delivery(tmp_path, "inst-1", D, b'{"a":1}', _sent(), sent_by="run 1")
    (tmp_path / f"inst-1_{D}.json").write_bytes(b'[{"a":2}]')
    assert archive.read_night(tmp_path, "inst-1", D).problems() == [
        f"inst-1_{D}.json does not match the sha256 its receipt records"
    ]
    (tmp_path / f"inst-1_{D}.json").unlink()
    assert archive.read_night(tmp_path, "inst-1", D).problems() == [f"inst-1_{D}.json is missing"]


def test_a_damaged_receipt_is_named_in_one_line(tmp_path):
    (tmp_path / f"inst-1_{D}.receipt.json").write_text('{"installationId": "inst-1"')
    with pytest.raises(TelemetryError, match=f"archive receipt .*inst-1_{D}.receipt.json: not valid JSON"):
        archive.read_archive(tmp_path)
    (tmp_path / f"inst-1_{D}.receipt.json").write_text('{"installationId": "inst-1", "night": "x"}')
    with pytest.raises(TelemetryError, match="key deliveries missing or malformed"):
        archive.read_archive(tmp_path)
