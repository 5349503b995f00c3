"""gripcore.origin: GRIP response builders, the WebSocket-over-HTTP context and Grip-Sig checks.

The builders are checked three ways: exact vectors (kept as data below), a hypothesis round trip
through the proxy's own parser (`parse_instruct`) for both the header and the JSON form, and
end-to-end behind a real `gripcore serve` (stream, long-poll, WebSocket-over-HTTP).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore import (
    FASTLY_FANOUT_JWK,
    LocalProtocolError,
    ProtocolError,
    SigError,
    SigningKey,
    WebSocketEventsError,
    classify_origin_message,
    decode_events,
    encode_events,
    mint_sig,
    parse_instruct,
    parse_verify_key,
)
from gripcore._instruct import DEFAULT_NEXT_LINK_TIMEOUT, reason_phrase
from gripcore._wscontrol import (
    Detach,
    SetMeta,
    Subscribe,
    Unsubscribe,
    parse_grip_extension,
)
from gripcore._wscontrol import (
    KeepAlive as KeepAliveControl,
)
from gripcore._wsevents import Binary, Close, Open, Ping, Pong, Text
from gripcore.adapters.publisher import Publisher
from gripcore.origin import (
    Channel,
    GripResponse,
    KeepAlive,
    Link,
    WebSocketContext,
    grip_response,
    hold_response,
    hold_stream,
    is_websocket_over_http,
    verify_request,
    verify_request_strict,
)

from .e2e_support import (
    Origin,
    OriginRequest,
    ProxyThread,
    RawClient,
    WsClient,
    running_proxy,
    subscribers,
    wait_for,
)
from .hypothesis_support import examples

NOW = 1_700_000_000.0

# --- builder vectors: (kwargs, expected headers, expected body) --------------------------------

HEADER_VECTORS: list[tuple[dict[str, Any], list[tuple[str, str]], bytes]] = [
    (
        {"hold": "stream", "channels": "news", "expose_headers": []},
        [("Grip-Hold", "stream"), ("Grip-Channel", "news")],
        b"",
    ),
    (
        {"hold": "stream", "channels": "news"},
        [("Grip-Hold", "stream"), ("Grip-Channel", "news")],
        b"",
    ),
    (
        {
            "hold": "stream",
            "channels": [Channel("a", "id 1", ("skip-self", "build-id")), "b"],
            "headers": {"Content-Type": "text/event-stream"},
            "body": "event: open\n\n",
            "keep_alive": KeepAlive(b":\n\n", 20, "interval"),
        },
        [
            ("Content-Type", "text/event-stream"),
            ("Grip-Hold", "stream"),
            ("Grip-Channel", 'a; prev-id="id 1"; filter=skip-self; filter=build-id, b'),
            ("Grip-Keep-Alive", ":\\n\\n; format=cstring; timeout=20; mode=interval"),
        ],
        b"event: open\n\n",
    ),
    (
        {"hold": "response", "channels": "lp", "timeout": 30, "status": 304},
        [
            ("Grip-Hold", "response"),
            ("Grip-Channel", "lp"),
            ("Grip-Timeout", "30"),
            ("Grip-Status", "304"),
        ],
        b"",
    ),
    (
        {
            "hold": "stream",
            "channels": "c",
            "keep_alive": "ping",
            "meta": {"user": "ann", "note": "a, b"},
            "reason": "Fine Thanks",
            "expose_headers": ["Content-Type"],
        },
        [
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "c"),
            ("Grip-Expose-Headers", "Content-Type"),
            ("Grip-Keep-Alive", "ping"),
            ("Grip-Set-Meta", 'user=ann, note="a, b"'),
            ("Grip-Status", "200 Fine Thanks"),
        ],
        b"",
    ),
    (
        {
            "next_link": Link("/next?x=1", 10),
            "gone_link": "http://origin.example/gone",
            "body": b"part 1\n",
        },
        [
            (
                "Grip-Link",
                "</next?x=1>; rel=next; timeout=10, <http://origin.example/gone>; rel=gone",
            ),
        ],
        b"part 1\n",
    ),
    (
        {"next_link": '/a b;c,d"é'},
        [("Grip-Link", "</a%20b%3Bc%2Cd%22%C3%A9>; rel=next")],
        b"",
    ),
    (
        {"hold": "stream", "channels": "ü", "meta": {"name": "Zoë"}},
        [
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "Ã¼"),
            ("Grip-Set-Meta", 'name="ZoÃ«"'),
        ],
        b"",
    ),
    (
        {
            "hold": "stream",
            "channels": "k",
            "keep_alive": b"\x00\x01",
            "keep_alive_format": "base64",
        },
        [
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "k"),
            ("Grip-Keep-Alive", "AAE=; format=base64"),
        ],
        b"",
    ),
    (
        {"hold": "stream", "channels": "k", "keep_alive": b" x,y\\", "keep_alive_format": "auto"},
        [
            ("Grip-Hold", "stream"),
            ("Grip-Channel", "k"),
            ("Grip-Keep-Alive", "\\x20x\\x2cy\\\\; format=cstring"),
        ],
        b"",
    ),
]

JSON_VECTORS: list[tuple[dict[str, Any], list[tuple[str, str]], dict[str, Any]]] = [
    (
        {"hold": "response", "channels": [Channel("a", "p", ("f",))], "timeout": 7},
        [("Content-Type", "application/grip-instruct")],
        {
            "hold": {
                "mode": "response",
                "channels": [{"name": "a", "prev-id": "p", "filters": ["f"]}],
                "timeout": 7,
            }
        },
    ),
    (
        {
            "hold": "stream",
            "channels": "a,b",
            "keep_alive": KeepAlive(b"\xff", 9, "interval"),
            "meta": {"k y": "v"},
            "status": 201,
            "reason": "Made",
            "headers": [("X-A", "1")],
            "body": b"\xfe",
        },
        [("Content-Type", "application/grip-instruct")],
        {
            "hold": {
                "mode": "stream",
                "channels": [{"name": "a,b"}],
                "keep-alive": {"content-bin": "/w==", "timeout": 9},
                "meta": {"k y": "v"},
            },
            "response": {
                "code": 201,
                "reason": "Made",
                "headers": [["X-A", "1"]],
                "body-bin": "/g==",
            },
        },
    ),
    (
        {"hold": "stream", "channels": "s", "keep_alive": "ka", "body": "hi"},
        [("Content-Type", "application/grip-instruct"), ("Grip-Keep-Alive", "ka")],
        {"hold": {"mode": "stream", "channels": [{"name": "s"}]}, "response": {"body": "hi"}},
    ),
    (
        {"meta": {"m": "v"}, "keep_alive": "ka", "next_link": "/n", "status": 202},
        [
            ("Content-Type", "application/grip-instruct"),
            ("Grip-Set-Meta", "m=v"),
            ("Grip-Keep-Alive", "ka"),
            ("Grip-Link", "</n>; rel=next"),
        ],
        {"response": {"code": 202}},
    ),
]

BUILDER_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"hold": "forever"}, "hold must be"),
    ({"form": "xml"}, "form must be"),
    ({"channels": 5}, "channels must be"),
    ({"channels": b"raw"}, "channels must be"),
    ({"channels": [3]}, "a channel must be"),
    ({"channels": "a,b"}, "cannot be sent in a Grip-Channel header"),
    ({"channels": "\ud800"}, "not encodable as UTF-8"),
    ({"timeout": -1}, "timeout must be an int"),
    ({"timeout": True}, "timeout must be an int"),
    ({"status": 99}, "status must be an int"),
    ({"reason": " padded"}, "reason must be visible text"),
    ({"reason": "a\nb"}, "reason must be visible text"),
    ({"headers": [("Grip-Hold", "stream")]}, "give GRIP instructions as arguments"),
    ({"headers": [("Bad Name", "x")]}, "is not a token"),
    ({"headers": [("X", "a\r\nb")]}, "visible latin-1 text"),
    ({"headers": ["X: y"]}, "(name, value) pairs"),
    ({"headers": {"Content-Type": "application/grip-instruct"}}, "needs form='json'"),
    ({"body": 5}, "body must be str or bytes"),
    ({"meta": {"": "x"}}, "meta keys must not be empty"),
    ({"meta": {"a b": "x"}}, "use form='json'"),
    ({"meta": {"k": "a\x01"}}, "a value a header cannot carry"),
    ({"meta": {"k": 5}}, "must be a str"),
    ({"next_link": ""}, "non-empty"),
    ({"next_link": 5}, "must be a URL str or a Link"),
    ({"next_link": "ftp://x/"}, "is not a valid http(s) URL"),
    ({"next_link": "/\ud800"}, "not encodable as UTF-8"),
    ({"next_link": Link("/n", 2**31)}, "timeout must be an int"),
    ({"gone_link": Link("/g", 5)}, "gone_link has no timeout"),
    ({"keep_alive": b""}, "keep-alive data is empty"),
    ({"keep_alive": b"a;b", "keep_alive_format": "raw"}, "cannot be sent raw"),
    ({"keep_alive": b"x", "keep_alive_format": "hex"}, "keep_alive_format must be"),
    ({"expose_headers": ["a b"]}, "expose_headers must be header names"),
    ({"expose_headers": ["X"], "form": "json"}, "header form only"),
    ({"channels": "a", "form": "json"}, "need a hold in the JSON form"),
    ({"headers": [("X", "\xff")], "form": "json"}, "not UTF-8"),
    ({"hold": "response", "channels": "c", "body": b"x" * 100_001}, "over the 100000 bytes"),
]


def _parse(response: GripResponse) -> Any:
    return parse_instruct(response.status, b"OK", response.header_bytes(), response.body)


@pytest.mark.parametrize(("kwargs", "headers", "body"), HEADER_VECTORS)
def test_header_form_vectors(
    kwargs: dict[str, Any], headers: list[tuple[str, str]], body: bytes
) -> None:
    response = grip_response(**kwargs)
    assert response == (200, headers, body)
    _parse(response)  # and the proxy accepts it


@pytest.mark.parametrize(("kwargs", "headers", "document"), JSON_VECTORS)
def test_json_form_vectors(
    kwargs: dict[str, Any], headers: list[tuple[str, str]], document: dict[str, Any]
) -> None:
    status, out_headers, body = grip_response(form="json", **kwargs)
    assert (status, out_headers) == (200, headers)
    assert json.loads(body) == document


@pytest.mark.parametrize(("kwargs", "message"), BUILDER_ERRORS)
def test_builder_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        grip_response(**kwargs)
    assert message in str(info.value)


def test_hold_helpers_and_header_bytes() -> None:
    stream = hold_stream("s", headers=[("Content-Type", "text/plain")], body="x")
    assert stream == grip_response(
        hold="stream", channels="s", headers=[("Content-Type", "text/plain")], body=b"x"
    )
    poll = hold_response(["a", "b"], timeout=3, body=b"t")
    instruct = _parse(poll)
    assert (instruct.hold, instruct.timeout, instruct.body) == ("response", 5, b"t")  # clamped
    assert [c.name for c in instruct.channels] == ["a", "b"]
    assert hold_stream("é").header_bytes()[1] == (b"Grip-Channel", "é".encode())
    # A stream hold may carry a large body: the proxy streams it instead of buffering it.
    assert len(hold_stream("big", body=b"x" * 200_000).body) == 200_000


# --- round trip through the proxy's parser ------------------------------------------------------

_NAME = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8)
_TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~", min_size=1)
_VALUE = st.from_regex(r"[\x21-\x7e](?:[ \x21-\x7e]{0,10}[\x21-\x7e])?", fullmatch=True)
_URL = st.from_regex(
    r"(https?://[a-z]{1,8}(:[0-9]{1,4})?)?/[A-Za-z0-9/._~%=?&-]{0,16}", fullmatch=True
)
_CHANNEL = st.builds(
    Channel,
    _NAME,
    st.none() | _NAME,
    st.lists(st.sampled_from(["skip-self", "build-id", "var-subst", "x y"]), max_size=5).map(tuple),
)
_KEEP_ALIVE = st.builds(
    KeepAlive,
    st.binary(min_size=1, max_size=12),
    st.integers(1, 600),
    st.sampled_from(["idle", "interval"]),
)
_CLIENT_HEADER_NAMES = st.sampled_from(["Content-Type", "X-Custom", "Cache-Control", "ETag"])


@settings(max_examples=examples(150))
@given(
    form=st.sampled_from(["headers", "json"]),
    hold=st.sampled_from([None, "stream", "response"]),
    channels=st.lists(_CHANNEL, max_size=3),
    timeout=st.none() | st.integers(0, 1000),
    keep_alive=st.none() | _KEEP_ALIVE,
    keep_alive_format=st.sampled_from(["auto", "cstring", "base64"]),
    status=st.integers(100, 999),
    reason=st.none() | _VALUE,
    headers=st.lists(st.tuples(_CLIENT_HEADER_NAMES, _VALUE), max_size=3),
    body=st.binary(max_size=40),
    meta=st.dictionaries(_TOKEN, st.text(st.characters(codec="utf-8"), max_size=6), max_size=3),
    next_link=st.none() | st.builds(Link, _URL, st.none() | st.integers(0, 999)),
    gone_link=st.none() | _URL,
    expose=st.none() | st.lists(_CLIENT_HEADER_NAMES, max_size=2),
)
def test_round_trip_through_parse_instruct(
    form: Any,
    hold: Any,
    channels: list[Channel],
    timeout: int | None,
    keep_alive: KeepAlive | None,
    keep_alive_format: Any,
    status: int,
    reason: str | None,
    headers: list[tuple[str, str]],
    body: bytes,
    meta: dict[str, str],
    next_link: Link | None,
    gone_link: str | None,
    expose: list[str] | None,
) -> None:
    if hold is None and form == "json":
        channels, timeout = [], None
    if form == "json":
        expose = None
    try:
        response = grip_response(
            hold=hold,
            channels=channels,
            timeout=timeout,
            keep_alive=keep_alive,
            keep_alive_format=keep_alive_format,
            status=status,
            reason=reason,
            headers=headers,
            body=body,
            meta=meta,
            next_link=next_link,
            gone_link=gone_link,
            expose_headers=expose,
            form=form,
        )
    except LocalProtocolError as exc:
        # Only what goes in headers is refused: names or values a header cannot carry.
        assert form == "headers" or hold is None
        assert "use form='json'" in str(exc)
        return
    instruct = _parse(response)
    client = [(n.encode(), v.encode("latin-1")) for n, v in headers]
    if expose:
        client = [(n, v) for n, v in client if n.decode().lower() in {e.lower() for e in expose}]
    assert instruct.hold == hold
    assert instruct.channels == tuple(channels)
    assert instruct.timeout == (55 if timeout is None else max(timeout, 5))
    assert instruct.keep_alive == keep_alive
    assert dict(instruct.meta) == meta
    expected_next = None
    if next_link is not None:
        expected_next = Link(next_link.url, next_link.timeout or DEFAULT_NEXT_LINK_TIMEOUT)
        if next_link.timeout == 0:
            expected_next = Link(next_link.url, 0)
    assert instruct.next_link == expected_next
    assert instruct.gone_link == (None if gone_link is None else Link(gone_link))
    assert instruct.status == status
    assert instruct.reason == (reason.encode() if reason else reason_phrase(status))
    assert list(instruct.headers) == client
    assert instruct.body == body


# --- WebSocket-over-HTTP -----------------------------------------------------------------------

WOH = "application/websocket-events"
OPEN = b"OPEN\r\n"


def _ctx(body: bytes, headers: Any = (), **kwargs: Any) -> WebSocketContext:
    return WebSocketContext(headers or [("Content-Type", WOH)], body, **kwargs)


def _answer(ctx: WebSocketContext) -> tuple[int, dict[str, str], list[Any]]:
    status, headers, body = ctx.response()
    return status, dict(headers), decode_events(body)


def test_ws_open_accept_subscribe() -> None:
    ctx = _ctx(OPEN, [("Content-Type", WOH), ("Connection-Id", "c1"), ("Meta-User", "ann")])
    assert ctx.is_opening and ctx.id == "c1" and ctx.meta == {"user": "ann"}
    ctx.accept()
    ctx.subscribe("room", ["skip-self"])
    ctx.send("welcome")
    status, headers, events = _answer(ctx)
    assert status == 200
    assert headers == {"Content-Type": WOH, "Sec-WebSocket-Extensions": "grip"}
    assert events == [
        Open(),
        Text(b'c:{"type":"subscribe","channel":"room","filters":["skip-self"]}'),
        Text(b"m:welcome"),
    ]
    assert classify_origin_message(events[1].data, is_text=True) == Subscribe(
        "room", ("skip-self",)
    )


def test_ws_opening_not_accepted_is_rejected() -> None:
    ctx = _ctx(OPEN)
    ctx.send("dropped")
    assert ctx.response() == (
        403,
        [("Content-Type", "text/plain")],
        b"WebSocket connection not accepted\n",
    )


def test_ws_messages_pings_and_controls() -> None:
    body = encode_events([Text(b"one"), Ping(b"p"), Binary(b"\x00two"), Pong(b"q"), Text(b"three")])
    ctx = _ctx(body, {"content-type": WOH, "Connection-Id": "c2"})
    assert not ctx.is_opening
    assert ctx.messages == ("one", b"\x00two", "three")
    got = []
    while ctx.can_recv():
        got.append(ctx.recv())
    assert got == ["one", b"\x00two", "three"] and ctx.recv() is None
    with pytest.raises(LocalProtocolError, match="accept\\(\\) answers an OPEN"):
        ctx.accept()
    ctx.send(b"bytes-text")
    ctx.send_binary(b"\xff")
    ctx.unsubscribe("room")
    ctx.set_meta("user", "bob")
    ctx.set_meta("user", None)
    ctx.keep_alive("ka", timeout=30, mode="interval")
    ctx.keep_alive(None)
    ctx.detach()
    status, _, events = _answer(ctx)
    assert status == 200
    assert events[0] == Pong(b"p")  # the client's PING is answered first
    assert events[1:3] == [Text(b"m:bytes-text"), Binary(b"m:\xff")]
    controls = [classify_origin_message(e.data, is_text=True) for e in events[3:]]
    assert controls == [
        Unsubscribe("room"),
        SetMeta("user", "bob"),
        SetMeta("user"),
        KeepAliveControl(b"ka", "text", 30, "interval"),
        KeepAliveControl(None),
        Detach(),
    ]


# (client CLOSE content, what the answer ends with)
CLOSE_ECHO_VECTORS: list[tuple[bytes | None, Close]] = [
    (None, Close()),
    (b"\x03\xe9going", Close(1001, "going")),
    (b"\x0f\xa0app", Close(4000, "app")),
    (b"\x00\x00", Close()),  # code 0 is never sent back (gripcontrol's bug)
    (b"\x03\xee", Close()),  # 1006 is not a code a frame may carry
]


@pytest.mark.parametrize(("content", "echo"), CLOSE_ECHO_VECTORS)
def test_ws_client_close_is_echoed(content: bytes | None, echo: Close) -> None:
    body = b"CLOSE\r\n" if content is None else b"CLOSE %x\r\n%s\r\n" % (len(content), content)
    ctx = _ctx(body)
    assert ctx.client_closed
    _, _, events = _answer(ctx)
    assert events == [echo]


def test_ws_app_close_wins_and_blocks_sends() -> None:
    ctx = _ctx(encode_events([Close(1000, "bye")]))
    assert (ctx.close_code, ctx.close_reason) == (1000, "bye")
    ctx.close(4001, "done")
    assert _answer(ctx)[2] == [Close(4001, "done")]
    with pytest.raises(LocalProtocolError, match="nothing may be sent after close"):
        ctx.send("late")


@pytest.mark.parametrize(
    ("code", "reason", "message"),
    [
        (0, "", "close code must be"),
        (1005, "", "close code must be"),
        (5000, "", "close code must be"),
        ("1000", "", "close code must be"),
        (1000, "x" * 124, "longer than 123"),
        (1000, 5, "must be a str"),
    ],
)
def test_ws_close_errors(code: Any, reason: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        _ctx(b"").close(code, reason)


def test_ws_disconnect_and_connection_meta() -> None:
    ctx = _ctx(
        b"DISCONNECT\r\n", [("Meta-User", "ann"), ("Meta-Name", "Zo\xc3\xab"), ("Meta-", "x")]
    )
    assert ctx.disconnected and ctx.meta == {"user": "ann", "name": "Zoë"}
    ctx.set_connection_meta("Room", "lobby")
    ctx.set_connection_meta("User", None)
    ctx.set_connection_meta("Name", "Zoë")
    ctx.keep_alive_interval = 30
    status, headers, events = ctx.response()
    assert status == 200 and events == b""
    assert headers[2:] == [
        ("Set-Meta-Room", "lobby"),
        ("Set-Meta-User", ""),
        ("Set-Meta-Name", "ZoÃ«"),
        ("Keep-Alive-Interval", "30"),
    ]
    assert ctx.meta == {"name": "Zoë", "room": "lobby"}
    bad: list[tuple[str, Any, str]] = [
        ("bad name", "x", "must be a token"),
        ("n", "a\nb", "a header cannot carry"),
        ("n", 5, "must be a str"),
    ]
    for name, value, message in bad:
        with pytest.raises(LocalProtocolError, match=message):
            ctx.set_connection_meta(name, value)
    ctx.keep_alive_interval = 0
    with pytest.raises(LocalProtocolError, match="keep_alive_interval"):
        ctx.response()


@pytest.mark.parametrize(
    ("prefix", "header"),
    [("m:", "grip"), ("", 'grip; message-prefix=""'), (b"ws-", "grip; message-prefix=ws-")],
)
def test_ws_message_prefix(prefix: str | bytes, header: str) -> None:
    ctx = _ctx(b"TEXT 2\r\nhi\r\n", message_prefix=prefix)
    ctx.send("x")
    _, headers, events = _answer(ctx)
    assert headers["Sec-WebSocket-Extensions"] == header
    expected = prefix.encode() if isinstance(prefix, str) else prefix
    assert parse_grip_extension(header.encode()) == expected
    assert events == [Text(expected + b"x")]


def test_ws_argument_errors() -> None:
    with pytest.raises(LocalProtocolError, match="body must be bytes"):
        WebSocketContext([], "OPEN\r\n")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="cannot be sent in a header"):
        _ctx(b"", message_prefix="\n")
    with pytest.raises(LocalProtocolError, match="mapping or an iterable"):
        WebSocketContext(5, b"")
    with pytest.raises(LocalProtocolError, match="mapping or an iterable"):
        WebSocketContext(["Content-Type"], b"")
    with pytest.raises(LocalProtocolError, match="str or bytes"):
        WebSocketContext([("Meta-X", 5)], b"")
    with pytest.raises(LocalProtocolError, match="not valid UTF-8"):
        _ctx(b"").send(b"\xff")
    with pytest.raises(LocalProtocolError, match="not a control message"):
        _ctx(b"").send_control("subscribe")  # type: ignore[arg-type]
    # A str header value beyond latin-1 is carried as UTF-8 rather than refused.
    assert WebSocketContext([("Meta-X", "€")], b"").meta == {"x": "€"}


def test_ws_events_pair_harness() -> None:
    """Whatever the context encodes, the proxy's decoder reads back as the same events."""
    ctx = _ctx(OPEN)
    ctx.accept()
    for i in range(50):
        ctx.send(f"message {i}")
    _, _, events = _answer(ctx)
    assert [e.data for e in events[1:]] == [f"m:message {i}".encode() for i in range(50)]


