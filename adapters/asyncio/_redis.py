"""The Redis engine's asyncio driver: the network part of `gripcore._engine.RedisEngine`.

The core decides what to subscribe, publish and read; this module does it with redis-py's
asyncio client (imported only when `--engine redis://...` is used):

* a **command client** (connection pool) for publishes (one pipeline of `PUBLISH_SCRIPT` runs per
  publish request, sent in arrival order under one lock so a node's publishes reach Redis in the
  order they were accepted) and history reads (XREVRANGE);
* one **pub/sub connection**, a bare redis-py `Connection` driven here (not redis-py's `PubSub`,
  whose own reconnect-and-resubscribe would fight the engine's): SUBSCRIBE/UNSUBSCRIBE go out in
  order from one writer task; one reader task feeds every push to the engine.

With `redis+sentinel://` the command client is redis-py's `Sentinel.master_for` (a pool that
asks the Sentinels for the master on each new connection, so it follows a failover), and each
pub/sub (re)connection asks the Sentinels where the master is now. With `redis+cluster://` the
command client is redis-py's `RedisCluster` (routes each script run by its keys' slot, follows
MOVED), and the pub/sub side is one bare connection per primary, from `CLUSTER SLOTS`, on
which the engine's SSUBSCRIBEs go by slot owner. The pub/sub connections are one link: when
any of them breaks (or Redis drops a wanted shard channel), all are closed, the engine is told
`link_down`, and they are opened afresh from a new slot map.

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
        self._sentinel: Any = None
        self._conns: dict[tuple[str, int] | None, Any] = {}  # pub/sub connections while up
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outbox: list[tuple[tuple[str, int] | None, str, tuple[str, ...]]] = []
        self._outbox_ready = asyncio.Event()
        self._reads: set[asyncio.Task[None]] = set()
        self._publish_lock = asyncio.Lock()
        self._kicked = False
        self._up = asyncio.Event()
        self._health: asyncio.Task[None] | None = None
        self._last_rx: dict[tuple[str, int] | None, float] = {}  # when each last received
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
            from redis.exceptions import RedisClusterException, RedisError
        except ImportError:
            raise EngineUnavailable(
                "the Redis engine needs redis-py: pip install 'gripcore[redis]'"
            ) from None
        # RedisClusterException: the cluster errors redis-py does not derive from RedisError
        # (no node reachable, a slot no node serves)
        self._errors = (RedisError, RedisClusterException, OSError)
        target = self.engine.target
        options = client_options(target)
        retry = Retry(NoBackoff(), 0)
        if target.mode == SENTINEL:
            from redis.asyncio.sentinel import Sentinel

            self._sentinel = Sentinel(
                list(target.nodes),
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=CONNECT_TIMEOUT,
            )
            self._client = self._sentinel.master_for(
                target.master_name, redis_class=aioredis.Redis, retry=retry, **options
            )
        elif target.mode == CLUSTER:
            from redis.asyncio.cluster import ClusterNode, RedisCluster

            nodes = [ClusterNode(host, port) for host, port in target.nodes]
            self._client = RedisCluster(startup_nodes=nodes, retry=retry, **options)
        else:
            self._client = aioredis.Redis(**options, retry=retry)
        self._script = self._client.register_script(self.engine.script)
        try:
            await self._client.ping()
            link = await self._connect_pubsub()
        except self._errors as exc:
            await self.close()
            raise EngineUnavailable(
                f"cannot reach Redis at {target.display}: {failure_reason(exc)}"
            ) from None
        self._writer = asyncio.ensure_future(self._write_loop())
        self._reader = asyncio.ensure_future(self._read_loop(link))
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
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            await conn.disconnect()
        if self._client is not None:
            await self._client.aclose()
        if self._sentinel is not None:
            for client in self._sentinel.sentinels:
                await client.aclose()

    async def _connect_pubsub(self) -> tuple[dict[tuple[str, int] | None, Any], tuple[Any, ...]]:
        """Open the pub/sub connections: to the server, to the master the Sentinels name now,
        or to every primary of the cluster (with the slot map, for the engine)."""
        target = self.engine.target
        if target.mode == SENTINEL:
            address = await self._sentinel.discover_master(target.master_name)
            return {None: await self._open(address)}, ()
        if target.mode == CLUSTER:
            slots = await self._cluster_slots()
            conns: dict[tuple[str, int] | None, Any] = {}
            try:
                for _, _, host, port in slots:
                    if (host, port) not in conns:
                        conns[host, port] = await self._open((host, port))
            except BaseException:
                for conn in conns.values():
                    await conn.disconnect()
                raise
            return conns, slots
        return {None: await self._open(None)}, ()

    async def _cluster_slots(self) -> tuple[tuple[int, int, str, int], ...]:
        """CLUSTER SLOTS from the first seed node that answers."""
        failure: BaseException = OSError("no cluster node")
        for address in self.engine.target.nodes:
            try:
                conn = await self._open(address)
            except self._errors as exc:
                failure = exc
                continue
            try:
                await conn.send_command("CLUSTER", "SLOTS")
                return cluster_slots(await conn.read_response())
            except self._errors as exc:
                failure = exc
            finally:
                await conn.disconnect()
        raise failure

    async def _open(self, address: tuple[str, int] | None) -> Any:
        from redis.asyncio.connection import Connection, SSLConnection

        target = self.engine.target
        cls = SSLConnection if target.tls else Connection
        conn: Any = cls(**pubsub_options(target, address))
        await conn.connect()
        return conn

    # --- publishing ---

    async def publish(self, items: Sequence[Item]) -> None:
        """Publish through Redis. Raises `EngineUnavailable` when Redis cannot take them."""
        engine = self.engine
        calls = engine.publish_calls(items)
        async with self._publish_lock:
            try:
                if not engine.pipelined:
                    # each run goes to its channel's slot owner, one after another (in order)
                    replies = [
                        await self._script(keys=list(call.keys), args=list(call.args))
                        for call in calls
                    ]
                else:
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
                    failure_reason(exc),
                )
                raise EngineUnavailable(
                    f"Redis at {engine.target.display}: {failure_reason(exc)}"
                ) from None
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
        elif self._conns:  # while down, link_up will subscribe everything afresh
            assert isinstance(command, Subscribe | Unsubscribe)
            self._outbox.append((command.node, command.verb, command.channels))
            self._outbox_ready.set()

    async def _write_loop(self) -> None:
        """Send (UN)SUBSCRIBEs in order on the pub/sub connection; a failure is the reader's to
        notice (it reconnects, and the engine resubscribes everything)."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            batch, self._outbox = self._outbox, []
            for node, verb, channels in batch:
                conn = self._conns.get(node)
                if conn is None:
                    continue
                try:
                    await conn.send_command(verb, *channels)
                except self._errors as exc:
                    log.debug("%s not sent: %s", verb, exc)

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

    async def _read_loop(self, link: Any) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        delay = BACKOFF_MIN
        target = engine.target.display
        while True:
            if link is None:
                await asyncio.sleep(delay)
                delay = next_backoff(delay)
                try:
                    link = await self._connect_pubsub()
                except self._errors as exc:
                    log.debug("Redis at %s still unreachable: %s", target, exc)
                    continue
            delay = BACKOFF_MIN
            conns, slots = link
            self._conns = conns
            self._last_rx = dict.fromkeys(conns, loop.time())
            self._outbox.clear()
            gap = engine.link_up(loop.time(), slots)
            if gap is not None:
                log.warning(link_back_message(engine.target, gap))
            self._up.set()
            readers = [asyncio.ensure_future(self._read_one(n, c)) for n, c in conns.items()]
            try:
                done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
            failure = next(iter(done)).exception()
            self._conns = {}
            engine.link_down(loop.time())
            reason = failure_reason(failure) if failure is not None else "closed"
            log.error(link_lost_message(engine.target, reason))
            for conn in conns.values():
                await conn.disconnect()
            link = None

    async def _read_one(self, node: tuple[str, int] | None, conn: Any) -> None:
        """Read one pub/sub connection until it fails (the exception ends the task)."""
        loop = asyncio.get_running_loop()
        while True:
            push = await conn.read_response()
            self._last_rx[node] = now = loop.time()
            self._on_push(push, now)
            if self.engine.relink:
                raise ConnectionError("Redis moved a shard channel to another node")

    async def _health_loop(self) -> None:
        """PING the pub/sub connections; drop one when Redis stopped answering on it (see
        HEALTH_INTERVAL), so the reader reconnects."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.health_interval)
            for node, conn in list(self._conns.items()):
                if link_silent(self._last_rx[node], loop.time(), self.health_interval):
                    log.warning("Redis at %s stopped answering", self.engine.target.display)
                    await conn.disconnect()  # the reader's pending read fails: reconnect
                    break
                self._outbox.append((node, "PING", ()))
            self._outbox_ready.set()

    def _on_push(self, push: Any, now: float) -> None:
        result = self.engine.handle_push(push, now)
        if result is not None:
            self._deliver(result)
