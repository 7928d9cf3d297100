"""`telemetry-pipeline doctor`: is everything in place for a night to go home? Sends nothing.

It looks at what a run would use, resolved the way the run resolves it (environment, then the
demo defaults): the configuration file, the source database, the outbox or archive, and the road
to the collector (proxy from the environment as requests picks it, DNS, TCP, TLS). One line per
check, OK, FAIL or SKIP; each FAIL says how to fix it. No payload and no request is sent, and
neither the phone-home key nor a password is ever printed.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import requests
import requests.utils

from telemetry_pipeline.codestream_config import PHONE_HOME_URL_ENV, InstallationConfig, load_installation_config
from telemetry_pipeline.definitions import CONFIG_PATH_ENV
from telemetry_pipeline.delivery import ALLOW_PLAIN_HTTP_ENV, check_collector_url, display_url, plain_http_allowed
from telemetry_pipeline.errors import TelemetryError
from telemetry_pipeline.locations import ARCHIVE_DIR_ENV, OUTBOX_DIR_ENV, archive_dir, default_outbox_dir
from telemetry_pipeline.rules.plans import opt_out_decision
from telemetry_pipeline.source.database import SOURCE_URL_ENV, SourceDatabase
from telemetry_pipeline.source.schema import SOURCE_TABLES

OK, FAIL, SKIP = "OK", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name:<20} {self.detail}"
        return f"{text}  -> fix: {self.fix}" if self.status == FAIL else text


Checks = Generator[Check, None, object]


def run_checks(timeout: float = 10.0) -> list[Check]:
    """Every check, in the order a night meets what it checks."""
    return list(_all_checks(timeout))


def _all_checks(timeout: float) -> Checks:
    config = yield from _configuration_checks()
    yield from _source_checks(config, timeout)
    offline = config is None or config.phone_home_url is None
    if offline:
        yield _folder_check("outbox", Path(os.environ.get(OUTBOX_DIR_ENV) or default_outbox_dir()), OUTBOX_DIR_ENV)
    else:
        yield Check("outbox", SKIP, "not used: a phone-home URL is set, nights are posted")
    if offline:
        yield Check("archive", SKIP, "not used in offline mode: only posted nights are archived")
    else:
        yield _folder_check("archive", archive_dir(), ARCHIVE_DIR_ENV)
    if config is None:
        yield Check("collector", SKIP, "needs a valid configuration")
    elif config.phone_home_url is None:
        yield Check("collector", SKIP, "offline mode: no apiServer.phoneHomeUrl (nor CS_API_PHONE_HOME_URL);"
                                       " nothing goes over the network")
    else:
        yield from _collector_checks(config.phone_home_url, timeout)


# --- the CodeStream configuration file ---------------------------------------------------------

def _configuration_checks() -> Generator[Check, None, InstallationConfig | None]:
    path = os.environ.get(CONFIG_PATH_ENV)
    origin = CONFIG_PATH_ENV
    if not path:
        from telemetry_pipeline.demo import ensure_demo_installation

        path, origin = str(ensure_demo_installation().config_path), f"the demo's, {CONFIG_PATH_ENV} is not set"
    needs_file = "needs a readable configuration file"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = "not found" if isinstance(error, FileNotFoundError) else (
            getattr(error, "strerror", None) or "not UTF-8 text")
        yield Check("configuration file", FAIL, f"{path} ({origin}): {reason}",
                    f"set {CONFIG_PATH_ENV} to the path of CodeStream's configuration file (JSON), readable by"
                    " the user that runs Dagster")
        for name in ("configuration JSON", "configuration keys", "phone-home key"):
            yield Check(name, SKIP, needs_file)
        return None
    yield Check("configuration file", OK, f"{path} ({origin})")

    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        yield Check("configuration JSON", FAIL, f"line {error.lineno} column {error.colno}: {error.msg}",
                    f"correct the JSON at that line of {path} (`python3 -m json.tool {path}` shows it)")
        document = None
    if document is not None and not isinstance(document, dict):
        yield Check("configuration JSON", FAIL, "the file holds JSON, but not an object",
                    f"{path} must hold one JSON object, {{\"apiServer\": {{...}}, ...}}")
        document = None
    if document is None:
        for name in ("configuration keys", "phone-home key"):
            yield Check(name, SKIP, "needs valid JSON")
        return None
    yield Check("configuration JSON", OK, "one JSON object")

    try:
        config = load_installation_config(path, os.environ.get(PHONE_HOME_URL_ENV) or None)
    except TelemetryError as error:
        yield Check("configuration keys", FAIL, str(error),
                    "set that key with the type the README's configuration table gives; unknown keys are ignored")
        yield Check("phone-home key", SKIP, "needs valid configuration keys")
        return None
    if config.phone_home_url is None:
        mode = "offline mode (no apiServer.phoneHomeUrl): nights go to the outbox"
    else:
        via = PHONE_HOME_URL_ENV if os.environ.get(PHONE_HOME_URL_ENV) else "apiServer.phoneHomeUrl"
        mode = f"posting to {display_url(config.phone_home_url)}/phone-home ({via})"
    yield Check("configuration keys", OK, f"installation {config.installation_id!r},"
                                          f" version {config.installation_version!r}, {mode}")

    if config.phone_home_url is None:
        yield Check("phone-home key", SKIP, "not needed in offline mode")
    else:
        key = config.phone_home_key.reveal() if config.phone_home_key else ""
        if not key:
            yield Check("phone-home key", FAIL, f"universalSecrets.telemetry is missing in {path}",
                        "set universalSecrets.telemetry to the phone-home key CodeStream gave you")
        elif key != key.strip() or not key.isprintable():
            yield Check("phone-home key", FAIL, "universalSecrets.telemetry has leading or trailing space or a"
                                                " control character, so it cannot be sent as a header",
                        f"remove the spaces or control characters around the key in {path}")
        else:
            yield Check("phone-home key", OK, "universalSecrets.telemetry is set (not shown)")
    return config


# --- the installation's database ---------------------------------------------------------------

def _source_checks(config: InstallationConfig | None, timeout: float) -> Checks:
    url = os.environ.get(SOURCE_URL_ENV)
    origin = SOURCE_URL_ENV
    if not url:
        from telemetry_pipeline.demo import ensure_demo_installation

        url, origin = ensure_demo_installation().source_url, f"the demo's, {SOURCE_URL_ENV} is not set"
    try:
        database = SourceDatabase(_with_connect_timeout(url, timeout))
    except TelemetryError as error:
        yield Check("source database", FAIL, str(error),
                    f"set {SOURCE_URL_ENV} to postgresql://user[:password]@host[:port]/db or sqlite:///abs/path.db")
        yield Check("source tables", SKIP, "needs a reachable source database")
        return
    try:
        with database.connect() as conn:
            # SQLite opens any file; only reading its catalog tells whether it is a database.
            probe = "SELECT count(*) FROM sqlite_master" if database.dialect == "sqlite" else "SELECT 1"
            try:
                conn.fetch(probe, {}, pa.schema([("answer", pa.int64())]), table="(a first query)")
            except TelemetryError as error:
                reason = str(error).rsplit(" failed: ", 1)[-1]
                yield Check("source database", FAIL, f"{database.display} opens but does not answer: {reason}",
                            _database_fix(database))
                yield Check("source tables", SKIP, "needs a reachable source database")
                return
            yield Check("source database", OK, f"{database.display} ({origin}) answers")
            problems = []
            for table in SOURCE_TABLES:
                try:
                    conn.check_tables([table])
                except TelemetryError as error:
                    problems.append(str(error).removeprefix(f"source database {database.display}: "))
            if problems:
                yield Check("source tables", FAIL, "; ".join(dict.fromkeys(problems)),
                            f"point {SOURCE_URL_ENV} at CodeStream's own database (for PostgreSQL: the schema"
                            " on the search_path must hold its tables)")
                return
            columns = sum(len(c) for c in SOURCE_TABLES.values())
            yield Check("source tables", OK, f"all {len(SOURCE_TABLES)} contract tables and {columns} columns present")
            if config is not None:
                plans = conn.fetch("SELECT plan FROM companies", {}, pa.schema([("plan", pa.string())]),
                                   table="companies")["plan"].to_pylist()
                decision = opt_out_decision(config.disable_phone_home, plans)
                unset = "" if config.disable_phone_home else " (apiServer.disablePhoneHome is not true)"
                yield Check("opt-out", OK, decision.reason + unset)
    except TelemetryError as error:
        yield Check("source database", FAIL, str(error), _database_fix(database))
        yield Check("source tables", SKIP, "needs a reachable source database")


def _with_connect_timeout(url: str, timeout: float) -> str:
    """libpq waits for an unreachable host as long as the kernel does; the doctor gives up sooner."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or "connect_timeout=" in parts.query:
        return url
    query = "&".join(filter(None, [parts.query, f"connect_timeout={max(1, round(timeout))}"]))
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _database_fix(database: SourceDatabase) -> str:
    if database.dialect == "sqlite":
        return f"point {SOURCE_URL_ENV} at the SQLite file as sqlite:///absolute/path.db; it must exist and be readable"
    return (f"check host, port, database, user and password in {SOURCE_URL_ENV}, and that PostgreSQL accepts"
            " connections from this machine (listen_addresses, pg_hba.conf)")


