"""Privacy properties over random installations, judged by an oracle written from the contract.

A random installation has free, paid, odd and missing plans, teams of unknown companies,
users in several teams, in none and in unknown ones, ids that sort differently by code point
than by UTF-16 or by any collation, and times on each side of the night's two boundaries. Its
night is made and sent to a real collector on loopback; the bytes the collector received are
then checked:

- no withheld email (a user whose companies are not all free, or who is not in the payload at
  all) appears anywhere in them, headers included;
- the payload has exactly the documented keys, in order, with the documented types;
- every list is sorted by code point;
- the payload equals the oracle's (which applies the time boundaries and counts on its own).

The oracle below is written from contract section 5 alone; it shares no code with the pipeline.
Tests drive it with hypothesis; ``telemetry-pipeline reliability-report`` with a seeded random.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from telemetry_pipeline.reliability.bad_input import (
    CONFIG_ENV,
    END,
    HOUR,
    NIGHT,
    START,
    Setup,
    source_database,
    write_config,
    send_night,
)
from telemetry_pipeline.reliability.loopback import LoopbackCollector
from telemetry_pipeline.source.database import SOURCE_URL_ENV

T = TypeVar("T")

TIMES = (START - 1, START, START + 1, START + 12 * HOUR + 345, END - 1, END, END + 1, 0, -1, START - 720 * HOUR)
ID_STEMS = ("a", "Z", "é", "Ω", "\U0001d11e", "\uffee", "'; DROP TABLE users; --", "%_", "a b", "İ")
PLANS = (None, "FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", "BUSINESS", "ENTERPRISE", "freeplan", "", "FREEPLAN ")
MOSTLY_FREE = (None, "FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED", "FREEPLAN ")  # so that emails do go, often
PROVIDERS = ("github", "jira", "GitLab", "slack", "é-provider")
FREE = {None, "FREEPLAN", "30DAYTRIAL", "TRIALEXPIRED"}


class Picker(Protocol):
    def choice(self, options: Sequence[T]) -> T: ...
    def integer(self, low: int, high: int) -> int: ...


class SeededPicker:
    """Choices from ``random.Random(seed)``: the report's installations, the same on every run."""

    def __init__(self, seed: int):
        self._random = random.Random(seed)

    def choice(self, options):
        return self._random.choice(options)

    def integer(self, low, high):
        return self._random.randint(low, high)


