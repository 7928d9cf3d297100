"""The night's payload encoded column by column from Arrow tables: what the summary asset sends.

It gives byte for byte what ``encode_payload(build_night_summary(...).payload)`` gives for the
same rows (rules/payload.py stays the readable reference, and the tests hold the two against
each other). Building dicts for 100,000 users and encoding them costs about a second a night;
here every field of every entry is formatted by Arrow compute kernels, each entry is joined into
its JSON text in one pass, and the payload is laid out by one take over those texts, in the
buffer the take returns, so a night takes tens of milliseconds.

Rows the fast path does not model (a time outside the calendar, a repeated company, team or
activity id) go through the reference builder instead, which raises or resolves them exactly as
it always has.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from telemetry_pipeline.nights import night_bounds_ms
from telemetry_pipeline.rules import plans
from telemetry_pipeline.rules.payload import (
    TEAM_SETTING_DEFAULTS,
    InstallationFacts,
    NightSummary,
    build_night_summary,
    encode_payload,
)

# The calendar iso_ms can write: 0001-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z.
_FIRST_MS, _LAST_MS = -62_135_596_800_000, 253_402_300_799_999
_ACTIVITY = ("codemarks", "codemarks_in_reviews", "reviews", "replies")
_FREE = pa.array(sorted(plans.FREE_PLANS), pa.string())
# Email decisions, in the order of their codes below.
_REASONS = (plans.EMAIL_INCLUDED, plans.WITHHELD_NO_COMPANY, plans.WITHHELD_UNKNOWN_TEAM,
            plans.WITHHELD_UNKNOWN_COMPANY, plans.WITHHELD_PAID)
_INCLUDED, _NO_COMPANY, _UNKNOWN_TEAM, _UNKNOWN_COMPANY, _PAID = range(5)


@dataclass(frozen=True)
class EncodedNight:
    """The night's payload bytes and the figures the summary reports about them."""

    payload: bytes | pa.Buffer  # pa.Buffer: the data buffer the encoder laid the payload out in
    send: plans.SendDecision
    email_reasons: Counter
    companies: int
    teams: int
    users: int
    active_users: int
    code_reviews: int
    paid_companies: int

    @property
    def emails_included(self) -> int:
        return self.email_reasons[plans.EMAIL_INCLUDED]

    @property
    def emails_withheld(self) -> int:
        return sum(self.email_reasons.values()) - self.emails_included


def encode_night(
    night: dt.date,
    facts: InstallationFacts,
    companies: pa.Table,
    teams: pa.Table,
    users: pa.Table,
    activity: pa.Table,
    code_reviews: pa.Table,
) -> EncodedNight:
    """The night's payload, as bytes, from the night's extracted tables (see build_night_summary)."""
    return NightEncoder(facts).encode(night, companies, teams, users, activity, code_reviews)


# The users' columns their JSON and their email decision are made of, apart from the night's counts.
_USER_COLUMNS = ("id", "email", "is_registered", "deactivated", "is_admin", "registered_at", "join_method",
                 "last_login", "last_origin", "last_origin_detail", "team_ids")
_NO_ACTIVITY = ',"codemarks":0,"codemarksInReviews":0,"reviews":0,"replies":0}'
_HALVES_FROM = 20_000  # new users of a night: from this many, encoded in two threads


@dataclass(frozen=True)
class _Users:
    """A night's users as the next night may reuse them, in the order they were given."""

    rows: pa.Table  # _USER_COLUMNS
    teams: pa.Table  # the teams and companies their email decisions were made against
    companies: pa.Table
    codes: np.ndarray  # each user's email decision
    entries: pa.ChunkedArray  # each user's JSON up to its counts: ',{"id":…' with the email where it goes


