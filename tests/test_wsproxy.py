"""A client WebSocket proxied to a native WebSocket origin: the whole session as values."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder

from gripcore import LocalProtocolError
from gripcore._hub import (
    BufferOverflow,
    CloseRequested,
    FilterFailed,
    Hub,
    RefreshRequested,
    Subscriber,
    Transport,
)
from gripcore._items import Item, WsMessageFormat
from gripcore._wsgrip import MAX_FRAME, WebSocketAction, close_payload, encode_frames
from gripcore._wsproxy import (
    MAX_REJECT_BODY,
    AcceptClient,
    CloseClient,
    CloseOrigin,
    ConnectOrigin,
    ProxyState,
    RejectClient,
    SendToOrigin,
    WebSocketProxy,
)

from .hypothesis_support import examples

H = list[tuple[bytes, bytes]]
GRIP = (b"Sec-WebSocket-Extensions", b"grip")
TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
CONNECTING, OPEN, CLOSING, DETACHED, CLOSED = (
    ProxyState.CONNECTING,
    ProxyState.OPEN,
    ProxyState.CLOSING,
    ProxyState.DETACHED,
    ProxyState.CLOSED,
)
BAD_GATEWAY = RejectClient(502, b"Bad Gateway", [], b"Error while proxying to origin.\n")
SHUTTING_DOWN = RejectClient(503, b"Service Unavailable", [], b"Server shutting down.\n")


def control(**obj: Any) -> bytes:
    return b"c:" + json.dumps(obj).encode()


def new_proxy(hub: Hub | None = None, **kw: Any) -> tuple[Hub, Subscriber, WebSocketProxy]:
    hub = hub or Hub()
    sub = Subscriber(Transport.WEBSOCKET)
    return hub, sub, WebSocketProxy(hub, sub, **kw)


def opened(
    *messages: bytes, headers: Sequence[tuple[bytes, bytes]] = (GRIP,), **kw: Any
) -> tuple[Hub, Subscriber, WebSocketProxy]:
    """A proxy whose origin accepted at time 0 (GRIP mode unless told otherwise), then sent
    `messages` as text at time 0."""
    hub, sub, proxy = new_proxy(**kw)
    assert proxy.start(0.0) == [ConnectOrigin()]
    [accept] = proxy.origin_accepted(headers, 0.0)
    assert isinstance(accept, AcceptClient)
    for message in messages:
        proxy.origin_message(message, True, 0.0)
    return hub, sub, proxy


def in_state(state: ProxyState, **kw: Any) -> tuple[Hub, Subscriber, WebSocketProxy]:
    """A proxy with implicit channel `all`, brought into `state`, output drained."""
    hub, sub, proxy = new_proxy(implicit_channels=("all",), **kw)
    proxy.start(0.0)
    if state is not CONNECTING:
        proxy.origin_accepted([GRIP], 0.0)
    if state is CLOSING:
        proxy.client_close(4000, "bye", 0.5)
    elif state is DETACHED:
        proxy.origin_message(control(type="detach"), True, 0.5)
    elif state is CLOSED:
        proxy.origin_close(1000, "")
    sub.take_output()
    assert proxy.state is state
    return hub, sub, proxy


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


def publish_ws(hub: Hub, channel: str, **fmt: Any) -> None:
    hub.publish(Item(channel=channel, ws_message=WsMessageFormat(**fmt)))


# --- handshake ---------------------------------------------------------------------------------


def test_proxy_needs_a_websocket_subscriber() -> None:
    with pytest.raises(LocalProtocolError) as info:
        WebSocketProxy(Hub(), Subscriber(Transport.STREAM))
    assert str(info.value) == "a WebSocketProxy needs a WEBSOCKET subscriber"


def test_start_connects_once() -> None:
    _hub, sub, proxy = new_proxy()
    assert proxy.state is CONNECTING and not proxy.closed
    assert proxy.start(0.0) == [ConnectOrigin()]
    assert proxy.next_deadline() is None
    with pytest.raises(LocalProtocolError) as info:
        proxy.start(1.0)
    assert str(info.value) == "WebSocket proxy already started"
    assert proxy.state is CONNECTING and sub.outbuf == bytearray()


# (header name, relayed to the client)
HANDSHAKE_HEADER_VECTORS: list[tuple[bytes, bool]] = [
    (b"Sec-WebSocket-Accept", False),
    (b"Sec-WebSocket-Extensions", False),
    (b"sec-websocket-extensions", False),
    (b"Connection", False),
    (b"UPGRADE", False),
    (b"Content-Length", False),
    (b"Transfer-Encoding", False),
    (b"Keep-Alive", False),
    (b"Sec-WebSocket-Protocol", True),
    (b"Set-Cookie", True),
    (b"X-Custom", True),
]


@pytest.mark.parametrize(("name", "kept"), HANDSHAKE_HEADER_VECTORS)
def test_handshake_header_relayed_or_removed(name: bytes, kept: bool) -> None:
    _hub, _sub, proxy = new_proxy()
    proxy.start(0.0)
    expected = [(name, b"v")] if kept else []
    assert proxy.origin_accepted([(name, b"v")], 0.0) == [AcceptClient(expected)]


def test_handshake_accepted_keeps_order_of_relayed_headers() -> None:
    _hub, sub, proxy = new_proxy()
    proxy.start(0.0)
    origin_headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        (b"Sec-WebSocket-Protocol", b"chat"),
        (b"Sec-WebSocket-Extensions", b'grip; message-prefix=""'),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    assert proxy.origin_accepted(origin_headers, 0.5) == [
        AcceptClient([(b"Sec-WebSocket-Protocol", b"chat"), (b"Set-Cookie", b"a=1"),
                      (b"Set-Cookie", b"b=2")])
    ]  # fmt: skip
    assert proxy.state is OPEN and not proxy.closed
    assert proxy.grip and proxy.message_prefix == b""
    assert sub.outbuf == bytearray() and proxy.next_deadline() is None


# (id, Sec-WebSocket-Extensions values, GRIP mode, message prefix)
EXTENSION_VECTORS: list[tuple[str, list[bytes], bool, bytes]] = [
    ("absent", [], False, b"m:"),
    ("grip", [b"grip"], True, b"m:"),
    ("message-prefix", [b"grip; message-prefix=out:"], True, b"out:"),
    ("quoted prefix", [b'grip; message-prefix="m-"'], True, b"m-"),
    ("empty prefix", [b'grip; message-prefix=""'], True, b""),
    ("among others", [b"permessage-deflate, grip; message-prefix=out"], True, b"out"),
    ("second header line", [b"foo", b"GRIP"], True, b"m:"),
    ("not grip", [b"gripx; message-prefix=a"], False, b"m:"),
    ("unparsable is not grip", [b'grip; message-prefix="open'], False, b"m:"),
    ("unparsable after grip", [b"grip", b'grip; message-prefix="open'], True, b"m:"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "grip", "prefix"),
    [v[1:] for v in EXTENSION_VECTORS],
    ids=[v[0] for v in EXTENSION_VECTORS],
)
def test_grip_extension_detection(values: list[bytes], grip: bool, prefix: bytes) -> None:
    _hub, _sub, proxy = new_proxy()
    proxy.start(0.0)
    headers = [(b"Sec-WebSocket-Extensions", v) for v in values]
    assert proxy.origin_accepted(headers, 0.0) == [AcceptClient([])]
    assert (proxy.grip, proxy.message_prefix) == (grip, prefix)


@pytest.mark.parametrize("headers", [[GRIP], []], ids=["grip", "passthrough"])
def test_implicit_channels_subscribed_on_accept(headers: H) -> None:
    hub, sub, proxy = new_proxy(channel_prefix="p:", implicit_channels=("all", "news"))
    proxy.start(0.0)
    assert sub.channels == {} and not hub.has_subscribers("p:all")
    proxy.origin_accepted(headers, 0.0)
    assert set(sub.channels) == {"p:all", "p:news"}
    assert hub.subscribers("p:all") == [sub] and sub.channel_prefix == "p:"
    publish_ws(hub, "p:news", content=b"hello")
    assert frames(sub) == [(TEXT, b"hello", True)]


# (id, status, reason, origin headers, body, expected rejection)
REJECT_VECTORS: list[tuple[str, int, bytes, H, bytes, RejectClient]] = [
    ("relayed minus hop-by-hop", 403, b"Forbidden",
     [(b"Content-Type", b"text/html"), (b"Content-Length", b"5"), (b"X-Why", b"no"),
      (b"Connection", b"close"), (b"Keep-Alive", b"timeout=5"), (b"Transfer-Encoding", b"chunked"),
      (b"Upgrade", b"h2c"), (b"Set-Cookie", b"a=1")],
     b"nope!",
     RejectClient(403, b"Forbidden", [(b"Content-Type", b"text/html"), (b"X-Why", b"no"),
                                      (b"Set-Cookie", b"a=1")], b"nope!")),
    ("body at the cap", 500, b"Oops", [], b"y" * 100_000,
     RejectClient(500, b"Oops", [], b"y" * 100_000)),
    ("body capped at 100,000", 500, b"Oops", [], b"x" * 100_001,
     RejectClient(500, b"Oops", [], b"x" * 100_000)),
    ("empty", 404, b"", [], b"", RejectClient(404, b"", [], b"")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "reason", "headers", "body", "expected"),
    [v[1:] for v in REJECT_VECTORS],
    ids=[v[0] for v in REJECT_VECTORS],
)
def test_handshake_rejected(
    status: int, reason: bytes, headers: H, body: bytes, expected: RejectClient
) -> None:
    assert MAX_REJECT_BODY == 100_000
    hub, sub, proxy = new_proxy(implicit_channels=("all",))
    proxy.start(0.0)
    assert proxy.origin_rejected(status, reason, headers, body) == [expected]
    assert proxy.closed and not hub.has_subscribers("all")
    assert proxy.next_deadline() is None
    assert proxy.handle_timer(100.0) == []
    assert proxy.origin_failed("late") == []
    assert proxy.origin_message(b"m:late", True, 1.0) == []
    assert sub.outbuf == bytearray()


# --- the origin fails or goes away ---------------------------------------------------------------


def test_origin_failure_while_connecting_is_502() -> None:
    _hub, sub, proxy = in_state(CONNECTING)
    assert proxy.origin_failed("connection refused") == [BAD_GATEWAY]
    assert proxy.closed and sub.outbuf == bytearray()
    assert proxy.origin_failed("again") == []


@pytest.mark.parametrize("state", [OPEN, CLOSING])
def test_origin_failure_while_open_closes_the_client_with_1011(state: ProxyState) -> None:
    hub, sub, proxy = in_state(state)
    # no CloseOrigin: the origin connection is gone already
    assert proxy.origin_failed("connection reset") == [CloseClient()]
    assert frames(sub) == [close_frame(1011, b"origin connection failed")]
    assert proxy.closed and sub.channels == {} and not hub.has_subscribers("all")


@pytest.mark.parametrize("state", [DETACHED, CLOSED])
def test_origin_failure_without_an_origin_does_nothing(state: ProxyState) -> None:
    _hub, sub, proxy = in_state(state)
    assert proxy.origin_failed("late") == []
    assert proxy.state is state and sub.outbuf == bytearray()


# --- messages from the origin ---------------------------------------------------------------------

# (id, message from the origin, is text, what the client receives) in GRIP mode, prefix "m:"
GRIP_MESSAGE_VECTORS: list[tuple[str, bytes, bool, list[tuple[int, bytes, bool]]]] = [
    ("prefixed text", b"m:hello", True, [(TEXT, b"hello", True)]),
    ("prefixed binary", b"m:\x00\xff", False, [(BINARY, b"\x00\xff", True)]),
    ("prefix only", b"m:", True, [(TEXT, b"", True)]),
    ("unprefixed text dropped", b"hello", True, []),
    ("unprefixed binary dropped", b"\x00", False, []),
    ("binary c: is not control and unprefixed", b"c:{}", False, []),
    ("invalid control JSON ignored", b"c:{not json", True, []),
    ("unknown control type ignored", control(type="no-such-type"), True, []),
    ("control without type ignored", control(channel="x"), True, []),
    ("session is accepted and does nothing", control(type="session", id="s1"), True, []),
    ("empty message dropped", b"", True, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "is_text", "expected"),
    [v[1:] for v in GRIP_MESSAGE_VECTORS],
    ids=[v[0] for v in GRIP_MESSAGE_VECTORS],
)
def test_origin_messages_in_grip_mode(
    data: bytes, is_text: bool, expected: list[tuple[int, bytes, bool]]
) -> None:
    _hub, sub, proxy = opened()
    assert proxy.origin_message(data, is_text, 1.0) == []
    assert frames(sub) == expected
    assert proxy.state is OPEN and sub.channels == {}


def test_custom_and_empty_message_prefix() -> None:
    _hub, sub, _proxy = opened(
        b"out:a", b"m:b", headers=[(b"Sec-WebSocket-Extensions", b"grip; message-prefix=out:")]
    )
    assert frames(sub) == [(TEXT, b"a", True)]
    _hub, sub, _proxy = opened(
        b"m:b", b"x", headers=[(b"Sec-WebSocket-Extensions", b'grip; message-prefix=""')]
    )
    assert frames(sub) == [(TEXT, b"m:b", True), (TEXT, b"x", True)]


def test_passthrough_mode_relays_everything_untouched() -> None:
    subscribe = control(type="subscribe", channel="x")
    _hub, sub, proxy = opened(subscribe, b"m:kept", b"plain", headers=[])
    assert proxy.origin_message(b"c:raw", False, 1.0) == []
    assert frames(sub) == [
        (TEXT, subscribe, True),
        (TEXT, b"m:kept", True),
        (TEXT, b"plain", True),
        (BINARY, b"c:raw", True),
    ]
    assert sub.channels == {} and not proxy.grip


def test_origin_ping_and_pong_are_relayed_as_frames() -> None:
    _hub, sub, proxy = opened()
    assert proxy.origin_ping(b"p1") == []
    assert proxy.origin_pong(b"") == []
    assert frames(sub) == [(PING, b"p1", True), (PONG, b"", True)]


@pytest.mark.parametrize("state", [CONNECTING, DETACHED, CLOSED])
def test_origin_frames_without_an_open_origin_are_ignored(state: ProxyState) -> None:
    _hub, sub, proxy = in_state(state)
    assert proxy.origin_message(b"m:x", True, 1.0) == []
    assert proxy.origin_ping(b"p") == []
    assert proxy.origin_pong(b"p") == []
    assert proxy.origin_close(4000, "x") == []
    assert proxy.state is state and sub.outbuf == bytearray()


def test_large_messages_are_split_into_16k_frames() -> None:
    payload = bytes(range(256)) * 160  # 40,960 bytes
    _hub, sub, proxy = opened()
    proxy.origin_message(b"m:" + payload, False, 1.0)
    proxy.origin_message(b"m:" + b"t" * MAX_FRAME, True, 1.0)
    got = frames(sub)
    assert [(op, len(data), fin) for op, data, fin in got] == [
        (BINARY, 16_384, False),
        (CONT, 16_384, False),
        (CONT, 8_192, True),
        (TEXT, 16_384, True),
    ]
    assert b"".join(data for _, data, _ in got[:3]) == payload


def test_one_megabyte_messages_both_ways() -> None:
    payload = b"z" * 1_000_000
    _hub, sub, proxy = opened(headers=[])
    assert proxy.client_message(payload, False, 1.0) == [SendToOrigin("binary", payload)]
    proxy.origin_message(payload, True, 1.0)
    got = frames(sub)
    assert len(got) == 62 and got[-1][2] and not got[0][2]
    assert b"".join(data for _, data, _ in got) == payload


def test_encode_frames_matches_single_frame_encoding_below_the_limit() -> None:
    assert encode_frames(TEXT, b"hi") == b"\x81\x02hi"
    assert len(encode_frames(BINARY, b"a" * (MAX_FRAME + 1))) == MAX_FRAME + 1 + 4 + 2


# --- control messages from the origin ----------------------------------------------------------


def test_subscribe_and_unsubscribe() -> None:
    hub, sub, _proxy = opened(
        control(type="subscribe", channel="room", filters=["skip-self"]),
        control(type="subscribe", channel="other"),
        control(type="unsubscribe", channel="other"),
        control(type="unsubscribe", channel="all"),  # implicit: stays
        control(type="unsubscribe", channel="never"),
        channel_prefix="p:",
        implicit_channels=("all",),
    )
    assert set(sub.channels) == {"p:all", "p:room"}
    assert sub.channels["p:room"].filters == ("skip-self",)
    assert hub.subscribers("p:room") == [sub] and not hub.has_subscribers("p:other")
    publish_ws(hub, "p:room", content=b"news")
    publish_ws(hub, "p:room", type="binary", content=b"\x01")
    assert frames(sub) == [(TEXT, b"news", True), (BINARY, b"\x01", True)]


@pytest.mark.parametrize(
    ("debug", "reason"), [(False, b""), (True, b"too many filters for channel 'room'")]
)
def test_too_many_filters_closes_with_1011(debug: bool, reason: bytes) -> None:
    hub, sub, proxy = opened(implicit_channels=("all",), debug=debug)
    filters = ["skip-self", "skip-users", "require-sub", "build-id", "var-subst", "skip-self"]
    msg = control(type="subscribe", channel="room", filters=filters)
    assert proxy.origin_message(msg, True, 1.0) == [CloseClient(), CloseOrigin()]
    assert frames(sub) == [close_frame(1011, reason)]
    assert proxy.closed and sub.channels == {} and not hub.has_subscribers("all")


def test_set_meta() -> None:
    _hub, sub, _proxy = opened(
        control(type="set-meta", name="user", value="alice"),
        control(type="set-meta", name="gone", value="x"),
        control(type="set-meta", name="gone"),
    )
    assert sub.meta == {"user": "alice"}


def test_detach_closes_the_origin_side_and_keeps_pushing() -> None:
    hub, sub, proxy = opened(control(type="subscribe", channel="room"))
    assert proxy.origin_message(control(type="detach"), True, 1.0) == [CloseOrigin()]
    assert proxy.state is DETACHED and not proxy.closed
    assert proxy.client_message(b"dropped", True, 2.0) == []
    assert proxy.client_ping(b"", 2.0) == []
    assert proxy.client_pong(b"", 2.0) == []
    publish_ws(hub, "room", content=b"still here")
    assert frames(sub) == [(TEXT, b"still here", True)]
    # the client's close is answered at once, the origin is not told again
    assert proxy.client_close(4001, "done", 3.0) == [CloseClient()]
    assert frames(sub) == [close_frame(4001, b"done")]
    assert sub.channels == {} and proxy.closed


def test_client_close_while_detached_without_code() -> None:
    _hub, sub, proxy = in_state(DETACHED)
    assert proxy.client_close(None, "", 1.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1000)]


@pytest.mark.parametrize(
    ("code", "reason", "frame"),
    [(4000, "bye", close_frame(4000, b"bye")), (None, "", close_frame(1000))],
)
def test_detach_while_the_client_is_closing_answers_the_client(
    code: int | None, reason: str, frame: tuple[int, bytes, bool]
) -> None:
    hub, sub, proxy = opened(implicit_channels=("all",))
    proxy.client_close(code, reason, 1.0)
    assert proxy.origin_message(control(type="detach"), True, 2.0) == [
        CloseClient(),
        CloseOrigin(),
    ]
    assert frames(sub) == [frame]
    assert proxy.closed and not hub.has_subscribers("all")


# --- keep-alives and delayed sends -------------------------------------------------------------


def test_idle_keep_alive_frames() -> None:
    _hub, sub, proxy = opened(control(type="keep-alive", content="ka", timeout=10))
    assert proxy.next_deadline() == 10.0
    proxy.wrote(5.0)
    assert proxy.next_deadline() == 15.0
    assert proxy.handle_timer(14.0) == []
    assert sub.outbuf == bytearray()
    assert proxy.handle_timer(15.0) == []
    assert frames(sub) == [(TEXT, b"ka", True)]
    assert proxy.next_deadline() == 25.0


def test_interval_keep_alive_frames_go_on_while_detached() -> None:
    ka = control(
        type="keep-alive",
        **{"content-bin": "AAE=", "message-type": "binary", "mode": "interval", "timeout": 10},
    )
    _hub, sub, proxy = opened(ka, control(type="detach"))
    assert proxy.state is DETACHED
    proxy.wrote(5.0)
    assert proxy.next_deadline() == 10.0
    proxy.handle_timer(10.0)
    proxy.handle_timer(20.0)
    assert frames(sub) == [(BINARY, b"\x00\x01", True)] * 2


def test_keep_alive_without_content_disables() -> None:
    _hub, _sub, proxy = opened(
        control(type="keep-alive", content="ka", timeout=10), control(type="keep-alive")
    )
    assert proxy.next_deadline() is None
    proxy.wrote(1.0)
    assert proxy.next_deadline() is None


def test_send_delayed_and_flush_delayed() -> None:
    _hub, sub, proxy = opened(control(type="send-delayed", content="later", timeout=3))
    assert proxy.next_deadline() == 3.0
    assert proxy.handle_timer(2.9) == [] and sub.outbuf == bytearray()
    proxy.handle_timer(3.0)
    assert frames(sub) == [(TEXT, b"later", True)]
    assert proxy.next_deadline() is None
    proxy.origin_message(control(type="send-delayed", content="one", timeout=5), True, 5.0)
    two = control(type="send-delayed", content="two", **{"message-type": "ping"})
    proxy.origin_message(two, True, 5.0)  # flushes "one"
    assert frames(sub) == [(TEXT, b"one", True)]
    assert proxy.next_deadline() == 6.0
    proxy.origin_message(control(type="flush-delayed"), True, 5.5)
    proxy.origin_message(control(type="flush-delayed"), True, 5.5)
    assert frames(sub) == [(PING, b"two", True)]
    assert proxy.next_deadline() is None


def test_earliest_of_keep_alive_and_delayed_send() -> None:
    _hub, sub, proxy = opened(
        control(type="keep-alive", content="ka", timeout=10),
        control(type="send-delayed", content="d", timeout=4),
    )
    assert proxy.next_deadline() == 4.0
    proxy.handle_timer(10.0)  # both due
    assert frames(sub) == [(TEXT, b"d", True), (TEXT, b"ka", True)]
    assert proxy.next_deadline() == 20.0


def test_timers_stop_once_closed() -> None:
    _hub, sub, proxy = opened(
        control(type="keep-alive", content="ka", timeout=10),
        control(type="send-delayed", content="d", timeout=4),
    )
    proxy.origin_close(1000, "")
    sub.take_output()
    assert proxy.next_deadline() is None
    assert proxy.handle_timer(100.0) == [] and sub.outbuf == bytearray()
    proxy.wrote(100.0)
    assert proxy.next_deadline() is None


# --- the origin closes -------------------------------------------------------------------------

# (id, code from the origin, reason, close frame payload the client receives)
ORIGIN_CLOSE_VECTORS: list[tuple[str, int | None, str, bytes]] = [
    ("code and reason", 4000, "bye", b"\x0f\xa0bye"),
    ("normal", 1000, "", b"\x03\xe8"),
    ("no code is 1000", None, "", b"\x03\xe8"),
    ("gripcontrol's 0 is a bare close", 0, "", b""),
    ("reserved 1005 is a bare close", 1005, "", b""),
    ("reserved 1006 is a bare close", 1006, "", b""),
    ("reserved 1015 is a bare close", 1015, "", b""),
    ("below 1000 is a bare close", 999, "x", b""),
    ("above 4999 is a bare close", 5000, "", b""),
    ("highest private code", 4999, "", b"\x13\x87"),
    ("reason cut between characters", 3000, "\u00e9" * 100, b"\x0b\xb8" + "\u00e9".encode() * 61),
]  # fmt: skip


@pytest.mark.parametrize(
    ("code", "reason", "payload"),
    [v[1:] for v in ORIGIN_CLOSE_VECTORS],
    ids=[v[0] for v in ORIGIN_CLOSE_VECTORS],
)
def test_origin_close_is_relayed(code: int | None, reason: str, payload: bytes) -> None:
    hub, sub, proxy = opened(control(type="subscribe", channel="room"), implicit_channels=("a",))
    assert proxy.origin_close(code, reason) == [CloseClient(), CloseOrigin()]
    assert frames(sub) == [(CLOSE, payload, True)]
    assert payload == close_payload(code if code is not None else 1000, reason)
    assert proxy.closed and sub.channels == {}
    assert not hub.has_subscribers("room") and not hub.has_subscribers("a")


# --- the client --------------------------------------------------------------------------------


def test_client_frames_go_to_the_origin() -> None:
    _hub, sub, proxy = opened()
    assert proxy.client_message(b"hi", True, 1.0) == [SendToOrigin("text", b"hi")]
    assert proxy.client_message(b"\x00", False, 1.0) == [SendToOrigin("binary", b"\x00")]
    assert proxy.client_ping(b"p", 1.0) == [SendToOrigin("ping", b"p")]
    assert proxy.client_pong(b"", 1.0) == [SendToOrigin("pong")]
    assert proxy.state is OPEN and sub.outbuf == bytearray()


@pytest.mark.parametrize("state", [CONNECTING, CLOSING, DETACHED, CLOSED])
def test_client_frames_are_dropped_unless_open(state: ProxyState) -> None:
    _hub, sub, proxy = in_state(state)
    assert proxy.client_message(b"hi", True, 1.0) == []
    assert proxy.client_ping(b"p", 1.0) == []
    assert proxy.client_pong(b"p", 1.0) == []
    assert proxy.state is state and sub.outbuf == bytearray()


def test_client_close_is_forwarded_and_the_answer_echoes_the_client() -> None:
    hub, sub, proxy = opened(implicit_channels=("all",))
    assert proxy.client_close(4001, "done", 1.0) == [
        SendToOrigin("close", code=4001, reason="done")
    ]
    assert proxy.state is CLOSING
    assert proxy.client_message(b"late", True, 1.5) == []
    assert proxy.client_close(1000, "again", 1.5) == []
    proxy.origin_message(b"m:last words", True, 1.6)  # the origin may still talk
    assert proxy.origin_close(1000, "other") == [CloseClient(), CloseOrigin()]
    assert frames(sub) == [(TEXT, b"last words", True), close_frame(4001, b"done")]
    assert proxy.closed and not hub.has_subscribers("all")
    assert proxy.client_close(1000, "", 3.0) == []


def test_bare_client_close() -> None:
    _hub, sub, proxy = opened()
    assert proxy.client_close(None, "ignored", 1.0) == [SendToOrigin("close")]
    assert proxy.origin_close(None, "") == [CloseClient(), CloseOrigin()]
    assert frames(sub) == [close_frame(1000)]


def test_client_close_before_the_handshake_is_refused() -> None:
    _hub, sub, proxy = in_state(CONNECTING)
    with pytest.raises(LocalProtocolError) as info:
        proxy.client_close(1000, "", 0.5)
    assert str(info.value) == "WebSocket proxy: 'client-close' while connecting"
    assert proxy.state is CONNECTING and sub.outbuf == bytearray()


# (state, whether CloseOrigin is due: the origin is connecting, open or answering a close)
CLIENT_GONE_VECTORS: list[tuple[ProxyState, bool]] = [
    (CONNECTING, True),
    (OPEN, True),
    (CLOSING, True),
    (DETACHED, False),
    (CLOSED, False),
]


@pytest.mark.parametrize(("state", "close_origin"), CLIENT_GONE_VECTORS)
def test_client_gone(state: ProxyState, close_origin: bool) -> None:
    hub, sub, proxy = in_state(state)
    assert proxy.client_gone(1.0) == ([CloseOrigin()] if close_origin else [])
    assert proxy.closed and sub.channels == {} and not hub.has_subscribers("all")
    assert sub.outbuf == bytearray()
    publish_ws(hub, "all", content=b"late")
    assert sub.outbuf == bytearray()
    assert proxy.client_gone(2.0) == []


# --- shutdown ----------------------------------------------------------------------------------

# (state, actions, what the client receives)
SHUTDOWN_VECTORS: list[tuple[ProxyState, list[WebSocketAction], list[tuple[int, bytes, bool]]]] = [
    (CONNECTING, [CloseOrigin(), SHUTTING_DOWN], []),
    (OPEN, [CloseClient(), CloseOrigin()], [close_frame(1001, b"server shutting down")]),
    (CLOSING, [CloseClient(), CloseOrigin()], [close_frame(1001, b"server shutting down")]),
    (DETACHED, [CloseClient()], [close_frame(1001, b"server shutting down")]),
    (CLOSED, [], []),
]


@pytest.mark.parametrize(("state", "actions", "sent"), SHUTDOWN_VECTORS)
def test_shutdown(
    state: ProxyState, actions: list[WebSocketAction], sent: list[tuple[int, bytes, bool]]
) -> None:
    hub, sub, proxy = in_state(state)
    assert proxy.shutdown() == actions
    assert frames(sub) == sent
    assert proxy.closed and not hub.has_subscribers("all")
    assert proxy.shutdown() == []
    assert proxy.next_deadline() is None


# --- hub events ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "frame"),
    [
        ({"code": 4000, "reason": "bye"}, b"\x88\x05\x0f\xa0bye"),
        ({"code": 1000}, b"\x88\x02\x03\xe8"),
        ({}, b"\x88\x00"),
    ],
)
def test_published_close(fmt: dict[str, Any], frame: bytes) -> None:
    hub, sub, proxy = opened(control(type="subscribe", channel="room"))
    publish_ws(hub, "room", action="close", **fmt)
    publish_ws(hub, "room", content=b"after the close")
    assert proxy.handle_events(sub.take_events(), 2.0) == [CloseClient(), CloseOrigin()]
    assert sub.take_output() == frame
    assert proxy.closed and sub.channels == {}
    assert proxy.handle_events([FilterFailed("room", "x")], 3.0) == []


def test_published_close_while_detached_does_not_touch_the_origin() -> None:
    hub, sub, proxy = opened(control(type="subscribe", channel="room"), control(type="detach"))
    publish_ws(hub, "room", action="close", code=1000)
    assert proxy.handle_events(sub.take_events(), 2.0) == [CloseClient()]
    assert frames(sub) == [close_frame(1000)]


def test_refresh_is_ignored() -> None:
    hub, sub, proxy = opened(control(type="subscribe", channel="room"))
    publish_ws(hub, "room", action="refresh")
    events = sub.take_events()
    assert events == [RefreshRequested("room")]
    assert proxy.handle_events(events, 2.0) == []
    assert proxy.state is OPEN and sub.outbuf == bytearray()


def test_overflow_drops_the_stalled_client() -> None:
    hub, sub, proxy = opened(
        control(type="subscribe", channel="room"), hub=Hub(max_output_buffer=10)
    )
    publish_ws(hub, "room", content=b"x" * 20)
    events = sub.take_events()
    assert [type(e) for e in events] == [BufferOverflow]
    assert proxy.handle_events(events, 2.0) == [CloseClient(abort=True), CloseOrigin()]
    assert frames(sub) == []


@pytest.mark.parametrize("debug", [False, True])
def test_filter_failure_closes_only_in_debug_mode(debug: bool) -> None:
    sub_msg = control(type="subscribe", channel="room", filters=["var-subst"])
    hub, sub, proxy = opened(sub_msg, debug=debug)
    publish_ws(hub, "room", content=b"%(missing)s")
    events = sub.take_events()
    [event] = events
    assert isinstance(event, FilterFailed)
    if debug:
        assert proxy.handle_events(events, 2.0) == [CloseClient(), CloseOrigin()]
        assert frames(sub) == [close_frame(1011, event.message.encode())]
    else:
        assert proxy.handle_events(events, 2.0) == []
        assert not proxy.closed


def test_events_after_the_first_close_are_skipped() -> None:
    _hub, sub, proxy = opened()
    events = [CloseRequested("a", 4000, "one"), BufferOverflow("a", 99), CloseRequested("a")]
    assert proxy.handle_events(events, 1.0) == [CloseClient(), CloseOrigin()]
    assert frames(sub) == [close_frame(4000, b"one")]


# --- the transition table, input by input ------------------------------------------------------


def published_close(hub: Hub, sub: Subscriber, proxy: WebSocketProxy) -> list[WebSocketAction]:
    publish_ws(hub, "all", action="close")
    return proxy.handle_events(sub.take_events(), 1.0)


INPUTS: dict[str, Callable[[Hub, Subscriber, WebSocketProxy], list[WebSocketAction]]] = {
    "start": lambda h, s, p: p.start(1.0),
    "origin_accepted": lambda h, s, p: p.origin_accepted([GRIP], 1.0),
    "origin_rejected": lambda h, s, p: p.origin_rejected(403, b"Forbidden", [], b"no"),
    "origin_failed": lambda h, s, p: p.origin_failed("reset"),
    "origin_message": lambda h, s, p: p.origin_message(b"m:x", True, 1.0),
    "origin_detach": lambda h, s, p: p.origin_message(control(type="detach"), True, 1.0),
    "origin_ping": lambda h, s, p: p.origin_ping(b"p"),
    "origin_pong": lambda h, s, p: p.origin_pong(b"p"),
    "origin_close": lambda h, s, p: p.origin_close(4002, "x"),
    "client_message": lambda h, s, p: p.client_message(b"x", False, 1.0),
    "client_ping": lambda h, s, p: p.client_ping(b"p", 1.0),
    "client_pong": lambda h, s, p: p.client_pong(b"p", 1.0),
    "client_close": lambda h, s, p: p.client_close(1000, "", 1.0),
    "client_gone": lambda h, s, p: p.client_gone(1.0),
    "shutdown": lambda h, s, p: p.shutdown(),
    "published_close": lambda h, s, p: published_close(h, s, p),
    "handle_timer": lambda h, s, p: p.handle_timer(1e6),
}  # fmt: skip

ACTION_NAMES = {"CC": CloseClient, "CO": CloseOrigin, "SO": SendToOrigin, "AC": AcceptClient,
                "RC": RejectClient}  # fmt: skip

# input -> outcome while connecting, open, closing, detached, closed: "<actions> <state after>",
# actions abbreviated as in ACTION_NAMES, joined by "+" ("-": none); "refused": LocalProtocolError
OUTCOMES: dict[str, tuple[str, str, str, str, str]] = {
    "start":           ("refused",      "refused",      "refused",      "refused",    "refused"),
    "origin_accepted": ("AC open",      "refused",      "refused",      "refused",    "refused"),
    "origin_rejected": ("RC closed",    "refused",      "refused",      "refused",    "refused"),
    "origin_failed":   ("RC closed",    "CC closed",    "CC closed",    "- detached", "- closed"),
    "origin_message":  ("- connecting", "- open",       "- closing",    "- detached", "- closed"),
    "origin_detach":   ("- connecting", "CO detached",  "CC+CO closed", "- detached", "- closed"),
    "origin_ping":     ("- connecting", "- open",       "- closing",    "- detached", "- closed"),
    "origin_pong":     ("- connecting", "- open",       "- closing",    "- detached", "- closed"),
    "origin_close":    ("- connecting", "CC+CO closed", "CC+CO closed", "- detached", "- closed"),
    "client_message":  ("- connecting", "SO open",      "- closing",    "- detached", "- closed"),
    "client_ping":     ("- connecting", "SO open",      "- closing",    "- detached", "- closed"),
    "client_pong":     ("- connecting", "SO open",      "- closing",    "- detached", "- closed"),
    "client_close":    ("refused",      "SO closing",   "- closing",    "CC closed",  "- closed"),
    "client_gone":     ("CO closed",    "CO closed",    "CO closed",    "- closed",   "- closed"),
    "shutdown":        ("CO+RC closed", "CC+CO closed", "CC+CO closed", "CC closed",  "- closed"),
    "published_close": ("- connecting", "CC+CO closed", "CC+CO closed", "CC closed",  "- closed"),
    "handle_timer":    ("- connecting", "- open",       "- closing",    "- detached", "- closed"),
}  # fmt: skip
STATES = (CONNECTING, OPEN, CLOSING, DETACHED, CLOSED)


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
@pytest.mark.parametrize("name", list(INPUTS))
def test_transition_table(name: str, state: ProxyState) -> None:
    hub, sub, proxy = in_state(state)
    outcome = OUTCOMES[name][STATES.index(state)]
    if outcome == "refused":
        with pytest.raises(LocalProtocolError):
            INPUTS[name](hub, sub, proxy)
        assert proxy.state is state and sub.outbuf == bytearray()
        return
    kinds, after_name = outcome.split()
    after = ProxyState(after_name)
    actions = INPUTS[name](hub, sub, proxy)
    expected = [] if kinds == "-" else [ACTION_NAMES[k] for k in kinds.split("+")]
    assert [type(a) for a in actions] == expected
    assert proxy.state is after and proxy.closed == (after is CLOSED)
    frames(sub)  # valid framing
    if after is CLOSED:
        assert sub.channels == {} and not hub.has_subscribers("all")


@pytest.mark.parametrize(
    ("state", "name", "message"),
    [
        (OPEN, "origin_accepted", "WebSocket proxy: 'accepted' while open"),
        (CLOSED, "origin_rejected", "WebSocket proxy: 'rejected' while closed"),
        (CLOSING, "origin_accepted", "WebSocket proxy: 'accepted' while closing"),
        (DETACHED, "origin_rejected", "WebSocket proxy: 'rejected' while detached"),
    ],
)
def test_refusals_say_what_and_when(state: ProxyState, name: str, message: str) -> None:
    hub, sub, proxy = in_state(state)
    with pytest.raises(LocalProtocolError) as info:
        INPUTS[name](hub, sub, proxy)
    assert str(info.value) == message


# --- properties --------------------------------------------------------------------------------

SWEEP_INPUTS = [
    *INPUTS,
    "origin_subscribe",
    "origin_keep_alive",
    "origin_send_delayed",
    "origin_too_many_filters",
    "publish",
    "wrote",
]


# inputs that are misuse in some state (the adapter feeds them only when they make sense)
MISUSE = frozenset({"start", "origin_accepted", "origin_rejected", "client_close"})


def sweep_input(name: str, hub: Hub, sub: Subscriber, proxy: WebSocketProxy, now: float) -> Any:
    if name in INPUTS:
        return INPUTS[name](hub, sub, proxy)
    if name == "wrote":
        proxy.wrote(now)
        return []
    if name == "publish":
        publish_ws(hub, "room", content=b"pub")
        publish_ws(hub, "all", content=b"pub-all")
        return proxy.handle_events(sub.take_events(), now)
    msg = {
        "origin_subscribe": control(type="subscribe", channel="room"),
        "origin_keep_alive": control(type="keep-alive", content="k", timeout=3),
        "origin_send_delayed": control(type="send-delayed", content="d", timeout=2),
        "origin_too_many_filters": control(type="subscribe", channel="r", filters=["x"] * 6),
    }[name]
    return proxy.origin_message(msg, True, now)


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.sampled_from(SWEEP_INPUTS), max_size=12))
def test_session_sweep(names: list[str]) -> None:
    """Random inputs: only LocalProtocolError for misuse (state untouched), the client is
    answered once, the origin dropped at most once and never written to after, and once closed
    nothing is left: no channels, no deadlines, no output."""
    hub, sub, proxy = new_proxy(implicit_channels=("all",))
    assert proxy.start(0.0) == [ConnectOrigin()]
    now = 0.0
    answered: type[WebSocketAction] | None = None  # AcceptClient or RejectClient
    client_closed = client_gone = origin_dropped = origin_gone = False
    for name in names:
        now += 1.0
        before = proxy.state
        try:
            actions = sweep_input(name, hub, sub, proxy, now)
        except LocalProtocolError:
            assert name in MISUSE  # never for what a peer sent or a hub event
            assert proxy.state is before
            continue
        for action in actions:
            if isinstance(action, AcceptClient | RejectClient):
                assert answered is None
                answered = type(action)
            elif isinstance(action, CloseClient):
                assert answered is AcceptClient and not client_closed
                client_closed = True
            elif isinstance(action, CloseOrigin):
                assert not origin_dropped and not origin_gone
                origin_dropped = True
            else:
                assert isinstance(action, SendToOrigin)
                assert not origin_dropped and not origin_gone
        if name in ("origin_failed", "origin_rejected", "origin_close") and proxy.state != before:
            origin_gone = True  # the origin connection ended on its own
        client_gone = client_gone or name == "client_gone"
        if answered is None or before is CLOSED:
            assert sub.outbuf == bytearray()  # nothing before the client's 101 or after the end
        if before is CLOSED:
            assert actions == []
        frames(sub)
        if proxy.closed:
            assert sub.channels == {} and not hub.has_subscribers("all")
            assert not hub.has_subscribers("room")
            assert proxy.next_deadline() is None
            assert answered is RejectClient or client_closed or client_gone
        else:
            assert proxy.state is CONNECTING or answered is AcceptClient


@given(st.binary(max_size=60), st.booleans(), st.sampled_from([b"", b"c:", b"m:", b"c:{"]))
def test_arbitrary_origin_messages_never_raise(data: bytes, is_text: bool, lead: bytes) -> None:
    _hub, sub, proxy = opened()
    actions = proxy.origin_message(lead + data, is_text, 1.0)
    assert all(isinstance(a, CloseClient | CloseOrigin) for a in actions)
    frames(sub)
    assert proxy.state in (OPEN, DETACHED, CLOSED)


@given(
    st.dictionaries(
        st.sampled_from(["type", "channel", "filters", "name", "value", "content", "timeout",
                         "message-type", "mode", "content-bin", "id"]),
        st.one_of(st.none(), st.booleans(), st.integers(-5, 100), st.text(max_size=8),
                  st.lists(st.text(max_size=5), max_size=7)),
    ),
    st.sampled_from(["subscribe", "unsubscribe", "detach", "set-meta", "keep-alive",
                     "send-delayed", "flush-delayed", "session", "bogus"]),
)  # fmt: skip
def test_arbitrary_control_messages_never_raise(fields: dict[str, Any], kind: str) -> None:
    _hub, sub, proxy = opened(implicit_channels=("all",))
    proxy.origin_message(control(**{**fields, "type": kind}), True, 1.0)
    proxy.handle_timer(1e6)
    frames(sub)
    if proxy.closed:
        assert sub.channels == {}
