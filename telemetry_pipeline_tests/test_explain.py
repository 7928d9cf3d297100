"""`telemetry-pipeline preview --date D --explain`: the payload beside each company's plan, whose
email goes and why, and the state of the opt-out; on a real SQLite installation."""

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from telemetry_pipeline.codestream_config import load_installation_config
from telemetry_pipeline.explain import FREE_COMPANY_EMAILS, PAID_COMPANY_EMAILS, explain_night
from telemetry_pipeline.preview import extract_night
from telemetry_pipeline.rules.payload import sha256_hex
from telemetry_pipeline.source.database import SourceDatabase
from telemetry_pipeline_tests.installation import Installation, at, write_config

NIGHT = "2026-11-26"
CLI = [sys.executable, "-m", "telemetry_pipeline.cli"]
KEY = "s3cr3t-phone-home-key"


def mixed() -> Installation:
    return (
        Installation()
        .company("c-free", plan="FREEPLAN").company("c-null", plan=None).company("c-paid", plan="ENTERPRISE")
        .company("c-later", plan="BUSINESS", created_at=at(NIGHT, 30))  # created after the night
        .team("t-free", "c-free").team("t-null", "c-null").team("t-paid", "c-paid")
        .user("u-free", teams=["t-free", "t-null"], admin_of=["t-free"])
        .user("u-both", teams=["t-free", "t-paid"])
        .user("u-paid", teams=["t-paid"])
        .user("u-orphan")
        .user("u-ghost", teams=["t-gone"])
        .post("p-1", "u-free", at(NIGHT, 3))
    )


def free_only() -> Installation:
    return Installation().company("c-free", plan="30DAYTRIAL").team("t-free", "c-free").user("u-1", teams=["t-free"])


