"""The whole pipeline through Dagster, on SQLite and PostgreSQL: what leaves, where, and when not.

The oracle is contract section 6; "the bytes preview produces" are those of
``encode_payload(summarize_night(...).payload)``, the payload exactly as it would be sent.
"""

import json
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from telemetry_pipeline.assets import publish as publish_assets
from telemetry_pipeline.assets import summary as summary_assets
from telemetry_pipeline.assets.extract import EXTRACT_ASSETS
from telemetry_pipeline.assets.publish import phone_home_delivery
from telemetry_pipeline.checks import (
    SUMMARY_CHECK_SPECS,
    EmailAllowance,
    check_payload,
    check_results,
    users_whose_email_may_leave,
)
from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.definitions import ASSETS
from telemetry_pipeline.io_manager import NightlyParquetIOManager, NightlyTables
from telemetry_pipeline.partitions import SINGLE_RUN, nightly_partitions
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline.rules.payload import encode_payload, payload_key_problems, sha256_hex
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline.nights import parse_night
from telemetry_pipeline_tests.conftest import new_postgres_schema
from telemetry_pipeline_tests.installation import Installation, at, write_config

A, D, C = "2024-02-28", "2024-02-29", "2024-03-01"
KEY = "s3cr3t-phone-home-key"  # what write_config puts in universalSecrets.telemetry
BACKENDS = ["sqlite", "postgres"]


# ---------------------------------------------------------------------------------------------
# Installations, written once per backend for the module
# ---------------------------------------------------------------------------------------------

def mixed_installation() -> Installation:
    """A free and a paid company, with activity on each of the nights A, D and C."""
    i = Installation()
    i.company("c-free", plan="FREEPLAN", created_at=at(A, -240))
    i.company("c-paid", plan="ENTERPRISE", created_at=at(A, -240))
    i.team("t-free", "c-free", created_at=at(A, -200))
    i.team("t-paid", "c-paid", created_at=at(A, -200), live_view="off")
    i.user("u-free", email="free@example.com", teams=["t-free"], admin_of=["t-free"], created_at=at(A, -100))
    i.user("u-paid", email="paid@example.com", teams=["t-paid"], created_at=at(A, -100))
    i.user("u-new", email="new@example.com", teams=["t-free"], created_at=at(D, 5))
    i.token("u-free", "github", team_id="t-free")
    i.token("u-new", "jira", team_id="t-free")
    i.codemark("cm1", "u-free", at(A, 1), team_id="t-free")
    for night, hours in ((A, 1), (D, 2), (D, 3), (C, 4)):
        i.post(f"p-{night}-{hours}", "u-free", at(night, hours), team_id="t-free")
    i.post("p-cm", "u-paid", at(D, 6), team_id="t-paid", codemark_id="cm1")
    i.review("r-a", "u-paid", at(A, 2), team_id="t-paid", approved_at=at(C, 3))
    i.review("r-d", "u-free", at(D, 4), team_id="t-free")
    return i


def free_installation() -> Installation:
    i = Installation()
    i.company("c-free", plan="FREEPLAN", created_at=at(A, -240))
    i.company("c-null", plan=None, created_at=at(A, -240))
    i.team("t-free", "c-free", created_at=at(A, -200))
    i.user("u-free", email="free@example.com", teams=["t-free"], created_at=at(A, -100))
    i.post("p1", "u-free", at(D, 2), team_id="t-free")
    return i




@pytest.fixture(scope="module", params=BACKENDS)
def sources(request, tmp_path_factory):
    """{"mixed": url, "free": url} on one backend."""
    urls = {}
    for name, build in (("mixed", mixed_installation), ("free", free_installation)):
        if request.param == "sqlite":
            urls[name] = build().write_sqlite(tmp_path_factory.mktemp(name) / "codestream.db")
        else:
            urls[name] = build().write_postgres(new_postgres_schema(request.getfixturevalue("postgres_database")))
    return urls


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def resources(tmp_path: Path, url: str, config: Path) -> dict:
    return {
        "source_database": SourceDatabaseResource(url=url),
        "codestream_config": CodeStreamConfigResource(path=str(config)),
        "phone_home": PhoneHomeResource(outbox_dir=str(tmp_path / "outbox"), retries=2, backoff_factor=0.01),
        "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
    }


