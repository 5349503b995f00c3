"""End-to-end: WebSocket clients through the WebSocket-over-HTTP gateway to a real origin."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from wsproto.events import CloseConnection, Pong

from .e2e_support import (
    Origin,
    OriginRequest,
    ProxyThread,
    RawClient,
    WsClient,
    publish,
    running_proxy,
    subscribers,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]

WOH = "application/websocket-events"


def events(*parts: tuple[bytes, bytes | None]) -> bytes:
    out = b""
    for kind, content in parts:
        out += (
            kind + b"\r\n"
            if content is None
            else b"%s %x\r\n%s\r\n" % (kind, len(content), content)
        )
    return out


def control(obj: dict[str, object]) -> bytes:
    return b"c:" + json.dumps(obj).encode()


class ChatOrigin:
    """A WebSocket-over-HTTP origin: subscribes on OPEN, answers commands sent as text."""

    def __init__(self) -> None:
        self.requests: list[OriginRequest] = []

    def __call__(self, request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        self.requests.append(request)
        body = request.body
        headers = [("Content-Type", WOH)]
        if body.startswith(b"OPEN"):
            out = events(
                (b"OPEN", None), (b"TEXT", control({"type": "subscribe", "channel": "room"}))
            )
            return (
                200,
                [*headers, ("Sec-WebSocket-Extensions", "grip"), ("Set-Meta-User", "ann")],
                out,
            )
        out = b""
        for line in body.split(b"\r\n"):
            if line == b"set-meta":
                out += events(
                    (b"TEXT", control({"type": "set-meta", "name": "user", "value": "ann"}))
                )
            elif line == b"join-skip":
                out += events(
                    (
                        b"TEXT",
                        control({"type": "subscribe", "channel": "skip", "filters": ["skip-self"]}),
                    )
                )
            elif line == b"unprefixed":
                out += events((b"TEXT", b"dropped"))
            elif line == b"detach":
                out += events((b"TEXT", control({"type": "detach"})))
            elif line.startswith(b"say "):
                out += events((b"TEXT", b"m:" + line[4:]))
            elif line == b"bye":
                out += events((b"CLOSE", b"\x0f\xa0server bye"))
        if body.startswith(b"PING"):
            out += events((b"PONG", b"pp"))
        return 200, headers, out


@pytest.fixture(scope="module")
def chat() -> ChatOrigin:
    return ChatOrigin()


@pytest.fixture(scope="module")
def proxy(chat: ChatOrigin, proxy_adapter: str) -> Iterator[ProxyThread]:
    origin = Origin(routes={"/chat": chat}).start()
    with running_proxy(routes=(f"* 127.0.0.1:{origin.port},over_http",)) as p:
        yield p
    origin.stop()


def test_messages_control_and_publish(proxy: ProxyThread, chat: ChatOrigin) -> None:
    ws = WsClient(proxy.port, "/chat")
    ws.accept()
    wait_for(lambda: subscribers(proxy, "room") >= 1)
    ws.send_text("say hello")
    assert ws.receive_message() == "hello"
    ws.send_text("unprefixed")
    ws.send_text("say after")
    assert ws.receive_message() == "after"  # the unprefixed message was dropped
    request = chat.requests[-1]
    assert request.headers["content-type"] == WOH
    assert request.headers["meta-user"] == "ann"  # Set-Meta-User came back as Meta-User
    assert len(request.headers["connection-id"]) == 32
    publish(
        proxy.publish_port, [{"channel": "room", "formats": {"ws-message": {"content": "news"}}}]
    )
    assert ws.receive_message() == "news"
    publish(
        proxy.publish_port,
        [{"channel": "room", "formats": {"ws-message": {"type": "binary", "content-bin": "AAEC"}}}],
    )
    assert ws.receive_message() == b"\x00\x01\x02"
    ws.send_text("bye")
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4000, "server bye")


def test_skip_self_filter_over_websocket(proxy: ProxyThread) -> None:
    me, other = WsClient(proxy.port, "/chat"), WsClient(proxy.port, "/chat")
    for ws in (me, other):
        ws.accept()
        ws.send_text("set-meta\r\njoin-skip")
    wait_for(lambda: subscribers(proxy, "skip") == 2)
    publish(
        proxy.publish_port,
        [
            {
                "channel": "skip",
                "meta": {"sender": "ann"},
                "formats": {"ws-message": {"content": "x"}},
            }
        ],
    )
    publish(
        proxy.publish_port, [{"channel": "skip", "formats": {"ws-message": {"content": "all"}}}]
    )
    assert me.receive_message() == "all"  # both have user=ann: the first item skipped both
    assert other.receive_message() == "all"


def test_ping_goes_to_origin_and_pong_comes_back(proxy: ProxyThread) -> None:
    from wsproto.events import Ping

    ws = WsClient(proxy.port, "/chat")
    ws.accept()
    ws.raw.send(ws.ws.send(Ping(payload=b"pp")))
    event = ws.next_event()
    assert isinstance(event, Pong) and event.payload == b"pp"


def test_published_close_and_origin_told(proxy: ProxyThread, chat: ChatOrigin) -> None:
    ws = WsClient(proxy.port, "/chat")
    ws.accept()
    wait_for(lambda: subscribers(proxy, "room") >= 1)
    before = subscribers(proxy, "room")
    publish(
        proxy.publish_port,
        [
            {
                "channel": "room",
                "formats": {"ws-message": {"action": "close", "code": 4100, "reason": "kicked"}},
            }
        ],
    )
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4100, "kicked")
    wait_for(lambda: subscribers(proxy, "room") <= before - 1)
    wait_for(lambda: any(r.body == b"DISCONNECT\r\n" for r in chat.requests))


def test_broken_frames_close_that_connection_only(proxy: ProxyThread) -> None:
    good = WsClient(proxy.port, "/chat")
    good.accept()
    bad = WsClient(proxy.port, "/chat")
    bad.accept()
    bad.raw.send(b"\x81\x05hello")  # an unmasked client frame: a protocol error
    event = bad.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1002
    good.send_text("say still fine")
    assert good.receive_message() == "still fine"


def test_rejected_handshake_relays_origin_response() -> None:
    origin = Origin(
        routes={"/deny": lambda r: (403, [("Content-Type", "text/plain")], b"members only\n")}
    ).start()
    try:
        with running_proxy(routes=(f"* 127.0.0.1:{origin.port},over_http",)) as p:
            ws = WsClient(p.port, "/deny")
            head = ws.raw.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
            assert ws.raw.read_exactly(13) == b"members only\n"
    finally:
        origin.stop()


def test_client_vanishing_mid_handshake_leaves_nothing(proxy: ProxyThread) -> None:
    raw = RawClient(proxy.port)
    raw.send(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
    raw.close()
    ws = WsClient(proxy.port, "/chat")
    ws.accept()
    ws.send_text("say ok")
    assert ws.receive_message() == "ok"
