"""The Redis engine's gevent driver: the network part of `gripcore._engine.RedisEngine`.

The same driver as adapters/asyncio/_redis.py (read its header: one command client for
publishes and history reads, one bare pub/sub connection, reconnect with backoff, resubscribe,
health PINGs, 503 for publishes Redis cannot take), on gevent. redis-py's client is blocking
and gripcore does not monkey-patch, so its calls run in the hub's thread pool: a greenlet that
publishes waits for its pool thread without blocking the hub. The pub/sub connection is read by
one pool thread, which hands every reply to the hub (`run_callback_threadsafe`), where the
engine is driven; everything that touches the engine runs in the hub's thread. The policy
(backoff, timeouts, health) and the reading of replies are the core's.

Sentinel and cluster targets as in the asyncio driver: redis-py's `Sentinel.master_for` or
`RedisCluster` for commands; the pub/sub connections (the master the Sentinels name now, or
every primary of the cluster) are one link, opened by a supervisor pool thread that reads each
one in a thread of its own; when any of them fails (or the hub asks: a silent connection, a
shard channel Redis dropped), the supervisor closes them all, the engine is told `link_down`,
and they are opened afresh.
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
    CLUSTER,
    CONNECT_TIMEOUT,
    HEALTH_INTERVAL,
    SENTINEL,
    Command,
    EngineUnavailable,
    ReadHistory,
    RedisEngine,
    Subscribe,
    Unsubscribe,
    client_options,
    cluster_slots,
    failure_reason,
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
        self._sentinel: Any = None
        self._conns: dict[tuple[str, int] | None, Any] = {}  # pub/sub, while up (hub's view)
        self._failed = threading.Event()  # set: the supervisor drops the current link
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._outbox: list[tuple[tuple[str, int] | None, str, tuple[str, ...]]] = []
        self._outbox_ready = gevent.event.Event()
        self._publish_lock = gevent.lock.Semaphore()
        self._kicked = False
        self._up = gevent.event.Event()
        self._stopping = threading.Event()
        self._greenlets = gevent.pool.Group()
        self._last_rx: dict[tuple[str, int] | None, float] = {}
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
            from redis.exceptions import RedisClusterException, RedisError
            from redis.retry import Retry
        except ImportError:
            raise EngineUnavailable(
                "the Redis engine needs redis-py: pip install 'gripcore[redis]'"
            ) from None
        # ValueError: redis-py's reader when the connection is closed under it (health check)
        # RedisClusterException: the cluster errors redis-py does not derive from RedisError
        self._errors = (RedisError, RedisClusterException, OSError, ValueError)
        target = self.engine.target
        options = client_options(target)
        retry = Retry(NoBackoff(), 0)
        if target.mode == SENTINEL:
            from redis.sentinel import Sentinel

            self._sentinel = Sentinel(
                list(target.nodes),
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=CONNECT_TIMEOUT,
            )
            self._client = self._sentinel.master_for(
                target.master_name, redis_class=redis.Redis, retry=retry, **options
            )
        elif target.mode == CLUSTER:
            from redis.cluster import ClusterNode, RedisCluster

            nodes = [ClusterNode(host, port) for host, port in target.nodes]  # type: ignore[no-untyped-call]
            try:
                self._client = self._blocking(
                    RedisCluster, startup_nodes=nodes, retry=retry, **options
                )
            except self._errors as exc:
                self.close()
                raise EngineUnavailable(
                    f"cannot reach Redis at {target.display}: {failure_reason(exc)}"
                ) from None
        else:
            self._client = redis.Redis(**options, retry=retry)
        self._script = self._client.register_script(self.engine.script)
        try:
            self._blocking(self._client.ping)
            link = self._blocking(self._connect_pubsub)
        except self._errors as exc:
            self.close()
            raise EngineUnavailable(
                f"cannot reach Redis at {target.display}: {failure_reason(exc)}"
            ) from None
        self._hub.threadpool.spawn(self._read_loop, link)
        self._greenlets.spawn(self._write_loop)
        self._greenlets.spawn(self._health_loop)
        if not self._up.wait(CONNECT_TIMEOUT):
            self.close()
            raise EngineUnavailable(f"Redis at {target.display} went away at start")

    def close(self) -> None:
        self._stopping.set()
        self._failed.set()
        self._greenlets.kill()
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            conn.disconnect()  # the reader threads' pending reads fail, and they end
        if self._client is not None:
            self._client.close()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                client.close()

    def _connect_pubsub(self) -> tuple[dict[tuple[str, int] | None, Any], tuple[Any, ...]]:
        """Open the pub/sub connections (blocking): to the server, to the master the Sentinels
        name now, or to every primary of the cluster (with the slot map, for the engine)."""
        target = self.engine.target
        if target.mode == SENTINEL:
            address = self._sentinel.discover_master(target.master_name)
            return {None: self._open(address)}, ()
        if target.mode == CLUSTER:
            slots = self._cluster_slots()
            conns: dict[tuple[str, int] | None, Any] = {}
            try:
                for _, _, host, port in slots:
                    if (host, port) not in conns:
                        conns[host, port] = self._open((host, port))
            except BaseException:
                for conn in conns.values():
                    conn.disconnect()
                raise
            return conns, slots
        return {None: self._open(None)}, ()

    def _cluster_slots(self) -> tuple[tuple[int, int, str, int], ...]:
        """CLUSTER SLOTS from the first seed node that answers."""
        failure: BaseException = OSError("no cluster node")
        for address in self.engine.target.nodes:
            try:
                conn = self._open(address)
            except self._errors as exc:
                failure = exc
                continue
            try:
                conn.send_command("CLUSTER", "SLOTS")
                return cluster_slots(conn.read_response())
            except self._errors as exc:
                failure = exc
            finally:
                conn.disconnect()
        raise failure

    def _open(self, address: tuple[str, int] | None) -> Any:
        from redis.connection import Connection, SSLConnection

        target = self.engine.target
        cls = SSLConnection if target.tls else Connection
        conn: Any = cls(**pubsub_options(target, address))
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
                    failure_reason(exc),
                )
                raise EngineUnavailable(
                    f"Redis at {engine.target.display}: {failure_reason(exc)}"
                ) from None
        engine.published(replies)

    def _run_calls(self, calls: Sequence[Any]) -> list[Any]:
        if not self.engine.pipelined:
            # each run goes to its channel's slot owner, one after another (in order)
            return [self._script(keys=list(call.keys), args=list(call.args)) for call in calls]
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
        elif self._conns:  # while down, link_up will subscribe everything afresh
            assert isinstance(command, Subscribe | Unsubscribe)
            self._outbox.append((command.node, command.verb, command.channels))
            self._outbox_ready.set()

    def _write_loop(self) -> None:
        while True:
            self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            for node, verb, channels in batch:
                conn = self._conns.get(node)
                if conn is None:
                    continue
                try:
                    self._blocking(conn.send_command, verb, *channels)
                except self._errors as exc:
                    log.debug("%s not sent: %s", verb, exc)

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

    def _read_loop(self, link: Any) -> None:
        """The supervisor thread: connect (with backoff), read each pub/sub connection in a
        thread of its own, and when one fails (or the hub sets `_failed`), close them all and
        start again."""
        delay = BACKOFF_MIN
        target = self.engine.target.display
        while not self._stopping.is_set():
            if link is None:
                if self._stopping.wait(delay):
                    return
                delay = next_backoff(delay)
                try:
                    link = self._connect_pubsub()
                except self._errors as exc:
                    log.debug("Redis at %s still unreachable: %s", target, exc)
                    continue
            delay = BACKOFF_MIN
            conns, slots = link
            failed = self._failed = threading.Event()
            reasons: list[str] = []
            if self._stopping.is_set():
                failed.set()
            self._post(self._link_up, conns, slots)
            readers = [
                threading.Thread(
                    target=self._read_one, args=(node, conn, failed, reasons), daemon=True
                )
                for node, conn in conns.items()
            ]
            for reader in readers:
                reader.start()
            failed.wait()
            for conn in conns.values():
                conn.disconnect()  # the other readers' pending reads fail
            for reader in readers:
                reader.join()
            if self._stopping.is_set():
                return
            self._post(self._link_down, conns, reasons[0] if reasons else "dropped")
            link = None

    def _read_one(
        self,
        node: tuple[str, int] | None,
        conn: Any,
        failed: threading.Event,
        reasons: list[str],
    ) -> None:
        """A reader thread: hand every reply to the hub until the connection fails."""
        try:
            while True:
                push = conn.read_response()
                self._post(self._on_push, node, push)
        except Exception as exc:  # the thread's boundary: any failure ends this link
            reasons.append(failure_reason(exc))
            failed.set()

    def _link_up(self, conns: dict[tuple[str, int] | None, Any], slots: tuple[Any, ...]) -> None:
        if self._stopping.is_set():
            return
        now = time.monotonic()
        self._conns = conns
        self._last_rx = dict.fromkeys(conns, now)
        self._outbox.clear()
        gap = self.engine.link_up(now, slots)
        if gap is not None:
            log.warning(link_back_message(self.engine.target, gap))
        self._up.set()

    def _link_down(self, conns: dict[tuple[str, int] | None, Any], reason: str) -> None:
        if self._conns is conns:
            self._conns = {}
        self.engine.link_down(time.monotonic())
        log.error(link_lost_message(self.engine.target, reason))

    def _on_push(self, node: tuple[str, int] | None, push: Any) -> None:
        self._last_rx[node] = now = time.monotonic()
        result = self.engine.handle_push(push, now)
        if self.engine.relink:
            self._failed.set()  # a shard channel moved: the supervisor reconnects
        if result is not None:
            self._deliver(result)

    def _health_loop(self) -> None:
        """PING the pub/sub connections; drop the link when Redis stopped answering on one."""
        while True:
            gevent.sleep(self.health_interval)
            for node in list(self._conns):
                if link_silent(self._last_rx[node], time.monotonic(), self.health_interval):
                    log.warning("Redis at %s stopped answering", self.engine.target.display)
                    self._failed.set()  # the supervisor closes the link: reconnect
                    break
                self._outbox.append((node, "PING", ()))
            self._outbox_ready.set()
