"""Differential tests: the same scenarios against the reference Pushpin and against gripcore.

Both proxies route to the same origin; each scenario's client-visible bytes must be identical.
Pushpin 1.36 comes from Debian (started by ../shared/tools/run-pushpin, which installs it when
missing). When it cannot be installed or started here, these tests skip and say why.

Known, deliberate differences are not scenarios here (see README, "Compatibility notes"):
HTTP/1.0 clients get an HTTP/1.1 status line with `Connection: close` from gripcore.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .e2e_support import (
    Origin,
    OriginRequest,
    RawClient,
    WsClient,
    publish,
    running_proxy,
    stop_pushpin,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RUN_PUSHPIN = ROOT.parent / "shared" / "tools" / "run-pushpin"
PUSHPIN_HTTP, PUSHPIN_PUBLISH = 17999, 15561  # ZeroMQ takes 15560, 15562, 15563 too
SETTLE = 0.3  # seconds for a subscription to reach Pushpin's handler (separate process)


def ws_origin(request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    body = request.body
    headers = [("Content-Type", "application/websocket-events")]
    if body.startswith(b"OPEN"):
        control = b'c:{"type":"subscribe","channel":"dws"}'
        out = b"OPEN\r\nTEXT %x\r\n%s\r\n" % (len(control), control)
        return 200, [*headers, ("Sec-WebSocket-Extensions", "grip")], out
    out = b""
    if b"TEXT" in body:
        text = body.split(b"\r\n")[1]
        reply = b"m:echo " + text
        out += b"TEXT %x\r\n%s\r\n" % (len(reply), reply)
    if b"CLOSE" in body:
        out += b"CLOSE 2\r\n\x03\xe8\r\n"
    return 200, headers, out


ORIGIN_ROUTES = {
    "/plain": lambda r: (200, [("Content-Type", "text/plain"), ("X-A", "b")], b"plain\n"),
    "/bad": lambda r: (200, [("Grip-Hold", "forever")], b""),
    "/stream": lambda r: (
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "stream"), ("Grip-Channel", "dstream")],
        b"start\n",
    ),
    "/poll": lambda r: (
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "response"), ("Grip-Channel", "dpoll")],
        b"timeout\n",
    ),
    "/instruct": lambda r: (
        200,
        [("Content-Type", "application/grip-instruct")],
        b'{"hold": {"mode": "response", "channels": [{"name": "dinstruct"}]},'
        b' "response": {"headers": {"X-From": "instruct"}, "body": "none yet\\n"}}',
    ),
    "/status": lambda r: (
        200,
        [("Grip-Hold", "stream"), ("Grip-Channel", "dstatus"), ("Grip-Status", "404")],
        b"",
    ),
    "/ws": ws_origin,
}


def scenario_plain(port: int, publish_port: int) -> list[bytes]:
    c = RawClient(port)
    c.get("/plain")
    head, body = c.read_response()
    return [head, body]


def scenario_bad_instruct(port: int, publish_port: int) -> list[bytes]:
    c = RawClient(port)
    c.get("/bad")
    head, body = c.read_response()
    return [head, body]


def scenario_stream(port: int, publish_port: int) -> list[bytes]:
    c = RawClient(port)
    c.get("/stream")
    out = [c.read_until(b"start\n\r\n")]
    time.sleep(SETTLE)
    item = {
        "channel": "dstream",
        "id": f"s-{time.monotonic_ns()}",
        "formats": {"http-stream": {"content": "data: 1\n\n"}},
    }
    out.append(_publish_until(publish_port, item, c, b"data: 1\n\n\r\n"))
    close = {"channel": "dstream", "formats": {"http-stream": {"action": "close"}}}
    publish(publish_port, [close])
    out.append(c.read_until(b"0\r\n\r\n"))
    c.get("/plain")  # the connection is kept alive after the stream ends
    out.extend(c.read_response())
    return out


def scenario_long_poll(port: int, publish_port: int) -> list[bytes]:
    c = RawClient(port)
    c.get("/poll")
    time.sleep(SETTLE)
    fmt = {"code": 202, "headers": {"X-Pub": "yes"}, "body": "published\n"}
    item = {"channel": "dpoll", "id": f"p-{time.monotonic_ns()}", "formats": {"http-response": fmt}}
    return [_publish_until(publish_port, item, c, b"published\n")]


def scenario_instruct(port: int, publish_port: int) -> list[bytes]:
    c = RawClient(port)
    c.get("/instruct")
    time.sleep(SETTLE)
    item = {
        "channel": "dinstruct",
        "id": f"i-{time.monotonic_ns()}",
        "formats": {"http-response": {"body": "from publish\n"}},
    }
    return [_publish_until(publish_port, item, c, b"from publish\n")]


def scenario_grip_status(port: int, publish_port: int) -> list[bytes]:
    c = RawClient(port)
    c.get("/status")
    return [c.read_until(b"\r\n\r\n")]


def scenario_websocket(port: int, publish_port: int) -> list[bytes]:
    ws = WsClient(port, "/ws")
    handshake = ws.raw.read_until(b"\r\n\r\n")
    ws.ws.receive_data(handshake + ws.raw.buffer)
    ws.raw.buffer = b""
    for event in ws.ws.events():
        ws.events.append(event)
    ws.accept()
    time.sleep(SETTLE)
    ws.send_text("hi")
    out: list[bytes] = [handshake, repr(ws.receive_message()).encode()]
    item = {
        "channel": "dws",
        "id": f"w-{time.monotonic_ns()}",
        "formats": {"ws-message": {"content": "pushed"}},
    }
    deadline = time.monotonic() + 10
    while True:  # the subscription reaches Pushpin's handler asynchronously: publish again
        publish(publish_port, [item])
        try:
            out.append(repr(ws.receive_message(timeout=0.5)).encode())
            break
        except TimeoutError:
            assert time.monotonic() < deadline
    ws.close(1000)
    event = ws.next_event()
    out.append(f"{type(event).__name__} {int(event.code)}".encode())
    return out


def scenario_forged_websocket_events(port: int, publish_port: int) -> list[bytes]:
    """A client may not speak WebSocket-over-HTTP to an over_http origin itself: it could claim
    another session's Connection-Id and Meta-* (both answer 403, origin not called)."""
    c = RawClient(port)
    body = b"TEXT 2\r\nhi\r\n"
    c.send(
        b"POST /ws HTTP/1.1\r\nHost: example.com\r\nConnection-Id: someone-else\r\n"
        b"Content-Type: application/websocket-events\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    head, got = c.read_response()
    return [head, got]


SCENARIOS: dict[str, Callable[[int, int], list[bytes]]] = {
    "plain": scenario_plain,
    "forged-websocket-events": scenario_forged_websocket_events,
    "bad-instruct": scenario_bad_instruct,
    "stream": scenario_stream,
    "long-poll": scenario_long_poll,
    "instruct-json": scenario_instruct,
    "grip-status": scenario_grip_status,
    "websocket-over-http": scenario_websocket,
}


def _wait_until_accepting(port: int, timeout: float = 30.0) -> None:
    """Pushpin's publish port answers before its handler takes GRIP holds ("Accept service
    unavailable", 500, on a loaded machine): wait until a GRIP answer is handled."""
    deadline = time.monotonic() + timeout
    while True:
        c = RawClient(port)
        c.get("/bad")
        head, _ = c.read_response()
        c.close()
        if head.startswith(b"HTTP/1.1 502 "):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"Pushpin never accepted GRIP answers: {head!r}")
        time.sleep(0.2)


