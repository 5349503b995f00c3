"""End-to-end: gripcore behind another GRIP proxy (Pushpin's `upstream_key`), on real sockets.

client -> front proxy (signs with KEY) -> back proxy (--upstream-key KEY) -> origin. The back
proxy trusts the front one: it passes the origin's GRIP answer through unprocessed, and the
front proxy is the one that holds the client. A client that reaches the back proxy directly,
unsigned, is held there as usual.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .e2e_support import (
    Origin,
    ProxyThread,
    RawClient,
    publish,
    running_proxy,
    subscribers,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]

KEY = "shared-between-front-and-back-proxies"


@pytest.fixture(scope="module")
def chain(proxy_adapter: str) -> Iterator[tuple[Origin, ProxyThread, ProxyThread]]:
    origin = Origin(
        routes={
            "/stream": lambda r: (
                200,
                [("Content-Type", "text/plain"), ("Grip-Hold", "stream"), ("Grip-Channel", "up")],
                b"open\n",
            )
        }
    ).start()
    with (
        running_proxy(routes=(f"* 127.0.0.1:{origin.port}",), upstream_key=KEY) as back,
        running_proxy(routes=(f"* 127.0.0.1:{back.port}",), sig_key=KEY) as front,
    ):
        yield origin, front, back
    origin.stop()


def test_the_front_proxy_holds_and_the_back_one_passes_through(
    chain: tuple[Origin, ProxyThread, ProxyThread],
) -> None:
    origin, front, back = chain
    client = RawClient(front.port)
    client.get("/stream")
    head = client.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"grip-" not in head.lower()
    assert client.read_until(b"open\n\r\n").endswith(b"open\n\r\n")
    seen = origin.requests[-1].headers
    assert seen["grip-sig"]  # the front proxy's own signature reached the origin as it was
    wait_for(lambda: subscribers(front, "up") == 1)
    assert subscribers(back, "up") == 0
    publish(front.publish_port, [{"channel": "up", "formats": {"http-stream": {"content": "x"}}}])
    assert client.read_until(b"x\r\n") == b"1\r\nx\r\n"


def test_an_unsigned_client_of_the_back_proxy_is_held_there(
    chain: tuple[Origin, ProxyThread, ProxyThread],
) -> None:
    _, _, back = chain
    client = RawClient(back.port)
    client.get("/stream")
    assert client.read_until(b"open\n\r\n").endswith(b"open\n\r\n")
    wait_for(lambda: subscribers(back, "up") == 1)
    publish(back.publish_port, [{"channel": "up", "formats": {"http-stream": {"content": "y"}}}])
    assert client.read_until(b"y\r\n") == b"1\r\ny\r\n"