@settings(max_examples=examples(200))
@given(st.binary(max_size=200))
def test_ws_garbage_raises_only_protocol_errors(body: bytes) -> None:
    try:
        ctx = _ctx(body)
        ctx.response()
    except ProtocolError as exc:
        assert isinstance(exc, WebSocketEventsError | LocalProtocolError)


def test_ws_large_body_is_linear() -> None:
    message = b"x" * 1000
    body = encode_events([Text(message)] * 1000)  # about 1 MB
    ctx = _ctx(body)
    assert len(ctx.messages) == 1000 and ctx.messages[-1] == message.decode()
    with pytest.raises(WebSocketEventsError):
        _ctx(encode_events([Text(b"y" * 2000)]), max_event_size=1000)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Content-Type", WOH)], True),
        ({"content-type": "Application/WebSocket-Events; x=1"}, True),
        ([(b"content-type", b"text/plain")], False),
        ([], False),
    ],
)
def test_is_websocket_over_http(headers: Any, expected: bool) -> None:
    assert is_websocket_over_http(headers) is expected


# --- Grip-Sig ----------------------------------------------------------------------------------

SECRET = "origin-test-secret-that-is-long-enough"


def _b64url(n: int, size: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_verify_hs256_forms() -> None:
    token = mint_sig(SigningKey("HS256", SECRET.encode()), "pushpin", NOW)
    for headers in (
        {"Grip-Sig": token},
        [("grip-sig", token)],
        [(b"GRIP-SIG", token.encode())],
    ):
        for key in (
            SECRET,
            SECRET.encode(),
            parse_verify_key(SECRET),
            SigningKey("HS256", SECRET.encode()),
        ):
            claims = verify_request(headers, key, NOW)  # type: ignore[arg-type]
            assert claims == {"iss": "pushpin", "exp": int(NOW) + 3600}
    assert verify_request({"Grip-Sig": token}, SECRET, NOW, iss="pushpin") is not None
    assert verify_request({"Grip-Sig": token}, SECRET, NOW, iss="other") is None


def test_verify_es256_pem_and_jwk(ec_key: ec.EllipticCurvePrivateKey) -> None:
    token = mint_sig(SigningKey("ES256", ec_key), "fastly:svc", NOW)
    numbers = ec_key.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(numbers.x, 32), "y": _b64url(numbers.y, 32)}
    headers = {"Grip-Sig": token}
    assert verify_request(headers, _pem(ec_key), NOW, iss="fastly:svc") is not None
    assert verify_request(headers, jwk, NOW) is not None
    assert verify_request(headers, json.dumps(jwk), NOW) is not None
    # Fastly's published key did not sign it: invalid, which behaves as absent.
    assert verify_request(headers, FASTLY_FANOUT_JWK, NOW) is None
    with pytest.raises(SigError) as info:
        verify_request_strict(headers, FASTLY_FANOUT_JWK, NOW)
    assert info.value.reason == "bad-signature"


