"""End-to-end: WebSocket clients proxied to a native WebSocket origin (no over_http)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from wsproto.events import CloseConnection, Ping, Pong

from .e2e_support import (
    NativeWsOrigin,
    ProxyThread,
    WsClient,
    publish,
    running_proxy,
    subscribers,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]


@pytest.fixture(scope="module")
def origin() -> Iterator[NativeWsOrigin]:
    server = NativeWsOrigin().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(origin: NativeWsOrigin, proxy_adapter: str) -> Iterator[ProxyThread]:
    with running_proxy(routes=(f"* 127.0.0.1:{origin.port}",)) as p:
        yield p


def test_grip_over_a_native_origin_websocket(origin: NativeWsOrigin, proxy: ProxyThread) -> None:
    ws = WsClient(proxy.port, "/room")
    ws.accept()
    offered = dict(origin.handshakes[-1])
    assert offered[b"sec-websocket-extensions"] == b"grip"
    assert offered[b"grip-sig"].count(b".") == 2  # a JWT: signed by default, as Pushpin does
    wait_for(lambda: subscribers(proxy, "native") >= 1)
    ws.send_text("say hi")
    assert ws.receive_message() == "hi"
    publish(
        proxy.publish_port, [{"channel": "native", "formats": {"ws-message": {"content": "pub"}}}]
    )
    assert ws.receive_message() == "pub"
    ws.raw.send(ws.ws.send(Ping(payload=b"p1")))
    event = ws.next_event()
    assert isinstance(event, Pong) and event.payload == b"p1"  # relayed both ways
    ws.send_text("bye")
    event = ws.next_event()
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (4002, "origin bye")


def test_client_close_goes_to_origin_and_back(origin: NativeWsOrigin, proxy: ProxyThread) -> None:
    ws = WsClient(proxy.port, "/room")
    ws.accept()
    ws.close(4005, "client done")
    event = ws.next_event()
    assert isinstance(event, CloseConnection) and event.code == 4005


def test_detach_keeps_publishes_flowing(origin: NativeWsOrigin, proxy: ProxyThread) -> None:
    ws = WsClient(proxy.port, "/room")
    ws.accept()
    wait_for(lambda: subscribers(proxy, "native") >= 1)
    ws.send_text("detach")
    ws.send_text("say ignored")  # may or may not reach the origin before the detach lands
    wait_for(lambda: "detach" in origin.received)
    publish(
        proxy.publish_port, [{"channel": "native", "formats": {"ws-message": {"content": "still"}}}]
    )
    message = ws.receive_message()
    if message == "ignored":
        message = ws.receive_message()
    assert message == "still"


def test_origin_rejection_reaches_the_client(proxy: ProxyThread) -> None:
    ws = WsClient(proxy.port, "/deny")
    head = ws.raw.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert ws.raw.read_exactly(13) == b"members only\n"


def test_origin_down_is_502() -> None:
    with running_proxy(routes=("* 127.0.0.1:1",)) as p:
        ws = WsClient(p.port, "/x")
        head = ws.raw.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
