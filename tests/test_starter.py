"""The embedded starter kit: every path's exact response, the GRIP it speaks (checked with the
core's own instruct, WebSocket-events and control-message parsers), the publish form, the page
and the CLI banner."""

from __future__ import annotations

import json
import re
import shlex
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore import _starter
from gripcore._errors import LocalProtocolError, PublishError
from gripcore._instruct import parse_instruct
from gripcore._items import parse_publish_body
from gripcore._starter import (
    KEEP_ALIVE_TIMEOUT,
    LONG_POLL_TIMEOUT,
    MAX_PUBLISH_FORM_SIZE,
    MAX_PUBLISH_TEXT_SIZE,
    STARTER_CHANNEL,
    STARTER_PATHS,
    banner,
    handle,
    parse_publish_form,
)
from gripcore._wscontrol import Subscribe, classify_origin_message, parse_control_message
from gripcore._wsevents import Binary, Close, Open, Text, decode_events, encode_events

from .hypothesis_support import examples

Headers = list[tuple[bytes, bytes]]

TEXT_PLAIN = (b"Content-Type", b"text/plain; charset=utf-8")
WOH = [(b"Content-Type", b"application/websocket-events")]
WOH_RESPONSE = (b"Content-Type", b"application/websocket-events")
GRIP_EXTENSION = (b"Sec-WebSocket-Extensions", b"grip")

# --- the GRIP holds: (path, status, headers, body) --------------------------------------------

HOLD_VECTORS: list[tuple[str, int, Headers, bytes]] = [
    (
        "/test/sse",
        200,
        [
            (b"Content-Type", b"text/event-stream"),
            (b"Cache-Control", b"no-cache"),
            (b"Grip-Hold", b"stream"),
            (b"Grip-Channel", b"test"),
            (b"Grip-Keep-Alive", b":\\n\\n; format=cstring; timeout=20"),
        ],
        b": subscribed to test\n\n",
    ),
    (
        "/test/sse?channel=room-1",
        200,
        [
            (b"Content-Type", b"text/event-stream"),
            (b"Cache-Control", b"no-cache"),
            (b"Grip-Hold", b"stream"),
            (b"Grip-Channel", b"room-1"),
            (b"Grip-Keep-Alive", b":\\n\\n; format=cstring; timeout=20"),
        ],
        b": subscribed to room-1\n\n",
    ),
    (
        "/test/stream",
        200,
        [
            (b"Content-Type", b"text/plain"),
            (b"Grip-Hold", b"stream"),
            (b"Grip-Channel", b"test"),
            (b"Grip-Keep-Alive", b"\\n; format=cstring; timeout=20"),
        ],
        b"[stream open on channel test]\n",
    ),
    (
        "/test/stream?x=1&channel=a%3Ab.c_D",
        200,
        [
            (b"Content-Type", b"text/plain"),
            (b"Grip-Hold", b"stream"),
            (b"Grip-Channel", b"a:b.c_D"),
            (b"Grip-Keep-Alive", b"\\n; format=cstring; timeout=20"),
        ],
        b"[stream open on channel a:b.c_D]\n",
    ),
    (
        "/test/long-poll",
        200,
        [
            (b"Content-Type", b"application/json"),
            (b"Grip-Hold", b"response"),
            (b"Grip-Channel", b"test"),
            (b"Grip-Timeout", b"30"),
        ],
        b'{"messages": []}\n',
    ),
    (
        "/test/long-poll?channel=" + "x" * 64,
        200,
        [
            (b"Content-Type", b"application/json"),
            (b"Grip-Hold", b"response"),
            (b"Grip-Channel", b"x" * 64),
            (b"Grip-Timeout", b"30"),
        ],
        b'{"messages": []}\n',
    ),
]

