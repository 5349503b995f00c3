"""The Redis engine's asyncio driver: the network part of `gripcore._engine.RedisEngine`.

The core decides what to subscribe, publish and read; this module does it with redis-py's
asyncio client (imported only when `--engine redis://...` is used):

* a **command client** (connection pool) for publishes (one pipeline of `PUBLISH_SCRIPT` runs per
  publish request, sent in arrival order under one lock so a node's publishes reach Redis in the
  order they were accepted) and history reads (XREVRANGE);
* one **pub/sub connection**, a bare redis-py `Connection` driven here (not redis-py's `PubSub`,
  whose own reconnect-and-resubscribe would fight the engine's): SUBSCRIBE/UNSUBSCRIBE go out in
  order from one writer task; one reader task feeds every push to the engine.

When the pub/sub connection breaks the driver tells the engine (`link_down`), logs it, and
reconnects with exponential backoff (0.1 s doubling to 5 s); once connected it tells the engine
(`link_up`), which resubscribes every channel with local subscribers, and logs how long the gap
lasted. A PING every HEALTH_INTERVAL notices a Redis that hangs without closing the
connection. Held client connections are not touched meanwhile. A publish that Redis cannot take
raises `EngineUnavailable`, which the publish API turns into a 503.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from gripcore._engine import (
    BACKOFF_MIN,
    CONNECT_TIMEOUT,
    HEALTH_INTERVAL,
    PUBLISH_SCRIPT,
    Command,
    EngineUnavailable,
    ReadHistory,
    RedisEngine,
    Subscribe,
    Unsubscribe,
    client_options,
    link_back_message,
    link_lost_message,
    link_silent,
    next_backoff,
    pubsub_options,
)
from gripcore._hub import PublishResult
from gripcore._items import Item

__all__ = ["EngineUnavailable", "RedisDriver"]

log = logging.getLogger("gripcore")


class RedisDriver:
    """Runs a `RedisEngine`'s commands on Redis. `wake` receives the subscribers that deliveries
    woke; `arm_timer` re-arms the server's engine timer after the engine's deadlines moved."""

    def __init__(
        self,
        engine: RedisEngine,
        *,
        wake: Callable[[Sequence[Any]], None],
        arm_timer: Callable[[], None],
    ) -> None:
        self.engine = engine
        self._wake = wake
        self._arm_timer = arm_timer
        self._client: Any = None
        self._script: Any = None
        self._conn: Any = None  # the pub/sub connection while it is up
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: list[tuple[str, tuple[str, ...]]] = []
        self._outbox_ready = asyncio.Event()
        self._reads: set[asyncio.Task[None]] = set()
        self._publish_lock = asyncio.Lock()
        self._kicked = False
        self._up = asyncio.Event()
        self._health: asyncio.Task[None] | None = None
        self._last_rx = 0.0  # when the pub/sub connection last received anything
        self.health_interval = HEALTH_INTERVAL
        engine.on_commands = self._kick

    # --- lifecycle ---

    async def start(self) -> None:
        """Connect both ways. Raises `EngineUnavailable` when redis-py is missing or Redis does
        not answer."""
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise EngineUnavailable(
                "the Redis engine needs redis-py: pip install 'gripcore[redis]'"
            ) from None
        self._errors = (RedisError, OSError)
        target = self.engine.target
        self._client = aioredis.Redis(**client_options(target), retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(PUBLISH_SCRIPT)
        try:
            await self._client.ping()
            conn = await self._connect_pubsub()
        except self._errors as exc:
            await self._client.aclose()
            raise EngineUnavailable(f"cannot reach Redis at {target.display}: {exc}") from None
        self._writer = asyncio.ensure_future(self._write_loop())
        self._reader = asyncio.ensure_future(self._read_loop(conn))
        self._health = asyncio.ensure_future(self._health_loop())
        try:
            await asyncio.wait_for(self._up.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            await self.close()
            raise EngineUnavailable(f"Redis at {target.display} went away at start") from None

    async def close(self) -> None:
        tasks = [
            t for t in (self._reader, self._writer, self._health, *self._reads) if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None
        if self._client is not None:
            await self._client.aclose()

    async def _connect_pubsub(self) -> Any:
        from redis.asyncio.connection import Connection, SSLConnection

        target = self.engine.target
        cls = SSLConnection if target.tls else Connection
        conn: Any = cls(**pubsub_options(target))
        await conn.connect()
        return conn

    # --- publishing ---

    async def publish(self, items: Sequence[Item]) -> None:
        """Publish through Redis. Raises `EngineUnavailable` when Redis cannot take them."""
        engine = self.engine
        calls = engine.publish_calls(items)
        async with self._publish_lock:
            try:
                pipe = self._client.pipeline(transaction=False)
                for call in calls:
                    await self._script(keys=list(call.keys), args=list(call.args), client=pipe)
                replies = await pipe.execute()
            except self._errors as exc:
                engine.publish_failed(len(calls))
                log.warning(
                    "publish of %d items refused (503): Redis at %s: %s",
                    len(calls),
                    engine.target.display,
                    exc,
                )
                raise EngineUnavailable(f"Redis at {engine.target.display}: {exc}") from None
        engine.published(replies)

    # --- the engine's commands ---

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        self._kicked = False
        loop = asyncio.get_running_loop()
        for command in self.engine.take_commands(loop.time()):
            self._run(command)
        self._arm_timer()

    def _run(self, command: Command) -> None:
        if isinstance(command, ReadHistory):
            task = asyncio.ensure_future(self._read_history(command))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        elif self._conn is not None:  # while down, link_up will subscribe everything afresh
            verb = "SUBSCRIBE" if isinstance(command, Subscribe) else "UNSUBSCRIBE"
            assert isinstance(command, Subscribe | Unsubscribe)
            self._outbox.append((verb, command.channels))
            self._outbox_ready.set()

    async def _write_loop(self) -> None:
        """Send (UN)SUBSCRIBEs in order on the pub/sub connection; a failure is the reader's to
        notice (it reconnects, and the engine resubscribes everything)."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            for verb, channels in batch:
                conn = self._conn
                if conn is None:
                    break
                try:
                    await conn.send_command(verb, *channels)
                except self._errors as exc:
                    log.debug("%s not sent: %s", verb, exc)
                    break

    async def _read_history(self, command: ReadHistory) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        try:
            reply = await self._client.xrevrange(command.key, "+", "-", count=command.count)
        except self._errors as exc:
            log.warning("history read failed, resuming without it: %s", exc)
            result = engine.history_failed(command.token)
        else:
            result = engine.history_read(command.token, reply, loop.time())
        self._deliver(result)

    def _deliver(self, result: PublishResult) -> None:
        if result.woken:
            self._wake(result.woken)
        self._arm_timer()

    # --- the pub/sub connection ---

    async def _read_loop(self, conn: Any) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        delay = BACKOFF_MIN
        target = engine.target.display
        while True:
            if conn is None:
                await asyncio.sleep(delay)
                delay = next_backoff(delay)
                try:
                    conn = await self._connect_pubsub()
                except self._errors as exc:
                    log.debug("Redis at %s still unreachable: %s", target, exc)
                    continue
            delay = BACKOFF_MIN
            self._conn = conn
            self._last_rx = loop.time()
            self._outbox.clear()
            gap = engine.link_up(loop.time())
            if gap is not None:
                log.warning(link_back_message(engine.target, gap))
            self._up.set()
            try:
                while True:
                    push = await conn.read_response()
                    self._last_rx = now = loop.time()
                    self._on_push(push, now)
            except self._errors as exc:
                self._conn = None
                engine.link_down(loop.time())
                log.error(link_lost_message(engine.target, str(exc) or type(exc).__name__))
                await conn.disconnect()
                conn = None

    async def _health_loop(self) -> None:
        """PING the pub/sub connection; drop it when Redis stopped answering (see
        HEALTH_INTERVAL), so the reader reconnects."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.health_interval)
            conn = self._conn
            if conn is None:
                continue
            if link_silent(self._last_rx, loop.time(), self.health_interval):
                log.warning("Redis at %s stopped answering", self.engine.target.display)
                await conn.disconnect()  # the reader's pending read fails: reconnect
                continue
            self._outbox.append(("PING", ()))
            self._outbox_ready.set()

    def _on_push(self, push: Any, now: float) -> None:
        result = self.engine.handle_push(push, now)
        if result is not None:
            self._deliver(result)