def materialize(tmp_path, url, config, instance, *, assets=None, selection=None):
    return dg.materialize(
        assets or ASSETS, partition_key=D, instance=instance,
        resources=resources(tmp_path, url, config), raise_on_error=False, selection=selection,
    )


def run_range(tmp_path, url, config, instance, first=A, last=C):
    defs = dg.Definitions(assets=ASSETS, resources=resources(tmp_path, url, config))
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )


def preview_bytes(url: str, config: Path, night: str) -> bytes:
    summary = summarize_night(SourceDatabase(url), load_installation_config(config), parse_night(night))
    return encode_payload(summary.payload)


def delivery_metadata(result) -> dict:
    materializations = result.asset_materializations_for_node("phone_home_delivery")
    assert len(materializations) == 1, materializations
    return {name: value.value for name, value in materializations[0].metadata.items()}


def outbox_files(tmp_path: Path) -> list[str]:
    outbox = tmp_path / "outbox"
    return sorted(p.name for p in outbox.iterdir()) if outbox.exists() else []


def failure_messages(result) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            if data.user_failure_data is not None and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
            if data.error is not None:
                messages.append(data.error.message)
    return messages


def assert_key_not_leaked(instance, result, tmp_path: Path, config: Path) -> None:
    """Section 6: the phone-home key is in no log, metadata, error or file but the configuration."""
    logs = [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)]
    assert any("payload_sha256" in text for text in logs)  # the scan does see the run's metadata
    for text in logs:
        assert KEY not in text, text
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != config:
            assert KEY.encode() not in path.read_bytes(), path


def assert_json_equal_in_order(actual, expected) -> None:
    assert actual == expected
    assert json.dumps(actual, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# One night
# ---------------------------------------------------------------------------------------------

def test_offline_writes_exactly_the_preview_bytes(sources, tmp_path, instance):
    config = write_config(tmp_path / "codestream.json")
    result = materialize(tmp_path, sources["mixed"], config, instance)
    assert result.success
    assert outbox_files(tmp_path) == [f"inst-1_{D}.json"]
    written = (tmp_path / "outbox" / f"inst-1_{D}.json").read_bytes()
    assert written == preview_bytes(sources["mixed"], config, D)
    payload = json.loads(written)
    assert payload["date"] == D and [u["id"] for u in payload["users"]] == ["u-free", "u-new", "u-paid"]
    metadata = delivery_metadata(result)
    assert metadata["outcome"] == "written to outbox"
    assert metadata["payload_sha256"] == sha256_hex(written)
    assert_key_not_leaked(instance, result, tmp_path, config)


def test_online_sends_one_post_with_the_contract_headers(sources, tmp_path, instance, collector):
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    result = materialize(tmp_path, sources["mixed"], config, instance)
    assert result.success
    assert len(collector.requests) == 1
    request = collector.requests[0]
    assert request["path"] == "/phone-home"
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-cs-phone-home-key"] == KEY
    assert headers["idempotency-key"] == f"inst-1:{D}"
    expected = json.loads(preview_bytes(sources["mixed"], config, D))
    assert_json_equal_in_order(json.loads(request["body"]), [expected])
    assert outbox_files(tmp_path) == []  # nothing goes to the outbox when online
    metadata = delivery_metadata(result)
    assert (metadata["outcome"], metadata["http_status"], metadata["attempts"]) == ("sent", 200, 1)
    assert_key_not_leaked(instance, result, tmp_path, config)


def test_a_503_is_retried_and_the_run_succeeds(sources, tmp_path, instance, collector):
    collector.reply_with(503)
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    result = materialize(tmp_path, sources["mixed"], config, instance)
    assert result.success
    assert len(collector.requests) == 2
    first, second = collector.requests
    assert first["body"] == second["body"]
    assert first["headers"]["Idempotency-Key"] == second["headers"]["Idempotency-Key"] == f"inst-1:{D}"
    metadata = delivery_metadata(result)
    assert (metadata["outcome"], metadata["http_status"], metadata["attempts"]) == ("sent", 200, 2)


def test_retry_after_is_honoured(sources, tmp_path, instance, collector):
    collector.reply_with((429, {"Retry-After": "2"}))
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    started = time.monotonic()
    result = materialize(tmp_path, sources["mixed"], config, instance)
    elapsed = time.monotonic() - started
    assert result.success
    assert len(collector.requests) == 2
    assert elapsed >= 2.0, f"the retry came after {elapsed:.2f} s, before the 2 s the collector asked for"
    assert delivery_metadata(result)["attempts"] == 2


def test_a_401_fails_the_run_at_once_naming_the_status(sources, tmp_path, instance, collector):
    collector.reply_with(401)
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    result = materialize(tmp_path, sources["mixed"], config, instance)
    assert not result.success
    time.sleep(0.2)  # nothing arrives late either
    assert len(collector.requests) == 1
    messages = failure_messages(result)
    assert messages and any("401" in m for m in messages), messages
    assert not any(KEY in m for m in messages)
    assert result.asset_materializations_for_node("phone_home_delivery") == []
    assert outbox_files(tmp_path) == []
    # The summary was built and checked; only the publish failed.
    assert len(result.asset_materializations_for_node("night_summary")) == 1
    assert_key_not_leaked(instance, result, tmp_path, config)


def test_opt_out_with_a_paid_company_sends_nothing(sources, tmp_path, instance, collector):
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url, disablePhoneHome=True)
    result = materialize(tmp_path, sources["mixed"], config, instance)
    assert result.success
    time.sleep(0.1)
    assert collector.requests == []
    assert outbox_files(tmp_path) == []
    metadata = delivery_metadata(result)
    assert metadata["outcome"] == "not sent"
    assert "disablePhoneHome" in metadata["reason"] and "paid" in metadata["reason"]