# (path, hold mode, channel, client-visible content type)
INSTRUCT_VECTORS: list[tuple[str, str, str, bytes]] = [
    ("/test/sse", "stream", "test", b"text/event-stream"),
    ("/test/sse?channel=other", "stream", "other", b"text/event-stream"),
    ("/test/stream", "stream", "test", b"text/plain"),
    ("/test/long-poll", "response", "test", b"application/json"),
    ("/test/long-poll?channel=lp", "response", "lp", b"application/json"),
]

# --- errors: (method, path, headers, status, Allow or None, words in the body) ----------------

ERROR_VECTORS: list[tuple[str, str, Headers, int, bytes | None, str]] = [
    ("GET", "/nope", [], 404, None, "no such path '/nope'"),
    ("GET", "/test/sse/", [], 404, None, "no such path '/test/sse/'"),
    ("GET", "/test", [], 404, None, "the starter kit serves /, /test/sse"),
    ("GET", "", [], 404, None, "no such path ''"),
    ("POST", "/", [], 405, b"GET", "/ accepts GET, not 'POST'"),
    ("HEAD", "/test/sse", [], 405, b"GET", "accepts GET"),
    ("DELETE", "/test/stream", [], 405, b"GET", "accepts GET"),
    ("PUT", "/test/long-poll", [], 405, b"GET", "accepts GET"),
    ("get", "/test/long-poll", [], 405, b"GET", "not 'get'"),
    ("PUT", "/test/websocket", WOH, 405, b"POST", "accepts POST"),
    ("GET", "/test/publish", [], 405, b"POST", "accepts POST"),
    ("GET", "/test/sse?channel=", [], 400, None, "invalid channel ''"),
    ("GET", "/test/sse?channel=a&channel=b", [], 400, None, "at most once"),
    ("GET", "/test/stream?channel=a%20b", [], 400, None, "invalid channel 'a b'"),
    ("GET", "/test/stream?channel=a+b", [], 400, None, "invalid channel 'a b'"),
    ("GET", "/test/long-poll?channel=" + "x" * 65, [], 400, None, "1-64 characters"),
    ("GET", "/test/long-poll?channel=%C3%A9", [], 400, None, "invalid channel"),
    ("GET", "/?channel=a,b", [], 400, None, "invalid channel 'a,b'"),
    ("GET", "/test/websocket", [], 400, None, "this is a WebSocket endpoint"),
    ("GET", "/test/websocket", WOH, 400, None, "this is a WebSocket endpoint"),
    ("POST", "/test/websocket", [], 400, None, "application/websocket-events"),
    (
        "POST",
        "/test/websocket",
        [(b"Content-Type", b"text/plain")],
        400,
        None,
        "this is a WebSocket endpoint",
    ),
    (
        "POST",
        "/test/websocket?channel=!",
        WOH,
        400,
        None,
        "invalid channel '!'",
    ),
]

# --- WebSocket-over-HTTP: (path, request body, response body, grip extension expected) --------

SUBSCRIBE_TEST = b'c:{"type":"subscribe","channel":"test"}'
OPEN_REPLY = b"OPEN\r\nTEXT 27\r\n" + SUBSCRIBE_TEST + b"\r\n"

