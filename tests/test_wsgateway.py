"""The WebSocket-over-HTTP gateway: a whole client/origin exchange as values and bytes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder

from gripcore import LocalProtocolError
from gripcore._hub import FilterFailed, Hub, Subscriber, Transport
from gripcore._items import HttpStreamFormat, Item, WsMessageFormat
from gripcore._wsevents import Binary, Close, Disconnect, Open, Ping, Pong, Text, encode_events
from gripcore._wsgateway import (
    DEFAULT_MAX_PENDING,
    MAX_RETRIES,
    MIN_KEEP_ALIVE_INTERVAL,
    AcceptClient,
    CloseClient,
    GatewayAction,
    GatewayState,
    OriginPost,
    RejectClient,
    WebSocketGateway,
)

from .hypothesis_support import examples

H = list[tuple[bytes, bytes]]
WOH = b"application/websocket-events"
CT = (b"Content-Type", WOH)
GRIP = (b"Sec-WebSocket-Extensions", b"grip")
BAD_GATEWAY = RejectClient(502, b"Bad Gateway", [], b"Error while proxying to origin.\n")
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def request_headers(**meta: str) -> H:
    headers: H = [(b"Connection-Id", b"conn-1"), CT, (b"Accept", WOH)]
    headers += [(b"Meta-" + k.encode(), v.encode()) for k, v in meta.items()]
    return headers


def post(body: bytes, **meta: str) -> OriginPost:
    return OriginPost(body, request_headers(**meta))


def control(**obj: Any) -> Text:
    return Text(b"c:" + json.dumps(obj).encode())


def new_gateway(hub: Hub | None = None, **kw: Any) -> tuple[Hub, Subscriber, WebSocketGateway]:
    hub = hub or Hub()
    sub = Subscriber(Transport.WEBSOCKET)
    gw = WebSocketGateway(hub, sub, connection_id="conn-1", jitter=lambda: 0.25, **kw)
    return hub, sub, gw


def answer(
    gw: WebSocketGateway,
    events: Sequence[Any] = (),
    now: float = 1.0,
    headers: Sequence[tuple[bytes, bytes]] = (),
    status: int = 200,
    body: bytes | None = None,
) -> list[GatewayAction]:
    data = encode_events(events) if body is None else body
    return gw.origin_response(status, b"OK", [CT, *headers], data, now)


def connected(
    *events: Any, headers: Sequence[tuple[bytes, bytes]] = (GRIP,), **kw: Any
) -> tuple[Hub, Subscriber, WebSocketGateway]:
    """A gateway whose handshake was accepted at time 0 (GRIP mode unless told otherwise)."""
    hub, sub, gw = new_gateway(**kw)
    gw.start(0.0)
    actions = answer(gw, [Open(), *events], now=0.0, headers=headers)
    assert isinstance(actions[0], AcceptClient)
    return hub, sub, gw


def frames(sub: Subscriber) -> list[tuple[int, bytes, bool]]:
    """What the client receives, decoded by wsproto: (opcode, payload, final frame)."""
    decoder = FrameDecoder(client=True)
    decoder.receive_bytes(sub.take_output())
    out = []
    while (frame := decoder.process_buffer()) is not None:
        assert isinstance(frame.payload, bytes)  # FrameDecoder leaves payloads undecoded
        out.append((int(frame.opcode), frame.payload, frame.message_finished))
    return out


def close_frame(code: int, reason: bytes = b"") -> tuple[int, bytes, bool]:
    return (CLOSE, code.to_bytes(2, "big") + reason, True)


# --- handshake ---------------------------------------------------------------------------------


def test_gateway_needs_a_websocket_subscriber() -> None:
    with pytest.raises(LocalProtocolError) as info:
        WebSocketGateway(Hub(), Subscriber(Transport.STREAM), connection_id="c")
    assert str(info.value) == "a WebSocketGateway needs a WEBSOCKET subscriber"


def test_start_posts_open_only() -> None:
    _hub, _sub, gw = new_gateway()
    assert gw.state is GatewayState.CONNECTING
    assert gw.start(0.0) == [post(b"OPEN\r\n")]
    assert gw.next_deadline() is None
    with pytest.raises(LocalProtocolError) as info:
        gw.start(0.0)
    assert str(info.value) == "WebSocket gateway already started"


def test_handshake_accepted_with_private_headers_removed() -> None:
    _hub, _sub, gw = new_gateway()
    gw.start(0.0)
    origin_headers = [
        (b"Content-Length", b"6"),
        (b"Keep-Alive-Interval", b"30"),
        (b"Set-Meta-User", b"alice"),
        (b"set-meta-", b"nameless"),
        (b"Sec-WebSocket-Extensions", b'grip; message-prefix=""'),
        (b"Sec-WebSocket-Protocol", b"chat"),
        (b"Set-Cookie", b"a=1"),
        (b"Connection", b"keep-alive"),
        (b"Transfer-Encoding", b"chunked"),
    ]
    actions = answer(gw, [Open()], now=0.5, headers=origin_headers)
    assert actions == [
        AcceptClient([(b"Sec-WebSocket-Protocol", b"chat"), (b"Set-Cookie", b"a=1")])
    ]
    assert gw.state is GatewayState.IDLE and not gw.closed
    assert gw.grip and gw.message_prefix == b""
    assert gw.meta == {"User": "alice"}
    assert gw.next_deadline() == 30.0  # Keep-Alive-Interval counts from the OPEN request


# (id, Sec-WebSocket-Extensions values, GRIP mode, message prefix)
EXTENSION_VECTORS: list[tuple[str, list[bytes], bool, bytes]] = [
    ("absent", [], False, b"m:"),
    ("grip", [b"grip"], True, b"m:"),
    ("empty prefix", [b'grip; message-prefix=""'], True, b""),
    ("among others", [b"permessage-deflate, grip; message-prefix=out"], True, b"out"),
    ("second header line", [b"foo", b"GRIP"], True, b"m:"),
    ("not grip", [b"gripx; message-prefix=a"], False, b"m:"),
    ("unparsable is not grip", [b'grip; message-prefix="open'], False, b"m:"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "grip", "prefix"),
    [v[1:] for v in EXTENSION_VECTORS],
    ids=[v[0] for v in EXTENSION_VECTORS],
)
def test_grip_extension_detection(values: list[bytes], grip: bool, prefix: bytes) -> None:
    _hub, _sub, gw = new_gateway()
    gw.start(0.0)
    headers = [(b"Sec-WebSocket-Extensions", v) for v in values]
    assert answer(gw, [Open()], headers=headers) == [AcceptClient([])]
    assert (gw.grip, gw.message_prefix) == (grip, prefix)


def test_handshake_content_type_with_parameters_is_accepted() -> None:
    _hub, _sub, gw = new_gateway()
    gw.start(0.0)
    actions = gw.origin_response(
        200, b"OK", [(b"content-type", WOH + b"; charset=utf-8")], b"OPEN\r\n", 1.0
    )
    assert actions == [AcceptClient([])]


# (id, status, headers, body, expected rejection)
REJECT_VECTORS: list[tuple[str, int, H, bytes, RejectClient]] = [
    ("origin refuses: relayed", 403,
     [(b"Content-Type", b"text/html"), (b"Content-Length", b"5"), (b"X-Why", b"no"), (b"Connection", b"close")],
     b"nope!", RejectClient(403, b"Forbidden", [(b"Content-Type", b"text/html"), (b"X-Why", b"no")], b"nope!")),
    ("body capped at 100,000", 500, [], b"x" * 100_001,
     RejectClient(500, b"Internal Server Error", [], b"x" * 100_000)),
    ("200 with another content type", 200, [(b"Content-Type", b"text/plain")], b"OPEN\r\n", BAD_GATEWAY),
    ("200 without OPEN first", 200, [CT], b"TEXT 2\r\nhi\r\nOPEN\r\n", BAD_GATEWAY),
    ("200 with an empty body", 200, [CT], b"", BAD_GATEWAY),
    ("200 with a bad body", 200, [CT], b"OPEN 5\r\nab", BAD_GATEWAY),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [v[1:] for v in REJECT_VECTORS],
    ids=[v[0] for v in REJECT_VECTORS],
)
def test_handshake_rejected(status: int, headers: H, body: bytes, expected: RejectClient) -> None:
    hub, _sub, gw = new_gateway(implicit_channels=("all",))
    gw.start(0.0)
    reason = {403: b"Forbidden", 500: b"Internal Server Error"}.get(status, b"OK")
    assert gw.origin_response(status, reason, headers, body, 1.0) == [expected]
    assert gw.closed
    assert not hub.has_subscribers("all")
    assert gw.next_deadline() is None
    assert gw.handle_timer(100.0) == []
    assert gw.origin_response(200, b"OK", [CT], b"OPEN\r\n", 2.0) == []


def test_handshake_request_failure_is_502() -> None:
    _hub, _sub, gw = new_gateway()
    gw.start(0.0)
    assert gw.origin_failed("connection refused", 1.0) == [BAD_GATEWAY]
    assert gw.closed
    assert gw.origin_failed("again", 2.0) == []


def test_handshake_answer_events_after_open_are_applied() -> None:
    _hub, sub, gw = new_gateway(channel_prefix="p:", implicit_channels=("all",))
    gw.start(0.0)
    events = [Open(), Text(b"m:welcome"), control(type="subscribe", channel="room")]
    assert answer(gw, events, headers=[GRIP]) == [AcceptClient([])]
    assert frames(sub) == [(TEXT, b"welcome", True)]
    assert set(sub.channels) == {"p:all", "p:room"}
    assert sub.channel_prefix == "p:"


def test_detach_in_the_handshake_answer() -> None:
    _hub, _sub, gw = connected(control(type="detach"))
    assert gw.state is GatewayState.DETACHED
    assert gw.client_message(b"ignored", True, 2.0) == []
    assert gw.client_ping(b"", 2.0) == []


# --- control messages ----------------------------------------------------------------------------


def test_subscribe_and_unsubscribe() -> None:
    hub, sub, gw = connected(channel_prefix="p:", implicit_channels=("all",))
    gw.client_message(b"hi", True, 1.0)
    events = [
        control(type="subscribe", channel="room", filters=["skip-self"]),
        control(type="subscribe", channel="other"),
        control(type="unsubscribe", channel="other"),
        control(type="unsubscribe", channel="all"),  # implicit: stays
        control(type="unsubscribe", channel="never"),
    ]
    assert answer(gw, events, now=2.0) == []
    assert set(sub.channels) == {"p:all", "p:room"}
    assert sub.channels["p:room"].filters == ("skip-self",)
    assert hub.subscribers("p:room") == [sub]


@pytest.mark.parametrize(
    ("debug", "reason"), [(False, b""), (True, b"too many filters for channel 'room'")]
)
def test_too_many_filters_closes_with_1011(debug: bool, reason: bytes) -> None:
    hub, sub, gw = connected(debug=debug)
    gw.client_message(b"hi", True, 1.0)
    filters = ["skip-self", "skip-users", "require-sub", "build-id", "var-subst", "skip-self"]
    msg = control(type="subscribe", channel="room", filters=filters)
    assert answer(gw, [msg, Text(b"m:after")], now=2.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1011, reason)]
    assert gw.closed and not hub.has_subscribers("room")


def test_set_meta() -> None:
    _hub, sub, _gw = connected(
        control(type="set-meta", name="user", value="alice"),
        control(type="set-meta", name="gone", value="x"),
        control(type="set-meta", name="gone"),
    )
    assert sub.meta == {"user": "alice"}


def test_idle_keep_alive_frames() -> None:
    _hub, sub, gw = connected(control(type="keep-alive", content="ka", timeout=10))
    assert gw.next_deadline() == 10.0
    gw.wrote(5.0)
    assert gw.next_deadline() == 15.0
    assert gw.handle_timer(14.0) == []
    assert sub.outbuf == bytearray()
    assert gw.handle_timer(15.0) == []
    assert frames(sub) == [(TEXT, b"ka", True)]
    assert gw.next_deadline() == 25.0


def test_interval_keep_alive_frames() -> None:
    ka = control(
        type="keep-alive",
        **{"content-bin": "AAE=", "message-type": "binary", "mode": "interval", "timeout": 10},
    )
    _hub, sub, gw = connected(ka)
    gw.wrote(5.0)
    assert gw.next_deadline() == 10.0
    gw.handle_timer(10.0)
    gw.handle_timer(20.0)
    assert frames(sub) == [(BINARY, b"\x00\x01", True)] * 2


def test_keep_alive_without_content_disables() -> None:
    _hub, _sub, gw = connected(
        control(type="keep-alive", content="ka", timeout=10), control(type="keep-alive")
    )
    assert gw.next_deadline() is None
    gw.wrote(1.0)
    assert gw.next_deadline() is None


def test_send_delayed_and_flush_delayed() -> None:
    _hub, sub, gw = connected(control(type="send-delayed", content="later", timeout=3))
    assert gw.next_deadline() == 3.0
    assert gw.handle_timer(2.9) == [] and sub.outbuf == bytearray()
    gw.handle_timer(3.0)
    assert frames(sub) == [(TEXT, b"later", True)]
    assert gw.next_deadline() is None
    gw.client_message(b"x", True, 4.0)
    answer(gw, [
        control(type="send-delayed", content="one", timeout=5),
        control(type="send-delayed", content="two", **{"message-type": "ping"}),  # flushes "one"
    ], now=5.0)  # fmt: skip
    assert frames(sub) == [(TEXT, b"one", True)]
    assert gw.next_deadline() == 6.0
    gw.client_message(b"y", True, 5.5)
    answer(gw, [control(type="flush-delayed"), control(type="flush-delayed")], now=5.5)
    assert frames(sub) == [(PING, b"two", True)]
    assert gw.next_deadline() is None


def test_message_prefix_rule() -> None:
    _hub, sub, gw = connected(
        Text(b"m:hello"),
        Binary(b"m:\x00\xff"),
        Text(b"unprefixed"),
        Binary(b"c:binary is not control"),
        Text(b"c:{not json"),
        control(type="session", id="s1"),
        control(type="no-such-type"),
        Text(b"m:"),
        Ping(b"p"),
        Pong(b""),
    )
    assert frames(sub) == [
        (TEXT, b"hello", True),
        (BINARY, b"\x00\xff", True),
        (TEXT, b"", True),
        (PING, b"p", True),
        (PONG, b"", True),
    ]
    assert gw.state is GatewayState.IDLE


def test_custom_and_empty_message_prefix() -> None:
    _hub, sub, gw = connected(
        Text(b"out:a"),
        Text(b"m:b"),
        headers=[(b"Sec-WebSocket-Extensions", b"grip; message-prefix=out:")],
    )
    assert frames(sub) == [(TEXT, b"a", True)]
    assert gw.message_prefix == b"out:"
    _hub, sub, _gw = connected(
        Text(b"m:b"),
        Text(b"x"),
        headers=[(b"Sec-WebSocket-Extensions", b'grip; message-prefix=""')],
    )
    assert frames(sub) == [(TEXT, b"m:b", True), (TEXT, b"x", True)]


def test_non_grip_passthrough() -> None:
    _hub, sub, _gw = connected(
        Text(b'c:{"type": "subscribe", "channel": "x"}'),
        Binary(b"raw"),
        Text(b"m:kept"),
        headers=[],
    )
    assert frames(sub) == [
        (TEXT, b'c:{"type": "subscribe", "channel": "x"}', True),
        (BINARY, b"raw", True),
        (TEXT, b"m:kept", True),
    ]
    assert sub.channels == {}


# --- client messages and requests ------------------------------------------------------------


def test_one_request_at_a_time_and_batching() -> None:
    _hub, _sub, gw = connected()
    assert gw.client_message(b"a", True, 1.0) == [post(b"TEXT 1\r\na\r\n")]
    assert gw.state is GatewayState.REQUESTING
    assert gw.client_message(b"bc", False, 1.1) == []
    assert gw.client_ping(b"", 1.2) == []
    assert gw.client_pong(b"pp", 1.3) == []
    assert gw.client_message(b"\xc3\xa9", True, 1.4) == []
    assert answer(gw, now=2.0) == [
        post(b"BINARY 2\r\nbc\r\nPING\r\nPONG 2\r\npp\r\nTEXT 2\r\n\xc3\xa9\r\n")
    ]
    assert answer(gw, now=3.0) == []
    assert gw.state is GatewayState.IDLE  # type: ignore[comparison-overlap]


def test_one_event_per_request() -> None:
    _hub, _sub, gw = connected(one_event=True)
    assert gw.client_message(b"a", True, 1.0) == [post(b"TEXT 1\r\na\r\n")]
    gw.client_message(b"b", True, 1.0)
    gw.client_message(b"c", True, 1.0)
    assert answer(gw, now=2.0) == [post(b"TEXT 1\r\nb\r\n")]
    assert answer(gw, now=3.0) == [post(b"TEXT 1\r\nc\r\n")]
    assert answer(gw, now=4.0) == []


def test_keep_alive_interval_requests_when_idle() -> None:
    _hub, sub, gw = connected(headers=[GRIP, (b"Keep-Alive-Interval", b"5")])
    assert MIN_KEEP_ALIVE_INTERVAL == 20
    assert gw.next_deadline() == 20.0  # raised to the minimum, counted from the OPEN request
    assert gw.handle_timer(19.0) == []
    assert gw.handle_timer(20.0) == [post(b"")]
    assert gw.next_deadline() is None  # the request is in flight
    assert answer(gw, [Text(b"m:polled")], now=21.0) == []
    assert frames(sub) == [(TEXT, b"polled", True)]
    assert gw.next_deadline() == 40.0
    gw.client_message(b"x", True, 25.0)
    answer(gw, now=26.0)
    assert gw.next_deadline() == 45.0


@pytest.mark.parametrize("value", [b"0", b"-5", b"abc", b"", b"9" * 11, b"2147483648", b"9" * 5000])
def test_invalid_keep_alive_interval_disables(value: bytes) -> None:
    _hub, _sub, gw = connected(headers=[GRIP, (b"Keep-Alive-Interval", b"30")])
    gw.client_message(b"x", True, 1.0)
    answer(gw, now=2.0, headers=[(b"Keep-Alive-Interval", value)])
    assert gw.next_deadline() is None
    assert gw.handle_timer(1e6) == []


def test_large_keep_alive_interval() -> None:
    _hub, _sub, gw = connected(headers=[GRIP, (b"Keep-Alive-Interval", b" 2147483647 ")])
    assert gw.next_deadline() == 2147483647.0


def test_set_meta_headers_become_meta_headers() -> None:
    _hub, _sub, gw = connected(
        headers=[GRIP, (b"Set-Meta-User", b"alice"), (b"Set-Meta-Room", b"1")]
    )
    assert gw.client_message(b"a", True, 1.0) == [post(b"TEXT 1\r\na\r\n", User="alice", Room="1")]
    answer(gw, now=2.0, headers=[(b"set-meta-User", b""), (b"Set-Meta-Room", b"2")])
    assert gw.client_message(b"b", True, 3.0) == [post(b"TEXT 1\r\nb\r\n", Room="2")]


def test_client_close_answered_with_close() -> None:
    hub, sub, gw = connected(implicit_channels=("all",))
    assert gw.client_close(4001, "done", 1.0) == [post(b"CLOSE 6\r\n\x0f\xa1done\r\n")]
    assert answer(gw, [Close(4002, "ok")], now=2.0) == [CloseClient()]
    assert frames(sub) == [close_frame(4002, b"ok")]
    assert gw.closed and not hub.has_subscribers("all")
    assert gw.client_close(1000, "", 3.0) == []


def test_client_close_without_close_answer_closes_anyway() -> None:
    _hub, sub, gw = connected()
    assert gw.client_close(None, "ignored", 1.0) == [post(b"CLOSE\r\n")]
    assert answer(gw, [Text(b"m:last words")], now=2.0) == [CloseClient()]
    assert frames(sub) == [(TEXT, b"last words", True), close_frame(1000)]


def test_client_close_answered_with_detach_still_closes() -> None:
    _hub, sub, gw = connected()
    gw.client_close(1000, "", 1.0)
    assert answer(gw, [control(type="detach")], now=2.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1000)]


def test_client_close_while_a_request_is_in_flight() -> None:
    _hub, sub, gw = connected()
    gw.client_message(b"a", True, 1.0)
    assert gw.client_close(1001, "", 1.5) == []
    assert answer(gw, now=2.0) == [post(b"CLOSE 2\r\n\x03\xe9\r\n")]
    assert answer(gw, now=3.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1001)]


def test_client_close_while_detached_closes_at_once() -> None:
    _hub, sub, gw = connected(control(type="detach"))
    assert gw.client_close(None, "", 1.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1000)]


def test_client_close_before_the_handshake_is_refused() -> None:
    _hub, _sub, gw = new_gateway()
    gw.start(0.0)
    with pytest.raises(LocalProtocolError) as info:
        gw.client_close(1000, "", 0.5)
    assert str(info.value) == "WebSocket gateway: 'close' while connecting"
    assert gw.client_message(b"early", True, 0.5) == []


def test_origin_close_reason_is_cut_between_characters() -> None:
    _hub, sub, _gw = connected(Close(3000, "\u00e9" * 100))
    assert frames(sub) == [close_frame(3000, "\u00e9".encode() * 61)]


def test_origin_close_without_code_is_1000() -> None:
    _hub, sub, _gw = connected(Close())
    assert frames(sub) == [close_frame(1000)]


@pytest.mark.parametrize("event", [Disconnect(), Open()], ids=["DISCONNECT", "OPEN again"])
def test_origin_disconnect_drops_the_client_without_close_frame(event: Any) -> None:
    hub, sub, gw = connected(implicit_channels=("all",))
    gw.client_message(b"a", True, 1.0)
    assert answer(gw, [Text(b"m:x"), event, Text(b"m:never")], now=2.0) == [CloseClient()]
    assert frames(sub) == [(TEXT, b"x", True)]
    assert gw.closed and not hub.has_subscribers("all")


def test_client_gone_sends_disconnect_fire_and_forget() -> None:
    hub, sub, gw = connected(implicit_channels=("all",))
    gw.client_message(b"a", True, 1.0)
    assert gw.client_gone(1.5) == [
        OriginPost(b"DISCONNECT\r\n", request_headers(), expect_answer=False)
    ]
    assert gw.closed and not hub.has_subscribers("all")
    assert answer(gw, [Text(b"m:late")], now=2.0) == []
    assert sub.outbuf == bytearray()
    assert gw.client_gone(3.0) == []


@pytest.mark.parametrize("setup", ["connecting", "detached"])
def test_client_gone_without_a_live_origin_session(setup: str) -> None:
    if setup == "connecting":
        _hub, _sub, gw = new_gateway()
        gw.start(0.0)
    else:
        _hub, _sub, gw = connected(control(type="detach"))
    assert gw.client_gone(1.0) == []
    assert gw.closed


def test_retries_with_backoff_then_1011() -> None:
    _hub, sub, gw = connected()
    assert MAX_RETRIES == 5
    request = gw.client_message(b"a", True, 10.0)
    now = 10.0
    for attempt in range(MAX_RETRIES):
        assert gw.origin_failed("timeout", now) == []
        deadline = now + 2**attempt + 0.25
        assert gw.next_deadline() == deadline
        assert gw.client_message(b"b", True, now) == []  # queued behind the retry
        assert gw.handle_timer(deadline - 0.01) == []
        assert gw.handle_timer(deadline) == request
        now = deadline
    assert gw.origin_failed("timeout", now) == [CloseClient()]
    assert frames(sub) == [close_frame(1011, b"origin unavailable")]


def test_a_success_resets_the_retry_count() -> None:
    _hub, _sub, gw = connected()
    gw.client_message(b"a", True, 0.0)
    for _ in range(MAX_RETRIES):
        gw.origin_failed("x", 0.0)
        gw.handle_timer(100.0)
    assert answer(gw, now=100.0) == []
    gw.client_message(b"b", True, 100.0)
    assert gw.origin_failed("x", 100.0) == []  # retried again, not closed
    assert gw.next_deadline() == 101.25


@pytest.mark.parametrize(
    ("status", "headers", "body", "reason"),
    [
        (500, [CT], b"", b"origin request failed"),
        (200, [(b"Content-Type", b"text/plain")], b"", b"origin request failed"),
        (200, [CT], b"TEXT 99\r\nshort", b"invalid origin response"),
    ],
)
def test_bad_answers_after_the_handshake_close_with_1011(
    status: int, headers: H, body: bytes, reason: bytes
) -> None:
    _hub, sub, gw = connected()
    gw.client_message(b"a", True, 1.0)
    assert gw.origin_response(status, b"X", headers, body, 2.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1011, reason)]


def test_answers_and_failures_without_a_request_are_ignored() -> None:
    _hub, sub, gw = connected(control(type="detach"))
    assert answer(gw, [Text(b"m:x")], now=2.0) == []
    assert gw.origin_failed("x", 2.0) == []
    assert sub.outbuf == bytearray()


# --- hub events ---------------------------------------------------------------------------------


def publish_ws(hub: Hub, channel: str, **fmt: Any) -> None:
    hub.publish(Item(channel=channel, ws_message=WsMessageFormat(**fmt)))


def test_published_messages_reach_the_client() -> None:
    hub, sub, _gw = connected(control(type="subscribe", channel="room"))
    publish_ws(hub, "room", content=b"news")
    publish_ws(hub, "room", type="binary", content=b"\x01")
    assert frames(sub) == [(TEXT, b"news", True), (BINARY, b"\x01", True)]


@pytest.mark.parametrize(
    ("fmt", "frame"),
    [
        ({"code": 4000, "reason": "bye"}, b"\x88\x05\x0f\xa0bye"),
        ({"code": 1000}, b"\x88\x02\x03\xe8"),
        ({}, b"\x88\x00"),
    ],
)
def test_published_close(fmt: dict[str, Any], frame: bytes) -> None:
    hub, sub, gw = connected(
        control(type="subscribe", channel="room"), headers=[GRIP, (b"Set-Meta-A", b"1")]
    )
    publish_ws(hub, "room", action="close", **fmt)
    assert gw.handle_events(sub.take_events(), 2.0) == [
        CloseClient(),
        OriginPost(b"DISCONNECT\r\n", request_headers(A="1"), expect_answer=False),
    ]
    assert sub.take_output() == frame
    assert gw.closed
    assert gw.handle_events([FilterFailed("room", "x")], 3.0) == []


def test_published_close_while_detached_does_not_tell_the_origin() -> None:
    hub, sub, gw = connected(control(type="subscribe", channel="room"), control(type="detach"))
    publish_ws(hub, "room", action="close")
    assert gw.handle_events(sub.take_events(), 2.0) == [CloseClient()]


def test_refresh_requests_now_or_after_the_request_in_flight() -> None:
    hub, sub, gw = connected(control(type="subscribe", channel="room"))
    publish_ws(hub, "room", action="refresh")
    assert gw.handle_events(sub.take_events(), 2.0) == [post(b"")]
    publish_ws(hub, "room", action="refresh")
    assert gw.handle_events(sub.take_events(), 2.5) == []
    assert answer(gw, now=3.0) == [post(b"")]
    assert answer(gw, now=4.0) == []


def test_overflow_drops_the_stalled_client() -> None:
    hub, sub, gw = connected(
        control(type="subscribe", channel="room"), hub=Hub(max_output_buffer=10)
    )
    publish_ws(hub, "room", content=b"x" * 20)
    # a client that stopped reading would never take a close frame: the connection is dropped
    assert gw.handle_events(sub.take_events(), 2.0) == [CloseClient(abort=True)]
    assert frames(sub) == []
    assert gw.closed


@pytest.mark.parametrize("debug", [False, True])
def test_filter_failure_closes_only_in_debug_mode(debug: bool) -> None:
    sub_msg = control(type="subscribe", channel="room", filters=["var-subst"])
    hub, sub, gw = connected(sub_msg, debug=debug)
    publish_ws(hub, "room", content=b"%(missing)s")
    events = sub.take_events()
    [event] = events
    assert isinstance(event, FilterFailed)
    if debug:
        assert gw.handle_events(events, 2.0) == [CloseClient()]
        assert frames(sub) == [close_frame(1011, event.message.encode())]
    else:
        assert gw.handle_events(events, 2.0) == []
        assert not gw.closed


def test_other_formats_and_hints_do_nothing() -> None:
    hub, sub, _gw = connected(control(type="subscribe", channel="room"))
    hub.publish(Item(channel="room", http_stream=HttpStreamFormat(content=b"x")))
    publish_ws(hub, "room", action="hint")
    assert not sub.pending


# --- framing and limits --------------------------------------------------------------------------


def test_large_messages_are_split_into_16k_frames() -> None:
    payload = bytes(range(256)) * 160  # 40,960 bytes
    _hub, sub, _gw = connected(Binary(b"m:" + payload), Text(b"m:" + b"t" * 16_384))
    got = frames(sub)
    assert [(op, len(data), fin) for op, data, fin in got] == [
        (BINARY, 16_384, False),
        (CONT, 16_384, False),
        (CONT, 8_192, True),
        (TEXT, 16_384, True),
    ]
    assert b"".join(data for _, data, _ in got[:3]) == payload


def test_one_megabyte_message_from_the_origin() -> None:
    payload = b"z" * 999_998  # the event (with "m:") at the 1,000,000-byte limit
    _hub, sub, _gw = connected(Text(b"m:" + payload))
    got = frames(sub)
    assert len(got) == 62 and got[-1][2] and not got[0][2]
    assert b"".join(data for _, data, _ in got) == payload


def test_max_pending_exceeded_closes_with_1009() -> None:
    _hub, sub, gw = connected(max_pending=10)
    assert DEFAULT_MAX_PENDING == 200_000
    gw.client_message(b"123456", True, 1.0)  # in flight: no longer pending
    assert gw.client_message(b"123456", True, 1.1) == []
    assert gw.client_message(b"12345", True, 1.2) == [CloseClient()]
    assert frames(sub) == [close_frame(1009, b"too much data pending for the origin")]


def test_one_message_over_max_pending_closes() -> None:
    _hub, sub, gw = connected(max_pending=10)
    assert gw.client_message(b"x" * 11, False, 1.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1009, b"too much data pending for the origin")]


def test_shutdown() -> None:
    hub, sub, gw = connected(implicit_channels=("all",))
    assert gw.shutdown() == [CloseClient()]
    assert frames(sub) == [close_frame(1001, b"server shutting down")]
    assert gw.closed and not hub.has_subscribers("all")
    assert gw.shutdown() == []
    assert gw.handle_timer(100.0) == []
    assert gw.next_deadline() is None


def test_shutdown_before_the_handshake_completed() -> None:
    _hub, sub, gw = new_gateway()
    gw.start(0.0)
    assert gw.shutdown() == [
        RejectClient(503, b"Service Unavailable", [], b"Server shutting down.\n")
    ]
    assert gw.closed and sub.outbuf == bytearray()


def test_wrote_without_keep_alive_changes_nothing() -> None:
    _hub, _sub, gw = connected()
    gw.wrote(5.0)
    assert gw.next_deadline() is None


# --- properties ------------------------------------------------------------------------------------

origin_events = st.lists(
    st.sampled_from(
        [Text(b"m:hi"), Text(b"nope"), Binary(b"m:\x00"), Ping(b""), Pong(b"x"), Close(1000, ""),
         Disconnect(), control(type="subscribe", channel="c"), control(type="detach"),
         control(type="keep-alive", content="k", timeout=3), control(type="send-delayed", content="d"),
         control(type="unsubscribe", channel="c")]
    ),
    max_size=4,
)  # fmt: skip
steps = st.lists(
    st.tuples(
        st.sampled_from(["message", "ping", "close", "answer", "fail", "timer", "publish", "refresh", "gone"]),
        origin_events,
    ),
    max_size=14,
)  # fmt: skip


@settings(max_examples=examples(80))
@given(steps)
# found by hypothesis: two detach messages in one answer raised (a second detach changes nothing)
@example([("message", []), ("answer", [control(type="detach"), control(type="detach")])])
def test_gateway_sweep(inputs: list[tuple[str, list[Any]]]) -> None:
    hub, sub, gw = connected(headers=[GRIP, (b"Keep-Alive-Interval", b"20")])
    now = 0.0
    in_flight = 0
    for step, events in inputs:
        now += 7.0
        was_requesting = gw.state is GatewayState.REQUESTING
        if step == "message":
            actions = gw.client_message(b"m", True, now)
        elif step == "ping":
            actions = gw.client_ping(b"", now)
        elif step == "close":
            actions = gw.client_close(1000, "", now)
        elif step == "answer":
            actions = answer(gw, events, now=now) if was_requesting else []
        elif step == "fail":
            actions = gw.origin_failed("x", now)
        elif step == "timer":
            actions = gw.handle_timer(now)
        elif step == "publish":
            publish_ws(hub, "c", action="close")
            actions = gw.handle_events(sub.take_events(), now)
        elif step == "refresh":
            publish_ws(hub, "c", action="refresh")
            actions = gw.handle_events(sub.take_events(), now)
        else:
            actions = gw.client_gone(now)
        if step == "answer" and was_requesting:
            in_flight -= 1
        in_flight += sum(1 for a in actions if isinstance(a, OriginPost) and a.expect_answer)
        if step == "timer" and was_requesting:
            in_flight = 1  # a retry re-sends the request that failed
        assert in_flight <= 1
        assert (gw.state is GatewayState.REQUESTING) == (in_flight == 1) or gw.state in (
            GatewayState.CLOSED,
            GatewayState.DETACHED,
        )
        frames(sub)  # whatever was written is valid WebSocket framing
        if gw.closed:
            assert gw.next_deadline() is None
            assert sub.channels == {}
            break


@given(st.binary(max_size=80))
def test_arbitrary_origin_bodies_never_raise(body: bytes) -> None:
    _hub, sub, gw = connected()
    gw.client_message(b"a", True, 1.0)
    actions = gw.origin_response(200, b"OK", [CT], body, 2.0)
    assert all(isinstance(a, OriginPost | CloseClient) for a in actions)
    frames(sub)


@pytest.mark.parametrize(
    ("code", "payload"),
    [
        (0, b""),  # gripcontrol's close() without a code sends 0
        (1005, b""),  # reserved: may not be sent
        (1006, b""),
        (999, b""),
        (5000, b""),
        (1000, b"\x03\xe8"),
        (4999, b"\x13\x87"),
    ],
)
def test_origin_close_codes_that_may_not_be_sent_become_a_bare_close(
    code: int, payload: bytes
) -> None:
    _, sub, gw = connected()
    gw.client_message(b"x", True, 1.0)
    actions = answer(gw, [Close(code)], now=2.0)
    assert actions == [CloseClient()]
    assert frames(sub) == [(CLOSE, payload, True)]
