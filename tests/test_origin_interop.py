"""gripcore's origin helpers and Publisher behind/against real proxies: the same scenarios pass
behind the reference Pushpin 1.36 and behind `gripcore serve` (issue 8, "Interop").

The origin is written with `gripcore.origin` only (stream hold, long-poll, WebSocket-over-HTTP
with WebSocketContext) and verifies each request's Grip-Sig with `verify_request`; every
publish goes through `gripcore.adapters.publisher.Publisher`. Pushpin is started with
../shared/tools/run-pushpin (key "changeme", issuer "pushpin"); when it cannot run here the
Pushpin half skips and says why.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gripcore.adapters.publisher import Publisher
from gripcore.origin import WebSocketContext, hold_response, hold_stream, verify_request

from .e2e_support import Origin, OriginRequest, RawClient, WsClient, running_proxy, stop_pushpin

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RUN_PUSHPIN = ROOT.parent / "shared" / "tools" / "run-pushpin"
PUSHPIN_HTTP, PUSHPIN_PUBLISH = 37999, 35561
KEY = "changeme"  # run-pushpin's signing key; gripcore is started with the same


def answer(
    response: tuple[int, list[tuple[str, str]], bytes],
) -> tuple[int, list[tuple[str, str]], bytes]:
    status, headers, body = response
    return status, list(headers), body


class HelperOrigin:
    """Answers with gripcore.origin builders; records whether each Grip-Sig verified."""

    def __init__(self) -> None:
        self.signed: list[bool] = []

    def __call__(self, request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [(k.encode(), v.encode()) for k, v in request.header_list]
        self.signed.append(verify_request(headers, KEY, time.time()) is not None)
        path = request.path.split("?", 1)[0]
        if path == "/stream":
            return answer(
                hold_stream(
                    "helpers-stream", body="hello\n", headers={"Content-Type": "text/plain"}
                )
            )
        if path == "/poll":
            return answer(hold_response("helpers-poll", timeout=30, body="nothing\n"))
        ctx = WebSocketContext(headers, request.body)
        if ctx.is_opening:
            ctx.accept()
            ctx.subscribe("helpers-ws")
        while ctx.can_recv():
            message = ctx.recv()
            if message is None:
                ctx.close(ctx.close_code or 1000)
                break
            ctx.send(f"you said {message!s}")
        return answer(ctx.response())


def _publish_until(
    publisher: Publisher, publish: object, check: object, timeout: float = 10
) -> None:
    """A subscription reaches Pushpin's handler asynchronously: publish (with an id, so a
    repeat is a duplicate) until the client has it."""
    deadline = time.monotonic() + timeout
    while True:
        publish()  # type: ignore[operator]
        try:
            check()  # type: ignore[operator]
            return
        except TimeoutError:
            assert time.monotonic() < deadline


def run_scenarios(port: int, publish_port: int, origin: HelperOrigin) -> None:
    publisher = Publisher(f"http://127.0.0.1:{publish_port}")
    stamp = str(time.monotonic_ns())
    try:
        stream = RawClient(port)
        stream.get("/stream")
        assert stream.read_until(b"hello\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
        _publish_until(
            publisher,
            lambda: publisher.publish_sse("helpers-stream", "one", id=f"s{stamp}"),
            lambda: stream.read_until(b"data: one\n\n\r\n", timeout=0.5),
        )
        poll = RawClient(port)
        poll.get("/poll")
        time.sleep(0.2)
        _publish_until(
            publisher,
            lambda: publisher.publish_response("helpers-poll", "news\n", id=f"p{stamp}"),
            lambda: poll.read_until(b"news\n", timeout=0.5),
        )
        ws = WsClient(port, "/ws")
        ws.accept()
        ws.send_text("hi")
        assert ws.receive_message() == "you said hi"

        def pushed_arrived() -> None:
            assert ws.receive_message(timeout=0.5) == "pushed"

        _publish_until(
            publisher,
            lambda: publisher.publish_ws("helpers-ws", "pushed", id=f"w{stamp}"),
            pushed_arrived,
        )
        assert origin.signed and all(origin.signed)  # every request carried a valid Grip-Sig
    finally:
        publisher.close()


@pytest.fixture(scope="module")
def helper_origin() -> Iterator[tuple[Origin, HelperOrigin]]:
    app = HelperOrigin()
    server = Origin(routes={"/stream": app, "/poll": app, "/ws": app}).start()
    yield server, app
    server.stop()


def test_helpers_behind_gripcore(helper_origin: tuple[Origin, HelperOrigin]) -> None:
    server, app = helper_origin
    with running_proxy(
        routes=(f"* 127.0.0.1:{server.port},over_http",), sig_key=KEY, sig_iss="pushpin"
    ) as proxy:
        run_scenarios(proxy.port, proxy.publish_port, app)


def test_helpers_behind_pushpin(helper_origin: tuple[Origin, HelperOrigin], tmp_path: Path) -> None:
    server, app = helper_origin
    if not RUN_PUSHPIN.exists():
        pytest.skip(f"reference Pushpin launcher not found at {RUN_PUSHPIN}")
    target = f"127.0.0.1:{server.port},over_http"
    started = subprocess.run(
        [
            "bash",
            str(RUN_PUSHPIN),
            "start",
            target,
            str(PUSHPIN_HTTP),
            str(PUSHPIN_PUBLISH),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if started.returncode != 0:
        pytest.skip(f"reference Pushpin could not be started: {started.stderr.strip()[-300:]}")
    try:
        deadline = time.monotonic() + 30
        while True:  # Pushpin's handler takes GRIP answers a moment after its ports open
            head = b""
            try:
                c = RawClient(PUSHPIN_HTTP)
                c.get("/stream")
                head = c.read_until(b"\r\n\r\n")
                c.close()
            except (ConnectionError, TimeoutError):
                pass  # not listening yet
            if head.startswith(b"HTTP/1.1 200 "):
                break
            assert time.monotonic() < deadline, head
            time.sleep(0.2)
        run_scenarios(PUSHPIN_HTTP, PUSHPIN_PUBLISH, app)
    finally:
        stop_pushpin(str(RUN_PUSHPIN), str(tmp_path))