class NightEncoder:
    """Encodes nights one after another, as a backfill does.

    Most of a payload is its users, and a user's JSON is the same from one night to the next but
    for the night's counts. A backfill's nights see one snapshot of the users, each night those
    created by its end, so a night's users are the night before's followed by the new ones. When
    they are (and the teams and companies are the same), the users of the night before keep their
    JSON and email decisions and only the new ones are encoded; otherwise all of them are.
    """

    def __init__(self, facts: InstallationFacts):
        self.facts = facts
        self._users: _Users | None = None

    def encode(self, night: dt.date, companies: pa.Table, teams: pa.Table, users: pa.Table,
               activity: pa.Table, code_reviews: pa.Table) -> EncodedNight:
        facts = self.facts
        night_end = night_bounds_ms(night)[1]
        companies = companies.combine_chunks()
        teams = teams.combine_chunks()
        users = users.combine_chunks()
        activity = activity.combine_chunks()
        code_reviews = code_reviews.combine_chunks()
        paid_companies = len(companies) - pc.sum(_is_free(companies["plan"])).as_py() if len(companies) else 0
        listed_companies = _sorted(companies.filter(pc.less(companies["created_at"], night_end)), "id")
        listed_teams = _sorted(teams.filter(pc.less(teams["created_at"], night_end)), "id")
        listed_reviews = _sorted(code_reviews, "review_id")
        if not _modelled(listed_companies, listed_teams, users, listed_reviews, companies, teams, activity):
            self._users = None
            return _by_reference(night, facts, companies, teams, users, activity, code_reviews, paid_companies)

        known = self._users_of(users, teams, companies)
        counts = _activity_counts(users, activity)
        head = encode_payload({
            "date": night.isoformat(),
            "installationId": facts.installation_id,
            "installationVersion": facts.installation_version,
            "outboundEmailEnabled": facts.outbound_email_enabled,
            "slackInteractiveComponentsEnabled": facts.slack_interactive_components_enabled,
            "integrations": _integrations(users),
        })
        before_users = b"".join([head[:-1], b',"companies":[', _company_entries(listed_companies),
                                 b'],"teams":[', _team_entries(listed_teams), b'],"users":['])
        after_users = b"".join([b'],"codeReviews":[', _review_entries(listed_reviews), b"]}"])
        return EncodedNight(
            payload=_laid_out(before_users, known.entries, users["id"], counts, after_users),
            send=plans.opt_out_decision(facts.disable_phone_home, companies["plan"].to_pylist()),
            email_reasons=Counter({_REASONS[code]: int(n) for code, n in
                                   enumerate(np.bincount(known.codes, minlength=len(_REASONS))) if n}),
            companies=len(listed_companies), teams=len(listed_teams), users=len(users),
            active_users=int(np.count_nonzero(counts.any(axis=0))), code_reviews=len(listed_reviews),
            paid_companies=paid_companies,
        )

    def _users_of(self, users: pa.Table, teams: pa.Table, companies: pa.Table) -> _Users:
        """The night's users' email decisions and JSON: the night before's followed by the new
        users' when the night before's users come first, unchanged; else all encoded anew."""
        rows, teams, companies = users.select(list(_USER_COLUMNS)), _without_night(teams), _without_night(companies)
        previous, self._users = self._users, None
        if (previous is None or rows.num_rows < previous.rows.num_rows or not previous.teams.equals(teams)
                or not previous.companies.equals(companies)
                or not rows.slice(0, previous.rows.num_rows).equals(previous.rows)):
            previous = _Users(rows.slice(0, 0), teams, companies, np.zeros(0, dtype=np.int64),
                              pa.chunked_array([], pa.string()))
        new_rows = rows.slice(previous.rows.num_rows)
        new_codes = _email_decisions(new_rows, teams, companies)
        new_entries = _user_entries_in_halves(new_rows, new_codes == _INCLUDED) if len(new_rows) else []
        self._users = _Users(rows, teams, companies, np.concatenate([previous.codes, new_codes]),
                             pa.chunked_array(previous.entries.chunks + new_entries, pa.string()))
        return self._users


def _without_night(table: pa.Table) -> pa.Table:
    return table.drop_columns(["night"]) if "night" in table.column_names else table


def _user_entries_in_halves(users: pa.Table, include_email: np.ndarray) -> list[pa.Array]:
    """``_user_entries`` of each half of the users at the same time (Arrow's kernels release the
    GIL), when there are enough of them for a second thread to pay: a large night's first 100,000."""
    if len(users) < _HALVES_FROM:
        return [_user_entries(users, include_email)]
    half = len(users) // 2
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda rows: _user_entries(users.slice(rows.start, rows.stop - rows.start),
                                                        include_email[rows]),
                             (slice(0, half), slice(half, len(users)))))


