"""Publish items: vectors for every field (valid and invalid, exact messages), both item shapes,
every action per format, base64, size limits, the Fastly Fanout subset, a hypothesis round trip,
fuzzing, and a 1 MB body.

`parse_publish_body` takes a whole body (the control API reads it with Content-Length first), so
the byte-at-a-time feeding used for incremental parsers does not apply; trailing data after the
JSON document is a vector that must be rejected instead.
"""

from __future__ import annotations

import base64
import json
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore import _items
from gripcore._errors import (
    ContentTooLargeError,
    LocalProtocolError,
    ProtocolError,
    PublishError,
)
from gripcore._items import (
    DEFAULT_MAX_CONTENT_SIZE,
    HttpResponseFormat,
    HttpStreamFormat,
    Item,
    WsMessageFormat,
    default_reason,
    encode_publish_body,
    item_to_json,
    parse_item,
    parse_items,
    parse_publish_body,
)

from .hypothesis_support import examples

# --- helpers to write vectors compactly ---------------------------------------------------------


def hr(fmt: Any) -> dict[str, Any]:
    """An item on channel `c` carrying `fmt` as its http-response format."""
    return {"channel": "c", "formats": {"http-response": fmt}}


def hs(fmt: Any) -> dict[str, Any]:
    return {"channel": "c", "formats": {"http-stream": fmt}}