@pytest.fixture
def run_preview(tmp_path):
    """`telemetry-pipeline preview --date NIGHT [args]` on the mixed installation; returns stdout bytes."""
    url = mixed().write_sqlite(tmp_path / "source.db")
    config = write_config(tmp_path / "codestream.json")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "TELEMETRY_SOURCE_URL": url,
           "CODESTREAM_CONFIG": str(config), "TELEMETRY_OUTBOX_DIR": str(tmp_path / "outbox")}

    def run(*args) -> bytes:
        done = subprocess.run([*CLI, "preview", "--date", NIGHT, *args], env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout

    return run


def explained(tmp_path, installation: Installation, **api_server) -> dict:
    url = installation.write_sqlite(tmp_path / f"source-{len(list(tmp_path.iterdir()))}.db")
    config = load_installation_config(write_config(tmp_path / "cs.json", **api_server))
    rows = extract_night(SourceDatabase(url), dt.date.fromisoformat(NIGHT))
    return explain_night(dt.date.fromisoformat(NIGHT), config, rows, tmp_path / "outbox")["explanation"]


def test_explain_prints_the_payload_and_why_each_email_goes_or_not(tmp_path, run_preview):
    plain = run_preview()
    document = json.loads(run_preview("--explain"))
    assert list(document) == ["explanation", "payload"]

    # The payload is the one plain preview prints, key for key and in order; the explanation
    # names its exact bytes, so they can be checked against what was sent.
    payload_bytes = plain.rstrip(b"\n")
    assert json.dumps(document["payload"], ensure_ascii=False) == json.dumps(json.loads(payload_bytes),
                                                                             ensure_ascii=False)
    explanation = document["explanation"]
    assert explanation["payloadBytes"] == len(payload_bytes)
    assert explanation["payloadSha256"] == sha256_hex(payload_bytes)
    assert (explanation["night"], explanation["installationId"]) == (NIGHT, "inst-1")

    companies = {c["id"]: c for c in explanation["companies"]}
    assert {cid: (c["plan"], c["planIs"], c["inPayload"]) for cid, c in companies.items()} == {
        "c-free": ("FREEPLAN", "free", True), "c-null": (None, "free", True),
        "c-paid": ("ENTERPRISE", "paid", True), "c-later": ("BUSINESS", "paid", False),
    }
    assert companies["c-free"]["emails"] == FREE_COMPANY_EMAILS
    assert companies["c-paid"]["emails"] == PAID_COMPANY_EMAILS
    # c-free: u-free's email goes, u-both's does not (u-both is also in the paid company).
    assert (companies["c-free"]["usersWithEmailIncluded"], companies["c-free"]["usersWithEmailWithheld"]) == (1, 1)
    assert (companies["c-paid"]["usersWithEmailIncluded"], companies["c-paid"]["usersWithEmailWithheld"]) == (0, 2)

    users = {u["id"]: u for u in explanation["users"]}
    assert {uid: (u["email"], u["why"].split(":")[0]) for uid, u in users.items()} == {
        "u-both": ("withheld", "withheld"), "u-free": ("included", "included"), "u-ghost": ("withheld", "withheld"),
        "u-orphan": ("withheld", "withheld"), "u-paid": ("withheld", "withheld"),
    }
    assert "paid plan" in users["u-both"]["why"] and users["u-both"]["companies"] == ["c-free", "c-paid"]
    assert "no team" in users["u-orphan"]["why"] and "does not exist" in users["u-ghost"]["why"]
    # The explanation and the payload agree on every user.
    for entry in document["payload"]["users"]:
        assert ("email" in entry) == (users[entry["id"]]["email"] == "included"), entry["id"]
    assert explanation["emails"]["included"] == 1 and explanation["emails"]["withheld"] == 4

    opt_out = explanation["optOut"]
    assert opt_out == {"disablePhoneHome": False, "paidCompanies": ["c-later", "c-paid"], "honoured": False,
                       "nightIsSent": True,
                       "why": "apiServer.disablePhoneHome is false or absent: the phone home is on"}
    outbox_file = tmp_path / "outbox" / f"inst-1_{NIGHT}.json"
    assert explanation["destination"] == f"offline (no phone-home URL): written to {outbox_file}"
    assert not (tmp_path / "outbox").exists()  # preview sends and writes nothing


def test_without_explain_the_output_is_still_exactly_the_payload_bytes(run_preview):
    plain = run_preview()
    explanation = json.loads(run_preview("--explain"))["explanation"]
    assert plain.endswith(b"\n") and not plain.startswith(b'{"explanation"')
    assert sha256_hex(plain[:-1]) == explanation["payloadSha256"]


def test_an_opt_out_with_a_paid_company_is_honoured_and_says_nothing_goes(tmp_path):
    explanation = explained(tmp_path, mixed(), disablePhoneHome=True, phoneHomeUrl="http://collector.example")
    opt_out = explanation["optOut"]
    assert (opt_out["disablePhoneHome"], opt_out["honoured"], opt_out["nightIsSent"]) == (True, True, False)
    assert "2 companies are on a paid plan" in opt_out["why"]
    assert explanation["destination"] == "nowhere: the night is not sent"


def test_an_opt_out_on_an_all_free_installation_is_not_honoured_and_says_why(tmp_path):
    explanation = explained(tmp_path, free_only(), disablePhoneHome=True, phoneHomeUrl="http://collector.example")
    opt_out = explanation["optOut"]
    assert (opt_out["honoured"], opt_out["nightIsSent"], opt_out["paidCompanies"]) == (False, True, [])
    assert "every company here is on a free plan" in opt_out["why"]
    assert explanation["destination"] == f"POST http://collector.example/phone-home with Idempotency-Key inst-1:{NIGHT}"


def test_the_destination_never_shows_credentials_or_the_key(tmp_path):
    explanation = explained(tmp_path, free_only(), phoneHomeUrl="https://user:pa55@collector.example:8443/base")
    assert explanation["destination"] == (
        f"POST https://collector.example:8443/base/phone-home with Idempotency-Key inst-1:{NIGHT}"
    )
    text = json.dumps(explanation)
    assert "pa55" not in text and KEY not in text


@pytest.mark.parametrize("plan, kind", [("TRIALEXPIRED", "free"), ("freeplan", "paid"), ("", "paid")])
def test_the_plan_kind_follows_the_contract_rule(tmp_path, plan, kind):
    installation = Installation().company("c-1", plan=plan).team("t-1", "c-1").user("u-1", teams=["t-1"])
    [company] = explained(tmp_path, installation)["companies"]
    assert company["planIs"] == kind
