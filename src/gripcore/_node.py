"""One gripcore proxy node, sans-IO: everything `gripcore serve` decides that is not I/O.

A driver (adapters/asyncio, adapters/gevent) owns sockets, timers and the origin client; it
builds one `ProxyNode` from the `Config` and, per accepted socket, one `ProxyConnection`
(gripcore._connection). The node holds what connections share: the broker (hub + sequencer),
the routes, the Grip-Sig key, the metrics, and the set of connections that have output waiting.

Time and the outside world come in as functions the driver passes: `clock` (monotonic seconds,
the loop's clock), `wall_clock` (Unix time, for Grip-Sig), `read_file` (routes and key files),
`random_bytes` (connection ids and jitter). Nothing here imports a clock or a socket.

Origin calls are *flows*: generators that yield the I/O they need (`OriginRequest`,
`ReadBody`, `NextChunk`, `DiscardBody`, `ConnectOriginWebSocket`) and receive the result, or
have the driver's `OriginError` raised there (`perform`). A driver runs a flow with a short loop
(`run_flow` in each adapter); asyncio awaits each operation, gevent blocks its greenlet.

Fan-out (DESIGN.md, "Data flow of one publish"): `publish()` appends encoded items to the
subscribers' output buffers and marks their connections dirty; the driver schedules one flush
pass and writes `take_flush_batch()` connections at a time (FLUSH_SLICE), letting its loop read
publishes between slices, so under load each connection's write carries more items.
"""

from __future__ import annotations

import errno
import itertools
import logging
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

import h11

from . import _starter
from ._config import DEFAULT_MAX_CONNECTIONS, Config, parse_listen
from ._engine import MemoryEngine, RedisEngine, parse_engine_url
from ._errors import ProtocolError, PublishError
from ._history import History
from ._hub import Hub, OverflowPolicy, PublishResult, Subscriber, Transport
from ._instruct import reason_phrase
from ._items import Item
from ._limits import ClientLimits, parse_networks
from ._metrics import Counter, Registry
from ._originhttp import OriginError
from ._publishapi import PublishResponse, engine_unavailable_response, handle_publish_request
from ._publishing import PublishConveniences
from ._relay import encode_relay_frame
from ._routes import Route, RouteTable, Target, parse_routes
from ._sequencer import Sequencer
from ._sig import SigningKey, VerifyKey, is_valid_sig, mint_sig, parse_key_spec, parse_verify_key
from ._speedups import flush_connections
from ._timeouts import ReadDeadlines, ReadPhase
from ._zmqin import SubscriptionOp, decode_pull_message, decode_sub_message, subscription_op

if TYPE_CHECKING:
    from ._connection import OriginWsLink, ProxyConnection

__all__ = [
    "ACCEPT_RESOURCE_ERRORS",
    "FLUSH_SLICE",
    "Answer",
    "ClientWritable",
    "ConnectOriginWebSocket",
    "DiscardBody",
    "Flow",
    "FlowOp",
    "LocalPublishing",
    "NextChunk",
    "NodeServer",
    "OriginRequest",
    "ProxyNode",
    "PublishConnection",
    "ReadBody",
]

log = logging.getLogger("gripcore")

_Driver = TypeVar("_Driver")

# What a publish connection over --max-publish-connections gets before the close.
_PUBLISH_OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 26\r\nConnection: close\r\n\r\nToo many open connections\n"
)
# A publisher too slow to send its request (see gripcore._timeouts).
_PUBLISH_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 16\r\nConnection: close\r\n\r\nRequest timeout\n"
)
# Bytes read and dropped after an early error answer before closing anyway (lingering close).
PUBLISH_LINGER_LIMIT = 64 * 1024 * 1024

# Accept errors that mean the process (or the system) is out of descriptors or socket memory:
# the listener stays readable, so retrying at once spins. The listener pauses instead.
ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# How long a listener stops accepting after such an error: long enough not to spin on a full
# backlog, short enough that clients waiting in it are served soon after connections close
# (libuv and gevent back off for up to a second; asyncio waits one).
ACCEPT_PAUSE = 0.25
# While accepts keep failing, one log line per listener per this many seconds (the count is in
# /metrics: gripcore_accept_pauses_total).
ACCEPT_LOG_INTERVAL = 10.0
# Descriptors kept back from client connections when --max-connections is fitted to the
# descriptor limit: listeners, logs, Redis and worker relays, idle origin sockets, files.
DESCRIPTOR_RESERVE = 64

# Connections written per flush slice: ~5 ms of writes, so publishes are read between slices.
FLUSH_SLICE = 512

_TRANSPORT_LABEL = {
    Transport.STREAM: "stream",
    Transport.RESPONSE: "response",
    Transport.WEBSOCKET: "websocket",
}


