"""One client connection of the proxy (gripcore._connection), driven directly: requests in as
bytes, the origin scripted, and everything the connection asks its driver for recorded."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import generate_accept_token

from gripcore._connection import (
    MAX_CLIENT_MESSAGE,
    OriginWsLink,
    ProxyConnection,
)
from gripcore._errors import PublishError
from gripcore._items import parse_publish_body
from gripcore._node import ConnectOriginWebSocket, DiscardBody, NextChunk, OriginRequest
from gripcore._originhttp import OriginError
from gripcore._sig import SigningKey, mint_sig
from gripcore._wsdeflate import RESPONSE
from gripcore._wsevents import Close, Open, Text, encode_events
from gripcore._wsproxy import CloseOrigin, SendToOrigin

from .sansio_support import (
    Harness,
    RecordingIO,
    Reply,
    get,
    parse_responses,
    post,
    reply,
)

ROUTE = "* 127.0.0.1:9"
ERROR_BODY = b"Error while proxying to origin.\n"
HOLD = [(b"Grip-Hold", b"response"), (b"Grip-Channel", b"ch")]
STREAM = [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"ch"), (b"Content-Type", b"text/plain")]
WOH = (b"Content-Type", b"application/websocket-events")


def routed(*extra: str, **config: object) -> Harness:
    return Harness(routes=(ROUTE + "".join(extra),), **config)


def whole(status: int, reason: bytes, headers: list[bytes], body: bytes) -> bytes:
    """A response exactly as the connection writes a whole one."""
    head = [b"HTTP/1.1 %d %s" % (status, reason), *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def text(status: int, reason: bytes, body: bytes, *, close: bool = False) -> bytes:
    headers = [b"Content-Type: text/plain"]
    out = whole(status, reason, headers, body)
    if close:
        out = out.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    return out


def header(op: OriginRequest, name: bytes) -> bytes | None:
    for n, v in op.headers:
        if n.lower() == name:
            return v
    return None


# --- accepting connections and HTTP requests ---


def test_over_max_connections_answers_503_and_closes() -> None:
    h = Harness(max_connections=1)
    h.connect()
    io = RecordingIO()
    conn = ProxyConnection(h.node, io)
    assert not conn.connection_made()
    assert io.take() == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 26\r\nConnection: close\r\n\r\nToo many open connections\n"
    )
    assert io.closed and conn.closed and conn not in h.node.connections


def test_relay_with_keep_alive_then_the_next_request() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"one", [(b"Content-Type", b"text/plain")]), reply(404, b"two"))
    out = h.request(conn, io, get(b"/a?x=1") + get(b"/b"))
    assert out == whole(200, b"OK", [b"Content-Type: text/plain"], b"one") + whole(
        404, b"Not Found", [], b"two"
    )
    assert [op.path for op in h.origin.requests] == [b"/a?x=1", b"/b"]
    assert not io.closed and not conn.busy


def test_host_found_after_other_headers_and_missing_in_http_1_0() -> None:
    h = Harness()  # starter kit: the host goes into the instruct's request URI
    conn, io = h.connect()
    conn.receive_data(b"GET /nope HTTP/1.0\r\nAccept: */*\r\n\r\n")
    h.run(io)
    [(response, body)] = parse_responses(io.take())
    assert response.status_code == 404 and b"no such path '/nope'" in body
    assert io.closed  # HTTP/1.0: no keep-alive
    conn2, io2 = h.connect()
    conn2.receive_data(b"GET /nope HTTP/1.1\r\nAccept: */*\r\nHost: h\r\n\r\n")
    h.run(io2)
    assert parse_responses(io2.take())[0][0].status_code == 404
    assert not io2.closed


def test_connection_close_request_closes_after_the_answer() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"x"))
    out = h.request(conn, io, get(b"/", (b"Connection", b"close")))
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    assert io.closed and conn.closed


def test_garbage_gets_400_and_close() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(b"\x00\x01 nonsense\r\n\r\n")
    assert io.take() == text(400, b"Bad Request", b"Bad Request\n", close=True)
    # lingering: the answer is out, the sending side ended; what still arrives is discarded
    assert io.half_closed and not io.closed and not io.flows
    conn.receive_data(b"more garbage")
    assert io.out == b"" and not io.flows
    conn.eof_received()
    assert io.closed


def test_bad_request_line_found_by_next_event_gets_400() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(b"GET / HTTP/1.1\r\nbad header line\r\n\r\n")
    assert io.take() == text(400, b"Bad Request", b"Bad Request\n", close=True)
    assert io.half_closed


def test_incomplete_head_over_the_limit_is_431() -> None:
    h = routed(max_request_header_size=1024)
    conn, io = h.connect()
    conn.receive_data(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000)
    assert io.take() == text(
        431, b"Request Header Fields Too Large", b"Request Header Fields Too Large\n", close=True
    )
    assert io.half_closed


def test_complete_head_over_the_limit_is_431() -> None:
    h = routed(max_request_header_size=1024)
    conn, io = h.connect()
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(12)
    )
    # h11 bounds only a head still incomplete; this one arrives whole
    conn.receive_data(data + b"\r\n")
    assert io.take() == text(
        431, b"Request Header Fields Too Large", b"Request header fields too large.\n", close=True
    )


def test_body_over_the_limit_is_413() -> None:
    h = routed(max_request_body=10)
    conn, io = h.connect()
    conn.receive_data(post(b"/", b"x" * 11))
    assert io.take() == text(
        413, b"Request Entity Too Large", b"Request body too large.\n", close=True
    )
    assert io.half_closed and not io.flows


def test_eof_between_requests_closes() -> None:
    h = routed()
    conn, io = h.connect()
    conn.eof_received()
    assert io.closed and io.out == b""


def test_eof_while_busy_waits_for_the_answer() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"late"))
    conn.receive_data(get())
    conn.eof_received()
    assert not io.closed
    h.run(io)
    assert io.take() == whole(200, b"OK", [], b"late")
    assert io.closed  # the client's EOF is seen once the answer is out


def test_data_after_a_failed_request_is_ignored() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(b"\x00\r\n\r\n")
    io.take()
    conn.receive_data(get())
    assert io.out == b"" and not io.flows


# --- origin errors ---


@pytest.mark.parametrize(
    ("error", "status", "reason"),
    [
        (OriginError("connect", "refused"), 502, b"Bad Gateway"),
        (OriginError("timeout", "too slow"), 504, b"Gateway Timeout"),
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_origin_failure_answers_502_or_504(
    error: OriginError, status: int, reason: bytes, debug: bool
) -> None:
    h = routed(debug=debug)
    conn, io = h.connect()
    h.origin.queue(error)
    out = h.request(conn, io, get())
    assert out == text(status, reason, f"{error}\n".encode() if debug else ERROR_BODY)
    assert not io.closed


def test_failover_to_the_next_target_on_connect_errors() -> None:
    h = Harness(routes=("* 127.0.0.1:9 127.0.0.1:10",))
    conn, io = h.connect()
    h.origin.queue(OriginError("connect", "refused"), reply(200, b"second"))
    assert h.request(conn, io, get()) == whole(200, b"OK", [], b"second")
    assert [op.target.port for op in h.origin.requests] == [9, 10]


def test_body_cut_short_before_anything_was_sent_is_502() -> None:
    h = routed(debug=True)
    conn, io = h.connect()
    h.origin.queue(reply(200, b"x", error=OriginError("closed", "origin closed mid-body")))
    assert h.request(conn, io, get()) == text(502, b"Bad Gateway", b"origin closed mid-body\n")


def test_body_cut_short_while_streaming_closes_the_client() -> None:
    h = routed()
    conn, io = h.connect()
    big = Reply(200, b"OK", [(b"Transfer-Encoding", b"chunked"), (b"Connection", b"keep-alive")])
    big.chunks = [b"part1"]
    big.error = OriginError("closed", "cut")
    h.origin.queue(big)
    out = h.request(conn, io, get())
    assert out == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\npart1\r\n"
    assert io.closed


def test_large_body_is_streamed_in_chunks() -> None:
    h = routed()
    conn, io = h.connect()
    r = Reply(200, b"OK", [(b"Transfer-Encoding", b"chunked"), (b"Content-Encoding", b"gzip")])
    r.chunks = [b"a" * 10, b"b" * 5]
    h.origin.queue(r, reply(200, b"next"))
    out = h.request(conn, io, get() + get(b"/2"))
    # hop-by-hop and encoding headers are not relayed; h11 frames the body chunked
    assert out == (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n" + b"a" * 10 + b"\r\n5\r\nbbbbb\r\n0\r\n\r\n"
    ) + whole(200, b"OK", [], b"next")
    assert r.read == 3 and not r.discarded


def test_body_over_the_whole_limit_is_streamed() -> None:
    h = routed()
    conn, io = h.connect()
    r = Reply(200, b"OK", [(b"Content-Length", b"2000000")])
    r.chunks = [b"x" * 1_000_000, b"y" * 1_000_000]
    h.origin.queue(r)
    out = h.request(conn, io, get())
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n"
    assert out == head + b"x" * 1_000_000 + b"y" * 1_000_000
    assert not io.closed


def test_client_gone_as_the_streamed_body_ends() -> None:
    h = routed()
    conn, io = h.connect()
    r = Reply(200, b"OK", [(b"Transfer-Encoding", b"chunked")])
    conn.receive_data(get())
    flow = io.flows.pop()
    assert isinstance(next(flow), OriginRequest)
    assert flow.send(r).response is r  # type: ignore[union-attr]  # NextChunk
    conn.connection_lost()
    with pytest.raises(StopIteration):
        flow.send(None)  # the end of the body: nothing more to write, nothing to serve
    assert io.take() == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert conn.session is None and not r.discarded


def test_streamed_body_stops_when_the_client_leaves() -> None:
    h = routed()
    conn, io = h.connect()
    r = Reply(200, b"OK", [(b"Transfer-Encoding", b"chunked")])
    r.chunks = [b"first", b"second"]
    conn.receive_data(get())
    [flow] = io.flows
    io.flows.clear()
    op = next(flow)
    assert isinstance(op, OriginRequest)
    op2 = flow.send(r)  # the head is relayed, the first chunk asked for
    assert io.take() == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn.connection_lost()
    op3 = flow.send(b"first")
    assert isinstance(op2, NextChunk) and isinstance(op3, DiscardBody)
    assert op2.response is r and op3.response is r
    with pytest.raises(StopIteration):
        flow.send(None)
    assert io.out == b""


def test_client_gone_before_the_origin_answered_gets_nothing() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(OriginError("connect", "refused"))
    conn.receive_data(get())
    conn.connection_lost()
    h.run(io)
    assert io.out == b"" and conn not in h.node.connections


BROKEN = text(502, b"Bad Gateway", ERROR_BODY, close=True)


class FailingIO(RecordingIO):
    """A driver whose next `fail_writes` writes raise (a bug below the core, or a core bug
    surfacing in a write): what the connection's boundary must contain."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_writes = 0

    def write(self, data: bytes) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise RuntimeError("write failed")
        super().write(data)


