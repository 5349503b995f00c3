"""Tests for gripcore.middleware: a plain WSGI app on a real wsgiref server, a plain ASGI app
called with hand-made scope/receive/send, and the WSGI app behind `gripcore serve`."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore._errors import LocalProtocolError
from gripcore._sig import SigningKey, VerifyKey, mint_sig
from gripcore.middleware import (
    MAX_BODY_SIZE,
    GripAsgiMiddleware,
    GripRequest,
    GripWsgiMiddleware,
)
from gripcore.origin import WebSocketContext, hold_stream

from .e2e_support import WsClient, publish, running_proxy, subscribers, wait_for
from .hypothesis_support import examples

KEY = b"middleware-test-secret-of-32-bytes!"
NOW = 1_700_000_000.0
WOH = "application/websocket-events"
OPEN_TEXT = b"OPEN\r\nTEXT 2\r\nhi\r\n"
ECHO_BODY = b'OPEN\r\nTEXT 27\r\nc:{"type":"subscribe","channel":"room"}\r\nTEXT 9\r\nm:echo hi\r\n'


def clock() -> float:
    return NOW


def sig(key: bytes = KEY, iss: str = "pushpin", now: float = NOW) -> str:
    return mint_sig(SigningKey("HS256", key), iss, now)


# (Grip-Sig header or None, expected signed, expected issuer claim)
SIG_CASES = [
    (None, False, None),
    (sig(), True, "pushpin"),
    (sig(key=b"another-secret-also-32-bytes-long!!"), False, None),
    (sig(now=NOW - 3600), False, None),  # expired
    ("not.a.token", False, None),
]


# --- a plain WSGI app -------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    ctx: WebSocketContext | None = environ["grip.wscontext"]
    path = environ["PATH_INFO"]
    if ctx is None:
        body = json.dumps({"signed": environ["grip.signed"], "claims": environ["grip.claims"]})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body.encode()]
    if "test.body" in environ:  # the middleware hands the body on unchanged
        assert environ["wsgi.input"].read() == environ["test.body"]
    if path == "/own":  # the app answers itself, even though it used the context
        ctx.accept()
        _, headers, body = hold_stream("own")
        start_response("200 OK", headers)
        return [body]
    if path == "/untouched":
        start_response("204 No Content", [("X-App", "1")])
        return []
    if path == "/nostart":
        return []
    if path == "/big":
        write = start_response("200 OK", [("Content-Type", WOH)])
        write(b"x" * MAX_BODY_SIZE)
        return [b"y"]
    if ctx.is_opening:
        ctx.accept()
        ctx.subscribe("room")
        environ["test.seen"].append(environ["grip.signed"])
    for message in ctx.messages:
        ctx.send(f"echo {message!s}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ignored by the middleware"]


middleware = GripWsgiMiddleware(wsgi_app, key=KEY, clock=clock)


class _Recorder:
    """A WSGI app around a middleware, recording whether the app saw a signed OPEN."""

    def __init__(self, app: GripWsgiMiddleware) -> None:
        self.app = app
        self.seen: list[bool] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["test.seen"] = self.seen
        return self.app(environ, start_response)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server:
    def __init__(self, app: Any) -> None:
        self.httpd: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def recorder() -> _Recorder:
    return _Recorder(middleware)


@pytest.fixture(scope="module")
def server(recorder: _Recorder) -> Iterator[_Server]:
    srv = _Server(recorder)
    yield srv
    srv.stop()


def request(
    port: int, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("grip_sig", "signed", "iss"), SIG_CASES)
def test_wsgi_sig_over_http(server: _Server, grip_sig: str | None, signed: bool, iss: str) -> None:
    headers = {} if grip_sig is None else {"Grip-Sig": grip_sig}
    status, _, body = request(server.port, "/plain", headers)
    assert status == 200
    seen = json.loads(body)
    assert seen["signed"] is signed
    assert (seen["claims"] or {}).get("iss") == iss


def test_wsgi_websocket_open_then_text(server: _Server, recorder: _Recorder) -> None:
    headers = {"Content-Type": WOH, "Connection-Id": "c1", "Grip-Sig": sig()}
    status, response_headers, body = request(server.port, "/ws", headers, OPEN_TEXT)
    assert status == 200
    assert body == ECHO_BODY
    assert response_headers["Content-Type"] == WOH
    assert response_headers["Sec-WebSocket-Extensions"] == "grip"
    assert response_headers["Content-Length"] == str(len(ECHO_BODY))
    assert recorder.seen[-1] is True
    status, _, body = request(server.port, "/ws", headers, b"TEXT 3\r\nabc\r\n")
    assert (status, body) == (200, b"TEXT a\r\nm:echo abc\r\n")


def test_wsgi_oversized_body_is_413(server: _Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.putrequest("POST", "/ws")
        conn.putheader("Content-Type", WOH)
        conn.putheader("Content-Length", str(MAX_BODY_SIZE + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert response.read() == b"Request body too large.\n"
    finally:
        conn.close()


# --- the WSGI middleware called directly ------------------------------------------------------


def call_wsgi(
    app: Any, body: bytes | None, path: str = "/ws", **extra: Any
) -> tuple[str, list[tuple[str, str]], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "CONTENT_TYPE": WOH,
        "wsgi.input": io.BytesIO(body or b""),
        "test.body": body or b"",
        "test.seen": [],
    }
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
    environ.update(extra)
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return None

    chunks = b"".join(app(environ, start_response))
    return started[0], started[1], chunks


# (path, body, expected status line, expected body or None for "do not check")
WSGI_DIRECT_CASES = [
    ("/ws", OPEN_TEXT, "200 OK", ECHO_BODY),
    ("/own", OPEN_TEXT, "200 OK", b""),  # the app's own GRIP answer passes through
    ("/untouched", b"TEXT 2\r\nhi\r\n", "204 No Content", b""),
    ("/big", b"TEXT 2\r\nhi\r\n", "502 Bad Gateway", None),
    ("/ws", b"TEXT 99\r\nhi\r\n", "400 Bad Request", None),  # body does not decode
]


@pytest.mark.parametrize(("path", "body", "status", "expected"), WSGI_DIRECT_CASES)
def test_wsgi_direct(path: str, body: bytes, status: str, expected: bytes | None) -> None:
    got_status, headers, got = call_wsgi(middleware, body, path)
    assert got_status == status
    if expected is not None:
        assert got == expected
    if path == "/own":
        assert ("Grip-Hold", "stream") in headers
    if path == "/untouched":
        assert headers == [("X-App", "1")]


def test_wsgi_invalid_content_length_is_400() -> None:
    status, _, body = call_wsgi(middleware, b"", CONTENT_LENGTH="12x")
    assert (status, body) == ("400 Bad Request", b"Invalid Content-Length.\n")


def test_wsgi_no_content_length() -> None:
    # Without Content-Length the body is empty, unless the server says the input is terminated.
    status, _, body = call_wsgi(middleware, None)
    # an empty request: the context is untouched, so the app's own answer goes out
    assert (status, body) == ("200 OK", b"ignored by the middleware")
    terminated = {"wsgi.input_terminated": True, "test.body": OPEN_TEXT}
    status, _, body = call_wsgi(
        middleware, None, **terminated, **{"wsgi.input": _Pieces(OPEN_TEXT)}
    )
    assert (status, body) == ("200 OK", ECHO_BODY)
    big = b"x" * (MAX_BODY_SIZE + 5)
    status, _, body = call_wsgi(
        GripWsgiMiddleware(wsgi_app, clock=clock),
        None,
        **{"wsgi.input_terminated": True, "wsgi.input": io.BytesIO(big)},
    )
    assert status == "413 Request Entity Too Large"


class _Pieces(io.BytesIO):
    """A request input that returns at most 3 bytes per read, as a socket may."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(min(size or 3, 3))


