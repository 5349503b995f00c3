"""End-to-end: per-address connection limits on real sockets, on each adapter."""

from __future__ import annotations

import pytest

from .e2e_support import Origin, RawClient, publish, running_proxy, subscribers, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]


def test_a_third_connection_from_one_address_gets_429_and_the_others_keep_working() -> None:
    origin = Origin(
        routes={"/hold": lambda r: (200, [("Grip-Hold", "stream"), ("Grip-Channel", "lim")], b"")}
    ).start()
    try:
        with running_proxy(
            routes=(f"* 127.0.0.1:{origin.port}",), max_connections_per_ip=2
        ) as proxy:
            held = [RawClient(proxy.port) for _ in range(2)]
            for client in held:
                client.get("/hold")
                client.read_until(b"\r\n\r\n")
            wait_for(lambda: subscribers(proxy, "lim") == 2)
            refused = RawClient(proxy.port)
            answer = refused.read_to_close()
            assert answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")
            assert b"\r\nRetry-After: 1\r\n" in answer
            assert answer.endswith(b"\r\n\r\nToo many connections from this address\n")
            publish(
                proxy.publish_port,
                [{"channel": "lim", "formats": {"http-stream": {"content": "z"}}}],
            )
            for client in held:
                assert client.read_until(b"z\r\n") == b"1\r\nz\r\n"
            held[0].close()
            wait_for(lambda: subscribers(proxy, "lim") == 1)
            again = RawClient(proxy.port)  # the slot came free
            again.get("/hold")
            assert again.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        origin.stop()