def test_verify_rs256(rsa_key: rsa.RSAPrivateKey) -> None:
    token = mint_sig(SigningKey("RS256", rsa_key), "pushpin", NOW)
    assert verify_request({"Grip-Sig": token}, _pem(rsa_key), NOW) is not None
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert verify_request({"Grip-Sig": token}, _pem(other), NOW) is None


# (headers, reason given by the strict check)
INVALID_SIG_VECTORS: list[tuple[dict[str, str], str]] = [
    ({}, "missing"),
    ({"Grip-Sig": ""}, "missing"),
    ({"Grip-Sig": "not.a.jwt"}, "malformed"),
    (
        {"Grip-Sig": mint_sig(SigningKey("HS256", b"another-secret-32-bytes-long-xxxx"), "p", NOW)},
        "bad-signature",
    ),
    ({"Grip-Sig": mint_sig(SigningKey("HS256", SECRET.encode()), "p", NOW - 3600)}, "expired"),
]


@pytest.mark.parametrize(("headers", "reason"), INVALID_SIG_VECTORS)
def test_invalid_is_absent(headers: dict[str, str], reason: str) -> None:
    assert verify_request(headers, SECRET, NOW) is None
    with pytest.raises(SigError) as info:
        verify_request_strict(headers, SECRET, NOW)
    assert info.value.reason == reason