def test_wsgi_short_body_stops_at_end_of_input() -> None:
    app = GripWsgiMiddleware(wsgi_app, clock=clock)
    status, _, body = call_wsgi(app, b"OPEN\r\n", CONTENT_LENGTH="50")
    assert status == "200 OK"
    assert body == b'OPEN\r\nTEXT 27\r\nc:{"type":"subscribe","channel":"room"}\r\n'


def test_wsgi_app_without_start_response_raises() -> None:
    with pytest.raises(LocalProtocolError, match="start_response"):
        call_wsgi(middleware, b"TEXT 2\r\nhi\r\n", "/nostart")
    # ... unless the context answers for it
    _, _, body = call_wsgi(middleware, OPEN_TEXT, "/nostart-used")
    assert body == ECHO_BODY


def test_wsgi_result_is_closed() -> None:
    closed: list[bool] = []

    class Result(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", WOH)])
        return Result([b"OPEN\r\n"])

    status, _, body = call_wsgi(GripWsgiMiddleware(app, clock=clock), OPEN_TEXT)
    assert (status, body, closed) == ("200 OK", b"OPEN\r\n", [True])


def test_wsgi_non_websocket_passes_through_unbuffered() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"a"
        yield b"b"

    environ = {"CONTENT_TYPE": "text/plain", "wsgi.input": io.BytesIO()}
    result = GripWsgiMiddleware(app, clock=clock)(environ, lambda *a: None)
    assert not isinstance(result, list)
    assert list(result) == [b"a", b"b"]
    assert (environ["grip.signed"], environ["grip.claims"], environ["grip.wscontext"]) == (
        False,
        None,
        None,
    )


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=200))
def test_wsgi_fuzz_body_never_raises(body: bytes) -> None:
    status, _, _ = call_wsgi(middleware, body, "/ws")
    assert status in ("200 OK", "400 Bad Request", "403 Forbidden")