def random_installation(pick: Picker) -> dict[str, list[dict]]:
    """Rows for every source table, shaped as contract section 3 says, odd in every allowed way."""
    def stem() -> str:
        return pick.choice(ID_STEMS)

    plans = pick.choice((PLANS, MOSTLY_FREE))
    companies = [
        {"id": f"{stem()}-c{i}", "name": f"Company {i}", "plan": pick.choice(plans), "deactivated": bool(pick.integer(0, 1)),
         "created_at": pick.choice(TIMES), "creator_id": pick.choice((None, "u-0", "someone"))}
        for i in range(pick.integer(0, 4))
    ]
    company_ids = [c["id"] for c in companies] + ["c-missing"]
    teams = [
        {"id": f"{stem()}-t{i}", "company_id": pick.choice(company_ids), "name": f"Team {i}",
         "deactivated": bool(pick.integer(0, 1)), "created_at": pick.choice(TIMES), "creator_id": None,
         "live_view": pick.choice((None, "off")), "review_approval": pick.choice((None, "anyone")),
         "review_assignment": pick.choice((None, "random"))}
        for i in range(pick.integer(0, 5))
    ]
    team_ids = [t["id"] for t in teams] + ["t-missing"]
    users, members = [], []
    for i in range(pick.integer(0, 6)):
        user_id = f"{stem()}-u{i}"
        email = None if pick.integer(0, 9) == 0 else f"user{i}.{pick.integer(0, 999_999):06d}@mail{i}.test"
        users.append({
            "id": user_id, "email": email, "is_registered": bool(pick.integer(0, 1)),
            "deactivated": bool(pick.integer(0, 1)), "created_at": pick.choice(TIMES),
            "registered_at": pick.choice((None, *TIMES)), "join_method": pick.choice((None, "Invitation")),
            "last_login": pick.choice((None, *TIMES)), "last_origin": pick.choice((None, "VS Code")),
            "last_origin_detail": None,
        })
        for team_id in sorted({pick.choice(team_ids) for _ in range(pick.integer(0, 3))}):
            members.append({"team_id": team_id, "user_id": user_id, "is_admin": bool(pick.integer(0, 1))})
    user_ids = [u["id"] for u in users] + ["u-missing"]
    tokens = [
        {"user_id": pick.choice(user_ids), "team_id": "t-any", "provider": pick.choice(PROVIDERS),
         "has_access_token": bool(pick.integer(0, 1))}
        for _ in range(pick.integer(0, 4))
    ]
    codemarks = [
        {"id": f"cm{i}", "team_id": "t-any", "creator_id": "u-any", "created_at": START,
         "review_id": pick.choice((None, "r-x"))}
        for i in range(pick.integer(0, 3))
    ]
    codemark_ids = [c["id"] for c in codemarks]
    posts = [
        {"id": f"p{i}", "team_id": "t-any", "creator_id": pick.choice(user_ids), "created_at": pick.choice(TIMES),
         "codemark_id": pick.choice((None, *codemark_ids, "cm-missing")), "review_id": pick.choice((None, "r-x"))}
        for i in range(pick.integer(0, 8))
    ]
    reviews = [
        {"id": f"{stem()}-r{i}", "team_id": "t-any", "creator_id": "u-any", "created_at": pick.choice(TIMES),
         "approved_at": pick.choice((None, *TIMES))}
        for i in range(pick.integer(0, 4))
    ]
    return {"companies": companies, "teams": teams, "users": users, "team_members": members,
            "provider_tokens": tokens, "posts": posts, "codemarks": codemarks, "reviews": reviews}


# ---------------------------------------------------------------------------------------------
# The oracle: contract section 5, written again
# ---------------------------------------------------------------------------------------------

