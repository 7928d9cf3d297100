"""`telemetry-pipeline doctor` against real parts: SQLite and PostgreSQL sources, a loopback HTTP
collector, a TLS server with a self-signed certificate, a CONNECT proxy, refused ports, and a
host name that cannot resolve. Nothing is ever posted."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import select
import socket
import sqlite3
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from telemetry_pipeline import cli
from telemetry_pipeline.delivery import DeliveryFailed, RetrySettings, post_payload
from telemetry_pipeline_tests.installation import Installation, write_config

KEY = "s3cr3t-phone-home-key"  # write_config's phone-home key
PROXY_PASSWORD = "pr0xy-pa55word"
DB_PASSWORD = "db-pa55word"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
                   "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "TELEMETRY_ALLOW_PLAIN_HTTP")


@pytest.fixture(autouse=True)
def no_proxy_from_the_machine(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def run_doctor(capsys) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Exit status, {check: (status, line)} and the whole output; checks the output's form too."""
    status = cli.main(["doctor", "--timeout", "3"])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    *lines, summary = captured.out.strip().splitlines()
    checks = {}
    for line in lines:
        state, rest = line.split(None, 1)
        name = rest[:20].strip()
        assert state in ("OK", "FAIL", "SKIP"), line
        assert ("-> fix: " in line) == (state == "FAIL"), line  # every failure says how to fix it
        checks[name] = (state, line)
    failed = [name for name, (state, _) in checks.items() if state == "FAIL"]
    assert status == (1 if failed else 0), output
    assert (f"{len(failed)} of {len(checks)} checks failed" if failed else "passed") in summary
    for secret in (KEY, PROXY_PASSWORD, DB_PASSWORD):
        assert secret not in output
    return status, checks, output


def states(checks: dict) -> dict[str, str]:
    return {name: state for name, (state, _) in checks.items()}


@pytest.fixture
def sqlite_source(tmp_path, monkeypatch):
    url = (Installation().company("c-1", plan="BUSINESS").team("t-1", "c-1").user("u-1", teams=["t-1"])
           .write_sqlite(tmp_path / "codestream.db"))
    monkeypatch.setenv("TELEMETRY_SOURCE_URL", url)
    return url


def use_config(tmp_path, monkeypatch, **api_server) -> Path:
    path = write_config(tmp_path / "codestream.json", **api_server)
    monkeypatch.setenv("CODESTREAM_CONFIG", str(path))
    return path


def free_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- a healthy installation ---------------------------------------------------------------------

def test_a_healthy_installation_passes_and_nothing_is_posted(tmp_path, monkeypatch, capsys, sqlite_source, collector):
    use_config(tmp_path, monkeypatch, phoneHomeUrl=collector.url, disablePhoneHome=True)
    status, checks, output = run_doctor(capsys)
    assert status == 0
    assert states(checks) == {
        "configuration file": "OK", "configuration JSON": "OK", "configuration keys": "OK", "phone-home key": "OK",
        "source database": "OK", "source tables": "OK", "opt-out": "OK", "outbox": "SKIP", "archive": "OK",
        "collector URL": "OK", "proxy": "OK", "collector DNS": "OK", "collector TCP": "OK", "collector TLS": "SKIP",
    }
    assert "opted out: apiServer.disablePhoneHome is true and 1 company is on a paid plan" in checks["opt-out"][1]
    assert "none: direct connection" in checks["proxy"][1]
    assert "the phone-home key travels unencrypted" in checks["collector TLS"][1]
    assert collector.requests == []


