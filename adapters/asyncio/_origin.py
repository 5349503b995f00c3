"""The asyncio HTTP/1.1 client toward origin servers, with a keep-alive connection pool.

Strategy: h11 does all of HTTP (framing, chunked coding, keep-alive rules); this module only
moves bytes. Each connection is an `asyncio.Protocol` holding one client-side `h11.Connection`.
Received data is queued as whole socket reads (no per-byte work in Python) and fed to h11 when
the reader asks for the next event; reading from the socket pauses while more than
`MAX_BUFFERED_BYTES` wait unread, so a slow consumer of a large body applies back-pressure to the
origin instead of growing memory.

Pooling. Connections are pooled per (host, port, ssl, insecure, server_hostname). A connection
goes back to the pool only when its response was read to the end and h11 says both sides allow
another cycle (`our_state` and `their_state` are both `DONE`: no `Connection: close` on either
side, not an HTTP/1.0 or close-delimited response) and the origin sent nothing beyond the
response. The most recently used connection is reused first, each pool keeps at most
`max_idle_per_host` connections, and a pooled connection is closed after `idle_timeout` seconds
unused, or at once if the origin closes it or sends anything while it is idle.

A reused connection can still have been closed by the origin just as the request went out (the
origin's keep-alive timer fired). When such a connection ends before a single response byte
arrived, the request is sent once more on a fresh connection. Only that case is retried: a
fresh connection that closes, or any connection that closed after sending part of a response,
is an error.

Errors. Every failure toward the origin is an `OriginError` with a `kind` the proxy maps to a
client answer (all become `502` in Pushpin, reference section 1.7): `connect` (refused,
unresolvable, TLS handshake failed), `timeout` (connect or response head too slow), `protocol`
(the origin sent something that is not HTTP), `closed` (the origin closed before the response
was complete), `too-large` (response head or a body read with a limit too big). A request the
caller built wrongly (bad header bytes, Content-Length not matching the body) raises the core's
`LocalProtocolError` before anything is sent. Whatever fails, the connection involved is closed:
nothing is pooled in an unknown state and no transport is left open.

The caller must read each response body to its end (`read_body` or `async for`) or call
`OriginResponse.aclose()`; until then the connection stays reserved for that response.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import cast

import h11

from gripcore._errors import LocalProtocolError
from gripcore._originhttp import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_IDLE_PER_HOST,
    DEFAULT_RESPONSE_TIMEOUT,
    MAX_RESPONSE_HEAD_SIZE,
    NEED_DATA,
    OriginError,
    OriginErrorKind,
    OriginHttp,
    OriginStats,
    PoolKey,
    StaleConnectionError,
    content_length,
    describe_os_error,
    origin_label,
    prepare_request,
    too_large,
)

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_IDLE_PER_HOST",
    "DEFAULT_RESPONSE_TIMEOUT",
    "MAX_BUFFERED_BYTES",
    "MAX_RESPONSE_HEAD_SIZE",
    "OriginClient",
    "OriginError",
    "OriginErrorKind",
    "OriginResponse",
    "OriginStats",
]

# One full socket read (asyncio reads up to 256 KiB at a time); beyond this the origin waits in
# the kernel's buffers until the consumer catches up.
MAX_BUFFERED_BYTES = 256 * 1024


class _OriginConnection(asyncio.Protocol):
    """One connection to an origin: its transport, its h11 state machine and unread data."""

    def __init__(
        self,
        key: PoolKey,
        on_close: Callable[[_OriginConnection], None],
    ) -> None:
        self.key = key
        self.origin = origin_label(key.host, key.port)
        self.http = OriginHttp(self.origin)
        self.pooled = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._lost = False
        self._on_close = on_close
        self._transport: asyncio.Transport | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.pooled:
            # Nothing may arrive between responses (a late 408, garbage): never reuse this one.
            self.close()
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > MAX_BUFFERED_BYTES and not self._reading_paused:
            self._reading_paused = True
            self._transport_or_fail().pause_reading()
        self._wake()

    def eof_received(self) -> None:
        self._eof = True
        self._wake()
        if self.pooled:
            self.close()
        # Returning None lets asyncio close the transport: a response never continues after EOF.

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake()
        self.close()

    # -- used by the client and the response ---------------------------------------------------

    def _transport_or_fail(self) -> asyncio.Transport:
        assert self._transport is not None, "used before connection_made"
        return self._transport

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Close at once (nothing we still want to send), and leave the pool."""
        if self.closed:
            return
        self.closed = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if not self._lost:
            self._transport_or_fail().abort()
        self._on_close(self)

    def can_pool(self) -> bool:
        """Whether the exchange ended cleanly with keep-alive on both sides and nothing extra."""
        return not self.closed and self.http.can_pool(unread=self._eof or bool(self._chunks))

    def enter_pool(self, idle_timeout: float) -> None:
        self.http.start_next_cycle()
        self.pooled = True
        self.idle_timer = asyncio.get_running_loop().call_later(idle_timeout, self.close)

    def leave_pool(self) -> None:
        assert self.idle_timer is not None
        self.idle_timer.cancel()
        self.idle_timer = None
        self.pooled = False

    def send_request(self, request: h11.Request, body: bytes) -> None:
        self._transport_or_fail().write(self.http.send_request(request, body))

    async def _receive(self) -> bytes:
        """Everything received and not yet read, waiting for some; `b""` once the origin closed."""
        while not self._chunks and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self._transport_or_fail().resume_reading()
        return data

    def next_event_nowait(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """h11's next event from data already fed, with its errors turned into `OriginError`."""
        return self.http.next_event()

    async def read_response_head(self) -> h11.Response:
        """Read up to the final (non-1xx) response head.

        Raises `StaleConnectionError` if the origin closed before sending any byte, and
        `OriginError` for anything else that goes wrong.
        """
        while (head := self.http.read_head()) is None:
            self.http.receive_data(await self._receive())
        return head

    async def read_body_chunk(self) -> bytes | None:
        """The next piece of the response body, or None at its end."""
        while (chunk := self.http.next_chunk()) is NEED_DATA:
            self.http.receive_data(await self._receive())
        assert not isinstance(chunk, type)
        return chunk


@dataclass(eq=False, slots=True)
class OriginResponse:
    """A response head from an origin, with its body still to be read.

    Read the body with `read_body()` or `async for chunk in response`, to the end, or discard it
    with `aclose()` (also `async with response:`); only a body read to its end lets the
    connection be reused. Header names keep the origin's spelling: compare them
    case-insensitively.
    """

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    http_version: bytes
    _connection: _OriginConnection | None = field(default=None, init=False, repr=False)
    _release: Callable[[_OriginConnection], None] | None = field(
        default=None, init=False, repr=False
    )
    _origin: str = field(default="origin", init=False, repr=False)
    _pending: bytes | None = field(default=None, init=False, repr=False)
    _discarded: bool = field(default=False, init=False, repr=False)

    async def read_body(self, limit: int | None) -> bytes:
        """The rest of the body, whole.

        Raises `OriginError("too-large")` if it is longer than `limit` bytes (the connection is
        then discarded), `OriginError("closed")` if the origin closes before the end or the body
        was discarded, `OriginError("protocol")` for a malformed body (bad chunked coding).
        """
        if limit is not None and self._connection is not None:
            declared = content_length(self.headers)
            if declared is not None and declared > limit:
                self._discard()
                raise too_large(self._origin, limit)
        parts: list[bytes] = []
        size = 0
        while (chunk := await self._next_chunk()) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                self._discard()
                raise too_large(self._origin, limit)
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterate over the body's pieces as they arrive (errors as for `read_body`)."""
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Discard what is left of the body; the connection is closed unless already done."""
        self._pending = None
        if self._connection is not None:
            self._discard()

    async def __aenter__(self) -> OriginResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _attach(
        self, connection: _OriginConnection, release: Callable[[_OriginConnection], None]
    ) -> None:
        self._connection = connection
        self._release = release
        self._origin = connection.origin
        # A body that is already here (or empty: HEAD, 204, 304, Content-Length: 0) is taken now,
        # so that a response without a body gives its connection back without being read.
        event = connection.next_event_nowait()
        if isinstance(event, h11.Data):
            self._pending = bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            self._finish(connection)

    def _finish(self, connection: _OriginConnection) -> None:
        self._connection = None
        assert self._release is not None
        self._release(connection)

    def _discard(self) -> None:
        connection = self._connection
        self._connection = None
        self._pending = None
        self._discarded = True
        if connection is not None:
            connection.close()

    async def _next_chunk(self) -> bytes | None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            return pending
        connection = self._connection
        if connection is None:
            if self._discarded:
                raise OriginError("closed", "the response body was discarded")
            return None
        try:
            chunk = await connection.read_body_chunk()
        except BaseException:
            self._discard()
            raise
        if chunk is None:
            self._finish(connection)
        return chunk


class OriginClient:
    """Sends requests to origins over pooled HTTP/1.1 connections (plain TCP or TLS).

    `connect_timeout` bounds connecting (TCP and TLS handshake); `response_timeout` bounds the
    time from sending the request to receiving the response head. Reading the body has no timeout
    of its own: wrap it in `asyncio.timeout()` where needed (cancelling discards the connection).
    `ssl_context` verifies TLS origins (default: `ssl.create_default_context()`, the system's CA
    store); requests with `insecure=True` skip verification.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        max_idle_per_host: int = DEFAULT_MAX_IDLE_PER_HOST,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        ssl_context: ssl_module.SSLContext | None = None,
    ) -> None:
        if max_idle_per_host < 0:
            raise LocalProtocolError(f"max_idle_per_host must be >= 0, not {max_idle_per_host}")
        self._connect_timeout = connect_timeout
        self._response_timeout = response_timeout
        self._max_idle_per_host = max_idle_per_host
        self._idle_timeout = idle_timeout
        self._ssl_context = ssl_context
        self._insecure_context: ssl_module.SSLContext | None = None
        self._idle: dict[PoolKey, deque[_OriginConnection]] = {}
        self._open: set[_OriginConnection] = set()
        self._closed = False

    @property
    def stats(self) -> OriginStats:
        """How many connections are open, and how many of them wait idle in the pool."""
        idle = sum(len(pool) for pool in self._idle.values())
        return OriginStats(open_connections=len(self._open), idle_connections=idle)

    async def request(
        self,
        host: str,
        port: int,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        ssl: bool = False,
        insecure: bool = False,
        server_hostname: str | None = None,
    ) -> OriginResponse:
        """Send one request and return the response once its head has arrived.

        `headers` are sent as given, in order; `Host` (from `host` and `port`) is added when
        absent, and `Content-Length` when there is neither it nor `Transfer-Encoding` and there
        is a body (or the method is POST, PUT or PATCH). `server_hostname` is the TLS server name
        (SNI and certificate check) when it differs from `host`.

        Raises `LocalProtocolError` for a request that cannot be sent as given (or a closed
        client), and `OriginError` (kind `connect`, `timeout`, `protocol`, `closed` or
        `too-large`) when the origin cannot be reached or does not answer with an HTTP response.
        """
        if self._closed:
            raise LocalProtocolError("request on a closed OriginClient")
        request, key = prepare_request(
            host,
            port,
            method,
            target,
            headers,
            body,
            ssl=ssl,
            insecure=insecure,
            server_hostname=server_hostname,
        )
        connection = self._checkout(key)
        if connection is not None:
            try:
                return await self._exchange(connection, request, body)
            except StaleConnectionError:
                pass  # the origin dropped this idle connection as we reused it: once more, fresh
        connection = await self._connect(key)
        try:
            return await self._exchange(connection, request, body)
        except StaleConnectionError:
            raise OriginError(
                "closed", f"{connection.origin} closed the connection without a response"
            ) from None

    async def aclose(self) -> None:
        """Close every connection, pooled or serving a response; later requests are refused."""
        self._closed = True
        for connection in list(self._open):
            connection.close()
        # Let the transports run their connection_lost callbacks, which release the sockets.
        await asyncio.sleep(0)

    # -- internals -------------------------------------------------------------------------------

    def _context_for(self, key: PoolKey) -> ssl_module.SSLContext:
        if key.insecure:
            if self._insecure_context is None:
                context = ssl_module.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl_module.CERT_NONE
                self._insecure_context = context
            return self._insecure_context
        if self._ssl_context is None:
            self._ssl_context = ssl_module.create_default_context()
        return self._ssl_context

    async def _connect(self, key: PoolKey) -> _OriginConnection:
        loop = asyncio.get_running_loop()
        origin = origin_label(key.host, key.port)
        try:
            async with asyncio.timeout(self._connect_timeout):
                if key.ssl:
                    _, connection = await loop.create_connection(
                        lambda: _OriginConnection(key, self._forget),
                        key.host,
                        key.port,
                        ssl=self._context_for(key),
                        server_hostname=key.server_hostname,
                    )
                else:
                    _, connection = await loop.create_connection(
                        lambda: _OriginConnection(key, self._forget), key.host, key.port
                    )
        except TimeoutError as exc:
            raise OriginError(
                "timeout", f"connect to {origin} timed out after {self._connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise OriginError(
                "connect", f"connect to {origin} failed: {describe_os_error(exc)}"
            ) from exc
        self._open.add(connection)
        return connection

    async def _exchange(
        self, connection: _OriginConnection, request: h11.Request, body: bytes
    ) -> OriginResponse:
        try:
            async with asyncio.timeout(self._response_timeout):
                connection.send_request(request, body)
                head = await connection.read_response_head()
            response = OriginResponse(
                status=head.status_code,
                reason=bytes(head.reason),
                headers=list(head.headers.raw_items()),
                http_version=bytes(head.http_version),
            )
            response._attach(connection, self._release)
        except TimeoutError as exc:
            connection.close()
            raise OriginError(
                "timeout",
                f"no response from {connection.origin} within {self._response_timeout:g} s",
            ) from exc
        except BaseException:
            connection.close()
            raise
        return response

    def _checkout(self, key: PoolKey) -> _OriginConnection | None:
        # Every pooled connection is open and silent: one that the origin closes or writes to
        # leaves the pool at once (see _OriginConnection), so the most recent one is taken as is.
        pool = self._idle.get(key)
        if pool is None:
            return None
        connection = pool.pop()
        if not pool:
            del self._idle[key]
        connection.leave_pool()
        return connection

    def _release(self, connection: _OriginConnection) -> None:
        """Called when a response was read to its end: pool the connection or close it."""
        pool = self._idle.get(connection.key)
        idle_count = len(pool) if pool is not None else 0
        if self._closed or not connection.can_pool() or idle_count >= self._max_idle_per_host:
            connection.close()
            return
        if pool is None:
            pool = self._idle[connection.key] = deque()
        connection.enter_pool(self._idle_timeout)
        pool.append(connection)

    def _forget(self, connection: _OriginConnection) -> None:
        """Called once by each connection as it closes (its idle timer already cancelled)."""
        self._open.discard(connection)
        if connection.pooled:
            connection.pooled = False
            pool = self._idle[connection.key]
            pool.remove(connection)
            if not pool:
                del self._idle[connection.key]