def _user_entries(users: pa.Table, include_email: np.ndarray) -> pa.Array:
    """Each user's JSON up to its counts, the email only where it may go, with a leading comma."""
    email = pc.if_else(pa.array(include_email, pa.bool_()),
                       pc.binary_join_element_wise(',"email":', _json_strings(users["email"]), ""), "")
    return _array(pc.binary_join_element_wise(
        ',{"id":', _json_strings(users["id"]), email,
        ',"isRegistered":', _json_bools(users["is_registered"]),
        ',"isDeactivated":', _json_bools(users["deactivated"]), ',"isAdmin":', _json_bools(users["is_admin"]),
        ',"registeredAt":', _json_times(users["registered_at"]), ',"joinMethod":', _json_strings(users["join_method"]),
        ',"lastLogin":', _json_times(users["last_login"]), ',"lastOrigin":', _json_strings(users["last_origin"]),
        ',"lastOriginDetail":', _json_strings(users["last_origin_detail"]), "",
    ))


def _laid_out(before_users: bytes, entries: pa.ChunkedArray, ids: pa.ChunkedArray, counts: np.ndarray,
              after_users: bytes) -> pa.Buffer:
    """The payload in one copy. Each of its pieces is a value of one string array: the text before
    the users, each user's entry, each active user's counts, the counts every inactive user shares,
    the first user's entry without its comma, the text after. One take lays them end to end, the
    users by id, and the data buffer it returns is the payload."""
    users = len(entries)
    order = pc.sort_indices(ids).to_numpy() if users else np.zeros(0, dtype=np.int64)
    active = np.flatnonzero(counts.any(axis=0))
    counted = counts[:, active]
    active_counts = _array(pc.binary_join_element_wise(
        ',"codemarks":', _json_ints(counted[0]), ',"codemarksInReviews":', _json_ints(counted[1]),
        ',"reviews":', _json_ints(counted[2]), ',"replies":', _json_ints(counted[3]), "}", ""))
    first_entry = entries[int(order[0])].as_py()[1:] if users else ""
    values = pa.chunked_array([pa.array([before_users], pa.string()), *entries.chunks, active_counts,
                               pa.array([_NO_ACTIVITY, first_entry, after_users], pa.string())], pa.string())
    # Where each piece is among the values.
    entry_at, counts_at = 1, 1 + users
    no_activity_at, first_entry_at, after_at = (counts_at + len(active) + i for i in range(3))
    counts_of = np.full(users, no_activity_at, dtype=np.int64)
    counts_of[active] = counts_at + np.arange(len(active))
    picks = np.empty(2 * users + 2, dtype=np.int64)
    picks[0], picks[-1] = 0, after_at
    picks[1:-1:2] = entry_at + order
    picks[2:-1:2] = counts_of[order]
    if users:
        picks[1] = first_entry_at
    laid_out = _array(values.take(pa.array(picks)))
    offsets = string_offsets(laid_out)
    return laid_out.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def string_offsets(values: pa.StringArray) -> np.ndarray:
    """Where each value of a string array starts in its data buffer, and where the last ends."""
    return np.frombuffer(values.buffers()[1], dtype=np.int32, count=len(values) + 1, offset=values.offset * 4)


def _array(values) -> pa.Array:
    """One array; a chunked array of one chunk is that chunk (combine_chunks would copy it)."""
    if not isinstance(values, pa.ChunkedArray):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def _by_reference(night, facts, companies, teams, users, activity, code_reviews, paid_companies) -> EncodedNight:
    summary: NightSummary = build_night_summary(
        night, facts, companies.to_pylist(), teams.to_pylist(), users.to_pylist(), activity.to_pylist(),
        code_reviews.to_pylist(),
    )
    payload = summary.payload
    return EncodedNight(
        payload=encode_payload(payload), send=summary.send, email_reasons=summary.email_reasons,
        companies=len(payload["companies"]), teams=len(payload["teams"]), users=len(payload["users"]),
        active_users=sum(1 for u in payload["users"]
                         if u["codemarks"] + u["codemarksInReviews"] + u["reviews"] + u["replies"]),
        code_reviews=len(payload["codeReviews"]), paid_companies=paid_companies,
    )


