"""The asyncio Publisher: asyncio streams and h11 driving the sans-IO `gripcore._publishing` core.

    from gripcore.adapters.asyncio.publisher import AsyncPublisher

    async with AsyncPublisher("http://localhost:5561") as pub:
        await pub.publish_sse("news", "hello", event="greeting")

The same API as the blocking `gripcore.adapters.publisher.Publisher`, with coroutines. Each call
publishes before it returns and raises `PublishFailed` on a final failure. One keep-alive
connection is reused; concurrent calls on one instance are serialised by a lock. This module
only performs I/O: batching, retries, backoff and error classification are `PublishPlan`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any

import h11

from gripcore._items import Item
from gripcore._publishing import (
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BODY,
    PublishConveniences,
    PublishFailed,
    PublishPlan,
    PublishRequest,
    PublishTarget,
    RetryPolicy,
    publish_target,
)

__all__ = ["AsyncPublisher", "PublishFailed"]

Response = tuple[int, list[tuple[bytes, bytes]], bytes]

# Bytes asked of the socket per read.
_READ_SIZE = 65_536


class _Disconnected(ConnectionError):
    """The server closed a kept-alive connection before answering."""


class AsyncPublisher(PublishConveniences[Coroutine[Any, Any, int]]):
    """Publish items to gripcore, Pushpin or Fastly Fanout from asyncio code.

    Arguments as for the blocking `Publisher`; `sleep` defaults to `asyncio.sleep`. Raises
    `LocalProtocolError` for an unusable configuration.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        key: str | bytes | None = None,
        iss: str | None = None,
        fastly_service: str | None = None,
        fastly_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        policy: RetryPolicy | None = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.target: PublishTarget = publish_target(
            url, key=key, iss=iss, fastly_service=fastly_service, fastly_key=fastly_key
        )
        self.policy = policy if policy is not None else RetryPolicy(retries=retries)
        self.timeout = timeout
        self._max_batch_items = max_batch_items
        self._max_batch_bytes = max_batch_bytes
        self._ssl_context = ssl_context
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._lock = asyncio.Lock()
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._h11: h11.Connection | None = None

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the kept-alive connection (a later publish opens a new one)."""
        stream, self._stream, self._h11 = self._stream, None, None
        if stream is not None:
            stream[1].close()
            with contextlib.suppress(OSError):  # a peer reset: closed either way
                await stream[1].wait_closed()

    # -- I/O ---------------------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        if self._stream is not None:
            return self._stream[0], self._stream[1], True
        target = self.target
        context = None
        if target.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
        reader, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
        self._stream = (reader, writer)
        self._h11 = h11.Connection(h11.CLIENT)
        return reader, writer, False

    async def _round_trip(self, request: PublishRequest) -> tuple[Response, bool]:
        reader, writer, reused = await self._connect()
        conn = self._h11
        assert conn is not None
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers]
        status = 0
        try:
            writer.write(
                conn.send(h11.Request(method=request.method, target=request.path, headers=headers))
            )
            writer.write(conn.send(h11.Data(data=request.body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        except OSError as exc:
            if reused:
                raise _Disconnected(str(exc)) from exc
            raise
        response_headers: list[tuple[bytes, bytes]] = []
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await reader.read(_READ_SIZE)
                except OSError as exc:
                    if reused and status == 0:
                        raise _Disconnected(str(exc)) from exc
                    raise
                if not data and status == 0 and reused:
                    raise _Disconnected("the server closed the kept-alive connection")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status, response_headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                room = MAX_RESPONSE_BODY - len(body)
                body += event.data[:room]
                if len(event.data) > room:
                    return (status, response_headers, bytes(body)), False
            elif isinstance(event, h11.EndOfMessage):
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                if reusable:
                    conn.start_next_cycle()
                return (status, response_headers, bytes(body)), reusable
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection mid-response")
            # h11.InformationalResponse (100 Continue) needs nothing.

    async def _exchange(self, request: PublishRequest) -> Response:
        try:
            async with asyncio.timeout(self.timeout):
                response, reusable = await self._round_trip(request)
        except _Disconnected:
            await self.aclose()
            # The server closed the idle kept-alive connection: one fresh attempt, not a retry.
            return await self._exchange(request)
        except BaseException:
            await self.aclose()
            raise
        if not reusable:
            await self.aclose()
        return response

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, items: Item | Iterable[Item]) -> int:
        """Publish `items` (in batches); returns how many were published. Raises
        `PublishFailed` (its `published` says how many earlier batches got through) or
        `LocalProtocolError` for something that is not an item."""
        plan = PublishPlan(
            self.target,
            [items] if isinstance(items, Item) else items,
            policy=self.policy,
            max_batch_items=self._max_batch_items,
            max_batch_bytes=self._max_batch_bytes,
            random=self._random,
        )
        async with self._lock:
            while (request := plan.next_request(now=self._clock())) is not None:
                try:
                    status, headers, body = await self._exchange(request)
                except (OSError, TimeoutError, h11.ProtocolError) as exc:
                    delay = plan.connection_failed(f"{type(exc).__name__}: {exc}")
                else:
                    delay = plan.response_received(status, headers, body)
                if delay > 0:
                    await self._sleep(delay)
        return plan.published
