"""`gripcore serve` as a real process: the starter kit, publishing, and signals."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from .e2e_support import Origin, RawClient, publish

pytestmark = pytest.mark.e2e


STARTUP_LOG: dict[int, list[str]] = {}
"""What each process started by start_serve logged up to its "listening" line, by pid."""


def start_serve(
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[subprocess.Popen[str], int, int]:
    """Start `gripcore serve` on ephemeral ports; returns (process, client port, publish port).
    `preexec_fn` runs in the child before it starts (e.g. to lower a resource limit)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gripcore",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--log-level",
            "info",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    logged = STARTUP_LOG[proc.pid] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        logged.append(line)
        match = re.search(
            r"listening on http://127\.0\.0\.1:(\d+) \(publish API http://127\.0\.0\.1:(\d+)/publish/\)",
            line,
        )
        if match:
            return proc, int(match.group(1)), int(match.group(2))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"gripcore serve did not start: {proc.communicate()}")


@pytest.fixture
def starter() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    proc, port, publish_port = start_serve()
    yield proc, port, publish_port
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_starter_kit_banner_stream_and_sigterm(
    starter: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, port, publish_port = starter
    client = RawClient(port)
    client.get("/test/sse")
    assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    assert (
        client.read_until(b": subscribed to test\n\n\r\n") == b"16\r\n: subscribed to test\n\n\r\n"
    )
    deadline = time.monotonic() + 5
    while True:  # the publish may race the subscription: retry until delivered
        publish(
            publish_port,
            [{"channel": "test", "formats": {"http-stream": {"content": "data: x\n\n"}}}],
        )
        try:
            assert client.read_until(b"data: x\n\n\r\n", timeout=0.5) == b"9\r\ndata: x\n\n\r\n"
            break
        except TimeoutError:
            assert time.monotonic() < deadline
    proc.send_signal(signal.SIGTERM)
    assert client.read_to_close().endswith(b"0\r\n\r\n")  # the stream ends cleanly
    stdout, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"http://127.0.0.1:{port}/test/sse" in stdout  # the banner for newcomers


def test_sighup_reloads_routes_without_dropping_connections(tmp_path: Path) -> None:
    first = Origin(
        routes={
            "/x": lambda r: (200, [("Content-Type", "text/plain")], b"first\n"),
            "/hold": lambda r: (200, [("Grip-Hold", "stream"), ("Grip-Channel", "keep")], b""),
        }
    ).start()
    second = Origin(
        routes={"/x": lambda r: (200, [("Content-Type", "text/plain")], b"second\n")}
    ).start()
    routes = tmp_path / "routes"
    routes.write_text(f"* 127.0.0.1:{first.port}\n")
    proc, port, publish_port = start_serve("--routes", str(routes))
    try:
        held = RawClient(port)
        held.get("/hold")
        held.read_until(b"\r\n\r\n")
        c = RawClient(port)
        c.get("/x")
        assert c.read_response()[1] == b"first\n"
        routes.write_text(f"* 127.0.0.1:{second.port}\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while True:
            c = RawClient(port)
            c.get("/x")
            if c.read_response()[1] == b"second\n":
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        publish(
            publish_port, [{"channel": "keep", "formats": {"http-stream": {"content": "alive"}}}]
        )
        assert held.read_until(b"alive\r\n") == b"5\r\nalive\r\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        first.stop()
        second.stop()
    assert proc.returncode == 0


def test_sigterm_answers_long_polls_and_closes_websockets_with_1001() -> None:
    from wsproto.events import CloseConnection

    from .e2e_support import WsClient

    proc, port, _publish_port = start_serve()
    try:
        poll = RawClient(port)
        poll.get("/test/long-poll")
        ws = WsClient(port, "/test/websocket")
        ws.accept()
        time.sleep(0.3)  # both held
        proc.send_signal(signal.SIGTERM)
        head, body = poll.read_response()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert body == b'{"messages": []}\n'  # the hold's own timeout response
        event = ws.next_event()
        assert isinstance(event, CloseConnection) and event.code == 1001
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_sigterm_lets_a_request_waiting_for_the_origin_finish(tmp_path: Path) -> None:
    def slow(request: object) -> tuple[int, list[tuple[str, str]], bytes]:
        time.sleep(1.0)
        return 200, [("Content-Type", "text/plain")], b"worth the wait\n"

    origin = Origin(routes={"/slow": slow}).start()
    proc, port, _ = start_serve("--route", f"* 127.0.0.1:{origin.port}", "--shutdown-grace", "5")
    try:
        c = RawClient(port)
        c.get("/slow")
        time.sleep(0.3)  # the request is at the origin
        proc.send_signal(signal.SIGTERM)
        head, body = c.read_response()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert body == b"worth the wait\n"
        assert c.read_to_close() == b""  # and then the connection is closed
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        origin.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--history", "10001"], "history size must be 1..10000, got 10001"),
        (["--engine", "redis://127.0.0.1/0?db=2"], "must be 'memory' or a redis://"),
        (["--route", "* 127.0.0.1:80,bogus_option"], "cannot start"),
        (["--routes", "/nonexistent/routes"], "cannot start"),
    ],
)
def test_serve_refuses_what_it_cannot_do(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gripcore",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("adapter", ["asyncio", "gevent"])
def test_serve_exits_3_when_redis_is_unreachable(adapter: str) -> None:
    port = _free_port()  # nothing listens there
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gripcore",
            "serve",
            "--adapter",
            adapter,
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--engine",
            f"redis://127.0.0.1:{port}/0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 3
    assert (
        f"gripcore serve: cannot start: engine unavailable: cannot reach Redis at "
        f"redis://127.0.0.1:{port}/0: "
    ) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_proxy_passes_against_serve_with_only_a_route() -> None:
    """Pushpin's defaults: a bare `gripcore serve --route ...` signs origin requests (key
    `changeme`, issuer `pushpin`), says at start that the key is the well-known one, and passes
    every check of `gripcore check proxy`, grip-sig included."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        origin_port = sock.getsockname()[1]
    proc, port, publish_port = start_serve("--route", f"* 127.0.0.1:{origin_port},over_http")
    try:
        startup = "".join(STARTUP_LOG[proc.pid])
        assert "well-known default key 'changeme'" in startup and "--sig-key none" in startup
        check = subprocess.run(
            [
                sys.executable,
                "-m",
                "gripcore",
                "check",
                "proxy",
                "--proxy",
                f"http://127.0.0.1:{port}",
                "--publish",
                f"http://127.0.0.1:{publish_port}/publish/",
                "--origin-listen",
                f"127.0.0.1:{origin_port}",
                "--sig-key",
                "changeme",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert re.search(r"^\d+ passed, 0 failed$", check.stdout, re.M), check.stdout
        assert "PASS grip-sig" in check.stdout
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_serve_with_pushpins_own_config_file(tmp_path: Path) -> None:
    """A Pushpin user's pushpin.conf and routes file, unchanged but for the key: the routes are
    followed, origin requests are signed with the file's key and issuer, and each setting is
    reported at start (the listeners here come from flags, which win over the file)."""
    from .test_pushpinconf import SHIPPED

    origin = Origin(
        routes={"/hold": lambda r: (200, [("Grip-Hold", "stream"), ("Grip-Channel", "pp")], b"")}
    ).start()
    (tmp_path / "routes").write_text(f"* 127.0.0.1:{origin.port}\n")
    conf = tmp_path / "pushpin.conf"
    # its ZeroMQ sockets are left out here: their fixed ports belong to other tests
    shipped = "".join(line for line in SHIPPED.splitlines(True) if "_spec" not in line)
    conf.write_text(
        shipped.replace("sig_key=changeme", "sig_key=from-pushpin-conf-over-32-bytes-long")
    )
    proc, port, publish_port = start_serve("--pushpin-config", str(conf))
    try:
        startup = "".join(STARTUP_LOG[proc.pid])
        assert f"read Pushpin's config {conf}:" in startup
        assert f"proxy/routesfile = 'routes' -> --routes {tmp_path / 'routes'}" in startup
        assert "handler/message_rate ignored:" in startup
        assert "well-known default key" not in startup
        held = RawClient(port)
        held.get("/hold")
        held.read_until(b"\r\n\r\n")
        claims = jwt.decode(
            origin.requests[-1].headers["grip-sig"],
            "from-pushpin-conf-over-32-bytes-long",
            algorithms=["HS256"],
        )
        assert claims["iss"] == "pushpin"
        deadline = time.monotonic() + 5
        while True:  # the publish may race the subscription: retry until delivered
            publish(publish_port, [{"channel": "pp", "formats": {"http-stream": {"content": "x"}}}])
            try:
                assert held.read_until(b"x\r\n", timeout=0.5) == b"1\r\nx\r\n"
                break
            except TimeoutError:
                assert time.monotonic() < deadline
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        origin.stop()


@pytest.mark.parametrize("adapter", ["asyncio", "gevent"])
def test_systemd_is_told_ready_watchdog_and_stopping(tmp_path: Path, adapter: str) -> None:
    """`Type=notify` as systemd runs it: a real AF_UNIX datagram socket in NOTIFY_SOCKET gets
    READY=1 once serving, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 at SIGTERM."""
    from gripcore._systemd import READY, STOPPING, WATCHDOG

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(str(path))
        systemd.settimeout(20)  # only a failure waits this long
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"}  # ping every 0.1 s
        proc, _, publish_port = start_serve("--adapter", adapter, env=env)
        try:
            assert systemd.recv(4096) == READY
            probe = RawClient(publish_port)
            probe.get("/readyz")
            assert probe.read_response() == (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\n",
                b"ready\n",
            )
            # the loop keeps pinging the watchdog while it turns
            assert [systemd.recv(4096) for _ in range(3)] == [WATCHDOG] * 3
            proc.send_signal(signal.SIGTERM)
            while (message := systemd.recv(4096)) == WATCHDOG:
                pass
            assert message == STOPPING
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0


def test_kubernetes_service_variables_do_not_stop_serve() -> None:
    """A Service named `gripcore` gives every pod GRIPCORE_PORT and friends: a warning, not a
    fatal configuration error (the pod used to exit with status 2)."""
    env = {
        "GRIPCORE_PORT": "tcp://10.0.0.11:7999",
        "GRIPCORE_PORT_7999_TCP": "tcp://10.0.0.11:7999",
        "GRIPCORE_PORT_7999_TCP_ADDR": "10.0.0.11",
        "GRIPCORE_PORT_7999_TCP_PORT": "7999",
        "GRIPCORE_PORT_7999_TCP_PROTO": "tcp",
        "GRIPCORE_SERVICE_HOST": "10.0.0.11",
        "GRIPCORE_SERVICE_PORT": "7999",
    }
    checked = subprocess.run(
        [sys.executable, "-m", "gripcore", "serve", "--print-config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0
    assert checked.stderr.startswith(
        "gripcore serve: warning: ignoring unknown environment variables GRIPCORE_PORT, "
    )
    proc, _, publish_port = start_serve(env=env)
    try:
        probe = RawClient(publish_port)
        probe.get("/healthz")
        assert probe.read_response()[1] == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
