"""Build CodeStream installations for tests: rows in Python, written to real SQLite or PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from telemetry_pipeline.nights import night_start_ms
from telemetry_pipeline.source.schema import SOURCE_TABLES, create_table_statements

HOUR_MS = 3_600_000


def at(night: str | dt.date, hours: float = 0.0) -> int:
    """Epoch milliseconds ``hours`` after the start of ``night`` (negative: before it)."""
    if isinstance(night, str):
        night = dt.date.fromisoformat(night)
    return night_start_ms(night) + int(hours * HOUR_MS)


@dataclass
class Installation:
    rows: dict[str, list[tuple]] = field(default_factory=lambda: {t: [] for t in SOURCE_TABLES})

    def company(self, id, *, plan="FREEPLAN", name=None, deactivated=False, created_at=0, creator_id=None):
        self.rows["companies"].append((id, name or f"Company {id}", plan, deactivated, created_at, creator_id))
        return self

    def team(self, id, company_id, *, name=None, deactivated=False, created_at=0, creator_id=None,
             live_view=None, review_approval=None, review_assignment=None):
        self.rows["teams"].append((id, company_id, name or f"Team {id}", deactivated, created_at, creator_id,
                                   live_view, review_approval, review_assignment))
        return self

    def user(self, id, *, email=None, teams=(), admin_of=(), is_registered=True, deactivated=False,
             created_at=0, registered_at=None, join_method=None, last_login=None, last_origin=None,
             last_origin_detail=None):
        self.rows["users"].append((id, email if email is not None else f"{id}@example.com", is_registered,
                                   deactivated, created_at, registered_at, join_method, last_login, last_origin,
                                   last_origin_detail))
        for team_id in teams:
            self.member(team_id, id, is_admin=team_id in admin_of)
        return self

    def member(self, team_id, user_id, *, is_admin=False):
        self.rows["team_members"].append((team_id, user_id, is_admin))
        return self

    def token(self, user_id, provider, *, team_id="t-any", has_access_token=True):
        self.rows["provider_tokens"].append((user_id, team_id, provider, has_access_token))
        return self

    def post(self, id, creator_id, created_at, *, team_id="t-any", codemark_id=None, review_id=None):
        self.rows["posts"].append((id, team_id, creator_id, created_at, codemark_id, review_id))
        return self

    def codemark(self, id, creator_id, created_at, *, team_id="t-any", review_id=None):
        self.rows["codemarks"].append((id, team_id, creator_id, created_at, review_id))
        return self

    def review(self, id, creator_id, created_at, *, team_id="t-any", approved_at=None):
        self.rows["reviews"].append((id, team_id, creator_id, created_at, approved_at))
        return self

    def write_sqlite(self, path: Path) -> str:
        """Create the contract's tables in a new SQLite file; returns its source URL."""
        with sqlite3.connect(path) as db:
            for statement in create_table_statements():
                db.execute(statement)
            self._insert(db.executemany, "?")
        db.close()
        return f"sqlite://{Path(path).resolve()}"

    def write_postgres(self, url: str) -> str:
        """Create the contract's tables in the schema named by ``url``'s search_path; returns ``url``."""
        import psycopg2

        with psycopg2.connect(url) as db, db.cursor() as cursor:
            for statement in create_table_statements():
                cursor.execute(statement)
            self._insert(cursor.executemany, "%s")
        db.close()
        return url

    def _insert(self, executemany, marker: str) -> None:
        for table, rows in self.rows.items():
            if rows:
                width = len(SOURCE_TABLES[table])
                executemany(f"INSERT INTO {table} VALUES ({', '.join([marker] * width)})", rows)


def write_config(path: Path, **api_server) -> Path:
    """A CodeStream configuration file; ``api_server`` keys go under ``apiServer``."""
    document = {
        "apiServer": {"installationId": "inst-1", **api_server},
        "onprem": {"installationVersion": "14.2.0"},
        "email": {"suppressEmails": False},
        "slack": {"interactiveComponentsEnabled": True},
        "universalSecrets": {"telemetry": "s3cr3t-phone-home-key"},
    }
    path.write_text(json.dumps(document))
    return path
