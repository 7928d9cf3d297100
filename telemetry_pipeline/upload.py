"""Air-gapped installations: send the nights waiting in an outbox from a machine that can reach
the collector.

Each pending ``<installationId>_<D>.json`` goes as it is, oldest night first, with the same
request the pipeline would have made (``delivery.post_payload``: body ``[payload]``,
``Idempotency-Key: <installationId>:<D>``). A delivered file is then archived under
``<outbox>/sent/`` (the body and its receipt, as ``archive.py`` keeps them) and removed from the
outbox, so a second run sends nothing again. The first failure stops the run; that file stays
pending and nothing after it is tried.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from telemetry_pipeline import archive
from telemetry_pipeline.codestream_config import InstallationConfig
from telemetry_pipeline.delivery import RetrySettings, check_collector_url, post_payload
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.nights import parse_night
from telemetry_pipeline.rules.payload import payload_key_problems, sha256_hex

SENT_FOLDER = "sent"
OUTBOX_NAME = re.compile(r"(?P<installation_id>.+)_(?P<night>\d{4}-\d{2}-\d{2})\.json")
SENT_BY = "telemetry-pipeline upload"


@dataclass(frozen=True)
class PendingNight:
    path: Path
    installation_id: str
    night: str
    payload: bytes  # the file's bytes, sent exactly as they are


@dataclass
class UploadResult:
    sent: list[archive.ArchivedNight] = field(default_factory=list)
    already_sent: list[PendingNight] = field(default_factory=list)


def pending_nights(outbox: Path) -> list[PendingNight]:
    """Every payload waiting in ``outbox``, oldest night first, each checked before any is sent."""
    if not outbox.is_dir():
        raise TelemetryError(f"outbox {outbox} does not exist or is not a folder")
    pending = []
    for path in outbox.iterdir():
        if path.name.startswith(".") or not path.is_file() or not path.name.endswith(".json"):
            continue  # the writer's temporary files, the lock, the sent/ folder
        pending.append(_read_pending(path))
    return sorted(pending, key=lambda p: (p.night, p.installation_id))


def _read_pending(path: Path) -> PendingNight:
    match = OUTBOX_NAME.fullmatch(path.name)
    if not match:
        raise TelemetryError(f"outbox file {path}: the name is not <installationId>_<YYYY-MM-DD>.json")
    night = parse_night(match["night"], what=f"outbox file {path}: night").isoformat()
    try:
        payload = path.read_bytes()
    except OSError as error:
        raise TelemetryError(f"outbox file {path}: cannot be read: {error.strerror}") from None
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise TelemetryError(f"outbox file {path}: not a JSON payload") from None
    problems = payload_key_problems(document)
    if problems:
        raise TelemetryError(f"outbox file {path}: not a phone-home payload: {problems[0]}")
    for key, expected in (("date", night), ("installationId", match["installation_id"])):
        if document[key] != expected:
            raise TelemetryError(f"outbox file {path}: its {key} is {document[key]!r}, its name says {expected!r}")
    return PendingNight(path, match["installation_id"], night, payload)


@contextmanager
def _only_uploader(outbox: Path) -> Iterator[None]:
    """Two uploads of one outbox at once would send a night twice; the second one stops."""
    try:
        lock = open(outbox / ".upload.lock", "a")
    except OSError as error:
        raise TelemetryError(f"outbox {outbox}: cannot be written: {error.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TelemetryError(f"outbox {outbox}: another upload is running on it") from None
        yield


def upload_outbox(
    outbox: str | os.PathLike, config: InstallationConfig, settings: RetrySettings = RetrySettings(),
    report: Callable[[str], None] = lambda line: None, allow_plain_http: bool = False,
) -> UploadResult:
    """Send every pending night of ``outbox`` to the configuration's collector, oldest first.

    ``allow_plain_http`` is TELEMETRY_ALLOW_PLAIN_HTTP, as for the pipeline's own sends.
    """
    outbox = Path(outbox)
    if config.phone_home_url is None:
        raise TelemetryError(
            f"{config.path}: no collector to upload to: set apiServer.phoneHomeUrl or CS_API_PHONE_HOME_URL"
        )
    check_collector_url(config.phone_home_url, allow_plain_http)
    key = config.require_phone_home_key()
    sent_folder = outbox / SENT_FOLDER
    result = UploadResult()
    if not outbox.is_dir():
        raise TelemetryError(f"outbox {outbox} does not exist or is not a folder")
    with _only_uploader(outbox):
        pending = pending_nights(outbox)
        for index, night in enumerate(pending):
            previous = archive.read_night(sent_folder, night.installation_id, night.night)
            if previous and previous.latest["payloadSha256"] == sha256_hex(night.payload):
                # Sent by a run that stopped before it could clear the outbox.
                night.path.unlink()
                result.already_sent.append(night)
                report(f"{night.night}  already sent  {night.path.name}  (receipt {previous.receipt_path})")
                continue
            try:
                delivered = post_payload(
                    config.phone_home_url, key, night.installation_id, night.night, night.payload, settings,
                    allow_plain_http=allow_plain_http,
                )
            except TelemetryError as error:
                left = len(pending) - index
                raise TelemetryError(
                    f"{night.path.name} not sent: {error}; {len(result.sent)} sent before it,"
                    f" {left} still pending in {outbox}"
                ) from None
            try:
                archived = archive.record_delivery(
                    sent_folder, night.installation_id, night.night, night.payload, delivered, sent_by=SENT_BY
                )
                night.path.unlink()  # only now: a crash before this leaves a receipt, and the next run skips it
            except (TelemetryError, OSError) as error:
                reason = error.strerror if isinstance(error, OSError) else str(error)
                raise TelemetryError(
                    f"{night.path.name} was sent (HTTP {delivered.status}) but could not be marked sent: {reason};"
                    " a later run sends it again with the same Idempotency-Key"
                ) from None
            result.sent.append(archived)
            attempts = delivered.attempts
            report(
                f"{night.night}  sent  {night.path.name}  HTTP {delivered.status} after {attempts}"
                f" attempt{'s' if attempts > 1 else ''}, body sha256 {archived.latest['bodySha256'][:16]}…"
            )
    return result
