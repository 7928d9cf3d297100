"""Getting one night's payload home: POST to the collector, or into the outbox when offline.

Retries are urllib3's ``Retry`` (backoff, ``Retry-After``); this module only decides what a
reply means and how the outcome is reported. The phone-home key goes into one header and
nowhere else: not into messages, metadata or files.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from telemetry_pipeline.errors import TelemetryError

# 408, 429 and every 5xx are worth another try; any other non-2xx reply is final.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
MAX_REPLY_BYTES = 64 * 1024


class PhoneHomeRetry(Retry):
    """urllib3's Retry, except that a 413 stays final even when it carries Retry-After."""

    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})


@dataclass(frozen=True)
class RetrySettings:
    retries: int = 4
    backoff_factor: float = 2.0
    backoff_max: float = 120.0
    retry_after_max: int = 300
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


@dataclass(frozen=True)
class Delivery:
    outcome: str  # "sent" or "written to outbox"
    destination: str
    attempts: int
    status: int | None = None


class DeliveryFailed(TelemetryError):
    def __init__(self, message: str, attempts: int, status: int | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.status = status


def idempotency_key(installation_id: str, night: str) -> str:
    return f"{installation_id}:{night}"


def display_url(url: str) -> str:
    """The URL without any user:password part, fit for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def post_payload(
    base_url: str, phone_home_key: str, installation_id: str, night: str, payload: bytes,
    settings: RetrySettings = RetrySettings(),
) -> Delivery:
    """POST ``[payload]`` to ``{base_url}/phone-home``; a 2xx reply is success, anything else raises."""
    url = f"{base_url.rstrip('/')}/phone-home"
    shown = display_url(url)
    if phone_home_key != phone_home_key.strip() or not phone_home_key.isprintable():
        # requests would refuse the header and quote the key in its error.
        raise DeliveryFailed(
            "universalSecrets.telemetry cannot be sent as a header: it has leading or trailing"
            " space or a control character", attempts=0,
        )
    retry = PhoneHomeRetry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=settings.retries,
        allowed_methods=None,  # POST too: the Idempotency-Key makes a repeat harmless
        status_forcelist=RETRY_STATUSES,
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max,
        retry_after_max=settings.retry_after_max,
        respect_retry_after_header=True,
        raise_on_status=False,
        redirect=False,
    )
    with requests.Session() as session:
        session.mount("http://", HTTPAdapter(max_retries=retry))
        session.mount("https://", HTTPAdapter(max_retries=retry))
        try:
            response = session.post(
                url,
                data=b"[" + payload + b"]",
                headers={
                    "Content-Type": "application/json",
                    "X-CS-Phone-Home-Key": phone_home_key,
                    "Idempotency-Key": idempotency_key(installation_id, night),
                },
                timeout=(settings.connect_timeout, settings.read_timeout),
                allow_redirects=False,  # the key must never follow a redirect elsewhere
                stream=True,
            )
        except requests.RequestException as error:
            raise DeliveryFailed(
                f"phone home to {shown} failed after {settings.retries + 1} attempts: {_reason(error)}",
                attempts=settings.retries + 1,
            ) from None
        with response:
            response.raw.read(MAX_REPLY_BYTES)  # drain a little; a huge reply is never read whole
            history = getattr(response.raw, "retries", None)
            attempts = len(history.history) + 1 if history is not None else 1
            if 200 <= response.status_code < 300:
                return Delivery("sent", shown, attempts, response.status_code)
            retried = " (retried)" if response.status_code in RETRY_STATUSES else " (not retried)"
            raise DeliveryFailed(
                f"phone home to {shown} answered HTTP {response.status_code} {response.reason or ''}".rstrip()
                + f" after {attempts} attempt{'s' if attempts > 1 else ''}{retried}",
                attempts=attempts,
                status=response.status_code,
            )


def _reason(error: requests.RequestException) -> str:
    reason = error
    while getattr(reason, "reason", None) is not None and reason is not reason.reason:
        reason = reason.reason
    if isinstance(error, requests.Timeout):
        return "timed out"
    text = " ".join(str(reason or error).split())
    return text[:200]


def outbox_path(outbox_dir: str | os.PathLike, installation_id: str, night: str) -> Path:
    name = f"{installation_id}_{night}.json"
    if "/" in installation_id or "\\" in installation_id or installation_id in (".", ".."):
        raise TelemetryError(
            f"apiServer.installationId {installation_id!r} cannot name an outbox file: it holds a path separator"
        )
    return Path(outbox_dir) / name


def write_to_outbox(outbox_dir: str | os.PathLike, installation_id: str, night: str, payload: bytes) -> Delivery:
    """Offline mode: the payload, as it would be sent, in ``<installationId>_<D>.json`` (mode 0600)."""
    target = outbox_path(outbox_dir, installation_id, night)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".pending-", suffix=".json")
        try:
            with os.fdopen(handle, "wb") as stream:  # mkstemp creates it 0600
                stream.write(payload)
            os.replace(temporary, target)  # a reader never sees half a file
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise TelemetryError(f"outbox {target.parent}: cannot write {target.name}: {error.strerror}") from None
    return Delivery("written to outbox", str(target), attempts=1)