def failing(h: Harness) -> tuple[ProxyConnection, FailingIO]:
    io = FailingIO()
    conn = ProxyConnection(h.node, io, "127.0.0.1")
    assert conn.connection_made()
    return conn, io


def errors(h: Harness) -> float:
    return sum(h.node.connection_errors.values.values())


def test_unexpected_error_in_a_flow_is_502(caplog: pytest.LogCaptureFixture) -> None:
    h = routed()
    conn, io = h.connect()

    def driver_bug(op: OriginRequest) -> Reply:
        raise ValueError("driver bug")

    h.origin.queue(driver_bug)
    conn.receive_data(get())
    with caplog.at_level(logging.ERROR, "gripcore"):
        h.run(io)
    assert io.take() == BROKEN
    assert io.closed and errors(h) == 1
    assert f"connection {conn.id} (127.0.0.1) on route " in caplog.text
    assert "driver bug" in caplog.text


def test_failing_twice_answers_once() -> None:
    h = Harness()
    conn, io = h.connect()
    conn.fail(ValueError("first"))
    conn.fail(ValueError("second"))  # closed already: counted, nothing more written
    assert io.take() == BROKEN and errors(h) == 2


def test_one_failing_connection_does_not_stop_the_flush_pass() -> None:
    h = routed()
    conns = [stream(h) for _ in range(3)]
    bad, bad_io = failing(h)
    h.origin.queue(reply(200, b"start\n", STREAM))
    assert h.request(bad, bad_io, get(b"/s")).startswith(STREAM_HEAD)
    conns += [stream(h) for _ in range(3)]
    bad_io.fail_writes = 1
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "more\n"}}})
    h.flush_all()
    for _conn, io, _ in conns:
        assert io.take() == b"5\r\nmore\n\r\n"
    # its response had started: closed, out of the hub, counted
    assert bad_io.take() == b"" and bad_io.closed and bad.session is None
    assert errors(h) == 1 and h.node.broker.hub.subscriber_count("ch") == 6
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "again\n"}}})
    h.flush_all()
    assert all(io.take() == b"6\r\nagain\n\r\n" for _conn, io, _ in conns)


def test_a_held_response_h11_cannot_write_costs_only_its_connection() -> None:
    """An item the publish API would refuse (an interim code), forced past validation as a bug
    would: the long-poll gets a 502, streams on the same channel get the publish."""
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"timeout\n", [*HOLD, (b"Grip-Timeout", b"30")]))
    assert h.request(conn, io, get()) == b""
    streams = [stream(h) for _ in range(5)]
    [item] = parse_publish_body(
        json.dumps(
            {
                "items": [
                    {
                        "channel": "ch",
                        "formats": {
                            "http-response": {"body": "x"},
                            "http-stream": {"content": "more\n"},
                        },
                    }
                ]
            }
        ).encode()
    )
    object.__setattr__(item.http_response, "code", 101)
    h.node.publish([item])
    h.flush_all()
    assert io.take() == BROKEN and io.closed and errors(h) == 1
    for _conn, sio, _ in streams:
        assert sio.take() == b"5\r\nmore\n\r\n"


_field_text = st.text(
    st.sampled_from(["a", " ", "\t", "\x01", "\x7f", "\u00e9", "\u00ff", "\u0100", "\u2603", "\r"]),
    max_size=4,
)
_published_responses = st.fixed_dictionaries(
    {"code": st.integers(0, 1000)},
    optional={
        "reason": _field_text,
        "headers": st.lists(
            st.tuples(
                st.sampled_from(
                    ["X-A", "Content-Length", "Transfer-Encoding", "Connection", "Grip-X", "b c"]
                ),
                _field_text | st.sampled_from(["chunked", "gzip", "5", "close"]),
            ).map(list),
            max_size=3,
        ),
        "body": st.sampled_from(["", "body"]),
        "body-patch": st.just([]),
    },
)


@given(_published_responses)
@example({"code": 101, "body": ""})
@example({"code": 204, "body": "x"})
@example({"code": 200, "reason": "\u2603", "body": "x"})
@example({"code": 200, "headers": [["Transfer-Encoding", "gzip"]], "body": "x"})
def test_whatever_the_publish_api_accepts_a_long_poll_gets(fmt: dict[str, object]) -> None:
    """The publish API's validation and the writer agree: an accepted http-response item is
    written to a held long-poll as a complete HTTP/1.1 response; the others are refused."""
    try:
        [item] = parse_publish_body(
            json.dumps({"items": [{"channel": "ch", "formats": {"http-response": fmt}}]}).encode()
        )
    except PublishError:
        return
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"timeout\n", [*HOLD, (b"Grip-Timeout", b"30")]))
    assert h.request(conn, io, get()) == b""
    h.node.publish([item])
    h.flush_all()
    [(response, _body)] = parse_responses(io.take())
    assert response.status_code == fmt["code"] and errors(h) == 0


def test_a_failure_after_the_handshake_closes_the_websocket_with_1011() -> None:
    h = over_http()
    io = FailingIO()
    conn = ProxyConnection(h.node, io, "127.0.0.1")
    assert conn.connection_made()
    h.origin.queue(
        reply(
            200,
            encode_events([Open(), Text(b'c:{"type": "subscribe", "channel": "room"}')]),
            [WOH, (b"Sec-WebSocket-Extensions", b"grip")],
        )
    )
    assert h.request(conn, io, ws_upgrade()).startswith(b"HTTP/1.1 101 ")
    client = WsConnection(ConnectionType.CLIENT)
    io.fail_writes = 1
    h.publish({"channel": "room", "formats": {"ws-message": {"content": "pub"}}})
    h.flush_all()
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection) and close.code == 1011
    assert io.closed and errors(h) == 1 and not h.node.broker.hub.subscriber_count("room")


def test_a_failure_in_a_driver_callback_ends_only_that_connection() -> None:
    h = routed()
    conn, io = failing(h)
    h.origin.queue(reply(200, b"start\n", STREAM))
    h.request(conn, io, get(b"/s"))
    conn.pause_writing()
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "more\n"}}})
    h.flush_all()
    io.fail_writes = 1
    conn.resume_writing()  # raises inside; the boundary ends the connection
    assert io.closed and errors(h) == 1 and conn.session is None


def test_two_detach_messages_in_one_answer() -> None:
    """A second detach changes nothing (hypothesis found the pair raising in the gateway)."""
    h = over_http()
    detach = Text(b'c:{"type": "detach"}')
    conn, io = h.connect()
    events = [Open(), Text(b'c:{"type": "subscribe", "channel": "room"}'), detach, detach]
    h.origin.queue(reply(200, encode_events(events), [WOH, (b"Sec-WebSocket-Extensions", b"grip")]))
    assert h.request(conn, io, ws_upgrade()).startswith(b"HTTP/1.1 101 ")
    client = WsConnection(ConnectionType.CLIENT)
    h.publish({"channel": "room", "formats": {"ws-message": {"content": "pub"}}})
    h.flush_all()
    [msg] = client_events(client, io.take())
    assert isinstance(msg, TextMessage) and msg.data == "pub"
    assert errors(h) == 0


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ((), 400, b"Bad Request"),  # no key
        (((b"Sec-WebSocket-Key", b"not base64!"),), 400, b"Bad Request"),
        (((b"Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAA"),), 400, b"Bad Request"),  # 15 bytes
        (((b"Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAAAAAAAA=="),), 400, b"Bad Request"),  # 19
        (((b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ"),), 400, b"Bad Request"),  # unpadded
    ],
)
def test_websocket_handshake_with_a_bad_key_is_400(
    headers: tuple[tuple[bytes, bytes], ...], status: int, reason: bytes
) -> None:
    h = over_http()
    conn, io = h.connect()
    request = get(
        b"/ws",
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        *headers,
        (b"Sec-WebSocket-Version", b"13"),
    )
    assert h.request(conn, io, request) == text(status, reason, b"Invalid Sec-WebSocket-Key.\n")
    assert not h.origin.requests and not conn.busy


@pytest.mark.parametrize("version", [None, b"8", b"12", b"14", b""])
def test_websocket_handshake_with_another_version_is_426(version: bytes | None) -> None:
    h = over_http()
    conn, io = h.connect()
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
    ]
    if version is not None:
        headers.append((b"Sec-WebSocket-Version", version))
    out = h.request(conn, io, get(b"/ws", *headers))
    assert out == whole(
        426,
        b"Upgrade Required",
        [b"Content-Type: text/plain", b"Sec-WebSocket-Version: 13"],
        b"Unsupported WebSocket version.\n",
    )
    assert not h.origin.requests