def _modelled(listed_companies, listed_teams, users, listed_reviews, companies, teams, activity) -> bool:
    """False when the rows hold something only the reference builder handles (see module docstring)."""
    for table, column in ((companies, "id"), (teams, "id"), (activity, "user_id")):
        if len(table) and pc.count_distinct(table[column]).as_py() != len(table):
            return False
    times = [listed_companies["created_at"], listed_teams["created_at"], users["registered_at"],
             users["last_login"], listed_reviews["created_at"], listed_reviews["approved_at"]]
    for values in times:
        if len(values) and values.null_count < len(values):
            low, high = pc.min_max(values).values()
            if low.as_py() < _FIRST_MS or high.as_py() > _LAST_MS:
                return False
    return True


def _sorted(table: pa.Table, column: str) -> pa.Table:
    """By Unicode code point: Arrow compares UTF-8 bytes, whose order is code point order (stable)."""
    if len(table) < 2:
        return table
    return table.take(pc.sort_indices(table[column]))


def _is_free(plan: pa.Array) -> pa.Array:
    return pc.or_kleene(pc.is_null(plan), pc.is_in(plan, value_set=_FREE))


def emails_included(users: pa.Table, teams: pa.Table, companies: pa.Table) -> np.ndarray:
    """Per user, whether plans.email_decision includes their email (a boolean array)."""
    return _email_decisions(users, teams, companies) == _INCLUDED


def _email_decisions(users: pa.Table, teams: pa.Table, companies: pa.Table) -> np.ndarray:
    """Per user, the code of plans.email_decision: the first of the user's teams that fails decides."""
    team_lists = users["team_ids"]
    codes = np.full(len(users), _INCLUDED, dtype=np.int64)
    lengths = pc.fill_null(pc.list_value_length(team_lists), 0).to_numpy()
    codes[lengths == 0] = _NO_COMPANY
    member_teams = pc.list_flatten(team_lists)
    if len(member_teams) == 0:
        return codes
    owner = pc.list_parent_indices(team_lists).to_numpy()
    team_index = pc.index_in(member_teams, value_set=teams["id"])
    company_index = pc.index_in(teams["company_id"].take(team_index), value_set=companies["id"])
    free = _is_free(companies["plan"].take(company_index))
    step = np.full(len(member_teams), _INCLUDED, dtype=np.int64)
    step[~pc.fill_null(free, True).to_numpy(zero_copy_only=False)] = _PAID
    step[pc.is_null(company_index).to_numpy(zero_copy_only=False)] = _UNKNOWN_COMPANY
    step[pc.is_null(team_index).to_numpy(zero_copy_only=False)] = _UNKNOWN_TEAM
    failing = np.flatnonzero(step != _INCLUDED)
    # Elements are in list order, so each user's first failing element is their first occurrence.
    failed_users, first = np.unique(owner[failing], return_index=True)
    codes[failed_users] = step[failing[first]]
    return codes


def _activity_counts(users: pa.Table, activity: pa.Table) -> np.ndarray:
    """The four counts of each user (rows: codemarks, in reviews, reviews, replies); 0 without activity."""
    counts = np.zeros((len(_ACTIVITY), len(users)), dtype=np.int64)
    if len(activity) == 0 or len(users) == 0:
        return counts
    row = pc.index_in(users["id"], value_set=activity["user_id"])
    found = pc.is_valid(row).to_numpy(zero_copy_only=False)
    rows = pc.drop_null(row).to_numpy()
    for i, name in enumerate(_ACTIVITY):
        counts[i, found] = activity[name].to_numpy(zero_copy_only=False)[rows]
    return counts


def _integrations(users: pa.Table) -> list:
    if len(users) == 0:
        return []
    return sorted(pc.unique(pc.list_flatten(users["providers"])).to_pylist())


# --- JSON values, a column at a time


def _json_strings(values: pa.Array) -> pa.Array:
    """Each value as json.dumps(ensure_ascii=False) writes it; NULL as null."""
    values = _array(pc.cast(values, pa.string()))
    if _has_escapes(values):
        values = _escaped(values)
    return pc.fill_null(pc.binary_join_element_wise('"', values, '"', ""), "null")


