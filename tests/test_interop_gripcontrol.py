"""Interop with third-party GRIP libraries nobody here wrote (gripcontrol / pubcontrol, PyPI).

An origin written with gripcontrol's response builders and WebSocket-over-HTTP helpers sits
behind `gripcore serve`; gripcontrol's GripPubControl publishes. Real sockets throughout.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import pytest

gripcontrol = pytest.importorskip("gripcontrol")

from gripcontrol import (  # noqa: E402
    GripPubControl,
    HttpResponseFormat,
    HttpStreamFormat,
    WebSocketContext,
    WebSocketEvent,
    WebSocketMessageFormat,
    create_hold_response,
    create_hold_stream,
    decode_websocket_events,
    encode_websocket_events,
    validate_sig,
)
from pubcontrol import Item  # noqa: E402

from .e2e_support import (  # noqa: E402
    Origin,
    OriginRequest,
    ProxyThread,
    RawClient,
    WsClient,
    running_proxy,
    subscribers,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]

KEY = "interop-key-0123456789-0123456789-ab"
INSTRUCT = [("Content-Type", "application/grip-instruct")]


def stream_origin(request: OriginRequest):  # type: ignore[no-untyped-def]
    assert validate_sig(request.headers["grip-sig"], KEY)  # gripcontrol verifies our Grip-Sig
    return 200, INSTRUCT, create_hold_stream("gc-stream", "stream start\n").encode()


def poll_origin(request: OriginRequest):  # type: ignore[no-untyped-def]
    return 200, INSTRUCT, create_hold_response("gc-poll", "empty\n", timeout=30).encode()


def ws_origin(request: OriginRequest):  # type: ignore[no-untyped-def]
    """A WebSocket-over-HTTP origin as gripcontrol's users write it (django-grip's shape)."""
    in_events = decode_websocket_events(request.body)
    ctx = WebSocketContext(request.headers["connection-id"], {}, in_events)
    if ctx.is_opening():
        ctx.accept()
        ctx.subscribe("gc-ws")
    while ctx.can_recv():
        message = ctx.recv()
        if message is None:
            ctx.close(ctx.close_code or 1000)
            break
        ctx.send("echo: " + message)
    events = []
    if ctx.accepted:
        events.append(WebSocketEvent("OPEN"))
    events.extend(ctx.out_events)
    if ctx.closed:
        events.append(WebSocketEvent("CLOSE", struct.pack(">H", ctx.out_close_code)))
    headers = [("Content-Type", "application/websocket-events")]
    if ctx.accepted:
        headers.append(("Sec-WebSocket-Extensions", "grip"))
    return 200, headers, encode_websocket_events(events)


@pytest.fixture(scope="module")
def setup(proxy_adapter: str) -> Iterator[tuple[Origin, ProxyThread, GripPubControl]]:
    origin = Origin(
        routes={"/stream": stream_origin, "/poll": poll_origin, "/ws": ws_origin}
    ).start()
    with running_proxy(
        routes=(f"* 127.0.0.1:{origin.port},over_http",), sig_key=KEY, sig_iss="gripcore"
    ) as proxy:
        pub = GripPubControl({"control_uri": f"http://127.0.0.1:{proxy.publish_port}"})
        yield origin, proxy, pub
        pub.close()
    origin.stop()


def test_gripcontrol_stream_hold_and_publish(
    setup: tuple[Origin, ProxyThread, GripPubControl],
) -> None:
    _origin, proxy, pub = setup
    client = RawClient(proxy.port)
    client.get("/stream")
    head = client.read_until(b"\r\n\r\n")
    assert head == (
        b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert client.read_until(b"start\n\r\n") == b"d\r\nstream start\n\r\n"
    wait_for(lambda: subscribers(proxy, "gc-stream") == 1)
    pub.publish_http_stream("gc-stream", "data: from pubcontrol\n\n", blocking=True)
    assert client.read_until(b"pubcontrol\n\n\r\n") == b"17\r\ndata: from pubcontrol\n\n\r\n"
    pub.publish("gc-stream", Item(HttpStreamFormat(close=True)), blocking=True)
    assert client.read_until(b"0\r\n\r\n") == b"0\r\n\r\n"


def test_gripcontrol_long_poll_and_publish(
    setup: tuple[Origin, ProxyThread, GripPubControl],
) -> None:
    _origin, proxy, pub = setup
    client = RawClient(proxy.port)
    client.get("/poll")
    wait_for(lambda: subscribers(proxy, "gc-poll") == 1)
    pub.publish_http_response(
        "gc-poll",
        HttpResponseFormat(code=200, headers={"X-Lib": "gripcontrol"}, body="news\n"),
        blocking=True,
    )
    head, body = client.read_response()
    assert head == b"HTTP/1.1 200 OK\r\nX-Lib: gripcontrol\r\nContent-Length: 5\r\n\r\n"
    assert body == b"news\n"


def test_gripcontrol_websocket_over_http(
    setup: tuple[Origin, ProxyThread, GripPubControl],
) -> None:
    _origin, proxy, pub = setup
    ws = WsClient(proxy.port, "/ws")
    ws.accept()
    wait_for(lambda: subscribers(proxy, "gc-ws") == 1)
    ws.send_text("hello")
    assert ws.receive_message() == "echo: hello"
    pub.publish("gc-ws", Item(WebSocketMessageFormat("pushed")), blocking=True)
    assert ws.receive_message() == "pushed"
    pub.publish("gc-ws", Item(WebSocketMessageFormat(action="close", code=4001)), blocking=True)
    event = ws.next_event()
    assert type(event).__name__ == "CloseConnection"
    assert event.code == 4001
    deadline = time.monotonic() + 5
    while subscribers(proxy, "gc-ws") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert subscribers(proxy, "gc-ws") == 0


def test_pubcontrol_jwt_auth_against_publish_key() -> None:
    """pubcontrol signs its publishes with an HS256 JWT (control_iss + key): gripcore accepts
    them with --publish-key/--publish-iss and refuses the wrong key."""
    origin = Origin(routes={"/s": stream_origin}).start()
    secret = "pubcontrol-secret-0123456789-abcdef"
    try:
        with running_proxy(
            routes=(f"* 127.0.0.1:{origin.port}",),
            sig_key=KEY,
            publish_key=secret,
            publish_iss="my-app",
        ) as proxy:
            client = RawClient(proxy.port)
            client.get("/s")
            client.read_until(b"start\n\r\n")
            wait_for(lambda: subscribers(proxy, "gc-stream") == 1)
            base = f"http://127.0.0.1:{proxy.publish_port}"
            good = GripPubControl({"control_uri": base, "control_iss": "my-app", "key": secret})
            good.publish_http_stream("gc-stream", "signed\n", blocking=True)
            assert client.read_until(b"signed\n\r\n") == b"7\r\nsigned\n\r\n"
            bad = GripPubControl(
                {
                    "control_uri": base,
                    "control_iss": "my-app",
                    "key": "wrong-key-0123456789-0123456789ab",
                }
            )
            with pytest.raises(ValueError, match="401"):
                bad.publish_http_stream("gc-stream", "forged\n", blocking=True)
            assert client.nothing_for(0.3)
            good.close()
            bad.close()
    finally:
        origin.stop()