def test_wsgi_large_body_completes() -> None:
    message = b"x" * (MAX_BODY_SIZE - 100)
    body = b"TEXT %x\r\n" % len(message) + message + b"\r\n"
    status, _, got = call_wsgi(middleware, body, "/ws")
    assert status == "200 OK"
    assert got.startswith(b"TEXT %x\r\nm:echo xxx" % (len(message) + 7))


# --- keys and issuer --------------------------------------------------------------------------

KEY_CASES = [
    KEY,
    KEY.decode(),
    SigningKey("HS256", KEY),
    VerifyKey("HS256", KEY),
]


@pytest.mark.parametrize("key", KEY_CASES)
def test_key_forms(key: Any) -> None:
    app = GripWsgiMiddleware(wsgi_app, key=key, clock=clock)
    _, _, body = call_wsgi(app, None, "/", HTTP_GRIP_SIG=sig(), CONTENT_TYPE="text/plain")
    assert json.loads(body)["signed"] is True


@pytest.mark.parametrize("key", [b"", ""])
def test_empty_key_raises(key: Any) -> None:
    with pytest.raises(LocalProtocolError, match="empty"):
        GripWsgiMiddleware(wsgi_app, key=key, clock=clock)
    with pytest.raises(LocalProtocolError, match="empty"):
        GripAsgiMiddleware(asgi_app, key=key, clock=clock)


ISS_CASES = [("pushpin", True), ("fastly:svc", False)]


@pytest.mark.parametrize(("iss", "signed"), ISS_CASES)
def test_issuer(iss: str, signed: bool) -> None:
    app = GripWsgiMiddleware(wsgi_app, key=KEY, iss=iss, clock=clock)
    _, _, body = call_wsgi(app, None, "/", HTTP_GRIP_SIG=sig(), CONTENT_TYPE="text/plain")
    assert json.loads(body)["signed"] is signed