def _publish_until(
    publish_port: int, item: dict[str, object], client: RawClient, marker: bytes
) -> bytes:
    """Publish `item` (it carries an id, so a repeat is dropped as a duplicate by both proxies)
    until `marker` arrives: a subscription reaches Pushpin's handler asynchronously."""
    deadline = time.monotonic() + 10
    while True:
        publish(publish_port, [item])
        try:
            return client.read_until(marker, timeout=0.5)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin(routes=dict(ORIGIN_ROUTES)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pushpin(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    if not RUN_PUSHPIN.exists():
        pytest.skip(f"reference Pushpin launcher not found at {RUN_PUSHPIN}")
    if shutil.which("pushpin") is None and shutil.which("apt-get") is None:
        pytest.skip("Pushpin is not installed and cannot be installed (no apt-get)")
    workdir = tmp_path_factory.mktemp("ref-pushpin")
    target = f"127.0.0.1:{origin.port},over_http"
    started = subprocess.run(
        [
            "bash",
            str(RUN_PUSHPIN),
            "start",
            target,
            str(PUSHPIN_HTTP),
            str(PUSHPIN_PUBLISH),
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if started.returncode != 0:
        pytest.skip(f"reference Pushpin could not be started: {started.stderr.strip()[-300:]}")
    try:
        _wait_until_accepting(PUSHPIN_HTTP)
        yield PUSHPIN_HTTP, PUSHPIN_PUBLISH
    finally:
        stop_pushpin(str(RUN_PUSHPIN), str(workdir))


@pytest.fixture(scope="module")
def gripcore(origin: Origin) -> Iterator[tuple[int, int]]:
    with running_proxy(routes=(f"* 127.0.0.1:{origin.port},over_http",)) as proxy:
        yield proxy.port, proxy.publish_port


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_bytes_as_pushpin(
    name: str, pushpin: tuple[int, int], gripcore: tuple[int, int]
) -> None:
    scenario = SCENARIOS[name]
    reference = scenario(*pushpin)
    ours = scenario(*gripcore)
    assert _normalise(ours) == _normalise(reference)


def _normalise(parts: list[bytes]) -> list[bytes]:
    """Only the WebSocket accept key differs per connection by design (random client key)."""
    out = []
    for part in parts:
        lines = [
            line
            for line in part.split(b"\r\n")
            if not line.lower().startswith(b"sec-websocket-accept:")
        ]
        out.append(b"\r\n".join(lines))
    return out
