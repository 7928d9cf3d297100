"""The schedule's run requests and the publish sensor, evaluated on a real Dagster instance."""

import datetime as dt

import dagster as dg
import pytest

from telemetry_pipeline.automation import (
    NIGHT_TAG,
    SUMMARY_TAG,
    nightly_schedule,
    phone_home_sensor,
    plan_publish,
    retry_backoff_seconds,
)
from telemetry_pipeline.assets.extract import EXTRACT_ASSETS
from telemetry_pipeline.definitions import ASSETS
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline_tests.installation import Installation, at, write_config
from telemetry_pipeline_tests.stand_ins import summary_without_checks

NIGHT = "2026-11-26"
BUILD_ASSETS = [a for a in ASSETS if a.key != dg.AssetKey("phone_home_delivery")]
PUBLISH_ASSET = next(a for a in ASSETS if a.key == dg.AssetKey("phone_home_delivery"))


@pytest.mark.parametrize(
    "tick, night",
    [
        (dt.datetime(2026, 11, 27, 6, 0, tzinfo=dt.timezone.utc), "2026-11-26"),
        (dt.datetime(2027, 1, 1, 6, 0, tzinfo=dt.timezone.utc), "2026-12-31"),
        (dt.datetime(2026, 3, 1, 0, 0, tzinfo=dt.timezone.utc), "2026-02-28"),
    ],
)
def test_schedule_requests_the_last_complete_night(tick, night):
    request = nightly_schedule(dg.build_schedule_context(scheduled_execution_time=tick))
    assert request.partition_key == night
    assert request.run_key == night


def test_schedule_runs_at_six_utc_by_default():
    assert nightly_schedule.cron_schedule == "0 6 * * *"
    assert nightly_schedule.execution_timezone == "UTC"
    assert nightly_schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_backoff_starts_near_a_minute_and_is_capped_near_an_hour():
    assert [retry_backoff_seconds(n) for n in (1, 2, 3, 7, 20)] == [60, 120, 240, 3600, 3600]


@pytest.fixture
def setup(tmp_path, collector):
    """A free installation with a paid neighbour option, its config, and a real instance."""

    def make(*, paid=False, opted_out=False):
        installation = (
            Installation()
            .company("c-free", plan="FREEPLAN")
            .team("t-free", "c-free")
            .user("u-1", teams=["t-free"], admin_of=["t-free"])
            .post("p-1", "u-1", at(NIGHT, 2))
        )
        if paid:
            installation.company("c-paid", plan="ENTERPRISE").team("t-paid", "c-paid")
        url = installation.write_sqlite(tmp_path / f"source-{paid}-{opted_out}.db")
        extra = {"disablePhoneHome": True} if opted_out else {}
        config = write_config(tmp_path / f"config-{paid}-{opted_out}.json", phoneHomeUrl=collector.url, **extra)
        return {
            "source_database": SourceDatabaseResource(url=url),
            "codestream_config": CodeStreamConfigResource(path=str(config)),
            "phone_home": PhoneHomeResource(outbox_dir=str(tmp_path / "outbox"), retries=1, backoff_factor=0.01),
            "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
        }

    with dg.instance_for_test() as instance:
        yield make, instance


def _tick(instance, resources, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"codestream_config": resources["codestream_config"]}
    )
    result = phone_home_sensor(context)
    return result, context.cursor


def _build(instance, resources, *, with_checks=True):
    assets = BUILD_ASSETS if with_checks else [*EXTRACT_ASSETS, summary_without_checks()]
    assert dg.materialize(assets, partition_key=NIGHT, instance=instance, resources=resources).success


