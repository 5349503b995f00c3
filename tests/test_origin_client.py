"""The asyncio HTTP/1.1 client toward origins, against real loopback servers.

Every test runs its scenario through `run()`, which checks afterwards that no file descriptor and
no asyncio task was left behind. The origins here are scripted: each request they receive is
parsed with h11 (so the exact bytes the client sent are recorded), then answered with a list of
steps: raw bytes to write, a pause, CLOSE (close the connection), RESET (abort it with a TCP RST)
or HANG (never answer).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gripcore import LocalProtocolError
from gripcore.adapters.asyncio._origin import (
    DEFAULT_MAX_IDLE_PER_HOST,
    MAX_RESPONSE_HEAD_SIZE,
    OriginClient,
    OriginError,
    OriginResponse,
    OriginStats,
)

from .hypothesis_support import examples

pytestmark = pytest.mark.e2e

CLOSE = "close"
RESET = "reset"
HANG = "hang"
Step = bytes | float | str

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- harness -------------------------------------------------------------------------------------


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` in a fresh event loop; then no fd and no task it made may remain."""

    async def checked() -> None:
        fds_before = open_fds()
        await main()
        for _ in range(5):
            await asyncio.sleep(0)
        assert open_fds() == fds_before, "file descriptors leaked"
        assert asyncio.all_tasks() == {asyncio.current_task()}, "tasks leaked"

    asyncio.run(checked())