def test_head_requests_get_the_head_of_whole_answers() -> None:
    """RFC 9110 section 9.3.2: our own answers (here a 502) and a published response to a held
    HEAD carry their Content-Length but no body, and the connection stays usable."""
    h = Harness(routes=("other.example 127.0.0.1:9",))
    conn, io = h.connect()
    out = h.request(conn, io, b"HEAD / HTTP/1.1\r\nHost: example\r\n\r\n")
    assert (
        out == b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n\r\n"
    )
    assert not io.closed and not conn.busy
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", [*HOLD, (b"Grip-Timeout", b"30")]))
    assert h.request(conn, io, b"HEAD /p HTTP/1.1\r\nHost: example\r\n\r\n") == b""
    h.publish({"channel": "ch", "formats": {"http-response": {"body": "hello\n"}}})
    h.flush_all()
    assert io.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"
    assert not io.closed and errors(h) == 0


def test_content_length_with_transfer_encoding_is_answered_then_closed() -> None:
    """RFC 9112 section 6.3: the body is read by Transfer-Encoding and the connection closed
    after the answer, so what follows the chunked body is never served as a request."""
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"ok\n"), reply(200, b"smuggled\n"))
    request = (
        b"POST /a HTTP/1.1\r\nHost: example\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
    )
    out = h.request(conn, io, request + get(b"/second"))
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
    assert io.closed and len(h.origin.requests) == 1
    assert h.origin.requests[0].body == b"body"


def test_a_failure_inside_the_origin_link_ends_the_client_connection() -> None:
    h = routed()
    conn, _io, _client, link, link_io, origin = native(h, b"")
    conn.io = bad = FailingIO()
    bad.fail_writes = 1
    link.data_received(origin.send(CloseConnection(code=1000)))  # relaying it fails
    assert bad.closed and errors(h) == 1 and conn.session is None
    assert link.closing and link_io.closed


def test_unexpected_error_after_the_head_went_out_closes() -> None:
    h = routed()
    conn, io = h.connect()
    r = Reply(200, b"OK", [(b"Transfer-Encoding", b"chunked")])
    r.chunks = [b"x"]
    r.error = ValueError("driver bug")  # type: ignore[assignment]
    h.origin.queue(r)
    out = h.request(conn, io, get())
    assert out == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n"
    assert io.closed


# --- request headers toward the origin ---


def test_origin_request_carries_route_headers_sig_and_as_host() -> None:
    h = Harness(
        routes=(f"*,as_host=inner.test,sig_key=secret,header=X-Route:yes {ROUTE.split()[1]}",)
    )
    conn, io = h.connect()
    h.origin.queue(reply(204))
    out = h.request(conn, io, post(b"/p", b"body"))
    assert out == b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    [op] = h.origin.requests
    assert header(op, b"host") == b"inner.test"
    assert header(op, b"x-route") == b"yes"
    assert header(op, b"grip-sig") is not None
    assert op.body == b"body" and op.method == b"POST"


def test_no_grip_route_relays_grip_headers_as_they_are() -> None:
    h = Harness(routes=("*,no_grip " + ROUTE.split()[1],))
    conn, io = h.connect()
    h.origin.queue(reply(200, b"held?", HOLD))
    out = h.request(conn, io, get())
    assert out == whole(200, b"OK", [b"Grip-Hold: response", b"Grip-Channel: ch"], b"held?")
    assert header(h.origin.requests[0], b"grip-sig") is None
    assert not h.node.broker.hub.subscriber_count("ch")


UPSTREAM_KEY = "upstream-proxy-key-of-32-bytes-or-more"


def upstream_sig(h: Harness, key: str = UPSTREAM_KEY, *, age: float = 0) -> bytes:
    """A Grip-Sig as a proxy in front makes it, minted `age` seconds ago (valid for an hour)."""
    signing = SigningKey("HS256", key.encode())
    return mint_sig(signing, "front", h.node.wall_clock() - age).encode()


def test_a_trusted_upstream_proxy_gets_the_origins_grip_answer_unprocessed() -> None:
    """Pushpin's upstream_key: a request whose Grip-Sig is valid for it keeps its Grip-*
    headers, gets none of ours, and the origin's GRIP answer goes back to it as it is."""
    h = routed(upstream_key=UPSTREAM_KEY)
    conn, io = h.connect()
    token = upstream_sig(h)
    h.origin.queue(reply(200, b"held?", HOLD))
    out = h.request(conn, io, get(b"/", (b"Grip-Sig", token), (b"Grip-Last", b"ch; last-id=1")))
    assert out == whole(200, b"OK", [b"Grip-Hold: response", b"Grip-Channel: ch"], b"held?")
    [op] = h.origin.requests
    assert header(op, b"grip-sig") == token and header(op, b"grip-last") == b"ch; last-id=1"
    assert header(op, b"grip-feature") is None
    assert not h.node.broker.hub.subscriber_count("ch")
    # the next request on the connection, unsigned, is an ordinary client's
    h.origin.queue(reply(200, b"", HOLD))
    assert h.request(conn, io, get(b"/", (b"Grip-Last", b"ch; last-id=1"))) == b""
    assert h.node.broker.hub.subscriber_count("ch") == 1
    second = h.origin.requests[1]
    assert header(second, b"grip-last") is None and header(second, b"grip-feature") is not None


@pytest.mark.parametrize(
    ("key", "age"),
    [("some-other-key-that-is-32-bytes-long", 0), (UPSTREAM_KEY, 3601)],
    ids=["wrong-key", "expired"],
)
def test_an_invalid_upstream_sig_is_an_ordinary_client(key: str, age: float) -> None:
    h = routed(upstream_key=UPSTREAM_KEY)
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", HOLD))
    assert h.request(conn, io, get(b"/", (b"Grip-Sig", upstream_sig(h, key, age=age)))) == b""
    assert h.node.broker.hub.subscriber_count("ch") == 1
    assert header(h.origin.requests[0], b"grip-sig") != upstream_sig(h, key, age=age)


def test_clients_may_not_send_websocket_events_to_an_over_http_origin() -> None:
    h = routed(",over_http", upstream_key=UPSTREAM_KEY)
    conn, io = h.connect()
    forged = post(b"/ws", b"TEXT 2\r\nhi\r\n", WOH, (b"Connection-Id", b"someone-else"))
    out = h.request(conn, io, forged)
    assert out == text(
        403, b"Forbidden", b"Client not allowed to send WebSocket events directly.\n"
    )
    assert not h.origin.requests
    # a GRIP proxy in front, trusted by its signature, speaks it on behalf of its clients
    h.origin.queue(reply(200, b"TEXT 2\r\nok\r\n", [WOH]))
    trusted = post(b"/ws", b"TEXT 2\r\nhi\r\n", WOH, (b"Grip-Sig", upstream_sig(h)))
    [(response, body)] = parse_responses(h.request(conn, io, trusted))
    assert (response.status_code, body) == (200, b"TEXT 2\r\nok\r\n")
    # other media types, and routes that are not over_http, are not concerned
    h2 = routed()
    conn2, io2 = h2.connect()
    h2.origin.queue(reply(204))
    assert h2.request(conn2, io2, post(b"/ws", b"x", WOH)).startswith(b"HTTP/1.1 204")


# --- per-address limits ---

TOO_MANY = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nRetry-After: %d\r\n"
    b"Content-Length: 39\r\nConnection: close\r\n\r\nToo many connections from this address\n"
)


def connect_refused(h: Harness, peer: str) -> RecordingIO:
    io = RecordingIO()
    assert not ProxyConnection(h.node, io, peer).connection_made()
    assert io.closed
    return io


def test_connections_per_address_are_bounded_with_429() -> None:
    h = routed(max_connections_per_ip=2)
    first, _ = h.connect("192.0.2.1")
    h.connect("192.0.2.1")
    assert connect_refused(h, "192.0.2.1").take() == TOO_MANY % 1
    h.connect("192.0.2.2")  # another address is not concerned
    first.connection_lost()
    h.connect("192.0.2.1")  # a slot came free
    assert len(h.node.connections) == 3
    assert (
        'gripcore_client_limit_refusals_total{limit="connections"} 1'
        in h.node.metrics.render().decode()
    )


