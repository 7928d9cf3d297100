"""What `dagster dev` shows: three groups, lineage from every extract to the publish, automation."""

import dagster as dg

from telemetry_pipeline import defs

EXTRACTS = {"companies", "teams", "users", "code_reviews", "user_activity"}


def _graph():
    return defs.resolve_asset_graph()


def test_assets_fall_into_the_three_groups():
    groups = {}
    for key in _graph().get_all_asset_keys():
        groups.setdefault(_graph().get(key).group_name, set()).add(key.to_user_string())
    assert groups == {"extract": EXTRACTS, "transform": {"night_summary"}, "publish": {"phone_home_delivery"}}


def test_lineage_runs_from_every_extract_through_the_summary_to_the_publish():
    graph = _graph()
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("night_summary")).parent_keys} == EXTRACTS
    assert graph.get(dg.AssetKey("phone_home_delivery")).parent_keys == {dg.AssetKey("night_summary")}


def test_every_asset_is_described_owned_and_kinded():
    for key in _graph().get_all_asset_keys():
        node = _graph().get(key)
        assert node.description and "\n" not in node.description.strip(), key
        assert node.owners == ["team:telemetry"], key
        assert node.kinds, key
        assert node.partitions_def is not None and node.backfill_policy == dg.BackfillPolicy.single_run(), key


def test_checks_guard_the_summary_and_block():
    check_keys = {k.name for k in _graph().asset_check_keys}
    assert check_keys == {"no_email_outside_free_companies", "payload_has_documented_keys"}
    for spec in defs.get_repository_def().asset_checks_defs_by_key.values():
        assert all(s.blocking for s in spec.check_specs)


def test_the_schedule_and_the_sensor_run_by_default():
    repository = defs.get_repository_def()
    assert repository.get_schedule_def("nightly_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    assert repository.get_sensor_def("phone_home_sensor").default_status == dg.DefaultSensorStatus.RUNNING