def test_sensor_requests_a_new_summary_once_and_then_settles(setup, collector):
    make, instance = setup
    resources = make()
    first, cursor = _tick(instance, resources)
    assert isinstance(first, dg.SkipReason) and "no new night summary" in first.skip_message

    _build(instance, resources)
    requests, cursor = _tick(instance, resources, cursor)
    assert [r.partition_key for r in requests] == [NIGHT]
    assert requests[0].run_key.startswith(f"{NIGHT}:") and requests[0].run_key.endswith(":0")
    assert requests[0].tags[NIGHT_TAG] == NIGHT

    # Not launched yet: the next tick asks again with the same run key, which Dagster dedupes.
    again, cursor = _tick(instance, resources, cursor)
    assert [r.run_key for r in again] == [requests[0].run_key]

    published = dg.materialize(
        [PUBLISH_ASSET, *BUILD_ASSETS], selection=[PUBLISH_ASSET.key], partition_key=NIGHT,
        instance=instance, resources=resources, tags=requests[0].tags,
    )
    assert published.success
    assert len(collector.requests) == 1
    settled, cursor = _tick(instance, resources, cursor)
    assert isinstance(settled, dg.SkipReason)
    assert '"pending": {}' in cursor


def test_sensor_skips_an_opted_out_paid_installation_with_the_reason(setup, collector):
    make, instance = setup
    resources = make(paid=True, opted_out=True)
    _build(instance, resources)
    result, cursor = _tick(instance, resources)
    assert isinstance(result, dg.SkipReason)
    assert "opted out" in result.skip_message and NIGHT in result.skip_message
    assert '"pending": {}' in cursor  # an opted-out night is never sent, not even later
    assert collector.requests == []


def test_sensor_requests_a_free_installation_despite_its_opt_out(setup):
    make, instance = setup
    resources = make(paid=False, opted_out=True)
    _build(instance, resources)
    result, _ = _tick(instance, resources)
    assert [r.partition_key for r in result] == [NIGHT]


def test_sensor_holds_a_summary_whose_checks_did_not_run(setup):
    make, instance = setup
    resources = make()
    _build(instance, resources, with_checks=False)
    result, _ = _tick(instance, resources)
    assert isinstance(result, dg.SkipReason)
    assert "did not run" in result.skip_message


def test_failed_delivery_is_retried_after_backoff_with_a_new_run_key(setup, collector):
    make, instance = setup
    resources = make()
    _build(instance, resources)
    requests, cursor = _tick(instance, resources)
    collector.reply_with(401)
    failed = dg.materialize(
        [PUBLISH_ASSET, *BUILD_ASSETS], selection=[PUBLISH_ASSET.key], partition_key=NIGHT,
        instance=instance, resources=resources, tags=requests[0].tags, raise_on_error=False,
    )
    assert not failed.success

    now = dt.datetime.now(dt.timezone.utc)
    waiting = plan_publish(instance, cursor, False, now)
    assert waiting.run_requests == []
    assert any("1 failed tries" in note for note in waiting.notes)

    later = plan_publish(instance, cursor, False, now + dt.timedelta(seconds=61))
    assert [r.run_key for r in later.run_requests] == [requests[0].run_key[:-1] + "1"]
    assert later.run_requests[0].tags[SUMMARY_TAG] == requests[0].tags[SUMMARY_TAG]


def test_a_night_built_while_opted_out_is_never_sent_even_after_the_opt_out_is_lifted(setup, collector, tmp_path):
    make, instance = setup
    opted_out = make(paid=True, opted_out=True)
    _build(instance, opted_out)
    _, cursor = _tick(instance, opted_out)

    lifted = make(paid=True, opted_out=False)  # the customer lifts the opt-out, and the night is rebuilt
    _build(instance, lifted)
    result, cursor = _tick(instance, lifted, cursor)
    assert isinstance(result, dg.SkipReason)
    assert "built while opted out" in result.skip_message

    direct = dg.materialize(
        [PUBLISH_ASSET, *BUILD_ASSETS], selection=[PUBLISH_ASSET.key], partition_key=NIGHT,
        instance=instance, resources=lifted,
    )
    metadata = direct.asset_materializations_for_node("phone_home_delivery")[0].metadata
    assert metadata["outcome"].value == "not sent"
    assert "built while opted out" in metadata["reason"].value
    assert collector.requests == []