def _time(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _or_default(setting: str | None, default: str) -> str:
    return default if setting is None else setting


def _exists(row: dict) -> bool:
    return row["created_at"] < END


def _during(ms: int | None) -> bool:
    return ms is not None and START <= ms < END


def emails_allowed(rows: dict[str, list[dict]]) -> dict[str, bool]:
    """Per user id: whether the contract lets the email go (a member of some team, every company free)."""
    plan = {c["id"]: c["plan"] for c in rows["companies"]}
    company = {t["id"]: t["company_id"] for t in rows["teams"]}
    allowed = {}
    for user in rows["users"]:
        teams = [m["team_id"] for m in rows["team_members"] if m["user_id"] == user["id"]]
        allowed[user["id"]] = bool(teams) and all(
            t in company and company[t] in plan and plan[company[t]] in FREE for t in teams
        )
    return allowed


def expected_payload(rows: dict[str, list[dict]], config: dict) -> dict:
    users = sorted((u for u in rows["users"] if _exists(u)), key=lambda u: u["id"])
    allowed = emails_allowed(rows)
    existing = {u["id"] for u in users}
    codemark_review = {c["id"]: c["review_id"] for c in rows["codemarks"]}

    def counts(user_id: str) -> dict:
        tally = {"codemarks": 0, "codemarksInReviews": 0, "reviews": 0, "replies": 0}
        for post in rows["posts"]:
            if post["creator_id"] != user_id or not _during(post["created_at"]):
                continue
            if post["review_id"] is not None:
                tally["reviews"] += 1
            elif post["codemark_id"] is not None:
                if post["codemark_id"] in codemark_review:
                    tally["codemarksInReviews" if codemark_review[post["codemark_id"]] else "codemarks"] += 1
            else:
                tally["replies"] += 1
        return tally

    def user(u: dict) -> dict:
        entry: dict[str, Any] = {"id": u["id"]}
        if allowed[u["id"]]:
            entry["email"] = u["email"]
        admin = any(m["user_id"] == u["id"] and m["is_admin"] for m in rows["team_members"])
        entry.update({"isRegistered": u["is_registered"], "isDeactivated": u["deactivated"], "isAdmin": admin,
                      "registeredAt": _time(u["registered_at"]), "joinMethod": u["join_method"],
                      "lastLogin": _time(u["last_login"]), "lastOrigin": u["last_origin"],
                      "lastOriginDetail": u["last_origin_detail"], **counts(u["id"])})
        return entry

    return {
        "date": NIGHT.isoformat(),
        "installationId": config["apiServer"]["installationId"],
        "installationVersion": config["onprem"]["installationVersion"],
        "outboundEmailEnabled": not config["email"]["suppressEmails"],
        "slackInteractiveComponentsEnabled": config["slack"]["interactiveComponentsEnabled"],
        "integrations": sorted({t["provider"] for t in rows["provider_tokens"]
                                if t["has_access_token"] and t["user_id"] in existing}),
        "companies": [
            {"id": c["id"], "name": c["name"], "isDeactivated": c["deactivated"], "createdAt": _time(c["created_at"]),
             "creatorId": c["creator_id"], "plan": c["plan"]}
            for c in sorted(rows["companies"], key=lambda c: c["id"]) if _exists(c)
        ],
        "teams": [
            {"id": t["id"], "name": t["name"], "companyId": t["company_id"], "isDeactivated": t["deactivated"],
             "createdAt": _time(t["created_at"]), "creatorId": t["creator_id"],
             "liveView": _or_default(t["live_view"], "on"),
             "codeReviewApproval": _or_default(t["review_approval"], "user"),
             "codeReviewAssignment": _or_default(t["review_assignment"], "authorship2")}
            for t in sorted(rows["teams"], key=lambda t: t["id"]) if _exists(t)
        ],
        "users": [user(u) for u in users],
        "codeReviews": [
            {"teamId": r["team_id"], "reviewId": r["id"], "createdAt": _time(r["created_at"]),
             "approvedAt": _time(r["approved_at"])}
            for r in sorted(rows["reviews"], key=lambda r: r["id"])
            if _during(r["created_at"]) or _during(r["approved_at"])
        ],
    }


# ---------------------------------------------------------------------------------------------
# The properties, checked on what the collector received
# ---------------------------------------------------------------------------------------------

TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
STRING, BOOLEAN, INTEGER = "string", "boolean", "integer"
SHAPES = {
    "top": [("date", STRING), ("installationId", STRING), ("installationVersion", STRING),
            ("outboundEmailEnabled", BOOLEAN), ("slackInteractiveComponentsEnabled", BOOLEAN),
            ("integrations", "strings"), ("companies", "companies"), ("teams", "teams"), ("users", "users"),
            ("codeReviews", "codeReviews")],
    "companies": [("id", STRING), ("name", STRING), ("isDeactivated", BOOLEAN), ("createdAt", "time"),
                  ("creatorId", "string?"), ("plan", "string?")],
    "teams": [("id", STRING), ("name", STRING), ("companyId", STRING), ("isDeactivated", BOOLEAN),
              ("createdAt", "time"), ("creatorId", "string?"), ("liveView", STRING),
              ("codeReviewApproval", STRING), ("codeReviewAssignment", STRING)],
    "users": [("id", STRING), ("email", "string?"), ("isRegistered", BOOLEAN), ("isDeactivated", BOOLEAN),
              ("isAdmin", BOOLEAN), ("registeredAt", "time?"), ("joinMethod", "string?"), ("lastLogin", "time?"),
              ("lastOrigin", "string?"), ("lastOriginDetail", "string?"), ("codemarks", INTEGER),
              ("codemarksInReviews", INTEGER), ("reviews", INTEGER), ("replies", INTEGER)],
    "codeReviews": [("teamId", STRING), ("reviewId", STRING), ("createdAt", "time"), ("approvedAt", "time?")],
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind.endswith("?") and value is None:
        return True
    kind = kind.rstrip("?")
    return {
        STRING: lambda v: isinstance(v, str),
        BOOLEAN: lambda v: isinstance(v, bool),
        INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "time": lambda v: isinstance(v, str) and TIME.fullmatch(v) is not None,
        "strings": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    }.get(kind, lambda v: isinstance(v, list))(value)


def shape_problems(payload: Any) -> list[str]:
    """Exactly the documented keys, in order, each of its documented type (``email`` may be absent)."""
    if not isinstance(payload, dict):
        return ["the payload is not an object"]
    problems = []

    def check(entry: Any, shape: str, where: str) -> None:
        fields = SHAPES[shape]
        keys = [k for k, _ in fields]
        if not isinstance(entry, dict):
            problems.append(f"{where} is not an object")
            return
        allowed = [keys] + ([[k for k in keys if k != "email"]] if shape == "users" else [])
        if list(entry) not in allowed:
            problems.append(f"{where} has keys {list(entry)}")
            return
        for key, kind in fields:
            if key in entry and not _type_ok(entry[key], kind):
                problems.append(f"{where}.{key} is {entry[key]!r}, not {kind}")
            if kind in SHAPES and isinstance(entry.get(key), list):
                for index, item in enumerate(entry[key]):
                    check(item, kind, f"{key}[{index}]")

    check(payload, "top", "payload")
    return problems


def order_problems(payload: dict) -> list[str]:
    """Every list sorted by code point; integrations distinct."""
    problems = []
    for name, key in (("companies", "id"), ("teams", "id"), ("users", "id"), ("codeReviews", "reviewId")):
        ids = [entry[key] for entry in payload.get(name, [])]
        if ids != sorted(ids):
            problems.append(f"{name} are not sorted by code point: {ids}")
    integrations = payload.get("integrations", [])
    if integrations != sorted(set(integrations)):
        problems.append(f"integrations are not sorted and distinct: {integrations}")
    return problems


def withheld_emails(rows: dict[str, list[dict]]) -> list[str]:
    """Every email that must not leave: of users not sent at all, or not only in free companies."""
    allowed = emails_allowed(rows)
    return [u["email"] for u in rows["users"] if u["email"] and not (_exists(u) and allowed[u["id"]])]


def leak_problems(sent: bytes, rows: dict[str, list[dict]]) -> list[str]:
    """Withheld emails found anywhere in the bytes that left, as they are or JSON-escaped."""
    leaks = []
    for email in withheld_emails(rows):
        forms = {email.encode("utf-8"), json.dumps(email)[1:-1].encode("utf-8")}
        if any(form in sent for form in forms):
            leaks.append(f"withheld email of a user found in the request: {email}")
    return leaks


PROPERTIES = (
    "no withheld email leaves",
    "documented keys and types",
    "lists sorted by code point",
    "payload equals the oracle (time boundaries, redaction, counts)",
)


@dataclass
class InstallationResult:
    emails_withheld: int
    emails_sent: int
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return not any(self.problems.values())


def check_installation(rows: dict[str, list[dict]], workdir: Path, backend: str = "sqlite",
                       postgres_url: str | None = None) -> InstallationResult:
    """Write ``rows`` for real, send their night to a loopback collector, check what it received."""
    workdir.mkdir(parents=True, exist_ok=True)
    setup = Setup(backend, rows=rows)
    with LoopbackCollector() as collector, source_database(setup, workdir, postgres_url) as source_url:
        env = {SOURCE_URL_ENV: source_url,
               CONFIG_ENV: str(write_config(setup, workdir / "codestream.json", collector.url))}
        send_night(env, NIGHT, workdir / "outbox")
    [request] = collector.requests
    payload = json.loads(request.body)[0]
    expected = expected_payload(rows, setup.config)
    equal = json.dumps(payload, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)
    return InstallationResult(
        emails_withheld=len(withheld_emails(rows)),
        emails_sent=sum(1 for u in payload["users"] if "email" in u),
        problems={
            PROPERTIES[0]: leak_problems(request.raw, rows),
            PROPERTIES[1]: shape_problems(payload),
            PROPERTIES[2]: order_problems(payload),
            PROPERTIES[3]: [] if equal else [f"sent {json.dumps(payload, ensure_ascii=False)[:2000]}"
                                             f" expected {json.dumps(expected, ensure_ascii=False)[:2000]}"],
        },
    )
