"""GRIP instruct parsing (`gripcore._instruct`): vector tables for every header and JSON member,
Pushpin's error messages, the §9 checklist rows about parsing, and properties (generated valid
header sets parse to what they say; arbitrary headers and bodies raise only `InstructError`;
megabyte inputs parse in linear time).

Instructs are parsed from a complete origin response, not incrementally, so there is no
byte-at-a-time feeding here; the body limit and the "outer body discarded" rules cover what is
left over around an instruct."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urljoin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore import InstructError, LocalProtocolError, ProtocolError
from gripcore._headers import encode_utf8_text, format_param_list
from gripcore._instruct import (
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_NEXT_LINK_TIMEOUT,
    DEFAULT_TIMEOUT,
    HOP_BY_HOP_HEADERS,
    MAX_FILTERS,
    MAX_INSTRUCT_BODY,
    MIN_TIMEOUT,
    Channel,
    Instruct,
    KeepAlive,
    Link,
    client_response,
    instruct_body_limit,
    is_grip_response,
    parse_instruct,
    reason_phrase,
    strip_grip_headers,
    strip_hop_by_hop,
)

from .hypothesis_support import examples

Pairs = list[tuple[str, str]]
JSON_CT = ("Content-Type", "application/grip-instruct")


def _headers(pairs: Pairs) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


def parse(
    pairs: Pairs,
    *,
    status: int = 200,
    reason: bytes = b"OK",
    body: bytes = b"",
    request_uri: str | None = None,
) -> Instruct:
    return parse_instruct(status, reason, _headers(pairs), body, request_uri=request_uri)


def parse_json(document: Any, pairs: Pairs = (), **kwargs: Any) -> Instruct:  # type: ignore[assignment]
    return parse([JSON_CT, *pairs], body=json.dumps(document).encode(), **kwargs)


def assert_fields(instruct: Instruct, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert getattr(instruct, name) == value, name


# -- detection (§1.2, checklist rows 1-2) ---------------------------------------------------------

DETECTION_VECTORS: list[tuple[Pairs, bool]] = [
    ([("Grip-Foo", "x")], True),
    ([("grip-hold", "response")], True),
    ([("GRIP-CHANNEL", "a")], True),
    ([("Grip-", "")], True),
    ([("X-Grip-Hold", "response")], False),
    ([("Grip", "x")], False),
    ([("Content-Type", "application/grip-instruct")], True),
    ([("Content-Type", "application/grip-instruct; charset=utf-8")], True),
    ([("Content-Type", " Application/GRIP-Instruct ;x")], True),
    ([("Content-Type", "application/grip-instruct-x")], False),
    ([("Content-Type", "text/plain")], False),
    ([("Content-Type", "text/plain"), ("Content-Type", "application/grip-instruct")], False),
    ([], False),
]


@pytest.mark.parametrize(("pairs", "expected"), DETECTION_VECTORS)
def test_is_grip_response(pairs: Pairs, expected: bool) -> None:
    assert is_grip_response(_headers(pairs)) is expected


# -- header instructions (§1.3) --------------------------------------------------------------------

HEADER_VECTORS: list[tuple[str, Pairs, dict[str, Any]]] = [
    # Grip-Hold
    ("hold-response", [("Grip-Hold", "response")], {"hold": "response"}),
    ("hold-stream", [("Grip-Hold", "stream")], {"hold": "stream"}),
    ("hold-absent", [("Grip-Foo", "x")], {"hold": None, "headers": (), "channels": ()}),
    ("hold-first-only", [("Grip-Hold", "stream"), ("Grip-Hold", "bogus")], {"hold": "stream"}),
    ("hold-trimmed", [("grip-hold", " response\t")], {"hold": "response"}),
    # Grip-Channel
    (
        "channels-repeated-and-comma",
        [("Grip-Channel", "apple"), ("Grip-Channel", "banana, cherry")],
        {"channels": (Channel("apple"), Channel("banana"), Channel("cherry"))},
    ),
    (
        "channel-params",
        [
            ("Grip-Channel", "apple; prev-id=item1; filter=f1"),
            ("Grip-Channel", "banana; filter=f2, cherry; filter=f1; filter=f2"),
        ],
        {
            "channels": (
                Channel("apple", "item1", ("f1",)),
                Channel("banana", None, ("f2",)),
                Channel("cherry", None, ("f1", "f2")),
            )
        },
    ),
    (
        "channel-empty-elements",
        [("Grip-Channel", ",a,,b, ,")],
        {"channels": (Channel("a"), Channel("b"))},
    ),
    ("channel-empty-header", [("Grip-Channel", "")], {"channels": ()}),
    (
        "channel-unparsable-skipped",
        [("Grip-Channel", 'bad; prev-id="x'), ("Grip-Channel", "good")],
        {"channels": (Channel("good"),)},
    ),
    (
        "channel-five-filters",
        [("Grip-Channel", "a" + "; filter=f" * MAX_FILTERS)],
        {"channels": (Channel("a", None, ("f",) * MAX_FILTERS),)},
    ),
    (
        "channel-unknown-filter-kept",
        [("Grip-Channel", "a; filter=nope")],
        {"channels": (Channel("a", None, ("nope",)),)},
    ),
    ("channel-bare-filter-ignored", [("Grip-Channel", "a; filter")], {"channels": (Channel("a"),)}),
    ("channel-empty-prev-id", [("Grip-Channel", "a; prev-id=")], {"channels": (Channel("a"),)}),
    ("channel-bare-prev-id", [("Grip-Channel", "a; prev-id")], {"channels": (Channel("a"),)}),
    (
        "channel-param-names-any-case",
        [("Grip-Channel", "a; Prev-ID=3; FILTER=skip-self")],
        {"channels": (Channel("a", "3", ("skip-self",)),)},
    ),
    (
        "channel-quoted-prev-id",
        [("Grip-Channel", 'a; prev-id="x;y, z"')],
        {"channels": (Channel("a", "x;y, z"),)},
    ),
    ("channel-name-verbatim", [("Grip-Channel", '"q"; x')], {"channels": (Channel('"q"'),)}),
    # Grip-Timeout
    ("timeout-default", [("Grip-Hold", "response")], {"timeout": DEFAULT_TIMEOUT}),
    ("timeout-120", [("Grip-Timeout", "120")], {"timeout": 120}),
    ("timeout-raised-to-5", [("Grip-Timeout", "1")], {"timeout": MIN_TIMEOUT}),
    ("timeout-zero", [("Grip-Timeout", "0")], {"timeout": MIN_TIMEOUT}),
    ("timeout-5", [("Grip-Timeout", "5")], {"timeout": 5}),
    ("timeout-spaces-sign", [("Grip-Timeout", " +30 ")], {"timeout": 30}),
    ("timeout-int32-max", [("Grip-Timeout", "2147483647")], {"timeout": 2**31 - 1}),
    ("timeout-leading-zeros", [("Grip-Timeout", "0000000000000030")], {"timeout": 30}),
    ("timeout-minus-zero", [("Grip-Timeout", "-0")], {"timeout": MIN_TIMEOUT}),
    ("timeout-first-only", [("Grip-Timeout", "60"), ("Grip-Timeout", "x")], {"timeout": 60}),
    # Grip-Keep-Alive
    ("keep-alive-absent", [("Grip-Hold", "stream")], {"keep_alive": None}),
    (
        "keep-alive-raw",
        [("Grip-Keep-Alive", "ping1\\n; timeout=10")],
        {"keep_alive": KeepAlive(b"ping1\\n", 10)},
    ),
    (
        "keep-alive-cstring",
        [("Grip-Keep-Alive", "ping2\\n; format=cstring")],
        {"keep_alive": KeepAlive(b"ping2\n")},
    ),
    (
        "keep-alive-base64",
        [("Grip-Keep-Alive", "cGluZzMK; format=base64")],
        {"keep_alive": KeepAlive(b"ping3\n")},
    ),
    (
        "keep-alive-interval",
        [("Grip-Keep-Alive", "ping4\\n; mode=interval")],
        {"keep_alive": KeepAlive(b"ping4\\n", DEFAULT_KEEP_ALIVE_TIMEOUT, "interval")},
    ),
    (
        "keep-alive-timeout-min-1",
        [("Grip-Keep-Alive", "x; timeout=0")],
        {"keep_alive": KeepAlive(b"x", 1)},
    ),
    (
        "keep-alive-not-comma-split",
        [("Grip-Keep-Alive", "a, b, c")],
        {"keep_alive": KeepAlive(b"a, b, c")},
    ),
    ("keep-alive-empty-header", [("Grip-Keep-Alive", " ")], {"keep_alive": None}),
    (
        "keep-alive-first-only",
        [("Grip-Keep-Alive", "one"), ("Grip-Keep-Alive", "two")],
        {"keep_alive": KeepAlive(b"one")},
    ),
    ("keep-alive-unparsable", [("Grip-Keep-Alive", 'x; format="raw')], {"keep_alive": None}),
    (
        "keep-alive-cstring-escapes",
        [("Grip-Keep-Alive", r"\\ \r\n \x41\x7a\xFF \q.; format=cstring")],
        {"keep_alive": KeepAlive(b"\\ \r\n Az\xff .")},
    ),
    (
        "keep-alive-base64-lenient",
        [("Grip-Keep-Alive", "cGl=uZz@MK; format=base64")],
        {"keep_alive": KeepAlive(b"ping3\n")},
    ),
    (
        "keep-alive-base64-extra-char",
        [("Grip-Keep-Alive", "cGluZzMKx; format=base64")],
        {"keep_alive": KeepAlive(b"ping3\n")},
    ),
    (
        "keep-alive-base64-unpadded",
        [("Grip-Keep-Alive", "YQ; format=base64")],
        {"keep_alive": KeepAlive(b"a")},
    ),
    (
        "keep-alive-empty-mode-format",
        [("Grip-Keep-Alive", "x; mode=; format")],
        {"keep_alive": KeepAlive(b"x")},
    ),
    (
        "keep-alive-first-param-wins",
        [("Grip-Keep-Alive", "x; mode=idle; mode=interval")],
        {"keep_alive": KeepAlive(b"x")},
    ),
    (
        "keep-alive-param-case",
        [("Grip-Keep-Alive", "x; MODE=interval; Timeout=7")],
        {"keep_alive": KeepAlive(b"x", 7, "interval")},
    ),
    # Grip-Set-Meta
    ("meta-list", [("Grip-Set-Meta", "foo=bar, bar=baz")], {"meta": {"foo": "bar", "bar": "baz"}}),
    ("meta-later-wins", [("Grip-Set-Meta", "k=1"), ("Grip-Set-Meta", "k=2")], {"meta": {"k": "2"}}),
    ("meta-quoted", [("Grip-Set-Meta", 'user="a b, c"')], {"meta": {"user": "a b, c"}}),
    ("meta-extra-params", [("Grip-Set-Meta", "k=v; x=y")], {"meta": {"k": "v"}}),
    ("meta-bare-key", [("Grip-Set-Meta", "k")], {"meta": {"k": ""}}),
    ("meta-unparsable-skipped", [("Grip-Set-Meta", 'k="v')], {"meta": {}}),
    ("meta-trailing-comma", [("Grip-Set-Meta", "k=v,")], {"meta": {"k": "v"}}),
    # Grip-Status
    ("status-code", [("Grip-Status", "404")], {"status": 404, "reason": b"Not Found"}),
    (
        "status-reason",
        [("Grip-Status", "404 Nothing To See Here")],
        {"status": 404, "reason": b"Nothing To See Here"},
    ),
    (
        "status-unregistered",
        [("Grip-Status", "299")],
        {"status": 299, "reason": b"Undefined Reason"},
    ),
    ("status-zero", [("Grip-Status", "0")], {"status": 0, "reason": b"Undefined Reason"}),
    ("status-999", [("Grip-Status", "999 Max")], {"status": 999, "reason": b"Max"}),
    ("status-empty-ignored", [("Grip-Status", "")], {"status": 200, "reason": b"OK"}),
    ("status-two-spaces", [("Grip-Status", "204  x")], {"status": 204, "reason": b" x"}),
    (
        "status-first-only",
        [("Grip-Status", "201"), ("Grip-Status", "bad")],
        {"status": 201, "reason": b"Created"},
    ),
    # Grip-Link
    (
        "link-next",
        [("Grip-Link", "</next>; rel=next")],
        {"next_link": Link("/next", DEFAULT_NEXT_LINK_TIMEOUT)},
    ),
    (
        "link-next-timeout",
        [("Grip-Link", "</n>; rel=next; timeout=30")],
        {"next_link": Link("/n", 30)},
    ),
    (
        "link-next-timeout-zero",
        [("Grip-Link", "</n>; rel=next; timeout=0")],
        {"next_link": Link("/n", 0)},
    ),
    (
        "link-absolute",
        [("Grip-Link", "<https://o.example:8443/n?a=b>; rel=next")],
        {"next_link": Link("https://o.example:8443/n?a=b", 120)},
    ),
    (
        "link-last-next-wins",
        [("Grip-Link", "</1>; rel=next"), ("Grip-Link", "</2>; rel=next")],
        {"next_link": Link("/2", 120)},
    ),
    (
        "link-gone",
        [("Grip-Link", "</gone>; rel=gone")],
        {"gone_link": Link("/gone"), "next_link": None},
    ),
    (
        "link-both-in-one-header",
        [("Grip-Link", "</n>; rel=next, </g>; rel=gone")],
        {"next_link": Link("/n", 120), "gone_link": Link("/g")},
    ),
    ("link-without-params-ignored", [("Grip-Link", "garbage")], {"next_link": None}),
    (
        "link-unknown-rel-ignored",
        [("Grip-Link", "</a>; rel=prev")],
        {"next_link": None, "gone_link": None},
    ),
    ("link-rel-name-any-case", [("Grip-Link", "</a>; REL=next")], {"next_link": Link("/a", 120)}),
    ("link-rel-value-exact", [("Grip-Link", "</a>; rel=Next")], {"next_link": None}),
    (
        "link-percent-kept",
        [("Grip-Link", "</a%20b>; rel=next")],
        {"next_link": Link("/a%20b", 120)},
    ),
    (
        "link-non-ascii-encoded",
        [("Grip-Link", "</caf\xc3\xa9>; rel=next")],
        {"next_link": Link("/caf%C3%A9", 120)},
    ),
    # client headers (§1.4)
    (
        "client-headers-stripped",
        [
            ("Content-Type", "text/plain"),
            ("Grip-Hold", "response"),
            ("gRiP-anything", "x"),
            ("Connection", "close"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Encoding", "gzip"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "11"),
            ("X-Kept", "1"),
        ],
        {"headers": ((b"Content-Type", b"text/plain"), (b"X-Kept", b"1"))},
    ),
    (
        "expose-whitelist",
        [
            ("Grip-Expose-Headers", "X-A, x-b"),
            ("Grip-Expose-Headers", "Grip-Hold, Content-Length"),
            ("X-A", "1"),
            ("Content-Type", "text/plain"),
            ("x-B", "2"),
            ("Content-Length", "5"),
        ],
        {"headers": ((b"X-A", b"1"), (b"x-B", b"2"))},
    ),
    (
        "expose-empty-is-no-whitelist",
        [("Grip-Expose-Headers", ""), ("X-A", "1")],
        {"headers": ((b"X-A", b"1"),)},
    ),
]


@pytest.mark.parametrize(
    ("pairs", "expected"), [v[1:] for v in HEADER_VECTORS], ids=[v[0] for v in HEADER_VECTORS]
)
def test_header_instructions(pairs: Pairs, expected: dict[str, Any]) -> None:
    assert_fields(parse(pairs, body=b"hello world"), expected)


LINK_RESOLUTION: list[tuple[str, str | None, str]] = [
    ("c?x=1", "http://example.com/a/b", "http://example.com/a/c?x=1"),
    ("/n", "http://example.com/a/b?q", "http://example.com/n"),
    ("//other.example/n", "https://example.com/", "https://other.example/n"),
    ("http://abs.example/n", "http://example.com/a", "http://abs.example/n"),
    ("c", "/a/b", "/a/c"),
    ("c", None, "c"),
]


@pytest.mark.parametrize(("link", "request_uri", "expected"), LINK_RESOLUTION)
def test_link_resolution(link: str, request_uri: str | None, expected: str) -> None:
    instruct = parse([("Grip-Link", f"<{link}>; rel=next")], request_uri=request_uri)
    assert instruct.next_link == Link(expected, DEFAULT_NEXT_LINK_TIMEOUT)


def test_utf8_names_and_raw_bytes() -> None:
    headers = [
        (b"Grip-Channel", "caf\u00e9; prev-id=\u2603; filter=f\u00fc".encode()),
        (b"Grip-Channel", b"bad\xff"),
        (b"Grip-Set-Meta", "user=\u00e9l\u00e8ve".encode()),
        (b"Grip-Keep-Alive", b"\xff\xfe"),
        (b"Grip-Status", b"200 D\xe9j\xe0 vu"),
    ]
    instruct = parse_instruct(200, b"OK", headers, b"")
    assert instruct.channels == (Channel("caf\u00e9", "\u2603", ("f\u00fc",)), Channel("bad\ufffd"))
    assert dict(instruct.meta) == {"user": "\u00e9l\u00e8ve"}
    assert instruct.keep_alive == KeepAlive(b"\xff\xfe")
    assert instruct.reason == b"D\xe9j\xe0 vu"


def test_passthrough_fields_kept() -> None:
    instruct = parse(
        [("Grip-Hold", "response"), ("X", "1")], status=202, reason=b"Later", body=b"b"
    )
    assert client_response(instruct) == (202, b"Later", [(b"X", b"1")], b"b")
    assert parse([("Grip-Foo", "x")], status=404, reason=b"").reason == b"Not Found"


def test_hold_mode_is_case_sensitive_as_in_pushpin() -> None:
    with pytest.raises(InstructError):
        parse([("Grip-Hold", "Response")])


# -- header errors (Pushpin's messages) --------------------------------------------------------------

HOLD_ERROR = "Grip-Hold must be set to either 'response' or 'stream'"

HEADER_ERRORS: list[tuple[str, Pairs, str]] = [
    ("hold-bogus", [("Grip-Hold", "bogus")], HOLD_ERROR),
    ("hold-empty", [("Grip-Hold", "")], HOLD_ERROR),
    ("hold-list", [("Grip-Hold", "response, stream")], HOLD_ERROR),
    ("six-filters", [("Grip-Channel", "a" + "; filter=f" * 6)], "too many filters for channel 'a'"),
    ("timeout-text", [("Grip-Timeout", "abc")], "failed to parse Grip-Timeout"),
    ("timeout-empty", [("Grip-Timeout", "")], "failed to parse Grip-Timeout"),
    ("timeout-float", [("Grip-Timeout", "1.5")], "failed to parse Grip-Timeout"),
    ("timeout-underscore", [("Grip-Timeout", "1_0")], "failed to parse Grip-Timeout"),
    ("timeout-hex", [("Grip-Timeout", "0x10")], "failed to parse Grip-Timeout"),
    ("timeout-overflow", [("Grip-Timeout", "2147483648")], "failed to parse Grip-Timeout"),
    ("timeout-underflow", [("Grip-Timeout", "-2147483649")], "failed to parse Grip-Timeout"),
    ("timeout-int32-min", [("Grip-Timeout", "-2147483648")], "Grip-Timeout has invalid value"),
    ("timeout-huge", [("Grip-Timeout", "9" * 5000)], "failed to parse Grip-Timeout"),
    ("timeout-negative", [("Grip-Timeout", "-1")], "Grip-Timeout has invalid value"),
    (
        "keep-alive-no-data",
        [("Grip-Keep-Alive", "; timeout=10")],
        "Grip-Keep-Alive cannot be empty",
    ),
    (
        "keep-alive-cstring-lone-backslash",
        [("Grip-Keep-Alive", "x\\; format=cstring")],
        "failed to parse Grip-Keep-Alive cstring format",
    ),
    (
        "keep-alive-cstring-bad-hex",
        [("Grip-Keep-Alive", "\\x4g; format=cstring")],
        "failed to parse Grip-Keep-Alive cstring format",
    ),
    (
        "keep-alive-cstring-short-hex",
        [("Grip-Keep-Alive", "ab\\x4; format=cstring")],
        "failed to parse Grip-Keep-Alive cstring format",
    ),
    (
        "keep-alive-cstring-signed-hex",
        [("Grip-Keep-Alive", "\\x+1; format=cstring")],
        "failed to parse Grip-Keep-Alive cstring format",
    ),
    (
        "keep-alive-cstring-empty",
        [("Grip-Keep-Alive", "\\q; format=cstring")],
        "failed to parse Grip-Keep-Alive cstring format",
    ),
    (
        "keep-alive-base64-empty",
        [("Grip-Keep-Alive", "!!!; format=base64")],
        "Grip-Keep-Alive cannot be empty",
    ),
    (
        "keep-alive-format",
        [("Grip-Keep-Alive", "x; format=hex")],
        "no such Grip-Keep-Alive format 'hex'",
    ),
    (
        "keep-alive-mode",
        [("Grip-Keep-Alive", "x; mode=sometimes")],
        "no such Grip-Keep-Alive mode 'sometimes'",
    ),
    (
        "keep-alive-timeout-text",
        [("Grip-Keep-Alive", "x; timeout=abc")],
        "failed to parse Grip-Keep-Alive timeout value",
    ),
    (
        "keep-alive-timeout-bare",
        [("Grip-Keep-Alive", "x; timeout")],
        "failed to parse Grip-Keep-Alive timeout value",
    ),
    (
        "keep-alive-timeout-negative",
        [("Grip-Keep-Alive", "x; timeout=-1")],
        "Grip-Keep-Alive timeout has invalid value",
    ),
    ("meta-empty-between", [("Grip-Set-Meta", "a=b,,c=d")], "Grip-Set-Meta cannot be empty"),
    ("meta-empty-first", [("Grip-Set-Meta", ", a=b")], "Grip-Set-Meta cannot be empty"),
    ("status-text", [("Grip-Status", "abc")], "Grip-Status contains invalid status code"),
    ("status-1000", [("Grip-Status", "1000")], "Grip-Status contains invalid status code"),
    ("status-negative", [("Grip-Status", "-1")], "Grip-Status contains invalid status code"),
    ("status-reason-first", [("Grip-Status", "x 404")], "Grip-Status contains invalid status code"),
    ("link-no-brackets", [("Grip-Link", "/next; rel=next")], "failed to parse Grip-Link value"),
    ("link-empty-brackets", [("Grip-Link", "<>; rel=next")], "failed to parse Grip-Link value"),
    ("link-open-bracket", [("Grip-Link", "</x; rel=next")], "failed to parse Grip-Link value"),
    (
        "link-bad-ipv6",
        [("Grip-Link", "<http://[::1/x>; rel=next")],
        "Grip-Link contains invalid link",
    ),
    (
        "link-bad-port",
        [("Grip-Link", "<http://h:99999/>; rel=next")],
        "Grip-Link contains invalid link",
    ),
    ("link-space", [("Grip-Link", "</a b>; rel=next")], "Grip-Link contains invalid link"),
    ("link-control", [("Grip-Link", "</a\x7fb>; rel=next")], "Grip-Link contains invalid link"),
    ("link-ftp", [("Grip-Link", "<ftp://h/x>; rel=next")], "Grip-Link contains invalid link"),
    (
        "link-no-host",
        [("Grip-Link", "<http:no-host>; rel=next")],
        "Grip-Link contains invalid link",
    ),
    (
        "link-javascript",
        [("Grip-Link", "<javascript:alert(1)>; rel=gone")],
        "Grip-Link contains invalid link",
    ),
    (
        "link-unknown-rel-still-checked",
        [("Grip-Link", "<>; rel=other")],
        "failed to parse Grip-Link value",
    ),
    (
        "link-timeout-text",
        [("Grip-Link", "</x>; rel=next; timeout=abc")],
        "failed to parse Grip-Link timeout value",
    ),
    (
        "link-timeout-negative",
        [("Grip-Link", "</x>; rel=next; timeout=-5")],
        "Grip-Link timeout has invalid value",
    ),
    ("first-error-wins", [("Grip-Timeout", "bad"), ("Grip-Hold", "bad")], HOLD_ERROR),
    (
        "channel-before-timeout",
        [("Grip-Timeout", "bad"), ("Grip-Channel", "a" + "; filter=f" * 6)],
        "too many filters for channel 'a'",
    ),
]


@pytest.mark.parametrize(
    ("pairs", "message"), [v[1:] for v in HEADER_ERRORS], ids=[v[0] for v in HEADER_ERRORS]
)
def test_header_errors(pairs: Pairs, message: str) -> None:
    with pytest.raises(InstructError) as info:
        parse(pairs)
    assert str(info.value) == message
    assert info.value.error_status_hint == 502


def test_error_message_names_utf8_channel() -> None:
    headers = [(b"Grip-Channel", "\u00e9t\u00e9".encode() + b"; filter=f" * 6)]
    with pytest.raises(InstructError, match="too many filters for channel '\u00e9t\u00e9'"):
        parse_instruct(200, b"OK", headers, b"")


# -- application/grip-instruct JSON (§1.5) --------------------------------------------------------

JSON_VECTORS: list[tuple[str, Any, Pairs, dict[str, Any]]] = [
    (
        "pushpin-no-hold",
        {
            "response": {
                "code": 200,
                "headers": {"Content-Type": "text/plain"},
                "body": "hello world",
            }
        },
        [],
        {
            "hold": None,
            "status": 200,
            "reason": b"OK",
            "headers": ((b"Content-Type", b"text/plain"),),
            "body": b"hello world",
        },
    ),
    (
        "pushpin-response-hold",
        {
            "hold": {
                "mode": "response",
                "channels": [{"name": "test"}],
                "timeout": 120,
                "meta": {"foo": "bar", "bar": "baz"},
            },
            "response": {
                "code": 200,
                "headers": {"Content-Type": "text/plain"},
                "body": "hello world",
            },
        },
        [],
        {
            "hold": "response",
            "channels": (Channel("test"),),
            "timeout": 120,
            "meta": {"foo": "bar", "bar": "baz"},
        },
    ),
    (
        "pushpin-channel-params",
        {
            "hold": {
                "channels": [
                    {"name": "apple", "prev-id": "item1", "filters": ["f1"]},
                    {"name": "banana", "filters": ["f2"]},
                    {"name": "cherry", "filters": ["f1", "f2"]},
                ]
            }
        },
        [],
        {
            "hold": "response",
            "channels": (
                Channel("apple", "item1", ("f1",)),
                Channel("banana", None, ("f2",)),
                Channel("cherry", None, ("f1", "f2")),
            ),
        },
    ),
    (
        "stream-mode",
        {"hold": {"mode": "stream", "channels": []}},
        [],
        {"hold": "stream", "channels": ()},
    ),
    ("default-mode-response", {"hold": {"channels": [{"name": "a"}]}}, [], {"hold": "response"}),
    (
        "json-mode-overrides-header",
        {"hold": {"mode": "response", "channels": []}},
        [("Grip-Hold", "stream")],
        {"hold": "response"},
    ),
    ("header-hold-kept-without-json-hold", {}, [("Grip-Hold", "stream")], {"hold": "stream"}),
    (
        "outer-headers-and-body-discarded",
        {},
        [("X-Outer", "1")],
        {"headers": (), "body": b"", "status": 200},
    ),
    (
        "grip-status-kept-without-response",
        {},
        [("Grip-Status", "404")],
        {"status": 404, "reason": b"Not Found"},
    ),
    (
        "channels-appended",
        {"hold": {"channels": [{"name": "j"}]}},
        [("Grip-Channel", "h")],
        {"channels": (Channel("h"), Channel("j"))},
    ),
    (
        "timeout-overrides",
        {"hold": {"channels": [], "timeout": 30}},
        [("Grip-Timeout", "100")],
        {"timeout": 30},
    ),
    ("timeout-raised", {"hold": {"channels": [], "timeout": 0}}, [], {"timeout": MIN_TIMEOUT}),
    (
        "timeout-null-is-absent",
        {"hold": {"channels": [], "timeout": None}},
        [("Grip-Timeout", "100")],
        {"timeout": 100},
    ),
    (
        "empty-prev-id-absent",
        {"hold": {"channels": [{"name": "a", "prev-id": ""}]}},
        [],
        {"channels": (Channel("a"),)},
    ),
    (
        "null-filters",
        {"hold": {"channels": [{"name": "a", "filters": None}]}},
        [],
        {"channels": (Channel("a"),)},
    ),
    (
        "keep-alive-content-interval",
        {"hold": {"channels": [], "keep-alive": {"content": "ka\u00e9"}}},
        [],
        {"keep_alive": KeepAlive("ka\u00e9".encode(), DEFAULT_KEEP_ALIVE_TIMEOUT, "interval")},
    ),
    (
        "keep-alive-content-bin-wins",
        {
            "hold": {
                "channels": [],
                "keep-alive": {"content-bin": "cGluZw", "content": 5, "timeout": 3},
            }
        },
        [],
        {"keep_alive": KeepAlive(b"ping", 3, "interval")},
    ),
    (
        "keep-alive-mode-from-header",
        {"hold": {"channels": [], "keep-alive": {"content": "js"}}},
        [("Grip-Keep-Alive", "hdr; mode=idle; timeout=20")],
        {"keep_alive": KeepAlive(b"js", DEFAULT_KEEP_ALIVE_TIMEOUT, "idle")},
    ),
    (
        "keep-alive-header-data-json-timeout",
        {"hold": {"channels": [], "keep-alive": {"timeout": 0}}},
        [("Grip-Keep-Alive", "hdr; mode=interval; timeout=20")],
        {"keep_alive": KeepAlive(b"hdr", 1, "interval")},
    ),
    (
        "keep-alive-without-data",
        {"hold": {"channels": [], "keep-alive": {}}},
        [],
        {"keep_alive": None},
    ),
    (
        "keep-alive-empty-content",
        {"hold": {"channels": [], "keep-alive": {"content": ""}}},
        [("Grip-Keep-Alive", "h")],
        {"keep_alive": None},
    ),
    (
        "meta-merged-over",
        {"hold": {"channels": [], "meta": {"a": "json", "c": "3"}}},
        [("Grip-Set-Meta", "a=hdr, b=2")],
        {"meta": {"a": "json", "b": "2", "c": "3"}},
    ),
    (
        "response-code-default-reason",
        {"response": {"code": 404}},
        [],
        {"status": 404, "reason": b"Not Found"},
    ),
    (
        "response-code-clears-reason",
        {"response": {"code": 200}},
        [],
        {"status": 200, "reason": b"OK"},
    ),
    (
        "response-code-overrides-grip-status",
        {"response": {"code": 201}},
        [("Grip-Status", "404 Gone Fishing")],
        {"status": 201, "reason": b"Created"},
    ),
    (
        "response-reason",
        {"response": {"code": 404, "reason": "Nope \u00e9"}},
        [],
        {"reason": "Nope \u00e9".encode()},
    ),
    (
        "response-empty-reason",
        {"response": {"code": 299, "reason": ""}},
        [],
        {"reason": b"Undefined Reason"},
    ),
    (
        "response-header-pairs",
        {
            "response": {
                "headers": [
                    ["X-A", "1"],
                    ["X-A", " 2 "],
                    ["Grip-X", "y"],
                    ["Content-Length", "9"],
                    ["Connection", "close"],
                    ["X-E", ""],
                ]
            }
        },
        [],
        {"headers": ((b"X-A", b"1"), (b"X-A", b"2"), (b"X-E", b""))},
    ),
    (
        "response-header-utf8",
        {"response": {"headers": {"X-U": "\u00e9"}}},
        [],
        {"headers": ((b"X-U", "\u00e9".encode()),)},
    ),
    ("body-bin-wins", {"response": {"body-bin": "aGk=", "body": 5}}, [], {"body": b"hi"}),
    ("body-text", {"response": {"body": "h\u00e9"}}, [], {"body": "h\u00e9".encode()}),
    (
        "null-members-absent",
        {"hold": None, "response": {"code": None, "headers": None, "body": None, "reason": None}},
        [],
        {"hold": None, "status": 200, "headers": (), "body": b""},
    ),
    (
        "lone-surrogate-scrubbed",
        {"hold": {"channels": [{"name": "a\ud800"}]}},
        [],
        {"channels": (Channel("a\ufffd"),)},
    ),
]


@pytest.mark.parametrize(
    ("document", "pairs", "expected"),
    [v[1:] for v in JSON_VECTORS],
    ids=[v[0] for v in JSON_VECTORS],
)
def test_json_instruct(document: Any, pairs: Pairs, expected: dict[str, Any]) -> None:
    assert_fields(parse_json(document, pairs), expected)


JSON_ERRORS: list[tuple[str, Any, str]] = [
    ("hold-type", {"hold": 1}, "instruct contains 'hold' with wrong type"),
    ("no-channels", {"hold": {}}, "hold does not contain 'channels'"),
    ("channels-null", {"hold": {"channels": None}}, "hold contains 'channels' with wrong type"),
    ("channels-object", {"hold": {"channels": {}}}, "hold contains 'channels' with wrong type"),
    ("mode-type", {"hold": {"mode": 1, "channels": []}}, "hold contains 'mode' with wrong type"),
    (
        "mode-value",
        {"hold": {"mode": "later", "channels": []}},
        "hold 'mode' must be set to either 'response' or 'stream'",
    ),
    ("channel-type", {"hold": {"channels": [1]}}, "channel is not an object"),
    ("channel-no-name", {"hold": {"channels": [{}]}}, "channel does not contain 'name'"),
    (
        "channel-name-type",
        {"hold": {"channels": [{"name": 1}]}},
        "channel contains 'name' with wrong type",
    ),
    (
        "channel-name-null",
        {"hold": {"channels": [{"name": None}]}},
        "channel contains 'name' with wrong type",
    ),
    (
        "channel-name-empty",
        {"hold": {"channels": [{"name": ""}]}},
        "channel contains 'name' with invalid value",
    ),
    (
        "prev-id-type",
        {"hold": {"channels": [{"name": "a", "prev-id": 1}]}},
        "channel contains 'prev-id' with wrong type",
    ),
    (
        "filters-type",
        {"hold": {"channels": [{"name": "a", "filters": "f"}]}},
        "channel contains 'filters' with wrong type",
    ),
    (
        "filter-type",
        {"hold": {"channels": [{"name": "a", "filters": [1]}]}},
        "filters contains value with wrong type",
    ),
    (
        "six-filters",
        {"hold": {"channels": [{"name": "a", "filters": ["f"] * 6}]}},
        "too many filters for channel 'a'",
    ),
    (
        "timeout-string",
        {"hold": {"channels": [], "timeout": "30"}},
        "hold contains 'timeout' with wrong type",
    ),
    (
        "timeout-bool",
        {"hold": {"channels": [], "timeout": True}},
        "hold contains 'timeout' with wrong type",
    ),
    (
        "timeout-float",
        {"hold": {"channels": [], "timeout": 1.5}},
        "hold contains 'timeout' with wrong type",
    ),
    (
        "timeout-negative",
        {"hold": {"channels": [], "timeout": -1}},
        "hold contains 'timeout' with invalid value",
    ),
    (
        "timeout-overflow",
        {"hold": {"channels": [], "timeout": 2**31}},
        "hold contains 'timeout' with invalid value",
    ),
    (
        "keep-alive-type",
        {"hold": {"channels": [], "keep-alive": 1}},
        "hold contains 'keep-alive' with wrong type",
    ),
    (
        "content-bin-type",
        {"hold": {"channels": [], "keep-alive": {"content-bin": 1}}},
        "keep-alive contains 'content-bin' with wrong type",
    ),
    (
        "content-type",
        {"hold": {"channels": [], "keep-alive": {"content": 1}}},
        "keep-alive contains 'content' with wrong type",
    ),
    (
        "ka-timeout-type",
        {"hold": {"channels": [], "keep-alive": {"timeout": "1"}}},
        "keep-alive contains 'timeout' with wrong type",
    ),
    (
        "ka-timeout-negative",
        {"hold": {"channels": [], "keep-alive": {"timeout": -1}}},
        "keep-alive contains 'timeout' with invalid value",
    ),
    ("meta-type", {"hold": {"channels": [], "meta": []}}, "hold contains 'meta' with wrong type"),
    (
        "meta-value-type",
        {"hold": {"channels": [], "meta": {"k": 1}}},
        "'meta' contains 'k' with wrong type",
    ),
    ("response-type", {"response": 1}, "instruct contains 'response' with wrong type"),
    ("code-type", {"response": {"code": "200"}}, "response contains 'code' with wrong type"),
    ("code-1000", {"response": {"code": 1000}}, "response contains 'code' with invalid value"),
    ("code-negative", {"response": {"code": -1}}, "response contains 'code' with invalid value"),
    ("reason-type", {"response": {"reason": 1}}, "response contains 'reason' with wrong type"),
    (
        "reason-newline",
        {"response": {"reason": "a\nb"}},
        "response contains 'reason' with invalid value",
    ),
    ("headers-type", {"response": {"headers": "x"}}, "response contains 'headers' with wrong type"),
    (
        "header-element-type",
        {"response": {"headers": ["x"]}},
        "headers contains element with wrong type",
    ),
    (
        "header-pair-length",
        {"response": {"headers": [["a"]]}},
        "headers contains list with wrong number of elements",
    ),
    (
        "header-name-type",
        {"response": {"headers": [[1, "v"]]}},
        "header contains name element with wrong type",
    ),
    (
        "header-value-type",
        {"response": {"headers": [["a", 1]]}},
        "header contains value element with wrong type",
    ),
    (
        "header-object-value-type",
        {"response": {"headers": {"a": 1}}},
        "headers contains 'a' with wrong type",
    ),
    (
        "header-name-invalid",
        {"response": {"headers": {"bad name": "v"}}},
        "headers contains invalid header name 'bad name'",
    ),
    (
        "header-value-invalid",
        {"response": {"headers": {"a": "x\ny"}}},
        "headers contains 'a' with invalid value",
    ),
    (
        "body-bin-type",
        {"response": {"body-bin": 1}},
        "response contains 'body-bin' with wrong type",
    ),
    ("body-type", {"response": {"body": 1}}, "response contains 'body' with wrong type"),
]


@pytest.mark.parametrize(
    ("document", "message"), [v[1:] for v in JSON_ERRORS], ids=[v[0] for v in JSON_ERRORS]
)
def test_json_errors(document: Any, message: str) -> None:
    with pytest.raises(InstructError) as info:
        parse_json(document)
    assert str(info.value) == message


BAD_JSON_BODIES: list[tuple[bytes, str]] = [
    (b"", "failed to parse application/grip-instruct content as JSON"),
    (b"not json", "failed to parse application/grip-instruct content as JSON"),
    (b"\xff\xfe\xfa", "failed to parse application/grip-instruct content as JSON"),
    (b'{"a": NaN}', "failed to parse application/grip-instruct content as JSON"),
    (b'{"a": Infinity}', "failed to parse application/grip-instruct content as JSON"),
    (b'{"a": ' + b"1" * 5000 + b"}", "failed to parse application/grip-instruct content as JSON"),
    (b"[" * 45_000 + b"]" * 45_000, "failed to parse application/grip-instruct content as JSON"),
    (b"{} trailing", "failed to parse application/grip-instruct content as JSON"),
    (b"[]", "instruct must be an object"),
    (b"1", "instruct must be an object"),
    (b'"s"', "instruct must be an object"),
    (b"null", "instruct must be an object"),
]


@pytest.mark.parametrize(("body", "message"), BAD_JSON_BODIES)
def test_bad_json_bodies(body: bytes, message: str) -> None:
    with pytest.raises(InstructError) as info:
        parse([JSON_CT], body=body)
    assert str(info.value) == message


def test_json_requires_status_200() -> None:
    with pytest.raises(
        InstructError, match=r"^response code for application/grip-instruct content must be 200$"
    ):
        parse([JSON_CT], status=201, body=b"{}")
    # The origin's own status counts, not a Grip-Status override.
    assert parse([JSON_CT, ("Grip-Status", "404")], body=b"{}").status == 404


def test_json_header_errors_come_first() -> None:
    with pytest.raises(InstructError, match="^" + HOLD_ERROR):
        parse([JSON_CT, ("Grip-Hold", "x")], body=b"not json")


# -- body size limit (§1.6) ----------------------------------------------------------------------

LIMIT_VECTORS: list[tuple[str, Pairs, int | None]] = [
    ("plain", [("Grip-Channel", "a")], MAX_INSTRUCT_BODY),
    ("response-hold", [("Grip-Hold", "response")], MAX_INSTRUCT_BODY),
    ("stream-hold", [("Grip-Hold", "stream")], None),
    ("next-link-no-hold", [("Grip-Link", "</n>; rel=next")], None),
    (
        "next-link-response-hold",
        [("Grip-Hold", "response"), ("Grip-Link", "</n>; rel=next")],
        MAX_INSTRUCT_BODY,
    ),
    ("gone-link-no-hold", [("Grip-Link", "</g>; rel=gone")], MAX_INSTRUCT_BODY),
    (
        "stream-build-id",
        [("Grip-Hold", "stream"), ("Grip-Channel", "a, b; filter=build-id")],
        MAX_INSTRUCT_BODY,
    ),
    (
        "stream-other-filter",
        [("Grip-Hold", "stream"), ("Grip-Channel", "b; filter=skip-self")],
        None,
    ),
    ("json-stream", [JSON_CT, ("Grip-Hold", "stream")], MAX_INSTRUCT_BODY),
]


@pytest.mark.parametrize(
    ("pairs", "expected"), [v[1:] for v in LIMIT_VECTORS], ids=[v[0] for v in LIMIT_VECTORS]
)
def test_instruct_body_limit(pairs: Pairs, expected: int | None) -> None:
    assert instruct_body_limit(_headers(pairs)) == expected
    custom = None if expected is None else 10
    assert instruct_body_limit(_headers(pairs), max_body=10) == custom


def test_body_too_large() -> None:
    limit_body = b"x" * MAX_INSTRUCT_BODY
    assert parse([("Grip-Hold", "response")], body=limit_body).body == limit_body
    with pytest.raises(InstructError) as info:
        parse([("Grip-Hold", "response")], body=limit_body + b"x")
    assert str(info.value) == "GRIP instruct response too large"
    assert info.value.error_status_hint == 502
    assert parse([("Grip-Hold", "stream")], body=limit_body + b"x").hold == "stream"
    with pytest.raises(InstructError):
        parse_instruct(200, b"OK", _headers([("Grip-Hold", "response")]), b"123", max_body=2)


# -- helpers ---------------------------------------------------------------------------------------


def test_strip_helpers() -> None:
    headers = _headers(
        [
            ("Grip-Hold", "x"),
            ("Connection", "close"),
            ("KEEP-ALIVE", "1"),
            ("Content-Encoding", "gzip"),
            ("transfer-encoding", "chunked"),
            ("Content-Length", "3"),
            ("X", "1"),
        ]
    )
    assert strip_grip_headers(headers) == headers[1:]
    assert strip_hop_by_hop(headers) == [headers[0], headers[5], headers[6]]
    assert {
        b"connection",
        b"keep-alive",
        b"content-encoding",
        b"transfer-encoding",
    } == HOP_BY_HOP_HEADERS


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (200, b"OK"),
        (404, b"Not Found"),
        (502, b"Bad Gateway"),
        (299, b"Undefined Reason"),
        (0, b"Undefined Reason"),
    ],
)
def test_reason_phrase(status: int, phrase: bytes) -> None:
    assert reason_phrase(status) == phrase


def test_meta_is_read_only_and_equal_to_dict() -> None:
    instruct = parse([("Grip-Set-Meta", "a=1")])
    assert instruct.meta == {"a": "1"}
    with pytest.raises(TypeError):
        instruct.meta["b"] = "2"  # type: ignore[index]


def test_values_are_frozen() -> None:
    instruct = parse([("Grip-Hold", "response")])
    with pytest.raises(AttributeError):
        instruct.hold = None  # type: ignore[misc]


def test_value_constructors_coerce() -> None:
    assert Channel("a", None, ["f"]).filters == ("f",)  # type: ignore[arg-type]
    instruct = Instruct(channels=[Channel("a")], headers=[(b"a", b"b")])  # type: ignore[arg-type]
    assert instruct.channels == (Channel("a"),) and instruct.headers == ((b"a", b"b"),)
    assert Instruct().reason == b"OK" and Instruct().meta == {}


# Untyped aliases: these calls break the annotations on purpose.
_untyped_Channel: Any = Channel
_untyped_KeepAlive: Any = KeepAlive
_untyped_Link: Any = Link
_untyped_Instruct: Any = Instruct
_untyped_parse_instruct: Any = parse_instruct

INVALID_VALUES: list[tuple[str, Any]] = [
    ("channel-empty-name", lambda: _untyped_Channel("")),
    ("channel-bytes-name", lambda: _untyped_Channel(b"a")),
    ("channel-empty-prev-id", lambda: _untyped_Channel("a", "")),
    ("channel-filters-str", lambda: _untyped_Channel("a", None, "build-id")),
    ("channel-filters-int", lambda: _untyped_Channel("a", None, 5)),
    ("channel-filter-type", lambda: _untyped_Channel("a", None, (1,))),
    ("channel-six-filters", lambda: _untyped_Channel("a", None, ("f",) * 6)),
    ("keep-alive-empty", lambda: _untyped_KeepAlive(b"")),
    ("keep-alive-str", lambda: _untyped_KeepAlive("x")),
    ("keep-alive-timeout-zero", lambda: _untyped_KeepAlive(b"x", 0)),
    ("keep-alive-timeout-bool", lambda: _untyped_KeepAlive(b"x", True)),
    ("keep-alive-mode", lambda: _untyped_KeepAlive(b"x", 5, "sometimes")),
    ("link-empty", lambda: _untyped_Link("")),
    ("link-timeout-negative", lambda: _untyped_Link("/x", -1)),
    ("instruct-hold", lambda: _untyped_Instruct(hold="later")),
    ("instruct-channels", lambda: _untyped_Instruct(channels=("a",))),
    ("instruct-channels-int", lambda: _untyped_Instruct(channels=5)),
    ("instruct-headers-int", lambda: _untyped_Instruct(headers=5)),
    ("instruct-timeout", lambda: _untyped_Instruct(timeout=4)),
    ("instruct-keep-alive", lambda: _untyped_Instruct(keep_alive=b"x")),
    ("instruct-meta-type", lambda: _untyped_Instruct(meta=[("a", "b")])),
    ("instruct-meta-values", lambda: _untyped_Instruct(meta={"a": 1})),
    ("instruct-link", lambda: _untyped_Instruct(next_link="/x")),
    ("instruct-status", lambda: _untyped_Instruct(status=1000)),
    ("instruct-reason", lambda: _untyped_Instruct(reason="OK")),
    ("instruct-headers", lambda: _untyped_Instruct(headers=[("a", "b")])),
    ("instruct-body", lambda: _untyped_Instruct(body="x")),
    ("parse-status", lambda: _untyped_parse_instruct(1000, b"", [], b"")),
    ("parse-reason", lambda: _untyped_parse_instruct(200, "OK", [], b"")),
    ("parse-body", lambda: _untyped_parse_instruct(200, b"OK", [], "x")),
    (
        "parse-request-uri",
        lambda: _untyped_parse_instruct(
            200, b"OK", [(b"Grip-Link", b"<x>; rel=next")], b"", request_uri="http://[::1/"
        ),
    ),
]


@pytest.mark.parametrize(
    "build", [v[1] for v in INVALID_VALUES], ids=[v[0] for v in INVALID_VALUES]
)
def test_invalid_values_raise_local_protocol_error(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()


# -- §9 checklist rows about parsing ------------------------------------------------------------


def test_row01_any_grip_header_triggers_and_is_stripped() -> None:
    headers = _headers([("Grip-Foo", "x"), ("X", "1")])
    assert is_grip_response(headers)
    assert parse_instruct(200, b"OK", headers, b"").headers == ((b"X", b"1"),)


def test_row02_content_type_media_type_only() -> None:
    assert is_grip_response(_headers([("Content-Type", "application/grip-instruct; x=y")]))
    assert not is_grip_response(_headers([("Content-Type", "application/grip-instructions")]))


def test_row03_response_hold_keeps_response_for_timeout() -> None:
    instruct = parse([("Grip-Hold", "response"), ("Grip-Channel", "c")], body=b"timeout body")
    assert instruct.hold == "response" and instruct.body == b"timeout body"


def test_row04_stream_hold_has_no_content_length() -> None:
    instruct = parse(
        [("Grip-Hold", "stream"), ("Content-Length", "5"), ("Grip-Channel", "c")], body=b"hello"
    )
    assert instruct.hold == "stream" and instruct.headers == () and instruct.body == b"hello"


def test_row05_invalid_hold_is_an_error_with_502_hint() -> None:
    with pytest.raises(InstructError) as info:
        parse([("Grip-Hold", "sometimes")])
    assert info.value.error_status_hint == 502 and str(info.value) == HOLD_ERROR


def test_row06_multiple_channel_headers_and_lists() -> None:
    names = [c.name for c in parse([("Grip-Channel", "a"), ("Grip-Channel", "b, c")]).channels]
    assert names == ["a", "b", "c"]


def test_row07_prev_id_per_channel() -> None:
    channels = parse([("Grip-Channel", "a; prev-id=1, b, c; prev-id=3")]).channels
    assert [c.prev_id for c in channels] == ["1", None, "3"]


def test_row08_five_filters_max() -> None:
    assert len(parse([("Grip-Channel", "a" + "; filter=f" * 5)]).channels[0].filters) == 5
    with pytest.raises(InstructError, match="too many filters"):
        parse([("Grip-Channel", "a" + "; filter=f" * 6)])


def test_row09_unknown_filters_no_error() -> None:
    assert parse([("Grip-Channel", "a; filter=no-such-filter")]).channels[0].filters == (
        "no-such-filter",
    )


def test_row10_timeout_default_and_minimum() -> None:
    assert parse([("Grip-Hold", "response")]).timeout == 55
    assert parse([("Grip-Hold", "response"), ("Grip-Timeout", "1")]).timeout == 5


def test_row11_timeout_response_is_original_minus_grip() -> None:
    pairs = [
        ("Grip-Hold", "response"),
        ("Content-Type", "text/plain"),
        ("X-A", "1"),
        ("Grip-Channel", "c"),
    ]
    instruct = parse(pairs, status=201, reason=b"Created", body=b"orig")
    assert client_response(instruct) == (
        201,
        b"Created",
        [(b"Content-Type", b"text/plain"), (b"X-A", b"1")],
        b"orig",
    )


def test_row12_keep_alive_formats() -> None:
    assert parse([("Grip-Keep-Alive", "\\n; format=cstring")]).keep_alive == KeepAlive(b"\n")
    assert parse([("Grip-Keep-Alive", "Cg==; format=base64")]).keep_alive == KeepAlive(b"\n")
    assert parse([("Grip-Keep-Alive", ":; format=raw")]).keep_alive == KeepAlive(b":")


def test_row13_keep_alive_default_timeout_and_modes() -> None:
    assert parse([("Grip-Keep-Alive", "x")]).keep_alive == KeepAlive(b"x", 55, "idle")
    assert parse([("Grip-Keep-Alive", "x; mode=interval")]).keep_alive == KeepAlive(
        b"x", 55, "interval"
    )


def test_row15_set_meta() -> None:
    assert parse([("Grip-Set-Meta", "user=alice, id_format=x")]).meta == {
        "user": "alice",
        "id_format": "x",
    }


def test_row16_grip_status_default_phrase() -> None:
    instruct = parse([("Grip-Status", "404")])
    assert (instruct.status, instruct.reason) == (404, b"Not Found")


def test_row17_expose_headers_whitelist() -> None:
    instruct = parse([("Grip-Expose-Headers", "X-Keep"), ("X-Keep", "1"), ("X-Drop", "2")])
    assert instruct.headers == ((b"X-Keep", b"1"),)


def test_row18_next_link_on_stream_hold() -> None:
    instruct = parse(
        [("Grip-Hold", "stream"), ("Grip-Link", "</more>; rel=next")], request_uri="http://o/s"
    )
    assert instruct.next_link == Link("http://o/more", 120)


def test_row19_next_link_without_hold() -> None:
    instruct = parse([("Grip-Link", "</page2>; rel=next")], body=b"page1")
    assert (
        instruct.hold is None
        and instruct.next_link == Link("/page2", 120)
        and instruct.body == b"page1"
    )


def test_row20_next_link_default_timeout() -> None:
    assert parse([("Grip-Link", "</n>; rel=next")]).next_link == Link(
        "/n", DEFAULT_NEXT_LINK_TIMEOUT
    )


def test_row22_next_link_response_may_be_any_hold_at_parse_level() -> None:
    # Rejecting a response hold from a next link is the stream session's job; the parser reports it.
    assert parse([("Grip-Hold", "response"), ("Grip-Link", "</n>; rel=next")]).hold == "response"


def test_row25_gone_link() -> None:
    assert parse([("Grip-Link", "</gone>; rel=gone")], request_uri="http://o/x").gone_link == Link(
        "http://o/gone"
    )


def test_row26_stream_prev_id_is_parsed() -> None:
    instruct = parse([("Grip-Hold", "stream"), ("Grip-Channel", "c; prev-id=7")])
    assert instruct.channels == (Channel("c", "7"),) and instruct.next_link is None


def test_row27_json_schema() -> None:
    document = {
        "hold": {
            "mode": "stream",
            "channels": [{"name": "c", "prev-id": "1", "filters": ["skip-self"]}],
            "timeout": 10,
            "keep-alive": {"content": "ka", "timeout": 20},
            "meta": {"user": "u"},
        },
        "response": {
            "code": 200,
            "reason": "Fine",
            "headers": [["X", "1"]],
            "body-bin": "Ym9keQ==",
        },
    }
    assert parse_json(document) == Instruct(
        hold="stream",
        channels=(Channel("c", "1", ("skip-self",)),),
        timeout=10,
        keep_alive=KeepAlive(b"ka", 20, "interval"),
        meta={"user": "u"},
        status=200,
        reason=b"Fine",
        headers=((b"X", b"1"),),
        body=b"body",
    )


def test_row28_json_requires_200() -> None:
    with pytest.raises(InstructError):
        parse([JSON_CT], status=201, body=b"{}")


def test_row29_json_discards_outer_headers_and_body() -> None:
    instruct = parse([JSON_CT, ("X-Outer", "1")], body=b'{"response": {"body": "inner"}}')
    assert instruct.headers == () and instruct.body == b"inner"


# -- properties -------------------------------------------------------------------------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=8)
_unicode = st.characters(exclude_categories=["Cs", "Cc"], exclude_characters=',;" ')
_name = st.text(_unicode, min_size=1, max_size=10)
_free_text = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=10)
_case = st.sampled_from([str.lower, str.upper, str.title])


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def grip_header_sets(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    pairs: Pairs = []
    expected: dict[str, Any] = {}

    def add(name: str, value: str) -> None:
        pairs.append((draw(_case)(name), value))

    hold = draw(st.sampled_from([None, "response", "stream"]))
    if hold is not None:
        add("Grip-Hold", hold)
    expected["hold"] = hold

    channels = draw(
        st.lists(
            st.tuples(_name, st.none() | _free_text, st.lists(_token, max_size=MAX_FILTERS)),
            max_size=6,
        )
    )
    elements = [
        format_param_list(
            encode_utf8_text(name),
            ([("prev-id", encode_utf8_text(prev))] if prev else [])
            + [("filter", f) for f in filters],
        )
        for name, prev, filters in channels
    ]
    per_header = draw(st.integers(1, 3))
    for start in range(0, len(elements), per_header):
        add("Grip-Channel", ", ".join(elements[start : start + per_header]))
    expected["channels"] = tuple(Channel(n, p, tuple(f)) for n, p, f in channels)

    timeout = draw(st.none() | st.integers(0, 10**6))
    if timeout is not None:
        add("Grip-Timeout", str(timeout))
    expected["timeout"] = max(DEFAULT_TIMEOUT if timeout is None else timeout, MIN_TIMEOUT)

    keep_alive = draw(
        st.none()
        | st.tuples(
            st.binary(min_size=1, max_size=20),
            st.sampled_from(["idle", "interval"]),
            st.integers(0, 999),
        )
    )
    if keep_alive is not None:
        data, mode, ka_timeout = keep_alive
        add(
            "Grip-Keep-Alive",
            f"{base64.b64encode(data).decode()}; format=base64; mode={mode}; timeout={ka_timeout}",
        )
        expected["keep_alive"] = KeepAlive(data, max(ka_timeout, 1), mode)  # type: ignore[arg-type]
    else:
        expected["keep_alive"] = None

    meta = draw(
        st.dictionaries(
            _token, st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=10), max_size=4
        )
    )
    if meta:
        add(
            "Grip-Set-Meta",
            ", ".join(f"{k}={_quoted(encode_utf8_text(v))}" for k, v in meta.items()),
        )
    expected["meta"] = meta

    status = draw(
        st.none()
        | st.tuples(
            st.integers(100, 999), st.from_regex(r"([A-Za-z][A-Za-z ]*[A-Za-z])?", fullmatch=True)
        )
    )
    if status is not None:
        code, reason = status
        add("Grip-Status", f"{code} {reason}" if reason else str(code))
        expected["status"] = code
        expected["reason"] = reason.encode() if reason else reason_phrase(code)

    next_link = draw(st.none() | st.tuples(_token, st.none() | st.integers(0, 10**5)))
    if next_link is not None:
        path, link_timeout = next_link
        add(
            "Grip-Link",
            f"</{path}>; rel=next" + ("" if link_timeout is None else f"; timeout={link_timeout}"),
        )
        expected["next_link"] = Link(
            # relative links resolve with urljoin, which also removes dot segments ("/." -> "/")
            urljoin("http://origin.example/page", f"/{path}"),
            120 if link_timeout is None else link_timeout,
        )

    extra = draw(
        st.lists(
            st.tuples(
                _token.map(lambda t: "x-" + t), st.from_regex(r"[!-~]{0,10}", fullmatch=True)
            ),
            max_size=4,
        )
    )
    pairs.extend(extra)
    expected["headers"] = tuple((k.encode(), v.encode()) for k, v in extra)
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs], expected


@settings(max_examples=examples(100))
@given(grip_header_sets())
def test_generated_header_sets_parse(
    case: tuple[list[tuple[bytes, bytes]], dict[str, Any]],
) -> None:
    headers, expected = case
    assert is_grip_response(headers) or not any(k.lower().startswith(b"grip-") for k, _ in headers)
    instruct = parse_instruct(
        200, b"OK", headers, b"body", request_uri="http://origin.example/page"
    )
    assert_fields(instruct, expected)


_GRIP_NAMES = [
    "Grip-Hold",
    "Grip-Channel",
    "Grip-Timeout",
    "Grip-Keep-Alive",
    "Grip-Set-Meta",
    "Grip-Status",
    "Grip-Link",
    "Grip-Expose-Headers",
    "Content-Type",
]
_header_value = st.binary(max_size=40) | st.text(
    alphabet=list(' ,;="\\<>/:abcxyz019-\t'), max_size=40
).map(str.encode)


def _only_instruct_errors(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    try:
        instruct = parse_instruct(200, b"OK", headers, body, request_uri="http://o.example/a")
    except ProtocolError as exc:
        assert type(exc) is InstructError, repr(exc)
        assert exc.error_status_hint == 502
    else:
        assert isinstance(instruct, Instruct)
        assert all(not k.lower().startswith(b"grip-") for k, _ in instruct.headers)


@given(st.lists(st.tuples(st.sampled_from(_GRIP_NAMES).map(str.encode), _header_value), max_size=6))
def test_arbitrary_headers_raise_only_instruct_errors(headers: list[tuple[bytes, bytes]]) -> None:
    _only_instruct_errors(headers, b"")


_JSON_KEYS = st.sampled_from(
    [
        "hold",
        "response",
        "mode",
        "channels",
        "name",
        "prev-id",
        "filters",
        "timeout",
        "keep-alive",
        "content",
        "content-bin",
        "meta",
        "code",
        "reason",
        "headers",
        "body",
        "body-bin",
    ]
) | st.text(max_size=5)
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["response", "stream", "cGluZw==", "X-A", "a b"])
    | st.text(max_size=6)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_JSON_KEYS, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=examples(200))
@given(
    st.dictionaries(_JSON_KEYS, _json_values, max_size=3),
    st.lists(
        st.tuples(st.sampled_from(_GRIP_NAMES[:-1]).map(str.encode), _header_value), max_size=2
    ),
)
def test_arbitrary_json_raises_only_instruct_errors(
    document: dict[str, Any], extra: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(document).encode()
    _only_instruct_errors([(b"Content-Type", b"application/grip-instruct"), *extra], body)


@given(st.binary(max_size=80))
def test_arbitrary_json_bytes_raise_only_instruct_errors(body: bytes) -> None:
    _only_instruct_errors([(b"Content-Type", b"application/grip-instruct")], body)


# -- linear time on large inputs --------------------------------------------------------------------

MEGABYTE = 1_000_000


def test_megabyte_channel_list() -> None:
    count = MEGABYTE // 50
    prev_id = "p" * 30
    value = ", ".join(f"c{n}; prev-id={prev_id}; filter=f" for n in range(count)).encode()
    assert len(value) > MEGABYTE
    headers = [(b"Grip-Hold", b"stream"), (b"Grip-Channel", value)]
    instruct = parse_instruct(200, b"OK", headers, b"x" * (MAX_INSTRUCT_BODY + 1))
    assert len(instruct.channels) == count
    assert instruct.channels[-1] == Channel(f"c{count - 1}", prev_id, ("f",))


def test_megabyte_header_values() -> None:
    data = b"\\x41" * (MEGABYTE // 4)
    headers = [
        (b"Grip-Keep-Alive", data + b"; format=cstring"),
        (b"Grip-Set-Meta", b'k="' + b"v" * MEGABYTE + b'"'),
        (b"Grip-Link", b"<" + b"/p" * (MEGABYTE // 2) + b">; rel=next"),
        (b"Grip-Expose-Headers", b", ".join([b"x-h"] * (MEGABYTE // 5))),
        (b"Grip-Status", b"200 " + b"r" * MEGABYTE),
        (b"Grip-Timeout", b"0" * MEGABYTE + b"7"),
    ]
    instruct = parse_instruct(200, b"OK", headers, b"")
    assert instruct.keep_alive is not None and instruct.keep_alive.data == b"A" * (MEGABYTE // 4)
    assert instruct.meta == {"k": "v" * MEGABYTE}
    assert instruct.next_link is not None and len(instruct.next_link.url) == MEGABYTE
    assert len(instruct.reason) == MEGABYTE
    assert instruct.timeout == 7


def test_largest_json_instruct() -> None:
    channels = [{"name": f"c{n}", "filters": ["skip-self"]} for n in range(1500)]
    body = json.dumps({"hold": {"channels": channels}, "response": {"body": "x" * 20_000}}).encode()
    assert len(body) <= MAX_INSTRUCT_BODY
    instruct = parse([JSON_CT], body=body)
    assert len(instruct.channels) == 1500 and len(instruct.body) == 20_000
