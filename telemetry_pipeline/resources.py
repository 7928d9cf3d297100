"""Dagster resources: the installation's database, its configuration file, and the way home."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import dagster as dg
from pydantic import PrivateAttr

from telemetry_pipeline import delivery
from telemetry_pipeline.codestream_config import InstallationConfig, load_installation_config
from telemetry_pipeline.locations import default_archive_dir, default_outbox_dir
from telemetry_pipeline.source.database import SourceConnection, SourceDatabase


class SourceDatabaseResource(dg.ConfigurableResource):
    """The installation's database, from TELEMETRY_SOURCE_URL; unset means the demo installation."""

    url: str | None = None
    _closing: contextlib.ExitStack | None = PrivateAttr(default=None)  # closes the run's connection
    _connection: SourceConnection | None = PrivateAttr(default=None)

    def database(self) -> SourceDatabase:
        if self.url:
            return SourceDatabase(self.url)
        from telemetry_pipeline.demo import ensure_demo_installation

        return SourceDatabase(ensure_demo_installation().source_url)

    @contextlib.contextmanager
    def connection(self) -> Iterator[SourceConnection]:
        """The run's connection. A run whose steps share a process (the in-process executor: a
        backfill, `telemetry-pipeline backfill`, the demo) initialises its resources once, so its
        five extract steps read on one connection instead of opening five (40 ms each); with a
        process per step, each step opens its own. It is closed when the run's resources are torn
        down, and dropped after a failure, so the next step starts on a fresh one."""
        reused = self._connection is not None
        if not reused:
            self._closing = contextlib.ExitStack()
            self._connection = self._closing.enter_context(self.database().connect())
        try:
            if reused:
                # A second step on this connection: the run's steps share this process. A large
                # installation's users are read on three connections (fetch_together): the other
                # two open now, while the steps before them run.
                self._connection.open_extra_connections("users")
            yield self._connection
        except BaseException:
            self._close()
            raise

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._close()

    def _close(self) -> None:
        closing, self._closing, self._connection = self._closing, None, None
        if closing is not None:
            closing.close()


class CodeStreamConfigResource(dg.ConfigurableResource):
    """The CodeStream configuration file (CODESTREAM_CONFIG; unset means the demo's)."""

    path: str | None = None
    phone_home_url: str | None = None  # CS_API_PHONE_HOME_URL, which overrides apiServer.phoneHomeUrl

    def load(self) -> InstallationConfig:
        path = self.path
        if not path:
            from telemetry_pipeline.demo import ensure_demo_installation

            path = str(ensure_demo_installation().config_path)
        return load_installation_config(path, phone_home_url_override=self.phone_home_url)


class PhoneHomeResource(dg.ConfigurableResource):
    """How a night goes home: POST with retries, or the outbox (TELEMETRY_OUTBOX_DIR) when offline.
    Each delivered body is kept in the archive (TELEMETRY_ARCHIVE_DIR)."""

    outbox_dir: str | None = None
    archive_dir: str | None = None
    retries: int = 4
    backoff_factor: float = 2.0
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    allow_plain_http: str | None = None  # TELEMETRY_ALLOW_PLAIN_HTTP: "1" allows http:// to another machine

    def outbox(self) -> str:
        return self.outbox_dir or str(default_outbox_dir())

    def archive(self) -> str:
        return self.archive_dir or str(default_archive_dir())

    def deliver(self, config: InstallationConfig, night: dt.date, payload: bytes | memoryview) -> delivery.Delivery:
        if config.phone_home_url is None:
            return delivery.write_to_outbox(self.outbox(), config.installation_id, night.isoformat(), payload)
        return delivery.post_payload(
            config.phone_home_url,
            config.require_phone_home_key(),
            config.installation_id,
            night.isoformat(),
            payload,
            delivery.RetrySettings(
                retries=self.retries,
                backoff_factor=self.backoff_factor,
                connect_timeout=self.connect_timeout_seconds,
                read_timeout=self.read_timeout_seconds,
            ),
            allow_plain_http=delivery.plain_http_allowed(self.allow_plain_http),
        )