def test_opt_out_on_an_all_free_installation_is_not_honoured(sources, tmp_path, instance, collector):
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url, disablePhoneHome=True)
    result = materialize(tmp_path, sources["free"], config, instance)
    assert result.success
    assert len(collector.requests) == 1
    assert_json_equal_in_order(collector.bodies[0], [json.loads(preview_bytes(sources["free"], config, D))])
    metadata = delivery_metadata(result)
    assert metadata["outcome"] == "sent"
    # The run says plainly why the opt-out was not honoured.
    assert "disablePhoneHome" in metadata["reason"] and "free" in metadata["reason"]
    warnings = [e.message for e in instance.all_logs(result.run_id) if e.level >= 30 and e.message]
    assert any("disablePhoneHome" in w for w in warnings), warnings


# ---------------------------------------------------------------------------------------------
# Many nights in one run
# ---------------------------------------------------------------------------------------------

def test_three_nights_in_one_run_write_three_single_night_previews(sources, tmp_path, instance):
    config = write_config(tmp_path / "codestream.json")
    result = run_range(tmp_path, sources["mixed"], config, instance)
    assert result.success
    assert outbox_files(tmp_path) == [f"inst-1_{night}.json" for night in (A, D, C)]
    previews = {night: preview_bytes(sources["mixed"], config, night) for night in (A, D, C)}
    assert len(set(previews.values())) == 3  # the nights differ, so a mix-up would show
    for night in (A, D, C):
        assert (tmp_path / "outbox" / f"inst-1_{night}.json").read_bytes() == previews[night], night
    # Each night's summary event shows that night's figures; the redaction table, the last night's, only its.
    summaries = {m.partition: m.metadata for m in result.asset_materializations_for_node("night_summary")}
    assert {night: summaries[night]["payload_bytes"].value for night in (A, D, C)} == {
        night: len(previews[night]) for night in (A, D, C)}
    assert [night for night in (A, D, C) if "redaction_by_company" in summaries[night]] == [C]