@dataclass(slots=True)
class Answer:
    """An answer made in process (the starter kit): whole, nothing to read from a socket."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


# --- what a flow asks its driver to do ---


@dataclass(frozen=True, slots=True)
class OriginRequest:
    """Send a request to one target; the result is the driver's response object (with
    `status`, `reason`, `headers`), or an `OriginError` raised in the flow."""

    target: Target
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True, slots=True)
class ReadBody:
    """Read the rest of `response`'s body, at most `limit` bytes (else OriginError too-large)."""

    response: Any
    limit: int


@dataclass(frozen=True, slots=True)
class NextChunk:
    """The next piece of `response`'s body as it arrives; None at its end."""

    response: Any


@dataclass(frozen=True, slots=True)
class DiscardBody:
    """Drop what is left of `response` (its connection is closed)."""

    response: Any


@dataclass(frozen=True, slots=True)
class ClientWritable:
    """Wait until the client connection `io` may be written again (its transport went below
    its low mark after `pause_writing`), or is closed. Result: None."""

    io: Any


@dataclass(frozen=True, slots=True)
class ConnectOriginWebSocket:
    """Open a TCP (or TLS) connection to `target` for `link` and attach it (`link.attach`);
    then feed what arrives to `link.data_received` and its end to `link.connection_lost`.
    Result: None; a failure to connect is an `OriginError` raised in the flow."""

    target: Target
    link: OriginWsLink


FlowOp = (
    OriginRequest | ReadBody | NextChunk | DiscardBody | ClientWritable | ConnectOriginWebSocket
)
Flow = Generator[FlowOp, Any, None]


@dataclass(frozen=True, slots=True)
class _Failed:
    """The error an operation failed with, as `run_flow_step` sends it into a flow."""

    error: BaseException


def perform(op: FlowOp) -> Generator[FlowOp, Any, Any]:
    """A sub-flow: ask the driver for `op`; its result, or its error raised here.

    Every operation of a flow goes through here. The driver's error is sent in and raised at
    this point rather than thrown in with `generator.throw()`: when a generator that delegates
    with `yield from` is resumed by a throw, CPython 3.11 does not report the resumed frames to
    trace functions, and coverage then drops (or credits to another file) the lines that run
    until the next operation."""
    result = yield op
    if isinstance(result, _Failed):
        raise result.error
    return result


def read_body(response: Any, limit: int) -> Generator[FlowOp, Any, bytes]:
    """A sub-flow: the body of an origin answer (in process answers have it already)."""
    if isinstance(response, Answer):
        return response.body
    body: bytes = yield from perform(ReadBody(response, limit))
    return body


def discard_body(response: Any) -> Generator[FlowOp, Any, None]:
    """A sub-flow: drop the rest of a response from a network origin (links are only ever
    followed there: the starter kit sends none)."""
    yield from perform(DiscardBody(response))