def ws(fmt: Any) -> dict[str, Any]:
    return {"channel": "c", "formats": {"ws-message": fmt}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


STREAM_X = {"http-stream": {"content": "x"}}
ITEM_X = Item("c", http_stream=HttpStreamFormat(content=b"x"))


def body_of(*items: Any) -> bytes:
    return json.dumps({"items": list(items)}).encode("utf-8")


# --- body-level vectors -------------------------------------------------------------------------

BODY_ERRORS: list[tuple[bytes, str]] = [
    (b"", "Body is not valid JSON."),
    (b"{", "Body is not valid JSON."),
    (b"\xff\xfe", "Body is not valid JSON."),
    (b'{"items": ["\xff"]}', "Body is not valid JSON."),  # not UTF-8
    ('{"items": []}'.encode("utf-16"), "Body is not valid JSON."),  # only UTF-8 is accepted
    (b'\xef\xbb\xbf{"items": []}', "Body is not valid JSON."),  # a BOM is not JSON
    (b'{"items": []} x', "Body is not valid JSON."),  # trailing data stays an error
    (b'{"items": []}{}', "Body is not valid JSON."),
    (b'{"items": [NaN]}', "Body is not valid JSON."),
    (b'{"items": [Infinity]}', "Body is not valid JSON."),
    (b'{"items": [-Infinity]}', "Body is not valid JSON."),
    (b"[" * 100_000 + b"]" * 100_000, "Body is not valid JSON."),  # too deep to parse
    (b'{"items": [' + b"1" * 5000 + b"]}", "Body is not valid JSON."),  # int too long to convert
    (b"{'items': []}", "Body is not valid JSON."),
    (b"[]", "Invalid format."),
    (b'"items"', "Invalid format."),
    (b"null", "Invalid format."),
    (b"3", "Invalid format."),
    (b"{}", "Invalid format: object does not contain 'items'"),
    (b'{"items": null}', "Invalid format: object does not contain 'items'"),
    (b'{"item": []}', "Invalid format: object does not contain 'items'"),
    (b'{"items": {}}', "Invalid format: object contains 'items' with wrong type"),
    (b'{"items": "x"}', "Invalid format: object contains 'items' with wrong type"),
    (b'{"items": 1}', "Invalid format: object contains 'items' with wrong type"),
    (b'{"items": [3]}', "Invalid format: item 0: publish item object is not an object"),
    (
        body_of({"channel": "a", **STREAM_X}, {"channel": "b"}),
        "Invalid format: item 1: no formats specified",
    ),
]


@pytest.mark.parametrize(("body", "message"), BODY_ERRORS)
def test_body_errors(body: bytes, message: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_publish_body(body)
    assert str(info.value) == message
    assert info.value.error_status_hint == 400


BODY_VALID: list[tuple[bytes, list[Item]]] = [
    (b'{"items": []}', []),
    (b' \n{"items": []}\n ', []),
    (b'{"items": 3, "items": []}', []),  # duplicate keys: the last one wins
    (b'{"items": [], "extra": {"anything": [1, 2]}}', []),
    (body_of({"channel": "c", **STREAM_X}), [ITEM_X]),
    (bytearray(body_of({"channel": "c", **STREAM_X})), [ITEM_X]),
    (memoryview(body_of({"channel": "c", **STREAM_X})), [ITEM_X]),
    (
        body_of({"channel": "a", **STREAM_X}, {"channel": "b", **STREAM_X}),
        [
            Item("a", http_stream=HttpStreamFormat(content=b"x")),
            Item("b", http_stream=HttpStreamFormat(content=b"x")),
        ],
    ),
    (
        '{"items": [{"channel": "\u00e9", "http-stream": {"content": "\u2603"}}]}'.encode(),
        [Item("\u00e9", http_stream=HttpStreamFormat(content="\u2603".encode()))],
    ),
]


@pytest.mark.parametrize(("body", "expected"), BODY_VALID)
def test_body_valid(body: bytes, expected: list[Item]) -> None:
    assert parse_publish_body(body) == expected


def test_body_must_be_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="must be bytes"):
        parse_publish_body('{"items": []}')  # type: ignore[arg-type]


# --- item-level valid vectors: JSON item -> Item ------------------------------------------------

ITEM_VALID: list[tuple[Any, Item]] = [
    # item fields
    ({"channel": "c", **STREAM_X}, ITEM_X),  # legacy form: formats on the item itself
    ({"channel": "c", "formats": STREAM_X}, ITEM_X),
    ({"channel": "c", "formats": None, **STREAM_X}, ITEM_X),  # null formats: legacy form
    (
        # when both are present, `formats` wins and top-level formats are ignored (Pushpin)
        {"channel": "c", "formats": STREAM_X, "ws-message": {"content": "y"}},
        ITEM_X,
    ),
    (
        {"channel": "c", "id": "1", "prev-id": "0", "formats": STREAM_X},
        Item("c", id="1", prev_id="0", http_stream=HttpStreamFormat(content=b"x")),
    ),
    ({"channel": "c", "id": "", "prev-id": "", "formats": STREAM_X}, ITEM_X),  # "" = absent
    ({"channel": "c", "id": None, "prev-id": None, "formats": STREAM_X}, ITEM_X),
    (
        {"channel": "c", "meta": {"sender": "u1", "k": ""}, "formats": STREAM_X},
        Item("c", meta={"sender": "u1", "k": ""}, http_stream=HttpStreamFormat(content=b"x")),
    ),
    ({"channel": "c", "meta": {}, "formats": STREAM_X}, ITEM_X),
    ({"channel": "c", "meta": None, "formats": STREAM_X}, ITEM_X),
    (
        {"channel": "c", "no-seq": True, "formats": STREAM_X},
        Item("c", no_seq=True, http_stream=HttpStreamFormat(content=b"x")),
    ),
    ({"channel": "c", "no-seq": False, "formats": STREAM_X}, ITEM_X),
    ({"channel": "c", "no-seq": None, "size": None, "formats": STREAM_X}, ITEM_X),
    (
        {"channel": "c", "size": 0, "formats": STREAM_X},
        Item("c", size=0, http_stream=HttpStreamFormat(content=b"x")),
    ),
    (
        {"channel": "c", "size": 12345, "formats": STREAM_X},
        Item("c", size=12345, http_stream=HttpStreamFormat(content=b"x")),
    ),
    ({"channel": "c", "unknown": [1, {}], "formats": STREAM_X}, ITEM_X),  # unknown keys ignored
    ({"channel": "c", "formats": {"x-other": 1, **STREAM_X}}, ITEM_X),
    ({"channel": "c", "formats": {"http-response": None, **STREAM_X}}, ITEM_X),  # null = absent
    # http-response
    (hr({"body": "hi"}), Item("c", http_response=HttpResponseFormat(body=b"hi"))),
    (hr({"body": ""}), Item("c", http_response=HttpResponseFormat(body=b""))),
    (
        hr({"body": "\u2603"}),
        Item("c", http_response=HttpResponseFormat(body="\u2603".encode())),
    ),
    (
        hr({"code": 404, "reason": "Nope", "body": "x"}),
        Item("c", http_response=HttpResponseFormat(code=404, reason="Nope", body=b"x")),
    ),
    (
        hr({"code": 200, "body": "x"}),
        Item("c", http_response=HttpResponseFormat(code=200, body=b"x")),
    ),
    (
        hr({"code": 204, "body": ""}),
        Item("c", http_response=HttpResponseFormat(code=204, body=b"")),
    ),
    (
        hr({"code": 304, "reason": "Same \u00e9\ttab", "body-bin": ""}),
        Item("c", http_response=HttpResponseFormat(code=304, reason="Same \u00e9\ttab", body=b"")),
    ),
    (  # surrounding whitespace is not part of a field value (RFC 9110 section 5.5)
        hr({"headers": [["X-A", " \tv a\u00ff "], ["X-B", ""]], "body": "x"}),
        Item(
            "c",
            http_response=HttpResponseFormat(
                headers=(("X-A", "v a\u00ff"), ("X-B", "")), body=b"x"
            ),
        ),
    ),
    (
        hr({"code": 999, "body": "x"}),
        Item("c", http_response=HttpResponseFormat(code=999, body=b"x")),
    ),
    (
        hr({"code": None, "reason": "", "body": "x"}),  # "" reason: the standard phrase
        Item("c", http_response=HttpResponseFormat(body=b"x")),
    ),
    (
        hr({"headers": {"Content-Type": "text/plain", "X-A": ""}, "body": "x"}),
        Item(
            "c",
            http_response=HttpResponseFormat(
                headers=(("Content-Type", "text/plain"), ("X-A", "")), body=b"x"
            ),
        ),
    ),
    (
        hr({"headers": [["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"]], "body": "x"}),
        Item(
            "c",
            http_response=HttpResponseFormat(
                headers=(("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")), body=b"x"
            ),
        ),
    ),
    (
        hr({"headers": [], "body": "x"}),
        Item("c", http_response=HttpResponseFormat(body=b"x")),
    ),
    (
        hr({"headers": {"X-A": "na\u00efve \t v"}, "body": "x"}),  # anything but CR, LF, NUL
        Item(
            "c", http_response=HttpResponseFormat(headers=(("X-A", "na\u00efve \t v"),), body=b"x")
        ),
    ),
    (
        hr({"body-bin": b64(b"\x00\xff"), "body": "ignored"}),  # body-bin wins over body
        Item("c", http_response=HttpResponseFormat(body=b"\x00\xff")),
    ),
    (
        hr({"body-bin": "", "body-patch": [{"op": "add"}]}),
        Item("c", http_response=HttpResponseFormat(body=b"")),
    ),
    (
        hr({"body": "x", "body-patch": [{"op": "add"}]}),  # body wins over body-patch
        Item("c", http_response=HttpResponseFormat(body=b"x")),
    ),
    (
        hr({"body-bin": None, "body": None, "body-patch": [{"op": "remove", "path": "/a"}]}),
        Item(
            "c",
            http_response=HttpResponseFormat(body_patch=({"op": "remove", "path": "/a"},)),
        ),
    ),
    (
        hr({"body-patch": [{"op": "add", "path": "/a", "value": {"b": [1, 2.5, None]}}]}),
        Item(
            "c",
            http_response=HttpResponseFormat(
                body_patch=({"op": "add", "path": "/a", "value": {"b": [1, 2.5, None]}},)
            ),
        ),
    ),
    (
        hr({"body-patch": []}),
        Item("c", http_response=HttpResponseFormat(body_patch=())),
    ),
    (
        hr({"body": "x", "content-filters": ["skip-self", "build-id"]}),
        Item(
            "c",
            http_response=HttpResponseFormat(body=b"x", content_filters=("skip-self", "build-id")),
        ),
    ),
    (
        hr({"body": "x", "content-filters": []}),  # given but empty differs from absent
        Item("c", http_response=HttpResponseFormat(body=b"x", content_filters=())),
    ),
    (hr({"body": "x", "unknown": 1}), Item("c", http_response=HttpResponseFormat(body=b"x"))),
    # http-stream
    (hs({"content": ""}), Item("c", http_stream=HttpStreamFormat(content=b""))),
    (
        hs({"content": "data: x\n\n"}),  # appended verbatim: nothing added
        Item("c", http_stream=HttpStreamFormat(content=b"data: x\n\n")),
    ),
    (
        hs({"content-bin": b64(b"\x80"), "content": "ignored"}),
        Item("c", http_stream=HttpStreamFormat(content=b"\x80")),
    ),
    (
        hs({"content": "x", "content-filters": ["f"]}),
        Item("c", http_stream=HttpStreamFormat(content=b"x", content_filters=("f",))),
    ),
    # ws-message
    (ws({"content": "hi"}), Item("c", ws_message=WsMessageFormat(type="text", content=b"hi"))),
    (
        ws({"content-bin": b64(b"hi")}),  # content-bin defaults to binary
        Item("c", ws_message=WsMessageFormat(type="binary", content=b"hi")),
    ),
    (
        ws({"content-bin": b64(b"\x01"), "content": "ignored"}),
        Item("c", ws_message=WsMessageFormat(type="binary", content=b"\x01")),
    ),
    (
        ws({"type": "binary", "content": "hi"}),
        Item("c", ws_message=WsMessageFormat(type="binary", content=b"hi")),
    ),
    (
        ws({"type": "text", "content-bin": b64(b"hi")}),
        Item("c", ws_message=WsMessageFormat(type="text", content=b"hi")),
    ),
    (ws({"content": ""}), Item("c", ws_message=WsMessageFormat(type="text", content=b""))),
    (ws({"type": "ping"}), Item("c", ws_message=WsMessageFormat(type="ping"))),  # may be empty
    (ws({"type": "pong"}), Item("c", ws_message=WsMessageFormat(type="pong"))),
    (
        ws({"type": "ping", "content": "p" * 125}),
        Item("c", ws_message=WsMessageFormat(type="ping", content=b"p" * 125)),
    ),
    (
        ws({"type": "pong", "content-bin": b64(b"\xff")}),
        Item("c", ws_message=WsMessageFormat(type="pong", content=b"\xff")),
    ),
    (
        ws({"type": None, "content": "x", "content-filters": ["f"]}),
        Item("c", ws_message=WsMessageFormat(content=b"x", content_filters=("f",))),
    ),
    # an item may carry several formats
    (
        {
            "channel": "c",
            "formats": {
                "http-response": {"body": "r"},
                "http-stream": {"content": "s"},
                "ws-message": {"content": "w"},
            },
        },
        Item(
            "c",
            http_response=HttpResponseFormat(body=b"r"),
            http_stream=HttpStreamFormat(content=b"s"),
            ws_message=WsMessageFormat(content=b"w"),
        ),
    ),
]


@pytest.mark.parametrize(("obj", "expected"), ITEM_VALID)
def test_item_valid(obj: Any, expected: Item) -> None:
    snapshot = json.dumps(obj)
    assert parse_item(obj) == expected
    assert parse_items([obj]) == [expected]
    assert parse_publish_body(body_of(obj)) == [expected]
    assert json.dumps(obj) == snapshot  # the input is not modified


# --- actions: every action parses for every format ----------------------------------------------

ACTION_VECTORS: list[tuple[Any, Item]] = [
    # http-response: hint retries, close/refresh parse and are ignored at delivery (Pushpin).
    # Fields only `send` uses are ignored, however invalid, as in Pushpin.
    (hr({"action": "send", "body": "x"}), Item("c", http_response=HttpResponseFormat(body=b"x"))),
    (
        hr({"action": "hint", "code": "bad", "body": 5, "headers": 1}),
        Item("c", http_response=HttpResponseFormat(action="hint")),
    ),
    (hr({"action": "close"}), Item("c", http_response=HttpResponseFormat(action="close"))),
    (hr({"action": "refresh"}), Item("c", http_response=HttpResponseFormat(action="refresh"))),
    (hr({"action": None, "body": "x"}), Item("c", http_response=HttpResponseFormat(body=b"x"))),
    # http-stream: close ends the stream, hint refetches; refresh parses and is ignored.
    (hs({"action": "send", "content": "x"}), ITEM_X),
    (
        hs({"action": "close", "content": 5}),
        Item("c", http_stream=HttpStreamFormat(action="close")),
    ),
    (hs({"action": "hint"}), Item("c", http_stream=HttpStreamFormat(action="hint"))),
    (hs({"action": "refresh"}), Item("c", http_stream=HttpStreamFormat(action="refresh"))),
    # ws-message: close with or without code/reason, refresh for WS-over-HTTP, hint ignored.
    (ws({"action": "send", "content": "x"}), Item("c", ws_message=WsMessageFormat(content=b"x"))),
    (ws({"action": "close"}), Item("c", ws_message=WsMessageFormat(action="close"))),
    (
        ws({"action": "close", "code": 1000}),
        Item("c", ws_message=WsMessageFormat(action="close", code=1000)),
    ),
    (
        ws({"action": "close", "code": 4001, "reason": "bye", "content": "ignored"}),
        Item("c", ws_message=WsMessageFormat(action="close", code=4001, reason="bye")),
    ),
    (
        ws({"action": "close", "code": 3000, "reason": ""}),  # "" reason = none
        Item("c", ws_message=WsMessageFormat(action="close", code=3000)),
    ),
    (
        ws({"action": "close", "code": 1011, "reason": "r" * 123}),
        Item("c", ws_message=WsMessageFormat(action="close", code=1011, reason="r" * 123)),
    ),
    (
        ws({"action": "close", "code": 4999, "reason": "\u00e9" * 61}),  # 122 UTF-8 bytes
        Item("c", ws_message=WsMessageFormat(action="close", code=4999, reason="\u00e9" * 61)),
    ),
    (
        ws({"action": "refresh", "type": "bogus"}),
        Item("c", ws_message=WsMessageFormat(action="refresh")),
    ),
    (ws({"action": "hint"}), Item("c", ws_message=WsMessageFormat(action="hint"))),
]


@pytest.mark.parametrize(("obj", "expected"), ACTION_VECTORS)
def test_actions(obj: Any, expected: Item) -> None:
    item = parse_item(obj)
    assert item == expected
    assert parse_item(item_to_json(item)) == item


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999]
)
def test_ws_close_codes_accepted(code: int) -> None:
    item = parse_item(ws({"action": "close", "code": code}))
    assert item.ws_message == WsMessageFormat(action="close", code=code)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1014, 1015, 2000, 2999, 5000, 65535])
