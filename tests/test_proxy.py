"""Origin request headers, X-Forwarded-For rules, Grip-Last, response classification, links."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gripcore import InstructError, LocalProtocolError
from gripcore._instruct import Instruct
from gripcore._proxy import (
    GRIP_FEATURES,
    Passthrough,
    classify_response,
    forwarded_for,
    grip_last_headers,
    link_client_headers,
    link_destination,
    origin_request_headers,
)
from gripcore._routes import Target

H = list[tuple[bytes, bytes]]

# Everything a client may send that must not reach the origin as it is.
DIRTY: H = [
    (b"Host", b"example.com"),
    (b"User-Agent", b"ua/1"),
    (b"Connection", b"keep-alive, X-Secret"),
    (b"Keep-Alive", b"timeout=5"),
    (b"X-Secret", b"listed in Connection"),
    (b"Accept-Encoding", b"gzip"),
    (b"TE", b"trailers"),
    (b"Transfer-Encoding", b"chunked"),
    (b"Content-Length", b"99"),
    (b"Expect", b"100-continue"),
    (b"Upgrade", b"h2c"),
    (b"Proxy-Connection", b"close"),
    (b"Trailer", b"X-T"),
    (b"Content-Encoding", b"gzip"),
    (b"Grip-Sig", b"forged"),
    (b"grip-last", b"news; last-id=1"),
    (b"GRIP-Feature", b"forged"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Protocol", b"https"),
    (b"Accept", b"*/*"),
]

WS_CLIENT: H = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    (b"Sec-WebSocket-Version", b"13"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
    (b"Sec-WebSocket-Protocol", b"chat"),
    (b"Meta-User", b"forged"),
    (b"meta-x", b"forged"),
    (b"Connection-Id", b"forged"),
    (b"Accept", b"*/*"),
    (b"Cookie", b"a=1"),
]

FEATURE = (b"Grip-Feature", GRIP_FEATURES)

# (id, client headers, keyword arguments, expected headers in order)
REQUEST_VECTORS: list[tuple[str, H, dict[str, Any], H]] = [
    (
        "hygiene",
        DIRTY,
        {"body_length": 0},
        [(b"Host", b"example.com"), (b"User-Agent", b"ua/1"), (b"Accept", b"*/*"), FEATURE,
         (b"Content-Length", b"0")],
    ),
    (
        "signed grip route with body",
        [(b"Host", b"h")],
        {"body_length": 12, "sig_token": b"jwt.token.sig"},
        [(b"Host", b"h"), FEATURE, (b"Grip-Sig", b"jwt.token.sig"), (b"Content-Length", b"12")],
    ),
    (
        "no_grip route: no Grip-Feature, no Grip-Sig",
        [(b"Host", b"h"), (b"Grip-Sig", b"forged")],
        {"body_length": 0, "grip": False, "sig_token": b"ignored"},
        [(b"Host", b"h"), (b"Content-Length", b"0")],
    ),
    (
        "TLS client gets X-Forwarded-Proto https",
        [(b"Host", b"h"), (b"X-Forwarded-Proto", b"http")],
        {"body_length": 0, "client_tls": True, "grip": False},
        [(b"Host", b"h"), (b"X-Forwarded-Proto", b"https"), (b"Content-Length", b"0")],
    ),
    (
        "X-Forwarded-For passes through, normalised, after the other headers",
        [(b"X-Forwarded-For", b"1.1.1.1,2.2.2.2"), (b"Host", b"h")],
        {"body_length": 0, "grip": False, "peer": "9.9.9.9"},
        [(b"Host", b"h"), (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"), (b"Content-Length", b"0")],
    ),
    (
        "X-Forwarded-For truncate:0,append",
        [(b"X-Forwarded-For", b"1.1.1.1")],
        {"body_length": 0, "grip": False, "peer": "9.9.9.9", "x_forwarded_for": "truncate:0,append"},
        [(b"X-Forwarded-For", b"9.9.9.9"), (b"Content-Length", b"0")],
    ),
    (
        "route header= replaces (any case) and deletes",
        [(b"Host", b"h"), (b"x-api", b"client"), (b"X-Drop", b"1"), (b"Cookie", b"c")],
        {"body_length": 0, "grip": False, "route_headers": [("X-Api", "route"), ("x-drop", "")]},
        [(b"Host", b"h"), (b"Cookie", b"c"), (b"X-Api", b"route"), (b"Content-Length", b"0")],
    ),
    (
        "route header= can add a header the client did not send",
        [],
        {"body_length": 0, "grip": False, "route_headers": [("X-New", "v")]},
        [(b"X-New", b"v"), (b"Content-Length", b"0")],
    ),
    (
        "Host override goes first and replaces the client's",
        [(b"Accept", b"*/*"), (b"host", b"client.example")],
        {"body_length": 0, "grip": False, "host": b"origin.internal:8080"},
        [(b"Host", b"origin.internal:8080"), (b"Accept", b"*/*"), (b"Content-Length", b"0")],
    ),
    (
        "extra headers after ours, Content-Length last",
        [(b"Host", b"h")],
        {"body_length": 0, "extra": [(b"Grip-Last", b'news; last-id="3"')]},
        [(b"Host", b"h"), FEATURE, (b"Grip-Last", b'news; last-id="3"'), (b"Content-Length", b"0")],
    ),
    (
        "websocket handshake on a grip route",
        WS_CLIENT,
        {"body_length": 0, "websocket": True, "client_tls": True, "sig_token": b"t"},
        [(b"Host", b"example.com"), (b"Sec-WebSocket-Protocol", b"chat"), (b"Cookie", b"a=1"),
         (b"X-Forwarded-Proto", b"wss"), FEATURE, (b"Grip-Sig", b"t"),
         (b"Sec-WebSocket-Extensions", b"grip")],
    ),
    (
        "websocket-over-http request with a body has Content-Length",
        WS_CLIENT,
        {"body_length": 6, "websocket": True, "grip": False,
         "extra": [(b"Connection-Id", b"c1"), (b"Meta-User", b"alice")]},
        [(b"Host", b"example.com"), (b"Sec-WebSocket-Protocol", b"chat"), (b"Cookie", b"a=1"),
         (b"Connection-Id", b"c1"), (b"Meta-User", b"alice"), (b"Content-Length", b"6")],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("client", "kwargs", "expected"),
    [v[1:] for v in REQUEST_VECTORS],
    ids=[v[0] for v in REQUEST_VECTORS],
)
def test_origin_request_headers(client: H, kwargs: dict[str, Any], expected: H) -> None:
    assert origin_request_headers(client, **kwargs) == expected


def test_grip_features_lists_what_we_support() -> None:
    assert GRIP_FEATURES == (
        b"status, link:next, link:gone, filter:skip-self, filter:skip-users, "
        b"filter:require-sub, filter:build-id, filter:var-subst"
    )


# (id, request headers, peer, rule, expected X-Forwarded-For value)
XFF_VECTORS: list[tuple[str, H, str, str, bytes | None]] = [
    ("none", [], "9.9.9.9", "", None),
    ("pass through", [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2")], "9.9.9.9", "", b"1.1.1.1, 2.2.2.2"),
    ("several lines joined", [(b"x-forwarded-for", b"1.1.1.1"), (b"X-Forwarded-For", b" 2.2.2.2 ,")], "", "", b"1.1.1.1, 2.2.2.2"),
    ("truncate:1", [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2")], "9.9.9.9", "truncate:1", b"2.2.2.2"),
    ("truncate:5 keeps all", [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2")], "9.9.9.9", "truncate:5", b"1.1.1.1, 2.2.2.2"),
    ("truncate:0 drops", [(b"X-Forwarded-For", b"1.1.1.1")], "9.9.9.9", "truncate:0", None),
    ("append", [(b"X-Forwarded-For", b"1.1.1.1")], "9.9.9.9", "append", b"1.1.1.1, 9.9.9.9"),
    ("append alone", [], "::1", "append", b"::1"),
    ("truncate then append", [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2")], "9.9.9.9", "truncate:1,append", b"2.2.2.2, 9.9.9.9"),
    ("order does not matter", [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2")], "9.9.9.9", "append,truncate:1", b"2.2.2.2, 9.9.9.9"),
    ("truncate:0,append", [(b"X-Forwarded-For", b"1.1.1.1")], "9.9.9.9", " truncate:0 , append ", b"9.9.9.9"),
    ("unknown peer is not appended", [(b"X-Forwarded-For", b"1.1.1.1")], "", "append", b"1.1.1.1"),
    ("empty parts ignored", [], "9.9.9.9", ",,", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "peer", "rule", "expected"),
    [v[1:] for v in XFF_VECTORS],
    ids=[v[0] for v in XFF_VECTORS],
)
def test_forwarded_for(headers: H, peer: str, rule: str, expected: bytes | None) -> None:
    assert forwarded_for(headers, peer, rule) == expected


@pytest.mark.parametrize(
    "rule", ["prepend", "truncate:", "truncate:-1", "truncate:x", "truncate:\u0661"]
)
def test_forwarded_for_invalid_rule(rule: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        forwarded_for([], "1.2.3.4", rule)
    assert str(info.value) == f"invalid x_forwarded_for rule {rule!r}"


# (id, (channel, id) pairs, expected headers)
GRIP_LAST_VECTORS: list[tuple[str, list[tuple[str, str]], H]] = [
    ("none", [], []),
    ("one", [("news", "3")], [(b"Grip-Last", b'news; last-id="3"')]),
    ("several, in order", [("b", "1"), ("a", "2")],
     [(b"Grip-Last", b'b; last-id="1"'), (b"Grip-Last", b'a; last-id="2"')]),
    ("quote and backslash escaped", [("c", 'a"b\\c')], [(b"Grip-Last", b'c; last-id="a\\"b\\\\c"')]),
    ("UTF-8", [("caf\u00e9", "\u00e9")], [(b"Grip-Last", 'caf\u00e9; last-id="\u00e9"'.encode())]),
    ("tab allowed", [("c", "a\tb")], [(b"Grip-Last", b'c; last-id="a\tb"')]),
    ("CRLF in id left out", [("c", "1\r\nX-Evil: 1"), ("d", "2")], [(b"Grip-Last", b'd; last-id="2"')]),
    ("control char in channel left out", [("c\x00", "1")], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [v[1:] for v in GRIP_LAST_VECTORS],
    ids=[v[0] for v in GRIP_LAST_VECTORS],
)
def test_grip_last_headers(pairs: list[tuple[str, str]], expected: H) -> None:
    assert grip_last_headers(pairs) == expected


# --- classify_response ------------------------------------------------------------------------


def test_classify_grip_headers_parses_instruct() -> None:
    headers = [
        (b"Grip-Hold", b"stream"),
        (b"Grip-Channel", b"news"),
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"close"),
    ]
    result = classify_response(200, b"OK", headers, b"hi\n", request_uri="http://h/x")
    assert isinstance(result, Instruct)
    assert result.hold == "stream"
    assert [c.name for c in result.channels] == ["news"]
    assert result.headers == ((b"Content-Type", b"text/plain"),)
    assert result.body == b"hi\n"


def test_classify_instruct_content_type() -> None:
    body = b'{"hold": {"mode": "response", "channels": [{"name": "c"}]}}'
    result = classify_response(200, b"OK", [(b"Content-Type", b"application/grip-instruct")], body)
    assert isinstance(result, Instruct)
    assert result.hold == "response"


def test_classify_plain_response_is_passthrough() -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"2"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Encoding", b"gzip"),
        (b"Set-Cookie", b"a=1"),
    ]
    result = classify_response(404, b"Not Found", headers, b"no")
    assert result == Passthrough(
        404,
        b"Not Found",
        [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2"), (b"Set-Cookie", b"a=1")],
    )


def test_classify_no_grip_route_relays_grip_headers() -> None:
    headers = [(b"Grip-Hold", b"response"), (b"Grip-Channel", b"c"), (b"Connection", b"close")]
    result = classify_response(200, b"OK", headers, b"", grip=False)
    assert result == Passthrough(200, b"OK", [(b"Grip-Hold", b"response"), (b"Grip-Channel", b"c")])


def test_classify_malformed_grip_raises_instruct_error() -> None:
    with pytest.raises(InstructError) as info:
        classify_response(200, b"OK", [(b"Grip-Hold", b"forever")], b"")
    assert info.value.error_status_hint == 502


# --- link_destination -------------------------------------------------------------------------

ORIGIN = Target("origin.internal", 8080)
OTHER = Target("10.0.0.2", 80)
TLS = Target("secure.internal", 443, ssl=True)
TEST = Target("test", 0, kind="test")

# (id, url, request host, targets, expected destination)
LINK_VECTORS: list[tuple[str, str, str, tuple[Target, ...], tuple[Target, bytes] | None]] = [
    ("same origin", "http://example.com/next?after=3", "example.com", (ORIGIN,), (ORIGIN, b"/next?after=3")),
    ("same origin, case and default port", "http://EXAMPLE.com:80/a", "Example.COM", (ORIGIN,), (ORIGIN, b"/a")),
    ("same origin with port", "https://example.com:8443/a", "example.com:8443", (ORIGIN,), (ORIGIN, b"/a")),
    ("same origin, trailing dot in Host", "http://example.com/a", "example.com.", (ORIGIN,), (ORIGIN, b"/a")),
    ("same origin goes to the first net target", "http://example.com/", "example.com", (TEST, OTHER), (OTHER, b"/")),
    ("same origin with only a test target", "http://example.com/x", "example.com", (TEST,), (TEST, b"/x")),
    ("empty path becomes /", "http://example.com", "example.com", (ORIGIN,), (ORIGIN, b"/")),
    ("route target by host and port", "http://origin.internal:8080/p?q", "example.com", (OTHER, ORIGIN), (ORIGIN, b"/p?q")),
    ("route target, https default port", "https://secure.internal/p", "example.com", (ORIGIN, TLS), (TLS, b"/p")),
    ("route target host, other port", "http://origin.internal:9090/p", "example.com", (ORIGIN,), None),
    ("other host refused", "http://evil.example/steal", "example.com", (ORIGIN,), None),
    ("other port on same host with port refused", "http://example.com:9/x", "example.com:8443", (ORIGIN,), None),
    ("no request host", "http://example.com/x", "", (ORIGIN,), None),
    ("bad scheme", "ftp://example.com/x", "example.com", (ORIGIN,), None),
    ("javascript scheme", "javascript:alert(1)", "example.com", (ORIGIN,), None),
    ("relative link (unresolved)", "/x", "example.com", (ORIGIN,), None),
    ("no host", "http:///x", "example.com", (ORIGIN,), None),
    ("port out of range", "http://example.com:99999/x", "example.com", (ORIGIN,), None),
    ("port not a number", "http://example.com:abc/x", "example.com", (ORIGIN,), None),
    ("no targets", "http://example.com/x", "example.com", (), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "request_host", "targets", "expected"),
    [v[1:] for v in LINK_VECTORS],
    ids=[v[0] for v in LINK_VECTORS],
)
def test_link_destination(
    url: str,
    request_host: str,
    targets: tuple[Target, ...],
    expected: tuple[Target, bytes] | None,
) -> None:
    assert link_destination(url, request_host=request_host, targets=targets) == expected


# --- properties -------------------------------------------------------------------------------

header_names = st.sampled_from(
    [b"Host", b"Connection", b"Grip-Sig", b"grip-x", b"X-Forwarded-For", b"Keep-Alive", b"Meta-A",
     b"Sec-WebSocket-Key", b"Accept", b"X-App", b"Content-Length", b"TE", b"Upgrade"]
) | st.binary(min_size=1, max_size=8)  # fmt: skip
header_lists = st.lists(st.tuples(header_names, st.binary(max_size=16)), max_size=12)


@given(header_lists, st.booleans(), st.booleans(), st.integers(0, 10**6))
def test_client_cannot_inject_grip_or_hop_by_hop(
    headers: H, websocket: bool, tls: bool, length: int
) -> None:
    out = origin_request_headers(
        headers, body_length=length, websocket=websocket, client_tls=tls, peer="1.2.3.4"
    )
    names = [n.lower() for n, _ in out]
    assert [n for n in names if n.startswith(b"grip-")] == [b"grip-feature"]
    assert dict(out)[b"Grip-Feature"] == GRIP_FEATURES
    for hop in (b"connection", b"keep-alive", b"te", b"upgrade", b"transfer-encoding"):
        assert hop not in names
    assert names.count(b"content-length") == (1 if length or not websocket else 0)
    assert names.count(b"x-forwarded-proto") == (1 if tls else 0)
    assert names.count(b"x-forwarded-for") <= 1
    if websocket:
        assert not any(n.startswith(b"meta-") for n in names)
        assert (b"Sec-WebSocket-Extensions", b"grip") in out


# The peer is the socket's address, never client input: it holds no comma. (A random run once
# drew peer ",," and counted its commas as hops: the generator's mistake, kept as an example of
# what the strategy must not make.)
_PEERS = st.text(alphabet=st.characters(blacklist_characters=","), max_size=12)


@given(header_lists, _PEERS)
@example([(b"X-Forwarded-For", b"\x00")], "1.2.3.4")
def test_forwarded_for_never_raises_for_client_input(headers: H, peer: str) -> None:
    value = forwarded_for(headers, peer, "truncate:2,append")
    assert value is None or value.count(b",") <= 2


def test_many_headers_are_handled_in_one_pass() -> None:
    headers = [(b"X-H%d" % i, b"v") for i in range(50_000)] + [(b"Connection", b"x-h1")]
    out = origin_request_headers(headers, body_length=0, grip=False)
    assert len(out) == 50_000  # 49,999 kept + Content-Length
    assert out[-1] == (b"Content-Length", b"0")


def test_link_destination_allowed_hosts() -> None:
    from gripcore._proxy import link_destination
    from gripcore._routes import Target

    route_targets = [Target("127.0.0.1", 8080)]
    url = "https://feeds.example:8443/next?after=3"
    assert link_destination(url, request_host="app.example", targets=route_targets) is None
    target, path = link_destination(  # type: ignore[misc]
        url, request_host="app.example", targets=route_targets, allowed=[("feeds.example", 8443)]
    )
    assert (target.host, target.port, target.ssl, path) == (
        "feeds.example",
        8443,
        True,
        b"/next?after=3",
    )
    assert (
        link_destination(
            url, request_host="app.example", targets=route_targets, allowed=[("feeds.example", 443)]
        )
        is None
    )


@pytest.mark.parametrize(
    ("client", "url", "expected"),
    [
        (DIRTY, "http://origin.test:8080/next?a=1", [(b"Host", b"origin.test:8080")]),
        (DIRTY, "/next", [(b"Host", b"example.com")]),  # a local link: the client's Host
        ([(b"Cookie", b"c=1")], "", []),
    ],
)
def test_link_requests_start_from_a_host_alone(client: H, url: str, expected: H) -> None:
    """Pushpin's link requests are its own: no Cookie, no Last-Event-ID, nothing the client
    sent but where to go."""
    assert link_client_headers(client, url) == expected