WOH_VECTORS: list[tuple[str, bytes, bytes, bool]] = [
    ("/test/websocket", b"OPEN\r\n", OPEN_REPLY, True),
    ("/test/websocket", b"OPEN 0\r\n\r\n", OPEN_REPLY, True),
    (
        "/test/websocket?channel=room",
        b"OPEN\r\n",
        b'OPEN\r\nTEXT 27\r\nc:{"type":"subscribe","channel":"room"}\r\n',
        True,
    ),
    ("/test/websocket", b"TEXT 5\r\nhello\r\n", b"TEXT 7\r\nm:hello\r\n", False),
    ("/test/websocket", b"TEXT 0\r\n\r\n", b"TEXT 2\r\nm:\r\n", False),
    (
        "/test/websocket",
        b"TEXT 1\r\na\r\nPING\r\nTEXT 2\r\nbc\r\n",
        b"TEXT 3\r\nm:a\r\nTEXT 4\r\nm:bc\r\n",
        False,
    ),
    ("/test/websocket", b"BINARY 2\r\n\x00\xff\r\n", b"BINARY 4\r\nm:\x00\xff\r\n", False),
    ("/test/websocket", b"PING\r\nPONG 2\r\nhi\r\n", b"", False),
    ("/test/websocket", b"CLOSE 5\r\n\x03\xe8bye\r\n", b"CLOSE 2\r\n\x03\xe8\r\n", False),
    ("/test/websocket", b"CLOSE\r\n", b"CLOSE\r\n", False),
    (
        "/test/websocket",
        b"TEXT 1\r\na\r\nCLOSE 2\r\n\x0f\xa0\r\nTEXT 1\r\nb\r\n",
        b"TEXT 3\r\nm:a\r\nCLOSE 2\r\n\x0f\xa0\r\n",
        False,
    ),
    ("/test/websocket", b"DISCONNECT\r\n", b"", False),
    ("/test/websocket", b"TEXT 1\r\na\r\nDISCONNECT\r\n", b"", False),
    ("/test/websocket", b"", b"", False),
    ("/test/websocket", b"FUTURE 3\r\nabc\r\n", b"", False),
]

WOH_ERROR_VECTORS: list[tuple[bytes, str]] = [
    (b"TEXT zz\r\nab\r\n", "invalid application/websocket-events body: invalid content length"),
    (b"TEXT 5\r\nab", "incomplete event"),
    (b"TEXT 2\r\n\xff\xfe\r\n", "not valid UTF-8"),
    (b"TEXT 1\r\na\r\nOPEN\r\n", "OPEN must be the first event"),
    (b"OPEN\r\nOPEN\r\n", "OPEN must be the first event"),
]

# --- the publish form: (body, channel, http-stream content, ws-message content) ---------------

FORM_VECTORS: list[tuple[bytes, str, str, str]] = [
    (b'{"channel": "test", "text": "hello"}', "test", "data: hello\n\n", "hello"),
    (b'{"text": "hi", "channel": "room:1"}', "room:1", "data: hi\n\n", "hi"),
    (b'{"channel":"t","text":"a\\nb"}', "t", "data: a\ndata: b\n\n", "a\nb"),
    (b'{"channel":"t","text":"a\\r\\nb\\rc"}', "t", "data: a\ndata: b\ndata: c\n\n", "a\r\nb\rc"),
    (b'{"channel":"t","text":"a\\n"}', "t", "data: a\ndata: \n\n", "a\n"),
    (b'{"channel":"t","text":" spaced "}', "t", "data:  spaced \n\n", " spaced "),
    (
        '{"channel":"t","text":"caf\u00e9 \u2603"}'.encode(),
        "t",
        "data: caf\u00e9 \u2603\n\n",
        "caf\u00e9 \u2603",
    ),
    (b'{"channel":"t","text":"' + b"x" * 4096 + b'"}', "t", f"data: {'x' * 4096}\n\n", "x" * 4096),
]

FORM_ERROR_VECTORS: list[tuple[bytes, str]] = [
    (b"", "Body is not valid JSON"),
    (b"{", "Body is not valid JSON"),
    (b"\xff", "Body is not valid JSON"),
    (b"[" * 20_000 + b"]" * 20_000, "over the limit"),
    (b"[" * 10_000 + b"]" * 10_000, "Body is not valid JSON"),
    (b"[]", "must be a JSON object"),
    (b'"text"', "not str"),
    (b'{"text": "hi"}', "field 'channel' must be a string, not missing"),
    (b'{"channel": "test"}', "field 'text' must be a string, not missing"),
    (b'{"channel": 5, "text": "hi"}', "field 'channel' must be a string, not a int"),
    (b'{"channel": "test", "text": null}', "'text' must be a string, not a NoneType"),
    (b'{"channel": "test", "text": "hi", "id": "1"}', "unknown fields ['id']"),
    (b'{"channel": "", "text": "hi"}', "invalid channel ''"),
    (b'{"channel": "a b", "text": "hi"}', "invalid channel 'a b'"),
    (b'{"channel": "' + b"c" * 65 + b'", "text": "hi"}', "1-64 characters"),
    (b'{"channel": "test", "text": ""}', "field 'text' is empty"),
    (b'{"channel": "test", "text": "\\ud800"}', "lone surrogate"),
    (b'{"channel":"t","text":"' + b"x" * 4097 + b'"}', "4097 bytes of UTF-8, over the limit"),
    (b'{"channel":"t","text":"' + "\u00e9".encode() * 2049 + b'"}', "4098 bytes"),
    (b" " * (MAX_PUBLISH_FORM_SIZE + 1), "over the limit of"),
]