@dataclass
class Received:
    """One request as the origin received it."""

    connection: int
    raw: bytes
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def read_request(
    reader: asyncio.StreamReader, connection: int, leftover: bytes
) -> tuple[Received, bytes] | None:
    """Parse one request with h11; return it and the bytes after it, None if the peer left."""
    parser = h11.Connection(h11.SERVER)
    raw = bytearray()
    body = bytearray()
    head: h11.Request | None = None
    data = leftover
    while True:
        raw += data
        if data:
            parser.receive_data(data)
        while (event := parser.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                trailing = parser.trailing_data[0]
                received = Received(
                    connection,
                    bytes(raw[: len(raw) - len(trailing)]),
                    bytes(head.method),
                    bytes(head.target),
                    list(head.headers.raw_items()),
                    bytes(body),
                )
                return received, trailing
        try:
            data = await reader.read(65536)
        except ConnectionError:
            return None
        if not data:
            return None


class Origin:
    """A loopback origin answering each request with the next script entry (or `respond`)."""

    def __init__(
        self,
        *script: Sequence[Step],
        respond: Callable[[Received], Sequence[Step]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.script = list(script)
        self.respond = respond
        self.ssl_context = ssl_context
        self.host = host
        self.requests: list[Received] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = port

    async def __aenter__(self) -> Origin:
        self.server = await asyncio.start_server(
            self._handle, self.host, self.port, ssl=self.ssl_context
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    def _steps_for(self, received: Received) -> Sequence[Step]:
        if self.respond is not None:
            return self.respond(received)
        return self.script[len(self.requests) - 1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        leftover = b""
        try:
            while (parsed := await read_request(reader, number, leftover)) is not None:
                received, leftover = parsed
                self.requests.append(received)
                for step in self._steps_for(received):
                    if step == CLOSE:
                        return
                    if step == RESET:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                        return
                    if step == HANG:
                        await asyncio.Event().wait()
                    elif isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        assert isinstance(step, bytes)
                        writer.write(step)
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            writer.close()
            self._tasks.discard(task)


def bytewise(data: bytes) -> list[Step]:
    """Write `data` one byte at a time, letting the loop run between bytes."""
    steps: list[Step] = []
    for i in range(len(data)):
        steps += [data[i : i + 1], 0.0]
    return steps


def closed_port() -> int:
    """A loopback port with nothing listening (it was just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def get(
    client: OriginClient, origin: Origin, target: bytes = b"/", **kw: Any
) -> OriginResponse:
    return await client.request(
        origin.host, origin.port, b"GET", target, [(b"Host", b"origin")], **kw
    )


async def settle() -> None:
    """Let transports finish closing (connection_lost runs on the next loop iterations)."""
    for _ in range(3):
        await asyncio.sleep(0)


# -- requests: exact bytes on the wire -----------------------------------------------------------

# (id, method, target, headers, body, expected bytes; PORT stands for the origin's port)
REQUEST_VECTORS: list[tuple[str, bytes, bytes, list[tuple[bytes, bytes]], bytes, bytes]] = [
    (
        "get",
        b"GET",
        b"/path?x=1",
        [(b"Host", b"example.com"), (b"X-Test", b"a b")],
        b"",
        b"GET /path?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Test: a b\r\n\r\n",
    ),
    (
        "host-added",
        b"GET",
        b"/",
        [(b"Accept", b"*/*")],
        b"",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nAccept: */*\r\n\r\n",
    ),
    (
        "host-first-case-kept",
        b"GET",
        b"/",
        [(b"X-MiXeD", b"v"), (b"hOsT", b"h")],
        b"",
        b"GET / HTTP/1.1\r\nhOsT: h\r\nX-MiXeD: v\r\n\r\n",
    ),
    (
        "post-length-added",
        b"POST",
        b"/publish/",
        [(b"Host", b"h"), (b"Content-Type", b"application/json")],
        b'{"items":[]}',
        b"POST /publish/ HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        b'Content-Length: 12\r\n\r\n{"items":[]}',
    ),
    (
        "post-empty-length-zero",
        b"POST",
        b"/",
        [(b"Host", b"h")],
        b"",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    ),
    (
        "get-with-body",
        b"GET",
        b"/",
        [(b"Host", b"h")],
        b"abc",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    ),
    (
        "length-kept",
        b"PUT",
        b"/",
        [(b"Host", b"h"), (b"content-length", b"3")],
        b"abc",
        b"PUT / HTTP/1.1\r\nHost: h\r\ncontent-length: 3\r\n\r\nabc",
    ),
    (
        "chunked",
        b"POST",
        b"/",
        [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked")],
        b"hello",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "delete-no-length",
        b"DELETE",
        b"/x",
        [(b"Host", b"h")],
        b"",
        b"DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n",
    ),
    (
        "absolute-target",
        b"OPTIONS",
        b"*",
        [(b"Host", b"h")],
        b"",
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    ),
]


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "expected"),
    [v[1:] for v in REQUEST_VECTORS],
    ids=[v[0] for v in REQUEST_VECTORS],
)
def test_request_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes, expected: bytes
) -> None:
    async def main() -> None:
        async with Origin([OK]) as origin:
            client = OriginClient()
            response = await client.request("127.0.0.1", origin.port, method, target, headers, body)
            assert await response.read_body(None) == b"ok"
            await client.aclose()
        [received] = origin.requests
        assert received.raw == expected.replace(b"PORT", str(origin.port).encode())
        assert received.body == body

    run(main)


@pytest.mark.parametrize(("port", "use_ssl"), [(80, False), (443, True)])
def test_host_added_without_default_port(port: int, use_ssl: bool, tls_files: TlsFiles) -> None:
    async def main() -> None:
        context = server_context(tls_files) if use_ssl else None
        try:
            origin = Origin([OK], host="127.0.0.7", port=port, ssl_context=context)
            await origin.__aenter__()
        except OSError as exc:
            pytest.skip(f"cannot listen on port {port} here: {exc}")
        try:
            client = OriginClient()
            response = await client.request(
                "127.0.0.7", port, b"GET", b"/", [], ssl=use_ssl, insecure=True
            )
            assert await response.read_body(None) == b"ok"
            await client.aclose()
        finally:
            await origin.__aexit__(None, None, None)
        assert origin.requests[0].raw == b"GET / HTTP/1.1\r\nHost: 127.0.0.7\r\n\r\n"

    run(main)


def test_ipv6_origin() -> None:
    async def main() -> None:
        try:
            origin = Origin([OK], host="::1")
            await origin.__aenter__()
        except OSError:
            pytest.skip("no IPv6 loopback")
        try:
            client = OriginClient()
            response = await client.request("::1", origin.port, b"GET", b"/", [])
            assert await response.read_body(None) == b"ok"
            await client.aclose()
        finally:
            await origin.__aexit__(None, None, None)
        assert origin.requests[0].raw == b"GET / HTTP/1.1\r\nHost: [::1]:%d\r\n\r\n" % origin.port

        client = OriginClient()
        with pytest.raises(OriginError) as info:
            await client.request("::1", closed_port(), b"GET", b"/", [])
        assert info.value.kind == "connect"
        assert info.value.message.startswith("connect to [::1]:")

    run(main)


# (id, host, port, method, target, headers, body, message fragment)
BAD_REQUESTS: list[tuple[str, str, int, bytes, bytes, list[tuple[bytes, bytes]], bytes, str]] = [
    ("length-mismatch", "h", 80, b"POST", b"/", [(b"Content-Length", b"10")], b"abc",
     "Content-Length is 10 but the body has 3 bytes"),
    ("length-and-chunked", "h", 80, b"POST", b"/",
     [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], b"abc",
     "both Content-Length and Transfer-Encoding"),
    ("conflicting-lengths", "h", 80, b"POST", b"/",
     [(b"Content-Length", b"3"), (b"Content-Length", b"4")], b"abc",
     "conflicting Content-Length"),
    ("bad-length", "h", 80, b"POST", b"/", [(b"Content-Length", b"-3")], b"abc",
     "bad Content-Length"),
    ("header-injection", "h", 80, b"GET", b"/", [(b"X-A", b"a\r\nX-Injected: 1")], b"",
     "Illegal header value"),
    ("bad-header-name", "h", 80, b"GET", b"/", [(b"X A", b"a")], b"", "Illegal header name"),
    ("bad-method", "h", 80, b"GE T", b"/", [], b"", "invalid request to origin"),
    ("bad-target", "h", 80, b"GET", b"/a b", [], b"", "invalid request to origin"),
    ("gzip-coding", "h", 80, b"POST", b"/", [(b"Transfer-Encoding", b"gzip")], b"",
     "Only Transfer-Encoding: chunked"),
    ("bad-host", "a" * 64 + ".example", 80, b"GET", b"/", [], b"", "invalid origin host"),
    ("empty-label", "a..b", 80, b"GET", b"/", [(b"Host", b"h")], b"", "invalid origin host"),
    ("port-zero", "h", 0, b"GET", b"/", [], b"", "invalid origin port 0"),
    ("port-too-big", "h", 70000, b"GET", b"/", [], b"", "invalid origin port 70000"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("host", "port", "method", "target", "headers", "body", "message"),
    [v[1:] for v in BAD_REQUESTS],
    ids=[v[0] for v in BAD_REQUESTS],
)
def test_bad_request_refused_before_connecting(
    host: str,
    port: int,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    message: str,
) -> None:
    async def main() -> None:
        client = OriginClient()
        with pytest.raises(LocalProtocolError) as info:
            await client.request(host, port, method, target, headers, body)
        assert message in str(info.value)
        assert client.stats == OriginStats(open_connections=0, idle_connections=0)

    run(main)


# -- responses: every framing, three ways --------------------------------------------------------


@dataclass
class ResponseVector:
    id: str
    raw: bytes
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    http_version: bytes = b"1.1"
    reusable: bool = True  # both sides allow keep-alive: the connection goes back to the pool
    framed: bool = True  # the body's end is known without the origin closing
    method: bytes = b"GET"


RESPONSE_VECTORS = [
    ResponseVector(
        "content-length",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        200, b"OK", [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")], b"hello",
    ),
    ResponseVector(
        "chunked-extensions-trailers",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        200, b"OK", [(b"Transfer-Encoding", b"chunked")], b"hello world",
    ),
    ResponseVector(
        "grip-headers-case-and-order-kept",
        b"HTTP/1.1 200 OK\r\nGrip-Hold: stream\r\ngrip-channel: a\r\nGRIP-CHANNEL: b\r\n"
        b"Content-Length: 0\r\n\r\n",
        200, b"OK",
        [(b"Grip-Hold", b"stream"), (b"grip-channel", b"a"), (b"GRIP-CHANNEL", b"b"),
         (b"Content-Length", b"0")],
        b"",
    ),
    ResponseVector(
        "http10-close-delimited",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold style body",
        200, b"OK", [(b"Content-Type", b"text/plain")], b"old style body",
        http_version=b"1.0", reusable=False, framed=False,
    ),
    ResponseVector(
        "http11-close-delimited",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
        200, b"OK", [(b"Connection", b"close")], b"until close", reusable=False, framed=False,
    ),
    ResponseVector(
        "connection-close-with-length",
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 4\r\n\r\nnope",
        404, b"Not Found", [(b"Connection", b"close"), (b"Content-Length", b"4")], b"nope",
        reusable=False,
    ),
    ResponseVector(
        "no-content",
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        204, b"No Content", [(b"X-A", b"1")], b"",
    ),
    ResponseVector(
        "not-modified-ignores-length",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        304, b"Not Modified", [(b"Content-Length", b"100")], b"",
    ),
    ResponseVector(
        "head-ignores-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        200, b"OK", [(b"Content-Length", b"1000")], b"", method=b"HEAD",
    ),
    ResponseVector(
        "continue-then-final",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nhi",
        201, b"Created", [(b"Content-Length", b"2")], b"hi",
    ),
    ResponseVector(
        "empty-reason",
        b"HTTP/1.1 502 \r\nContent-Length: 1\r\n\r\nx",
        502, b"", [(b"Content-Length", b"1")], b"x",
    ),
    ResponseVector(
        "binary-body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\x00\xff\r\n",
        200, b"OK", [(b"Content-Length", b"4")], b"\x00\xff\r\n",
    ),
]  # fmt: skip

TRAILING_GARBAGE = b"HTTP/1.1 200 OK\r\nX-Unsolicited: 1\r\n\r\n"


@pytest.mark.parametrize("reader", ["read_body", "iterate"])
@pytest.mark.parametrize("delivery", ["whole", "bytewise", "trailing"])
@pytest.mark.parametrize("vector", RESPONSE_VECTORS, ids=[v.id for v in RESPONSE_VECTORS])
def test_response_vectors(vector: ResponseVector, delivery: str, reader: str) -> None:
    if delivery == "trailing" and not vector.framed:
        pytest.skip("a close-delimited body has no end before the close: nothing can trail it")
    steps: list[Step]
    if delivery == "whole":
        steps = [vector.raw]
    elif delivery == "bytewise":
        steps = bytewise(vector.raw)
    else:
        steps = [vector.raw + TRAILING_GARBAGE]
    if not vector.framed:
        steps.append(CLOSE)

    async def main() -> None:
        async with Origin(steps) as origin:
            client = OriginClient()
            response = await client.request(
                "127.0.0.1", origin.port, vector.method, b"/", [(b"Host", b"h")]
            )
            assert (response.status, response.reason) == (vector.status, vector.reason)
            assert response.headers == vector.headers
            assert response.http_version == vector.http_version
            if reader == "read_body":
                body = await response.read_body(None)
            else:
                body = b"".join([chunk async for chunk in response])
            assert body == vector.body
            # read to the end: reading again gives nothing more
            assert await response.read_body(None) == b""
            await settle()
            pooled = vector.reusable and delivery != "trailing"
            assert client.stats == OriginStats(int(pooled), int(pooled))
            await client.aclose()
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_response_without_body_releases_connection_unread() -> None:
    async def main() -> None:
        async with Origin([b"HTTP/1.1 204 No Content\r\n\r\n"], [OK]) as origin:
            client = OriginClient()
            await get(client, origin)  # body never read: it is empty, so the connection is free
            assert client.stats == OriginStats(1, 1)
            response = await get(client, origin)
            assert await response.read_body(None) == b"ok"
            assert origin.connections == 1
            await client.aclose()

    run(main)


# -- keep-alive and the pool ---------------------------------------------------------------------


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        async with Origin([OK], [OK], [OK]) as origin:
            client = OriginClient()
            for _ in range(3):
                response = await get(client, origin)
                assert await response.read_body(None) == b"ok"
                assert client.stats == OriginStats(open_connections=1, idle_connections=1)
            assert origin.connections == 1
            assert [r.connection for r in origin.requests] == [1, 1, 1]
            await client.aclose()
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_pools_are_per_origin() -> None:
    async def main() -> None:
        async with Origin([OK], [OK]) as first, Origin([OK], [OK]) as second:
            client = OriginClient()
            for origin in (first, second, first, second):
                assert await (await get(client, origin)).read_body(None) == b"ok"
            assert (first.connections, second.connections) == (1, 1)
            assert client.stats == OriginStats(2, 2)
            await client.aclose()

    run(main)


def test_connection_close_response_not_pooled() -> None:
    close_response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        async with Origin([close_response, CLOSE], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert client.stats == OriginStats(0, 0)
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()

    run(main)


def test_connection_close_request_not_pooled() -> None:
    async def main() -> None:
        async with Origin([OK]) as origin:
            client = OriginClient()
            response = await client.request(
                "127.0.0.1", origin.port, b"GET", b"/", [(b"Host", b"h"), (b"Connection", b"close")]
            )
            assert await response.read_body(None) == b"ok"
            assert client.stats == OriginStats(0, 0)
            await client.aclose()

    run(main)


def test_idle_connection_expires() -> None:
    async def main() -> None:
        async with Origin([OK], [OK]) as origin:
            client = OriginClient(idle_timeout=0.05)
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert client.stats == OriginStats(1, 1)
            await asyncio.sleep(0.15)
            assert client.stats == OriginStats(0, 0)
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()

    run(main)


def test_origin_closing_idle_connection_drops_it_from_pool() -> None:
    async def main() -> None:
        async with Origin([OK, 0.02, CLOSE], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            await asyncio.sleep(0.1)
            assert client.stats == OriginStats(0, 0)
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()

    run(main)


def test_unsolicited_data_on_idle_connection_drops_it() -> None:
    late_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n"

    async def main() -> None:
        async with Origin([OK, 0.02, late_408, HANG], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            await asyncio.sleep(0.1)
            assert client.stats == OriginStats(0, 0)
            response = await get(client, origin)
            assert response.status == 200  # not the stale 408
            assert await response.read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()

    run(main)


def test_max_idle_zero_disables_pooling() -> None:
    async def main() -> None:
        async with Origin([OK], [OK]) as origin:
            client = OriginClient(max_idle_per_host=0)
            for _ in range(2):
                assert await (await get(client, origin)).read_body(None) == b"ok"
                assert client.stats == OriginStats(0, 0)
            assert origin.connections == 2
            await client.aclose()

    with pytest.raises(LocalProtocolError, match="max_idle_per_host must be >= 0"):
        OriginClient(max_idle_per_host=-1)
    run(main)


def test_concurrent_requests_and_bounded_pool() -> None:
    async def main() -> None:
        async with Origin(respond=lambda received: [0.02, OK]) as origin:
            client = OriginClient()

            async def one() -> bytes:
                response = await get(client, origin)
                return await response.read_body(None)

            assert await asyncio.gather(*[one() for _ in range(50)]) == [b"ok"] * 50
            assert origin.connections == 50
            bound = DEFAULT_MAX_IDLE_PER_HOST
            assert client.stats == OriginStats(open_connections=bound, idle_connections=bound)

            assert await asyncio.gather(*[one() for _ in range(50)]) == [b"ok"] * 50
            assert origin.connections == 50 + (50 - bound)
            assert client.stats == OriginStats(bound, bound)
            await client.aclose()
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_closed_client_closes_everything_and_refuses_requests() -> None:
    async def main() -> None:
        body = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"
        async with Origin([OK], [body, HANG]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            in_use = await client.request("127.0.0.1", origin.port, b"GET", b"/", [], ssl=False)
            await client.aclose()
            assert client.stats == OriginStats(0, 0)
            with pytest.raises(OriginError) as info:
                await in_use.read_body(None)
            assert info.value.kind == "closed"
            with pytest.raises(LocalProtocolError, match="closed OriginClient"):
                await get(client, origin)

    run(main)


def test_request_in_flight_during_aclose_is_not_pooled() -> None:
    async def main() -> None:
        async with Origin([OK]) as origin:
            client = OriginClient()
            # "localhost" is resolved in a thread: the request is still connecting at aclose()
            request = client.request("localhost", origin.port, b"GET", b"/", [(b"Host", b"h")])
            task = asyncio.create_task(request)
            await asyncio.sleep(0)
            await client.aclose()
            response = await task
            assert await response.read_body(None) == b"ok"
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_body_already_received_stays_readable_after_aclose() -> None:
    async def main() -> None:
        async with Origin([OK]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            await client.aclose()
            assert await response.read_body(None) == b"ok"
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_aclose_from_another_task_ends_a_pending_read() -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        async with Origin([raw, HANG]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            reading = asyncio.create_task(response.read_body(None))
            await asyncio.sleep(0.01)
            await response.aclose()
            with pytest.raises(OriginError) as info:
                await reading
            assert info.value.kind == "closed"
            assert client.stats == OriginStats(0, 0)
            await client.aclose()

    run(main)


# -- the stale keep-alive retry ------------------------------------------------------------------


def test_stale_pooled_connection_is_retried_once() -> None:
    async def main() -> None:
        # request 2 arrives on the idle connection, which the origin closes without answering
        async with Origin([OK], [CLOSE], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin, b"/1")).read_body(None) == b"ok"
            assert await (await get(client, origin, b"/2")).read_body(None) == b"ok"
            assert [(r.connection, r.target) for r in origin.requests] == [
                (1, b"/1"),
                (1, b"/2"),
                (2, b"/2"),
            ]
            await client.aclose()

    run(main)


def test_stale_retry_happens_only_once() -> None:
    async def main() -> None:
        async with Origin([OK], [CLOSE], [CLOSE], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            with pytest.raises(OriginError) as info:
                await get(client, origin)
            assert info.value.kind == "closed"
            assert info.value.message == (
                f"127.0.0.1:{origin.port} closed the connection without a response"
            )
            assert origin.connections == 2
            assert client.stats == OriginStats(0, 0)
            await client.aclose()

    run(main)


def test_reset_of_reused_connection_is_retried() -> None:
    async def main() -> None:
        async with Origin([OK], [RESET], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()

    run(main)


def test_reset_mid_body() -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"
        async with Origin([raw, 0.02, RESET]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            with pytest.raises(OriginError) as info:
                await response.read_body(None)
            assert info.value.kind == "closed"
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_fresh_connection_closed_without_response_is_not_retried() -> None:
    async def main() -> None:
        async with Origin([CLOSE], [OK]) as origin:
            client = OriginClient()
            with pytest.raises(OriginError) as info:
                await get(client, origin)
            assert info.value.kind == "closed"
            assert origin.connections == 1
            await client.aclose()

    run(main)


def test_reused_connection_closed_mid_response_is_not_retried() -> None:
    async def main() -> None:
        async with Origin([OK], [b"HTTP/1.1 200 OK\r\nContent-", CLOSE], [OK]) as origin:
            client = OriginClient()
            assert await (await get(client, origin)).read_body(None) == b"ok"
            with pytest.raises(OriginError) as info:
                await get(client, origin)
            assert info.value.kind == "closed"
            assert "closed the connection mid-response" in info.value.message
            assert origin.connections == 1
            await client.aclose()

    run(main)


def test_reused_connection_timing_out_is_not_retried() -> None:
    async def main() -> None:
        async with Origin([OK], [HANG], [OK]) as origin:
            client = OriginClient(response_timeout=0.1)
            assert await (await get(client, origin)).read_body(None) == b"ok"
            with pytest.raises(OriginError) as info:
                await get(client, origin)
            assert info.value.kind == "timeout"
            assert origin.connections == 1
            await client.aclose()

    run(main)


# -- body reading: streaming, limits, discarding -------------------------------------------------


def test_body_streams_as_it_arrives() -> None:
    async def main() -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        async with Origin(respond=lambda r: [head, b"5\r\nfirst\r\n", HANG]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            chunks = aiter(response)
            # the first chunk arrives while the origin is still holding the rest back
            assert await asyncio.wait_for(anext(chunks), 2) == b"first"
            writer = origin.writers[0]
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            assert [chunk async for chunk in chunks] == [b"second"]
            assert client.stats == OriginStats(1, 1)
            await client.aclose()

    run(main)


@pytest.mark.parametrize("reader", ["read_body", "iterate"])
@pytest.mark.parametrize(
    ("raw", "partial"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"hello"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"hel"),
    ],
    ids=["content-length", "chunked-between-chunks", "chunked-mid-chunk"],
)
def test_origin_closing_mid_body(raw: bytes, partial: bytes, reader: str) -> None:
    async def main() -> None:
        async with Origin([raw, 0.02, CLOSE]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            received: list[bytes] = []
            with pytest.raises(OriginError) as info:
                if reader == "read_body":
                    await response.read_body(None)
                else:
                    async for chunk in response:
                        received.append(chunk)  # noqa: PERF401 - keep what came before the error
            assert info.value.kind == "closed"
            assert f"127.0.0.1:{origin.port} closed the connection mid-response" in str(info.value)
            if reader == "iterate":
                assert b"".join(received) == partial
            assert client.stats == OriginStats(0, 0)
            with pytest.raises(OriginError, match="discarded"):
                await response.read_body(None)
            await client.aclose()

    run(main)


@pytest.mark.parametrize(
    ("raw", "limit", "ok"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 5, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!", 5, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
         5, True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n3\r\nlo!\r\n0\r\n\r\n",
         5, False),
        (b"HTTP/1.0 200 OK\r\n\r\nhello!", 5, False),
    ],
    ids=["length-at-limit", "length-over", "chunked-at-limit", "chunked-over", "close-over"],
)  # fmt: skip
def test_read_body_limit(raw: bytes, limit: int, ok: bool) -> None:
    async def main() -> None:
        async with Origin([raw, HANG]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            if ok:
                assert await response.read_body(limit) == b"hello"
                assert client.stats == OriginStats(1, 1)
            else:
                with pytest.raises(OriginError) as info:
                    await response.read_body(limit)
                assert info.value.kind == "too-large"
                assert info.value.message == (
                    f"response body from 127.0.0.1:{origin.port} exceeds {limit} bytes"
                )
                assert client.stats == OriginStats(0, 0)
            await client.aclose()

    run(main)


def test_aclose_discards_unread_body() -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"
        async with Origin([raw, HANG], [OK]) as origin:
            client = OriginClient()
            async with await get(client, origin) as response:
                assert await anext(aiter(response)) == b"12345"
            assert client.stats == OriginStats(0, 0)
            with pytest.raises(OriginError, match="the response body was discarded"):
                await response.read_body(None)
            await response.aclose()  # a second close changes nothing
            assert await (await get(client, origin)).read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()

    run(main)


def test_aclose_after_full_read_keeps_connection() -> None:
    async def main() -> None:
        async with Origin([OK]) as origin:
            client = OriginClient()
            async with await get(client, origin) as response:
                assert await response.read_body(None) == b"ok"
            assert client.stats == OriginStats(1, 1)
            assert await response.read_body(None) == b""
            await client.aclose()

    run(main)


def test_cancelled_body_read_discards_connection() -> None:
    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        async with Origin([raw, HANG]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await response.read_body(None)
            assert client.stats == OriginStats(0, 0)
            await client.aclose()

    run(main)


def test_cancelled_request_closes_connection() -> None:
    async def main() -> None:
        async with Origin([HANG]) as origin:
            client = OriginClient()
            task = asyncio.create_task(get(client, origin))
            await asyncio.sleep(0.05)
            assert client.stats == OriginStats(1, 0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.stats == OriginStats(0, 0)
            await client.aclose()

    run(main)


def test_hand_built_response_has_empty_body() -> None:
    async def main() -> None:
        response = OriginResponse(200, b"OK", [(b"X", b"1")], b"1.1")
        assert await response.read_body(0) == b""
        assert [chunk async for chunk in response] == []
        await response.aclose()
        assert await response.read_body(None) == b""
        assert "X" in repr(response)

    run(main)


# -- failures: connect, timeouts, garbage --------------------------------------------------------


def test_connect_refused() -> None:
    async def main() -> None:
        port = closed_port()
        client = OriginClient()
        with pytest.raises(OriginError) as info:
            await client.request("127.0.0.1", port, b"GET", b"/", [(b"Host", b"h")])
        assert info.value.kind == "connect"
        assert info.value.message == f"connect to 127.0.0.1:{port} failed: Connection refused"
        assert str(info.value) == info.value.message
        assert client.stats == OriginStats(0, 0)

    run(main)


def test_connect_unresolvable_name() -> None:
    async def main() -> None:
        client = OriginClient(connect_timeout=3)
        with pytest.raises(OriginError) as info:
            await client.request("name.invalid", 80, b"GET", b"/", [])
        assert info.value.kind in ("connect", "timeout")
        assert info.value.message.startswith("connect to name.invalid:80 ")

    run(main)


def test_connect_timeout_with_full_backlog() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        # Linux queues backlog + 1 connections and then drops SYNs: later connects hang.
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        with socket.socket() as probe_sock:
            probe_sock.settimeout(0.1)
            try:
                probe_sock.connect(address)
            except TimeoutError:
                pass
            else:
                pytest.skip("this kernel accepts connects beyond the backlog: cannot stall one")

        async def main() -> None:
            client = OriginClient(connect_timeout=0.1)
            with pytest.raises(OriginError) as info:
                await client.request("127.0.0.1", address[1], b"GET", b"/", [])
            assert info.value.kind == "timeout"
            assert info.value.message == f"connect to 127.0.0.1:{address[1]} timed out after 0.1 s"
            assert client.stats == OriginStats(0, 0)

        run(main)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_tls_handshake_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts, reads the ClientHello, never answers
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = OriginClient(connect_timeout=0.1)
        with pytest.raises(OriginError) as info:
            await client.request("127.0.0.1", port, b"GET", b"/", [], ssl=True, insecure=True)
        assert info.value.kind == "timeout"
        assert info.value.message == f"connect to 127.0.0.1:{port} timed out after 0.1 s"
        assert client.stats == OriginStats(0, 0)
        server.close()
        await server.wait_closed()
        await settle()

    run(main)


def test_response_timeout() -> None:
    async def main() -> None:
        async with Origin([HANG]) as origin:
            client = OriginClient(response_timeout=0.1)
            with pytest.raises(OriginError) as info:
                await get(client, origin)
            assert info.value.kind == "timeout"
            assert info.value.message == f"no response from 127.0.0.1:{origin.port} within 0.1 s"
            assert client.stats == OriginStats(0, 0)

    run(main)


# (id, what the origin does, expected kind, message fragment)
GARBAGE: list[tuple[str, list[Step], str, str]] = [
    ("ssh-banner", [b"SSH-2.0-OpenSSH_9.6\r\n", HANG], "protocol",
     "sent an invalid HTTP response: expected b'HTTP/', got b'SSH-2'"),
    ("blank-lines", [b"\r\n\r\n", HANG], "protocol", r"got b'\r\n\r\n'"),
    ("bytewise-banner", [*bytewise(b"HTTX"), HANG], "protocol", "got b'HTTX'"),
    ("bad-status", [b"HTTP/1.1 abc OK\r\n\r\n", HANG], "protocol", "sent an invalid HTTP response"),
    ("http2-preface-reply", [b"HTTP/2 200\r\n\r\n", HANG], "protocol", "invalid HTTP response"),
    ("bad-header-line", [b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n", HANG], "protocol",
     "invalid HTTP response"),
    ("bad-chunk-size", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HANG],
     "protocol", "invalid HTTP response"),
    ("late-bad-chunk", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0.01,
                        b"2\r\nok\r\nzz\r\n", HANG], "protocol", "invalid HTTP response"),
    ("conflicting-lengths", [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                             HANG], "protocol", "conflicting Content-Length"),
    ("gzip-coding", [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", HANG], "protocol",
     "invalid HTTP response"),
    ("huge-head", [b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_RESPONSE_HEAD_SIZE + 10), HANG],
     "too-large", f"exceeds {MAX_RESPONSE_HEAD_SIZE} bytes"),
    ("truncated-head", [b"HTTP/1.1 200 OK\r\nContent-", CLOSE], "closed", "mid-response"),
    ("only-prefix", [b"HTT", CLOSE], "closed", "mid-response"),
    ("after-continue", [b"HTTP/1.1 100 Continue\r\n\r\n", CLOSE], "closed", "mid-response"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("steps", "kind", "message"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE]
)
def test_garbage_from_origin(steps: list[Step], kind: str, message: str) -> None:
    async def main() -> None:
        async with Origin(steps) as origin:
            # A long response timeout: garbage must be reported at once, not by the timer.
            client = OriginClient(response_timeout=5)
            started = asyncio.get_running_loop().time()
            with pytest.raises(OriginError) as info:
                response = await get(client, origin)
                await response.read_body(None)
            assert asyncio.get_running_loop().time() - started < 2
            assert info.value.kind == kind
            assert message in info.value.message
            assert f"127.0.0.1:{origin.port}" in info.value.message
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_one_bad_origin_leaves_other_connections_working() -> None:
    async def main() -> None:
        async with Origin([b"garbage", HANG]) as bad, Origin([OK], [OK]) as good:
            client = OriginClient()
            assert await (await get(client, good)).read_body(None) == b"ok"
            with pytest.raises(OriginError):
                await get(client, bad)
            assert await (await get(client, good)).read_body(None) == b"ok"
            assert good.connections == 1
            await client.aclose()

    run(main)


# -- TLS -----------------------------------------------------------------------------------------


@dataclass
class TlsFiles:
    cert: Path
    key: Path
    pem: str


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for the name `origin.test`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "origin.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("origin.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsFiles(directory / "cert.pem", directory / "key.pem", pem.decode())


def server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    return context


def test_tls_insecure_round_trip_and_reuse(tls_files: TlsFiles) -> None:
    close_delimited = b"HTTP/1.0 200 OK\r\n\r\nold tls"

    async def main() -> None:
        script: list[Sequence[Step]] = [[OK], [OK], [close_delimited, CLOSE], [OK]]
        async with Origin(*script, ssl_context=server_context(tls_files)) as origin:
            client = OriginClient()
            for _ in range(2):
                response = await get(client, origin, ssl=True, insecure=True)
                assert await response.read_body(None) == b"ok"
            assert origin.connections == 1
            response = await get(client, origin, ssl=True, insecure=True)
            assert await response.read_body(None) == b"old tls"
            assert client.stats == OriginStats(0, 0)
            response = await get(client, origin, ssl=True, insecure=True)
            assert await response.read_body(None) == b"ok"
            assert origin.connections == 2
            await client.aclose()
            assert client.stats == OriginStats(0, 0)

    run(main)


def test_tls_verification(tls_files: TlsFiles) -> None:
    async def main() -> None:
        async with Origin([OK], ssl_context=server_context(tls_files)) as origin:
            # the system's CA store does not know this self-signed certificate
            client = OriginClient()
            with pytest.raises(OriginError) as info:
                await get(client, origin, ssl=True)
            assert info.value.kind == "connect"
            assert "TLS handshake failed" in info.value.message
            assert "CERTIFICATE_VERIFY_FAILED" in info.value.message

            trusting = OriginClient(ssl_context=ssl.create_default_context(cadata=tls_files.pem))
            # the certificate names origin.test, not 127.0.0.1
            with pytest.raises(OriginError) as info:
                await get(trusting, origin, ssl=True)
            assert info.value.kind == "connect"
            assert "127.0.0.1" in info.value.message
            # with the server name given, it verifies
            response = await get(trusting, origin, ssl=True, server_hostname="origin.test")
            assert await response.read_body(None) == b"ok"
            assert trusting.stats == OriginStats(1, 1)
            await trusting.aclose()
            await client.aclose()

    run(main)


def test_insecure_and_verified_connections_are_pooled_apart(tls_files: TlsFiles) -> None:
    async def main() -> None:
        async with Origin([OK], [OK], ssl_context=server_context(tls_files)) as origin:
            client = OriginClient(ssl_context=ssl.create_default_context(cadata=tls_files.pem))
            await (await get(client, origin, ssl=True, insecure=True)).read_body(None)
            response = await get(client, origin, ssl=True, server_hostname="origin.test")
            await response.read_body(None)
            assert origin.connections == 2
            assert client.stats == OriginStats(2, 2)
            await client.aclose()

    run(main)


# -- large inputs: linear, bounded ---------------------------------------------------------------

MEGABYTE = 1024 * 1024


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close"])
def test_one_megabyte_bodies(framing: str) -> None:
    payload = bytes(range(256)) * (MEGABYTE // 256)
    if framing == "content-length":
        steps: list[Step] = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % MEGABYTE, payload]
    elif framing == "chunked":
        chunks = [b"400\r\n" + payload[i : i + 1024] + b"\r\n" for i in range(0, MEGABYTE, 1024)]
        steps = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *chunks, b"0\r\n\r\n"]
    else:
        steps = [b"HTTP/1.0 200 OK\r\n\r\n", payload, CLOSE]

    async def main() -> None:
        async with Origin(respond=lambda received: steps) as origin:
            client = OriginClient()
            response = await client.request(
                "127.0.0.1", origin.port, b"POST", b"/", [(b"Host", b"h")], payload
            )
            assert await response.read_body(MEGABYTE) == payload
            response = await client.request(
                "127.0.0.1", origin.port, b"POST", b"/", [(b"Host", b"h")], payload
            )
            assert b"".join([chunk async for chunk in response]) == payload
            assert [r.body == payload for r in origin.requests] == [True, True]
            await client.aclose()

    run(main)


def test_large_response_head_within_limit() -> None:
    channels = b"".join(b"Grip-Channel: channel-%d\r\n" % i for i in range(2000))
    assert len(channels) < MAX_RESPONSE_HEAD_SIZE

    async def main() -> None:
        raw = b"HTTP/1.1 200 OK\r\nGrip-Hold: stream\r\n" + channels + b"Content-Length: 0\r\n\r\n"
        async with Origin([raw]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            assert len(response.headers) == 2002
            assert response.headers[2000] == (b"Grip-Channel", b"channel-1999")
            await client.aclose()

    run(main)


def test_slow_reader_applies_back_pressure() -> None:
    size = 32 * MEGABYTE
    payload = b"x" * size

    async def main() -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
        async with Origin(respond=lambda received: [head + payload]) as origin:
            client = OriginClient()
            response = await get(client, origin)
            await asyncio.sleep(0.1)
            # the client stopped reading at its buffer limit: the rest waits at the origin
            assert origin.writers[0].transport.get_write_buffer_size() > 0
            total = 0
            async for chunk in response:
                total += len(chunk)
            assert total == size
            assert client.stats == OriginStats(1, 1)
            await client.aclose()

    run(main)


# -- properties ----------------------------------------------------------------------------------

RESPONSE_FRAGMENTS = [
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 404 Not Found\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: x\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Grip-Hold: stream\r\n",
    b"\r\n",
    b"5\r\nhello\r\n",
    b"ffffffffffffffffff\r\n",
    b"0\r\n\r\n",
    b"hello",
    b"\x00\xff",
    b" ",
    b":",
]


def fuzz_responses() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from(RESPONSE_FRAGMENTS), max_size=12).map(b"".join),
    )


def test_arbitrary_origin_bytes_raise_only_origin_error() -> None:
    current: list[bytes] = [b""]
    with asyncio.Runner() as runner:
        fds_before = open_fds()
        origin = Origin(respond=lambda received: [current[0], CLOSE])
        runner.run(origin.__aenter__())
        client = OriginClient(response_timeout=5)

        async def exchange(raw: bytes) -> None:
            current[0] = raw
            try:
                response = await get(client, origin)
                await response.read_body(10_000)
            except OriginError as exc:
                assert exc.kind in ("protocol", "closed", "too-large")

        @settings(max_examples=examples(150))
        @given(fuzz_responses())
        @example(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        @example(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        @example(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n")
        def check(raw: bytes) -> None:
            runner.run(exchange(raw))

        check()
        runner.run(client.aclose())
        runner.run(origin.__aexit__(None, None, None))
        runner.run(settle())
        assert client.stats == OriginStats(0, 0)
        assert open_fds() == fds_before


TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
RESERVED_NAMES = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect",
                  b"upgrade"}  # fmt: skip
WORD_BYTES = [b for b in range(256) if b not in b"\x00 \t\r\n\x0b\x0c"]


def header_values() -> st.SearchStrategy[bytes]:
    word = st.lists(st.sampled_from(WORD_BYTES), min_size=1, max_size=8).map(bytes)
    return st.lists(word, max_size=4).map(b" ".join)


@given(
    method=st.text(TOKEN, min_size=1, max_size=10).map(str.encode),
    target=st.binary(min_size=1, max_size=40).map(lambda b: bytes(33 + c % 94 for c in b)),
    headers=st.lists(
        st.tuples(
            st.text(TOKEN, min_size=1, max_size=20)
            .map(str.encode)
            .filter(lambda n: n.lower() not in RESERVED_NAMES),
            header_values(),
        ),
        max_size=8,
    ),
    body=st.binary(max_size=2000),
)
@settings(max_examples=examples(60))
def test_request_round_trip(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """Whatever the client is asked to send, the origin parses back exactly."""

    async def main() -> None:
        async with Origin(respond=lambda received: [OK]) as origin:
            client = OriginClient()
            all_headers = [(b"Host", b"h"), *headers]
            response = await client.request(
                "127.0.0.1", origin.port, method, target, all_headers, body
            )
            await response.aclose()
            await client.aclose()
        [received] = origin.requests
        assert (received.method, received.target, received.body) == (method, target, body)
        assert received.headers[: len(all_headers)] == all_headers

    run(main)