def test_three_nights_in_one_run_post_oldest_first_with_their_own_keys(sources, tmp_path, instance, collector):
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    result = run_range(tmp_path, sources["mixed"], config, instance)
    assert result.success
    assert [r["headers"]["Idempotency-Key"] for r in collector.requests] == [f"inst-1:{n}" for n in (A, D, C)]
    for request, night in zip(collector.requests, (A, D, C)):
        assert_json_equal_in_order(json.loads(request["body"]),
                                   [json.loads(preview_bytes(sources["mixed"], config, night))])
    assert outbox_files(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# The checks that guard what leaves
# ---------------------------------------------------------------------------------------------

def _payload(users: list[dict], night=D) -> dict:
    return {"date": night, "installationId": "inst-1", "installationVersion": "N/A", "outboundEmailEnabled": False,
            "slackInteractiveComponentsEnabled": False, "integrations": [], "companies": [], "teams": [],
            "users": users, "codeReviews": []}


def test_the_email_check_finds_each_email_that_must_not_leave():
    companies = pa.Table.from_pylist([
        {"night": D, "id": "c-free", "plan": "FREEPLAN"}, {"night": D, "id": "c-null", "plan": None},
        {"night": D, "id": "c-paid", "plan": "BUSINESS"}, {"night": D, "id": "c-odd", "plan": "freeplan"},
    ])
    teams = pa.Table.from_pylist([
        {"night": D, "id": "t-free", "company_id": "c-free"}, {"night": D, "id": "t-null", "company_id": "c-null"},
        {"night": D, "id": "t-paid", "company_id": "c-paid"}, {"night": D, "id": "t-odd", "company_id": "c-odd"},
        {"night": D, "id": "t-ghost", "company_id": "c-missing"},
    ])
    members = {"ok": ["t-free", "t-null"], "paid": ["t-free", "t-paid"], "odd": ["t-odd"], "ghost": ["t-ghost"],
               "lonely": [], "unknown-team": ["t-nowhere"], "paid-no-email": ["t-paid"]}
    users = pa.Table.from_pylist([{"night": D, "id": u, "team_ids": t} for u, t in members.items()])
    payload_users = [{"id": u, "email": f"{u}@example.com"} for u in members if u != "paid-no-email"]
    payload_users.append({"id": "paid-no-email"})
    verdict = check_payload(D, json.dumps(_payload(payload_users)).encode(),
                            users_whose_email_may_leave(companies, teams, users))
    assert sorted(verdict.email_violations) == sorted(f"{D}: user {u}" for u in
                                                      ("paid", "odd", "ghost", "lonely", "unknown-team"))


def test_the_email_check_judges_a_night_by_its_own_rows():
    """A user free on night A but paid on night D: only D's email is a violation."""
    teams = pa.Table.from_pylist([{"id": "t1", "company_id": "c1"}])
    users = pa.Table.from_pylist([{"id": "u1", "team_ids": ["t1"]}])
    verdicts = {
        night: check_payload(night, json.dumps(_payload([{"id": "u1", "email": "u1@example.com"}], night)).encode(),
                             users_whose_email_may_leave(pa.Table.from_pylist([{"id": "c1", "plan": plan}]),
                                                         teams, users))
        for night, plan in ((A, "FREEPLAN"), (D, "BUSINESS"))
    }
    assert verdicts[A].email_violations == [] and verdicts[D].email_violations == [f"{D}: user u1"]


def test_whose_email_may_leave_night_after_night_is_what_each_night_alone_gives():
    """The checks reuse the night before's judgement only while its users, teams and companies hold."""
    allowance = EmailAllowance()
    companies = [{"id": "c-free", "plan": "FREEPLAN"}, {"id": "c-paid", "plan": "BUSINESS"}]
    teams = [{"id": "t-free", "company_id": "c-free"}, {"id": "t-paid", "company_id": "c-paid"}]
    users = [{"id": "u1", "team_ids": ["t-free"]}, {"id": "u2", "team_ids": ["t-paid"]},
             {"id": "u3", "team_ids": ["t-free", "t-paid"]}, {"id": "u4", "team_ids": ["t-free"]},
             {"id": "u5", "team_ids": []}]
    nights = [
        (companies, teams, users[:3]),
        (companies, teams, users[:5]),  # two users more: only they are judged
        ([companies[0], {"id": "c-paid", "plan": "30DAYTRIAL"}], teams, users),  # a plan changed
        (companies, [teams[0], {"id": "t-paid", "company_id": "c-free"}], users),  # a team moved
        (companies, teams, [{"id": "u1", "team_ids": ["t-paid"]}, *users[1:]]),  # a user's teams changed
        (companies, teams, users[:2]),  # fewer users
    ]
    for night_companies, night_teams, night_users in nights:
        tables = [pa.Table.from_pylist(rows) for rows in (night_companies, night_teams, night_users)]
        assert sorted(allowance(*tables).to_pylist()) == sorted(users_whose_email_may_leave(*tables).to_pylist())


def test_payload_key_problems_accepts_the_contract_and_names_every_deviation(sources, tmp_path):
    config = write_config(tmp_path / "codestream.json")
    good = json.loads(preview_bytes(sources["mixed"], config, D))
    assert any("email" in u for u in good["users"]) and any("email" not in u for u in good["users"])
    assert payload_key_problems(good) == []

    extra = {**good, "hostname": "build-01"}
    assert len(payload_key_problems(extra)) == 1 and "hostname" in payload_key_problems(extra)[0]
    missing = {k: v for k, v in good.items() if k != "integrations"}
    assert len(payload_key_problems(missing)) == 1
    reordered = {"installationId": good["installationId"], **good}
    assert len(payload_key_problems(reordered)) == 1
    user = dict(good["users"][0])
    email_last = {k: v for k, v in user.items() if k != "email"} | {"email": "x@example.com"}
    assert payload_key_problems({**good, "users": [email_last]}) == [f"users[0] has keys {list(email_last)}"]
    company = {**good["companies"][0], "billingEmail": "boss@example.com"}
    assert len(payload_key_problems({**good, "companies": [company]})) == 1
    review = {k: v for k, v in good["codeReviews"][0].items() if k != "approvedAt"}
    assert len(payload_key_problems({**good, "codeReviews": [review]})) == 1
    assert payload_key_problems([good]) != []


def _crafted_summary(craft):
    """A stand-in for night_summary that builds the real summary, alters its payload, and checks
    the altered payload with the real checks, as the real summary checks its own."""

    @dg.asset(name="night_summary", partitions_def=nightly_partitions, backfill_policy=SINGLE_RUN,
              io_manager_key="parquet_io_manager", group_name="transform", check_specs=SUMMARY_CHECK_SPECS)
    def night_summary(context: dg.AssetExecutionContext, codestream_config: CodeStreamConfigResource,
                      companies: pa.Table, teams: pa.Table, users: pa.Table, user_activity: pa.Table,
                      code_reviews: pa.Table):
        real = summary_assets.night_summary(
            dg.build_asset_context(partition_key=context.partition_key), codestream_config=codestream_config,
            companies=companies, teams=teams, users=users, user_activity=user_activity,
            code_reviews=code_reviews,
        ).value.to_table()
        rows = real.to_pylist()
        for row in rows:
            payload = craft(json.loads(row["payload"]))
            encoded = encode_payload(payload)
            row.update(payload=encoded.decode(), payload_sha256=sha256_hex(encoded), payload_bytes=len(encoded))
        may_leave = users_whose_email_may_leave(companies, teams, users)
        verdicts = [check_payload(row["night"], row["payload"].encode(), may_leave) for row in rows]
        return dg.MaterializeResult(value=pa.Table.from_pylist(rows, schema=real.schema),
                                    check_results=check_results(verdicts))

    return night_summary


def _email_of_paid_user(payload: dict) -> dict:
    users = []
    for user in payload["users"]:
        if user["id"] == "u-paid":
            assert "email" not in user
            user = {"id": user["id"], "email": "paid@example.com", **{k: v for k, v in user.items() if k != "id"}}
        users.append(user)
    return {**payload, "users": users}


def _undocumented_key(payload: dict) -> dict:
    return {**payload, "hostname": "build-01"}


@pytest.mark.parametrize("craft, check", [
    (_email_of_paid_user, "no_email_outside_free_companies"),
    (_undocumented_key, "payload_has_documented_keys"),
])
def test_a_failing_check_blocks_the_publish(sources, tmp_path, instance, collector, craft, check):
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    assets = [*EXTRACT_ASSETS, _crafted_summary(craft), phone_home_delivery]
    result = materialize(tmp_path, sources["mixed"], config, instance, assets=assets)

    evaluations = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"no_email_outside_free_companies": check != "no_email_outside_free_companies",
                           "payload_has_documented_keys": check != "payload_has_documented_keys"}
    assert len(result.asset_materializations_for_node("night_summary")) == 1
    assert result.asset_materializations_for_node("phone_home_delivery") == []
    assert collector.requests == [] and outbox_files(tmp_path) == []

    # Publishing that stored summary later, on its own, is refused by the gate, which names the check.
    result = materialize(tmp_path, sources["mixed"], config, instance, selection=["phone_home_delivery"])
    assert result.success
    metadata = delivery_metadata(result)
    assert metadata["outcome"] == "not sent"
    assert check in metadata["reason"]
    assert collector.requests == [] and outbox_files(tmp_path) == []