PANEL_IDS = ["panel-sse", "panel-stream", "panel-longpoll", "panel-websocket"]
FORM_IDS = ["publish-form", "publish-text", "publish-channel", "publish-button"]


def _header(headers: Headers, name: bytes) -> bytes | None:
    values = [value for key, value in headers if key.lower() == name.lower()]
    assert len(values) <= 1
    return values[0] if values else None


def _sse_data(stream: str) -> list[str]:
    """A tiny Server-Sent Events reader: the `data` of each dispatched event (WHATWG rules)."""
    events: list[str] = []
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", stream):
        if not line:
            if data:
                events.append("\n".join(data))
            data = []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            if name == "data":
                data.append(value.removeprefix(" "))
    return events


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status", "headers", "body"), HOLD_VECTORS)
def test_hold_responses(path: str, status: int, headers: Headers, body: bytes) -> None:
    assert handle("GET", path, [], b"") == (status, b"OK", headers, body)


@pytest.mark.parametrize(("path", "hold", "channel", "content_type"), INSTRUCT_VECTORS)
def test_holds_parse_as_grip_instructs(
    path: str, hold: str, channel: str, content_type: bytes
) -> None:
    status, reason, headers, body = handle("GET", path, [(b"Accept", b"*/*")], b"")
    instruct = parse_instruct(status, reason, headers, body, request_uri=path)
    assert instruct.hold == hold
    assert [c.name for c in instruct.channels] == [channel]
    assert all(c.prev_id is None and not c.filters for c in instruct.channels)
    assert dict(instruct.headers)[b"Content-Type"] == content_type
    assert not any(name.lower().startswith(b"grip-") for name, _ in instruct.headers)
    assert instruct.body == body
    if hold == "response":
        assert instruct.timeout == LONG_POLL_TIMEOUT
        assert instruct.keep_alive is None
    else:
        assert instruct.keep_alive is not None
        assert instruct.keep_alive.timeout == KEEP_ALIVE_TIMEOUT
        assert instruct.keep_alive.mode == "idle"
        # Both keep-alives dispatch no SSE event, between or after events.
        assert _sse_data(instruct.keep_alive.data.decode() * 2) == []
        assert _sse_data("data: x\n\n" + instruct.keep_alive.data.decode()) == ["x"]
        if content_type == b"text/event-stream":
            assert instruct.keep_alive.data == b":\n\n"
            assert _sse_data(body.decode()) == []  # the initial body is only a comment
        else:
            assert instruct.keep_alive.data == b"\n"


def test_page_response() -> None:
    status, reason, headers, body = handle("GET", "/", [], b"")
    assert (status, reason, headers) == (
        200,
        b"OK",
        [(b"Content-Type", b"text/html; charset=utf-8")],
    )
    assert body.startswith(b"<!DOCTYPE html>")
    assert handle("GET", "/?channel=room", [], b"")[3] is body  # read once, then cached


