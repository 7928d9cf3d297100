"""The Dagster UI as a browser would see it: a real dagster-webserver on loopback, read through
its GraphQL API. Groups, lineage, descriptions, owners, kinds and column schemas of every asset."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import requests

from telemetry_pipeline.definitions import ASSETS
from telemetry_pipeline.io_manager import NightlyParquetIOManager
from telemetry_pipeline.resources import CodeStreamConfigResource, PhoneHomeResource, SourceDatabaseResource
from telemetry_pipeline_tests.installation import Installation, at, write_config

REPOSITORY = Path(__file__).resolve().parents[1]
EXTRACTS = {"companies", "teams", "users", "code_reviews", "user_activity"}
READY_WITHIN_SECONDS = 120

ASSET_GRAPH = """
{
  assetNodes {
    assetKey { path }
    groupName
    description
    kinds
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    dependencyKeys { path }
    metadataEntries {
      label
      ... on TableSchemaMetadataEntry { schema { columns { name type } } }
    }
  }
}
"""
LOCATION_STATUS = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


@dataclass(frozen=True)
class Webserver:
    url: str
    dagster_home: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _graphql(base: str, query: str) -> dict:
    reply = requests.post(f"{base}/graphql", json={"query": query}, timeout=30)
    reply.raise_for_status()
    body = reply.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """dagster-webserver -m telemetry_pipeline on a free loopback port; always stopped at the end."""
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("TELEMETRY_", "CODESTREAM_", "CS_API_", "DAGSTER_"))}
    environment.update(DAGSTER_HOME=str(home), XDG_DATA_HOME=str(home / "xdg"))
    port = _free_port()
    log = (home / "webserver.log").open("wb")
    command = [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
               "-m", "telemetry_pipeline"]
    # Its own process group: the code server it starts is stopped with it.
    server = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        while True:
            assert server.poll() is None, (home / "webserver.log").read_text()[-3000:]
            try:
                entries = _graphql(base, LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "dagster-webserver not ready: " + (
                home / "webserver.log").read_text()[-3000:]
            time.sleep(0.5)
        errors = [e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
        assert not errors, errors
        yield Webserver(base, home)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        log.close()


@pytest.fixture(scope="module")
def asset_nodes(webserver) -> dict[str, dict]:
    nodes = _graphql(webserver.url, ASSET_GRAPH)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def test_the_ui_shows_the_three_groups(asset_nodes):
    groups: dict[str, set[str]] = {}
    for name, node in asset_nodes.items():
        groups.setdefault(node["groupName"], set()).add(name)
    assert groups == {"extract": EXTRACTS, "transform": {"night_summary"}, "publish": {"phone_home_delivery"}}


def test_the_ui_draws_every_extract_through_the_summary_to_the_publish(asset_nodes):
    def parents(name):
        return {"/".join(k["path"]) for k in asset_nodes[name]["dependencyKeys"]}

    assert parents("night_summary") == EXTRACTS
    assert parents("phone_home_delivery") == {"night_summary"}
    assert all(parents(name) == set() for name in EXTRACTS)


def test_every_asset_has_a_description_an_owner_kinds_and_a_column_schema(asset_nodes):
    for name, node in asset_nodes.items():
        assert node["description"] and "\n" not in node["description"].strip(), name
        assert node["owners"] == [{"team": "telemetry"}], name
        assert node["kinds"], name
        schemas = [e["schema"] for e in node["metadataEntries"] if e["label"] == "dagster/column_schema"]
        assert len(schemas) == 1 and schemas[0]["columns"], name
        assert all(c["name"] and c["type"] for c in schemas[0]["columns"]), name
    delivery_columns = {c["name"] for c in _schema(asset_nodes["phone_home_delivery"])}
    assert {"night", "outcome", "reason", "http_status", "attempts", "idempotency_key"} <= delivery_columns


def _schema(node: dict) -> list[dict]:
    return next(e["schema"]["columns"] for e in node["metadataEntries"] if e["label"] == "dagster/column_schema")


NIGHTS = ["2024-02-28", "2024-02-29", "2024-03-01"]
MATERIALIZATIONS = """
query ($name: String!, $partitions: [String!]) {
  assetOrError(assetKey: {path: [$name]}) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition
        metadataEntries {
          label
          __typename
          ... on IntMetadataEntry { intValue }
          ... on MarkdownMetadataEntry { mdStr }
        }
      }
    }
  }
}
"""


def _materializations(base: str, name: str) -> dict[str, dict]:
    reply = requests.post(f"{base}/graphql", timeout=30, json={
        "query": MATERIALIZATIONS, "variables": {"name": name, "partitions": NIGHTS}})
    events = reply.json()["data"]["assetOrError"]["assetMaterializations"]
    return {e["partition"]: {m["label"]: m for m in e["metadataEntries"]} for e in events}


def test_each_night_of_a_backfill_shows_its_own_numbers_and_summary(webserver, tmp_path):
    """One run over three nights: each night's materialization carries that night's figures."""
    installation = (
        Installation().company("c-free", plan="FREEPLAN").company("c-paid", plan="BUSINESS")
        .team("t-free", "c-free").team("t-paid", "c-paid")
        .user("u-1", teams=["t-free"]).user("u-2", teams=["t-paid"])
        .user("u-3", teams=["t-free"], created_at=at(NIGHTS[1], 5))  # joins on the second night
        .user("u-4", created_at=at(NIGHTS[2], 1))  # in no team, on the third
        .post("p-1", "u-1", at(NIGHTS[0], 1)).post("p-2", "u-1", at(NIGHTS[1], 1))
        .post("p-3", "u-3", at(NIGHTS[1], 6)).post("p-4", "u-2", at(NIGHTS[2], 2))
        .review("r-1", "u-2", at(NIGHTS[2], 3), team_id="t-paid")
    )
    source_url = installation.write_sqlite(tmp_path / "codestream.db")
    outbox = tmp_path / "outbox"
    with dg.DagsterInstance.from_config(str(webserver.dagster_home)) as instance:
        result = dg.materialize(
            ASSETS, instance=instance,
            resources={
                "source_database": SourceDatabaseResource(url=source_url),
                "codestream_config": CodeStreamConfigResource(path=str(write_config(tmp_path / "config.json"))),
                "phone_home": PhoneHomeResource(outbox_dir=str(outbox)),
                "parquet_io_manager": NightlyParquetIOManager(base_path=str(tmp_path / "storage")),
            },
            tags={"dagster/asset_partition_range_start": NIGHTS[0], "dagster/asset_partition_range_end": NIGHTS[-1]},
        )
    assert result.success

    summaries = _materializations(webserver.url, "night_summary")
    user_rows = _materializations(webserver.url, "users")
    assert set(summaries) == set(user_rows) == set(NIGHTS)
    for night in NIGHTS:
        sent = (outbox / f"inst-1_{night}.json").read_bytes()  # what left, counted independently
        payload = json.loads(sent)
        included = sum(1 for u in payload["users"] if "email" in u)
        expected = {
            "users": len(payload["users"]),
            "active_users": sum(1 for u in payload["users"]
                                if u["codemarks"] + u["codemarksInReviews"] + u["reviews"] + u["replies"]),
            "emails_included": included,
            "emails_withheld": len(payload["users"]) - included,
            "code_reviews": len(payload["codeReviews"]),
            "payload_bytes": len(sent),
        }
        metadata = summaries[night]
        for label, value in expected.items():  # plain integers: the UI plots them night by night
            assert metadata[label]["__typename"] == "IntMetadataEntry", (night, label)
            assert metadata[label]["intValue"] == value, (night, label)
        assert user_rows[night]["dagster/row_count"]["intValue"] == expected["users"]
        summary = metadata["summary"]
        assert summary["__typename"] == "MarkdownMetadataEntry" and f"### Night {night}" in summary["mdStr"]
        assert f"| emails included | {included} |" in summary["mdStr"]
    # The nights differ, so a figure repeated from the run's last night would have been caught above.
    assert [summaries[n]["users"]["intValue"] for n in NIGHTS] == [2, 3, 4]
