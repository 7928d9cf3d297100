"""The demo installation: a small, deterministic CodeStream database (SQLite) and its configuration.

It is what the pipeline reads when TELEMETRY_SOURCE_URL and CODESTREAM_CONFIG are unset, and
what `telemetry-pipeline demo` runs a night of. Free and paid companies, users in several
teams and in none, integrations, and two weeks of activity ending at the chosen night.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from telemetry_pipeline.files import write_durably
from telemetry_pipeline.locations import demo_dir
from telemetry_pipeline.nights import DAY_MS, last_complete_night, night_start_ms
from telemetry_pipeline.source.schema import create_table_statements

DEMO_INSTALLATION_ID = "demo-installation"
ACTIVE_NIGHTS = 14

# (id, name, plan, deactivated)
COMPANIES = [
    ("c-acme", "Acme Robotics", "FREEPLAN", False),
    ("c-globex", "Globex Corporation", "BUSINESS", False),
    ("c-hooli", "Hooli", None, False),
    ("c-initech", "Initech", "30DAYTRIAL", False),
    ("c-umbrella", "Umbrella Health", "ENTERPRISE", True),
]
# (id, company, name, live_view, review_approval, review_assignment)
TEAMS = [
    ("t-acme-mobile", "c-acme", "Mobile", "off", None, None),
    ("t-acme-platform", "c-acme", "Platform", None, None, None),
    ("t-globex-payments", "c-globex", "Payments", None, "anyone", "random"),
    ("t-hooli-search", "c-hooli", "Search", None, None, None),
    ("t-initech-tps", "c-initech", "TPS Reports", None, "all", None),
    ("t-umbrella-labs", "c-umbrella", "Labs", None, None, "roundRobin"),
]
# user -> teams (first team's first member is its admin); an empty list is an orphan
MEMBERSHIPS = {
    "u-ada": ["t-acme-platform"], "u-bo": ["t-acme-platform"], "u-cy": ["t-acme-mobile"],
    "u-dana": ["t-acme-platform", "t-initech-tps"],  # two free companies: email included
    "u-erin": ["t-acme-mobile", "t-globex-payments"],  # a free and a paid company: withheld
    "u-fay": [],  # in no team: withheld
    "u-gus": ["t-globex-payments"], "u-hana": ["t-globex-payments"], "u-ivo": ["t-globex-payments"],
    "u-jo": ["t-hooli-search"], "u-kai": ["t-hooli-search"], "u-lee": ["t-initech-tps"],
    "u-mo": ["t-initech-tps"], "u-nia": ["t-umbrella-labs"], "u-oz": ["t-umbrella-labs"],
    "u-pat": ["t-acme-platform"],  # invited, never registered
}
TOKENS = [
    ("u-ada", "github", True), ("u-bo", "github", True), ("u-bo", "jira", True),
    ("u-gus", "slack", True), ("u-jo", "gitlab", False), ("u-lee", "msteams", True),
    ("u-nia", "bitbucket", True),
]


@dataclass(frozen=True)
class DemoInstallation:
    db_path: Path
    config_path: Path

    @property
    def source_url(self) -> str:
        return f"sqlite://{self.db_path}"


def ensure_demo_installation(directory: Path | None = None, last_night: dt.date | None = None,
                             refresh: bool = False) -> DemoInstallation:
    """The demo database and configuration in ``directory``, created when missing (or asked to)."""
    directory = Path(directory or demo_dir())
    installation = DemoInstallation(directory / "codestream.db", directory / "codestream.json")
    directory.mkdir(parents=True, exist_ok=True)
    if refresh or not installation.db_path.exists():
        build_demo_database(installation.db_path, last_night or last_complete_night())
    if refresh or not installation.config_path.exists():
        write_durably(installation.config_path, json.dumps(demo_config(), indent=2).encode(), prefix=".demo-")
    return installation


def demo_config() -> dict:
    """Offline (no phoneHomeUrl): the demo's payloads go to the outbox, never over the network."""
    return {
        "apiServer": {"installationId": DEMO_INSTALLATION_ID, "disablePhoneHome": False},
        "onprem": {"installationVersion": "14.0.0-demo"},
        "email": {"suppressEmails": False},
        "slack": {"interactiveComponentsEnabled": True},
        "universalSecrets": {"telemetry": "demo-phone-home-key"},
        "telemetry": {"disabled": False},
    }