@pytest.mark.parametrize(("method", "path", "headers", "status", "allow", "words"), ERROR_VECTORS)
def test_error_responses(
    method: str, path: str, headers: Headers, status: int, allow: bytes | None, words: str
) -> None:
    got_status, reason, got_headers, body = handle(method, path, headers, b"OPEN\r\n")
    assert got_status == status
    assert reason == {400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed"}[status]
    assert got_headers[0] == TEXT_PLAIN
    assert _header(got_headers, b"Allow") == allow
    assert len(got_headers) == (2 if allow else 1)
    assert words in body.decode()
    assert body.endswith(b"\n")


def test_error_messages_survive_unencodable_paths() -> None:
    status, _, _, body = handle("GET", "/\udcff", [], b"")
    assert status == 404
    assert b"\\udcff" in body


def test_starter_paths_are_the_routes() -> None:
    assert list(STARTER_PATHS) == [
        "/",
        "/test/sse",
        "/test/stream",
        "/test/long-poll",
        "/test/websocket",
        "/test/publish",
    ]
    assert all(STARTER_PATHS.values())
    for path in STARTER_PATHS:
        assert handle("OPTIONS", path, [], b"")[0] == 405
    with pytest.raises(TypeError):
        STARTER_PATHS["/x"] = "read-only"  # type: ignore[index]


def test_starter_channel() -> None:
    assert STARTER_CHANNEL == "test"


# --- WebSocket-over-HTTP ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "request_body", "response_body", "extension"), WOH_VECTORS)
def test_websocket_over_http(
    path: str, request_body: bytes, response_body: bytes, extension: bool
) -> None:
    expected_headers = [WOH_RESPONSE, GRIP_EXTENSION] if extension else [WOH_RESPONSE]
    assert handle("POST", path, WOH, request_body) == (
        200,
        b"OK",
        expected_headers,
        response_body,
    )


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/websocket-events",
        b"Application/WebSocket-Events ; x=1",
        b" application/websocket-events",
    ],
)
def test_websocket_content_type_match_is_lenient(content_type: bytes) -> None:
    headers = [(b"Host", b"example"), (b"content-type", content_type)]
    assert handle("POST", "/test/websocket", headers, b"OPEN\r\n")[3] == OPEN_REPLY


def test_websocket_session_flow() -> None:
    """OPEN -> subscribe; TEXT echoed; CLOSE answered; DISCONNECT answered with nothing."""
    path = "/test/websocket?channel=chat"
    _, _, headers, body = handle("POST", path, WOH, encode_events([Open()]))
    assert GRIP_EXTENSION in headers
    opened, control = decode_events(body)
    assert opened == Open()
    assert isinstance(control, Text)
    assert control.data.startswith(b"c:")
    assert parse_control_message(control.data[2:]) == Subscribe("chat")
    assert classify_origin_message(control.data, is_text=True) == Subscribe("chat")

    request = encode_events([Text("h\u00e9llo".encode()), Binary(b"\x01")])
    _, _, headers, body = handle("POST", path, WOH, request)
    assert headers == [WOH_RESPONSE]
    text_echo, binary_echo = decode_events(body)
    assert isinstance(text_echo, Text) and isinstance(binary_echo, Binary)
    assert classify_origin_message(text_echo.data, is_text=True) == "h\u00e9llo".encode()
    assert classify_origin_message(binary_echo.data, is_text=False) == b"\x01"

    _, _, _, body = handle("POST", path, WOH, encode_events([Close(4000, "done")]))
    assert decode_events(body) == [Close(4000)]
    assert handle("POST", path, WOH, b"DISCONNECT\r\n")[3] == b""


@pytest.mark.parametrize(("request_body", "words"), WOH_ERROR_VECTORS)
def test_websocket_bad_events(request_body: bytes, words: str) -> None:
    status, _, headers, body = handle("POST", "/test/websocket", WOH, request_body)
    assert (status, headers) == (400, [TEXT_PLAIN])
    assert words in body.decode()


