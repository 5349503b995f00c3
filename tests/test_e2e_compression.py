"""End-to-end: permessage-deflate with WebSocket clients (`--allow-compression`), each adapter.

A browser-like client (wsproto, offering permessage-deflate as Chromium does) gets published
messages compressed (the same frame for every such subscriber), its own compressed messages
reach the origin inflated, a compression bomb is refused with 1009 at no cost to the others,
and a client that offers nothing is served uncompressed by the same proxy.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import pytest
from wsproto.events import AcceptConnection, CloseConnection
from wsproto.extensions import PerMessageDeflate

from .e2e_support import (
    Origin,
    ProxyThread,
    WsClient,
    publish,
    running_proxy,
    subscribers,
    wait_for,
)
from .test_e2e_websocket import ChatOrigin

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]


@pytest.fixture(scope="module")
def chat(proxy_adapter: str) -> Iterator[tuple[ChatOrigin, ProxyThread]]:
    handler = ChatOrigin()
    origin = Origin(routes={"/chat": handler}).start()
    with running_proxy(
        routes=(f"* 127.0.0.1:{origin.port},over_http",), allow_compression=True
    ) as proxy:
        yield handler, proxy
    origin.stop()


def connect(proxy: ProxyThread, deflate: bool) -> tuple[WsClient, list[object]]:
    ws = WsClient(proxy.port, "/chat", extensions=[PerMessageDeflate()] if deflate else None)
    accepted = ws.accept()
    assert isinstance(accepted, AcceptConnection)
    return ws, accepted.extensions


def test_compressed_and_plain_clients_side_by_side(chat: tuple[ChatOrigin, ProxyThread]) -> None:
    handler, proxy = chat
    before = subscribers(proxy, "room")
    zipped, extensions = connect(proxy, deflate=True)
    [extension] = extensions
    assert isinstance(extension, PerMessageDeflate) and extension.enabled()
    assert extension.server_no_context_takeover and extension.client_no_context_takeover
    plain, none = connect(proxy, deflate=False)
    assert none == []
    wait_for(lambda: subscribers(proxy, "room") == before + 2)
    text = "a published message, " * 40
    publish(proxy.publish_port, [{"channel": "room", "formats": {"ws-message": {"content": text}}}])
    assert zipped.receive_message() == text
    assert plain.receive_message() == text
    # the client's own compressed message reaches the origin inflated
    zipped.send_text("say " + "echo " * 50)
    assert zipped.receive_message() == "echo " * 50
    assert any(("say " + "echo " * 50).encode() in r.body for r in handler.requests)
    zipped.close()
    plain.close()


def test_a_compression_bomb_is_refused_and_costs_only_its_connection(
    chat: tuple[ChatOrigin, ProxyThread],
) -> None:
    _, proxy = chat
    bystander, _ = connect(proxy, deflate=True)
    bomb, _ = connect(proxy, deflate=True)
    before = subscribers(proxy, "room")
    # 64 MiB of one byte inflates from ~64 KB: sent as one compressed message
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(b"a" * (64 * 1024 * 1024)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    payload = data[:-4]
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    size = (
        bytes([0xFE]) + n.to_bytes(2, "big")
        if n < 0x10000
        else bytes([0xFF]) + n.to_bytes(8, "big")
    )
    frame = b"\xc1" + size + mask + masked
    bomb.raw.send(frame)
    event = bomb.next_event()
    assert isinstance(event, CloseConnection) and event.code == 1009
    wait_for(lambda: subscribers(proxy, "room") == before - 1)
    publish(proxy.publish_port, [{"channel": "room", "formats": {"ws-message": {"content": "ok"}}}])
    assert bystander.receive_message() == "ok"
    bystander.close()


def test_not_offered_when_not_allowed(proxy_adapter: str) -> None:
    origin = Origin(routes={"/chat": ChatOrigin()}).start()
    try:
        with running_proxy(routes=(f"* 127.0.0.1:{origin.port},over_http",)) as proxy:
            ws, extensions = connect(proxy, deflate=True)
            assert extensions == []
            wait_for(lambda: subscribers(proxy, "room") == 1)
            publish(
                proxy.publish_port,
                [{"channel": "room", "formats": {"ws-message": {"content": "x"}}}],
            )
            assert ws.receive_message() == "x"
            ws.close()
    finally:
        origin.stop()