def test_new_connections_per_second_per_address() -> None:
    h = routed(new_connections_per_ip=1)
    conn, _ = h.connect("192.0.2.1")
    conn.connection_lost()
    assert connect_refused(h, "192.0.2.1").take() == TOO_MANY % 1
    h.clock.advance(1.0)
    h.connect("192.0.2.1")
    assert (
        'gripcore_client_limit_refusals_total{limit="rate"} 1' in h.node.metrics.render().decode()
    )


def test_through_a_trusted_proxy_each_request_counts_against_its_client() -> None:
    h = routed(max_connections_per_ip=1, trusted_proxy=("127.0.0.0/8",))
    held, held_io = h.connect("127.0.0.1")
    h.origin.queue(reply(200, b"", HOLD))
    assert h.request(held, held_io, get(b"/", (b"X-Forwarded-For", b"198.51.100.7"))) == b""
    # the proxy's connections are not counted; its client's second request is
    conn, io = h.connect("127.0.0.1")
    out = h.request(conn, io, get(b"/", (b"X-Forwarded-For", b"198.51.100.7")))
    [(response, body)] = parse_responses(out)
    assert response.status_code == 429 and (b"retry-after", b"1") in response.headers
    assert body == b"Too many connections from this address\n"
    assert not io.closed  # one refused request; the proxy's connection goes on
    h.origin.queue(reply(204))
    out = h.request(conn, io, get(b"/", (b"X-Forwarded-For", b"198.51.100.8")))
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    # the held request ends: its client may come back
    h.publish({"channel": "ch", "formats": {"http-response": {"body": "done"}}})
    h.flush_all()
    assert parse_responses(held_io.take())[0][1] == b"done"
    h.origin.queue(reply(204))
    out = h.request(conn, io, get(b"/", (b"X-Forwarded-For", b"198.51.100.7")))
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    held.connection_lost()
    conn.connection_lost()
    assert h.node.limits._counts == {}


# --- routes and the starter kit ---


def test_no_route_is_502() -> None:
    h = Harness(routes=("example.org " + ROUTE.split()[1],))
    conn, io = h.connect()
    out = h.request(conn, io, get(host=b"other"))
    assert out == text(502, b"Bad Gateway", b"Route not found.\n")
    ws = h.request(conn, io, ws_upgrade(host=b"other"))
    assert ws == text(502, b"Bad Gateway", b"Route not found.\n")
    assert not h.origin.requests


def test_starter_publish_and_its_errors() -> None:
    h = Harness()
    conn, io = h.connect()
    out = h.request(conn, io, post(b"/test/publish?x", b'{"channel": "test", "text": "hi"}'))
    assert out == whole(200, b"OK", [b"Content-Type: application/json"], b'{"published": true}\n')
    bad = h.request(conn, io, post(b"/test/publish", b"\xff"))
    [(response, body)] = parse_responses(bad)
    assert response.status_code == 400 and body.endswith(b"\n")


def test_starter_long_poll_resumes_what_was_published_between_two_polls() -> None:
    h = Harness()  # the starter kit keeps a history of its own (_starter.STARTER_HISTORY)
    ids = iter(range(1, 100))
    h.node.random_bytes = lambda n: next(ids).to_bytes(n, "big")
    form = b'{"channel": "test", "text": "%s"}'
    poller, poll_io = h.connect()
    assert h.request(poller, poll_io, get(b"/test/long-poll")) == b""  # held
    publisher, pub_io = h.connect()
    h.request(publisher, pub_io, post(b"/test/publish", form % b"one"))
    h.flush_all()
    [(response, body)] = parse_responses(poll_io.take())
    first = json.loads(body)
    assert response.status_code == 200 and first["messages"] == ["one"]
    # published while no poll is out: the next poll names the last id it saw and gets it at once
    h.request(publisher, pub_io, post(b"/test/publish", form % b"two"))
    h.request(publisher, pub_io, post(b"/test/publish", form % b"three"))
    h.flush_all()
    seen = []
    last = first["id"]
    for _ in range(2):
        out = h.request(poller, poll_io, get(b"/test/long-poll?last-event-id=" + last.encode()))
        h.flush_all()
        [(response, body)] = parse_responses(out + poll_io.take())
        payload = json.loads(body)
        seen += payload["messages"]
        last = payload["id"]
    assert seen == ["two", "three"]
    # nothing newer: held until the next publish, as a poll without an id
    assert h.request(poller, poll_io, get(b"/test/long-poll?last-event-id=" + last.encode())) == b""


def test_starter_answer_without_grip_is_relayed() -> None:
    h = Harness()
    conn, io = h.connect()
    out = h.request(conn, io, post(b"/nope", b""))
    [(response, body)] = parse_responses(out)
    assert response.status_code == 404 and b"/nope" in body


# --- GRIP instructions ---


def test_bad_instructions_are_502_with_detail_in_debug() -> None:
    for debug, body in ((False, ERROR_BODY), (True, None)):
        h = routed(debug=debug)
        conn, io = h.connect()
        h.origin.queue(reply(200, b"", [(b"Grip-Hold", b"bogus")]))
        out = h.request(conn, io, get())
        [(response, got)] = parse_responses(out)
        assert response.status_code == 502
        if body is None:
            assert got.startswith(b"Failed to parse accept instructions: ")
        else:
            assert got == body


def test_instruct_body_read_fails_is_502() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"x", HOLD, error=OriginError("closed", "cut")))
    assert h.request(conn, io, get()) == text(502, b"Bad Gateway", ERROR_BODY)
    assert not h.node.broker.hub.subscriber_count("ch")


def test_grip_status_without_hold_is_answered_at_once() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"body", [(b"Grip-Status", b"201 Made")]))
    out = h.request(conn, io, get())
    assert out == whole(201, b"Made", [], b"body")


def test_response_hold_answered_by_a_publish() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"timeout\n", [*HOLD, (b"Grip-Timeout", b"30")]))
    assert h.request(conn, io, get()) == b""
    assert io.timers[-1] == h.clock.now + 30
    assert h.node.broker.hub.subscriber_count("ch") == 1
    h.publish({"channel": "ch", "formats": {"http-response": {"body": "hello\n"}}})
    assert h.flushes == 1
    h.flush_all()
    assert io.take() == whole(200, b"OK", [], b"hello\n")
    assert io.cancels == 2 and not conn.busy  # the read timer, then the hold's
    assert not h.node.broker.hub.subscriber_count("ch")


def test_response_hold_times_out_with_the_origin_body() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"timeout\n", [*HOLD, (b"Grip-Timeout", b"5")]))
    h.request(conn, io, get())
    conn.on_timer()  # early: nothing due, re-armed
    assert io.out == b""
    h.clock.advance(5)
    conn.on_timer()
    assert io.take() == whole(200, b"OK", [], b"timeout\n")
    conn.on_timer()  # a late timer after the end does nothing
    assert io.out == b""


def test_client_gone_during_a_hold_leaves_and_posts_the_gone_link() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", [*HOLD, (b"Grip-Link", b"</gone>; rel=gone")]), reply(200))
    h.request(conn, io, get())
    conn.connection_lost()
    assert not h.node.broker.hub.subscriber_count("ch")
    h.run(io)
    [_, gone] = h.origin.requests
    assert (gone.method, gone.path) == (b"POST", b"/gone")
    assert conn.closed and io.out == b""


def test_gone_link_failure_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(
        reply(200, b"", [*HOLD, (b"Grip-Link", b"</gone>; rel=gone")]),
        OriginError("connect", "refused"),
    )
    h.request(conn, io, get())
    with caplog.at_level(logging.INFO, "gripcore"):
        conn.connection_lost()
        h.run(io)
    assert "gone link http://example/gone failed: refused" in caplog.text


def test_gone_link_to_a_foreign_host_is_not_posted() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"", [*HOLD, (b"Grip-Link", b"<http://evil.test/gone>; rel=gone")]))
    h.request(conn, io, get())
    conn.connection_lost()
    h.run(io)
    assert len(h.origin.requests) == 1


# --- retries of a long-poll ---


def held_with_prev_id(h: Harness) -> tuple[ProxyConnection, RecordingIO]:
    conn, io = h.connect()
    h.origin.queue(
        reply(
            200,
            b"tm",
            [(b"Grip-Hold", b"response"), (b"Grip-Channel", b"ch; prev-id=1")],
        )
    )
    assert h.request(conn, io, get(b"/poll")) == b""
    return conn, io


def gap(h: Harness) -> None:
    h.publish(
        {"channel": "ch", "id": "3", "prev-id": "2", "formats": {"http-response": {"body": "b"}}}
    )
    h.clock.advance(h.config.message_wait + 1)
    h.node.handle_broker_timer()
    h.flush_all()


def test_retry_after_a_gap_answered_with_a_final_response() -> None:
    h = routed()
    _conn, io = held_with_prev_id(h)
    h.origin.queue(reply(200, b"final"))
    gap(h)
    h.run(io)
    retry = h.origin.requests[1]
    assert header(retry, b"grip-last") == b'ch; last-id="1"'
    assert io.take() == whole(200, b"OK", [], b"final")


def test_retry_answered_with_a_new_hold_then_a_grip_final() -> None:
    h = routed()
    conn, io = held_with_prev_id(h)
    h.origin.queue(reply(200, b"tm2", [*HOLD, (b"Grip-Timeout", b"7")]))
    gap(h)
    h.run(io)
    assert io.out == b"" and conn.session is not None
    assert io.timers[-1] == h.clock.now + 7
    h.publish({"channel": "ch", "formats": {"http-response": {"body": "pub"}}})
    h.flush_all()
    assert io.take() == whole(200, b"OK", [], b"pub")