def test_clock_is_called_per_request() -> None:
    now = [NOW]
    app = GripWsgiMiddleware(wsgi_app, key=KEY, clock=lambda: now[0])
    token = sig()
    plain = {"HTTP_GRIP_SIG": token, "CONTENT_TYPE": "text/plain"}
    assert json.loads(call_wsgi(app, None, "/", **plain)[2])["signed"] is True
    now[0] = NOW + 3600
    assert json.loads(call_wsgi(app, None, "/", **plain)[2])["signed"] is False


# --- a plain ASGI app -------------------------------------------------------------------------


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        scope["test.passed"] = True
        return
    grip: GripRequest = scope["state"]["grip"]
    scope["test.grip"].append(grip)
    path = scope["path"]
    ctx = grip.wscontext
    if ctx is None:
        body = json.dumps({"signed": grip.signed, "claims": grip.claims}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    first = await receive()
    assert first == {"type": "http.request", "body": scope["test.body"], "more_body": False}
    assert (await receive())["type"] == "http.disconnect"  # the server's own receive
    if path == "/own":
        ctx.accept()
        response = hold_stream("own")
        await send(
            {"type": "http.response.start", "status": 200, "headers": response.header_bytes()}
        )
        await send({"type": "http.response.body", "body": b"own"})
        return
    if path == "/untouched":
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/silent":
        return
    if path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * MAX_BODY_SIZE, "more_body": True})
        await send({"type": "http.response.body", "body": b"y"})
        return
    if ctx.is_opening:
        ctx.accept()
        ctx.subscribe("room")
    for message in ctx.messages:
        ctx.send(f"echo {message!s}")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ignored"})


