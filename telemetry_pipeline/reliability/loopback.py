"""A real collector on a loopback port whose every reply is scripted, faults included.

The fault matrix needs replies no well-behaved server gives: a connection reset before the
status line, a reply slower than the read timeout, a body of a gigabyte, a certificate nobody
trusts, a redirect to another host. This server gives them, over real sockets, and records
every request it receives (method, path, headers, body) so a run can be checked byte for byte.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import socket
import socketserver
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``reset`` drops the connection (TCP RST) right after the request is
    read, before any reply; ``cut_after`` sends the headers and that many body bytes, then resets."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    stall: float = 0.0  # seconds to wait before answering
    body: bytes = b'{"ok":true}'
    body_size: int | None = None  # a generated body of this many bytes instead of ``body``
    reset: bool = False
    cut_after: int | None = None


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    reply: Reply

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def raw(self) -> bytes:
        """Everything the client sent: request line, headers and body."""
        head = f"{self.method} {self.path}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return head.encode("utf-8", "surrogateescape") + b"\r\n" + self.body


@dataclass
class LoopbackCollector:
    """Serves on ``host`` (a loopback address) until stopped; replies from ``script``, then ``default``."""

    host: str = "127.0.0.1"
    port: int = 0
    tls: ssl.SSLContext | None = None
    default: Reply = field(default_factory=Reply)
    script: list[Reply] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    refused_handshakes: int = 0  # TLS handshakes the client broke off
    body_bytes_written: int = 0  # reply body bytes the client took before it stopped reading

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    # -- scripting

    def reply_with(self, *replies: Reply | int) -> LoopbackCollector:
        with self._lock:
            self.script.extend(Reply(r) if isinstance(r, int) else r for r in replies)
        return self

    def always(self, reply: Reply | int) -> LoopbackCollector:
        """Answer every request from now on like this (the script is cleared)."""
        with self._lock:
            self.script.clear()
            self.default = Reply(reply) if isinstance(reply, int) else reply
        return self

    def _next_reply(self) -> Reply:
        with self._lock:
            return self.script.pop(0) if self.script else self.default

    # -- what it saw

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.reply.status < 300 and not r.reply.reset]

    def wait_until(self, condition, timeout: float = 5.0) -> bool:
        """Whether ``condition(self)`` comes true within ``timeout``: the server's threads record a
        refused handshake a moment after the client has given up."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    # -- life

    def start(self) -> LoopbackCollector:
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                if collector.tls is not None:
                    try:
                        self.request.do_handshake()
                    except (ssl.SSLError, OSError):
                        with collector._lock:
                            collector.refused_handshakes += 1
                        raise
                super().setup()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                reply = collector._next_reply()
                with collector._lock:
                    collector.requests.append(
                        Received(self.command, self.path, dict(self.headers.items()), body, reply)
                    )
                collector._answer(self, reply)

            do_GET = do_PUT = do_POST

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False  # a stalled handler must not hold up stop()
            allow_reuse_address = True

            def server_bind(self):
                # HTTPServer.server_bind looks the host up in DNS (getfqdn): not needed, and slow.
                socketserver.TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

            def handle_error(self, request, client_address):
                pass  # resets and refused handshakes are what this server is for

        family = socket.AF_INET6 if ipaddress.ip_address(self.host).version == 6 else socket.AF_INET
        Server.address_family = family
        server = Server((self.host, self.port), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackCollector:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- answering

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, reply: Reply) -> None:
        connection = handler.connection
        handler.close_connection = True
        if reply.stall:
            time.sleep(reply.stall)
        if reply.reset:
            _reset(connection)
            return
        size = reply.body_size if reply.body_size is not None else len(reply.body)
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers:
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(size))
            handler.send_header("Connection", "close")
            handler.end_headers()
            if reply.body_size is None and reply.cut_after is None:
                handler.wfile.write(reply.body)
                return
            limit = size if reply.cut_after is None else reply.cut_after
            written = 0
            block = b"x" * CHUNK
            while written < limit:
                part = block[: min(CHUNK, limit - written)]
                handler.wfile.write(part)
                written += len(part)
                with self._lock:
                    self.body_bytes_written += len(part)
            if reply.cut_after is not None:
                handler.wfile.flush()
                _reset(connection)
        except OSError:
            pass  # the client stopped reading: that is the point of a huge body


def _reset(connection: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN: the client sees "connection reset by peer"."""
    try:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    except OSError:
        pass


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Certificates:
    """A private CA and a server certificate it signed for 127.0.0.1 and localhost."""

    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context


def make_certificates(directory: Path) -> Certificates:
    """A throwaway CA and server certificate, made with ``cryptography`` (the dev extra)."""
    try:
        from cryptography import x509
    except ImportError:
        from telemetry_pipeline.errors import TelemetryError

        raise TelemetryError("the TLS fault needs the dev extra (cryptography): pip install -e '.[dev]'") from None
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "telemetry-pipeline test CA (untrusted)")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths.key_path.chmod(0o600)
    return paths
