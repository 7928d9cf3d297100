"""Shared fixtures: a fresh PostgreSQL database per test session, a loopback collector,
and an environment that keeps the pipeline's own files inside each test's temporary folder."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field

import pytest

POSTGRES_ADMIN_URL = os.environ.get("TELEMETRY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No test reads the developer's settings or writes to their home."""
    for name in ("TELEMETRY_SOURCE_URL", "CODESTREAM_CONFIG", "CS_API_PHONE_HOME_URL", "TELEMETRY_START_DATE",
                 "TELEMETRY_OUTBOX_DIR", "TELEMETRY_ARCHIVE_DIR", "TELEMETRY_STORAGE_URL", "TELEMETRY_SCHEDULE_CRON",
                 "TELEMETRY_ALLOW_PLAIN_HTTP", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="session")
def postgres_database():
    """A database made for this test session, dropped at its end; yields its URL."""
    import psycopg2

    name = f"telemetry_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(POSTGRES_ADMIN_URL)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


def new_postgres_schema(database_url: str) -> str:
    """A fresh schema in ``database_url``'s database, selected through the returned URL's search_path."""
    import psycopg2

    schema = f"s_{uuid.uuid4().hex[:12]}"
    db = psycopg2.connect(database_url)
    with db, db.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {schema}")
    db.close()
    return f"{database_url}?options=-csearch_path%3D{schema}"


@pytest.fixture
def postgres_url(postgres_database):
    """A fresh schema in the session's database."""
    return new_postgres_schema(postgres_database)


@dataclass
class Collector:
    """A real HTTP server on loopback that records each request and answers from a script."""

    url: str = ""
    requests: list[dict] = field(default_factory=list)
    # Replies to give, in order: (status, headers[, seconds to stall first]); when used up, 200.
    script: list[tuple] = field(default_factory=list)

    def reply_with(self, *replies):
        self.script.extend((r, {}) if isinstance(r, int) else r for r in replies)

    @property
    def delivered(self) -> list[dict]:
        """The requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r["status"] < 300]

    @property
    def bodies(self) -> list[list]:
        return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def collector():
    state = Collector()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                status, headers, *stall = state.script.pop(0) if state.script else (200, {})
                state.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body, "status": status}
                )
            if stall:
                time.sleep(stall[0])
            reply = b'{"ok": true}' if status < 300 else b'{"error": "scripted"}'
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