def test_ws_close_codes_rejected(code: int) -> None:
    with pytest.raises(PublishError) as info:
        parse_item(ws({"action": "close", "code": code}))
    assert str(info.value) == "item 0: 'ws-message' contains 'code' with invalid value"


# --- Fastly Fanout's documented subset (pushpin-behaviour.md section 5.8) ---------------------

FASTLY_VECTORS: list[tuple[Any, Item]] = [
    (
        {
            "channel": "test",
            "id": "an-id",
            "prev-id": "the-prev-id",
            "formats": {
                "http-response": {
                    "code": 200,
                    "reason": "OK",
                    "headers": {"Content-Type": "application/json"},
                    "body": '{"hello": "world"}\n',
                }
            },
        },
        Item(
            "test",
            id="an-id",
            prev_id="the-prev-id",
            http_response=HttpResponseFormat(
                code=200,
                reason="OK",
                headers=(("Content-Type", "application/json"),),
                body=b'{"hello": "world"}\n',
            ),
        ),
    ),
    (
        {"channel": "test", "formats": {"http-response": {"body-bin": b64(b"\x89PNG")}}},
        Item("test", http_response=HttpResponseFormat(body=b"\x89PNG")),
    ),
    (
        {"channel": "test", "formats": {"http-stream": {"content": "event: x\ndata: 1\n\n"}}},
        Item("test", http_stream=HttpStreamFormat(content=b"event: x\ndata: 1\n\n")),
    ),
    (
        {"channel": "test", "formats": {"http-stream": {"content-bin": b64(b"\x00\x01")}}},
        Item("test", http_stream=HttpStreamFormat(content=b"\x00\x01")),
    ),
    (
        {"channel": "test", "formats": {"ws-message": {"content": "hello"}}},
        Item("test", ws_message=WsMessageFormat(type="text", content=b"hello")),
    ),
    (
        {"channel": "test", "formats": {"ws-message": {"content-bin": b64(b"\xde\xad")}}},
        Item("test", ws_message=WsMessageFormat(type="binary", content=b"\xde\xad")),
    ),
]


def test_fastly_subset() -> None:
    body = body_of(*(obj for obj, _ in FASTLY_VECTORS))
    assert parse_publish_body(body) == [item for _, item in FASTLY_VECTORS]


# --- item-level invalid vectors: JSON item -> exact message -------------------------------------

