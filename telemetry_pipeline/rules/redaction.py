"""Email redaction explained per company: counts an operator can check, never an address."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.rules.payload_columns import emails_included
from telemetry_pipeline.rules.plans import is_free_plan

UNKNOWN_PLAN = "(no such company)"

_COMPANIES = pa.schema([("id", pa.string()), ("plan", pa.string())])
_TEAMS = pa.schema([("id", pa.string()), ("company_id", pa.string())])
_USERS = pa.schema([("id", pa.string()), ("team_ids", pa.list_(pa.string()))])
Rows = pa.Table | Sequence[Mapping[str, Any]]


def redaction_by_company(companies: Rows, teams: Rows, users: Rows) -> list[dict]:
    """Per company a user of the night belongs to: its plan, its users, and how many of their
    emails are included or withheld, sorted by company id.

    An email is included only when the user is in a team, and every team of theirs and its company
    exist and the company is on a free plan (rules/plans.py, ``email_decision``, as the payload
    encoder applies it). A user counts once in each of their companies, so a user of a free and a
    paid company is a withheld email in both rows: the paid company is why. A team whose company
    does not exist gets a row for that missing company, plan ``(no such company)``. Rows are Arrow
    tables or lists of dicts (ids unique).
    """
    companies, teams, users = _table(companies, _COMPANIES), _table(teams, _TEAMS), _table(users, _USERS)
    included = emails_included(users, teams, companies)  # the encoder's own decision, user by user
    team_lists = users["team_ids"]
    member_of = pc.list_parent_indices(team_lists).to_numpy()  # one element per (user, team)
    team_index = pc.index_in(pc.list_flatten(team_lists), value_set=teams["id"])
    company = teams["company_id"].take(team_index)  # null: no such team
    known_team = pc.is_valid(team_index).to_numpy(zero_copy_only=False)
    memberships = pa.table({
        "user": member_of[known_team], "company": company.filter(pc.is_valid(team_index)),
        "included": included[member_of[known_team]],
    }).group_by(["user", "company"], use_threads=False).aggregate([("included", "min")])  # once per company
    per_company = memberships.group_by("company", use_threads=False).aggregate(
        [([], "count_all"), ("included_min", "sum")]
    ).sort_by("company")
    plan_of_row = pc.index_in(per_company["company"], value_set=companies["id"])
    return [
        {
            "company": company_id,
            "plan": company_plan if known else UNKNOWN_PLAN,
            "free": known and is_free_plan(company_plan),
            "users": users_count,
            "emails_included": included_count,
            "emails_withheld": users_count - included_count,
        }
        for company_id, known, company_plan, users_count, included_count in zip(
            per_company["company"].to_pylist(),
            pc.is_valid(plan_of_row).to_pylist(),
            companies["plan"].take(plan_of_row).to_pylist(),
            per_company["count_all"].to_pylist(),
            pc.fill_null(per_company["included_min_sum"], 0).to_pylist(),
        )
    ]


def _table(rows: Rows, schema: pa.Schema) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).combine_chunks()
    return pa.Table.from_pylist([{name: row[name] for name in schema.names} for row in rows], schema=schema)