def build_demo_database(path: Path, last_night: dt.date) -> None:
    """Write the demo installation as a SQLite file; the same ``last_night`` gives the same file."""
    rng = random.Random(20261126)
    end = night_start_ms(last_night) + DAY_MS
    first_active = night_start_ms(last_night - dt.timedelta(days=ACTIVE_NIGHTS - 1))
    year_ago = end - 365 * DAY_MS

    companies = [(cid, name, plan, off, year_ago + i * 20 * DAY_MS, None) for i, (cid, name, plan, off)
                 in enumerate(COMPANIES)]
    teams = [(tid, cid, name, False, year_ago + 30 * DAY_MS + i * DAY_MS, None, lv, ra, rs)
             for i, (tid, cid, name, lv, ra, rs) in enumerate(TEAMS)]
    users, members = [], []
    admins_taken: set[str] = set()
    for i, (uid, team_ids) in enumerate(MEMBERSHIPS.items()):
        created = year_ago + 60 * DAY_MS + i * 9 * DAY_MS
        registered = uid != "u-pat"
        users.append((
            uid, f"{uid[2:]}@{(team_ids[0].split('-')[1] if team_ids else 'example')}.example", registered,
            False, created, created + 3_600_000 if registered else None, "Invitation" if i % 3 else "Web Signup",
            end - rng.randrange(1, 20) * DAY_MS // 2 if registered else None,
            "VS Code" if i % 2 else "JetBrains", "IntelliJ IDEA" if i % 2 == 0 else None,
        ))
        for team_id in team_ids:
            members.append((team_id, uid, team_id not in admins_taken))
            admins_taken.add(team_id)
    tokens = [(uid, MEMBERSHIPS[uid][0] if MEMBERSHIPS[uid] else "t-acme-platform", provider, access)
              for uid, provider, access in TOKENS]

    posts, codemarks, reviews = [], [], []
    active = [u[0] for u in users if u[0] != "u-pat"]
    for night_index in range(ACTIVE_NIGHTS):
        start = first_active + night_index * DAY_MS
        for uid in rng.sample(active, k=rng.randint(3, 7)):  # most users are idle on a given night
            team = MEMBERSHIPS[uid][0] if MEMBERSHIPS[uid] else "t-acme-platform"
            for _ in range(rng.choice([1, 1, 2, 3, 8])):
                n = len(posts) + 1
                at = start + rng.randrange(DAY_MS)
                kind = rng.choices(["reply", "codemark", "review", "codemark_in_review"], [6, 2, 1, 1])[0]
                codemark_id = review_id = None
                if kind == "review":
                    review_id = f"r-{len(reviews) + 1:04d}"
                    approval_days = rng.choice([None, 0, 1, 2, 3])
                    approved = at + approval_days * DAY_MS + 3_600_000 if approval_days is not None else None
                    reviews.append((review_id, team, uid, at, approved if approved and approved < end else None))
                elif kind.startswith("codemark"):
                    codemark_id = f"cm-{n:05d}"
                    in_review = reviews[-1][0] if kind == "codemark_in_review" and reviews else None
                    if n % 17:  # now and then a post points at a codemark that was deleted
                        codemarks.append((codemark_id, team, uid, at, in_review))
                posts.append((f"p-{n:05d}", team, uid, at, codemark_id, review_id))

    temporary = Path(tempfile.mkstemp(dir=path.parent, prefix=".demo-", suffix=".db")[1])
    try:
        with sqlite3.connect(temporary) as db:
            for statement in create_table_statements():
                db.execute(statement)
            for table, rows in [("companies", companies), ("teams", teams), ("users", users),
                                ("team_members", members), ("provider_tokens", tokens), ("posts", posts),
                                ("codemarks", codemarks), ("reviews", reviews)]:
                db.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        db.close()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)