# --- the publish form -------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "channel", "stream", "ws"), FORM_VECTORS)
def test_publish_form(body: bytes, channel: str, stream: str, ws: str) -> None:
    publish = parse_publish_form(body)
    doc = json.loads(publish)
    assert doc == {
        "items": [
            {
                "channel": channel,
                "formats": {
                    "http-stream": {"content": stream},
                    "ws-message": {"content": ws},
                    "http-response": {"body": json.dumps({"messages": [ws]}) + "\n"},
                },
            }
        ]
    }
    publish.decode("ascii")  # JSON-escaped: safe in any transport
    (item,) = parse_publish_body(publish)
    assert item.channel == channel
    assert item.http_stream is not None and item.http_stream.content == stream.encode()
    assert item.ws_message is not None and item.ws_message.content == ws.encode()
    assert item.ws_message.type == "text"
    assert item.http_response is not None and item.http_response.body is not None
    assert json.loads(item.http_response.body) == {"messages": [ws]}


def test_publish_form_with_an_id() -> None:
    doc = json.loads(parse_publish_form(b'{"channel": "c", "text": "a\\nb"}', item_id="x1"))
    (item,) = doc["items"]
    assert item["id"] == "x1"
    assert item["formats"]["http-stream"]["content"] == "id: x1\ndata: a\ndata: b\n\n"
    assert json.loads(item["formats"]["http-response"]["body"]) == {
        "messages": ["a\nb"],
        "id": "x1",
    }
    assert item["formats"]["ws-message"] == {"content": "a\nb"}


def test_publish_form_through_handle() -> None:
    body = b'{"channel": "test", "text": "hi"}'
    assert handle("POST", "/test/publish", [], body) == (
        202,
        b"Accepted",
        [(b"Content-Type", b"application/json")],
        parse_publish_form(body),
    )
    status, _, headers, reply = handle("POST", "/test/publish", [], b"nope")
    assert (status, headers) == (400, [TEXT_PLAIN])
    assert reply.startswith(b"Body is not valid JSON")


@pytest.mark.parametrize(("body", "words"), FORM_ERROR_VECTORS)
def test_publish_form_errors(body: bytes, words: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_publish_form(body)
    assert words in str(info.value)
    assert info.value.error_status_hint == 400


def test_publish_form_largest_honest_body() -> None:
    """The worst-case JSON escaping of a maximal text is within MAX_PUBLISH_FORM_SIZE."""
    text = "\x1f" * MAX_PUBLISH_TEXT_SIZE
    body = json.dumps({"channel": "c" * 64, "text": text}).encode()
    assert len(body) <= MAX_PUBLISH_FORM_SIZE
    assert json.loads(parse_publish_form(body))["items"][0]["formats"]["ws-message"] == {
        "content": text
    }


def test_publish_form_rejects_non_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="must be bytes, not str"):
        parse_publish_form('{"channel": "test", "text": "hi"}')  # type: ignore[arg-type]


CHANNELS = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)


@given(channel=CHANNELS, text=st.text(min_size=1, max_size=300))
def test_publish_form_round_trip(channel: str, text: str) -> None:
    """What the page sends arrives intact in every format (SSE normalises line breaks)."""
    (item,) = parse_publish_body(
        parse_publish_form(json.dumps({"channel": channel, "text": text}).encode())
    )
    assert item.channel == channel
    assert item.ws_message is not None and item.ws_message.content.decode() == text
    assert item.http_stream is not None
    assert _sse_data(item.http_stream.content.decode()) == [re.sub(r"\r\n|\r", "\n", text)]
    assert item.http_response is not None and item.http_response.body is not None
    assert json.loads(item.http_response.body) == {"messages": [text]}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["channel", "text", "x"]) | st.text(max_size=5), children)
    ),
    max_leaves=12,
)


