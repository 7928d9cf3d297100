"""`telemetry-pipeline history` and the installation's own Parquet history, over a real Dagster
instance with real runs, the archive, the outbox, and a real loopback collector."""

import json
import os
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest

from telemetry_pipeline.assets.extract import EXTRACT_ASSETS
from telemetry_pipeline.automation import publish_job
from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.definitions import ASSETS
from telemetry_pipeline.delivery import RetrySettings
from telemetry_pipeline.history import default_sources, night_history
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline.upload import upload_outbox
from telemetry_pipeline_tests.installation import Installation, at, write_config
from telemetry_pipeline_tests.stand_ins import summary_without_checks

NIGHTS = [f"2024-03-{day:02d}" for day in range(1, 10)]
SENT, OPTED_OUT, FAILED, PENDING, OUTBOX, BLOCKED, KILLED = NIGHTS[:7]
KEY = "s3cr3t-phone-home-key"
BUILD = dg.AssetSelection.assets("night_summary").upstream()


@pytest.fixture
def site(tmp_path, collector):
    """A free and a paid company; configurations online, opted out and offline; paths of its own."""
    i = Installation().company("c-free", plan="FREEPLAN").company("c-paid", plan="BUSINESS")
    i.team("t-free", "c-free").team("t-paid", "c-paid").user("u-1", teams=["t-free"]).user("u-2", teams=["t-paid"])
    for n, night in enumerate(NIGHTS):
        i.post(f"p-{night}", "u-1", at(night, 1 + n))
    url = i.write_sqlite(tmp_path / "source.db")
    configs = {
        "online": write_config(tmp_path / "online.json", phoneHomeUrl=collector.url),
        "opted out": write_config(tmp_path / "opted.json", phoneHomeUrl=collector.url, disablePhoneHome=True),
        "offline": write_config(tmp_path / "offline.json"),
    }

    def resources(config="online") -> dict:
        return {
            "source_database": SourceDatabaseResource(url=url),
            "codestream_config": CodeStreamConfigResource(path=str(configs[config])),
            "phone_home": PhoneHomeResource(outbox_dir=str(tmp_path / "outbox"), archive_dir=str(tmp_path / "archive"),
                                            retries=1, backoff_factor=0.01),
            "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
        }

    return {"resources": resources, "configs": configs, "tmp": tmp_path}


def materialize(instance, site, night, config="online", selection=None, assets=None):
    return dg.materialize(assets or ASSETS, partition_key=night, instance=instance,
                          resources=site["resources"](config), selection=selection, raise_on_error=False)


def run_range(instance, site, first, last):
    defs = dg.Definitions(assets=ASSETS, resources=site["resources"]())
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def history(instance, site) -> dict:
    tmp = site["tmp"]
    states = night_history(instance, [tmp / "archive", tmp / "outbox" / "sent"], tmp / "outbox")
    return {s.night: s for s in states}


def test_each_night_is_listed_with_its_state_and_why(site, collector):
    with dg.instance_for_test() as instance:
        assert materialize(instance, site, SENT).success
        assert materialize(instance, site, OPTED_OUT, "opted out").success
        collector.reply_with(401)
        assert not materialize(instance, site, FAILED).success
        assert materialize(instance, site, PENDING, selection=BUILD).success
        assert materialize(instance, site, OUTBOX, "offline").success
        # A summary built without its checks: the publish refuses it.
        assert materialize(instance, site, BLOCKED, assets=[*EXTRACT_ASSETS, summary_without_checks()]).success
        assert materialize(instance, site, BLOCKED, selection=["phone_home_delivery"]).success
        # A publish run killed mid-send, as the sensor finds and reports it.
        run = instance.create_run_for_job(dg.Definitions(jobs=[publish_job], assets=ASSETS,
                                          resources=site["resources"]()).resolve_job_def("publish_job"),
                                          tags={"dagster/partition": KILLED})
        instance.report_run_failed(run, message="no end after 3600 s: presumed killed")

        states = history(instance, site)
        assert {night: s.state for night, s in states.items()} == {
            SENT: "sent", OPTED_OUT: "opted out", FAILED: "failed", PENDING: "pending", OUTBOX: "in outbox",
            BLOCKED: "blocked", KILLED: "failed",
        }
        sent = states[SENT]
        assert (sent.http_status, sent.attempts) == (200, 1)
        body = (site["tmp"] / "archive" / f"inst-1_{SENT}.json").read_bytes()
        assert body == collector.delivered[0]["body"] and sent.archived_body.endswith(f"inst-1_{SENT}.json")
        assert sent.body_sha256 in sent.detail and "HTTP 200" in sent.detail
        assert "disablePhoneHome is true" in states[OPTED_OUT].detail and "paid plan" in states[OPTED_OUT].detail
        assert "HTTP 401" in states[FAILED].detail and states[FAILED].run_id
        assert states[PENDING].detail.startswith("summary built")
        assert states[OUTBOX].detail == (
            f"{site['tmp'] / 'outbox' / f'inst-1_{OUTBOX}.json'}: waiting for `telemetry-pipeline upload`"
        )
        assert "did not run" in states[BLOCKED].detail
        assert "presumed killed" in states[KILLED].detail
        assert all(KEY not in json.dumps(s.as_dict()) for s in states.values())

        # The failed night goes later; the outbox night is uploaded from elsewhere: both are sent.
        assert materialize(instance, site, FAILED).success
        config = load_installation_config(site["configs"]["online"])
        upload_outbox(site["tmp"] / "outbox", config, RetrySettings(retries=0))
        states = history(instance, site)
        assert states[FAILED].state == "sent" and states[FAILED].http_status == 200
        assert states[OUTBOX].state == "sent" and "by telemetry-pipeline upload" in states[OUTBOX].detail