def test_retry_with_grip_status_final_answer() -> None:
    h = routed()
    _conn, io = held_with_prev_id(h)
    h.origin.queue(reply(200, b"st", [(b"Grip-Status", b"202 Queued")]))
    gap(h)
    h.run(io)
    assert io.take() == whole(202, b"Queued", [], b"st")


def test_retry_origin_error_is_502() -> None:
    h = routed()
    _conn, io = held_with_prev_id(h)
    h.origin.queue(OriginError("connect", "refused"))
    gap(h)
    h.run(io)
    assert io.take() == text(502, b"Bad Gateway", ERROR_BODY)


def test_retry_body_failure_is_502() -> None:
    h = routed()
    _conn, io = held_with_prev_id(h)
    h.origin.queue(reply(200, b"x", HOLD, error=OriginError("closed", "cut")))
    gap(h)
    h.run(io)
    assert io.take() == text(502, b"Bad Gateway", ERROR_BODY)


def test_retry_bad_instructions_is_502() -> None:
    h = routed(debug=True)
    _conn, io = held_with_prev_id(h)
    h.origin.queue(reply(200, b"", [(b"Grip-Hold", b"bogus")]))
    gap(h)
    h.run(io)
    assert io.take() == text(502, b"Bad Gateway", ERROR_BODY)


def test_retry_answer_after_the_client_left_is_dropped() -> None:
    h = routed()
    conn, io = held_with_prev_id(h)
    h.origin.queue(reply(200, b"late"))
    gap(h)
    conn.connection_lost()
    h.run(io)
    assert io.out == b"" and conn.closed
    assert len(h.origin.requests) == 2


def test_retry_spawned_before_shutdown_does_not_run() -> None:
    h = routed()
    conn, io = held_with_prev_id(h)
    gap(h)  # the retry is spawned, not run yet
    h.node.close_all()
    assert io.take() == whole(200, b"OK", [], b"tm") and io.closed
    assert h.run(io) == 1
    assert io.out == b"" and conn.session is None
    assert len(h.origin.requests) == 1  # the hold is answered: no retry


def test_retry_answer_after_shutdown_answered_the_hold_is_dropped() -> None:
    h = routed()
    conn, io = held_with_prev_id(h)
    gap(h)
    [flow] = io.flows
    io.flows.clear()
    op = next(flow)
    assert isinstance(op, OriginRequest)
    h.node.close_all()  # answers the hold while its retry waits for the origin
    assert io.take() == whole(200, b"OK", [], b"tm")
    h.resume(flow, reply(200, b"late", HOLD))
    assert io.out == b"" and conn.session is None
    assert not h.node.broker.hub.subscriber_count("ch")


# --- streams ---


def stream(h: Harness, *headers: tuple[bytes, bytes], body: bytes = b"start\n", target=b"/s"):
    conn, io = h.connect()
    h.origin.queue(reply(200, body, [*STREAM, *headers]))
    out = h.request(conn, io, get(target))
    return conn, io, out


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    b"Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def test_stream_gets_published_chunks_and_a_close() -> None:
    h = routed()
    conn, io, out = stream(h)
    assert out == STREAM_HEAD + b"6\r\nstart\n\r\n"
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "more\n"}}})
    h.flush_all()
    assert io.take() == b"5\r\nmore\n\r\n"
    h.publish({"channel": "ch", "formats": {"http-stream": {"action": "close"}}})
    h.flush_all()
    assert io.take() == b"0\r\n\r\n"
    assert not io.closed and not conn.busy  # keep-alive: the next request may come


def test_stream_to_http_1_0_is_close_delimited() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"start\n", STREAM))
    conn.receive_data(b"GET /s HTTP/1.0\r\nHost: x\r\n\r\n")
    h.run(io)
    assert io.take() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nstart\n"
    )
    conn.shutdown()
    assert io.closed


def test_stream_keep_alive_timer_and_paused_writes() -> None:
    h = routed()
    conn, io, _out = stream(h, (b"Grip-Keep-Alive", b"ka\\n; format=cstring; timeout=10"))
    start = h.clock.now
    assert io.timers[-1] == start + 10
    conn.pause_writing()
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "p"}}})
    h.flush_all()
    assert io.out == b""  # paused: the bytes wait in the buffer
    conn.resume_writing()
    assert io.take() == b"1\r\np\r\n"
    # writing moved the idle keep-alive later; the earlier timer is kept
    assert io.timers[-1] == start + 10
    h.clock.advance(10)
    conn.on_timer()
    assert io.take() == b"3\r\nka\n\r\n"
    assert io.timers[-1] == h.clock.now + 10


def test_flush_pass_after_resume_wrote_everything() -> None:
    h = routed()
    conn, io, _ = stream(h, (b"Grip-Keep-Alive", b"ka; timeout=10"))
    conn.pause_writing()
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "a"}}})
    h.flush_all()  # the fan-out pass's fast path: paused, the bytes wait
    assert io.out == b""
    h.publish({"channel": "ch", "formats": {"http-stream": {"content": "b"}}})
    conn.resume_writing()  # writes both before the pass for the second publish runs
    assert io.take() == b"1\r\na\r\n1\r\nb\r\n"
    h.flush_all()  # nothing left to write
    assert io.out == b""


def test_stream_slow_consumer_is_aborted(caplog: pytest.LogCaptureFixture) -> None:
    h = routed(max_output_buffer=100)
    conn, io, _ = stream(h)
    conn.pause_writing()
    with caplog.at_level(logging.WARNING, "gripcore"):
        h.publish({"channel": "ch", "formats": {"http-stream": {"content": "x" * 200}}})
        h.flush_all()
    assert io.aborted and conn.closed
    assert f"closing slow consumer: connection {conn.id} (127.0.0.1) on route " in caplog.text
    route = h.node.routes.match("example", "/", proto="http").id if h.node.routes else ""
    assert b'gripcore_slow_consumer_closes_total{route="%s"} 1' % route.encode() in (
        h.node.metrics.render()
    )


def test_stream_slow_consumer_drops_old_messages(caplog: pytest.LogCaptureFixture) -> None:
    h = routed(max_output_buffer=100, slow_consumer_policy="drop-oldest")
    conn, io, _ = stream(h, body=b"")
    conn.pause_writing()
    with caplog.at_level(logging.INFO, "gripcore"):
        for _ in range(3):
            h.publish({"channel": "ch", "formats": {"http-stream": {"content": "y" * 60}}})
        h.flush_all()
    assert "dropped" in caplog.text and "oldest messages for slow consumer" in caplog.text
    conn.resume_writing()
    assert io.take().count(b"y" * 60) == 1


def test_stream_with_prev_id_but_no_next_link_ends_at_once() -> None:
    h = routed(debug=True)
    _conn, _io, out = stream(h, (b"Grip-Channel", b"other; prev-id=1"))
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"specifies prev-id, but no next link found" in out
    assert out.endswith(b"0\r\n\r\n")


def test_stream_next_link_after_its_timeout_switches_channels() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(
        reply(200, b"a", [*STREAM, (b"Grip-Link", b"</next>; rel=next; timeout=10")]),
        reply(200, b"b", [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"ch2")]),
    )
    out = h.request(conn, io, get(b"/s"))
    assert out == STREAM_HEAD + b"1\r\na\r\n"
    assert io.timers[-1] == h.clock.now + 10
    h.clock.advance(10)
    conn.on_timer()
    h.run(io)
    assert h.origin.requests[1].path == b"/next"
    assert io.take() == b"1\r\nb\r\n"
    hub = h.node.broker.hub
    assert (hub.subscriber_count("ch"), hub.subscriber_count("ch2")) == (0, 1)
    h.publish({"channel": "ch2", "formats": {"http-stream": {"content": "c"}}})
    h.flush_all()
    assert io.take() == b"1\r\nc\r\n"