@settings(max_examples=examples(150))
@given(st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_publish_form_fuzz_raises_only_publish_error(body: bytes) -> None:
    try:
        publish = parse_publish_form(body)
    except PublishError:
        return
    assert len(parse_publish_body(publish)) == 1


@given(st.fixed_dictionaries({"channel": JSON_VALUES | CHANNELS, "text": JSON_VALUES}))
def test_publish_form_fields_fuzz(form: dict[str, Any]) -> None:
    try:
        publish = parse_publish_form(json.dumps(form).encode())
    except PublishError:
        return
    assert json.loads(publish)["items"][0]["formats"]["ws-message"]["content"] == form["text"]


# --- handle never raises ----------------------------------------------------------------------

METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD"]) | st.text(max_size=8)
PATHS = st.sampled_from([*STARTER_PATHS, "/x"]) | st.text(max_size=20)
QUERIES = st.sampled_from(["", "?channel=room", "?channel=", "?channel=a&channel=b"]) | st.text(
    max_size=20
).map(lambda q: "?" + q)
HEADERS = st.lists(
    st.sampled_from(WOH) | st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=3
)
WOH_BODIES = st.lists(
    st.sampled_from([Open(), Text(b"x"), Binary(b"\x00"), Close(1000, "r"), Close(), Text(b"")]),
    max_size=4,
).map(encode_events)


@settings(max_examples=examples(150))
@given(METHODS, PATHS, QUERIES, HEADERS, st.binary(max_size=80) | WOH_BODIES)
def test_handle_fuzz_never_raises(
    method: str, path: str, query: str, headers: Headers, body: bytes
) -> None:
    status, reason, out_headers, out_body = handle(method, path + query, headers, body)
    assert status in {200, 202, 400, 404, 405}
    assert reason and isinstance(out_body, bytes)
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in out_headers)
    if status == 200 and out_headers[0] == WOH_RESPONSE:
        decode_events(out_body)  # always a valid events body


# --- large inputs -----------------------------------------------------------------------------


def test_large_websocket_batch_is_linear() -> None:
    events = [Text(b"%050d" % i) for i in range(20_000)]  # about 1 MB in 20,000 events
    request = encode_events(events)
    assert len(request) > 1_000_000
    _, _, _, body = handle("POST", "/test/websocket", WOH, request)
    assert body == encode_events([Text(b"m:" + e.data) for e in events])


def test_large_query_and_form() -> None:
    query = "&".join(f"k{i}=v" for i in range(120_000)) + "&channel=big"
    assert len(query) > 1_000_000
    assert handle("GET", "/test/stream?" + query, [], b"")[3] == b"[stream open on channel big]\n"
    with pytest.raises(PublishError, match="over the limit"):
        parse_publish_form(b"{" + b" " * 1_000_000 + b"}")


# --- the page ---------------------------------------------------------------------------------


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, tuple[str, dict[str, str | None]]] = {}
        self.stack: list[str | None] = []  # the id of each open <section>
        self.message_lists: dict[str, int] = {}
        self.badges: dict[str, int] = {}
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids[str(attributes["id"])] = (tag, attributes)
        classes = (attributes.get("class") or "").split()
        if tag == "section":
            self.stack.append(attributes.get("id"))
        elif self.stack and self.stack[-1]:
            if tag == "ul" and "messages" in classes:
                self.message_lists[self.stack[-1]] = self.message_lists.get(self.stack[-1], 0) + 1
            if "badge" in classes:
                self.badges[self.stack[-1]] = self.badges.get(self.stack[-1], 0) + 1
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.stack.pop()
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.fixture(scope="module")
def page() -> str:
    return handle("GET", "/", [], b"")[3].decode("utf-8")


