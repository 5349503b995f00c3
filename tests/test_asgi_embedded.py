"""Embedded mode end to end: `gripcore.asgi.GripMiddleware` around a plain ASGI origin, served by
a real uvicorn on a loopback port, with raw-socket and wsproto clients (nothing mocked).

The inner app is an ordinary GRIP origin built with `gripcore.origin` (and, for
WebSocket-over-HTTP, `gripcore.middleware.GripAsgiMiddleware`); what a client receives is
asserted byte for byte where it matters.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from wsproto.events import CloseConnection, RejectConnection, RejectData

from gripcore import ConfigError, PublishError
from gripcore.asgi import GripMiddleware, current_middleware
from gripcore.middleware import GripAsgiMiddleware, GripRequest
from gripcore.origin import Channel, KeepAlive, hold_response, hold_stream

from .e2e_support import RawClient, WsClient, publish, running_proxy, subscribers, wait_for

pytestmark = pytest.mark.e2e

SIG_KEY = "embedded-secret"


class Origin:
    """The inner ASGI application: a GRIP origin, recording what it saw."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.ws_disconnects = 0
        self.release = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                self.lifespan.append(kind)
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_body = b""
        if scope["method"] == "POST" and scope["type"] == "http" and scope["path"] != "/ws":
            request_body = await _read_body(receive)
        self.requests.append((scope["method"], scope["path"], headers))
        grip: GripRequest = scope["state"]["grip"]
        path = scope["path"]
        if grip.wscontext is not None and path == "/ws-boom":
            raise RuntimeError("the app failed on a WebSocket-over-HTTP request")
        if grip.wscontext is not None:
            await self._websocket(grip, send, accept=path != "/ws-deny", grip_path=path)
            return
        if path == "/stream":
            response = hold_stream(
                "news", headers={"Content-Type": "text/event-stream"}, body=b": welcome\n\n"
            )
        elif path == "/keepalive":
            response = hold_stream("quiet", body=b"start\n", keep_alive=KeepAlive(b"ka\n", 1))
        elif path == "/poll-seq":
            if "grip-last" in headers:
                body = f"retried after {headers['grip-last']}\n".encode() + request_body
                await _plain(send, 200, body)
                return
            response = hold_response(Channel("seq", prev_id="1"), timeout=5, body=b"none\n")
        elif path == "/poll-again":
            # held again on retry, now expecting the item after "2"
            last = "2" if "grip-last" in headers else "1"
            response = hold_response(Channel("again", prev_id=last), timeout=5, body=b"none\n")
        elif path.startswith("/count/"):  # subscribers of a channel, for a server in a process
            count = scope["state"]["gripcore"].hub.subscriber_count(path[7:])
            await _plain(send, 200, str(count).encode())
            return
        elif path == "/nothing":
            return  # no response at all
        elif path == "/poll":
            response = hold_response(
                "poll",
                timeout=5,
                headers={"Content-Type": "text/plain", "X-Hold": "yes"},
                body=b"nothing yet\n",
            )
        elif path == "/app-publish":
            middleware = scope["state"]["gripcore"]
            assert middleware is current_middleware()
            count = middleware.publish_sse("news", "from the app")
            await _plain(send, 200, f"published {count}\n".encode())
            return
        elif path == "/plain":
            await send(
                {
                    "type": "http.response.start",
                    "status": 201,
                    "headers": [(b"content-type", b"text/plain"), (b"x-app", b"plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"part one,", "more_body": True})
            await send({"type": "http.response.body", "body": b" part two", "more_body": False})
            return
        elif path == "/status":
            await _plain(send, 200, b"no hold here\n", [(b"grip-status", b"404 Nope")])
            return
        elif path == "/linked":
            response = hold_stream(
                "linked", body=b"first\n", next_link="/linked-next", gone_link="/linked-gone"
            )
        elif path == "/linked-next":
            await _plain(send, 200, f"next with {headers.get('grip-feature', '')[:6]}\n".encode())
            return
        elif path == "/linked-gone":
            await _plain(send, 204, b"")
            return
        elif path == "/linked-away":
            response = hold_stream("linked", body=b"first\n", next_link="http://elsewhere.test/x")
        elif path == "/slow-plain":
            start = {"type": "http.response.start", "status": 200, "headers": []}
            await send(start)
            await send({"type": "http.response.body", "body": b"early ", "more_body": True})
            while not self.release.is_set():  # set by the test once "early" arrived
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"late", "more_body": False})
            return
        elif path == "/bad":
            await _plain(send, 200, b"", [(b"grip-hold", b"forever")])
            return
        elif path == "/signed":
            await _plain(send, 200, json.dumps({"signed": grip.signed}).encode())
            return
        elif path == "/boom":
            raise RuntimeError("the app failed")
        else:
            await _plain(send, 404, b"no such path\n")
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.header_bytes(),
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _websocket(
        self, grip: GripRequest, send: Any, *, accept: bool, grip_path: str
    ) -> None:
        ctx = grip.wscontext
        assert ctx is not None
        if ctx.disconnected:
            self.ws_disconnects += 1
        if ctx.is_opening and accept:
            ctx.accept()
            ctx.subscribe("room")
            if grip_path == "/ws-ka":
                ctx.keep_alive("still there?", timeout=1)
        while ctx.can_recv():
            message = ctx.recv()
            if message == "leave":
                ctx.unsubscribe("room")
            elif message == "bye":
                ctx.close(4000, "see you")
            else:
                ctx.send(f"you said {message}")
        response = ctx.response()
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": response.header_bytes(),
            }
        )
        await send({"type": "http.response.body", "body": response.body})


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _plain(
    send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    out = [(b"content-type", b"text/plain"), *(headers or [])]
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


class Uvicorn:
    """A real uvicorn serving `app` on a free loopback port, in a background thread."""

    def __init__(self, app: Any, **options: Any) -> None:
        options.setdefault("lifespan", "on")
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            ws="wsproto",
            log_level="warning",
            date_header=False,  # tests compare exact bytes
            server_header=False,
            **options,
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def start(self) -> Uvicorn:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@pytest.fixture
def origin() -> Origin:
    return Origin()


@pytest.fixture
def middleware(origin: Origin) -> GripMiddleware:
    app = GripAsgiMiddleware(origin, key=SIG_KEY, clock=time.time)
    return GripMiddleware(app, publish_path="/publish/", sig_key=SIG_KEY)


@pytest.fixture
def server(middleware: GripMiddleware) -> Iterator[Uvicorn]:
    running = Uvicorn(middleware).start()
    try:
        yield running
    finally:
        running.run(middleware.shutdown())
        running.stop()


def _subscribers(mw: GripMiddleware, channel: str) -> int:
    return mw.hub.subscriber_count(channel)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# --- HTTP ---------------------------------------------------------------------------------


def test_plain_answer_streams_through_unchanged(server: Uvicorn) -> None:
    client = RawClient(server.port)
    client.get("/plain")
    head = client.read_until(b"\r\n\r\n")
    assert head == (
        b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nx-app: plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    body = client.read_until(b"0\r\n\r\n")
    assert body == _chunk(b"part one,") + _chunk(b" part two") + b"0\r\n\r\n"


def test_grip_answer_without_hold_is_its_client_response(server: Uvicorn) -> None:
    client = RawClient(server.port)
    client.get("/status")
    head, body = client.read_response()
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")  # ASGI carries no reason phrase
    assert body == b"no hold here\n"
    assert b"grip-" not in head.lower()


def test_app_sees_a_signed_request_without_client_grip_headers(
    server: Uvicorn, origin: Origin
) -> None:
    client = RawClient(server.port)
    client.get("/signed", headers="Grip-Last: news; last-id=forged\r\n")
    _, body = client.read_response()
    assert json.loads(body) == {"signed": True}
    _, _, headers = origin.requests[-1]
    assert "grip-last" not in headers
    assert headers["grip-feature"].startswith("status, link:next")


def test_stream_hold_receives_publishes_from_app_api_and_threads(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    client = RawClient(server.port)
    client.get("/stream")
    head = client.read_until(b"\r\n\r\n")
    assert head == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert client.read_until(b"welcome\n\n\r\n") == _chunk(b": welcome\n\n")
    wait_for(lambda: _subscribers(middleware, "news") == 1)

    # from inside a request handler of the app
    other = RawClient(server.port)
    other.get("/app-publish")
    _, body = other.read_response()
    assert body == b"published 1\n"
    assert client.read_until(b"\n\n\r\n") == _chunk(b"data: from the app\n\n")

    # through the publish API path on the same server
    items = [{"channel": "news", "formats": {"http-stream": {"content": "via api\n"}}}]
    assert publish(server.port, items) == (200, b"Published\n")
    assert client.read_until(b"\n\r\n") == _chunk(b"via api\n")

    # from another thread (this one), as a publish-API item object
    assert middleware.publish(items[0] | {"formats": {"http-stream": {"content": "thread\n"}}}) == 1
    assert client.read_until(b"\n\r\n") == _chunk(b"thread\n")

    # a published close ends the body cleanly
    middleware.publish_close("news")
    assert client.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"
    wait_for(lambda: not middleware.sessions)
    assert _subscribers(middleware, "news") == 0


def test_stream_keep_alive_is_sent_when_idle(server: Uvicorn, middleware: GripMiddleware) -> None:
    client = RawClient(server.port)
    client.get("/keepalive")
    client.read_until(b"\r\n\r\n")
    assert client.read_until(b"start\n\r\n") == _chunk(b"start\n")
    assert client.read_until(b"ka\n\r\n", timeout=5) == _chunk(b"ka\n")


def test_long_poll_delivered(server: Uvicorn, middleware: GripMiddleware) -> None:
    client = RawClient(server.port)
    client.get("/poll")
    wait_for(lambda: _subscribers(middleware, "poll") == 1)
    middleware.publish_response("poll", "it happened\n", headers={"X-Event": "1"})
    head, body = client.read_response()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-hold: yes\r\n" in head  # the hold's headers, published ones added
    assert b"x-event: 1\r\n" in head
    assert b"content-length: 12\r\n" in head
    assert body == b"it happened\n"
    wait_for(lambda: _subscribers(middleware, "poll") == 0)


def test_long_poll_times_out_with_the_hold_response(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    client = RawClient(server.port)
    client.get("/poll")
    head, body = client.read_response(timeout=10)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-hold: yes\r\n" in head
    assert body == b"nothing yet\n"
    wait_for(lambda: _subscribers(middleware, "poll") == 0)


def test_long_poll_hint_retries_the_app_with_grip_last(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    client = RawClient(server.port)
    client.get("/poll-seq")
    wait_for(lambda: _subscribers(middleware, "seq") == 1)
    middleware.publish_hint("seq")
    head, body = client.read_response()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b'retried after seq; last-id="1"\n'
    wait_for(lambda: not middleware.sessions)


def test_stream_next_link_is_fetched_from_the_app_on_hint(
    server: Uvicorn, middleware: GripMiddleware, origin: Origin
) -> None:
    client = RawClient(server.port)
    client.get("/linked")
    client.read_until(b"\r\n\r\n")
    assert client.read_until(b"first\n\r\n") == _chunk(b"first\n")
    wait_for(lambda: _subscribers(middleware, "linked") == 1)
    middleware.publish_hint("linked")
    # a plain answer: its body is more stream content, and the stream ends (no new hold)
    assert client.read_until(b"0\r\n\r\n") == _chunk(b"next with status\n") + b"0\r\n\r\n"
    # the stream is over: the gone link was posted to the app
    wait_for(lambda: ("POST", "/linked-gone") in [(m, p) for m, p, _ in origin.requests])
    assert ("GET", "/linked-next") in [(m, p) for m, p, _ in origin.requests]
    wait_for(lambda: not middleware.sessions)


def test_next_link_elsewhere_is_refused(
    server: Uvicorn, middleware: GripMiddleware, origin: Origin
) -> None:
    client = RawClient(server.port)
    client.get("/linked-away")
    client.read_until(b"\r\n\r\n")
    assert client.read_until(b"first\n\r\n") == _chunk(b"first\n")
    wait_for(lambda: _subscribers(middleware, "linked") == 1)
    middleware.publish_hint("linked")
    assert client.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"  # as a failed fetch ends it
    assert [p for _, p, _ in origin.requests] == ["/linked-away"]


# --- WebSocket ----------------------------------------------------------------------------


def test_websocket_subscribed_by_the_app_gets_publishes_and_answers(
    server: Uvicorn, middleware: GripMiddleware, origin: Origin
) -> None:
    ws = WsClient(server.port, "/ws")
    accepted = ws.accept()
    assert not isinstance(accepted, RejectConnection)
    wait_for(lambda: _subscribers(middleware, "room") == 1)
    # the app saw WebSocket-over-HTTP: a POST with the OPEN event
    method, path, headers = origin.requests[0]
    assert (method, path) == ("POST", "/ws")
    assert headers["content-type"] == "application/websocket-events"
    assert "connection-id" in headers

    middleware.publish_ws("room", "hello room")
    assert ws.receive_message() == "hello room"
    middleware.publish_ws("room", b"\x00\x01")
    assert ws.receive_message() == b"\x00\x01"

    ws.send_text("ping me")
    assert ws.receive_message() == "you said ping me"

    ws.send_text("leave")
    wait_for(lambda: _subscribers(middleware, "room") == 0)

    ws.send_text("bye")
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4000, "see you")
    wait_for(lambda: not middleware.sessions)


def test_websocket_published_close(server: Uvicorn, middleware: GripMiddleware) -> None:
    ws = WsClient(server.port, "/ws")
    ws.accept()
    wait_for(lambda: _subscribers(middleware, "room") == 1)
    middleware.publish_close("room", code=4001, reason="done")
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4001, "done")
    wait_for(lambda: not middleware.sessions)


def test_websocket_refused_by_the_app(server: Uvicorn, middleware: GripMiddleware) -> None:
    ws = WsClient(server.port, "/ws-deny")  # the app does not accept the OPEN: 403
    rejected = ws.accept()
    assert isinstance(rejected, RejectConnection)
    assert rejected.status_code == 403
    data = ws.next_event()
    assert isinstance(data, RejectData)
    assert data.data == b"WebSocket connection not accepted\n"
    wait_for(lambda: not middleware.sessions)


# --- clients that vanish, bad input, shutdown -------------------------------------------


def test_vanished_clients_leave_no_subscription(
    server: Uvicorn, middleware: GripMiddleware, origin: Origin
) -> None:
    stream = RawClient(server.port)
    stream.get("/stream")
    poll = RawClient(server.port)
    poll.get("/poll")
    ws = WsClient(server.port, "/ws")
    ws.accept()
    wait_for(
        lambda: (
            (
                _subscribers(middleware, "news"),
                _subscribers(middleware, "poll"),
                _subscribers(middleware, "room"),
            )
            == (1, 1, 1)
        )
    )
    stream.close()
    poll.close()
    ws.raw.close()
    wait_for(lambda: not middleware.sessions and not list(middleware.hub.channels()))
    # the app heard the WebSocket client go (DISCONNECT)
    wait_for(lambda: origin.ws_disconnects == 1)


def test_bad_grip_answer_is_a_502_for_that_request_only(server: Uvicorn) -> None:
    client = RawClient(server.port)
    client.get("/bad")
    head, body = client.read_response()
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert body == b"Error while proxying to origin.\n"
    client.get("/plain")  # the same connection goes on
    assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 201 ")


def test_bad_grip_answer_detail_in_debug_mode(origin: Origin) -> None:
    middleware = GripMiddleware(GripAsgiMiddleware(origin, clock=time.time), debug=True)
    running = Uvicorn(middleware).start()
    try:
        client = RawClient(running.port)
        client.get("/bad")
        head, body = client.read_response()
        assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert body.startswith(b"Failed to parse accept instructions: ")
    finally:
        running.stop()


def test_app_exception_is_a_500_for_that_request_only(server: Uvicorn) -> None:
    client = RawClient(server.port)
    client.get("/boom")
    head = client.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    # uvicorn's own answer to an app that raised: the middleware hides nothing
    assert client.read_to_close() == _chunk(b"Internal Server Error") + b"0\r\n\r\n"
    other = RawClient(server.port)
    other.get("/plain")
    assert other.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 201 ")


def test_publish_api_rejects_bad_items(server: Uvicorn) -> None:
    status, body = publish(server.port, [{"channel": "news", "formats": {}}])
    assert (status, body) == (400, b"Invalid format: item 0: no formats specified\n")


def test_shutdown_ends_held_sessions_cleanly(
    server: Uvicorn, middleware: GripMiddleware, origin: Origin
) -> None:
    stream = RawClient(server.port)
    stream.get("/stream")
    stream.read_until(b"\r\n\r\n")
    stream.read_until(b"welcome\n\n\r\n")
    poll = RawClient(server.port)
    poll.get("/poll")
    ws = WsClient(server.port, "/ws")
    ws.accept()
    wait_for(lambda: len(middleware.sessions) == 3)

    server.run(middleware.shutdown())

    assert stream.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"
    head, body = poll.read_response()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"nothing yet\n"
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert event.code == 1001
    assert not middleware.sessions
    assert not list(middleware.hub.channels())

    # a hold answered after shutdown ends at once
    late = RawClient(server.port)
    late.get("/stream")
    late.read_until(b"\r\n\r\n")
    assert late.read_until(b"0\r\n\r\n") == _chunk(b": welcome\n\n") + b"0\r\n\r\n"


def test_lifespan_passes_through_and_shutdown_reaches_the_middleware(origin: Origin) -> None:
    middleware = GripMiddleware(GripAsgiMiddleware(origin, clock=time.time))
    running = Uvicorn(middleware).start()
    assert origin.lifespan == ["startup"]
    running.stop()
    assert origin.lifespan == ["startup", "shutdown"]
    assert middleware.closing


def test_app_without_lifespan_support_still_starts(origin: Origin) -> None:
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await _plain(send, 200, b"ok\n")

    middleware = GripMiddleware(http_only)
    running = Uvicorn(middleware).start()  # lifespan="on": a failure would stop uvicorn
    client = RawClient(running.port)
    client.get("/")
    assert client.read_response()[1] == b"ok\n"
    running.stop()
    assert middleware.closing


# --- the origin middleware (gripcore.middleware) under uvicorn, behind gripcore serve -----


def test_origin_middleware_under_uvicorn_behind_gripcore_serve() -> None:
    """`GripAsgiMiddleware` as an origin under a real uvicorn, with the asyncio proxy in front:
    a signed stream hold and a WebSocket-over-HTTP session, both fed by the proxy's publish API."""
    origin = Origin()
    app = GripAsgiMiddleware(origin, key=SIG_KEY, clock=time.time)
    upstream = Uvicorn(app).start()
    try:
        with running_proxy(
            routes=(f"* 127.0.0.1:{upstream.port},over_http",), sig_key=SIG_KEY
        ) as proxy:
            client = RawClient(proxy.port)
            client.get("/signed")
            _, body = client.read_response()
            assert json.loads(body) == {"signed": True}

            stream = RawClient(proxy.port)
            stream.get("/stream")
            head = stream.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert stream.read_until(b"welcome\n\n\r\n") == _chunk(b": welcome\n\n")

            ws = WsClient(proxy.port, "/ws")
            assert not isinstance(ws.accept(), RejectConnection)
            wait_for(lambda: subscribers(proxy, "news") == 1 and subscribers(proxy, "room") == 1)

            items = [
                {"channel": "news", "formats": {"http-stream": {"content": "proxied\n"}}},
                {"channel": "room", "formats": {"ws-message": {"content": "to the room"}}},
            ]
            assert publish(proxy.publish_port, items) == (200, b"Published\n")
            assert stream.read_until(b"proxied\n\r\n") == _chunk(b"proxied\n")
            assert ws.receive_message() == "to the room"

            ws.send_text("hello")
            assert ws.receive_message() == "you said hello"
            ws.close()
            event = ws.next_event()
            assert isinstance(event, CloseConnection)
    finally:
        upstream.stop()
    posts = [
        (m, p) for m, p, h in origin.requests if "websocket-events" in h.get("content-type", "")
    ]
    assert posts and all(p == ("POST", "/ws") for p in posts)


def test_uvicorn_graceful_shutdown_timeout_ends_held_requests(origin: Origin) -> None:
    """uvicorn sends `lifespan.shutdown` only once every connection closed; with
    `timeout_graceful_shutdown` it cancels what is still running, and held requests end as
    a shutdown ends them (uvicorn itself closes WebSockets with 1012 first)."""
    middleware = GripMiddleware(GripAsgiMiddleware(origin, clock=time.time))
    running = Uvicorn(middleware, timeout_graceful_shutdown=1).start()
    stream = RawClient(running.port)
    stream.get("/stream")
    stream.read_until(b"welcome\n\n\r\n")
    poll = RawClient(running.port)
    poll.get("/poll")
    ws = WsClient(running.port, "/ws")
    ws.accept()
    wait_for(lambda: len(middleware.sessions) == 3)
    running.stop()
    assert stream.read_to_close() == b"0\r\n\r\n"
    head, body = poll.read_response()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == b"nothing yet\n"
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert event.code == 1012
    assert not middleware.sessions
    assert not list(middleware.hub.channels())
    assert origin.lifespan == ["startup", "shutdown"]


# --- more HTTP and publishing edges -------------------------------------------------------


def test_plain_answer_is_relayed_as_the_app_sends_it(server: Uvicorn, origin: Origin) -> None:
    client = RawClient(server.port)
    client.get("/slow-plain")
    client.read_until(b"\r\n\r\n")
    # the first part arrives while the app still holds the rest: nothing is buffered
    assert client.read_until(b"early \r\n") == _chunk(b"early ")
    origin.release.set()
    assert client.read_until(b"0\r\n\r\n") == _chunk(b"late") + b"0\r\n\r\n"


def test_long_poll_retry_replays_the_request_body(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    client = RawClient(server.port)
    client.send(
        b"POST /poll-seq HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello there"
    )
    wait_for(lambda: _subscribers(middleware, "seq") == 1)
    middleware.publish_hint("seq")
    _, body = client.read_response()
    assert body == b'retried after seq; last-id="1"\nhello there'


def test_too_big_websocket_message_closes_that_session_with_1009(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    ws = WsClient(server.port, "/ws")
    ws.accept()
    other = WsClient(server.port, "/ws")
    other.accept()
    wait_for(lambda: _subscribers(middleware, "room") == 2)
    ws.send_text("x" * 200_001)
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert event.code == 1009
    wait_for(lambda: _subscribers(middleware, "room") == 1)
    middleware.publish_ws("room", "still here")
    assert other.receive_message() == "still here"


def test_publish_api_key(origin: Origin) -> None:
    middleware = GripMiddleware(
        GripAsgiMiddleware(origin, clock=time.time), publish_path="/_grip/publish", publish_key="k"
    )
    running = Uvicorn(middleware).start()
    try:
        items = [{"channel": "c", "formats": {"http-stream": {"content": "x"}}}]
        body = json.dumps({"items": items}).encode()
        request = (
            b"POST /_grip/publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
            b"application/json\r\nContent-Length: %d\r\n%s\r\n"
        )
        client = RawClient(running.port)
        client.send(request % (len(body), b"") + body)
        head, answer = client.read_response()
        assert head.startswith(b"HTTP/1.1 401 ")
        assert answer == b"Unauthorized\n"
        client.send(request % (len(body), b"Authorization: Bearer k\r\n") + body)
        head, answer = client.read_response()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert answer == b"Published\n"
        assert origin.requests == []  # the publish path never reaches the app
    finally:
        running.stop()


def test_publish_validates_in_the_caller_and_works_before_any_request(origin: Origin) -> None:
    middleware = GripMiddleware(origin)
    with pytest.raises(PublishError, match="item 0: "):
        middleware.publish({"channel": "c", "formats": {}})
    with pytest.raises(PublishError, match="item 1: "):
        middleware.publish([{"channel": "c", "formats": {"ws-message": {"content": "ok"}}}, {}])
    assert middleware.broker.stats.received == 0  # nothing of a bad batch went out
    # no request served yet (no loop known): published, to nobody
    assert middleware.publish_ws("c", "hi") == 1
    assert middleware.broker.stats.received == 1


def test_long_poll_retry_answered_with_a_new_hold(
    server: Uvicorn, middleware: GripMiddleware, origin: Origin
) -> None:
    client = RawClient(server.port)
    client.get("/poll-again")
    wait_for(lambda: _subscribers(middleware, "again") == 1)
    middleware.publish_hint("again")
    wait_for(lambda: len(origin.requests) == 2)  # the retry, held again
    assert origin.requests[1][2]["grip-last"] == 'again; last-id="1"'
    middleware.publish_response("again", "three\n", id="3", prev_id="2")
    _, body = client.read_response()
    assert body == b"three\n"
    wait_for(lambda: not middleware.sessions)


def test_out_of_order_item_waits_then_goes_out(origin: Origin) -> None:
    """The sequencer holds an item whose prev-id is ahead of the channel for `message_wait`;
    the middleware's broker timer then releases it."""
    middleware = GripMiddleware(GripAsgiMiddleware(origin, clock=time.time), message_wait=0.3)
    running = Uvicorn(middleware).start()
    try:
        client = RawClient(running.port)
        client.get("/stream")
        client.read_until(b"welcome\n\n\r\n")
        wait_for(lambda: _subscribers(middleware, "news") == 1)
        middleware.publish_stream("news", "one\n", id="1")
        assert client.read_until(b"one\n\r\n") == _chunk(b"one\n")
        middleware.publish_stream("news", "three\n", id="3", prev_id="2")  # "2" never comes
        assert client.read_until(b"three\n\r\n") == _chunk(b"three\n")
        assert middleware.broker.sequencer.stats.overflow_dropped == 0
    finally:
        running.run(middleware.shutdown())  # uvicorn waits for held requests otherwise
        running.stop()


def test_app_without_a_response_is_a_500(server: Uvicorn) -> None:
    client = RawClient(server.port)
    client.get("/nothing")
    head = client.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


def test_websocket_app_failure_refuses_the_client(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    ws = WsClient(server.port, "/ws-boom")
    rejected = ws.accept()
    assert isinstance(rejected, RejectConnection)
    assert rejected.status_code == 502
    data = ws.next_event()
    assert isinstance(data, RejectData)
    assert data.data == b"Error while proxying to origin.\n"
    wait_for(lambda: not middleware.sessions)


def test_websocket_refusal_without_the_denial_extension_is_a_403(origin: Origin) -> None:
    middleware = GripMiddleware(GripAsgiMiddleware(origin, clock=time.time))

    async def without_extensions(scope: Any, receive: Any, send: Any) -> None:
        await middleware({**scope, "extensions": {}}, receive, send)

    running = Uvicorn(without_extensions).start()
    try:
        ws = WsClient(running.port, "/ws-deny")
        rejected = ws.accept()
        assert isinstance(rejected, RejectConnection)
        assert rejected.status_code == 403
    finally:
        running.stop()


def test_websocket_keep_alive_from_a_control_message(
    server: Uvicorn, middleware: GripMiddleware
) -> None:
    ws = WsClient(server.port, "/ws-ka")
    ws.accept()
    assert ws.receive_message(timeout=5) == "still there?"
    assert ws.receive_message(timeout=5) == "still there?"


# --- uvicorn app:app in a process of its own ----------------------------------------------

SERVE = """
import sys, time
import uvicorn
from gripcore.asgi import GripMiddleware
from gripcore.middleware import GripAsgiMiddleware
from tests.test_asgi_embedded import Origin
app = GripMiddleware(GripAsgiMiddleware(Origin(), clock=time.time))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), ws="wsproto", log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _count(port: int, channel: str) -> int:
    client = RawClient(port)
    try:
        client.get(f"/count/{channel}")
        return int(client.read_response()[1])
    finally:
        client.close()


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_uvicorn_ends_held_sessions_cleanly(signum: int) -> None:
    """`uvicorn app:app` and Ctrl+C (or SIGTERM): the middleware hears the signal before
    uvicorn waits for connections, so held requests end cleanly and uvicorn exits."""
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _answers(port), timeout=20)
        stream = RawClient(port)
        stream.get("/stream")
        stream.read_until(b"welcome\n\n\r\n")
        poll = RawClient(port)
        poll.get("/poll")
        ws = WsClient(port, "/ws")
        ws.accept()
        wait_for(lambda: (_count(port, "poll"), _count(port, "room")) == (1, 1))

        proc.send_signal(signum)

        assert stream.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"
        head, body = poll.read_response()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert body == b"nothing yet\n"
        event = ws.next_event()
        assert isinstance(event, CloseConnection)
        assert event.code == 1001
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        errors = proc.stderr.read()
        proc.stderr.close()
    # uvicorn re-raises a SIGTERM it handled once it is done: the default action ends it
    assert proc.returncode == (-signal.SIGTERM if signum == signal.SIGTERM else 0)
    assert errors == b""  # nothing logged at warning level or above, no traceback


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"max_output_buffer": 0}, "Config.max_output_buffer: must be an integer >= 1, got 0"),
        ({"slow_consumer_policy": "panic"}, "Config.slow_consumer_policy: "),
        ({"message_wait": -1.0}, "Config.message_wait: "),
    ],
)
def test_options_are_checked_as_gripcore_serve_checks_them(
    origin: Origin, option: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
        GripMiddleware(origin, **option)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Sec-WebSocket-Version: 13\r\n", b"400"),  # no key
        (b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n", b"400"),
        (b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n", b"426"),
    ],
)
def test_websocket_handshake_is_checked_by_the_server(
    server: Uvicorn, origin: Origin, headers: bytes, status: bytes
) -> None:
    """Embedded, the ASGI server owns the handshake (RFC 6455 section 4.2.1): a bad key or
    version is refused before the app or the gateway hears of it."""
    client = RawClient(server.port)
    client.send(
        b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n" + headers + b"\r\n"
    )
    head = client.read_until(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == status, head
    assert not origin.requests
    client.close()
