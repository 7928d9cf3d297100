"""Getting one night's payload home: POST to the collector, or into the outbox when offline.

Retries are urllib3's ``Retry`` (backoff, ``Retry-After``); this module only decides what a
reply means and how the outcome is reported. The phone-home key goes into one header and
nowhere else: not into messages, metadata or files; not over plain http to another machine
unless TELEMETRY_ALLOW_PLAIN_HTTP=1; never after a redirect; never past an untrusted certificate.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    HTTPError as Urllib3Error,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util.retry import Retry

from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.files import write_durably

# 408, 429 and every 5xx are worth another try; any other non-2xx reply is final.
RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
MAX_REPLY_BYTES = 64 * 1024
ALLOW_PLAIN_HTTP_ENV = "TELEMETRY_ALLOW_PLAIN_HTTP"
URL_KEY = "apiServer.phoneHomeUrl (or CS_API_PHONE_HOME_URL)"


class PhoneHomeRetry(Retry):
    """urllib3's Retry, except that a 413 stays final even when it carries Retry-After, an
    untrusted certificate is final at once, and a reply being retried is never read."""

    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if response is not None:
            # urllib3 would drain the whole body before the next try: a gigabyte, or forever.
            response.close()
        try:
            if isinstance(error, SSLError) and _untrusted_certificate(error):
                raise MaxRetryError(_pool, url, error) from error  # trying again cannot make it trusted
            return super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError as exhausted:
            exhausted.attempts = len(self.history) + 1
            raise


def _untrusted_certificate(error: SSLError) -> bool:
    cause = error.args[0] if error.args else None
    return isinstance(cause, ssl.SSLCertVerificationError)


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
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def plain_http_allowed(value: str | None) -> bool:
    """TELEMETRY_ALLOW_PLAIN_HTTP: ``1`` allows http:// to a collector on another machine."""
    if value in (None, "", "0"):
        return False
    if value == "1":
        return True
    raise TelemetryError(f"{ALLOW_PLAIN_HTTP_ENV} must be 1 (allow plain http) or 0, found {value[:20]!r}")


def is_loopback_host(host: str) -> bool:
    """This machine, by name or address literal; a name is never resolved (DNS could lie)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_collector_url(base_url: str, allow_plain_http: bool = False) -> None:
    """The key travels over plain http only to this machine, unless the operator allowed more."""
    try:
        parts = urllib.parse.urlsplit(base_url)
        shown = display_url(base_url)
    except ValueError:
        raise TelemetryError(f"{URL_KEY} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TelemetryError(f"{URL_KEY} {shown!r} is not an http:// or https:// URL with a host")
    if parts.scheme == "http" and not allow_plain_http and not is_loopback_host(parts.hostname):
        raise TelemetryError(
            f"{URL_KEY} {shown}: plain http would send the phone-home key unencrypted to"
            f" {parts.hostname}; use https://, or set {ALLOW_PLAIN_HTTP_ENV}=1 to allow it"
        )


def post_payload(
    base_url: str, phone_home_key: str, installation_id: str, night: str, payload: bytes | memoryview,
    settings: RetrySettings = RetrySettings(), *, allow_plain_http: bool = False,
) -> Delivery:
    """POST ``[payload]`` to ``{base_url}/phone-home``; a 2xx reply is success, anything else raises."""
    check_collector_url(base_url, allow_plain_http)
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
            attempts = _attempts(error, settings)
            raise DeliveryFailed(
                f"phone home to {shown} failed after {attempts} attempt{'s' if attempts > 1 else ''}:"
                f" {_reason(error, settings)}" + ("" if attempts > 1 else " (not retried)"),
                attempts=attempts,
            ) from None
        with response:
            try:
                response.raw.read(MAX_REPLY_BYTES)  # a little of the body; a huge reply is never read whole
            except (Urllib3Error, OSError):
                pass  # the status line decides; a body cut short changes nothing
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


def _attempts(error: requests.RequestException, settings: RetrySettings) -> int:
    cause = error.args[0] if error.args else None
    return getattr(cause, "attempts", None) or settings.retries + 1


def _reason(error: requests.RequestException, settings: RetrySettings) -> str:
    """What went wrong, in a few words, from urllib3's own exception; never a header."""
    cause = error.args[0] if error.args else error
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    inner = cause.args[-1] if isinstance(cause, Exception) and cause.args else None
    if isinstance(error, requests.ConnectTimeout):
        return f"no connection within {settings.connect_timeout:g} s"
    if isinstance(cause, ReadTimeoutError) or isinstance(error, requests.ReadTimeout):
        return f"no reply within the read timeout of {settings.read_timeout:g} s"
    if isinstance(cause, NameResolutionError):
        return "the collector's host name does not resolve"
    if isinstance(cause, NewConnectionError):
        if "refused" in str(cause).lower():
            return "connection refused"
        return "cannot connect: " + " ".join(str(cause).split("new connection:")[-1].split())[:120]
    if isinstance(cause, SSLError):
        tls = cause.args[0] if cause.args else None
        if isinstance(tls, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({tls.verify_message or tls.reason}); nothing was sent"
        return "TLS handshake failed"
    if isinstance(cause, ProtocolError):
        if isinstance(inner, ConnectionResetError):
            return "connection reset by the collector"
        return "connection closed without a complete reply"
    return " ".join(str(cause).split())[:200]


def outbox_path(outbox_dir: str | os.PathLike, installation_id: str, night: str) -> Path:
    name = f"{installation_id}_{night}.json"
    if "/" in installation_id or "\\" in installation_id or installation_id in (".", ".."):
        raise TelemetryError(
            f"apiServer.installationId {installation_id!r} cannot name an outbox file: it holds a path separator"
        )
    return Path(outbox_dir) / name


def write_to_outbox(outbox_dir: str | os.PathLike, installation_id: str, night: str,
                    payload: bytes | memoryview) -> Delivery:
    """Offline mode: the payload, as it would be sent, in ``<installationId>_<D>.json`` (mode 0600),
    on disk when this returns."""
    target = outbox_path(outbox_dir, installation_id, night)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_durably(target, payload, prefix=".pending-", suffix=".json")
    except OSError as error:
        raise TelemetryError(f"outbox {target.parent}: cannot write {target.name}: {error.strerror}") from None
    return Delivery("written to outbox", str(target), attempts=1)