def test_stream_next_link_right_away() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(
        reply(200, b"a", [(b"Grip-Link", b"</next>; rel=next")]),
        reply(200, b"b", [(b"Grip-Link", b"</next2>; rel=next")]),
        reply(200, b"c"),
    )
    out = h.request(conn, io, get(b"/s"))
    assert [op.path for op in h.origin.requests] == [b"/s", b"/next", b"/next2"]
    assert out.endswith(b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n")


def test_next_link_non_2xx_or_failure_ends_the_stream() -> None:
    for failure in (reply(500, b"no"), OriginError("connect", "refused")):
        h = routed(debug=True)
        conn, io = h.connect()
        h.origin.queue(reply(200, b"a", [(b"Grip-Link", b"</next>; rel=next")]), failure)
        out = h.request(conn, io, get(b"/s"))
        assert out.endswith(b"\n\nFailed to retrieve next link.\n\r\n0\r\n\r\n")


def test_next_link_to_a_foreign_host_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    h = routed(debug=True)
    conn, io = h.connect()
    h.origin.queue(reply(200, b"a", [(b"Grip-Link", b"<http://evil.test/n>; rel=next")]))
    with caplog.at_level(logging.WARNING, "gripcore"):
        out = h.request(conn, io, get(b"/s"))
    assert "next link http://evil.test/n refused: not a route target" in caplog.text
    assert out.endswith(b"Failed to retrieve next link.\n\r\n0\r\n\r\n")
    assert len(h.origin.requests) == 1


def test_starter_kit_stream_is_answered_in_process() -> None:
    h = Harness()
    conn, io = h.connect()
    out = h.request(conn, io, get(b"/test/stream"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n[stream open on channel test]\n\r\n")
    assert h.node.broker.hub.subscriber_count("test") == 1
    assert not h.origin.requests


def test_next_link_answer_after_shutdown_is_dropped() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"a", [(b"Grip-Link", b"</next>; rel=next")]))
    conn.receive_data(get(b"/s"))
    [flow] = io.flows
    io.flows.clear()
    h.run_one(flow)
    [fetch] = io.flows
    io.flows.clear()
    assert isinstance(next(fetch), OriginRequest)
    conn.shutdown()
    assert io.take().endswith(b"1\r\na\r\n0\r\n\r\n") and io.closed
    h.resume(fetch, reply(200, b"late"))
    assert io.out == b""


def test_next_link_spawned_before_shutdown_does_not_run() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.queue(reply(200, b"a", [(b"Grip-Link", b"</next>; rel=next")]))
    conn.receive_data(get(b"/s"))
    h.run_one(io.flows.pop())
    conn.shutdown()
    assert h.run(io) == 1
    assert len(h.origin.requests) == 1
    assert io.take().endswith(b"0\r\n\r\n")


def test_shutdown_ends_streams_holds_and_idle_connections() -> None:
    h = routed()
    _s_conn, s_io, _ = stream(h)
    p_conn, p_io = h.connect()
    h.origin.queue(reply(200, b"bye\n", HOLD))
    h.request(p_conn, p_io, get())
    _idle, idle_io = h.connect()
    busy, busy_io = h.connect()
    busy.receive_data(get())
    h.node.close_all()
    assert s_io.take() == b"0\r\n\r\n" and s_io.closed
    assert p_io.take() == whole(200, b"OK", [], b"bye\n") and p_io.closed
    assert idle_io.closed and idle_io.out == b""
    assert not busy_io.closed  # waits for its origin within the grace period
    h.origin.queue(reply(200, b"done"))
    h.run(busy_io)
    assert busy_io.take() == whole(200, b"OK", [], b"done")
    assert busy_io.closed  # node closing: no keep-alive
    busy.close()
    assert not h.node.broker.hub.subscriber_count("ch")


# --- WebSocket-over-HTTP ---


def ws_upgrade(target: bytes = b"/ws", host: bytes = b"example") -> bytes:
    return get(
        target,
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Version", b"13"),
        host=host,
    )


ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def client_events(client: WsConnection, data: bytes) -> list[object]:
    client.receive_data(data)
    return list(client.events())


def gateway(h: Harness, *events: object) -> tuple[ProxyConnection, RecordingIO, WsConnection]:
    conn, io = h.connect()
    h.origin.queue(reply(200, encode_events([Open(), *events]), [WOH]))  # type: ignore[list-item]
    out = h.request(conn, io, ws_upgrade())
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: " + ACCEPT in out
    client = WsConnection(ConnectionType.CLIENT)  # frames only: the handshake is done
    _head, _, frames = out.partition(b"\r\n\r\n")
    client_events(client, frames)
    return conn, io, client


def masked_text(data: bytes) -> bytes:
    """A client's text frame, whatever state wsproto's own client would be in."""
    mask = b"abcd"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bytes([0x81, 0x80 | len(data)]) + mask + payload


def over_http(**config: object) -> Harness:
    return Harness(routes=(ROUTE + ",over_http",), **config)


def test_gateway_open_message_and_close() -> None:
    h = over_http()
    conn, io, client = gateway(h, Text(b"welcome"))
    origin = h.origin
    [op] = origin.requests
    assert op.method == b"POST" and header(op, b"content-type") == WOH[1]
    # the client's text message goes to the origin as a TEXT event; it answers with one
    origin.queue(reply(200, encode_events([Text(b"echo")]), [WOH]))
    conn.receive_data(client.send(TextMessage(data="hi")))
    h.run(io)
    assert b"TEXT 2\r\nhi\r\n" in origin.requests[1].body
    [msg] = client_events(client, io.take())
    assert isinstance(msg, TextMessage) and msg.data == "echo"


def test_gateway_fragmented_binary_ping_pong_and_close() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    h.origin.queue(*[reply(200, b"", [WOH]) for _ in range(3)])
    conn.receive_data(
        client.send(BytesMessage(data=b"ab", message_finished=False))
        + client.send(BytesMessage(data=b"cd"))
    )
    h.run(io)
    conn.receive_data(client.send(Ping(payload=b"p")) + client.send(Pong(payload=b"q")))
    h.run(io)
    assert [op.body for op in h.origin.requests[1:]] == [
        b"BINARY 4\r\nabcd\r\n",
        b"PING 1\r\np\r\n",
        b"PONG 1\r\nq\r\n",
    ]
    h.origin.queue(reply(200, encode_events([Close(1000)]), [WOH]))
    conn.receive_data(client.send(CloseConnection(code=1000, reason="bye")))
    h.run(io)
    assert h.origin.requests[-1].body == b"CLOSE 5\r\n\x03\xe8bye\r\n"
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection) and close.code == 1000
    assert io.closed and conn.session is None


def test_gateway_message_too_big_closes_with_1009() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    conn.receive_data(client.send(TextMessage(data="x" * (MAX_CLIENT_MESSAGE + 1))))
    h.origin.queue(reply(200, encode_events([Close(1009)]), [WOH]))
    h.run(io)  # the origin is told, and its close answer ends the client
    assert h.origin.requests[-1].body == b"CLOSE 11\r\n\x03\xf1message too big\r\n"
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection) and close.code == 1009


def test_gateway_origin_failure_before_accept_is_502() -> None:
    h = over_http()
    conn, io = h.connect()
    h.origin.queue(OriginError("connect", "refused"))
    out = h.request(conn, io, ws_upgrade())
    assert out == whole(502, b"Bad Gateway", [], ERROR_BODY)
    assert conn.session is None and conn.subscriber is None


def test_gateway_origin_failures_after_accept_retry_then_close() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    conn.receive_data(client.send(TextMessage(data="hi")))
    for _ in range(10):
        h.origin.queue(OriginError("timeout", "slow"))
        h.run(io)
        if io.out:
            break
        assert io.timers[-1] > h.clock.now  # a retry after a backoff
        h.clock.now = io.timers[-1]
        conn.on_timer()
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection) and close.code == 1011
    assert {op.body for op in h.origin.requests[1:]} == {b"TEXT 2\r\nhi\r\n"}


def test_gateway_answer_after_the_client_left_is_dropped() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    h.origin.queue(reply(200, encode_events([Text(b"late")]), [WOH]), reply(200))
    conn.receive_data(client.send(TextMessage(data="hi")))
    conn.connection_lost()  # the DISCONNECT is posted, its answer not awaited
    assert h.run(io) == 2
    assert [op.body for op in h.origin.requests[1:]] == [
        b"TEXT 2\r\nhi\r\n",
        b"DISCONNECT\r\n",
    ]
    assert io.out == b""


def test_gateway_failure_after_the_client_left_is_dropped() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    h.origin.queue(OriginError("connect", "refused"), OriginError("connect", "refused"))
    conn.receive_data(client.send(TextMessage(data="hi")))
    conn.connection_lost()
    assert h.run(io) == 2
    assert io.out == b"" and not io.timers[1:]


def test_gateway_posts_spawned_before_shutdown_do_not_run() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    conn.receive_data(client.send(TextMessage(data="hi")))
    h.node.close_all()  # the session ends before the spawned POST starts
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection) and close.code == 1001
    assert h.run(io) == 1
    assert len(h.origin.requests) == 1


@pytest.mark.parametrize("allow", [True, False])
def test_websocket_compression_is_negotiated_when_allowed(allow: bool) -> None:
    h = over_http(allow_compression=allow)
    conn, io = h.connect()
    subscribe = Text(b'c:{"type": "subscribe", "channel": "room"}')
    h.origin.queue(
        reply(
            200, encode_events([Open(), subscribe]), [WOH, (b"Sec-WebSocket-Extensions", b"grip")]
        )
    )
    offer = (
        b"Sec-WebSocket-Extensions",
        b"x-webkit-thing, permessage-deflate; client_max_window_bits",
    )
    upgrade = ws_upgrade().replace(b"\r\n\r\n", b"\r\n%s: %s\r\n\r\n" % offer)
    out = h.request(conn, io, upgrade)
    head = out.partition(b"\r\n\r\n")[0]
    answer = b"Sec-WebSocket-Extensions: " + RESPONSE.encode()
    assert (answer in head) is allow and head.count(b"Sec-WebSocket-Extensions") == int(allow)
    text = "published, " * 20
    h.publish({"channel": "room", "formats": {"ws-message": {"content": text}}})
    h.flush_all()
    frame = io.take()
    assert bool(frame[0] & 0x40) is allow  # RSV1: compressed, and smaller
    assert (len(frame) < len(text)) is allow
    extension = PerMessageDeflate()
    if allow:
        extension.finalize(RESPONSE)
    client = WsConnection(ConnectionType.CLIENT, extensions=[extension] if allow else None)
    [msg] = client_events(client, frame)
    assert isinstance(msg, TextMessage) and msg.data == text
    # the client's compressed messages reach the origin inflated
    h.origin.queue(reply(200, b"", [WOH]))
    conn.receive_data(client.send(TextMessage(data="hello " * 30)))
    h.run(io)
    assert h.origin.requests[-1].body == encode_events([Text(b"hello " * 30)])