def _has_escapes(values: pa.StringArray) -> bool:
    """Whether any value holds a quote, a backslash or a control character: a look at the bytes of
    the whole column at once (a regex over each value costs ten times as much)."""
    data = values.buffers()[2]
    if len(values) == 0 or data is None:
        return False
    offsets = string_offsets(values)
    text = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return bool((text < 0x20).any() or (text == ord('"')).any() or (text == ord("\\")).any())


def _escaped(values: pa.Array) -> pa.Array:
    """Quotes and backslashes escaped; the rare value with a control character written by json."""
    escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    control = pc.fill_null(pc.match_substring_regex(values, r"[\x00-\x1f]"), False)
    if pc.any(control).as_py():
        rows = np.flatnonzero(control.to_numpy(zero_copy_only=False))
        patched = [json.dumps(v, ensure_ascii=False)[1:-1] for v in values.take(pa.array(rows)).to_pylist()]
        escaped = pc.replace_with_mask(escaped, control, pa.array(patched, pa.string()))
    return escaped


def _json_bools(values: pa.Array) -> pa.Array:
    return pc.fill_null(pc.if_else(values, "true", "false"), "null")


def _json_ints(values) -> pa.Array:
    return pc.fill_null(pc.cast(values, pa.string()), "null")


def _json_times(values: pa.Array) -> pa.Array:
    """Epoch milliseconds as iso_ms writes them (the range was checked in _modelled).

    Arrow writes a millisecond timestamp as ``2026-11-26 08:15:30.123`` (years 1 to 9999 with
    four digits); the space becomes the T. Much faster than strftime."""
    text = pc.cast(pc.cast(values, pa.timestamp("ms")), pa.string())
    text = pc.utf8_replace_slice(text, 10, 11, "T")
    return pc.fill_null(pc.binary_join_element_wise('"', text, 'Z"', ""), "null")


def _entries(pieces: list) -> pa.Buffer | bytes:
    """Join each row's pieces into its JSON object; the section is the rows' text, comma-separated.

    Every object is written with a leading comma into one Arrow string array, whose data buffer
    then holds the whole section (returned as it is, not copied); the first comma is dropped.
    """
    joined = _array(pc.binary_join_element_wise(*pieces, ""))
    if len(joined) == 0:
        return b""
    offsets = string_offsets(joined)
    return joined.buffers()[2][int(offsets[0]) + 1:int(offsets[-1])]


def _company_entries(companies: pa.Table) -> pa.Buffer | bytes:
    if len(companies) == 0:
        return b""
    return _entries([
        ',{"id":', _json_strings(companies["id"]), ',"name":', _json_strings(companies["name"]),
        ',"isDeactivated":', _json_bools(companies["deactivated"]),
        ',"createdAt":', _json_times(companies["created_at"]),
        ',"creatorId":', _json_strings(companies["creator_id"]), ',"plan":', _json_strings(companies["plan"]), "}",
    ])


def _team_entries(teams: pa.Table) -> pa.Buffer | bytes:
    if len(teams) == 0:
        return b""

    def setting(name: str) -> pa.Array:
        return _json_strings(pc.fill_null(teams[name], TEAM_SETTING_DEFAULTS[name]))

    return _entries([
        ',{"id":', _json_strings(teams["id"]), ',"name":', _json_strings(teams["name"]),
        ',"companyId":', _json_strings(teams["company_id"]), ',"isDeactivated":', _json_bools(teams["deactivated"]),
        ',"createdAt":', _json_times(teams["created_at"]), ',"creatorId":', _json_strings(teams["creator_id"]),
        ',"liveView":', setting("live_view"), ',"codeReviewApproval":', setting("review_approval"),
        ',"codeReviewAssignment":', setting("review_assignment"), "}",
    ])


def _review_entries(reviews: pa.Table) -> pa.Buffer | bytes:
    if len(reviews) == 0:
        return b""
    return _entries([
        ',{"teamId":', _json_strings(reviews["team_id"]), ',"reviewId":', _json_strings(reviews["review_id"]),
        ',"createdAt":', _json_times(reviews["created_at"]), ',"approvedAt":', _json_times(reviews["approved_at"]),
        "}",
    ])
