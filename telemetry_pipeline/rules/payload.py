"""The payload of one night, field for field as contract section 5 fixes it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import night_bounds_ms
from telemetry_pipeline.rules.plans import EMAIL_INCLUDED, SendDecision, email_decision, opt_out_decision

@dataclass(frozen=True)
class PayloadField:
    """One key of the payload: the single source of its order here and of docs/WHAT_IS_SENT.md."""

    key: str
    type: str  # as it appears in the JSON; "time" is an ISO-8601 UTC string with milliseconds
    meaning: str
    columns: tuple[str, ...] = ()  # "table.column" of contract section 3 the value is read from
    config_key: str | None = None  # or the key of the CodeStream configuration file
    rule: str = ""  # how the value is made from its source, when it is not copied as it is
    items: tuple[PayloadField, ...] = ()  # the keys of each object of a list


_POSTS_OF_NIGHT = ("posts.creator_id", "posts.created_at", "posts.codemark_id", "posts.review_id")

COMPANY_FIELDS = (
    PayloadField("id", "string", "the company's id", ("companies.id",)),
    PayloadField("name", "string", "the company's name", ("companies.name",)),
    PayloadField("isDeactivated", "boolean", "whether the company is deactivated", ("companies.deactivated",)),
    PayloadField("createdAt", "time", "when the company was created", ("companies.created_at",)),
    PayloadField("creatorId", "string or null", "the id of the user who created it", ("companies.creator_id",)),
    PayloadField("plan", "string or null", "the company's plan; it decides email redaction and the opt-out",
                 ("companies.plan",), rule="as stored; null stays null"),
)
TEAM_FIELDS = (
    PayloadField("id", "string", "the team's id", ("teams.id",)),
    PayloadField("name", "string", "the team's name", ("teams.name",)),
    PayloadField("companyId", "string", "the id of the team's company", ("teams.company_id",)),
    PayloadField("isDeactivated", "boolean", "whether the team is deactivated", ("teams.deactivated",)),
    PayloadField("createdAt", "time", "when the team was created", ("teams.created_at",)),
    PayloadField("creatorId", "string or null", "the id of the user who created it", ("teams.creator_id",)),
    PayloadField("liveView", "string", "the team setting `xray` (live view)", ("teams.live_view",)),
    PayloadField("codeReviewApproval", "string", "the team's code review approval setting",
                 ("teams.review_approval",)),
    PayloadField("codeReviewAssignment", "string", "the team's code review assignment setting",
                 ("teams.review_assignment",)),
)
USER_FIELDS = (
    PayloadField("id", "string", "the user's id", ("users.id",)),
    PayloadField("email", "string or null", "the user's email address, only for users of free companies",
                 ("users.email", "team_members.team_id", "teams.company_id", "companies.plan"),
                 rule="present only when the email redaction rule below includes it; the key is absent otherwise"),
    PayloadField("isRegistered", "boolean", "whether the user has registered", ("users.is_registered",)),
    PayloadField("isDeactivated", "boolean", "whether the user is deactivated", ("users.deactivated",)),
    PayloadField("isAdmin", "boolean", "whether the user is an admin of at least one team",
                 ("team_members.is_admin",), rule="true when any of the user's memberships is an admin's"),
    PayloadField("registeredAt", "time or null", "when the user registered", ("users.registered_at",)),
    PayloadField("joinMethod", "string or null", "how the user joined", ("users.join_method",)),
    PayloadField("lastLogin", "time or null", "when the user last logged in", ("users.last_login",)),
    PayloadField("lastOrigin", "string or null", "the client of the last login (IDE plugin)",
                 ("users.last_origin",)),
    PayloadField("lastOriginDetail", "string or null", "details of that client", ("users.last_origin_detail",)),
    PayloadField("codemarks", "integer", "codemarks the user created during the night, outside reviews",
                 (*_POSTS_OF_NIGHT, "codemarks.review_id"),
                 rule="posts with a codemark_id and no review_id whose codemark exists and has no review_id"),
    PayloadField("codemarksInReviews", "integer", "codemarks the user created during the night inside reviews",
                 (*_POSTS_OF_NIGHT, "codemarks.review_id"),
                 rule="posts with a codemark_id and no review_id whose codemark has a review_id"),
    PayloadField("reviews", "integer", "code review posts the user created during the night", _POSTS_OF_NIGHT,
                 rule="posts with a review_id"),
    PayloadField("replies", "integer", "other posts (replies) the user created during the night", _POSTS_OF_NIGHT,
                 rule="posts with neither a codemark_id nor a review_id"),
)
CODE_REVIEW_FIELDS = (
    PayloadField("teamId", "string", "the id of the review's team", ("reviews.team_id",)),
    PayloadField("reviewId", "string", "the review's id", ("reviews.id",)),
    PayloadField("createdAt", "time", "when the review was created", ("reviews.created_at",)),
    PayloadField("approvedAt", "time or null", "when the review was approved", ("reviews.approved_at",)),
)
PAYLOAD_FIELDS = (
    PayloadField("date", "string", "the night reported on, `YYYY-MM-DD` (a UTC calendar day)",
                 rule="the night's partition key"),
    PayloadField("installationId", "string", "identifies the installation", config_key="apiServer.installationId"),
    PayloadField("installationVersion", "string", "the installed CodeStream version",
                 config_key="onprem.installationVersion", rule='`"N/A"` when the key is absent'),
    PayloadField("outboundEmailEnabled", "boolean", "whether the installation sends email",
                 config_key="email.suppressEmails", rule="its negation; an absent key counts as suppressed"),
    PayloadField("slackInteractiveComponentsEnabled", "boolean", "whether Slack interactive components are on",
                 config_key="slack.interactiveComponentsEnabled", rule="`false` when the key is absent"),
    PayloadField("integrations", "array of strings", "the integrations configured (GitHub, Jira, Slack, ...)",
                 ("provider_tokens.provider", "provider_tokens.has_access_token", "users.created_at"),
                 rule="sorted distinct providers of credentials with an access token, of users that exist"
                      " by the end of the night"),
    PayloadField("companies", "array of objects", "the companies", ("companies.created_at",),
                 rule="those created before the end of the night, sorted by id", items=COMPANY_FIELDS),
    PayloadField("teams", "array of objects", "the teams", ("teams.created_at",),
                 rule="those created before the end of the night, sorted by id", items=TEAM_FIELDS),
    PayloadField("users", "array of objects", "the users and what each did during the night",
                 ("users.created_at",), rule="those created before the end of the night, sorted by id",
                 items=USER_FIELDS),
    PayloadField("codeReviews", "array of objects", "the code reviews of the night",
                 ("reviews.created_at", "reviews.approved_at"),
                 rule="those created or approved during the night, sorted by reviewId", items=CODE_REVIEW_FIELDS),
)

PAYLOAD_KEYS = tuple(f.key for f in PAYLOAD_FIELDS)
COMPANY_KEYS = tuple(f.key for f in COMPANY_FIELDS)
TEAM_KEYS = tuple(f.key for f in TEAM_FIELDS)
USER_KEYS = tuple(f.key for f in USER_FIELDS)
CODE_REVIEW_KEYS = tuple(f.key for f in CODE_REVIEW_FIELDS)

# A team setting left NULL in the database is sent as CodeStream's default.
TEAM_SETTING_DEFAULTS = {"live_view": "on", "review_approval": "user", "review_assignment": "authorship2"}

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def iso_ms(ms: int | None, *, table: str, column: str, row_id: Any) -> str | None:
    """Epoch milliseconds as ``2026-11-26T08:15:30.123Z``; a value no calendar holds names its row."""
    if ms is None:
        return None
    try:
        moment = _EPOCH + dt.timedelta(milliseconds=ms)
    except OverflowError:
        moment = None
    if moment is None or moment.year < 1:
        raise TelemetryError(f"table {table}: column {column} holds {ms}, not a time, in row id={row_id!r}")
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


@dataclass(frozen=True)
class InstallationFacts:
    """What the payload takes from the configuration file."""

    installation_id: str
    installation_version: str
    outbound_email_enabled: bool
    slack_interactive_components_enabled: bool
    disable_phone_home: bool


@dataclass
class NightSummary:
    payload: dict
    send: SendDecision
    email_reasons: Counter = field(default_factory=Counter)

    @property
    def emails_included(self) -> int:
        return self.email_reasons[EMAIL_INCLUDED]

    @property
    def emails_withheld(self) -> int:
        return sum(self.email_reasons.values()) - self.emails_included


Row = Mapping[str, Any]


def build_night_summary(
    night: dt.date,
    facts: InstallationFacts,
    companies: Sequence[Row],
    teams: Sequence[Row],
    users: Sequence[Row],
    activity: Sequence[Row],
    code_reviews: Sequence[Row],
) -> NightSummary:
    """The night's payload and the decisions behind it, from the night's extracted rows.

    ``companies`` and ``teams`` are every row of their tables (redaction and the opt-out look at
    all of them); ``users`` are those that exist by the end of the night, with ``team_ids``,
    ``is_admin`` and ``providers``; ``activity`` counts per ``user_id``; ``code_reviews`` are
    those created or approved during the night.
    """
    night_end = night_bounds_ms(night)[1]
    company_of_team = {t["id"]: t["company_id"] for t in teams}
    plan_of_company = {c["id"]: c["plan"] for c in companies}
    counts_of_user = {a["user_id"]: a for a in activity}

    email_reasons: Counter = Counter()
    user_entries = []
    for user in sorted(users, key=lambda u: u["id"]):
        reason = email_decision(user["team_ids"], company_of_team, plan_of_company)
        email_reasons[reason] += 1
        user_entries.append(_user_entry(user, counts_of_user.get(user["id"]), reason == EMAIL_INCLUDED))

    payload = {
        "date": night.isoformat(),
        "installationId": facts.installation_id,
        "installationVersion": facts.installation_version,
        "outboundEmailEnabled": facts.outbound_email_enabled,
        "slackInteractiveComponentsEnabled": facts.slack_interactive_components_enabled,
        "integrations": sorted({p for user in users for p in user["providers"]}),
        "companies": [
            _company_entry(c) for c in sorted(companies, key=lambda c: c["id"]) if c["created_at"] < night_end
        ],
        "teams": [_team_entry(t) for t in sorted(teams, key=lambda t: t["id"]) if t["created_at"] < night_end],
        "users": user_entries,
        "codeReviews": [_review_entry(r) for r in sorted(code_reviews, key=lambda r: r["review_id"])],
    }
    send = opt_out_decision(facts.disable_phone_home, plan_of_company.values())
    return NightSummary(payload=payload, send=send, email_reasons=email_reasons)


def _company_entry(c: Row) -> dict:
    return {
        "id": c["id"],
        "name": c["name"],
        "isDeactivated": c["deactivated"],
        "createdAt": iso_ms(c["created_at"], table="companies", column="created_at", row_id=c["id"]),
        "creatorId": c["creator_id"],
        "plan": c["plan"],
    }


def _team_entry(t: Row) -> dict:
    def setting(name: str) -> str:
        return TEAM_SETTING_DEFAULTS[name] if t[name] is None else t[name]

    return {
        "id": t["id"],
        "name": t["name"],
        "companyId": t["company_id"],
        "isDeactivated": t["deactivated"],
        "createdAt": iso_ms(t["created_at"], table="teams", column="created_at", row_id=t["id"]),
        "creatorId": t["creator_id"],
        "liveView": setting("live_view"),
        "codeReviewApproval": setting("review_approval"),
        "codeReviewAssignment": setting("review_assignment"),
    }


def _user_entry(u: Row, counts: Row | None, include_email: bool) -> dict:
    entry: dict[str, Any] = {"id": u["id"]}
    if include_email:
        entry["email"] = u["email"]
    entry.update({
        "isRegistered": u["is_registered"],
        "isDeactivated": u["deactivated"],
        "isAdmin": u["is_admin"],
        "registeredAt": iso_ms(u["registered_at"], table="users", column="registered_at", row_id=u["id"]),
        "joinMethod": u["join_method"],
        "lastLogin": iso_ms(u["last_login"], table="users", column="last_login", row_id=u["id"]),
        "lastOrigin": u["last_origin"],
        "lastOriginDetail": u["last_origin_detail"],
        "codemarks": counts["codemarks"] if counts else 0,
        "codemarksInReviews": counts["codemarks_in_reviews"] if counts else 0,
        "reviews": counts["reviews"] if counts else 0,
        "replies": counts["replies"] if counts else 0,
    })
    return entry


def _review_entry(r: Row) -> dict:
    return {
        "teamId": r["team_id"],
        "reviewId": r["review_id"],
        "createdAt": iso_ms(r["created_at"], table="reviews", column="created_at", row_id=r["review_id"]),
        "approvedAt": iso_ms(r["approved_at"], table="reviews", column="approved_at", row_id=r["review_id"]),
    }


def encode_payload(payload: dict) -> bytes:
    """The payload's bytes: what preview prints, the outbox holds and the collector receives."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload_key_problems(payload: Any) -> list[str]:
    """Every way the payload's keys differ from the contract's, in order; empty when exact."""
    if not isinstance(payload, dict):
        return ["the payload is not a JSON object"]
    problems = []
    if tuple(payload) != PAYLOAD_KEYS:
        problems.append(f"top-level keys are {list(payload)}, expected {list(PAYLOAD_KEYS)}")
    for name, expected in (("companies", COMPANY_KEYS), ("teams", TEAM_KEYS), ("codeReviews", CODE_REVIEW_KEYS)):
        for index, entry in enumerate(payload.get(name) or []):
            if not isinstance(entry, dict) or tuple(entry) != expected:
                problems.append(f"{name}[{index}] has keys {list(entry) if isinstance(entry, dict) else entry!r}")
    without_email = tuple(k for k in USER_KEYS if k != "email")
    for index, entry in enumerate(payload.get("users") or []):
        if not isinstance(entry, dict) or tuple(entry) not in (USER_KEYS, without_email):
            problems.append(f"users[{index}] has keys {list(entry) if isinstance(entry, dict) else entry!r}")
    return problems
