"""The Redis engine's gevent driver: the network part of `gripcore._engine.RedisEngine`.

The same driver as adapters/asyncio/_redis.py (read its header: one command client for
publishes and history reads, one bare pub/sub connection, reconnect with backoff, resubscribe,
health PINGs, 503 for publishes Redis cannot take), on gevent. redis-py's client is blocking
and gripcore does not monkey-patch, so its calls run in the hub's thread pool: a greenlet that
publishes waits for its pool thread without blocking the hub. The pub/sub connection is read by
one pool thread, which hands every reply to the hub (`run_callback_threadsafe`), where the
engine is driven; everything that touches the engine runs in the hub's thread. The policy
(backoff, timeouts, health) and the reading of replies are the core's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool

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
    """Runs a `RedisEngine`'s commands on Redis from a gevent hub (see the module header)."""

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
        self._hub = gevent.get_hub()
        self._client: Any = None
        self._script: Any = None
        self._conn: Any = None  # the pub/sub connection while it is up (hub's view)
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._outbox: list[tuple[str, tuple[str, ...]]] = []
        self._outbox_ready = gevent.event.Event()
        self._publish_lock = gevent.lock.Semaphore()
        self._kicked = False
        self._up = gevent.event.Event()
        self._stopping = threading.Event()
        self._greenlets = gevent.pool.Group()
        self._last_rx = 0.0
        self.health_interval = HEALTH_INTERVAL
        engine.on_commands = self._kick

    def _blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking redis-py call in the hub's thread pool; this greenlet waits. Errors
        come back as values (the pool would print them as unhandled) and are raised here."""

        def call() -> tuple[bool, Any]:
            try:
                return False, fn(*args, **kwargs)
            except Exception as exc:
                return True, exc

        failed, value = self._hub.threadpool.apply(call)
        if failed:
            raise value
        return value

    # --- lifecycle ---

    def start(self) -> None:
        """Connect both ways. Raises `EngineUnavailable` when redis-py is missing or Redis does
        not answer."""
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
            from redis.retry import Retry
        except ImportError:
            raise EngineUnavailable(
                "the Redis engine needs redis-py: pip install 'gripcore[redis]'"
            ) from None
        # ValueError: redis-py's reader when the connection is closed under it (health check)
        self._errors = (RedisError, OSError, ValueError)
        target = self.engine.target
        self._client = redis.Redis(**client_options(target), retry=Retry(NoBackoff(), 0))
        self._script = self._client.register_script(PUBLISH_SCRIPT)
        try:
            self._blocking(self._client.ping)
            conn = self._blocking(self._connect_pubsub)
        except self._errors as exc:
            self._client.close()
            raise EngineUnavailable(f"cannot reach Redis at {target.display}: {exc}") from None
        self._hub.threadpool.spawn(self._read_loop, conn)
        self._greenlets.spawn(self._write_loop)
        self._greenlets.spawn(self._health_loop)
        if not self._up.wait(CONNECT_TIMEOUT):
            self.close()
            raise EngineUnavailable(f"Redis at {target.display} went away at start")

    def close(self) -> None:
        self._stopping.set()
        self._greenlets.kill()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()  # the reader thread's pending read fails, and it ends
        if self._client is not None:
            self._client.close()

    def _connect_pubsub(self) -> Any:
        from redis.connection import Connection, SSLConnection

        target = self.engine.target
        cls = SSLConnection if target.tls else Connection
        conn: Any = cls(**pubsub_options(target))
        conn.connect()
        return conn

    # --- publishing ---

    def publish(self, items: Sequence[Item]) -> None:
        """Publish through Redis. Raises `EngineUnavailable` when Redis cannot take them."""
        engine = self.engine
        calls = engine.publish_calls(items)
        with self._publish_lock:  # a node's publishes reach Redis in the order accepted
            try:
                replies = self._blocking(self._run_calls, calls)
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

    def _run_calls(self, calls: Sequence[Any]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            self._script(keys=list(call.keys), args=list(call.args), client=pipe)
        return list(pipe.execute())

    # --- the engine's commands ---

    def _kick(self) -> None:
        if not self._kicked:
            self._kicked = True
            self._hub.loop.run_callback(self._drain)

    def _drain(self) -> None:
        self._kicked = False
        for command in self.engine.take_commands(time.monotonic()):
            self._run(command)
        self._arm_timer()

    def _run(self, command: Command) -> None:
        if isinstance(command, ReadHistory):
            self._greenlets.spawn(self._read_history, command)
        elif self._conn is not None:  # while down, link_up will subscribe everything afresh
            verb = "SUBSCRIBE" if isinstance(command, Subscribe) else "UNSUBSCRIBE"
            assert isinstance(command, Subscribe | Unsubscribe)
            self._outbox.append((verb, command.channels))
            self._outbox_ready.set()

    def _write_loop(self) -> None:
        while True:
            self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            for verb, channels in batch:
                conn = self._conn
                if conn is None:
                    break
                try:
                    self._blocking(conn.send_command, verb, *channels)
                except self._errors as exc:
                    log.debug("%s not sent: %s", verb, exc)
                    break

    def _read_history(self, command: ReadHistory) -> None:
        engine = self.engine
        try:
            reply = self._blocking(
                self._client.xrevrange, command.key, "+", "-", count=command.count
            )
        except self._errors as exc:
            log.warning("history read failed, resuming without it: %s", exc)
            result = engine.history_failed(command.token)
        else:
            result = engine.history_read(command.token, reply, time.monotonic())
        self._deliver(result)

    def _deliver(self, result: PublishResult) -> None:
        if result.woken:
            self._wake(result.woken)
        self._arm_timer()

    # --- the pub/sub connection: read in a pool thread, acted on in the hub ---

    def _post(self, fn: Callable[..., Any], *args: Any) -> None:
        self._hub.loop.run_callback_threadsafe(fn, *args)

    def _read_loop(self, conn: Any) -> None:
        """The reader thread: connect (with backoff), read replies, hand them to the hub."""
        delay = BACKOFF_MIN
        target = self.engine.target.display
        while not self._stopping.is_set():
            if conn is None:
                if self._stopping.wait(delay):
                    return
                delay = next_backoff(delay)
                try:
                    conn = self._connect_pubsub()
                except self._errors as exc:
                    log.debug("Redis at %s still unreachable: %s", target, exc)
                    continue
            delay = BACKOFF_MIN
            self._post(self._link_up, conn)
            try:
                while True:
                    push = conn.read_response()
                    self._post(self._on_push, push)
            except self._errors as exc:
                if self._stopping.is_set():
                    return
                self._post(self._link_down, conn, str(exc) or type(exc).__name__)
                conn.disconnect()
                conn = None

    def _link_up(self, conn: Any) -> None:
        if self._stopping.is_set():
            return
        now = time.monotonic()
        self._conn = conn
        self._last_rx = now
        self._outbox.clear()
        gap = self.engine.link_up(now)
        if gap is not None:
            log.warning(link_back_message(self.engine.target, gap))
        self._up.set()

    def _link_down(self, conn: Any, reason: str) -> None:
        if self._conn is conn:
            self._conn = None
        self.engine.link_down(time.monotonic())
        log.error(link_lost_message(self.engine.target, reason))

    def _on_push(self, push: Any) -> None:
        self._last_rx = now = time.monotonic()
        result = self.engine.handle_push(push, now)
        if result is not None:
            self._deliver(result)

    def _health_loop(self) -> None:
        """PING the pub/sub connection; drop it when Redis stopped answering."""
        while True:
            gevent.sleep(self.health_interval)
            conn = self._conn
            if conn is None:
                continue
            if link_silent(self._last_rx, time.monotonic(), self.health_interval):
                log.warning("Redis at %s stopped answering", self.engine.target.display)
                self._blocking(conn.disconnect)  # the reader's pending read fails: reconnect
                continue
            self._outbox.append(("PING", ()))
            self._outbox_ready.set()