def test_gateway_published_message_and_keep_alive_timer() -> None:
    h = over_http()
    conn, io = h.connect()
    h.origin.queue(
        reply(
            200,
            encode_events([Open(), Text(b'c:{"type": "subscribe", "channel": "room"}')]),
            [WOH, (b"Sec-WebSocket-Extensions", b"grip"), (b"Keep-Alive-Interval", b"20")],
        )
    )
    out = h.request(conn, io, ws_upgrade())
    assert out.startswith(b"HTTP/1.1 101 ")
    client = WsConnection(ConnectionType.CLIENT)
    assert h.node.broker.hub.subscriber_count("room") == 1
    h.publish({"channel": "room", "formats": {"ws-message": {"content": "pub"}}})
    h.flush_all()
    [msg] = client_events(client, io.take())
    assert isinstance(msg, TextMessage) and msg.data == "pub"
    assert io.timers[-1] == h.clock.now + 20
    h.clock.advance(20)
    h.origin.queue(reply(200, b"", [WOH]))
    conn.on_timer()
    h.run(io)
    assert h.origin.requests[-1].body == b""  # the keep-alive request carries no events
    h.publish({"channel": "room", "formats": {"ws-message": {"action": "close"}}})
    h.flush_all()
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection)
    assert io.closed and conn.session is None


def test_gateway_shutdown_before_accept_is_503_and_the_late_answer_dropped() -> None:
    h = over_http()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run_one(io.flows.pop())  # the request flow, which spawned the first POST
    [post_flow] = io.flows
    io.flows.clear()
    assert isinstance(next(post_flow), OriginRequest)
    conn.shutdown()
    assert io.take() == whole(503, b"Service Unavailable", [], b"Server shutting down.\n")
    h.resume(post_flow, reply(200, encode_events([Open()]), [WOH]))
    assert io.out == b"" and conn.session is None


def test_gateway_with_trailing_frames_after_the_upgrade() -> None:
    h = over_http()
    conn, io = h.connect()
    frame = masked_text(b"hi")
    h.origin.queue(reply(200, encode_events([Open()]), [WOH]), reply(200, b"", [WOH]))
    conn.receive_data(ws_upgrade() + frame)
    h.run(io)
    assert h.origin.requests[1].body == b"TEXT 2\r\nhi\r\n"


def test_gateway_frames_after_the_session_ended_are_ignored() -> None:
    h = over_http()
    conn, io, client = gateway(h)
    h.origin.queue(reply(200, encode_events([Close(1000)]), [WOH]))
    conn.receive_data(client.send(CloseConnection(code=1000)) + masked_text(b"x"))
    h.run(io)
    assert [op.body for op in h.origin.requests[1:]] == [b"CLOSE 2\r\n\x03\xe8\r\n"]
    conn.receive_data(masked_text(b"more"))
    assert io.flows == [] and conn.session is None


def test_gateway_client_gone_tells_the_origin() -> None:
    h = over_http()
    conn, io, _client = gateway(h)
    h.origin.queue(reply(200, b"", [WOH]))
    conn.connection_lost()
    h.run(io)
    assert h.origin.requests[-1].body == b"DISCONNECT\r\n"
    assert not h.node.broker.hub.subscriber_count("room")
    conn.on_timer()  # a timer after the end does nothing
    assert io.out == b""


# --- native WebSocket proxy ---


def native(h: Harness, link_headers: bytes = b"Sec-WebSocket-Extensions: grip\r\n"):
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    assert io.out == b""
    [(op, link_io)] = h.origin.links
    link = op.link
    request = link_io.take()
    assert request.startswith(b"GET /ws HTTP/1.1\r\n")
    assert b"Sec-WebSocket-Key: " + link.key in request
    link.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + generate_accept_token(link.key)
        + b"\r\n"
        + link_headers
        + b"\r\n"
    )
    out = io.take()
    assert out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    client = WsConnection(ConnectionType.CLIENT)
    origin = WsConnection(ConnectionType.SERVER)
    return conn, io, client, link, link_io, origin


def test_native_messages_both_ways() -> None:
    h = routed()
    conn, io, client, link, link_io, origin = native(h, b"")
    conn.receive_data(client.send(TextMessage(data="up")) + client.send(BytesMessage(data=b"b")))
    origin.receive_data(link_io.take())
    got = list(origin.events())
    assert [type(e).__name__ for e in got] == ["TextMessage", "BytesMessage"]
    conn.receive_data(client.send(Ping(payload=b"1")) + client.send(Pong(payload=b"2")))
    origin.receive_data(link_io.take())
    assert [type(e).__name__ for e in origin.events()] == ["Ping", "Pong"]
    link.data_received(
        origin.send(TextMessage(data="down", message_finished=False))
        + origin.send(TextMessage(data="!"))
        + origin.send(BytesMessage(data=b"bin"))
        + origin.send(Ping(payload=b"x"))
        + origin.send(Pong(payload=b"y"))
    )
    events = client_events(client, io.take())
    assert [type(e).__name__ for e in events] == [
        "TextMessage",
        "BytesMessage",
        "Ping",
        "Pong",
    ]
    assert events[0].data == "down!"  # type: ignore[attr-defined]


def test_native_origin_close_is_answered_and_relayed() -> None:
    h = routed()
    conn, io, client, link, link_io, origin = native(h, b"")
    link.data_received(origin.send(CloseConnection(code=4000, reason="done")))
    assert link_io.closed
    events = client_events(client, io.take())
    assert isinstance(events[0], CloseConnection) and events[0].code == 4000
    assert io.closed and conn._origin_ws is None


def test_native_client_close_goes_to_the_origin() -> None:
    h = routed()
    conn, io, client, link, link_io, origin = native(h, b"")
    conn.receive_data(client.send(CloseConnection(code=1000, reason="bye")))
    origin.receive_data(link_io.take())
    [close] = origin.events()
    assert isinstance(close, CloseConnection) and close.code == 1000
    link.data_received(origin.send(close.response()))
    events = client_events(client, io.take())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1000
    # a send after the link closed is dropped
    link.send(SendToOrigin("text", b"late"))
    assert link_io.out == b""


def test_native_origin_rejects_the_handshake() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(op, link_io)] = h.origin.links
    op.link.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: no\r\n\r\nnope")
    assert io.take() == whole(403, b"Forbidden", [b"x-why: no"], b"nope")
    assert link_io.closed


def test_native_bad_accept_token_is_502() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(op, link_io)] = h.origin.links
    op.link.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: wrong\r\n\r\n"
    )
    assert io.take() == whole(502, b"Bad Gateway", [], ERROR_BODY)
    assert link_io.closed


def test_native_rejection_body_too_large_is_502() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(op, _link_io)] = h.origin.links
    op.link.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 200000\r\n\r\n")
    op.link.data_received(b"x" * 100_001)
    assert io.take() == whole(502, b"Bad Gateway", [], ERROR_BODY)


def test_native_handshake_in_pieces_with_trailing_frames() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(op, _link_io)] = h.origin.links
    link = op.link
    link.data_received(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert io.out == b""
    link.data_received(
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(link.key) + b"\r\n\r\n"
        b"\x81\x02hi"
    )
    out = io.take()
    assert out.startswith(b"HTTP/1.1 101 ") and out.endswith(b"\x81\x02hi")


def test_native_connect_failures_fail_over_then_502() -> None:
    h = Harness(routes=("* 127.0.0.1:9 127.0.0.1:10",))
    conn, io = h.connect()
    h.origin.connect_errors = [OriginError("connect", "refused"), OriginError("connect", "no")]
    out = h.request(conn, io, ws_upgrade())
    assert out == whole(502, b"Bad Gateway", [], ERROR_BODY)
    assert conn._origin_ws is None


def test_native_second_target_connects() -> None:
    h = Harness(routes=("* 127.0.0.1:9 127.0.0.1:10",))
    conn, io = h.connect()
    h.origin.connect_errors = [OriginError("connect", "refused")]
    h.request(conn, io, ws_upgrade())
    [(op, _)] = h.origin.links
    assert op.target.port == 10 and conn._origin_ws is op.link


def test_native_client_left_while_connecting_closes_the_link() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.on_connect = lambda link: link.client.connection_lost()
    h.request(conn, io, ws_upgrade())
    [(_, link_io)] = h.origin.links
    assert link_io.closed


def test_native_origin_connection_lost() -> None:
    h = routed()
    conn, io, client, link, _link_io, _origin = native(h, b"")
    link.connection_lost("reset")
    events = client_events(client, io.take())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1011
    link.connection_lost(None)  # a second report changes nothing
    assert io.out == b"" and conn._origin_ws is link  # the origin side ended by itself
    conn.connection_lost()
    assert conn._origin_ws is None and link.closing


def test_native_connection_lost_while_connecting_is_502() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(op, _)] = h.origin.links
    op.link.connection_lost(None)
    assert io.take() == whole(502, b"Bad Gateway", [], ERROR_BODY)