def test_page_has_the_panels_and_the_form(page: str) -> None:
    parser = _PageParser()
    parser.feed(page)
    parser.close()
    for panel in PANEL_IDS:
        assert parser.ids[panel][0] == "section"
        assert parser.message_lists[panel] == 1
        assert parser.badges[panel] == 1
    assert parser.ids["publish-form"][0] == "form"
    assert parser.ids["publish-text"][0] == "input"
    assert parser.ids["publish-channel"][1]["value"] == "test"
    assert parser.ids["publish-button"][1]["type"] == "submit"
    assert "last-event-id" in page and "history" in page  # the long-poll panel resumes
    assert page.count('class="stream-status"') == 1
    assert re.search(
        r"@media \(min-width: 900px\) \{\s*main \{ grid-template-columns: repeat\(2,", page
    )
    assert all(name in parser.ids for name in FORM_IDS)
    script = "".join(parser.scripts)
    for needle in [
        'new EventSource("/test/sse"',
        'fetch("/test/stream"',
        'fetch("/test/long-poll"',
        '"/test/websocket"',
        'fetch("/test/publish"',
        "getReader()",
        "function sseParser(",  # the stream panel shows SSE events, not network reads
        'createElement("li")',
        'searchParams.set("channel"',  # the channel field reopens the page on ?channel=
        'addEventListener("pagehide"',  # a left page closes its held connections
    ]:
        assert needle in script


def test_page_is_self_contained(page: str) -> None:
    assert re.findall(r"(?i)\b(?:https?|wss?)://[\w.\[-]", page) == []
    assert re.findall(r"(?i)<(?:img|iframe)\b|\bsrc\s*=", page) == []
    assert "//cdn" not in page and "@import" not in page
    # The one <link> is an empty inline favicon, so the browser asks for no /favicon.ico (404).
    assert re.findall(r"(?i)<link\b[^>]*>", page) == ['<link rel="icon" href="data:,">']


def test_missing_page_is_a_local_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_starter, "files", lambda package: tmp_path)
    _starter._page.cache_clear()
    try:
        with pytest.raises(LocalProtocolError, match=r"starter/\*\.html must be installed"):
            handle("GET", "/", [], b"")
    finally:
        _starter._page.cache_clear()


# --- the banner -------------------------------------------------------------------------------


def test_banner() -> None:
    text = banner("http://127.0.0.1:7999/", "http://127.0.0.1:5561/publish/")
    assert "http://127.0.0.1:7999/\n" in text
    for path in ["/test/sse", "/test/stream", "/test/long-poll"]:
        assert f"curl -N http://127.0.0.1:7999{path}\n" in text
    assert "ws://127.0.0.1:7999/test/websocket" in text
    publish_lines = [line for line in text.splitlines() if "5561" in line]
    assert len(publish_lines) == 1
    argv = shlex.split(publish_lines[0])
    assert argv[:2] == ["curl", "-d"] and argv[3] == "http://127.0.0.1:5561/publish/"
    doc = json.loads(argv[2])
    assert doc == json.loads(parse_publish_form(b'{"channel": "test", "text": "hello"}'))
    (item,) = parse_publish_body(argv[2].encode())
    assert item.http_stream is not None and item.http_stream.content == b"data: hello\n\n"
    assert item.ws_message is not None and item.ws_message.content == b"hello"
    assert item.http_response is not None
    assert item.http_response.body == b'{"messages": ["hello"]}\n'
    form_lines = [line for line in text.splitlines() if "/test/publish" in line]
    argv = shlex.split(form_lines[-1])
    assert argv[-1] == "http://127.0.0.1:7999/test/publish"
    assert parse_publish_form(argv[2].encode()) == parse_publish_form(
        b'{"channel":"test","text":"hello"}'
    )


def test_banner_https_and_quoting() -> None:
    text = banner("https://example.test:8443", "https://example.test/pub lish?a=1&b=2")
    assert "wss://example.test:8443/test/websocket" in text
    assert "'https://example.test/pub lish?a=1&b=2'" in text


@pytest.mark.parametrize(
    ("listen", "publish", "what"),
    [
        ("127.0.0.1:7999", "http://127.0.0.1:5561/publish/", "listen_url"),
        ("http://127.0.0.1:7999", "tcp://127.0.0.1:5561", "publish_url"),
    ],
)
def test_banner_rejects_non_http_urls(listen: str, publish: str, what: str) -> None:
    with pytest.raises(LocalProtocolError, match=what):
        banner(listen, publish)
