"""The bad-input catalog (telemetry_pipeline/reliability/bad_input.py): every broken database,
configuration file or setting yields the correct payload, or one line naming the table, column and
row or the key, with nothing sent. The report in docs/RELIABILITY.md runs the same catalog."""

from __future__ import annotations

import dagster as dg
import pytest

from telemetry_pipeline import cli
from telemetry_pipeline.definitions import ASSETS
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.reliability.bad_input import (
    BAD_INPUTS,
    BOTH,
    CONFIG_ENV,
    KEY,
    NIGHT,
    Setup,
    source_database,
    write_config,
    catalog_runs,
    run_bad_input,
)
from telemetry_pipeline.reliability.loopback import LoopbackCollector
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource

RUNS = catalog_runs(BOTH)


def test_the_catalog_holds_at_least_thirty_cases_of_each_kind_the_issue_names():
    assert len(BAD_INPUTS) >= 30
    names = " ".join(case.name for case in BAD_INPUTS)
    for kind in ("NULL in a NOT NULL column", "bigint column", "boolean column", "negative timestamp",
                 "absurd", "duplicate primary key", "a team of an unknown company",
                 "a membership of an unknown user", "invalid UTF-8", "a 1 MB name", "SQL metacharacters",
                 "a number for a string", "an empty file"):
        assert kind in names, kind
    answers = {bool(case.error) for case in BAD_INPUTS}
    assert answers == {True, False}  # refusals and correct payloads both


@pytest.mark.parametrize("case, backend", RUNS, ids=[f"{b}-{c.where}-{c.name}" for c, b in RUNS])
def test_bad_input(case, backend, tmp_path, request):
    postgres_url = request.getfixturevalue("postgres_database") if backend == "postgresql" else None
    result = run_bad_input(case, backend, tmp_path, postgres_url)
    assert result.problems == []
    if case.error:
        assert result.requests == 0  # nothing half-sent
        assert "\n" not in result.error and KEY not in result.error
    else:
        assert result.error is None and result.requests == 1


def _case(name: str, where: str):
    return next(c for c in BAD_INPUTS if c.name == name and c.where == where)


@pytest.mark.parametrize("name, where", [
    ("invalid UTF-8", "users.email"),
    ("NULL in a NOT NULL column", "companies.name"),
    ("plain http to another machine", "apiServer.phoneHomeUrl"),
])
def test_through_dagster_the_run_fails_with_the_same_one_line_and_sends_nothing(name, where, tmp_path):
    case = _case(name, where)
    catalog_answer = run_bad_input(case, "sqlite", tmp_path / "catalog").error
    setup = Setup("sqlite")
    case.change(setup)
    with LoopbackCollector() as collector, source_database(setup, tmp_path / "source", None) as source_url, \
            dg.DagsterInstance.ephemeral() as instance:
        config = write_config(setup, tmp_path / "codestream.json", collector.url)
        result = dg.materialize(
            ASSETS, partition_key=NIGHT.isoformat(), instance=instance, raise_on_error=False,
            resources={
                "source_database": SourceDatabaseResource(url=source_url),
                "codestream_config": CodeStreamConfigResource(path=str(config)),
                "phone_home": PhoneHomeResource(outbox_dir=str(tmp_path / "outbox"),
                                                archive_dir=str(tmp_path / "archive"), retries=0),
                "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
            },
        )
    assert not result.success
    failures = [e.step_failure_data for e in result.all_events if e.is_step_failure]
    descriptions = [f.user_failure_data.description for f in failures if f.user_failure_data]
    # The catalog's line names the file by the catalog's own path; the rest is the same words.
    assert [d.replace(str(tmp_path), "") for d in descriptions] == \
        [catalog_answer.replace(str(tmp_path / "catalog"), "")]
    assert collector.requests == []
    assert not (tmp_path / "outbox").exists()


def test_the_command_line_prints_the_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    setup = Setup("sqlite")
    _case("invalid UTF-8", "users.email").change(setup)
    with LoopbackCollector() as collector, source_database(setup, tmp_path, None) as source_url:
        monkeypatch.setenv("TELEMETRY_SOURCE_URL", source_url)
        monkeypatch.setenv(CONFIG_ENV, str(write_config(setup, tmp_path / "codestream.json", collector.url)))
        status = cli.main(["preview", "--date", NIGHT.isoformat()])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err == ("telemetry-pipeline: error: table users: column email holds text that is not valid UTF-8"
                   " in row id='u-free'\n")
