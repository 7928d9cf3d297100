"""The publish gate's reading of the instance: every summary of a backfill's nights, newest first."""

import dagster as dg

from telemetry_pipeline import gate


def _summary(instance: dg.DagsterInstance, night: str, send: bool) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=gate.SUMMARY_KEY, partition=night, metadata={"send": send, "send_reason": f"built {send}"}))


def test_the_history_of_many_nights_is_read_page_after_page(monkeypatch):
    monkeypatch.setattr(gate, "_HISTORY_PAGE", 2)
    with dg.DagsterInstance.ephemeral() as instance:
        for night, send in [("2026-11-24", True), ("2026-11-25", False), ("2026-11-25", True), ("2026-11-26", True),
                            ("2026-11-23", True)]:
            _summary(instance, night, send)
        history = gate.summary_history(instance, ["2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"])
    assert {night: [r.asset_materialization.metadata["send"].value for r in records]
            for night, records in history.items()} == {
        "2026-11-24": [True], "2026-11-25": [True, False], "2026-11-26": [True], "2026-11-27": []}
    assert gate.opted_out_gate(history["2026-11-25"]) == gate.Gate(
        False, "the night was built while opted out (built False)")
    assert gate.opted_out_gate(history["2026-11-24"]).open