def call_asgi(
    app: Any,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
    *,
    disconnect_early: bool = False,
    state: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    scope: dict[str, Any] = {
        "type": "http",
        "path": path,
        "headers": headers,
        "test.body": b"".join(chunks),
        "test.grip": [],
    }
    if state is not None:
        scope["state"] = state
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    if disconnect_early:
        incoming = incoming[:1]
        incoming[0]["more_body"] = True
    incoming.append({"type": "http.disconnect"})
    sent: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def inner(s: dict[str, Any], r: Any, se: Any) -> None:
        seen.update(s)
        await app(s, r, se)

    asyncio.run(GripAsgiMiddleware(inner, key=KEY, clock=clock)(scope, receive, send))
    return sent, seen


def response_of(sent: list[dict[str, Any]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    return start["status"], start["headers"], b"".join(m.get("body", b"") for m in bodies)


@pytest.mark.parametrize(("grip_sig", "signed", "iss"), SIG_CASES)
def test_asgi_sig(grip_sig: str | None, signed: bool, iss: str) -> None:
    headers = [] if grip_sig is None else [(b"Grip-Sig", grip_sig.encode())]
    sent, seen = call_asgi(asgi_app, "/plain", headers, [b""])
    _, _, body = response_of(sent)
    assert json.loads(body)["signed"] is signed
    assert (json.loads(body)["claims"] or {}).get("iss") == iss
    assert seen["test.grip"][0].wscontext is None


WOH_HEADER = (b"content-type", WOH.encode())

# (path, body chunks, expected status, expected body or None)
ASGI_CASES = [
    ("/ws", [OPEN_TEXT], 200, ECHO_BODY),
    ("/ws", [b"OPEN\r\nTE", b"XT 2\r\nh", b"i\r\n"], 200, ECHO_BODY),
    ("/own", [OPEN_TEXT], 200, b"own"),
    ("/untouched", [b"TEXT 2\r\nhi\r\n"], 204, b""),
    ("/big", [b"TEXT 2\r\nhi\r\n"], 502, None),
    ("/ws", [b"TEXT 99\r\nhi\r\n"], 400, None),
    ("/ws", [b"x" * MAX_BODY_SIZE, b"x"], 413, b"Request body too large.\n"),
]


@pytest.mark.parametrize(("path", "chunks", "status", "expected"), ASGI_CASES)
def test_asgi_websocket(path: str, chunks: list[bytes], status: int, expected: Any) -> None:
    sent, seen = call_asgi(asgi_app, path, [WOH_HEADER, (b"grip-sig", sig().encode())], chunks)
    got_status, headers, body = response_of(sent)
    assert got_status == status
    if expected is not None:
        assert body == expected
    if path == "/ws" and status == 200:
        assert headers == [
            (b"Content-Type", WOH.encode()),
            (b"Sec-WebSocket-Extensions", b"grip"),
            (b"content-length", str(len(ECHO_BODY)).encode()),
        ]
        assert seen["test.grip"][0].signed is True
    if path == "/untouched":
        assert headers == [(b"x-app", b"1")]


CONTENT_LENGTH_CASES = [
    (str(MAX_BODY_SIZE + 1).encode(), 413),
    (b"ten", 400),
    (b"-1", 400),
]


@pytest.mark.parametrize(("length", "status"), CONTENT_LENGTH_CASES)
def test_asgi_content_length(length: bytes, status: int) -> None:
    sent, seen = call_asgi(asgi_app, "/ws", [WOH_HEADER, (b"content-length", length)], [b""])
    assert response_of(sent)[0] == status
    assert "test.grip" not in seen or not seen["test.grip"]


def test_asgi_client_gone_while_reading_body() -> None:
    sent, seen = call_asgi(asgi_app, "/ws", [WOH_HEADER], [b"OPEN\r\n", b""], disconnect_early=True)
    assert sent == [] and seen == {}


def test_asgi_silent_app_sends_nothing() -> None:
    sent, _ = call_asgi(asgi_app, "/silent", [WOH_HEADER], [b"TEXT 2\r\nhi\r\n"])
    assert sent == []
    sent, seen = call_asgi(asgi_app, "/silent", [WOH_HEADER], [OPEN_TEXT])
    assert sent == []  # an OPEN nobody accepted: the app's (missing) answer stands
    assert seen["test.grip"][0].wscontext.accepted is False


def test_asgi_keeps_existing_state_and_passes_other_scopes() -> None:
    state = {"db": "x"}
    _, seen = call_asgi(asgi_app, "/plain", [], [b""], state=state)
    assert seen["state"]["db"] == "x" and "grip" in seen["state"]
    assert state == {"db": "x"}  # the caller's state is not modified
    scope: dict[str, Any] = {"type": "lifespan"}

    async def nothing() -> dict[str, Any]:
        raise AssertionError

    async def no_send(message: Any) -> None:
        raise AssertionError

    asyncio.run(GripAsgiMiddleware(asgi_app, clock=clock)(scope, nothing, no_send))
    assert scope["test.passed"] is True


# --- end to end: the WSGI app behind `gripcore serve` -----------------------------------------


@pytest.mark.usefixtures("proxy_adapter")
def test_e2e_websocket_over_http_behind_gripcore() -> None:
    recorder = _Recorder(GripWsgiMiddleware(wsgi_app, key=KEY, clock=time.time))
    srv = _Server(recorder)
    try:
        routes = (f"* 127.0.0.1:{srv.port},over_http",)
        with running_proxy(routes=routes, sig_key=KEY.decode()) as proxy:
            ws = WsClient(proxy.port, "/ws")
            ws.accept()
            wait_for(lambda: subscribers(proxy, "room") >= 1)
            item = {"channel": "room", "formats": {"ws-message": {"content": "news"}}}
            assert publish(proxy.publish_port, [item])[0] == 200
            assert ws.receive_message() == "news"
            ws.send_text("hello")
            assert ws.receive_message() == "echo hello"
        assert recorder.seen == [True]  # the proxy's Grip-Sig was checked and valid
    finally:
        srv.stop()
