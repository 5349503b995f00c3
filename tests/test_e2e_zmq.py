"""End to end: the ZeroMQ publishing ingress (--push-in-spec, --push-in-sub-spec), on both
adapters, with real ZeroMQ publishers on loopback (pyzmq) and raw HTTP subscribers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .e2e_support import Origin, ProxyThread, RawClient, running_proxy, subscribers, wait_for

zmq = pytest.importorskip("zmq")
tnetstring = pytest.importorskip("tnetstring")

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]


def _stream(channel: str) -> Any:
    return lambda request: (
        200,
        [("Content-Type", "text/plain"), ("Grip-Hold", "stream"), ("Grip-Channel", channel)],
        b"",
    )


@pytest.fixture(scope="module")
def origin() -> Iterator[Origin]:
    server = Origin(routes={f"/{c}": _stream(c) for c in ("z1", "z2", "z3", "z4")}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(origin: Origin, proxy_adapter: str) -> Iterator[ProxyThread]:
    with running_proxy(
        routes=(f"* 127.0.0.1:{origin.port},over_http",),
        push_in_spec="tcp://127.0.0.1:*",
        push_in_sub_spec="tcp://127.0.0.1:*",
    ) as p:
        yield p


class Sockets:
    """ZeroMQ sockets of one test, all closed after it."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.open: list[Any] = []

    def socket(self, kind: int, endpoint: str) -> Any:
        sock = self.context.socket(kind)
        self.open.append(sock)
        sock.linger = 0
        sock.rcvtimeo = 5000
        sock.connect(endpoint)
        return sock

    def close(self) -> None:
        for sock in self.open:
            sock.close(linger=0)
        self.context.term()


@pytest.fixture
def context() -> Iterator[Sockets]:
    sockets = Sockets()
    yield sockets
    sockets.close()


def _subscribe(proxy: ProxyThread, channel: str) -> RawClient:
    client = RawClient(proxy.port)
    client.get(f"/{channel}")
    assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    wait_for(lambda: subscribers(proxy, channel) == 1)
    return client


def _metric(proxy: ProxyThread, name: str) -> str:
    text: bytes = proxy.call(lambda: proxy.server.node.metrics.render())
    return "\n".join(line for line in text.decode().splitlines() if line.startswith(name))


def _pusher(context: Sockets, proxy: ProxyThread) -> Any:
    return context.socket(zmq.PUSH, proxy.server.zmq.endpoints["pull"])


def test_pull_socket_takes_json_and_tnetstring_items_with_dedup(
    proxy: ProxyThread, context: Sockets
) -> None:
    client = _subscribe(proxy, "z1")
    push = _pusher(context, proxy)
    item = {"channel": "z1", "id": "a", "formats": {"http-stream": {"content": "one\n"}}}
    push.send(b"J" + json.dumps(item).encode())
    push.send(b"J" + json.dumps(item).encode())  # a duplicate id: dropped, as over HTTP
    push.send(
        tnetstring.dumps(
            {b"channel": b"z1", b"id": b"b", b"http-stream": {b"content": b"two \xff\n"}}
        )
    )
    push.send(b"T" + tnetstring.dumps({b"channel": b"z1", b"http-stream": {b"content": b"3\n"}}))
    assert (
        client.read_until(b"3\n\r\n")
        == b"4\r\none\n\r\n" + b"6\r\ntwo \xff\n\r\n" + b"2\r\n3\n\r\n"
    )
    wait_for(lambda: 'socket="pull"} 4' in _metric(proxy, "gripcore_zmq_items_received_total"))
    assert _metric(proxy, "gripcore_items_dropped_total").count('reason="duplicate"} 1') == 1


def test_invalid_messages_are_counted_and_skipped(proxy: ProxyThread, context: Sockets) -> None:
    client = _subscribe(proxy, "z2")
    push = _pusher(context, proxy)
    push.send(b"Jnot json")
    push.send(b"12:not a tnet")
    push.send_multipart([b"J{}", b"J{}"])  # the PULL socket takes one frame
    push.send(b'J{"formats": {"http-stream": {"content": "x"}}}')  # no channel
    push.send(b'J{"channel": "z2", "http-stream": {"content": "still here\\n"}}')
    assert client.read_until(b"here\n\r\n") == b"b\r\nstill here\n\r\n"
    assert 'socket="pull"} 4' in _metric(proxy, "gripcore_zmq_invalid_messages_total")


def test_sub_socket_tells_an_xpub_publisher_which_channels_have_subscribers(
    proxy: ProxyThread, context: Sockets
) -> None:
    xpub = context.socket(zmq.XPUB, proxy.server.zmq.endpoints["sub"])
    client = _subscribe(proxy, "z3")
    assert xpub.recv() == b"\x01z3"  # the channel gained its first subscriber
    xpub.send_multipart([b"z3", tnetstring.dumps({b"http-stream": {b"content": b"via sub\n"}})])
    xpub.send_multipart([b"z3", b'J{"http-stream": {"content": "json too\\n"}}'])
    assert client.read_until(b"too\n\r\n") == b"8\r\nvia sub\n\r\n" + b"9\r\njson too\n\r\n"
    client.close()
    assert xpub.recv() == b"\x00z3"  # ... and lost its last
    assert 'socket="sub"} 2' in _metric(proxy, "gripcore_zmq_items_received_total")


def test_sub_socket_reports_channels_subscribed_before_the_publisher_connected(
    proxy: ProxyThread, context: Sockets
) -> None:
    client = _subscribe(proxy, "z4")
    xpub = context.socket(zmq.XPUB, proxy.server.zmq.endpoints["sub"])
    assert xpub.recv() == b"\x01z4"  # ZeroMQ replays the SUB socket's subscriptions
    xpub.send_multipart([b"z4", b"J{}"])  # no formats: counted, skipped
    xpub.send_multipart([b"z4"])  # one frame: the SUB socket takes two
    xpub.send_multipart([b"z4", b'J{"http-stream": {"content": "ok\\n"}}'])
    assert client.read_until(b"ok\n\r\n") == b"3\r\nok\n\r\n"
    assert 'socket="sub"} 2' in _metric(proxy, "gripcore_zmq_invalid_messages_total")


def test_an_address_that_cannot_be_bound_stops_the_start(proxy_adapter: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gripcore",
            "serve",
            "--adapter",
            proxy_adapter,
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--push-in-spec",
            "tcp://256.1.1.1:5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "cannot start: cannot bind the ZeroMQ pull socket to tcp://256.1.1.1:5" in result.stderr