def test_offline_checks_the_outbox_without_creating_it_and_skips_the_network(tmp_path, monkeypatch, capsys,
                                                                              sqlite_source):
    use_config(tmp_path, monkeypatch)
    outbox = tmp_path / "not-yet" / "outbox"
    monkeypatch.setenv("TELEMETRY_OUTBOX_DIR", str(outbox))
    status, checks, _ = run_doctor(capsys)
    assert status == 0
    assert checks["outbox"][0] == "OK" and "can be created on first use" in checks["outbox"][1]
    assert not outbox.exists() and not outbox.parent.exists()
    assert states(checks)["collector"] == "SKIP" and states(checks)["phone-home key"] == "SKIP"

    outbox.mkdir(parents=True)
    _, checks, _ = run_doctor(capsys)
    assert checks["outbox"][0] == "OK" and "is writable" in checks["outbox"][1]
    assert list(outbox.iterdir()) == []  # the probe file is gone


def test_an_outbox_that_cannot_be_created_fails(tmp_path, monkeypatch, capsys, sqlite_source):
    use_config(tmp_path, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    monkeypatch.setenv("TELEMETRY_OUTBOX_DIR", str(blocker / "outbox"))
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["outbox"]
    assert state == "FAIL" and f"{blocker} is not a folder" in line and "TELEMETRY_OUTBOX_DIR" in line


# --- the configuration file --------------------------------------------------------------------

@pytest.mark.parametrize("content, failing, words", [
    (None, "configuration file", "not found"),
    ('{"apiServer": {"installationId": "x",}}', "configuration JSON", "line 1 column 38"),
    ('["not", "an", "object"]', "configuration JSON", "not an object"),
    ('{"apiServer": {}}', "configuration keys", "apiServer.installationId is missing"),
    ('{"apiServer": {"installationId": "x", "disablePhoneHome": "yes"}}', "configuration keys",
     "apiServer.disablePhoneHome must be a boolean (true or false), found a string"),
    ('{"apiServer": {"installationId": "x", "phoneHomeUrl": "http://127.0.0.1:9"}}', "phone-home key",
     "universalSecrets.telemetry is missing"),
    ('{"apiServer": {"installationId": "x", "phoneHomeUrl": "http://127.0.0.1:9"},'
     ' "universalSecrets": {"telemetry": " s3cr3t-phone-home-key"}}', "phone-home key", "leading or trailing space"),
])
def test_a_configuration_problem_fails_its_check_and_skips_what_depends_on_it(
    tmp_path, monkeypatch, capsys, sqlite_source, content, failing, words
):
    path = tmp_path / "codestream.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("CODESTREAM_CONFIG", str(path))
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    assert [name for name, (state, _) in checks.items() if state == "FAIL"][0] == failing
    assert words in checks[failing][1]
    order = ["configuration file", "configuration JSON", "configuration keys", "phone-home key"]
    for later in order[order.index(failing) + 1:]:
        assert checks[later][0] == "SKIP", later
    if failing != "phone-home key":
        assert checks["collector"][0] == "SKIP"


def test_the_key_never_appears_even_when_it_is_the_value_of_a_wrongly_typed_key(tmp_path, monkeypatch, capsys,
                                                                                  sqlite_source):
    path = tmp_path / "codestream.json"
    path.write_text(json.dumps({"apiServer": {"installationId": KEY + "-id", "phoneHomeUrl": 7},
                                "universalSecrets": {"telemetry": KEY}}))
    monkeypatch.setenv("CODESTREAM_CONFIG", str(path))
    status, checks, _ = run_doctor(capsys)  # run_doctor asserts KEY is nowhere in the output
    assert status == 1 and "apiServer.phoneHomeUrl must be a string, found a number" in checks["configuration keys"][1]


# --- the source database -----------------------------------------------------------------------

def test_a_sqlite_source_missing_a_table_and_a_column_fails(tmp_path, monkeypatch, capsys, sqlite_source):
    use_config(tmp_path, monkeypatch)
    with sqlite3.connect(sqlite_source.removeprefix("sqlite://")) as db:
        db.execute("DROP TABLE posts")
        db.execute("ALTER TABLE users DROP COLUMN last_origin")
    db.close()
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["source tables"]
    assert state == "FAIL" and "table users has no column last_origin" in line and "table posts is missing" in line
    assert "TELEMETRY_SOURCE_URL" in line.split("-> fix:")[1]


def test_a_postgresql_source_missing_a_table_fails_and_its_password_stays_hidden(tmp_path, monkeypatch, capsys,
                                                                                   postgres_url):
    import psycopg2

    use_config(tmp_path, monkeypatch)
    Installation().company("c-1").write_postgres(postgres_url)
    with psycopg2.connect(postgres_url) as db, db.cursor() as cursor:
        cursor.execute("DROP TABLE codemarks")
    db.close()
    # Trust authentication ignores the password; it is there to prove it is never printed.
    monkeypatch.setenv("TELEMETRY_SOURCE_URL", postgres_url.replace("postgres@", f"postgres:{DB_PASSWORD}@", 1))
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["source database"]
    assert state == "OK" and "postgresql://postgres@127.0.0.1:5432/" in line
    state, line = checks["source tables"]
    assert state == "FAIL" and "table codemarks is missing" in line and "search_path" in line


def test_an_unreachable_postgresql_fails_with_its_host_and_without_its_password(tmp_path, monkeypatch, capsys):
    use_config(tmp_path, monkeypatch)
    port = free_port()
    monkeypatch.setenv("TELEMETRY_SOURCE_URL", f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{port}/codestream")
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["source database"]
    assert state == "FAIL" and f"postgresql://postgres@127.0.0.1:{port}/codestream" in line and "pg_hba.conf" in line
    assert checks["source tables"][0] == "SKIP"


def test_a_file_that_is_not_a_database_fails(tmp_path, monkeypatch, capsys):
    use_config(tmp_path, monkeypatch)
    not_a_database = tmp_path / "codestream.db"
    not_a_database.write_text("these are not the tables you are looking for\n" * 100)
    monkeypatch.setenv("TELEMETRY_SOURCE_URL", f"sqlite://{not_a_database}")
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["source database"]
    assert state == "FAIL" and "file is not a database" in line and checks["source tables"][0] == "SKIP"


def test_a_source_url_of_another_kind_fails(tmp_path, monkeypatch, capsys):
    use_config(tmp_path, monkeypatch)
    monkeypatch.setenv("TELEMETRY_SOURCE_URL", "mysql://root@127.0.0.1/codestream")
    _, checks, _ = run_doctor(capsys)
    state, line = checks["source database"]
    assert state == "FAIL" and "unsupported database URL scheme 'mysql'" in line


# --- the road to the collector -----------------------------------------------------------------

def test_a_collector_host_that_does_not_resolve_fails_at_dns(tmp_path, monkeypatch, capsys, sqlite_source):
    use_config(tmp_path, monkeypatch, phoneHomeUrl="https://nonexistent.invalid")
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    assert checks["collector DNS"][0] == "FAIL" and "nonexistent.invalid does not resolve" in checks["collector DNS"][1]
    assert states(checks)["collector TCP"] == states(checks)["collector TLS"] == "SKIP"


def test_a_refused_port_fails_at_tcp(tmp_path, monkeypatch, capsys, sqlite_source):
    port = free_port()
    use_config(tmp_path, monkeypatch, phoneHomeUrl="https://collector.example.com")
    monkeypatch.setenv("CS_API_PHONE_HOME_URL", f"http://127.0.0.1:{port}")  # the override wins
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["collector TCP"]
    assert state == "FAIL" and f"collector 127.0.0.1:{port}: Connection refused" in line
    assert f"start the collector at 127.0.0.1:{port}" in line and "CS_API_PHONE_HOME_URL" in line


def test_plain_http_to_another_machine_fails_unless_allowed_as_the_sender_would(tmp_path, monkeypatch, capsys,
                                                                                   sqlite_source):
    use_config(tmp_path, monkeypatch, phoneHomeUrl="http://nonexistent.invalid")
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["collector URL"]
    assert state == "FAIL" and "plain http would send the phone-home key unencrypted" in line
    assert "TELEMETRY_ALLOW_PLAIN_HTTP=1" in line and "collector DNS" not in checks

    monkeypatch.setenv("TELEMETRY_ALLOW_PLAIN_HTTP", "1")
    _, checks, _ = run_doctor(capsys)
    assert checks["collector URL"][0] == "OK" and checks["collector DNS"][0] == "FAIL"


def test_a_collector_url_that_is_not_http_fails(tmp_path, monkeypatch, capsys, sqlite_source):
    use_config(tmp_path, monkeypatch, phoneHomeUrl="ftp://collector.example.com")
    _, checks, _ = run_doctor(capsys)
    assert checks["collector URL"][0] == "FAIL" and "not an http:// or https:// URL" in checks["collector URL"][1]


# --- TLS and proxies, with real servers ----------------------------------------------------------

def self_signed_certificate(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A certificate for ``names`` (host names or IP addresses), signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alternatives = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{names[0]}.pem", folder / f"{names[0]}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Server:
    """A loopback server run by threads: ``handle(connection, server)`` serves each connection."""

    handle: object
    port: int = 0
    seen: list = field(default_factory=list)

    def __enter__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so that the accepting thread notices the end promptly
        self._stopped = threading.Event()
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()
        return self

    def _accept(self):
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(5)
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection):
        with connection:
            try:
                self.handle(connection, self)
            except OSError:
                pass

    def __exit__(self, *exc):
        self._stopped.set()
        self._threads[0].join(timeout=5)
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


def tls_server(cert: Path, key: Path) -> Server:
    """Completes the TLS handshake; records the body of any request that follows and answers 200."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handle(connection, server):
        with context.wrap_socket(connection, server_side=True) as tls:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = tls.recv(65536)
                if not chunk:
                    return
                request += chunk
            head, body = request.split(b"\r\n\r\n", 1)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                body += tls.recv(65536)
            server.seen.append(body)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    return Server(handle)


def connect_proxy(require_password: str | None = None) -> Server:
    """An HTTP proxy that only tunnels (CONNECT), as a corporate proxy for HTTPS would."""

    def handle(connection, server):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line, *header_lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines)
        server.seen.append((request_line, headers))
        method, target, _ = request_line.split(" ")
        expected = "Basic " + base64.b64encode(f"user:{require_password}".encode()).decode()
        if require_password and headers.get("Proxy-Authorization") != expected:
            connection.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as upstream:
            connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            sockets = [connection, upstream]
            while True:
                readable, _, _ = select.select(sockets, [], [], 5)
                if not readable:
                    return
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is connection else connection).sendall(data)

    return Server(handle)


@pytest.fixture
def localhost_certificate(tmp_path):
    return self_signed_certificate(tmp_path, ["localhost", "127.0.0.1"])


def test_a_self_signed_collector_fails_at_tls_as_delivery_would(tmp_path, monkeypatch, capsys, sqlite_source,
                                                               localhost_certificate):
    with tls_server(*localhost_certificate) as server:
        url = f"https://localhost:{server.port}"
        use_config(tmp_path, monkeypatch, phoneHomeUrl=url)
        status, checks, _ = run_doctor(capsys)
        assert status == 1
        state, line = checks["collector TLS"]
        assert state == "FAIL" and "self-signed certificate" in line and "REQUESTS_CA_BUNDLE" in line
        assert checks["collector TCP"][0] == "OK"
        with pytest.raises(DeliveryFailed, match="self-signed certificate"):  # the sender agrees
            post_payload(url, KEY, "inst-1", "2026-11-26", b"{}", RetrySettings(retries=0))
    assert server.seen == []


def test_trusting_the_certificate_through_requests_ca_bundle_passes_tls(tmp_path, monkeypatch, capsys,
                                                                       sqlite_source, localhost_certificate):
    cert, _ = localhost_certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with tls_server(*localhost_certificate) as server:
        url = f"https://localhost:{server.port}"
        use_config(tmp_path, monkeypatch, phoneHomeUrl=url)
        status, checks, _ = run_doctor(capsys)
        assert status == 0
        state, line = checks["collector TLS"]
        assert state == "OK" and "TLSv1." in line and "REQUESTS_CA_BUNDLE" in line
        # What the doctor trusts, the sender trusts: the same server accepts a real delivery.
        assert post_payload(url, KEY, "inst-1", "2026-11-26", b"{}", RetrySettings(retries=0)).status == 200
    assert server.seen == [b"[{}]"]  # the delivery's body, and nothing from the doctor


def test_a_certificate_for_another_host_fails_at_tls(tmp_path, monkeypatch, capsys, sqlite_source):
    cert, key = self_signed_certificate(tmp_path, ["collector.test"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with tls_server(cert, key) as server:
        use_config(tmp_path, monkeypatch, phoneHomeUrl=f"https://127.0.0.1:{server.port}")
        status, checks, _ = run_doctor(capsys)
    assert status == 1
    assert checks["collector TLS"][0] == "FAIL" and "mismatch" in checks["collector TLS"][1]


def test_tls_goes_through_the_https_proxy_with_its_credentials(tmp_path, monkeypatch, capsys, sqlite_source,
                                                               localhost_certificate):
    cert, _ = localhost_certificate
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    with tls_server(*localhost_certificate) as server, connect_proxy(PROXY_PASSWORD) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}")
        use_config(tmp_path, monkeypatch, phoneHomeUrl=f"https://localhost:{server.port}")
        status, checks, _ = run_doctor(capsys)  # asserts the proxy password is never printed
        assert status == 0, checks
        assert f"via http://127.0.0.1:{proxy.port} (from HTTPS_PROXY)" in checks["proxy"][1]
        assert f"proxy 127.0.0.1:{proxy.port} accepts connections" in checks["collector TCP"][1]
        assert checks["collector TLS"][0] == "OK"
        assert [line for line, _ in proxy.seen] == [f"CONNECT localhost:{server.port} HTTP/1.0"]  # http.client's
    assert server.seen == []  # the doctor shook hands through the tunnel and sent nothing


def test_a_proxy_that_refuses_the_tunnel_fails_at_tls(tmp_path, monkeypatch, capsys, sqlite_source,
                                                      localhost_certificate):
    with tls_server(*localhost_certificate) as server, connect_proxy(PROXY_PASSWORD) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")  # no credentials
        use_config(tmp_path, monkeypatch, phoneHomeUrl=f"https://localhost:{server.port}")
        status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["collector TLS"]
    assert state == "FAIL" and "407" in line and "the proxy refused the tunnel" in line
    assert server.seen == []


def test_no_proxy_sends_the_collector_around_the_proxy(tmp_path, monkeypatch, capsys, sqlite_source, collector):
    with connect_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        use_config(tmp_path, monkeypatch, phoneHomeUrl=collector.url)
        status, checks, _ = run_doctor(capsys)
    assert status == 0
    assert "none: direct connection (NO_PROXY excludes 127.0.0.1)" in checks["proxy"][1]
    assert proxy.seen == [] and collector.requests == []


def test_a_proxy_that_is_down_fails_at_tcp_and_names_the_variable(tmp_path, monkeypatch, capsys, sqlite_source):
    port = free_port()
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:{PROXY_PASSWORD}@127.0.0.1:{port}")
    use_config(tmp_path, monkeypatch, phoneHomeUrl="https://collector.example.com")
    status, checks, _ = run_doctor(capsys)
    assert status == 1
    state, line = checks["collector TCP"]
    assert state == "FAIL" and f"proxy 127.0.0.1:{port}: Connection refused" in line and "HTTPS_PROXY" in line