def test_a_range_failing_midway_shows_sent_failed_and_pending_nights(site, collector):
    first, middle, last = NIGHTS[6:9]
    collector.reply_with(200, 401)
    with dg.instance_for_test() as instance:
        assert not run_range(instance, site, first, last).success
        states = history(instance, site)
        assert [(n, states[n].state) for n in (first, middle, last)] == [
            (first, "sent"), (middle, "failed"), (last, "pending")
        ]
        assert "HTTP 401" in states[middle].detail


def test_a_failed_build_is_a_failed_night_until_it_is_rebuilt(site, tmp_path):
    with dg.instance_for_test() as instance:
        broken = {**site["resources"](), "source_database": SourceDatabaseResource(url=f"sqlite://{tmp_path}/no.db")}
        result = dg.materialize(ASSETS, partition_key=NIGHTS[0], instance=instance,
                                resources=broken, raise_on_error=False, selection=BUILD)
        assert not result.success
        [state] = night_history(instance, [], None)
        assert state.state == "failed" and "no.db" in state.detail and state.detail.startswith("step ")
        assert materialize(instance, site, NIGHTS[0], selection=BUILD).success
        [state] = night_history(instance, [], None)
        assert state.state == "pending"


def test_the_history_command_reads_dagster_home_and_the_archive(site, tmp_path, collector):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert materialize(instance, site, SENT).success
        assert materialize(instance, site, OPTED_OUT, "opted out").success
    env = {**os.environ, "DAGSTER_HOME": str(home), "XDG_DATA_HOME": str(tmp_path / "xdg"),
           "TELEMETRY_ARCHIVE_DIR": str(tmp_path / "archive"), "TELEMETRY_OUTBOX_DIR": str(tmp_path / "outbox")}
    cli = [sys.executable, "-m", "telemetry_pipeline.cli", "history"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(f"# from DAGSTER_HOME={home}")
    assert [line.split()[:2] for line in lines[1:]] == [[SENT, "sent"], [OPTED_OUT, "opted"]]

    done = subprocess.run([*cli, "--json", "--from", OPTED_OUT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [entry] = json.loads(done.stdout)
    assert (entry["night"], entry["state"]) == (OPTED_OUT, "opted out")

    done = subprocess.run([*cli, "--to", "2024-3-1"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == (
        "telemetry-pipeline: error: --to '2024-3-1' is not a night: expected YYYY-MM-DD"
    )


def test_without_dagster_home_the_archive_and_outbox_still_tell(tmp_path, monkeypatch, site):
    monkeypatch.setenv("TELEMETRY_ARCHIVE_DIR", str(tmp_path / "archive"))
    monkeypatch.setenv("TELEMETRY_OUTBOX_DIR", str(tmp_path / "outbox"))
    archives, outbox = default_sources()
    assert archives == [tmp_path / "archive", tmp_path / "outbox" / "sent"] and outbox == tmp_path / "outbox"
    with dg.instance_for_test() as instance:
        assert materialize(instance, site, SENT).success
        assert materialize(instance, site, OUTBOX, "offline").success
    states = {s.night: s.state for s in night_history(None, archives, outbox)}
    assert states == {SENT: "sent", OUTBOX: "in outbox"}


# ---------------------------------------------------------------------------------------------
# The installation's own history: every night's summary, one Parquet dataset
# ---------------------------------------------------------------------------------------------

def test_all_nights_summaries_read_as_one_parquet_dataset_even_when_opted_out(site):
    """What the README shows: pandas reads the folder as one table with a night column."""
    with dg.instance_for_test() as instance:
        for night in NIGHTS[:3]:
            assert materialize(instance, site, night, "opted out").success  # the phone home is off
    folder = site["tmp"] / "storage" / "telemetry" / "night_summary"
    assert sorted(p.name for p in folder.iterdir()) == [f"{n}.parquet" for n in NIGHTS[:3]]

    nights = pd.read_parquet(folder).sort_values("night")
    assert list(nights["night"]) == NIGHTS[:3]
    assert not nights["send"].any() and (nights["paid_companies"] == 1).all()
    assert list(nights["active_users"]) == [1, 1, 1] and (nights["users"] == 2).all()
    # The README's example: a night's payload, and a user's activity across nights.
    payloads = nights.set_index("night")["payload"].map(json.loads)
    assert payloads[NIGHTS[1]]["date"] == NIGHTS[1]
    replies = [next(u["replies"] for u in p["users"] if u["id"] == "u-1") for p in payloads]
    assert replies == [1, 1, 1]