def test_a_stored_payload_changed_after_its_checks_is_not_sent(sources, tmp_path, instance, collector):
    """The checks read the payload as it was built; the publish sends those bytes or nothing."""
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    assert materialize(tmp_path, sources["mixed"], config, instance,
                       selection=dg.AssetSelection.assets("night_summary").upstream()).success
    stored = tmp_path / "storage" / "telemetry" / "night_summary" / f"{D}.parquet"
    table = pq.read_table(stored)
    altered = table["payload"][0].as_py().replace('"users":[', '"users":[{"id":"x","email":"x@example.com"},', 1)
    pq.write_table(table.set_column(table.schema.get_field_index("payload"), "payload", pa.array([altered])), stored)

    result = materialize(tmp_path, sources["mixed"], config, instance, selection=["phone_home_delivery"])
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "not the one the summary built and checked" in failure.event_specific_data.error.message
    assert collector.requests == [] and outbox_files(tmp_path) == []


def test_a_payload_read_back_is_hashed_again_and_one_handed_over_in_memory_is_not():
    """What the publish compares with the checked hash: the hash of the bytes read from storage;
    for the night this run's summary handed over in memory, the hash the summary took of them."""
    payload = b'{"date":"2026-11-26"}'
    row = {name: 0 for name in summary_assets.NIGHT_SUMMARY_SCHEMA.names}
    row.update(night=D, installation_id="i", send=True, send_reason="r", email_decisions="{}",
               payload_sha256="the summary's own", payload_bytes=len(payload))
    table = summary_assets._summary_table(row, payload)
    read_back, handed_over = NightlyTables([D], lambda night: table), NightlyTables([D], lambda night: table,
                                                                                     held={D: table})
    assert publish_assets._stored_night(read_back, D)[2] == sha256_hex(payload)
    assert publish_assets._stored_night(handed_over, D)[2] == "the summary's own"
    assert bytes(publish_assets._stored_night(handed_over, D)[1]) == payload


def test_publishing_a_summary_whose_checks_passed_sends_it(sources, tmp_path, instance, collector):
    """The counterpart of the blocked publish: the same publish-only run goes through after good checks."""
    config = write_config(tmp_path / "codestream.json", phoneHomeUrl=collector.url)
    first = materialize(tmp_path, sources["mixed"], config, instance,
                        selection=dg.AssetSelection.assets("night_summary").upstream())
    assert first.success and collector.requests == []
    result = materialize(tmp_path, sources["mixed"], config, instance, selection=["phone_home_delivery"])
    assert result.success
    assert delivery_metadata(result)["outcome"] == "sent"
    assert len(collector.requests) == 1