def test_native_bad_frames_from_the_origin() -> None:
    h = routed()
    _conn, io, client, link, link_io, _origin = native(h, b"")
    link.data_received(b"\x83\x00")  # reserved opcode: wsproto closes with 1002
    events = client_events(client, io.take())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1002
    assert link_io.closed


def test_native_grip_subscribe_and_publish() -> None:
    h = routed()
    _conn, io, client, link, _link_io, origin = native(h)
    link.data_received(origin.send(TextMessage(data='c:{"type":"subscribe","channel":"r"}')))
    assert h.node.broker.hub.subscriber_count("r") == 1
    h.publish({"channel": "r", "formats": {"ws-message": {"content": "news"}}})
    h.flush_all()
    [msg] = client_events(client, io.take())
    assert isinstance(msg, TextMessage) and msg.data == "news"
    h.publish({"channel": "r", "formats": {"ws-message": {"action": "close", "code": 4001}}})
    h.flush_all()
    events = client_events(client, io.take())
    assert isinstance(events[0], CloseConnection) and events[0].code == 4001
    assert io.closed


def test_native_shutdown_and_client_gone() -> None:
    h = routed()
    conn, io, client, _link, link_io, _origin = native(h, b"")
    h.node.close_all()
    events = client_events(client, io.take())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1001
    conn.connection_lost()
    assert link_io.closed


def test_native_shutdown_while_connecting_is_503() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(_, link_io)] = h.origin.links
    conn.shutdown()
    assert io.take() == whole(503, b"Service Unavailable", [], b"Server shutting down.\n")
    assert link_io.closed


def test_link_send_kinds_and_a_send_wsproto_refuses() -> None:
    h = routed()
    _conn, _io, _client, link, link_io, origin = native(h, b"")
    link.send(SendToOrigin("close", code=None, reason=None))
    origin.receive_data(link_io.take())
    [close] = origin.events()
    assert isinstance(close, CloseConnection) and close.code == 1000
    link.send(SendToOrigin("text", b"after close"))  # wsproto refuses: the link closes
    assert link_io.closed


def test_link_before_attach_writes_nothing() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    [flow] = io.flows
    io.flows.clear()
    with pytest.raises(StopIteration):
        next(flow)
    [connect] = io.flows
    op = next(connect)
    assert isinstance(op, ConnectOriginWebSocket)
    link: OriginWsLink = op.link
    link.send(SendToOrigin("text", b"x"))
    link.close()
    assert link.closing and link.io is None
    conn.connection_lost()
    with pytest.raises(StopIteration):
        connect.send(None)  # connected after the client left: closed right away


def test_perform_ws_without_an_origin_link() -> None:
    h = routed()
    conn, io = h.connect()
    conn._perform_ws([SendToOrigin("text", b"x"), CloseOrigin()])
    assert io.out == b"" and conn._origin_ws is None


# --- clients that leave early, and resuming from history ---


def test_client_gone_before_its_request_flow_started() -> None:
    h = routed()
    for data in (get(), ws_upgrade()):
        conn, io = h.connect()
        conn.receive_data(data)
        conn.connection_lost()
        assert h.run(io) == 1
        assert io.out == b"" and conn.session is None
    assert not h.origin.requests and not h.origin.links


def test_client_gone_while_the_origin_answered_with_a_hold() -> None:
    for headers in (HOLD, STREAM):
        h = routed()
        conn, io = h.connect()
        h.origin.queue(reply(200, b"x", headers))
        conn.receive_data(get())
        [flow] = io.flows
        assert isinstance(next(flow), OriginRequest)
        conn.connection_lost()
        h.resume(flow, h.origin.replies.pop(0))
        # nothing is held for a client that left: no subscription stays in the hub
        assert conn.session is None and not h.node.broker.hub.subscriber_count("ch")
        assert io.out == b"" and len(io.timers) == 1  # the new connection's read timer only


def test_stream_resumes_from_history_after_last_event_id() -> None:
    h = routed(history=10)
    for n in (1, 2, 3):
        h.publish({"channel": "ch", "id": str(n), "formats": {"http-stream": {"content": f"{n}"}}})
    _conn, _io, out = stream(h, body=b"", target=b"/s")
    assert out == STREAM_HEAD  # without a last id: live items only
    conn2, io2 = h.connect()
    h.origin.queue(reply(200, b"", STREAM))
    out2 = h.request(conn2, io2, get(b"/s", (b"Last-Event-ID", b"1")))
    h.flush_all()
    assert out2 + io2.take() == STREAM_HEAD + b"1\r\n2\r\n1\r\n3\r\n"


def test_websocket_resumes_from_history_once_subscribed() -> None:
    h = routed(history=10)
    for n in (1, 2):
        h.publish({"channel": "r", "id": str(n), "formats": {"ws-message": {"content": f"m{n}"}}})
    conn, io = h.connect()
    conn.receive_data(ws_upgrade(b"/ws?last-event-id=1"))
    h.run(io)
    [(op, _link_io)] = h.origin.links
    link = op.link
    link.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(link.key) + b"\r\n"
        b"Sec-WebSocket-Extensions: grip\r\n\r\n"
    )
    head, _, rest = io.take().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ") and rest == b""
    origin = WsConnection(ConnectionType.SERVER)
    link.data_received(origin.send(TextMessage(data='c:{"type":"subscribe","channel":"r"}')))
    h.flush_all()
    client = WsConnection(ConnectionType.CLIENT)
    [msg] = client_events(client, io.take())
    assert isinstance(msg, TextMessage) and msg.data == "m2"
    assert conn._resume_from is None


# --- WebSocket sessions ending while work is under way ---


def test_eof_on_a_websocket_is_left_to_the_driver() -> None:
    h = over_http()
    conn, io, _client = gateway(h)
    conn.eof_received()
    assert not io.closed and io.out == b"" and not io.flows


def test_websocket_slow_consumer_is_aborted() -> None:
    h = over_http(max_output_buffer=100)
    conn, io = h.connect()
    h.origin.queue(
        reply(
            200,
            encode_events([Open(), Text(b'c:{"type": "subscribe", "channel": "room"}')]),
            [WOH, (b"Sec-WebSocket-Extensions", b"grip")],
        )
    )
    h.request(conn, io, ws_upgrade())
    conn.pause_writing()
    h.origin.queue(reply(200, b"", [WOH]))
    h.publish({"channel": "room", "formats": {"ws-message": {"content": "z" * 200}}})
    h.flush_all()
    assert io.aborted and conn.closed and conn.session is None
    assert not h.node.broker.hub.subscriber_count("room")


def test_frames_after_a_published_close_are_ignored() -> None:
    h = over_http()
    conn, io = h.connect()
    h.origin.queue(
        reply(
            200,
            encode_events([Open(), Text(b'c:{"type": "subscribe", "channel": "room"}')]),
            [WOH, (b"Sec-WebSocket-Extensions", b"grip")],
        )
    )
    h.request(conn, io, ws_upgrade())
    h.origin.queue(reply(200, b"", [WOH]))
    h.publish({"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4002}}})
    h.flush_all()
    h.run(io)
    [close] = client_events(WsConnection(ConnectionType.CLIENT), io.take())
    assert isinstance(close, CloseConnection) and close.code == 4002
    sent = len(h.origin.requests)
    conn.receive_data(masked_text(b"after"))
    assert not io.flows and len(h.origin.requests) == sent


def test_connect_flow_spawned_before_shutdown_does_not_connect() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run_one(io.flows.pop())  # spawns the connect flow
    conn.shutdown()
    assert io.take() == whole(503, b"Service Unavailable", [], b"Server shutting down.\n")
    assert h.run(io) == 1 and not h.origin.links


def test_shutdown_while_connecting_closes_the_new_link() -> None:
    h = routed()
    conn, io = h.connect()
    h.origin.on_connect = lambda link: link.client.shutdown()
    h.request(conn, io, ws_upgrade())
    [(_op, link_io)] = h.origin.links
    assert link_io.closed and conn._origin_ws is None and conn.session is None


def test_connect_failure_after_shutdown_is_not_answered_twice() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run_one(io.flows.pop())
    connect = io.flows.pop()
    assert isinstance(next(connect), ConnectOriginWebSocket)
    conn.shutdown()
    assert io.take() == whole(503, b"Service Unavailable", [], b"Server shutting down.\n")
    h.fail(connect, OriginError("connect", "refused"))
    assert io.out == b"" and conn._origin_ws is None


def test_origin_frames_after_shutdown_reach_nobody() -> None:
    h = routed()
    _conn, io, client, link, link_io, origin = native(h, b"")
    h.node.close_all()
    [close] = client_events(client, io.take())
    assert isinstance(close, CloseConnection) and close.code == 1001
    assert link_io.closed and link.io is None  # CloseOrigin let the link go
    # what the origin had sent meanwhile still arrives: its close is not answered (no io)
    link.data_received(origin.send(TextMessage(data="late")) + origin.send(CloseConnection(1000)))
    assert io.out == b"" and link_io.out == b""


def test_origin_informational_answer_before_its_rejection() -> None:
    h = routed()
    conn, io = h.connect()
    conn.receive_data(ws_upgrade())
    h.run(io)
    [(op, _)] = h.origin.links
    op.link.data_received(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    )
    assert io.take() == whole(401, b"Unauthorized", [], b"")
