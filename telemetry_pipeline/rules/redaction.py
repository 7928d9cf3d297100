"""Email redaction explained per company: counts an operator can check, never an address."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from telemetry_pipeline.rules.plans import EMAIL_INCLUDED, email_decision, is_free_plan

UNKNOWN_PLAN = "(no such company)"


def redaction_by_company(
    companies: Sequence[Mapping[str, Any]],
    teams: Sequence[Mapping[str, Any]],
    users: Sequence[Mapping[str, Any]],
) -> list[dict]:
    """Per company a user of the night belongs to: its plan, its users, and how many of their
    emails are included or withheld, sorted by company id.

    A user counts once in each of their companies, so a user of a free and a paid company is a
    withheld email in both rows: the paid company is why. A team whose company does not exist
    gets a row for that missing company, plan ``(no such company)``.
    """
    company_of_team = {t["id"]: t["company_id"] for t in teams}
    plan_of_company = {c["id"]: c["plan"] for c in companies}
    rows: dict[str, dict] = {}
    for user in users:
        included = email_decision(user["team_ids"], company_of_team, plan_of_company) == EMAIL_INCLUDED
        company_ids = {company_of_team[t] for t in user["team_ids"] if t in company_of_team}
        for company_id in company_ids:
            row = rows.setdefault(company_id, _row(company_id, plan_of_company))
            row["users"] += 1
            row["emails_included" if included else "emails_withheld"] += 1
    return [rows[company_id] for company_id in sorted(rows)]


def _row(company_id: str, plan_of_company: Mapping[str, Any]) -> dict:
    known = company_id in plan_of_company
    plan = plan_of_company.get(company_id)
    return {
        "company": company_id,
        "plan": plan if known else UNKNOWN_PLAN,
        "free": known and is_free_plan(plan),
        "users": 0,
        "emails_included": 0,
        "emails_withheld": 0,
    }
