"""End-to-end: one bad publish, request or origin costs only its own connection (issue 13).

Five SSE subscribers on their own channel are the bystanders: each scenario publishes to them
before and after the bad thing happens, and every one of them must get every event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

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
SSE = [("Content-Type", "text/event-stream"), ("Grip-Hold", "stream"), ("Grip-Channel", "news")]
ERROR_BODY = b"Error while proxying to origin.\n"


def woh(*parts: tuple[bytes, bytes | None]) -> bytes:
    return b"".join(
        kind + b"\r\n" if content is None else b"%s %x\r\n%s\r\n" % (kind, len(content), content)
        for kind, content in parts
    )


def control(obj: dict[str, object]) -> bytes:
    return b"c:" + json.dumps(obj).encode()


def detaching(request: OriginRequest) -> tuple[int, list[tuple[str, str]], bytes]:
    """A WebSocket-over-HTTP origin that says detach twice in its OPEN answer."""
    detach = (b"TEXT", control({"type": "detach"}))
    body = woh(
        (b"OPEN", None),
        (b"TEXT", control({"type": "subscribe", "channel": "room"})),
        detach,
        detach,
    )
    return 200, [("Content-Type", WOH), ("Sec-WebSocket-Extensions", "grip")], body


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin(
        routes={
            "/news": lambda request: (200, SSE, b""),
            "/poll": lambda request: (
                200,
                [("Grip-Hold", "response"), ("Grip-Channel", "poll")],
                b"timeout\n",
            ),
            # a long-poll whose timeout answer no HTTP/1.1 writer can send (204 with a body)
            "/bad-timeout": lambda request: (
                200,
                [
                    ("Grip-Hold", "response"),
                    ("Grip-Channel", "never"),
                    ("Grip-Timeout", "1"),
                    ("Grip-Status", "204"),
                ],
                b"not allowed\n",
            ),
            # the same as a direct answer
            "/bad-answer": lambda request: (200, [("Grip-Status", "204")], b"not allowed\n"),
            "/detach": detaching,
        }
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(origin: Origin, proxy_adapter: str) -> Iterator[ProxyThread]:
    with running_proxy(routes=(f"* 127.0.0.1:{origin.port},over_http",)) as p:
        yield p


class Bystanders:
    """Five SSE subscribers on channel `news`; `check()` publishes an event and reads it on
    every one of them."""

    def __init__(self, proxy: ProxyThread) -> None:
        self.proxy = proxy
        self.clients = [RawClient(proxy.port) for _ in range(5)]
        self.sent = 0
        for client in self.clients:
            client.get("/news")
            assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
        wait_for(lambda: subscribers(proxy, "news") >= 5)

    def check(self) -> None:
        self.sent += 1
        event = f"data: {self.sent}\n\n"
        status, _ = publish(
            self.proxy.publish_port,
            [{"channel": "news", "formats": {"http-stream": {"content": event}}}],
        )
        assert status == 200
        chunk = b"%x\r\n%s\r\n" % (len(event), event.encode())
        for client in self.clients:
            assert client.read_until(chunk).endswith(chunk)

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture
def bystanders(proxy: ProxyThread) -> Iterator[Bystanders]:
    group = Bystanders(proxy)
    yield group
    group.close()


def errors(proxy: ProxyThread) -> float:
    return float(proxy.call(lambda: sum(proxy.server.node.connection_errors.values.values())))


UNWRITABLE: list[tuple[dict[str, Any], bytes]] = [
    ({"code": 100, "body": "x"}, b"'http-response' contains 'code' with invalid value"),
    ({"code": 101, "body": ""}, b"'http-response' contains 'code' with invalid value"),
    ({"code": 204, "body": "x"}, b"contains a body with code 204, which has none"),
    ({"code": 304, "body": "x"}, b"contains a body with code 304, which has none"),
    ({"reason": "\u2603", "body": "x"}, b"'http-response' contains 'reason' with invalid value"),
    ({"headers": {"X": "\u2603"}, "body": "x"}, b"headers contains 'X' with invalid value"),
    ({"headers": {"X": "a\x01b"}, "body": "x"}, b"headers contains 'X' with invalid value"),
]


def test_unwritable_publishes_are_refused_and_nobody_is_harmed(
    proxy: ProxyThread, bystanders: Bystanders
) -> None:
    poll = RawClient(proxy.port)
    poll.get("/poll")
    wait_for(lambda: subscribers(proxy, "poll") == 1)
    bystanders.check()
    for fmt, reason in UNWRITABLE:
        status, body = publish(
            proxy.publish_port,
            [{"channel": "poll", "formats": {"http-response": fmt}}],
        )
        assert status == 400 and reason in body, (fmt, body)
        bystanders.check()
    # the long-poll is still held and gets a good publish
    assert subscribers(proxy, "poll") == 1
    status, _ = publish(
        proxy.publish_port, [{"channel": "poll", "formats": {"http-response": {"body": "ok\n"}}}]
    )
    assert status == 200
    assert poll.read_response() == (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", b"ok\n")
    bystanders.check()
    assert errors(proxy) == 0
    poll.close()


def test_an_origin_answer_no_writer_can_send_costs_only_its_connection(
    proxy: ProxyThread, bystanders: Bystanders
) -> None:
    before = errors(proxy)
    bad = RawClient(proxy.port)
    bad.get("/bad-timeout")
    wait_for(lambda: subscribers(proxy, "never") == 1)
    bystanders.check()
    # at its timeout (5 s at least) the hold's answer (204 with a body) cannot be written: a
    # 502, then closed
    head, body = bad.read_response(timeout=60)
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"Connection: close" in head
    assert body == ERROR_BODY and bad.read_to_close() == b""
    wait_for(lambda: subscribers(proxy, "never") == 0)
    assert errors(proxy) == before + 1
    bystanders.check()
    bad.close()


def test_an_origin_answer_no_writer_can_send_is_a_502(
    proxy: ProxyThread, bystanders: Bystanders
) -> None:
    before = errors(proxy)
    bad = RawClient(proxy.port)
    bad.get("/bad-answer")
    head, body = bad.read_response()
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n") and b"Connection: close" in head
    assert body == ERROR_BODY and bad.read_to_close() == b""
    assert errors(proxy) == before + 1
    bystanders.check()
    bad.close()


def test_two_detach_messages_still_open_the_websocket(
    proxy: ProxyThread, bystanders: Bystanders
) -> None:
    from wsproto.events import AcceptConnection

    ws = WsClient(proxy.port, "/detach")
    assert isinstance(ws.accept(), AcceptConnection)
    wait_for(lambda: subscribers(proxy, "room") == 1)
    bystanders.check()
    publish(proxy.publish_port, [{"channel": "room", "formats": {"ws-message": {"content": "hi"}}}])
    assert ws.receive_message() == "hi"
    bystanders.check()
    ws.raw.close()


UPGRADE = "Upgrade: websocket\r\nConnection: Upgrade\r\n"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            "Sec-WebSocket-Version: 13\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 27\r\n\r\n",
        ),
        (
            "Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n",
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 27\r\n\r\n",
        ),
        (
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n",
            b"HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\n"
            b"Sec-WebSocket-Version: 13\r\nContent-Length: 31\r\n\r\n",
        ),
    ],
)
def test_websocket_handshake_is_checked(
    proxy: ProxyThread, origin: Origin, headers: str, expected: bytes
) -> None:
    before = len(origin.requests)
    client = RawClient(proxy.port)
    client.get("/detach", UPGRADE + headers)
    head, _ = client.read_response()
    assert head == expected
    assert len(origin.requests) == before  # the origin never heard of it
    client.close()


def test_content_length_and_transfer_encoding_answer_then_close(
    proxy: ProxyThread, origin: Origin
) -> None:
    origin.routes["/plain"] = lambda request: (200, [("Content-Type", "text/plain")], b"plain\n")
    before = len(origin.requests)
    client = RawClient(proxy.port)
    client.send(
        b"POST /plain HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
        b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n"
    )
    assert client.read_to_close() == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
        b"Connection: close\r\n\r\nplain\n"
    )
    assert len(origin.requests) == before + 1 and origin.requests[-1].body == b"body"
    client.close()