def test_verify_leeway_and_key_errors() -> None:
    token = mint_sig(SigningKey("HS256", SECRET.encode()), "p", NOW - 3600)
    assert verify_request({"Grip-Sig": token}, SECRET, NOW, leeway=5) is not None
    for key in ("", b"", 5, "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"):
        with pytest.raises(LocalProtocolError):
            verify_request({"Grip-Sig": token}, key, NOW)  # type: ignore[arg-type]


@settings(max_examples=examples(100))
@given(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_arbitrary_tokens_are_absent(token: str) -> None:
    assert verify_request([("Grip-Sig", token)], SECRET, NOW) is None


# --- end to end: an origin written with these helpers behind `gripcore serve` -------------------


def _chat(request: OriginRequest) -> GripResponse:
    ctx = WebSocketContext(request.header_list, request.body)
    if ctx.is_opening:
        ctx.accept()
        ctx.subscribe("chat")
        ctx.set_connection_meta("User", "ann")
        return ctx.response()
    for message in ctx.messages:
        if message == "who":
            ctx.send(f"you are {ctx.meta.get('user')}")
        elif message == "bye":
            ctx.close(4000, "see you")
        else:
            ctx.send(f"echo {message!s}")
    return ctx.response()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ProxyThread, Publisher]]:
    origin = Origin(
        routes={
            "/stream": lambda r: hold_stream(
                "feed",
                headers={"Content-Type": "text/event-stream"},
                body=b"event: open\ndata:\n\n",
                keep_alive=KeepAlive(b":\n\n", 60),
            ),
            "/poll": lambda r: hold_response("poll", timeout=30, body=b"timed out\n"),
            "/json": lambda r: hold_stream("feed", body="json\n", form="json"),
            "/ws": _chat,
            "/signed": lambda r: (
                200,
                [("Content-Type", "text/plain")],
                b"trusted\n" if verify_request(r.header_list, SECRET, time.time()) else b"who?\n",
            ),
        }
    ).start()
    with (
        running_proxy(
            routes=(f"* 127.0.0.1:{origin.port},over_http",), sig_key=SECRET, sig_iss="gripcore"
        ) as proxy,
        Publisher(f"http://127.0.0.1:{proxy.publish_port}") as publisher,
    ):
        yield proxy, publisher
    origin.stop()


