"""The command line as a user meets it: `telemetry-pipeline` and the contract's dagster command."""

import json
import os
import subprocess
import sys

import pytest

from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.preview import summarize_night
from telemetry_pipeline.rules.payload import encode_payload
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline_tests.installation import Installation, at, write_config

NIGHT = "2026-11-26"
CLI = [sys.executable, "-m", "telemetry_pipeline.cli"]


@pytest.fixture
def env(tmp_path):
    installation = (
        Installation()
        .company("c-free", plan=None).company("c-paid", plan="BUSINESS")
        .team("t-free", "c-free").team("t-paid", "c-paid")
        .user("u-free", teams=["t-free"]).user("u-paid", teams=["t-paid"])
        .post("p-1", "u-free", at(NIGHT, 23.5))
    )
    url = installation.write_sqlite(tmp_path / "source.db")
    config = write_config(tmp_path / "codestream.json")
    return {
        **os.environ,
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "TELEMETRY_SOURCE_URL": url,
        "CODESTREAM_CONFIG": str(config),
        "TELEMETRY_OUTBOX_DIR": str(tmp_path / "outbox"),
    }


def _run(args, env, **kwargs):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, **kwargs)


def test_preview_prints_the_payload_exactly_as_built_and_sends_nothing(env, tmp_path):
    done = _run([*CLI, "preview", "--date", NIGHT], env)
    assert done.returncode == 0, done.stderr
    expected = summarize_night(
        SourceDatabase(env["TELEMETRY_SOURCE_URL"]), load_installation_config(env["CODESTREAM_CONFIG"]),
        __import__("datetime").date.fromisoformat(NIGHT),
    )
    assert done.stdout.encode() == encode_payload(expected.payload) + b"\n"
    payload = json.loads(done.stdout)
    assert [u.get("email") for u in payload["users"]] == ["u-free@example.com", None]
    assert "email" not in payload["users"][1]
    assert not (tmp_path / "outbox").exists()


@pytest.mark.parametrize(
    "args, change, message",
    [
        (["preview", "--date", "2026-13-01"], {}, "--date '2026-13-01' is not a night"),
        (["preview", "--date", "2019-12-31"], {}, "outside the partitions 2020-01-01.."),
        (["preview", "--date", NIGHT], {"CODESTREAM_CONFIG": "/nonexistent/cs.json"}, "/nonexistent/cs.json"),
        (["preview", "--date", NIGHT], {"TELEMETRY_SOURCE_URL": "sqlite:///nonexistent/x.db"}, "/nonexistent/x.db"),
        (["preview", "--date", NIGHT], {"TELEMETRY_SOURCE_URL": "mysql://h/db"}, "TELEMETRY_SOURCE_URL"),
    ],
)
def test_bad_input_is_one_clear_line(env, args, change, message):
    done = _run([*CLI, *args], {**env, **change})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_demo_runs_a_night_end_to_end_on_the_embedded_defaults(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "CODESTREAM_", "CS_API"))}
    done = _run([*CLI, "demo", "--date", NIGHT], {**clean, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 0, done.stderr
    outbox_file = tmp_path / "xdg" / "telemetry-pipeline" / "outbox" / f"demo-installation_{NIGHT}.json"
    assert str(outbox_file) in done.stdout
    payload = json.loads(outbox_file.read_bytes())
    assert payload["date"] == NIGHT and len(payload["companies"]) == 5
    assert "emails included: 9; withheld: 7" in done.stdout


def test_the_contracts_dagster_command_materializes_and_publishes_one_night(env, tmp_path):
    done = _run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize",
         "-m", "telemetry_pipeline", "--select", "*", "--partition", NIGHT],
        env, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = (tmp_path / "outbox" / f"inst-1_{NIGHT}.json").read_bytes()
    preview = _run([*CLI, "preview", "--date", NIGHT], env)
    assert written + b"\n" == preview.stdout.encode()
    assert "s3cr3t-phone-home-key" not in done.stdout + done.stderr