@dataclass(eq=False)
class ProxyNode:
    """The shared state of one proxy: broker, routes, signing, metrics, dirty connections."""

    config: Config
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    read_file: Callable[[str], bytes]
    is_file: Callable[[str], bool]
    random_bytes: Callable[[int], bytes]
    broker: MemoryEngine | RedisEngine = field(init=False)
    """The engine (named broker for the code that only needs its hub and sync())."""
    routes: RouteTable | None = field(init=False)
    sig_key: SigningKey | None = field(init=False)
    upstream_key: VerifyKey | None = field(init=False)
    limits: ClientLimits = field(init=False)
    connections: set[ProxyConnection] = field(init=False, default_factory=set)
    publish_connections: int = field(init=False, default=0)
    """Open publish API connections (counted against --max-publish-connections)."""
    closing: bool = field(init=False, default=False)
    listening: bool = field(init=False, default=False)
    """Set by the driver once every listener is bound (with `closing`, read by `readiness`)."""
    metrics: Registry = field(init=False, default_factory=Registry)
    # (default_factory: a function as a plain default would be bound as a method)
    schedule_flush: Callable[[], None] = field(init=False, default_factory=lambda: _nothing)
    """Set by the driver: run `flush_pass()` soon (after reading what is ready to be read)."""
    set_broker_timer: Callable[[float | None], None] = field(
        init=False, default_factory=lambda: _ignore
    )
    """Set by the driver: call `handle_broker_timer()` at this clock time (None: cancel)."""
    publish_remote: Callable[[Sequence[Item]], None] = field(
        init=False, default_factory=lambda: _drop
    )
    """Set by the driver of a remote engine (Redis): publish these items through it, in the
    background (used by in-process publishing; the publish API waits for the engine instead
    and answers 503 when it cannot take them)."""
    relay: Callable[[bytes], None] | None = field(init=False, default=None)
    """Set by the driver of the worker that serves the publish API when it has sibling
    workers: write this relay frame (gripcore._relay) to every sibling, in call order."""

    def __post_init__(self) -> None:
        config = self.config
        hub = Hub(
            max_channels_per_subscriber=config.max_channels_per_connection,
            max_output_buffer=config.max_output_buffer,
            overflow_policy=cast(OverflowPolicy, config.slow_consumer_policy),
        )
        sequencer: Sequencer[Any] = Sequencer(
            id_cache_ttl=config.id_cache_ttl, message_wait=config.message_wait
        )
        self.routes = self._load_routes()
        # The starter kit's page resumes its long-poll from the history (_starter.STARTER_HISTORY)
        history_size = config.history or (_starter.STARTER_HISTORY if self.routes is None else 0)
        if config.engine == "memory":
            history = History(history_size) if history_size else None
            self.broker = MemoryEngine(hub, sequencer, history=history)
        else:
            self.broker = RedisEngine(
                parse_engine_url(config.engine),
                hub,
                sequencer,
                history=history_size,
                linger=config.engine_linger,
                id_cache_ttl=config.id_cache_ttl,
                max_content_size=config.max_content_size,
            )
        self.sig_key = (
            parse_key_spec(self._key_spec(config.sig_key), read_file=self.read_file)
            if config.sig_key
            else None
        )
        self.upstream_key = (
            parse_verify_key(self._key_spec(config.upstream_key), read_file=self.read_file)
            if config.upstream_key
            else None
        )
        self.limits = ClientLimits(
            max_per_ip=config.max_connections_per_ip,
            rate_per_ip=config.new_connections_per_ip,
            trusted_proxies=parse_networks(config.trusted_proxy),
        )
        self.link_hosts = [parse_listen(h, "") for h in config.allow_link_host]
        self._dirty: dict[ProxyConnection, None] = {}
        self._flush_since: float | None = None
        self._connection_numbers = itertools.count(1)
        self.max_connections = config.max_connections
        """--max-connections, lowered by `fit_descriptor_limit` to what the process can open."""
        self._accept_logged: dict[str, float] = {}
        self._define_metrics()

    # --- metrics ---

    def _define_metrics(self) -> None:
        m = self.metrics
        stats = self.broker.stats
        hub = self.broker.hub

        def transports() -> list[tuple[tuple[str, ...], float]]:
            counts = {"stream": 0, "response": 0, "websocket": 0, "other": 0}
            for conn in self.connections:
                sub = conn.subscriber
                kind = "other" if sub is None else _TRANSPORT_LABEL[sub.transport]
                counts[kind] += 1
            return [((kind,), n) for kind, n in counts.items()]

        engine = self.broker.engine_stats

        def sequencer_drops() -> list[tuple[tuple[str, ...], float]]:
            seq = self.broker.sequencer.stats
            return [
                (("duplicate",), seq.duplicates_dropped + engine.duplicates),
                (("prev-id-conflict",), seq.prev_id_conflict_dropped),
                (("sequencer-overflow",), seq.overflow_dropped),
                (("unsubscribed",), seq.unsubscribed_dropped),
                (("slow-consumer",), hub.dropped_messages),
            ]

        m.gauge("connections", "Client connections by transport.", transports, ("transport",))
        m.gauge(
            "workers",
            "Worker processes (--workers); with several, these figures are worker 0's.",
            lambda: [((), self.config.workers)],
        )
        m.gauge(
            "subscriptions",
            "Channel subscriptions of all connections.",
            lambda: [((), sum(hub.subscriber_count(c) for c in hub.channels()))],
        )
        m.gauge(
            "channels",
            "Channels with at least one subscriber.",
            lambda: [((), sum(1 for _ in hub.channels()))],
        )
        m.gauge(
            "output_buffer_bytes",
            "Bytes waiting in connections' output buffers.",
            lambda: [((), sum(len(c.subscriber.outbuf) for c in self.connections if c.subscriber))],
        )
        m.counter_from(
            "items_received_total",
            "Items accepted by the publish API.",
            lambda: [((), stats.received)],
        )
        m.counter_from(
            "deliveries_total", "Item deliveries to connections.", lambda: [((), stats.delivered)]
        )
        m.counter_from(
            "items_dropped_total",
            "Items dropped before delivery, by reason.",
            sequencer_drops,
            ("reason",),
        )
        m.gauge(
            "engine_up",
            "1 while connected to the engine (Redis); the memory engine always is.",
            lambda: [((), 0 if isinstance(self.broker, RedisEngine) and not self.broker.up else 1)],
        )
        m.counter_from(
            "engine_outages_total",
            "Times the connection to the engine (Redis) was lost.",
            lambda: [((), engine.outages)],
        )
        m.counter_from(
            "engine_outage_seconds_total",
            "Time spent without the engine (finished outages).",
            lambda: [((), engine.outage_seconds)],
        )
        m.counter_from(
            "engine_rejected_items_total",
            "Published items answered 503 because the engine could not take them.",
            lambda: [((), engine.rejected)],
        )
        m.counter_from(
            "resumes_total",
            "Resumes from history, by whether the last event id was found.",
            lambda: [(("found",), engine.resumes), (("missed",), engine.resume_misses)],
            ("result",),
        )
        limits = self.limits
        m.counter_from(
            "client_limit_refusals_total",
            "Client connections (or requests through a trusted proxy) refused with 429 by the "
            "per-address limits, by limit.",
            lambda: [
                (("connections",), limits.refused_connections),
                (("rate",), limits.refused_rate),
            ],
            ("limit",),
        )
        self.accept_pauses = m.counter(
            "accept_pauses_total",
            "Times a listener paused accepting: out of descriptors or socket memory (EMFILE...).",
        )
        self.zmq_received = m.counter(
            "zmq_items_received_total",
            "Items received on the ZeroMQ sockets (--push-in-spec: pull, --push-in-sub-spec: sub).",
            ("socket",),
        )
        self.zmq_invalid = m.counter(
            "zmq_invalid_messages_total",
            "ZeroMQ messages skipped because they did not hold a valid item.",
            ("socket",),
        )
        self.slow_consumers = m.counter(
            "slow_consumer_closes_total",
            "Connections closed because their output buffer was full, by route (the log line "
            "names each connection).",
            ("route",),
        )
        self.connection_errors = m.counter(
            "connection_errors_total",
            "Connections ended because of an unexpected error in their own processing.",
        )
        self.origin_latency = m.histogram(
            "origin_request_seconds",
            "Time from sending a request to the origin to its response head.",
        )
        self.write_latency = m.histogram(
            "publish_to_write_seconds",
            "Time from a publish to the last write of the flush pass that carried it.",
        )

    # --- routes and keys ---

    def _load_routes(self) -> RouteTable | None:
        """Inline routes win over the routes file (as Pushpin's --route); neither: starter kit."""
        if self.config.routes:
            return RouteTable.from_lines(self.config.routes)
        if self.config.routes_file:
            return parse_routes(self.read_file(self.config.routes_file).decode("utf-8"))
        return None

    def reload_routes(self) -> None:
        """Re-read the routes (SIGHUP, or the file changed). Held connections keep the route
        they started with; a routes file with an error leaves the current table in place."""
        try:
            routes = self._load_routes()
        except (OSError, UnicodeDecodeError, ProtocolError) as exc:
            log.error("routes not reloaded, keeping the current ones: %s", exc)
            return
        self.routes = routes
        log.info("routes reloaded")

    def _key_spec(self, value: str) -> str:
        """`--sig-key` also takes the path of a PEM key file as it is (`key.pem`), besides
        Pushpin's forms (a secret, `base64:...`, `file:...`)."""
        if value.endswith((".pem", ".key")) and self.is_file(value):
            return "file:" + value
        return value

    def sign(self, route: Route | None) -> bytes | None:
        if route is not None and route.sig_key:
            key: SigningKey | None = parse_key_spec(route.sig_key, read_file=self.read_file)
        else:
            key = self.sig_key
        if key is None:
            return None
        iss = (route.sig_iss if route is not None else None) or self.config.sig_iss
        return mint_sig(key, iss, self.wall_clock()).encode("ascii")

    def is_trusted(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether a client request comes from a GRIP proxy in front: its Grip-Sig is valid for
        `--upstream-key` (Pushpin's `ProxyUtil::checkTrustedClient`)."""
        if self.upstream_key is None:
            return False
        token = next((v for n, v in headers if n.lower() == b"grip-sig"), None)
        return token is not None and is_valid_sig(token, self.upstream_key, now=self.wall_clock())

    def route_for(self, host: str, path: str, proto: str) -> Route | None:
        table = self.routes
        if table is None:
            return None
        return table.match(host, path, proto=proto)  # type: ignore[arg-type]

    # --- publishing and fan-out ---

    def make_engine_driver(
        self,
        driver: Callable[..., _Driver],
        publish_in_background: Callable[[Sequence[Item]], None],
    ) -> _Driver | None:
        """With a remote engine (Redis): the adapter's driver for it (`driver(engine, wake=...,
        arm_timer=...)`), wired to this node; None with the memory engine."""
        engine = self.broker
        if not isinstance(engine, RedisEngine):
            return None
        self.publish_remote = publish_in_background
        return driver(
            engine, wake=self.wake, arm_timer=lambda: self.set_broker_timer(engine.next_deadline())
        )

    @property
    def remote_engine(self) -> bool:
        """Publishes go through a remote engine (Redis) and come back to every node."""
        return self.broker.remote

    def publish(self, items: Sequence[Any]) -> None:
        """Publish validated items: with a remote engine the driver publishes them through
        it (`publish_remote`); otherwise hand them to the sibling workers first (if any: they
        start their own passes meanwhile), fan out, then ask the driver for a flush pass (if
        output is waiting) and for the broker's timer (items waiting for their predecessor)."""
        if isinstance(self.broker, RedisEngine):
            self.publish_remote(items)
            return
        if self.relay is not None:
            self.relay(encode_relay_frame(items))
        self.publish_relayed(items)

    def receive_zmq(self, socket: str, frames: Sequence[bytes]) -> None:
        """One message from the ZeroMQ PULL socket (`socket` "pull") or SUB socket ("sub"):
        publish its item as the publish API would (gripcore._zmqin). An invalid message is
        logged and counted, never raised."""
        decode = decode_sub_message if socket == "sub" else decode_pull_message
        try:
            item = decode(frames, max_content_size=self.config.max_content_size)
        except PublishError as exc:
            self.zmq_invalid.inc(labels=(socket,))
            log.warning("ZeroMQ %s socket: %s, skipping", socket, exc.msg)
            return
        self.zmq_received.inc(labels=(socket,))
        self.publish([item])

    def watch_channels(self, subscription: Callable[[SubscriptionOp], None]) -> None:
        """Call `subscription((subscribe, topic))` for every channel that has subscribers now
        and, from now on, as a channel gains its first or loses its last subscriber (what the
        ZeroMQ SUB socket subscribes to)."""
        hub = self.broker.hub
        for channel in list(hub.channels()):
            subscription((True, channel.encode("utf-8")))
        hub.channel_listener = lambda change: subscription(subscription_op(change))

    def publish_relayed(self, items: Sequence[Any]) -> None:
        """Publish a batch another worker relayed (in the order it was relayed): as `publish`,
        without relaying it again."""
        broker = self.broker
        assert isinstance(broker, MemoryEngine)  # a remote engine delivers to every worker itself
        result = broker.publish(items, self.clock())
        self.wake(result.woken)
        self.set_broker_timer(self.broker.next_deadline())

    def deliver(self, result: PublishResult) -> None:
        """What a remote engine delivered (or a resume read): flush it, re-arm the timer."""
        self.wake(result.woken)
        self.set_broker_timer(self.broker.next_deadline())

    def resume(self, sub: Subscriber, last_id: str) -> None:
        """Deliver what `sub` missed after `last_id` from the history (now, or once read)."""
        result = self.broker.resume(sub, last_id, self.clock())
        self.wake(result.woken)

    def handle_broker_timer(self) -> None:
        """The broker's deadline passed: release what waited, as `publish` does."""
        result = self.broker.handle_timer(self.clock())
        self.wake(result.woken)
        self.set_broker_timer(self.broker.next_deadline())

    def wake(self, woken: Sequence[Any]) -> None:
        """Mark the owners of woken subscribers dirty; the first one asks for a flush pass."""
        dirty = self._dirty
        was_empty = not dirty
        for sub in woken:
            dirty[sub.owner] = None
        if dirty and was_empty:
            self._flush_since = self.clock()  # None while nothing is dirty
            self.schedule_flush()

    def take_flush_batch(self) -> tuple[list[ProxyConnection], bool]:
        """The next slice of dirty connections to flush, and whether more are left (then the
        driver schedules another pass after letting its loop run). `_dirty` is insertion
        ordered: connections are served first come, first served."""
        dirty = self._dirty
        if len(dirty) <= FLUSH_SLICE:
            self._dirty = {}
            return list(dirty), False
        batch = list(itertools.islice(dirty, FLUSH_SLICE))
        for conn in batch:
            del dirty[conn]
        return batch, True

    def flush_pass(self) -> None:
        """Write one slice of dirty connections; asks for another pass if some are left. After
        the last slice, `publish_to_write_seconds` gets the time from the first publish the
        pass carried to its last write."""
        batch, more = self.take_flush_batch()
        flush_connections(batch, self.clock())  # one clock read per slice (milliseconds)
        if more:
            self.schedule_flush()
            return
        since, self._flush_since = self._flush_since, None
        if since is not None:
            self.write_latency.observe(self.clock() - since)

    # --- toward the origin ---

    def call_origin(
        self,
        route: Route | None,
        targets: Sequence[Target],
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> Generator[FlowOp, Any, tuple[Any, Target | None]]:
        """A sub-flow: send a request to the first target that connects; the starter kit
        answers in process. Returns (response or Answer, target). Raises OriginError when every
        target failed."""
        if route is None or any(t.kind == "test" for t in targets):
            status, reason, rheaders, rbody = _starter.handle(
                method.decode("latin-1"), path.decode("latin-1"), headers, body
            )
            return Answer(status, reason, list(rheaders), rbody), None
        last: OriginError | None = None
        for target in targets:
            started = self.clock()
            try:
                response = yield from perform(OriginRequest(target, method, path, headers, body))
            except OriginError as exc:
                last = exc
                if exc.kind != "connect":
                    raise
                continue
            self.origin_latency.observe(self.clock() - started)
            return response, target
        assert last is not None  # a route has at least one target (RoutesError otherwise)
        raise last

    def connection_number(self) -> int:
        """A number naming a client connection in logs (1, 2, ... per node)."""
        return next(self._connection_numbers)

    def fit_descriptor_limit(self, nofile: int | None) -> None:
        """Lower `max_connections` to fit `nofile` descriptors (the soft RLIMIT_NOFILE; None:
        unlimited), so that the 503 of --max-connections engages before accepts fail with
        EMFILE: minus DESCRIPTOR_RESERVE and the publish connections, and half of the rest for
        the origin side: a client whose request is at the origin (or whose WebSocket goes to a
        native origin) holds a second descriptor, so even with every client there at once the
        publish listener can still accept."""
        if nofile is None:
            return
        budget = nofile - DESCRIPTOR_RESERVE - self.config.max_publish_connections
        fit = max(1, budget // 2)
        if fit < self.max_connections:
            # the default is only a ceiling: fitting it is news; lowering a chosen value, a warning
            chosen = self.max_connections != DEFAULT_MAX_CONNECTIONS
            self.max_connections = fit
            log.log(
                logging.WARNING if chosen else logging.INFO,
                "--max-connections lowered to %d to fit the descriptor limit (%d open files); "
                "raise it (ulimit -n) for more",
                fit,
                nofile,
            )

    def accept_failed(self, listener: str, error: OSError) -> float:
        """A listener's accept failed for lack of resources (ACCEPT_RESOURCE_ERRORS): count it,
        log it once per ACCEPT_LOG_INTERVAL per listener, and return how long to pause it."""
        self.accept_pauses.inc()
        now = self.clock()
        last = self._accept_logged.get(listener)
        if last is None or now - last >= ACCEPT_LOG_INTERVAL:
            self._accept_logged[listener] = now
            log.warning(
                "%s listener cannot accept (%s): pausing it %.2f s at a time (logged at most "
                "every %.0f s; gripcore_accept_pauses_total counts them)",
                listener,
                error.strerror or error,
                ACCEPT_PAUSE,
                ACCEPT_LOG_INTERVAL,
            )
        return ACCEPT_PAUSE

    def connection_id(self) -> str:
        return self.random_bytes(16).hex()

    def jitter(self) -> float:
        return int.from_bytes(self.random_bytes(2), "big") / 65536

    def announce(
        self, listen_addresses: Sequence[tuple[str, int]], publish_address: tuple[str, int]
    ) -> str | None:
        """Log where we listen; with no routes, return the starter kit's banner for a newcomer
        (the driver prints it)."""
        publish_url = _url(publish_address, "/publish/")
        for address in listen_addresses:
            # the address as bound (0.0.0.0 means every interface); the banner shows a local URL
            log.info("listening on http://%s (publish API %s)", _authority(address), publish_url)
        if self.routes is None:
            return _starter.banner(_url(listen_addresses[0]), publish_url)
        return None

    def readiness(self) -> str | None:
        """None when this node should get traffic (GET /readyz answers 200, systemd is told
        READY=1), else why not: listeners not yet bound, shutting down (SIGTERM's grace
        period), or the engine's Redis unreachable (publishes would get 503)."""
        if self.closing:
            return "shutting down"
        if not self.listening:
            return "listeners not bound yet"
        if isinstance(self.broker, RedisEngine) and not self.broker.up:
            return "engine unavailable (Redis unreachable)"
        return None

    def close_all(self) -> None:
        """Server stopping: every held session ends (see ProxyConnection.shutdown)."""
        self.closing = True
        for conn in list(self.connections):
            conn.shutdown()


def _nothing() -> None:
    """The default of `schedule_flush`: no driver, no flush pass."""


def _ignore(deadline: float | None) -> None:
    """The default of `set_broker_timer`: no driver, no timer."""


def _drop(items: Sequence[Item]) -> None:
    """The default of `publish_remote`: no remote engine."""


def unsupported_options(config: Config) -> str | None:
    """Options a driver does not have: refused at start, not ignored."""
    if config.workers > 1 and config.adapter != "asyncio":
        return f"--workers {config.workers}: only the asyncio adapter runs several workers"
    if config.tls_listen and config.adapter != "asyncio":
        return "--tls-listen: only the asyncio adapter serves TLS so far"
    if config.tls_listen and config.workers > 1:
        return "--tls-listen: not available with --workers above 1 yet"
    if config.workers > 1 and config.push_in_sub_spec:
        # the SUB socket lives in one worker and would subscribe to its own channels only
        return "--push-in-sub-spec: not available with --workers above 1"
    return None


def _url(address: tuple[str, int], path: str = "") -> str:
    host, port = address
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{path}"


def _authority(address: tuple[str, int]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_flow_step(flow: Flow, value: Any, error: BaseException | None) -> FlowOp | None:
    """Advance a flow by one operation: send it `value`, or `error` to raise at the operation
    that failed (see `perform`); None when done."""
    try:
        return flow.send(_Failed(error) if error is not None else value)
    except StopIteration:
        return None


class LocalPublishing(PublishConveniences[int]):
    """Publishing from inside the process that runs the proxy (an embedding application, a
    request handler): `publish(items)` and the builders (`publish_sse`, `publish_ws`, ...) of
    gripcore.Publisher, delivered at once with no HTTP in between. Call it from the driver's
    own thread (the asyncio loop, or any greenlet of the gevent hub)."""

    node: ProxyNode

    def publish(self, items: Item | Iterable[Item]) -> int:
        batch = [items] if isinstance(items, Item) else list(items)
        self.node.publish(batch)
        return len(batch)


class NodeServer(LocalPublishing):
    """What both drivers' `Server` classes expose around their `node` (tests and embedding
    code look at these): the engine, routes, connections, metrics; in-process publishing."""

    @property
    def broker(self) -> MemoryEngine | RedisEngine:
        return self.node.broker

    @property
    def routes(self) -> RouteTable | None:
        return self.node.routes

    @property
    def connections(self) -> set[ProxyConnection]:
        return self.node.connections

    @property
    def metrics(self) -> Registry:
        return self.node.metrics

    @property
    def slow_consumers(self) -> Counter:
        return self.node.slow_consumers

    def reload_routes(self) -> None:
        self.node.reload_routes()


class PublishConnection:
    """The publish API on one HTTP/1.1 connection (h11); requests answered by
    gripcore._publishapi. The driver feeds `receive_data` (`b""` at EOF) and writes what it
    returns: (bytes to write, whether to close after them)."""

    def __init__(self, node: ProxyNode) -> None:
        self.node = node
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=10_000)
        self.request: h11.Request | None = None
        self.body = bytearray()
        self._out: list[bytes] = []
        self._close = False
        self._answer_later: PublishResponse | None = None
        self._eof_pending = False
        self.awaiting: list[Item] | None = None
        """Items waiting for a remote engine: the driver publishes them through it, then calls
        `engine_answered` (until then the next pipelined request waits)."""
        self.reads = ReadDeadlines(node.config, node.clock())
        self._counted = False
        self._half_close = False
        self._discarded = 0

    def connection_made(self) -> tuple[bytes, bool]:
        """Count the connection in; over --max-publish-connections: a 503 to write, and close."""
        node = self.node
        if node.publish_connections >= node.config.max_publish_connections:
            self._close = True
            return _PUBLISH_OVERLOADED, True
        node.publish_connections += 1
        self._counted = True
        return b"", False

    def connection_lost(self) -> None:
        if self._counted:
            self._counted = False
            self.node.publish_connections -= 1

    def take_half_close(self) -> bool:
        """True once after an early error answer: the driver ends its sending side after
        writing it and reads on (what arrives is discarded) until EOF, a limit or the timer."""
        half_close, self._half_close = self._half_close, False
        return half_close

    def next_deadline(self) -> float | None:
        """When `handle_timer` should be called (a read timeout, see gripcore._timeouts)."""
        return None if self._close else self.reads.deadline()

    def handle_timer(self, now: float) -> tuple[bytes, bool]:
        """As `receive_data`: a 408 (a request too slow to arrive), or a quiet close."""
        phase = self.reads.expired(now)
        if phase is None or self._close:
            return b"", False
        if phase is ReadPhase.HEAD or phase is ReadPhase.BODY:
            log.info("closing a publish connection: request not received in time (408)")
            self.reads.linger(now)  # the publisher may still be sending: let it read the 408
            self._half_close = True
            return _PUBLISH_TIMEOUT, False
        self._close = True
        return b"", True

    def receive_data(self, data: bytes) -> tuple[bytes, bool]:
        reads = self.reads
        if reads.phase is ReadPhase.LINGER:
            self._discarded += len(data)
            if not data or self._discarded > PUBLISH_LINGER_LIMIT:
                self._close = True
            return b"", self._close
        if data and reads.phase is not ReadPhase.BUSY:
            reads.bytes_received(self.node.clock())
        if not data:  # EOF: answer what is complete, then close
            if self.awaiting is not None:
                self._eof_pending = True  # closed once the engine's answer is out
                return self._output()
            try:
                self.h11.receive_data(b"")
                self._process()
            except h11.RemoteProtocolError:
                pass
            self._close = True
        elif not self._close:
            try:
                self.h11.receive_data(data)
                self._process()
            except h11.RemoteProtocolError as exc:
                self._answer(exc.error_status_hint, b"text/plain", f"{exc}\n".encode())
        return self._output()

    def _output(self) -> tuple[bytes, bool]:
        out = b"".join(self._out)
        self._out.clear()
        return out, self._close

    def _process(self) -> None:
        limit = self.node.config.max_publish_body
        too_large = f"Request body too large (limit {limit} bytes).\n".encode()
        while not self._close:
            event = self.h11.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.reads.head_received(self.node.clock())
                self.request = event
                self.body = bytearray()
                length = _header(event.headers, b"content-length")
                if (
                    event.method == b"POST"
                    and length is None
                    and _header(event.headers, b"transfer-encoding") is None
                ):
                    self._answer(411, b"text/plain", b"Request requires Content-Length.\n")
                    return
                if limit and length is not None and length.isdigit() and int(length) > limit:
                    self._answer(413, b"text/plain", too_large)
                    return
            elif isinstance(event, h11.Data):
                self.body += event.data
                if limit and len(self.body) > limit:
                    self._answer(413, b"text/plain", too_large)
                    return
            elif isinstance(event, h11.EndOfMessage):
                self.reads.busy()
                if self._handle() or not self._next_cycle():
                    return
            else:  # h11.ConnectionClosed
                self._close = True
                return

    def _handle(self) -> bool:
        """Answer the request; True when the answer waits for a remote engine."""
        request = self.request
        assert request is not None
        config = self.node.config
        response = handle_publish_request(
            request.method,
            request.target,
            request.headers,
            bytes(self.body),
            publish_key=config.publish_key,
            max_body=config.max_publish_body,
            max_content_size=config.max_content_size,
            metrics=self.node.metrics.render,
            publish_iss=config.publish_iss,
            now=self.node.wall_clock(),
            readiness=self.node.readiness,
        )
        if response.items and self.node.remote_engine:
            self.awaiting = response.items
            self._answer_later = response
            return True
        if response.items:
            self.node.publish(response.items)
            log.info("publish items=%d", len(response.items))
        self._send_response(response.status, response.headers, response.body)
        return False

    def _next_cycle(self) -> bool:
        """After a response: close, or get ready for the next request (True: read on)."""
        if self.h11.our_state is h11.MUST_CLOSE:  # Connection: close, or HTTP/1.0
            self._close = True
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.reads.idle(self.node.clock())
            return True
        return False

    def engine_answered(self, error: str | None) -> tuple[bytes, bool]:
        """The remote engine took the `awaiting` items (`error` None) or could not (503 with
        the reason). Returns what to write, and whether to close, as `receive_data`."""
        request, response = self.request, self._answer_later
        assert request is not None and response is not None and self.awaiting is not None
        if error is not None:
            response = engine_unavailable_response(request.headers, error)
        else:
            log.info("publish items=%d", len(self.awaiting))
        self.awaiting = None
        self._answer_later = None
        self._send_response(response.status, response.headers, response.body)
        if self._eof_pending:
            return self.receive_data(b"")
        if self._next_cycle():
            self._process()
        return self._output()

    def _answer(self, status: int, ctype: bytes, body: bytes) -> None:
        """An early error answer: then the connection closes, after a lingering read of what
        the publisher still sends (else a close with unread data resets the connection and
        the publisher sees a network error instead of this answer)."""
        self._send_response(status, [(b"Content-Type", ctype)], body, close=True)
        self._close = False  # closed once lingering ends (receive_data, handle_timer)
        self.reads.linger(self.node.clock())
        self._half_close = True

    def _send_response(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool = False
    ) -> None:
        # every caller answers a request h11 has read (IDLE or SEND_RESPONSE), once
        out = [*headers, (b"Content-Length", str(len(body)).encode())]
        if close:
            out.append((b"Connection", b"close"))
        try:
            data = self.h11.send(
                h11.Response(status_code=status, headers=out, reason=reason_phrase(status))
            )
            if self.request is None or self.request.method != b"HEAD":  # HEAD: headers only
                data += self.h11.send(h11.Data(data=body)) or b""
            data += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:  # a 2xx to CONNECT switched protocols: no body to send
            self._close = True
            return
        self._out.append(data)
        if close:
            self._close = True


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None