LONG_NAME = "x" * 100
ITEM_ERRORS: list[tuple[Any, str]] = [
    # item fields
    (3, "publish item object is not an object"),
    ([], "publish item object is not an object"),
    ({}, "publish item object does not contain 'channel'"),
    ({"channel": None, **STREAM_X}, "publish item object does not contain 'channel'"),
    ({"channel": 5, **STREAM_X}, "publish item object contains 'channel' with wrong type"),
    ({"channel": "", **STREAM_X}, "publish item object contains 'channel' with invalid value"),
    (
        {"channel": "\ud800", **STREAM_X},
        "publish item object contains 'channel' with invalid value",
    ),
    ({"channel": "c", "id": 5, **STREAM_X}, "publish item object contains 'id' with wrong type"),
    (
        {"channel": "c", "id": "\udfff", **STREAM_X},
        "publish item object contains 'id' with invalid value",
    ),
    (
        {"channel": "c", "prev-id": [], **STREAM_X},
        "publish item object contains 'prev-id' with wrong type",
    ),
    ({"channel": "c", "formats": []}, "publish item object contains 'formats' with wrong type"),
    ({"channel": "c", "formats": "x"}, "publish item object contains 'formats' with wrong type"),
    ({"channel": "c"}, "no formats specified"),
    ({"channel": "c", "formats": {}, **STREAM_X}, "no formats specified"),
    ({"channel": "c", "formats": {"http-streams": {}}}, "no formats specified"),
    ({"channel": "c", "http-stream": None}, "no formats specified"),
    (
        {"channel": "c", "meta": [], **STREAM_X},
        "publish item object contains 'meta' with wrong type",
    ),
    (
        {"channel": "c", "meta": "k", **STREAM_X},
        "publish item object contains 'meta' with wrong type",
    ),
    ({"channel": "c", "meta": {"k": 1}, **STREAM_X}, "'meta' contains 'k' with wrong type"),
    ({"channel": "c", "meta": {"k": None}, **STREAM_X}, "'meta' contains 'k' with wrong type"),
    (
        {"channel": "c", "meta": {"k": "\ud800"}, **STREAM_X},
        "'meta' contains 'k' with invalid value",
    ),
    (
        {"channel": "c", "meta": {"\ud800": "v"}, **STREAM_X},
        "'meta' contains '\\ud800' with invalid value",
    ),
    (
        {"channel": "c", "meta": {LONG_NAME: 1}, **STREAM_X},
        f"'meta' contains '{'x' * 61}...' with wrong type",
    ),
    (
        {"channel": "c", "meta": {"a\nb": 1}, **STREAM_X},
        "'meta' contains 'a\\nb' with wrong type",
    ),
    (
        {"channel": "c", "size": "1", **STREAM_X},
        "publish item object contains 'size' with wrong type",
    ),
    (
        {"channel": "c", "size": True, **STREAM_X},
        "publish item object contains 'size' with wrong type",
    ),
    (
        {"channel": "c", "size": 1.5, **STREAM_X},
        "publish item object contains 'size' with wrong type",
    ),
    (
        {"channel": "c", "size": -1, **STREAM_X},
        "publish item object contains 'size' with invalid value",
    ),
    (
        {"channel": "c", "no-seq": "yes", **STREAM_X},
        "publish item object contains 'no-seq' with wrong type",
    ),
    (
        {"channel": "c", "no-seq": 1, **STREAM_X},
        "publish item object contains 'no-seq' with wrong type",
    ),
    # http-response
    (hr("x"), "'http-response' is not an object"),
    (hr([]), "'http-response' is not an object"),
    (hr({"action": 5}), "'http-response' contains 'action' with wrong type"),
    (hr({"action": "bogus"}), "'http-response' contains 'action' with unknown value"),
    (hr({"action": ""}), "'http-response' contains 'action' with unknown value"),
    (hr({"action": "SEND", "body": "x"}), "'http-response' contains 'action' with unknown value"),
    (hr({"code": "200", "body": "x"}), "'http-response' contains 'code' with wrong type"),
    (hr({"code": 200.0, "body": "x"}), "'http-response' contains 'code' with wrong type"),
    (hr({"code": True, "body": "x"}), "'http-response' contains 'code' with wrong type"),
    (hr({"code": 0, "body": "x"}), "'http-response' contains 'code' with invalid value"),
    (hr({"code": 99, "body": "x"}), "'http-response' contains 'code' with invalid value"),
    (hr({"code": 1000, "body": "x"}), "'http-response' contains 'code' with invalid value"),
    (hr({"code": -1, "body": "x"}), "'http-response' contains 'code' with invalid value"),
    # a long-poll gets a final answer: 1xx (and 101 above all) can never be one
    (hr({"code": 100, "body": "x"}), "'http-response' contains 'code' with invalid value"),
    (hr({"code": 101, "body": ""}), "'http-response' contains 'code' with invalid value"),
    (hr({"code": 199, "body": "x"}), "'http-response' contains 'code' with invalid value"),
    (
        hr({"code": 204, "body": "x"}),
        "'http-response' contains a body with code 204, which has none",
    ),
    (
        hr({"code": 304, "body-bin": "QQ=="}),
        "'http-response' contains a body with code 304, which has none",
    ),
    (
        hr({"code": 204, "body-patch": []}),
        "'http-response' contains a body with code 204, which has none",
    ),
    (hr({"reason": 5, "body": "x"}), "'http-response' contains 'reason' with wrong type"),
    (hr({"reason": "a\r\nb", "body": "x"}), "'http-response' contains 'reason' with invalid value"),
    (hr({"reason": "\ud800", "body": "x"}), "'http-response' contains 'reason' with invalid value"),
    # a reason phrase is HTAB, SP, VCHAR and obs-text (RFC 9112 section 4): Latin-1 at most
    (hr({"reason": "\u2603", "body": "x"}), "'http-response' contains 'reason' with invalid value"),
    (hr({"reason": "\u0100", "body": "x"}), "'http-response' contains 'reason' with invalid value"),
    (hr({"reason": "a\x01b", "body": "x"}), "'http-response' contains 'reason' with invalid value"),
    (hr({"reason": "a\x7fb", "body": "x"}), "'http-response' contains 'reason' with invalid value"),
    (hr({"headers": "x", "body": "x"}), "'http-response' contains 'headers' with wrong type"),
    (hr({"headers": 1, "body": "x"}), "'http-response' contains 'headers' with wrong type"),
    (hr({"headers": ["a"], "body": "x"}), "headers contains element with wrong type"),
    (hr({"headers": [{"a": "b"}], "body": "x"}), "headers contains element with wrong type"),
    (hr({"headers": [["a"]], "body": "x"}), "headers contains list with wrong number of elements"),
    (
        hr({"headers": [["a", "b", "c"]], "body": "x"}),
        "headers contains list with wrong number of elements",
    ),
    (hr({"headers": [[1, "b"]], "body": "x"}), "header contains name element with wrong type"),
    (hr({"headers": [["a", 1]], "body": "x"}), "header contains value element with wrong type"),
    (hr({"headers": [["a", None]], "body": "x"}), "header contains value element with wrong type"),
    (hr({"headers": {"a": 1}, "body": "x"}), "headers contains 'a' with wrong type"),
    (hr({"headers": {"a": ["b"]}, "body": "x"}), "headers contains 'a' with wrong type"),
    (
        hr({"headers": {"a b": "x"}, "body": "x"}),
        "headers contains 'a b', which is not a valid name",
    ),
    (hr({"headers": {"": "x"}, "body": "x"}), "headers contains '', which is not a valid name"),
    (
        hr({"headers": [["X:", "x"]], "body": "x"}),
        "headers contains 'X:', which is not a valid name",
    ),
    (
        hr({"headers": [["\u00e9", "x"]], "body": "x"}),
        "headers contains '\u00e9', which is not a valid name",
    ),
    (hr({"headers": {"X": "a\nb"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "a\rb"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "a\x00b"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "\ud800"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "\u2603"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "a\x0bb"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "a\x7f"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({"headers": {"X": "a\x1fb"}, "body": "x"}), "headers contains 'X' with invalid value"),
    (hr({}), "'http-response' does not contain 'body', 'body-bin', or 'body-patch'"),
    (hr({"body": None}), "'http-response' does not contain 'body', 'body-bin', or 'body-patch'"),
    (hr({"body": 5}), "'http-response' contains 'body' with wrong type"),
    (hr({"body": ["x"]}), "'http-response' contains 'body' with wrong type"),
    (hr({"body": "\ud800"}), "'http-response' contains 'body' with invalid value"),
    (hr({"body-bin": 5}), "'http-response' contains 'body-bin' with wrong type"),
    (hr({"body-bin": "!!!!"}), "'http-response' contains 'body-bin' with invalid base64"),
    (hr({"body-bin": "QQ"}), "'http-response' contains 'body-bin' with invalid base64"),
    (hr({"body-bin": "QQ==\n"}), "'http-response' contains 'body-bin' with invalid base64"),
    (hr({"body-bin": "QU JD"}), "'http-response' contains 'body-bin' with invalid base64"),
    (hr({"body-bin": "-_8="}), "'http-response' contains 'body-bin' with invalid base64"),
    (
        hr({"body-bin": "\u00e9\u00e9\u00e9\u00e9"}),
        "'http-response' contains 'body-bin' with invalid base64",
    ),
    (hr({"body-patch": {}}), "'http-response' contains 'body-patch' with wrong type"),
    (hr({"body-patch": "[]"}), "'http-response' contains 'body-patch' with wrong type"),
    (hr({"body-patch": [1]}), "'http-response' contains 'body-patch' element 0 with wrong type"),
    (
        hr({"body-patch": [{"op": "add"}, []]}),
        "'http-response' contains 'body-patch' element 1 with wrong type",
    ),
    (
        hr({"body-patch": [{"path": "/a"}]}),
        "'http-response' contains 'body-patch' element 0 without 'op'",
    ),
    (
        hr({"body-patch": [{"op": 1}]}),
        "'http-response' contains 'body-patch' element 0 with 'op' of wrong type",
    ),
    (
        hr({"body-patch": [{"op": "add", "value": "\ud800"}]}),
        "'http-response' contains 'body-patch' element 0, which is not JSON",
    ),
    (
        hr({"body": "x", "content-filters": "f"}),
        "'http-response' contains 'content-filters' with wrong type",
    ),
    (
        hr({"body": "x", "content-filters": [1]}),
        "'http-response' contains 'content-filters' element with wrong type",
    ),
    (
        hr({"body": "x", "content-filters": ["\ud800"]}),
        "'http-response' contains 'content-filters' element with wrong type",
    ),
    # http-stream
    (hs("x"), "'http-stream' is not an object"),
    (hs({"action": 1}), "'http-stream' contains 'action' with wrong type"),
    (hs({"action": "bogus"}), "'http-stream' contains 'action' with unknown value"),
    (hs({}), "'http-stream' does not contain 'content' or 'content-bin'"),
    (hs({"content": None}), "'http-stream' does not contain 'content' or 'content-bin'"),
    (hs({"content": 5}), "'http-stream' contains 'content' with wrong type"),
    (hs({"content-bin": 5}), "'http-stream' contains 'content-bin' with wrong type"),
    (hs({"content-bin": "A"}), "'http-stream' contains 'content-bin' with invalid base64"),
    (
        hs({"content": "x", "content-filters": {}}),
        "'http-stream' contains 'content-filters' with wrong type",
    ),
    (
        hs({"content": "x", "content-filters": [None]}),
        "'http-stream' contains 'content-filters' element with wrong type",
    ),
    # ws-message
    (ws("x"), "'ws-message' is not an object"),
    (ws({"action": []}), "'ws-message' contains 'action' with wrong type"),
    (ws({"action": "bogus"}), "'ws-message' contains 'action' with unknown value"),
    (ws({"type": 5, "content": "x"}), "'ws-message' contains 'type' with wrong type"),
    (ws({"type": "frame", "content": "x"}), "'ws-message' contains 'type' with unknown value"),
    (ws({"type": ""}), "'ws-message' contains 'type' with unknown value"),  # before content
    (ws({}), "'ws-message' does not contain 'content' or 'content-bin'"),
    (ws({"type": "text"}), "'ws-message' does not contain 'content' or 'content-bin'"),
    (ws({"type": "binary"}), "'ws-message' does not contain 'content' or 'content-bin'"),
    (ws({"content": 5}), "'ws-message' contains 'content' with wrong type"),
    (ws({"content-bin": 5}), "'ws-message' contains 'content-bin' with wrong type"),
    (ws({"content-bin": "****"}), "'ws-message' contains 'content-bin' with invalid base64"),
    (
        ws({"type": "text", "content-bin": b64(b"\xff")}),
        "'ws-message' contains 'content' with invalid value (a text message must be UTF-8)",
    ),
    (
        ws({"type": "ping", "content": "p" * 126}),
        "'ws-message' contains a ping of 126 bytes, over the 125 bytes a control frame can carry",
    ),
    (
        ws({"type": "pong", "content-bin": b64(b"p" * 200)}),
        "'ws-message' contains a pong of 200 bytes, over the 125 bytes a control frame can carry",
    ),
    (
        ws({"content": "x", "content-filters": 1}),
        "'ws-message' contains 'content-filters' with wrong type",
    ),
    (
        ws({"content": "x", "content-filters": [["f"]]}),
        "'ws-message' contains 'content-filters' element with wrong type",
    ),
    (ws({"action": "close", "code": "1000"}), "'ws-message' contains 'code' with wrong type"),
    (ws({"action": "close", "code": 1000.0}), "'ws-message' contains 'code' with wrong type"),
    (ws({"action": "close", "code": False}), "'ws-message' contains 'code' with wrong type"),
    (ws({"action": "close", "code": -1}), "'ws-message' contains 'code' with invalid value"),
    (ws({"action": "close", "reason": 5}), "'ws-message' contains 'reason' with wrong type"),
    (ws({"action": "close", "reason": "bye"}), "'ws-message' contains 'reason' without 'code'"),
    (
        ws({"action": "close", "code": 1000, "reason": "r" * 124}),
        "'ws-message' contains 'reason' longer than 123 bytes",
    ),
    (
        ws({"action": "close", "code": 1000, "reason": "\u00e9" * 62}),
        "'ws-message' contains 'reason' longer than 123 bytes",
    ),
    (
        ws({"action": "close", "code": 1000, "reason": "\ud800"}),
        "'ws-message' contains 'reason' with invalid value",
    ),
    # the first invalid format is reported, in Pushpin's order
    (
        {"channel": "c", "formats": {"ws-message": {}, "http-response": {"body": 1}}},
        "'http-response' contains 'body' with wrong type",
    ),
]


@pytest.mark.parametrize(("obj", "message"), ITEM_ERRORS)
def test_item_errors(obj: Any, message: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_item(obj, index=7)
    assert type(info.value) is PublishError
    assert str(info.value) == f"item 7: {message}"
    with pytest.raises(PublishError) as info:
        parse_items([{"channel": "ok", **STREAM_X}, obj])
    assert str(info.value) == f"item 1: {message}"
    with pytest.raises(PublishError) as info:
        parse_publish_body(body_of(obj))
    assert str(info.value) == f"Invalid format: item 0: {message}"
    assert info.value.error_status_hint == 400


def test_parse_items_wants_a_list() -> None:
    with pytest.raises(PublishError) as info:
        parse_items(({"channel": "c", **STREAM_X},))
    assert str(info.value) == "object contains 'items' with wrong type"


# --- content size limit -------------------------------------------------------------------------

SIZE_VECTORS: list[tuple[Any, str]] = [
    (lambda n: hr({"body": "b" * n}), "'http-response' contains 'body'"),
    (lambda n: hr({"body-bin": b64(b"b" * n)}), "'http-response' contains 'body-bin'"),
    (lambda n: hs({"content": "s" * n}), "'http-stream' contains 'content'"),
    (lambda n: hs({"content-bin": b64(b"s" * n)}), "'http-stream' contains 'content-bin'"),
    (lambda n: ws({"content": "w" * n}), "'ws-message' contains 'content'"),
    (lambda n: ws({"content-bin": b64(b"w" * n)}), "'ws-message' contains 'content-bin'"),
]


def _content(item: Item) -> bytes:
    """The content of the one format `item` carries."""
    if item.http_response is not None:
        assert item.http_response.body is not None
        return item.http_response.body
    if item.http_stream is not None:
        return item.http_stream.content
    assert item.ws_message is not None
    return item.ws_message.content


@pytest.mark.parametrize(("make", "where"), SIZE_VECTORS)
def test_content_size_limit(make: Any, where: str) -> None:
    assert DEFAULT_MAX_CONTENT_SIZE == 32_767
    assert parse_item(make(32_767)) == parse_items([make(32_767)])[0]
    with pytest.raises(ContentTooLargeError) as info:
        parse_publish_body(body_of(make(32_768)))
    assert info.value.error_status_hint == 413
    assert str(info.value) == (
        f"Invalid format: item 0: {where} of 32768 bytes, over the limit of 32767"
    )
    with pytest.raises(ContentTooLargeError) as info:
        parse_item(make(11), index=3, max_content_size=10)
    assert str(info.value) == f"item 3: {where} of 11 bytes, over the limit of 10"
    assert len(_content(parse_item(make(100_000), max_content_size=0))) == 100_000  # unlimited
    assert len(_content(parse_item(make(10), max_content_size=10))) == 10


def test_content_size_counts_utf8_bytes() -> None:
    item = parse_item(hs({"content": "\u00e9" * 5}), max_content_size=10)
    assert item.http_stream == HttpStreamFormat(content="\u00e9".encode() * 5)
    with pytest.raises(ContentTooLargeError):
        parse_item(hs({"content": "\u00e9" * 6}), max_content_size=10)


def test_content_size_limit_skips_body_patch() -> None:
    # A patch is not content: only the publish body limit bounds it (see the module notes).
    patch = [{"op": "add", "path": "/a", "value": "v" * 100}]
    patched = parse_item(hr({"body-patch": patch}), max_content_size=10).http_response
    assert patched == HttpResponseFormat(body_patch=tuple(patch))


@pytest.mark.parametrize("limit", [-1, True, 1.5, "10", None])
def test_invalid_limit_is_local_error(limit: Any) -> None:
    for call in (
        lambda: parse_item({}, max_content_size=limit),
        lambda: parse_items([], max_content_size=limit),
        lambda: parse_publish_body(b"{}", max_content_size=limit),
    ):
        with pytest.raises(LocalProtocolError, match="max_content_size must be an int >= 0"):
            call()


# --- hand-built values are validated like parsed ones -------------------------------------------

CONSTRUCTOR_ERRORS: list[tuple[Any, str]] = [
    (lambda: Item("c"), "no formats specified"),
    (lambda: Item(""), "publish item object contains 'channel' with invalid value"),
    (lambda: Item(b"c"), "publish item object contains 'channel' with wrong type"),
    (
        lambda: Item("c", id="", http_stream=HttpStreamFormat()),
        "publish item object contains 'id' with invalid value",
    ),
    (
        lambda: Item("c", prev_id=1, http_stream=HttpStreamFormat()),
        "publish item object contains 'prev-id' with wrong type",
    ),
    (
        lambda: Item("c", meta=[("k", "v")], http_stream=HttpStreamFormat()),
        "publish item object contains 'meta' with wrong type",
    ),
    (
        lambda: Item("c", meta={1: "v"}, http_stream=HttpStreamFormat()),
        "publish item object contains 'meta' with wrong type",
    ),
    (
        lambda: Item("c", no_seq=1, http_stream=HttpStreamFormat()),
        "publish item object contains 'no-seq' with wrong type",
    ),
    (
        lambda: Item("c", size=-5, http_stream=HttpStreamFormat()),
        "publish item object contains 'size' with invalid value",
    ),
    (
        lambda: Item("c", size=False, http_stream=HttpStreamFormat()),
        "publish item object contains 'size' with wrong type",
    ),
    (
        lambda: Item("c", http_stream=WsMessageFormat()),
        "publish item object contains 'http-stream' with wrong type",
    ),
    (
        lambda: Item("c", http_response={"body": "x"}),
        "publish item object contains 'http-response' with wrong type",
    ),
    (
        lambda: Item("c", ws_message=HttpStreamFormat()),
        "publish item object contains 'ws-message' with wrong type",
    ),
    (
        lambda: HttpResponseFormat(),
        "'http-response' does not contain 'body', 'body-bin', or 'body-patch'",
    ),
    (lambda: HttpResponseFormat(body="x"), "'http-response' contains 'body' with wrong type"),
    (
        lambda: HttpResponseFormat(body=b"", body_patch=()),
        "'http-response' contains both 'body' and 'body-patch'",
    ),
    (
        lambda: HttpResponseFormat(body=b"", reason=""),
        "'http-response' contains 'reason' with invalid value",
    ),
    (
        lambda: HttpResponseFormat(body=b"", code="200"),
        "'http-response' contains 'code' with wrong type",
    ),
    (
        lambda: HttpResponseFormat(body=b"", headers={"a": "b"}),
        "'http-response' contains 'headers' with wrong type",
    ),
    (
        lambda: HttpResponseFormat(body=b"", headers=("ab",)),
        "headers contains element with wrong type",
    ),
    (
        lambda: HttpResponseFormat(body_patch={"op": "add"}),
        "'http-response' contains 'body-patch' with wrong type",
    ),
    (
        lambda: HttpResponseFormat(body=b"", content_filters="f"),
        "'http-response' contains 'content-filters' with wrong type",
    ),
    (
        lambda: HttpResponseFormat(body_patch=[{"op": "add", "value": {1, 2}}]),
        "'http-response' contains 'body-patch' element 0, which is not JSON",
    ),
    (
        lambda: HttpResponseFormat(body_patch=[{"op": "add", "value": float("nan")}]),
        "'http-response' contains 'body-patch' element 0, which is not JSON",
    ),
    (
        lambda: HttpResponseFormat(body_patch=[{"op": "add", "value": _deep(100_000)}]),
        "'http-response' contains 'body-patch' element 0, which is not JSON",
    ),
    (
        lambda: HttpResponseFormat(action="hint", code=404),
        "'http-response' with action 'hint' contains 'code', which only other actions use",
    ),
    (
        lambda: HttpResponseFormat(action="close", body=b""),
        "'http-response' with action 'close' contains 'body', which only other actions use",
    ),
    (
        lambda: HttpResponseFormat(action="refresh", headers=(("a", "b"),)),
        "'http-response' with action 'refresh' contains 'headers', which only other actions use",
    ),
    (
        lambda: HttpResponseFormat(action="hint", reason="x"),
        "'http-response' with action 'hint' contains 'reason', which only other actions use",
    ),
    (
        lambda: HttpResponseFormat(action="hint", body_patch=()),
        "'http-response' with action 'hint' contains 'body-patch', which only other actions use",
    ),
    (
        lambda: HttpResponseFormat(action="hint", content_filters=()),
        "'http-response' with action 'hint' contains 'content-filters', which only other actions use",
    ),
    (
        lambda: HttpResponseFormat(action="Send", body=b""),
        "'http-response' contains 'action' with unknown value",
    ),
    (lambda: HttpStreamFormat(content="x"), "'http-stream' contains 'content' with wrong type"),
    (lambda: HttpStreamFormat(action=None), "'http-stream' contains 'action' with wrong type"),
    (
        lambda: HttpStreamFormat(action="close", content=b"x"),
        "'http-stream' with action 'close' contains 'content', which only other actions use",
    ),
    (
        lambda: HttpStreamFormat(action="hint", content_filters=()),
        "'http-stream' with action 'hint' contains 'content-filters', which only other actions use",
    ),
    (
        lambda: HttpStreamFormat(content_filters=[1]),
        "'http-stream' contains 'content-filters' element with wrong type",
    ),
    (lambda: WsMessageFormat(type="frame"), "'ws-message' contains 'type' with unknown value"),
    (lambda: WsMessageFormat(type=None), "'ws-message' contains 'type' with wrong type"),
    (
        lambda: WsMessageFormat(content=bytearray(b"x")),
        "'ws-message' contains 'content' with wrong type",
    ),
    (
        lambda: WsMessageFormat(code=1000),
        "'ws-message' with action 'send' contains 'code', which only other actions use",
    ),
    (
        lambda: WsMessageFormat(reason="x"),
        "'ws-message' with action 'send' contains 'reason', which only other actions use",
    ),
    (
        lambda: WsMessageFormat(action="hint", code=1000),
        "'ws-message' with action 'hint' contains 'code', which only other actions use",
    ),
    (
        lambda: WsMessageFormat(action="close", type="binary"),
        "'ws-message' with action 'close' contains 'type', which only other actions use",
    ),
    (
        lambda: WsMessageFormat(action="close", content=b"x"),
        "'ws-message' with action 'close' contains 'content', which only other actions use",
    ),
    (
        lambda: WsMessageFormat(action="refresh", content_filters=()),
        "'ws-message' with action 'refresh' contains 'content-filters', which only other actions use",
    ),
    (
        lambda: WsMessageFormat(action="close", code=1000, reason=""),
        "'ws-message' contains 'reason' with invalid value",
    ),
    (
        lambda: WsMessageFormat(action="close", code=True),
        "'ws-message' contains 'code' with wrong type",
    ),
    (
        lambda: WsMessageFormat(type="text", content=b"\xc3"),
        "'ws-message' contains 'content' with invalid value (a text message must be UTF-8)",
    ),
]


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("build", "message"), CONSTRUCTOR_ERRORS)
def test_constructor_errors(build: Any, message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        build()
    assert str(info.value) == message
    assert info.value.error_status_hint == 500


def test_constructors_normalise_and_copy() -> None:
    meta = {"k": "v"}
    headers = [["X-A", "1"]]
    filters = ["f"]
    patch = [{"op": "add", "path": "/a", "value": [1]}]
    fmt = HttpResponseFormat(body_patch=patch, headers=headers, content_filters=filters)  # type: ignore[arg-type]
    item = Item("c", meta=meta, http_response=fmt)
    meta["k"] = "changed"
    patch[0]["value"].append(2)  # type: ignore[attr-defined]
    assert item.meta == {"k": "v"}
    assert isinstance(item.meta, MappingProxyType)
    assert fmt.headers == (("X-A", "1"),)
    assert fmt.content_filters == ("f",)
    assert fmt.body_patch == ({"op": "add", "path": "/a", "value": [1]},)
    assert fmt.body_patch is not None
    with pytest.raises(TypeError):
        fmt.body_patch[0]["op"] = "remove"  # type: ignore[index]
    with pytest.raises(TypeError):
        item.meta["k"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        item.channel = "d"  # type: ignore[misc]


def test_hashability() -> None:
    # Items and http-response formats hold mappings: unhashable by design; compare by value.
    with pytest.raises(TypeError):
        hash(ITEM_X)
    with pytest.raises(TypeError):
        hash(HttpResponseFormat(body=b""))
    assert hash(HttpStreamFormat(content=b"x")) == hash(HttpStreamFormat(content=b"x"))
    assert len({WsMessageFormat(action="close", code=1000), WsMessageFormat(action="close")}) == 2
    assert Item("c", http_stream=HttpStreamFormat(content=b"x")) == ITEM_X
    assert Item("c", id="1", http_stream=HttpStreamFormat(content=b"x")) != ITEM_X


REASON_VECTORS: list[tuple[int, str | None, str]] = [
    (200, None, "OK"),
    (404, None, "Not Found"),
    (503, None, "Service Unavailable"),
    (299, None, "Undefined Reason"),  # Pushpin's wording for codes without a phrase
    (999, None, "Undefined Reason"),
    (200, "Fine", "Fine"),
]


@pytest.mark.parametrize(("code", "reason", "phrase"), REASON_VECTORS)
def test_reason_phrase(code: int, reason: str | None, phrase: str) -> None:
    fmt = HttpResponseFormat(code=code, reason=reason, body=b"")
    assert fmt.reason_phrase == phrase
    if reason is None:
        assert default_reason(code) == phrase


def test_http_response_code_sweep() -> None:
    """Every code a long-poll can be answered with, and none it cannot: 200-999 (1xx are not
    final answers), 204 and 304 only without a body."""
    for code in range(1001):
        final = 200 <= code <= 999
        for body, patch in ((b"", None), (b"x", None), (None, ())):
            empty = body == b""
            try:
                HttpResponseFormat(code=code, body=body, body_patch=patch)
            except LocalProtocolError:
                assert not final or (code in (204, 304) and not empty), code
            else:
                assert final and (code not in (204, 304) or empty), code


def test_reason_and_header_value_sweep() -> None:
    """Each character, alone and inside text, in a reason and a header value: accepted exactly
    when an HTTP/1.1 writer can send it (HTAB, SP, VCHAR, obs-text; no surrounding space in a
    field value, which is stripped)."""
    for c in range(0x120):
        ch = chr(c)
        writable = ch == "\t" or 0x20 <= c <= 0x7E or 0x80 <= c <= 0xFF
        for reason in (ch, f"a{ch}b"):
            try:
                HttpResponseFormat(reason=reason, body=b"")
            except LocalProtocolError:
                assert not writable, reason
            else:
                assert writable, reason
        try:
            fmt = HttpResponseFormat(headers=(("X", f"a{ch}b"),), body=b"")
        except LocalProtocolError:
            assert not writable, c
        else:
            assert writable and fmt.headers == (("X", f"a{ch}b"),), c
    for value in (" ", "\t", " v ", "\tv\t"):
        fmt = HttpResponseFormat(headers=(("X", value),), body=b"")
        assert fmt.headers == (("X", value.strip()),)


# --- encoding -----------------------------------------------------------------------------------

ENCODE_VECTORS: list[tuple[Item, dict[str, Any]]] = [
    (ITEM_X, {"channel": "c", "formats": {"http-stream": {"content": "x"}}}),
    (
        Item(
            "c",
            id="2",
            prev_id="1",
            meta={"a": "b"},
            no_seq=True,
            size=0,
            http_stream=HttpStreamFormat(content=b"\xff", content_filters=()),
        ),
        {
            "channel": "c",
            "id": "2",
            "prev-id": "1",
            "formats": {"http-stream": {"content-bin": "/w==", "content-filters": []}},
            "meta": {"a": "b"},
            "no-seq": True,
            "size": 0,
        },
    ),
    (
        Item(
            "c",
            http_response=HttpResponseFormat(
                code=404, reason="No", headers=(("A", "1"), ("A", "2")), body=b"x"
            ),
        ),
        {
            "channel": "c",
            "formats": {
                "http-response": {
                    "code": 404,
                    "reason": "No",
                    "headers": [["A", "1"], ["A", "2"]],
                    "body": "x",
                }
            },
        },
    ),
    (
        Item("c", http_response=HttpResponseFormat(body=b"\x80", content_filters=("f",))),
        {
            "channel": "c",
            "formats": {"http-response": {"body-bin": "gA==", "content-filters": ["f"]}},
        },
    ),
    (
        Item("c", http_response=HttpResponseFormat(body_patch=({"op": "remove", "path": "/a"},))),
        {
            "channel": "c",
            "formats": {"http-response": {"body-patch": [{"op": "remove", "path": "/a"}]}},
        },
    ),
    (
        Item("c", http_response=HttpResponseFormat(action="hint")),
        {"channel": "c", "formats": {"http-response": {"action": "hint"}}},
    ),
    (
        Item("c", http_stream=HttpStreamFormat(action="close")),
        {"channel": "c", "formats": {"http-stream": {"action": "close"}}},
    ),
    (
        Item("c", ws_message=WsMessageFormat(content=b"hi")),
        {"channel": "c", "formats": {"ws-message": {"content": "hi"}}},
    ),
    (
        Item("c", ws_message=WsMessageFormat(type="binary", content=b"hi", content_filters=("f",))),
        {
            "channel": "c",
            "formats": {"ws-message": {"content-bin": "aGk=", "content-filters": ["f"]}},
        },
    ),
    (
        Item("c", ws_message=WsMessageFormat(type="ping")),
        {"channel": "c", "formats": {"ws-message": {"type": "ping"}}},
    ),
    (
        Item("c", ws_message=WsMessageFormat(type="pong", content=b"\xff")),
        {"channel": "c", "formats": {"ws-message": {"type": "pong", "content-bin": "/w=="}}},
    ),
    (
        Item("c", ws_message=WsMessageFormat(type="ping", content=b"p")),
        {"channel": "c", "formats": {"ws-message": {"type": "ping", "content": "p"}}},
    ),
    (
        Item("c", ws_message=WsMessageFormat(action="close", code=4000, reason="r")),
        {
            "channel": "c",
            "formats": {"ws-message": {"action": "close", "code": 4000, "reason": "r"}},
        },
    ),
    (
        Item("c", ws_message=WsMessageFormat(action="close")),
        {"channel": "c", "formats": {"ws-message": {"action": "close"}}},
    ),
    (
        Item("c", ws_message=WsMessageFormat(action="refresh")),
        {"channel": "c", "formats": {"ws-message": {"action": "refresh"}}},
    ),
]


@pytest.mark.parametrize(("item", "expected"), ENCODE_VECTORS)
def test_item_to_json(item: Item, expected: dict[str, Any]) -> None:
    assert item_to_json(item) == expected
    assert parse_item(expected) == item
    assert parse_publish_body(encode_publish_body([item])) == [item]


def test_encode_publish_body_is_compact_utf8() -> None:
    item = Item("caf\u00e9", http_stream=HttpStreamFormat(content=b"x"))
    body = encode_publish_body([item])
    assert (
        body
        == '{"items":[{"channel":"caf\u00e9","formats":{"http-stream":{"content":"x"}}}]}'.encode()
    )
    assert encode_publish_body([]) == b'{"items":[]}'
    assert encode_publish_body(iter([ITEM_X, ITEM_X])).count(b'"channel"') == 2


def test_module_surface() -> None:
    assert set(_items.__all__) == {
        "ACTIONS",
        "DEFAULT_MAX_CONTENT_SIZE",
        "WS_MESSAGE_TYPES",
        "Action",
        "HttpResponseFormat",
        "HttpStreamFormat",
        "Item",
        "JsonPatchOp",
        "WsMessageFormat",
        "WsMessageType",
        "default_reason",
        "encode_publish_body",
        "item_to_json",
        "parse_item",
        "parse_items",
        "parse_publish_body",
    }
    assert all(hasattr(_items, name) for name in _items.__all__)


# --- hypothesis: round trip ---------------------------------------------------------------------

unicode_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
nonempty_text = unicode_text.filter(bool)
tokens = st.text("!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=10)
# what an HTTP/1.1 writer can send: VCHAR, obs-text (Latin-1), inner SP and HTAB
header_values = st.text(
    st.sampled_from([chr(c) for c in (*range(0x21, 0x7F), *range(0x80, 0x100))]), max_size=6
) | st.tuples(
    st.text("ab\u00e9", min_size=1, max_size=3),
    st.text(" \t", min_size=1, max_size=2),
    st.text("cd\u00ff", min_size=1, max_size=3),
).map("".join)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | unicode_text
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(unicode_text, inner, max_size=3),
    max_leaves=8,
)
content_filters = st.none() | st.lists(nonempty_text, max_size=3).map(tuple)
other_actions = st.sampled_from(["hint", "close", "refresh"])

http_responses = st.one_of(
    st.builds(
        HttpResponseFormat,
        code=st.integers(200, 999).filter(lambda code: code not in (204, 304)),
        reason=st.none() | header_values.filter(bool),
        headers=st.lists(st.tuples(tokens, header_values), max_size=3).map(tuple),
        body=st.binary(max_size=40),
        content_filters=content_filters,
    ),
    st.builds(
        HttpResponseFormat,
        body_patch=st.lists(
            st.fixed_dictionaries(
                {"op": st.sampled_from(["add", "remove", "replace", "x"]), "path": unicode_text},
                optional={"value": json_values, "from": unicode_text},
            ),
            max_size=3,
        ).map(tuple),
    ),
    other_actions.map(lambda action: HttpResponseFormat(action=action)),
)
http_streams = st.one_of(
    st.builds(HttpStreamFormat, content=st.binary(max_size=40), content_filters=content_filters),
    other_actions.map(lambda action: HttpStreamFormat(action=action)),
)
ws_messages = st.one_of(
    st.builds(
        WsMessageFormat,
        type=st.just("text"),
        content=unicode_text.map(str.encode),
        content_filters=content_filters,
    ),
    st.builds(WsMessageFormat, type=st.just("binary"), content=st.binary(max_size=40)),
    st.builds(
        WsMessageFormat,
        type=st.sampled_from(["ping", "pong"]),
        content=st.binary(max_size=125),
    ),
    st.builds(
        WsMessageFormat,
        action=st.just("close"),
        code=st.sampled_from([1000, 1001, 1011, 3000, 4999]),
        reason=st.none() | st.text("abc\u00e9\u2603", min_size=1, max_size=30),
    ),
    st.sampled_from(["close", "hint", "refresh"]).map(
        lambda action: WsMessageFormat(action=action)
    ),
)


@st.composite
def items(draw: st.DrawFn) -> Item:
    formats = draw(
        st.tuples(
            st.none() | http_responses, st.none() | http_streams, st.none() | ws_messages
        ).filter(lambda fs: any(f is not None for f in fs))
    )
    return Item(
        channel=draw(nonempty_text),
        id=draw(st.none() | nonempty_text),
        prev_id=draw(st.none() | nonempty_text),
        meta=draw(st.dictionaries(unicode_text, unicode_text, max_size=3)),
        no_seq=draw(st.booleans()),
        size=draw(st.none() | st.integers(0, 2**40)),
        http_response=formats[0],
        http_stream=formats[1],
        ws_message=formats[2],
    )


@given(st.lists(items(), max_size=4))
def test_round_trip(values: list[Item]) -> None:
    assert parse_publish_body(encode_publish_body(values)) == values
    assert parse_items([item_to_json(item) for item in values]) == values
    for item in values:
        assert item_to_json(parse_item(item_to_json(item))) == item_to_json(item)


# --- fuzz: arbitrary input raises only the core's own errors -----------------------------------

python_values = st.recursive(
    json_leaves | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=2)
    ),
    max_leaves=12,
)

ITEM_KEYS = ["channel", "id", "prev-id", "formats", "meta", "no-seq", "size", "http-stream"]
FORMAT_KEYS = [
    "action", "code", "reason", "headers", "body", "body-bin", "body-patch",
    "content", "content-bin", "content-filters", "type",
]  # fmt: skip
format_objects = st.dictionaries(st.sampled_from(FORMAT_KEYS), python_values, max_size=5)
item_like = st.dictionaries(
    st.sampled_from(ITEM_KEYS), python_values | format_objects | st.just("c"), max_size=6
)
structured_items = st.builds(
    lambda base, formats: {**base, "formats": formats},
    st.fixed_dictionaries(
        {"channel": st.just("c")},
        optional=dict.fromkeys([k for k in ITEM_KEYS if k != "channel"], python_values),
    ),
    st.dictionaries(
        st.sampled_from(["http-response", "http-stream", "ws-message"]), format_objects, max_size=3
    ),
)


def _parses_or_raises_publish_error(call: Any) -> None:
    try:
        result = call()
    except PublishError:
        return
    assert isinstance(result, list | Item)


@settings(max_examples=examples(300))
@given(st.binary(max_size=200))
def test_fuzz_bytes(body: bytes) -> None:
    _parses_or_raises_publish_error(lambda: parse_publish_body(body))


@settings(max_examples=examples(200))
@given(json_values)
def test_fuzz_json_body(value: Any) -> None:
    body = json.dumps(value).encode()
    _parses_or_raises_publish_error(lambda: parse_publish_body(body))
    body = json.dumps({"items": value}).encode()
    _parses_or_raises_publish_error(lambda: parse_publish_body(body))
    _parses_or_raises_publish_error(
        lambda: parse_publish_body(json.dumps({"items": [value]}).encode())
    )


@settings(max_examples=examples(150))
@given(python_values | item_like | structured_items)
def test_fuzz_decoded_values(value: Any) -> None:
    _parses_or_raises_publish_error(lambda: parse_items([value]))
    _parses_or_raises_publish_error(lambda: parse_item(value))


@settings(max_examples=examples(150))
@given(structured_items)
def test_fuzz_structured_items(value: Any) -> None:
    try:
        item = parse_item(value)
    except PublishError as exc:
        assert str(exc).startswith("item 0: ")
        assert isinstance(exc, ProtocolError)
        return
    # whatever parses re-encodes to an equal item
    assert parse_item(item_to_json(item)) == item


# --- large input --------------------------------------------------------------------------------


def test_one_megabyte_body_with_many_items() -> None:
    count = 5_000
    obj = [
        {
            "channel": f"ch{i % 50}",
            "id": str(i),
            "prev-id": str(i - 1),
            "meta": {"sender": "s"},
            "formats": {
                "http-stream": {"content": "d" * 60},
                "ws-message": {"content-bin": b64(b"b" * 45)},
                "http-response": {"headers": {"X-A": "1"}, "body": "r" * 20},
            },
        }
        for i in range(count)
    ]
    body = body_of(*obj)
    assert len(body) > 1_000_000
    parsed = parse_publish_body(body)
    assert len(parsed) == count
    assert parsed[-1].id == str(count - 1)
    assert parsed[123].ws_message == WsMessageFormat(type="binary", content=b"b" * 45)
    assert parse_publish_body(encode_publish_body(parsed)) == parsed


def test_one_megabyte_content_unlimited() -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, not UTF-8
    body = body_of(hs({"content-bin": b64(content)}))
    with pytest.raises(ContentTooLargeError):
        parse_publish_body(body)
    (item,) = parse_publish_body(body, max_content_size=0)
    assert item.http_stream == HttpStreamFormat(content=content)
    assert parse_publish_body(encode_publish_body([item]), max_content_size=0) == [item]
