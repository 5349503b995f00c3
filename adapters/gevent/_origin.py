"""The gevent HTTP/1.1 client toward origin servers, with a keep-alive connection pool.

The same client as adapters/asyncio/_origin.py, on cooperative gevent sockets: the HTTP rules
(request building, reading a head and a body, which failure is which `OriginError`, when a
connection may be reused) are the core's `gripcore._originhttp`; this module connects, sends,
receives and pools. Calls block the calling greenlet only.

Pooling: per (host, port, ssl, insecure, server_hostname), most recent first, at most
`max_idle_per_host` idle connections, each closed after `idle_timeout` unused. A pooled
connection that became readable while idle (the origin closed it, or sent something) is not
reused. A reused connection that ends before a single response byte is retried once on a fresh
connection, as in the asyncio client.
"""

from __future__ import annotations

import select
import socket as stdlib_socket
import time
from collections import deque

import gevent
import gevent.socket
import gevent.ssl
import h11

from gripcore._errors import LocalProtocolError
from gripcore._originhttp import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_IDLE_PER_HOST,
    DEFAULT_RESPONSE_TIMEOUT,
    NEED_DATA,
    OriginError,
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

__all__ = ["OriginClient", "OriginResponse", "OriginStats"]

_READ_SIZE = 256 * 1024


class _Connection:
    def __init__(self, key: PoolKey, sock: gevent.socket.socket) -> None:
        self.key = key
        self.sock = sock
        self.origin = origin_label(key.host, key.port)
        self.http = OriginHttp(self.origin)
        self.idle_since = 0.0
        self.closed = False
        self.eof = False

    def receive(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except ConnectionResetError:
            data = b""  # as a close: before any byte it means a stale pooled connection
        except OSError as exc:
            raise OriginError("closed", f"{self.origin}: {exc}") from exc
        if not data:
            self.eof = True
        self.http.receive_data(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()

    def idle_and_quiet(self) -> bool:
        """A pooled connection on which nothing arrived (no EOF, no stray bytes)."""
        try:
            readable, _, _ = select.select([self.sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


class OriginResponse:
    """A response head with its body still to be read (`read_body`, `next_chunk`, `close`)."""

    def __init__(self, head: h11.Response, connection: _Connection, client: OriginClient) -> None:
        self.status = head.status_code
        self.reason = bytes(head.reason)
        self.headers: list[tuple[bytes, bytes]] = list(head.headers.raw_items())
        self._connection: _Connection | None = connection
        self._client = client
        self._origin = connection.origin
        self._discarded = False

    def next_chunk(self) -> bytes | None:
        connection = self._connection
        if connection is None:
            if self._discarded:
                raise OriginError("closed", "the response body was discarded")
            return None
        try:
            while (chunk := connection.http.next_chunk()) is NEED_DATA:
                connection.receive()
        except BaseException:
            self.close()
            raise
        if chunk is None:
            self._connection = None
            self._client._release(connection)
            return None
        assert isinstance(chunk, bytes)
        return chunk

    def read_body(self, limit: int | None) -> bytes:
        if limit is not None and self._connection is not None:
            declared = content_length(self.headers)
            if declared is not None and declared > limit:
                self.close()
                raise too_large(self._origin, limit)
        parts: list[bytes] = []
        size = 0
        while (chunk := self.next_chunk()) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                self.close()
                raise too_large(self._origin, limit)
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        connection = self._connection
        self._connection = None
        self._discarded = True
        if connection is not None:
            self._client._forget(connection)


class OriginClient:
    def __init__(
        self,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        response_timeout: float = DEFAULT_RESPONSE_TIMEOUT,
        max_idle_per_host: int = DEFAULT_MAX_IDLE_PER_HOST,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._response_timeout = response_timeout
        self._max_idle_per_host = max_idle_per_host
        self._idle_timeout = idle_timeout
        self._idle: dict[PoolKey, deque[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    @property
    def stats(self) -> OriginStats:
        idle = sum(len(pool) for pool in self._idle.values())
        return OriginStats(open_connections=len(self._open), idle_connections=idle)

    def request(
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
        """Send one request; return once the response head arrived (see the asyncio client)."""
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
                return self._exchange(connection, request, body)
            except StaleConnectionError:
                pass  # the origin dropped this idle connection as we reused it: once more
        connection = self._connect(key)
        try:
            return self._exchange(connection, request, body)
        except StaleConnectionError:
            raise OriginError(
                "closed", f"{connection.origin} closed the connection without a response"
            ) from None

    def close(self) -> None:
        self._closed = True
        for connection in list(self._open):
            self._forget(connection)

    def _connect(self, key: PoolKey) -> _Connection:
        origin = origin_label(key.host, key.port)
        try:
            sock = gevent.socket.create_connection(
                (key.host, key.port), timeout=self._connect_timeout
            )
            if key.ssl:
                context = gevent.ssl.create_default_context()
                if key.insecure:
                    context.check_hostname = False
                    context.verify_mode = gevent.ssl.CERT_NONE
                sock = context.wrap_socket(sock, server_hostname=key.server_hostname or key.host)
            sock.settimeout(None)
        except TimeoutError as exc:
            raise OriginError(
                "timeout", f"connect to {origin} timed out after {self._connect_timeout:g} s"
            ) from exc
        except OSError as exc:
            raise OriginError(
                "connect", f"connect to {origin} failed: {describe_os_error(exc)}"
            ) from exc
        sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, 1)
        connection = _Connection(key, sock)
        self._open.add(connection)
        return connection

    def _exchange(
        self, connection: _Connection, request: h11.Request, body: bytes
    ) -> OriginResponse:
        timer = gevent.Timeout(self._response_timeout)
        timer.start()
        try:
            connection.sock.sendall(connection.http.send_request(request, body))
            while (head := connection.http.read_head()) is None:
                connection.receive()
            return OriginResponse(head, connection, self)
        except gevent.Timeout as exc:
            self._forget(connection)
            if exc is not timer:
                raise
            raise OriginError(
                "timeout",
                f"no response from {connection.origin} within {self._response_timeout:g} s",
            ) from None
        except OSError as exc:
            self._forget(connection)
            raise OriginError("closed", f"{connection.origin}: {exc}") from exc
        except BaseException:
            self._forget(connection)
            raise
        finally:
            timer.close()

    def _checkout(self, key: PoolKey) -> _Connection | None:
        pool = self._idle.get(key)
        now = time.monotonic()
        while pool:
            connection = pool.pop()
            if now - connection.idle_since < self._idle_timeout and connection.idle_and_quiet():
                if not pool:
                    del self._idle[key]
                return connection
            self._close(connection)
        self._idle.pop(key, None)
        return None

    def _release(self, connection: _Connection) -> None:
        """A response was read to its end: pool the connection or close it."""
        pool = self._idle.get(connection.key)
        idle_count = len(pool) if pool is not None else 0
        if (
            self._closed
            or not connection.http.can_pool(unread=connection.eof)
            or idle_count >= self._max_idle_per_host
        ):
            self._forget(connection)
            return
        connection.http.start_next_cycle()
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, deque()).append(connection)

    def _close(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    def _forget(self, connection: _Connection) -> None:
        self._close(connection)
        pool = self._idle.get(connection.key)
        if pool is not None and connection in pool:
            pool.remove(connection)
            if not pool:
                del self._idle[connection.key]
