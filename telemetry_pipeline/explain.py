"""`preview --explain`: the night's payload with the reasons behind it, for the installation's admin.

The explanation is derived with the same rule functions the payload is built with
(``rules.plans``), from the same extracted rows, so it cannot tell a different story.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter

from telemetry_pipeline.codestream_config import InstallationConfig
from telemetry_pipeline.delivery import display_url, idempotency_key, outbox_path
from telemetry_pipeline.nights import night_bounds_ms
from telemetry_pipeline.rules.payload import build_night_summary, encode_payload, sha256_hex
from telemetry_pipeline.rules.plans import EMAIL_INCLUDED, email_decision, is_free_plan

FREE_COMPANY_EMAILS = "included for its users, except a user who is also in a company on a paid plan"
PAID_COMPANY_EMAILS = "withheld for all its users"


def explain_night(
    night: dt.date, config: InstallationConfig, rows: dict[str, list[dict]], outbox_dir: str | os.PathLike,
) -> dict:
    """``{"explanation": …, "payload": …}``: the payload exactly as built, and why it is what it is."""
    summary = build_night_summary(night, config.facts, **rows)
    payload = encode_payload(summary.payload)
    night_end = night_bounds_ms(night)[1]
    company_of_team = {t["id"]: t["company_id"] for t in rows["teams"]}
    plan_of_company = {c["id"]: c["plan"] for c in rows["companies"]}

    users, included, withheld = [], Counter(), Counter()
    for user in sorted(rows["users"], key=lambda u: u["id"]):
        reason = email_decision(user["team_ids"], company_of_team, plan_of_company)
        companies = sorted({company_of_team[t] for t in user["team_ids"] if t in company_of_team})
        for company_id in companies:
            (included if reason == EMAIL_INCLUDED else withheld)[company_id] += 1
        users.append({
            "id": user["id"],
            "email": "included" if reason == EMAIL_INCLUDED else "withheld",
            "why": reason,
            "companies": companies,
        })

    companies = [
        {
            "id": c["id"],
            "name": c["name"],
            "plan": c["plan"],
            "planIs": "free" if is_free_plan(c["plan"]) else "paid",
            "inPayload": c["created_at"] < night_end,
            "emails": FREE_COMPANY_EMAILS if is_free_plan(c["plan"]) else PAID_COMPANY_EMAILS,
            "usersWithEmailIncluded": included[c["id"]],
            "usersWithEmailWithheld": withheld[c["id"]],
        }
        for c in sorted(rows["companies"], key=lambda c: c["id"])
    ]
    paid = [c["id"] for c in companies if c["planIs"] == "paid"]
    explanation = {
        "night": night.isoformat(),
        "installationId": config.installation_id,
        "payloadBytes": len(payload),
        "payloadSha256": sha256_hex(payload),
        "optOut": {
            "disablePhoneHome": config.disable_phone_home,
            "paidCompanies": paid,
            "honoured": config.disable_phone_home and bool(paid),
            "nightIsSent": summary.send.send,
            "why": summary.send.reason if config.disable_phone_home else
            "apiServer.disablePhoneHome is false or absent: the phone home is on",
        },
        "destination": _destination(config, night, summary.send.send, outbox_dir),
        "emails": {
            "included": summary.emails_included,
            "withheld": summary.emails_withheld,
            "byReason": dict(sorted(summary.email_reasons.items())),
        },
        "companies": companies,
        "users": users,
    }
    return {"explanation": explanation, "payload": summary.payload}


def _destination(config: InstallationConfig, night: dt.date, sent: bool, outbox_dir) -> str:
    if not sent:
        return "nowhere: the night is not sent"
    key = idempotency_key(config.installation_id, night.isoformat())
    if config.phone_home_url:
        return f"POST {display_url(config.phone_home_url + '/phone-home')} with Idempotency-Key {key}"
    target = outbox_path(outbox_dir, config.installation_id, night.isoformat())
    return f"offline (no phone-home URL): written to {target}"


def render(explained: dict) -> bytes:
    """Indented JSON for a person to read; the payload keeps its keys and their order."""
    return json.dumps(explained, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