# --- folders the pipeline writes ---------------------------------------------------------------

def _folder_check(name: str, folder: Path, env: str) -> Check:
    fix = f"create {folder} writable by the user that runs Dagster, or set {env} to a folder that is"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Check(name, FAIL, f"{folder}: {existing} is not a folder", fix)
    try:
        if existing == folder:
            handle, probe = tempfile.mkstemp(dir=folder, prefix=".doctor-")
            os.close(handle)
            os.unlink(probe)
            return Check(name, OK, f"{folder} is writable")
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".doctor-"))
        return Check(name, OK, f"{folder} does not exist yet; it can be created on first use")
    except OSError as error:
        return Check(name, FAIL, f"{folder}: cannot write in {existing}: {error.strerror}", fix)


# --- the road to the collector -----------------------------------------------------------------

def _collector_checks(base_url: str, timeout: float) -> Checks:
    url = f"{base_url.rstrip('/')}/phone-home"
    parts = urllib.parse.urlsplit(url)
    where = PHONE_HOME_URL_ENV if os.environ.get(PHONE_HOME_URL_ENV) else "apiServer.phoneHomeUrl"
    try:
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        yield Check("collector URL", FAIL, f"{display_url(base_url)} is not an http:// or https:// URL with a host",
                    f"set {where} to the collector's base URL, such as https://collector.example.com")
        return
    try:  # the sender's own rule: the key goes over plain http only to this machine, unless allowed
        check_collector_url(base_url, plain_http_allowed(os.environ.get(ALLOW_PLAIN_HTTP_ENV)))
    except TelemetryError as error:
        yield Check("collector URL", FAIL, str(error),
                    f"use an https:// URL in {where}, or set {ALLOW_PLAIN_HTTP_ENV}=1 if plain http is intended")
        return
    host = parts.hostname
    yield Check("collector URL", OK, display_url(url))

    # Exactly the proxy requests would take for this URL: *_PROXY, ALL_PROXY, NO_PROXY, any case.
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    hop_host, hop_port, hop = host, port, "collector"
    if proxy:
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        shown = display_url(proxy_parts.geturl())
        variables = _proxy_variables(proxy)
        if proxy_parts.scheme not in ("http", "https") or not proxy_parts.hostname:
            yield Check("proxy", OK, f"{shown} (from {variables})")
            for name in ("collector DNS", "collector TCP", "collector TLS"):
                yield Check(name, SKIP, f"through a {proxy_parts.scheme} proxy: not checked by the doctor")
            return
        yield Check("proxy", OK, f"via {shown} (from {variables})")
        hop_host, hop = proxy_parts.hostname, "proxy"
        hop_port = proxy_parts.port or {"https": 443, "http": 80}[proxy_parts.scheme]
        hop_fix = f"correct the proxy in {variables}, or add {host} to NO_PROXY if it is reached directly"
    else:
        excluded = requests.utils.select_proxy(url, urllib.request.getproxies())  # set, but NO_PROXY says no
        yield Check("proxy", OK, "none: direct connection" + (f" (NO_PROXY excludes {host})" if excluded else ""))
        hop_fix = f"correct the host in {where}, or set HTTPS_PROXY if this network reaches out through a proxy"

    try:
        addresses = sorted({a[4][0] for a in socket.getaddrinfo(hop_host, hop_port, type=socket.SOCK_STREAM)})
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        yield Check("collector DNS", FAIL, f"{hop} host {hop_host} does not resolve: {reason}",
                    f"{hop_fix}; check this machine's DNS resolver (/etc/resolv.conf)")
        yield Check("collector TCP", SKIP, "needs DNS")
        yield Check("collector TLS", SKIP, "needs TCP")
        return
    yield Check("collector DNS", OK, f"{hop} host {hop_host} resolves to {', '.join(addresses[:4])}")

    started = time.monotonic()
    try:
        with socket.create_connection((hop_host, hop_port), timeout=timeout):
            pass
    except OSError as error:
        if isinstance(error, TimeoutError):
            reason = f"no answer within {timeout:g} s"
            fix = f"a firewall may drop the traffic to {hop_host}:{hop_port}; {hop_fix}"
        else:
            reason = error.strerror or type(error).__name__
            fix = f"start the {hop} at {hop_host}:{hop_port}, or {hop_fix[0].lower()}{hop_fix[1:]}"
        yield Check("collector TCP", FAIL, f"{hop} {hop_host}:{hop_port}: {reason}", fix)
        yield Check("collector TLS", SKIP, "needs TCP")
        return
    yield Check("collector TCP", OK, f"{hop} {hop_host}:{hop_port} accepts connections"
                           f" ({(time.monotonic() - started) * 1000:.0f} ms)")

    if parts.scheme == "http":
        yield Check("collector TLS", SKIP, "http:// URL: no TLS, the phone-home key travels unencrypted")
        return
    if proxy and proxy_parts.scheme == "https":
        yield Check("collector TLS", SKIP, "through an https:// proxy: not checked by the doctor")
        return
    yield _tls_check(url, host, port, proxy_parts if proxy else None, timeout)


