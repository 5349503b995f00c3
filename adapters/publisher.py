"""The blocking Publisher: `http.client` driving the sans-IO `gripcore._publishing` core.

    from gripcore.adapters.publisher import Publisher

    with Publisher("http://localhost:5561") as pub:          # gripcore or Pushpin
        pub.publish_sse("news", "hello", event="greeting")

    Publisher(fastly_service="SERVICE_ID", fastly_key="TOKEN")  # Fastly Fanout

Every call publishes before it returns and raises `PublishFailed` when the service refuses or
cannot be reached once the retries are spent: no background thread, no swallowed error (unlike
pubcontrol). One keep-alive connection is reused between calls; the instance is not thread-safe
(give each thread its own). This module only performs I/O: batching, retry decisions, backoff
and error classification are the core's `PublishPlan`.
"""

from __future__ import annotations

import http.client
import random
import ssl
import time
from collections.abc import Callable, Iterable
from types import TracebackType

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

__all__ = ["PublishFailed", "Publisher"]

Response = tuple[int, list[tuple[str, str]], bytes]


class Publisher(PublishConveniences[int]):
    """Publish items to gripcore, Pushpin or Fastly Fanout, synchronously.

    `url`, `key`, `iss`, `fastly_service`, `fastly_key`: see `gripcore._publishing.
    publish_target`. `timeout` is the socket timeout per request (seconds), `retries` how many
    times a transient failure (connection error, 429, 5xx) is retried with exponential backoff.
    `sleep`, `clock` (epoch seconds, for minted JWTs) and `random` are injectable for tests.
    Raises `LocalProtocolError` for an unusable configuration.
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
        sleep: Callable[[float], None] = time.sleep,
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
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connection (a later publish opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- I/O ---------------------------------------------------------------------------------

    def _connect(self) -> tuple[http.client.HTTPConnection, bool]:
        if self._connection is not None:
            return self._connection, True
        target = self.target
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            context = self._ssl_context or ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                target.host, target.port, timeout=self.timeout, context=context
            )
        else:
            connection = http.client.HTTPConnection(target.host, target.port, timeout=self.timeout)
        self._connection = connection
        return connection, False

    def _exchange(self, request: PublishRequest) -> Response:
        connection, reused = self._connect()
        try:
            connection.request(
                request.method, request.path, body=request.body, headers=dict(request.headers)
            )
            response = connection.getresponse()
            body = response.read(MAX_RESPONSE_BODY)
            if not response.isclosed() or response.will_close:
                self.close()  # an oversized answer or `Connection: close`: start afresh
            return response.status, response.getheaders(), body
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not reused:
                raise
        except BaseException:
            self.close()
            raise
        # The server closed the idle kept-alive connection: one fresh attempt, not a retry.
        return self._exchange(request)

    # -- publishing --------------------------------------------------------------------------

    def publish(self, items: Item | Iterable[Item]) -> int:
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
        while (request := plan.next_request(now=self._clock())) is not None:
            try:
                status, headers, body = self._exchange(request)
            except (OSError, http.client.HTTPException) as exc:
                delay = plan.connection_failed(f"{type(exc).__name__}: {exc}")
            else:
                delay = plan.response_received(status, headers, body)
            if delay > 0:
                self._sleep(delay)
        return plan.published
