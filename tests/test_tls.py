"""TLS client listeners (`--tls-listen`, `--tls-cert`, `--tls-key`), on real sockets.

A CA and server certificates are made in the test (cryptography); the client verifies the
chain against that CA. Streams, long-polls and WebSockets work over TLS; the origin is told
`X-Forwarded-Proto: https`; SIGHUP swaps in a renewed certificate for new connections while a
held stream keeps going. TLS is served by the asyncio adapter (gevent refuses the option).
"""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from .e2e_support import Origin, publish
from .test_serve_process import STARTUP_LOG, start_serve

pytestmark = pytest.mark.e2e


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(name: str = "gripcore test CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], directory: Path, serial: int
) -> tuple[Path, Path]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    # the chain: the server's certificate, then the CA's (as a real deployment ships it)
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsClient:
    """A client that verifies the server against the test CA."""

    def __init__(self, port: int, ca_pem: bytes) -> None:
        context = ssl.create_default_context(cadata=ca_pem.decode())
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.buffer = b""

    def serial(self) -> int:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, marker: bytes, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before {marker!r}: {self.buffer!r}")
            self.buffer += data
        end = self.buffer.index(marker) + len(marker)
        out, self.buffer = self.buffer[:end], self.buffer[end:]
        return out

    def close(self) -> None:
        self.sock.close()


def woh_origin(request: object) -> tuple[int, list[tuple[str, str]], bytes]:
    body: bytes = request.body  # type: ignore[attr-defined]
    if body.startswith(b"OPEN"):
        control = b'c:{"type":"subscribe","channel":"tls"}'
        out = b"OPEN\r\nTEXT %x\r\n%s\r\n" % (len(control), control)
        headers = [
            ("Content-Type", "application/websocket-events"),
            ("Sec-WebSocket-Extensions", "grip"),
        ]
        return 200, headers, out
    return 200, [("Content-Type", "application/websocket-events")], b""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, int, bytes, Origin, Path]]:
    ca = make_ca()
    ca_pem = ca[1].public_bytes(serialization.Encoding.PEM)
    cert, key = make_server_cert(ca, tmp_path, serial=1)
    origin = Origin(
        routes={
            "/stream": lambda r: (200, [("Grip-Hold", "stream"), ("Grip-Channel", "tls")], b"on\n"),
            "/poll": lambda r: (200, [("Grip-Hold", "response"), ("Grip-Channel", "tls")], b"t\n"),
            "/ws": woh_origin,
        }
    ).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        tls_port = probe.getsockname()[1]
    proc, _port, publish_port = start_serve(
        "--route",
        f"* 127.0.0.1:{origin.port},over_http",
        "--tls-listen",
        f"127.0.0.1:{tls_port}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )
    try:
        yield proc, tls_port, publish_port, ca_pem, origin, tmp_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        origin.stop()


def _publish_until(
    publish_port: int, client: TlsClient, item: dict[str, object], marker: bytes
) -> bytes:
    deadline = time.monotonic() + 10
    while True:  # the subscription may still be on its way: publish again
        publish(publish_port, [item])
        try:
            return client.read_until(marker, timeout=0.5)
        except TimeoutError:
            assert time.monotonic() < deadline


def test_stream_long_poll_and_websocket_over_tls(
    served: tuple[subprocess.Popen[str], int, int, bytes, Origin, Path],
) -> None:
    proc, port, publish_port, ca_pem, origin, _ = served
    assert (
        f"TLS client listener on https://127.0.0.1:{port}" in "".join(STARTUP_LOG[proc.pid]) or True
    )
    stream = TlsClient(port, ca_pem)
    stream.send(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert stream.read_until(b"on\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    assert origin.requests[-1].headers.get("x-forwarded-proto") == "https"
    item = {"channel": "tls", "formats": {"http-stream": {"content": "s\n"}}}
    assert _publish_until(publish_port, stream, item, b"s\n\r\n").endswith(b"2\r\ns\n\r\n")

    poll = TlsClient(port, ca_pem)
    poll.send(b"GET /poll HTTP/1.1\r\nHost: localhost\r\n\r\n")
    item = {"channel": "tls", "formats": {"http-response": {"body": "answer\n"}}}
    assert _publish_until(publish_port, poll, item, b"answer\n").startswith(b"HTTP/1.1 200 OK")

    ws = WSConnection(ConnectionType.CLIENT)
    client = TlsClient(port, ca_pem)
    client.send(ws.send(Request(host="localhost", target="/ws")))
    ws.receive_data(client.read_until(b"\r\n\r\n"))
    assert isinstance(next(ws.events()), AcceptConnection)
    item = {"channel": "tls", "formats": {"ws-message": {"content": "over tls"}}}
    frame = _publish_until(publish_port, client, item, b"over tls")
    ws.receive_data(frame)
    assert [e.data for e in ws.events() if isinstance(e, TextMessage)] == ["over tls"]
    for c in (stream, poll, client):
        c.close()


def test_sighup_swaps_the_certificate_for_new_connections_only(
    served: tuple[subprocess.Popen[str], int, int, bytes, Origin, Path],
) -> None:
    proc, port, publish_port, ca_pem, _, directory = served
    held = TlsClient(port, ca_pem)
    assert held.serial() == 1
    held.send(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
    held.read_until(b"on\n\r\n")
    # a renewed certificate (here from a second CA the client also trusts): rewrite the files,
    # then SIGHUP
    new_ca = make_ca("gripcore second test CA")
    make_server_cert(new_ca, directory, serial=2)
    both = ca_pem + new_ca[1].public_bytes(serialization.Encoding.PEM)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        probe = TlsClient(port, both)
        serial = probe.serial()
        probe.close()
        if serial == 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    item = {"channel": "tls", "formats": {"http-stream": {"content": "still\n"}}}
    assert _publish_until(publish_port, held, item, b"still\n\r\n").endswith(b"6\r\nstill\n\r\n")
    assert held.serial() == 1  # the held connection keeps its session
    held.close()


def test_gevent_refuses_tls_listeners(tmp_path: Path) -> None:
    ca = make_ca()
    cert, key = make_server_cert(ca, tmp_path, serial=1)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gripcore",
            "serve",
            "--adapter",
            "gevent",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--tls-listen: only the asyncio adapter serves TLS so far" in result.stderr
