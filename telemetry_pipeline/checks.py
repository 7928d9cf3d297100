"""Asset checks that guard what leaves: both block the publish of a night that fails them."""

import json
import warnings

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.assets.summary import night_summary
from telemetry_pipeline.partitions import nightly_partitions
from telemetry_pipeline.rules.payload import payload_key_problems
from telemetry_pipeline.rules.plans import is_free_plan


# Partitioned asset checks are "preview" in Dagster 1.13; they are what lets a check read the
# same nights as the summary it guards, so the warning is silenced for that feature alone.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*", category=dg.PreviewWarning)


def _rows(table: pa.Table, night: str) -> list[dict]:
    return table.filter(pc.equal(table["night"], night)).to_pylist()


def emails_outside_free_companies(summary: pa.Table, companies: pa.Table, teams: pa.Table, users: pa.Table) -> list[str]:
    """Users whose email is in a payload although some company of theirs is paid, unknown or missing.

    Derived again from the extracted rows, independently of the redaction code it guards.
    """
    violations = []
    for row in summary.to_pylist():
        night = row["night"]
        plan_of = {c["id"]: c["plan"] for c in _rows(companies, night)}
        company_of = {t["id"]: t["company_id"] for t in _rows(teams, night)}
        teams_of = {u["id"]: u["team_ids"] for u in _rows(users, night)}
        for user in json.loads(row["payload"])["users"]:
            if "email" not in user:
                continue
            team_ids = teams_of.get(user["id"]) or []
            all_free = bool(team_ids) and all(
                company_of.get(t) in plan_of and is_free_plan(plan_of[company_of[t]]) for t in team_ids
            )
            if not all_free:
                violations.append(f"{night}: user {user['id']}")
    return violations


@dg.asset_check(
    asset=night_summary,
    blocking=True,
    partitions_def=nightly_partitions,
    additional_ins={"companies": dg.AssetIn("companies"), "teams": dg.AssetIn("teams"), "users": dg.AssetIn("users")},
)
def no_email_outside_free_companies(
    night_summary: pa.Table, companies: pa.Table, teams: pa.Table, users: pa.Table
) -> dg.AssetCheckResult:
    """No payload carries the email of a user with a paid, unknown or missing company."""
    violations = emails_outside_free_companies(night_summary, companies, teams, users)
    return dg.AssetCheckResult(
        passed=not violations,
        metadata={"violations": len(violations), "first_violations": violations[:20]},
        description=None if not violations else f"{len(violations)} emails that must not leave",
    )


@dg.asset_check(asset=night_summary, blocking=True, partitions_def=nightly_partitions)
def payload_has_documented_keys(night_summary: pa.Table) -> dg.AssetCheckResult:
    """Every payload has exactly the contract's keys, in the contract's order."""
    problems = [
        f"{row['night']}: {problem}"
        for row in night_summary.to_pylist()
        for problem in payload_key_problems(json.loads(row["payload"]))
    ]
    return dg.AssetCheckResult(
        passed=not problems, metadata={"problems": len(problems), "first_problems": problems[:20]}
    )


SUMMARY_CHECKS = [no_email_outside_free_companies, payload_has_documented_keys]
