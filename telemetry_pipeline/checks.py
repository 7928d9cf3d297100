"""The two blocking checks that guard what leaves, on every payload the summary builds.

They run in the summary's own step (``check_specs`` of ``night_summary``), on each night's
payload as soon as it is built, while the next night is encoded: the bytes they read are the
bytes that are stored and sent. Both are derived independently of the payload encoder: the
payload is read back as text (rules/payload_scan.py), and whose email may leave is worked out
again from the extracted rows with joins. A failing check blocks the publish, in the run and in
every later run (gate.py reads the results).
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.partitions import nightly_partitions
from telemetry_pipeline.rules.payload_scan import PayloadScan, scan_payload
from telemetry_pipeline.rules.plans import FREE_PLANS


# Partitioned asset checks are "preview" in Dagster 1.13; they are what records a night's result
# against that night (in a run of one night), so the warning is silenced for that feature alone.
warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*", category=dg.PreviewWarning)


@dataclass
class NightVerdict:
    """What both checks found in one night's payload."""

    email_violations: list[str]
    key_problems: list[str]


def users_whose_email_may_leave(companies: pa.Table, teams: pa.Table, users: pa.Table) -> pa.Array:
    """Ids of the users in at least one team, every team of theirs known and every company of
    those teams known and on a free plan.

    Derived again from the extracted rows, with joins, independently of the redaction code it guards.
    """
    team_lists = users["team_ids"]
    members = pa.table({
        "user": pc.take(users["id"], pc.list_parent_indices(team_lists)),
        "team": pc.list_flatten(team_lists),
    })
    known_teams = pa.table({"team": teams["id"], "company": teams["company_id"],
                            "team_known": pa.repeat(True, teams.num_rows)})
    known_companies = pa.table({"company": companies["id"], "plan": companies["plan"],
                                "company_known": pa.repeat(True, companies.num_rows)})
    joined = members.join(known_teams, keys="team", join_type="left outer")
    joined = joined.join(known_companies, keys="company", join_type="left outer")
    free = pc.or_kleene(pc.is_null(joined["plan"]), pc.is_in(joined["plan"], value_set=pa.array(sorted(FREE_PLANS))))
    ok = pc.and_kleene(pc.and_kleene(pc.fill_null(joined["team_known"], False),
                                     pc.fill_null(joined["company_known"], False)), free)
    by_user = pa.table({"user": joined["user"], "ok": ok}).group_by("user").aggregate([("ok", "all")])
    return by_user.filter(by_user["ok_all"])["user"]


class _Judged(NamedTuple):
    companies: pa.Table  # id, plan
    teams: pa.Table  # id, company_id
    users: pa.Table  # id, team_ids
    allowed: pa.ChunkedArray  # users_whose_email_may_leave of them


class EmailAllowance:
    """``users_whose_email_may_leave`` night after night, as the summary checks a backfill.

    A backfill's nights see one snapshot of the users, each night those created by its end: a
    night's users are the night before's followed by new ones, against the same teams and
    companies. A user's allowance depends only on their own teams and those teams' companies, so
    then only the new users are judged; otherwise all of them are. Kept by the checks apart from
    the encoder's own reuse (rules/payload_columns.py), which they guard.
    Not thread-safe: one night at a time, in order."""

    def __init__(self):
        self._judged: _Judged | None = None

    def __call__(self, companies: pa.Table, teams: pa.Table, users: pa.Table) -> pa.ChunkedArray:
        companies, teams = companies.select(["id", "plan"]), teams.select(["id", "company_id"])
        users = users.select(["id", "team_ids"])
        judged, self._judged = self._judged, None
        if (judged is None or not judged.companies.equals(companies) or not judged.teams.equals(teams)
                or users.num_rows < judged.users.num_rows
                or not users.slice(0, judged.users.num_rows).equals(judged.users)):
            judged = _Judged(companies, teams, users.slice(0, 0), pa.chunked_array([], pa.string()))
        new_users = users.slice(judged.users.num_rows)
        newly_allowed = users_whose_email_may_leave(companies, teams, new_users)
        self._judged = _Judged(companies, teams, users,
                               pa.chunked_array(judged.allowed.chunks + newly_allowed.chunks, pa.string()))
        return self._judged.allowed


def check_payload(night: str, payload: bytes | pa.Buffer, may_leave: pa.Array,
                  scan_of: Callable[[bytes | pa.Buffer], PayloadScan] = scan_payload) -> NightVerdict:
    """Both checks on one night's payload; ``may_leave`` is ``users_whose_email_may_leave`` of
    the rows it was built from (worked out beforehand: it does not need the payload). A backfill
    scans its nights with one ``PayloadScanner`` (``scan_of``), in order."""
    scan = scan_of(payload)
    emailed = scan.emailed_user_ids
    outside = emailed.filter(pc.invert(pc.is_in(emailed, value_set=may_leave)))
    return NightVerdict([f"{night}: user {user}" for user in outside.to_pylist()],
                        [f"{night}: {problem}" for problem in scan.key_problems])


SUMMARY_CHECK_SPECS = [
    dg.AssetCheckSpec("no_email_outside_free_companies", asset="night_summary", blocking=True,
                      partitions_def=nightly_partitions,
                      description="No payload carries the email of a user with a paid, unknown or missing company."),
    dg.AssetCheckSpec("payload_has_documented_keys", asset="night_summary", blocking=True,
                      partitions_def=nightly_partitions,
                      description="Every payload has exactly the contract's keys, in the contract's order."),
]


def check_results(verdicts: list[NightVerdict]) -> list[dg.AssetCheckResult]:
    """The two checks' results over the nights of a run."""
    violations = [v for verdict in verdicts for v in verdict.email_violations]
    problems = [p for verdict in verdicts for p in verdict.key_problems]
    return [
        dg.AssetCheckResult(
            check_name="no_email_outside_free_companies", passed=not violations,
            metadata={"violations": len(violations), "first_violations": violations[:20]},
            description=None if not violations else f"{len(violations)} emails that must not leave",
        ),
        dg.AssetCheckResult(
            check_name="payload_has_documented_keys", passed=not problems,
            metadata={"problems": len(problems), "first_problems": problems[:20]},
        ),
    ]
