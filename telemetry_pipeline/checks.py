"""Asset checks that guard what leaves: both block the publish of a night that fails them."""

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.assets.summary import night_summary
from telemetry_pipeline.io_manager import NIGHTLY_TABLE, night_table, nights_of
from telemetry_pipeline.partitions import nightly_partitions
from telemetry_pipeline.rules.payload_scan import scan_payload
from telemetry_pipeline.rules.plans import FREE_PLANS


# Partitioned asset checks are "preview" in Dagster 1.13; they are what lets a check read the
# same nights as the summary it guards, so the warning is silenced for that feature alone.
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


def _payloads(table: pa.Table) -> list[pa.Buffer]:
    """The payload column's values where they lie in the Arrow buffer (no copy)."""
    column = table["payload"].combine_chunks()
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=len(column) + 1, offset=column.offset * 4)
    data = column.buffers()[2]
    return [data.slice(int(offsets[i]), int(offsets[i + 1] - offsets[i])) for i in range(len(column))]


def check_night(night: str, summary: pa.Table, companies: pa.Table, teams: pa.Table, users: pa.Table) -> NightVerdict:
    """Both checks on one night: its payload read back once, and the rows it was built from."""
    violations, problems = [], []
    # Who may carry an email is worked out while the payload is scanned (Arrow releases the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        allowed = pool.submit(users_whose_email_may_leave, companies, teams, users)
        for payload in _payloads(summary):
            scan = scan_payload(payload)
            problems += [f"{night}: {problem}" for problem in scan.key_problems]
            emailed = scan.emailed_user_ids
            outside = emailed.filter(pc.invert(pc.is_in(emailed, value_set=allowed.result())))
            violations += [f"{night}: user {user}" for user in outside.to_pylist()]
    return NightVerdict(violations, problems)


def _verdicts(summary, companies, teams, users) -> list[NightVerdict]:
    """Each night's verdict, oldest first; two nights at a time (reading and matching release the GIL)."""
    def one(night: str) -> NightVerdict:
        return check_night(night, *(night_table(t, night) for t in (summary, companies, teams, users)))

    nights = nights_of(summary)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, nights))


def emails_outside_free_companies(summary, companies, teams, users) -> list[str]:
    """Users whose email is in a payload although some company of theirs is paid, unknown or missing."""
    return [v for verdict in _verdicts(summary, companies, teams, users) for v in verdict.email_violations]


_EXTRACTED = ["companies", "teams", "users"]


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("no_email_outside_free_companies", asset=night_summary, blocking=True,
                          partitions_def=nightly_partitions, additional_deps=_EXTRACTED,
                          description="No payload carries the email of a user with a paid, unknown or missing company."),
        dg.AssetCheckSpec("payload_has_documented_keys", asset=night_summary, blocking=True,
                          partitions_def=nightly_partitions, additional_deps=_EXTRACTED,
                          description="Every payload has exactly the contract's keys, in the contract's order."),
    ],
    # One pass over each night's payload serves both checks; many nights are read one at a time
    # (each input's type, NIGHTLY_TABLE, is given by its annotation).
    ins={name: dg.AssetIn(name) for name in ("night_summary", "companies", "teams", "users")},
)
def summary_checks(night_summary: NIGHTLY_TABLE, companies: NIGHTLY_TABLE,  # type: ignore[valid-type]
                   teams: NIGHTLY_TABLE, users: NIGHTLY_TABLE):  # type: ignore[valid-type]
    """The two blocking checks on the night's payload, from one reading of it."""
    verdicts = _verdicts(night_summary, companies, teams, users)
    violations = [v for verdict in verdicts for v in verdict.email_violations]
    problems = [p for verdict in verdicts for p in verdict.key_problems]
    yield dg.AssetCheckResult(
        check_name="no_email_outside_free_companies",
        passed=not violations,
        metadata={"violations": len(violations), "first_violations": violations[:20]},
        description=None if not violations else f"{len(violations)} emails that must not leave",
    )
    yield dg.AssetCheckResult(
        check_name="payload_has_documented_keys",
        passed=not problems, metadata={"problems": len(problems), "first_problems": problems[:20]},
    )


SUMMARY_CHECKS = [summary_checks]