@pytest.mark.e2e
def test_e2e_stream(served: tuple[ProxyThread, Publisher]) -> None:
    proxy, publisher = served
    client = RawClient(proxy.port)
    client.get("/stream")
    assert b"Content-Type: text/event-stream" in client.read_until(b"\r\n\r\n")
    assert client.read_until(b"data:\n\n").endswith(b"event: open\ndata:\n\n")
    json_client = RawClient(proxy.port)
    json_client.get("/json")
    assert json_client.read_until(b"json\n").endswith(b"json\n")
    wait_for(lambda: subscribers(proxy, "feed") == 2)
    publisher.publish_sse("feed", "line 1\nline 2", event="update", event_id="7")
    expected = b"event: update\nid: 7\ndata: line 1\ndata: line 2\n\n"
    assert client.read_until(b"line 2\n\n").endswith(expected)
    assert json_client.read_until(b"line 2\n\n").endswith(expected)
    publisher.publish_close("feed")
    assert client.read_until(b"0\r\n\r\n").endswith(b"\r\n0\r\n\r\n")


@pytest.mark.e2e
def test_e2e_long_poll(served: tuple[ProxyThread, Publisher]) -> None:
    proxy, publisher = served
    client = RawClient(proxy.port)
    client.get("/poll")
    wait_for(lambda: subscribers(proxy, "poll") == 1)
    publisher.publish_response("poll", '{"n": 1}', headers={"Content-Type": "application/json"})
    head, body = client.read_response()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: application/json" in head
    assert body == b'{"n": 1}'


@pytest.mark.e2e
def test_e2e_websocket_over_http(served: tuple[ProxyThread, Publisher]) -> None:
    proxy, publisher = served
    ws = WsClient(proxy.port, "/ws")
    ws.accept()
    wait_for(lambda: subscribers(proxy, "chat") >= 1)
    ws.send_text("hello")
    assert ws.receive_message() == "echo hello"
    ws.send_text("who")
    assert ws.receive_message() == "you are ann"  # Set-Meta-User came back as Meta-User
    publisher.publish_ws("chat", "broadcast")
    assert ws.receive_message() == "broadcast"
    ws.send_text("bye")
    from wsproto.events import CloseConnection

    event = ws.next_event()
    assert isinstance(event, CloseConnection) and (event.code, event.reason) == (4000, "see you")


@pytest.mark.e2e
def test_e2e_grip_sig_from_the_proxy(served: tuple[ProxyThread, Publisher]) -> None:
    proxy, _ = served
    client = RawClient(proxy.port)
    client.get("/signed")
    assert client.read_response()[1] == b"trusted\n"