def _proxy_variables(proxy: str) -> str:
    """The environment variables that hold ``proxy``, for messages."""
    names = [name for name, value in os.environ.items()
             if name.lower() in ("http_proxy", "https_proxy", "all_proxy") and value == proxy]
    return ", ".join(sorted(names)) or "the environment"


def _tls_check(url: str, host: str, port: int, proxy: urllib.parse.SplitResult | None, timeout: float) -> Check:
    # The certificates requests would trust: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's.
    verify = requests.Session().merge_environment_settings(url, {}, None, None, None)["verify"]
    bundle = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
    try:
        if os.path.isdir(bundle):
            context = ssl.create_default_context(capath=bundle)
        else:
            context = ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or error
        return Check("collector TLS", FAIL, f"cannot load the CA bundle {bundle}: {reason}",
                     "set REQUESTS_CA_BUNDLE to a readable PEM file of trusted CA certificates")
    if proxy is not None:
        connection = http.client.HTTPSConnection(proxy.hostname, proxy.port or 80, timeout=timeout, context=context)
        headers = {}
        if proxy.username:
            credentials = f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
        connection.set_tunnel(host, port, headers=headers)  # CONNECT through the proxy, as requests does
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    trusted = "certifi's CA bundle"
    if isinstance(verify, str):
        trusted = "REQUESTS_CA_BUNDLE" if os.environ.get("REQUESTS_CA_BUNDLE") else "CURL_CA_BUNDLE"
    try:
        connection.connect()  # TCP, the tunnel if any, and the TLS handshake; no request is sent
        certificate = connection.sock.getpeercert()
        version = connection.sock.version()
    except ssl.SSLCertVerificationError as error:
        return Check("collector TLS", FAIL, f"{host}:{port}: {error.verify_message or error.reason}"
                                  f" (trusting {trusted})",
                     "if this network inspects TLS, set REQUESTS_CA_BUNDLE to a bundle holding its CA; otherwise"
                     " the collector's certificate must match the host name and be current")
    except (ssl.SSLError, OSError) as error:
        reason = " ".join(str(getattr(error, "strerror", None) or error).split())[:200]
        fix = ("the proxy refused the tunnel: check its credentials and that it allows CONNECT to"
               f" {host}:{port}") if "Tunnel" in reason else f"check that {host}:{port} speaks TLS (https)"
        return Check("collector TLS", FAIL, f"{host}:{port}: {reason}", fix)
    finally:
        connection.close()
    expires = certificate.get("notAfter", "an unknown date")
    return Check("collector TLS", OK,
                 f"{version} with {host}, certificate trusted ({trusted}), valid until {expires}")


def report(checks: list[Check]) -> str:
    failed = sum(1 for c in checks if c.status == FAIL)
    lines = [c.line() for c in checks]
    lines.append(f"{failed} of {len(checks)} checks failed" if failed
                 else f"all {len(checks)} checks passed or skipped")
    return "\n".join(lines)
