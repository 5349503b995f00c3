"""The asyncio driver: sockets, timers and the origin client around the sans-IO core.

Everything that decides anything lives in `gripcore`: routes, origin request headers, GRIP
instruct parsing, hold and WebSocket-over-HTTP state machines, the hub and the broker, the
publish API. This module reads bytes, feeds them in, writes what comes out and arms the timers
the sessions ask for. Per connection:

    read -> h11 / wsproto -> core session -> actions -> write / origin request -> timer

Fan-out: `Broker.publish` appends encoded items to each subscriber's output buffer and returns
the subscribers it woke; `Server.wake` collects their connections in a set and schedules one
flush pass with `call_soon`, so a connection gets one `write()` per loop iteration however many
items arrived (DESIGN.md, "Data flow of one publish").
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import ssl as ssl_module
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import h11
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError as LocalWsProtocolError
from wsproto.utilities import generate_accept_token

from gripcore import _starter
from gripcore._config import Config, parse_listen
from gripcore._engine import MemoryEngine, RedisEngine, parse_engine_url
from gripcore._errors import InstructError, ProtocolError, PublishError
from gripcore._history import History, resume_id
from gripcore._holds import (
    EndStream,
    FetchNextLink,
    HoldAction,
    PostGoneLink,
    Respond,
    ResponseHold,
    Retry,
    StreamHold,
)
from gripcore._hub import (
    BufferOverflow,
    Framing,
    Hub,
    MessagesDropped,
    OverflowPolicy,
    Subscriber,
    Transport,
)
from gripcore._instruct import Instruct, instruct_body_limit, is_grip_response
from gripcore._metrics import Registry
from gripcore._proxy import (
    Passthrough,
    classify_response,
    link_destination,
    origin_request_headers,
)
from gripcore._publishapi import (
    PublishResponse,
    engine_unavailable_response,
    handle_publish_request,
)
from gripcore._routes import Route, RouteTable, Target, parse_routes
from gripcore._sequencer import Sequencer
from gripcore._sig import SigningKey, mint_sig, parse_key_spec
from gripcore._wsgateway import OriginPost, WebSocketGateway
from gripcore._wsgrip import (
    AcceptClient,
    CloseClient,
    GripWebSocket,
    RejectClient,
    WebSocketAction,
)
from gripcore._wsproxy import CloseOrigin, ConnectOrigin, SendToOrigin, WebSocketProxy

from ._origin import OriginClient, OriginError
from ._redis import EngineUnavailable, RedisDriver

__all__ = ["Server", "run"]

log = logging.getLogger("gripcore")

# Write-buffer marks for client transports: above HIGH the connection stops draining its
# subscriber buffer (so the hub's output limit applies to slow readers); below LOW it resumes.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024

_ERROR_BODY = b"Error while proxying to origin.\n"

_OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 26\r\nConnection: close\r\n\r\nToo many open connections\n"
)

_TRANSPORT_LABEL = {
    Transport.STREAM: "stream",
    Transport.RESPONSE: "response",
    Transport.WEBSOCKET: "websocket",
}

# Connections written per flush slice: ~5 ms of writes, so publishes are read between slices.
FLUSH_SLICE = 512

# `gripcore serve`'s exit status when the engine (Redis) cannot be reached at start; 2 is for
# a configuration that cannot work, 1 for anything unexpected.
EXIT_ENGINE_UNAVAILABLE = 3

# How often the routes file is checked for changes (Pushpin watches it with a 1 s debounce).
ROUTES_POLL_INTERVAL = 1.0


@dataclass(slots=True)
class _Answer:
    """An origin answer, whole (`body`) or still streaming (`stream`)."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    stream: Any = None  # OriginResponse whose body is still to be relayed


class Server:
    """One gripcore proxy: client listeners, the publish API and the broker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        hub = Hub(
            max_channels_per_subscriber=config.max_channels_per_connection,
            max_output_buffer=config.max_output_buffer,
            overflow_policy=cast(OverflowPolicy, config.slow_consumer_policy),
        )
        sequencer: Sequencer[Any] = Sequencer(
            id_cache_ttl=config.id_cache_ttl, message_wait=config.message_wait
        )
        # the engine; named broker for the code that only needs its hub and sync()
        self.broker: MemoryEngine | RedisEngine
        self.engine_driver: RedisDriver | None = None
        if config.engine == "memory":
            history = History(config.history) if config.history else None
            self.broker = MemoryEngine(hub, sequencer, history=history)
        else:
            self.broker = RedisEngine(
                parse_engine_url(config.engine),
                hub,
                sequencer,
                history=config.history,
                linger=config.engine_linger,
                id_cache_ttl=config.id_cache_ttl,
                max_content_size=config.max_content_size,
            )
            self.engine_driver = RedisDriver(
                self.broker, wake=self.wake, arm_timer=self._arm_broker_timer
            )
        self.routes: RouteTable | None = self._load_routes()
        self.sig_key: SigningKey | None = (
            parse_key_spec(_key_spec(config.sig_key), read_file=_read_file)
            if config.sig_key
            else None
        )
        self.origin = OriginClient(
            connect_timeout=config.origin_connect_timeout,
            response_timeout=config.origin_response_timeout,
        )
        self.connections: set[ClientConnection] = set()
        self.closing = False  # set by close(): finished requests close their connection
        self.link_hosts = [parse_listen(h, "") for h in config.allow_link_host]
        self._watcher: asyncio.Task[None] | None = None  # the routes-file watcher
        self.publish_connections: set[PublishConnection] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._dirty: dict[ClientConnection, None] = {}
        self._flush_scheduled = False
        self._broker_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.listen_addresses: list[tuple[str, int]] = []
        self.publish_address: tuple[str, int] | None = None
        self._flush_since: float | None = None  # when the oldest unwritten output was queued
        self.metrics = Registry()
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
        self.slow_consumers = m.counter(
            "slow_consumer_closes_total", "Connections closed because their output buffer was full."
        )
        self.origin_latency = m.histogram(
            "origin_request_seconds",
            "Time from sending a request to the origin to its response head.",
        )
        self.write_latency = m.histogram(
            "publish_to_write_seconds",
            "Time from a publish to the write of its output (per flush pass).",
        )

    # --- setup ---

    def _load_routes(self) -> RouteTable | None:
        """Inline routes win over the routes file (as Pushpin's --route); neither: starter kit."""
        if self.config.routes:
            return RouteTable.from_lines(self.config.routes)
        if self.config.routes_file:
            return parse_routes(_read_file(self.config.routes_file).decode("utf-8"))
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

    async def _watch_routes(self, path: str) -> None:
        """Reload the routes file when it changes (polled: portable, and one stat a second)."""
        last = _mtime(path)
        while True:
            await asyncio.sleep(ROUTES_POLL_INTERVAL)
            current = _mtime(path)
            if current != last:
                last = current
                self.reload_routes()

    async def start(self) -> None:
        """Listen. Raises EngineUnavailable when the engine (Redis) cannot be reached."""
        loop = asyncio.get_running_loop()
        if self.engine_driver is not None:
            await self.engine_driver.start()
        for host, port in self.config.listen:
            server = await loop.create_server(
                lambda: ClientConnection(self), host, port, reuse_address=True, backlog=4096
            )
            self._servers.append(server)
            self.listen_addresses.append(server.sockets[0].getsockname()[:2])
        host, port = self.config.publish_listen
        server = await loop.create_server(
            lambda: PublishConnection(self), host, port, reuse_address=True, backlog=1024
        )
        self._servers.append(server)
        self.publish_address = server.sockets[0].getsockname()[:2]
        if self.config.routes_file and not self.config.routes:
            self._watcher = asyncio.ensure_future(self._watch_routes(self.config.routes_file))

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening, end every connection cleanly, and release every resource.

        Held sessions end at once (streams with their last chunk, long-polls with their
        timeout response, WebSockets with 1001); requests still waiting for the origin get up
        to `grace` seconds to be answered, then whatever is left is closed.
        """
        self.closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        for publisher in list(self.publish_connections):
            publisher.close()
        in_flight = [t for t in self._tasks if not t.done()]
        if in_flight and grace > 0:
            await asyncio.wait(in_flight, timeout=grace)
        for conn in list(self.connections):
            conn._close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        await self.origin.aclose()
        if self.engine_driver is not None:
            await self.engine_driver.close()
        if self._broker_timer is not None:
            self._broker_timer.cancel()
        # let closed transports run connection_lost before the loop goes away
        for _ in range(3):
            await asyncio.sleep(0)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- publishing and fan-out ---

    async def publish_items(self, items: Sequence[Any]) -> None:
        """Publish through the engine. Raises EngineUnavailable when it cannot take them."""
        if self.engine_driver is None:
            self.publish(items)
        else:
            await self.engine_driver.publish(items)

    def publish(self, items: Sequence[Any]) -> None:
        """Publish now (memory engine); through Redis in the background (Redis engine: failures
        are logged; the publish API uses publish_items to answer 503 instead)."""
        if not isinstance(self.broker, MemoryEngine):
            self.spawn(self._publish_quietly(items))
            return
        loop = asyncio.get_running_loop()
        result = self.broker.publish(items, loop.time())
        self.wake(result.woken)
        self._arm_broker_timer()

    async def _publish_quietly(self, items: Sequence[Any]) -> None:
        with contextlib.suppress(EngineUnavailable):  # logged by the driver
            await self.publish_items(items)

    def resume(self, sub: Subscriber, last_id: str) -> None:
        """Deliver what `sub` missed after `last_id` from the history (now, or once read)."""
        result = self.broker.resume(sub, last_id, asyncio.get_running_loop().time())
        self.wake(result.woken)

    def wake(self, woken: Sequence[Any]) -> None:
        dirty = self._dirty
        for sub in woken:
            dirty[sub.owner] = None
        if dirty and not self._flush_scheduled:
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            if self._flush_since is None:
                self._flush_since = loop.time()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write to the connections that have output, FLUSH_SLICE at a time.

        One pass over thousands of connections costs a write() each (~10 us here). Between
        slices the loop runs again, reads publishes and appends them to the buffers of the
        connections still waiting, which then go out in the same write: under load the
        batches grow by themselves; at light load the first slice writes at once
        (DESIGN.md, "Performance model"). `_dirty` is an insertion-ordered dict, so
        connections are served first come, first served.
        """
        dirty = self._dirty
        if len(dirty) <= FLUSH_SLICE:
            self._dirty = {}
            self._flush_scheduled = False
            for conn in dirty:
                conn.flush_output()
            if self._flush_since is not None:
                self.write_latency.observe(asyncio.get_running_loop().time() - self._flush_since)
                self._flush_since = None
            return
        batch = list(itertools.islice(dirty, FLUSH_SLICE))
        for conn in batch:
            del dirty[conn]
        for conn in batch:
            conn.flush_output()
        asyncio.get_running_loop().call_soon(self._flush)

    def _arm_broker_timer(self) -> None:
        deadline = self.broker.next_deadline()
        if self._broker_timer is not None:
            self._broker_timer.cancel()
            self._broker_timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._broker_timer = loop.call_at(deadline, self._on_broker_timer)

    def _on_broker_timer(self) -> None:
        self._broker_timer = None
        result = self.broker.handle_timer(asyncio.get_running_loop().time())
        self.wake(result.woken)
        self._arm_broker_timer()

    # --- toward the origin ---

    def sign(self, route: Route | None) -> bytes | None:
        if route is not None and route.sig_key:
            key: SigningKey | None = parse_key_spec(route.sig_key, read_file=_read_file)
        else:
            key = self.sig_key
        if key is None:
            return None
        iss = (route.sig_iss if route is not None else None) or self.config.sig_iss
        return mint_sig(key, iss, time.time()).encode("ascii")

    async def call_origin(
        self,
        route: Route | None,
        targets: Sequence[Target],
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> tuple[Any, Target | None]:
        """Send a request to the first target that connects; the starter kit answers in process.
        Returns (OriginResponse or _Answer, target). Raises OriginError when every target failed."""
        if route is None or any(t.kind == "test" for t in targets):
            status, reason, rheaders, rbody = _starter.handle(
                method.decode("latin-1"), path.decode("latin-1"), headers, body
            )
            return _Answer(status, reason, list(rheaders), rbody), None
        last: OriginError | None = None
        loop = asyncio.get_running_loop()
        for target in targets:
            started = loop.time()
            try:
                response = await self.origin.request(
                    target.host,
                    target.port,
                    method,
                    path,
                    headers,
                    body,
                    ssl=target.ssl,
                    insecure=target.insecure,
                    server_hostname=target.host_header,
                )
            except OriginError as exc:
                last = exc
                if exc.kind != "connect":
                    raise
                continue
            self.origin_latency.observe(loop.time() - started)
            return response, target
        assert last is not None
        raise last


def _mtime(path: str) -> tuple[float, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime, st.st_size


def _key_spec(value: str) -> str:
    """`--sig-key` also takes the path of a PEM key file as it is (`key.pem`), besides Pushpin's
    forms (a secret, `base64:...`, `file:...`)."""
    if value.endswith((".pem", ".key")) and os.path.isfile(value):
        return "file:" + value
    return value


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _host_of(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"host":
            return value.decode("latin-1")
    return ""


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = _header(request.headers, b"upgrade")
    return request.method == b"GET" and upgrade is not None and upgrade.lower() == b"websocket"


class ClientConnection(asyncio.Protocol):
    """One client connection: HTTP/1.1 requests (h11), then maybe a held session or a WebSocket."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.config = server.config
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.config.max_request_header_size
        )
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.busy = False  # a request is being handled (origin call, hold, WebSocket)
        self.session: ResponseHold | StreamHold | GripWebSocket | None = None
        self.subscriber: Subscriber | None = None
        self.ws: WsConnection | None = None
        self._ws_message = bytearray()
        self._ws_text = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._paused = False
        self._closed = False
        self._route: Route | None = None
        self._targets: Sequence[Target] = ()
        self._hold_request: h11.Request | None = None
        self._origin_ws: OriginWebSocket | None = None
        self._resume_from: str | None = None  # a WebSocket's last-event-id, until subscribed

    # --- transport callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)  # uvloop: no subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if len(self.server.connections) >= self.config.max_connections:
            # over the limit: a short answer rather than a silent reset, then close
            transport.write(_OVERLOADED)
            self._closed = True
            transport.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self._cancel_timer()
        session = self.session
        if session is not None:
            loop = asyncio.get_running_loop()
            if isinstance(session, GripWebSocket):
                self._perform_ws(session.client_gone(loop.time()))
            else:
                self._perform_hold(session.client_gone())
        elif self.subscriber is not None:
            self.server.broker.hub.remove(self.subscriber)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:
            self._ws_received(data)
            return
        try:
            self.h11.receive_data(data)
        except h11.RemoteProtocolError:
            self._fail(400, b"Bad Request\n")
            return
        self._process()

    def eof_received(self) -> bool | None:
        if self.ws is None:
            with contextlib.suppress(h11.RemoteProtocolError):
                self.h11.receive_data(b"")
            if not self.busy:
                self._process()
        return None

    # --- HTTP requests ---

    def _process(self) -> None:
        while not self.busy and not self._closed:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 400 and "exceeded" in str(exc):
                    status = 431
                self._fail(status, h11_reason(status) + b"\n")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > self.config.max_request_header_size:
                    # h11 bounds only incomplete heads; a complete one can still be too large
                    self._fail(431, b"Request header fields too large.\n")
                    return
                self.request = event
                self.body = bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > self.config.max_request_body:
                    self._fail(413, b"Request body too large.\n")
                    return
            elif isinstance(event, h11.EndOfMessage):
                assert self.request is not None
                self.busy = True
                self.server.spawn(self._handle(self.request, bytes(self.body)))
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _fail(self, status: int, body: bytes) -> None:
        """Answer an unusable request and close the connection."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError):
                self._send_whole(
                    status, h11_reason(status), [(b"Content-Type", b"text/plain")], body, close=True
                )
        self._close()

    def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data and self.transport is not None and not self._closed:
            self.transport.write(data)

    def _send_whole(
        self,
        status: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        close: bool = False,
    ) -> None:
        out = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"connection")]
        out.append((b"Content-Length", str(len(body)).encode()))
        if close:
            out.append((b"Connection", b"close"))
        self._send(h11.Response(status_code=status, reason=reason, headers=out))
        if body:
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())

    def _request_done(self) -> None:
        """The response is complete: serve the next request on this connection, or close."""
        self.session = None
        self.subscriber = None
        self._cancel_timer()
        if self._closed:
            return
        if self.server.closing:
            self._close()
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.busy = False
            self._process()
        elif self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            self._close()
        else:
            self.busy = False
            self._process()

    def _abort(self) -> None:
        """Drop the connection now, discarding what it has not read (slow consumer)."""
        self.session = None
        self.subscriber = None
        self._cancel_timer()
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.abort()

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()

    async def _handle(self, request: h11.Request, body: bytes) -> None:
        try:
            if _is_websocket_upgrade(request):
                await self._handle_websocket(request)
            else:
                await self._handle_http(request, body)
        except Exception:
            log.exception("error handling %s %s", request.method, request.target)
            if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE) and self.ws is None:
                self._fail(500, b"Internal Server Error\n")
            else:
                self._close()

    def _route_for(self, request: h11.Request, proto: str) -> Route | None:
        table = self.server.routes
        if table is None:
            return None
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        return table.match(_host_of(request.headers), path, proto=proto)  # type: ignore[arg-type]

    def _origin_path(self, route: Route | None, target: bytes) -> bytes:
        if route is None:
            return target
        path, sep, query = target.partition(b"?")
        rewritten = route.rewrite_path(path.decode("latin-1")).encode("latin-1")
        return rewritten + sep + query

    def _request_headers(
        self,
        route: Route | None,
        request: h11.Request,
        body_length: int,
        *,
        websocket: bool = False,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> list[tuple[bytes, bytes]]:
        grip = route is None or not route.no_grip
        host = None
        if route is not None and route.as_host:
            host = route.as_host.encode("latin-1")
        return origin_request_headers(
            request.headers,
            body_length=body_length,
            peer=self.peer,
            grip=grip,
            sig_token=self.server.sign(route) if grip else None,
            websocket=websocket,
            route_headers=route.headers if route is not None else (),
            host=host,
            extra=extra,
        )

    async def _handle_http(self, request: h11.Request, body: bytes) -> None:
        if self.server.routes is None and request.method == b"POST":
            path = request.target.split(b"?", 1)[0]
            if path == b"/test/publish":
                self._starter_publish(body)
                return
        route = self._route_for(request, "http")
        if self.server.routes is not None and route is None:
            self._respond_now(
                502, b"Bad Gateway", [(b"Content-Type", b"text/plain")], b"Route not found.\n"
            )
            return
        self._route = route
        self._targets = route.targets if route is not None else ()
        debug = self.config.debug or (route is not None and route.debug)
        answer = await self._origin_exchange(route, request, body, ())
        if answer is None:
            return
        try:
            instruct = await self._classify(answer, route, request)
        except InstructError as exc:
            detail = f"Failed to parse accept instructions: {exc.msg}\n".encode()
            self._respond_now(
                502,
                b"Bad Gateway",
                [(b"Content-Type", b"text/plain")],
                detail if debug else _ERROR_BODY,
            )
            return
        except OriginError as exc:
            self._origin_broke(exc)
            return
        if instruct is None:
            return  # relayed as it is
        self._log(request, "accept" if instruct.hold else str(instruct.status))
        self._start_hold(instruct, request, route, debug)

    async def _origin_exchange(
        self,
        route: Route | None,
        request: h11.Request,
        body: bytes,
        extra: Sequence[tuple[bytes, bytes]],
        *,
        method: bytes | None = None,
        target: bytes | None = None,
        targets: Sequence[Target] | None = None,
    ) -> Any:
        """One origin request on behalf of the client; None when an error was already answered."""
        headers = self._request_headers(route, request, len(body), extra=extra)
        try:
            response, _ = await self.server.call_origin(
                route,
                targets if targets is not None else self._targets,
                method or request.method,
                target if target is not None else self._origin_path(route, request.target),
                headers,
                body,
            )
        except OriginError as exc:
            log.info(
                "%s %s -> error: %s", request.method.decode(), request.target.decode("latin-1"), exc
            )
            status = 504 if exc.kind == "timeout" else 502
            detail = f"{exc}\n".encode() if self.config.debug else _ERROR_BODY
            self._respond_now(
                status, h11_reason(status), [(b"Content-Type", b"text/plain")], detail
            )
            return None
        return response

    async def _classify(
        self, answer: Any, route: Route | None, request: h11.Request
    ) -> Instruct | None:
        """GRIP instructions, or None after relaying a plain response."""
        grip = route is None or not route.no_grip
        if not grip or not is_grip_response(answer.headers):
            if isinstance(answer, _Answer):
                body = answer.body
            else:
                relayed = await self._relay(answer, request)
                if relayed is None:
                    return None
                body = relayed
            result = classify_response(
                answer.status, answer.reason, answer.headers, body, grip=False
            )
            assert isinstance(result, Passthrough)
            self._log(request, str(result.status))
            self._respond_now(result.status, result.reason, result.headers, body)
            return None
        if isinstance(answer, _Answer):
            body = answer.body
        else:
            limit = instruct_body_limit(answer.headers)
            body = await answer.read_body(limit if limit is not None else 16 * 1024 * 1024)
        uri = f"http://{_host_of(request.headers) or 'localhost'}{request.target.decode('latin-1')}"
        result = classify_response(
            answer.status, answer.reason, answer.headers, body, request_uri=uri
        )
        assert isinstance(result, Instruct)
        return result

    async def _relay(self, response: Any, request: h11.Request) -> bytes | None:
        """Relay a non-GRIP origin response, streaming its body. Small bodies come back whole
        (for the caller to send with a Content-Length); None once relayed by streaming."""
        length = _header(response.headers, b"content-length")
        if length is not None and length.isdigit() and int(length) <= 1024 * 1024:
            body: bytes = await response.read_body(int(length) + 1)
            return body
        headers = [
            (n, v)
            for n, v in response.headers
            if n.lower()
            not in (b"connection", b"keep-alive", b"transfer-encoding", b"content-encoding")
        ]
        self._log(request, str(response.status))
        self._send(
            h11.Response(status_code=response.status, reason=response.reason, headers=headers)
        )
        async for chunk in response:
            if self._closed:
                await response.aclose()
                return None
            self._send(h11.Data(data=chunk))
        self._send(h11.EndOfMessage())
        self._request_done()
        return None

    def _origin_broke(self, exc: OriginError) -> None:
        """The origin failed after answering (body cut short, garbage): 502 if nothing was sent
        to the client yet, else the client's response cannot be completed: close."""
        log.info("origin response failed: %s", exc)
        if self.h11.our_state is h11.SEND_RESPONSE:
            detail = f"{exc}\n".encode() if self.config.debug else _ERROR_BODY
            self._respond_now(502, b"Bad Gateway", [(b"Content-Type", b"text/plain")], detail)
        else:
            self._close()

    def _respond_now(
        self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        if self._closed:
            return
        self._send_whole(status, reason, headers, body)
        self._request_done()

    def _starter_publish(self, body: bytes) -> None:
        from gripcore._items import parse_publish_body

        try:
            items = parse_publish_body(_starter.parse_publish_form(body))
        except PublishError as exc:
            msg = (exc.msg + "\n").encode()
            self._respond_now(400, b"Bad Request", [(b"Content-Type", b"text/plain")], msg)
            return
        self.server.publish(items)
        self._respond_now(
            200, b"OK", [(b"Content-Type", b"application/json")], b'{"published": true}\n'
        )

    def _log(self, request: h11.Request, outcome: str) -> None:
        target = self._targets[0].authority if self._targets else "starter"
        log.info(
            "%s %s -> %s %s",
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
            target,
            outcome,
        )

    # --- holds ---

    @property
    def held(self) -> h11.Request:
        """The request being held (a long-poll, stream or WebSocket session)."""
        assert self._hold_request is not None
        return self._hold_request

    def _start_hold(
        self, instruct: Instruct, request: h11.Request, route: Route | None, debug: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        prefix = route.prefix if route is not None else ""
        implicit = [c for t in self._targets for c in t.sub]
        if instruct.hold is None and instruct.next_link is None:
            self._respond_now(instruct.status, instruct.reason, instruct.headers, instruct.body)
            return
        self._hold_request = request
        if instruct.hold == "response":
            sub = Subscriber(Transport.RESPONSE, owner=self)
            self.subscriber = sub
            self.session = ResponseHold(
                self.server.broker.hub,
                sub,
                instruct,
                loop.time(),
                channel_prefix=prefix,
                implicit_channels=implicit,
            )
            self._after_session_change()
            return
        chunked = self.h11.their_http_version == b"1.1"
        sub = Subscriber(
            Transport.STREAM, owner=self, framing=Framing.CHUNKED if chunked else Framing.RAW
        )
        headers = [(n, v) for n, v in instruct.headers if n.lower() != b"content-length"]
        if chunked:
            headers.append((b"Connection", b"Transfer-Encoding"))  # as Pushpin sends it
        self._send(
            h11.Response(status_code=instruct.status, reason=instruct.reason, headers=headers)
        )
        self.subscriber = sub
        session = StreamHold(
            self.server.broker.hub,
            sub,
            instruct,
            loop.time(),
            channel_prefix=prefix,
            implicit_channels=implicit,
            debug=debug,
        )
        self.session = session
        last_id = resume_id(request.target, request.headers)
        if last_id is not None:
            self.server.resume(sub, last_id)
        self._perform_hold(session.take_actions())
        self.flush()

    def _after_session_change(self) -> None:
        self.server.broker.sync()
        self.flush()

    def flush_output(self) -> None:
        """The fan-out pass's call: when the hub left only bytes, write them and stop there.
        Writing moves an idle keep-alive's deadline later, never earlier, so a timer already
        armed stays right (see _arm_timer); anything else goes through `flush`."""
        sub = self.subscriber
        session = self.session
        if sub is None or session is None or self._closed or sub.events or self._timer_at is None:
            self.flush()
            return
        buf = sub.outbuf
        if buf and not self._paused and self.transport is not None:
            data = bytes(buf)
            buf.clear()
            self.transport.write(data)
            session.wrote(asyncio.get_running_loop().time())

    def flush(self) -> None:
        """Drain the subscriber: act on hub events, write pending bytes, re-arm the timer."""
        sub = self.subscriber
        session = self.session
        if sub is None or session is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        if sub.events:
            events = sub.take_events()
            if any(isinstance(e, BufferOverflow) for e in events):
                self.server.slow_consumers.inc()
                log.warning(
                    "closing slow consumer %s on route %s (output buffer full)",
                    self.peer,
                    self._route.id if self._route is not None else "starter",
                )
            dropped = sum(e.count for e in events if isinstance(e, MessagesDropped))
            if dropped:
                log.info(
                    "dropped %d oldest messages for slow consumer %s on route %s",
                    dropped,
                    self.peer,
                    self._route.id if self._route is not None else "starter",
                )
            if isinstance(session, GripWebSocket):
                self._perform_ws(session.handle_events(events, loop.time()))
            else:
                self._perform_hold(session.handle_events(events))
            if self.session is not session:
                return
        if sub.outbuf and not self._paused and self.transport is not None:
            self.transport.write(sub.take_output())
            session.wrote(loop.time())
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure a timer fires by the session's next deadline. A timer already set for an
        earlier time is kept (it fires, finds nothing due and re-arms): idle keep-alives move
        their deadline on every write, and re-arming per write would cost more than the write."""
        session = self.session
        deadline = session.next_deadline() if session is not None else None
        if deadline is None:
            if self._timer is not None:
                self._cancel_timer()
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        self._cancel_timer()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        session = self.session
        if session is None or self._closed:
            return
        now = asyncio.get_running_loop().time()
        if isinstance(session, GripWebSocket):
            self._perform_ws(session.handle_timer(now))
        else:
            self._perform_hold(session.handle_timer(now))
        self.flush()

    def _perform_hold(self, actions: Sequence[HoldAction]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                self.server.broker.sync()
                self._respond_now(action.status, action.reason, action.headers, action.body)
            elif isinstance(action, EndStream):
                if action.abort:
                    self._abort()
                else:
                    self._end_stream()
            elif isinstance(action, Retry):
                self.server.spawn(self._retry(action))
            elif isinstance(action, FetchNextLink):
                self.server.spawn(self._fetch_next_link(action))
            elif isinstance(action, PostGoneLink):
                self.server.spawn(self._post_link(action.url))
        self.server.broker.sync()

    def _end_stream(self) -> None:
        """Write what is pending, end the body (last chunk), then keep-alive or close."""
        session = self.session
        if isinstance(session, StreamHold) and self.transport is not None and not self._closed:
            assert self.subscriber is not None
            self.transport.write(self.subscriber.take_output())
            # the body bytes went around h11, which tracks no size for chunked or
            # close-delimited bodies; it writes the end of the body and moves to DONE
            self._send(h11.EndOfMessage())
            self._request_done()
            return
        self.session = None
        self.subscriber = None
        self._cancel_timer()
        self._close()

    async def _retry(self, action: Retry) -> None:
        session = self.session
        request = self.held
        assert isinstance(session, ResponseHold)
        answer = await self._origin_exchange(
            self._route, request, bytes(self.body), action.grip_last
        )
        if answer is None:
            session.client_gone()
            return
        try:
            instruct = await self._classify(answer, self._route, request)
        except OriginError as exc:
            session.client_gone()
            self._origin_broke(exc)
            return
        except InstructError:
            session.client_gone()
            self._respond_now(502, b"Bad Gateway", [(b"Content-Type", b"text/plain")], _ERROR_BODY)
            return
        if self.session is not session:
            return
        loop = asyncio.get_running_loop()
        self._perform_hold(session.retry_response(instruct, loop.time()))
        self.flush()

    async def _fetch_next_link(self, action: FetchNextLink) -> None:
        session = self.session
        assert isinstance(session, StreamHold)
        request = self.held
        loop = asyncio.get_running_loop()
        instruct: Instruct | None = None
        destination = (
            link_destination(
                action.url,
                request_host=_host_of(request.headers),
                targets=self._targets,
                allowed=self.server.link_hosts,
            )
            if self._targets
            else None
        )
        if destination is not None or self.server.routes is None:
            target, path = destination if destination is not None else (None, action.url.encode())
            headers = self._request_headers(self._route, request, 0, extra=action.grip_last)
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            try:
                response, _ = await self.server.call_origin(
                    self._route, [target] if target is not None else (), b"GET", path, headers, b""
                )
                if 200 <= response.status < 300:
                    instruct = await self._classify_link(response, request)
            except (OriginError, ProtocolError) as exc:
                log.info("next link %s failed: %s", action.url, exc)
        else:
            log.warning("next link %s refused: not a route target", action.url)
        if self.session is not session:
            return
        self._perform_hold(session.next_link_response(instruct, loop.time()))
        self.flush()

    async def _classify_link(self, response: Any, request: h11.Request) -> Instruct:
        body = (
            response.body
            if isinstance(response, _Answer)
            else await response.read_body(16 * 1024 * 1024)
        )
        uri = f"http://{_host_of(request.headers) or 'localhost'}{request.target.decode('latin-1')}"
        if not is_grip_response(response.headers):
            return Instruct(status=response.status, reason=response.reason, body=body)
        result = classify_response(
            response.status, response.reason, response.headers, body, request_uri=uri
        )
        assert isinstance(result, Instruct)
        return result

    async def _post_link(self, url: str) -> None:
        request = self.held
        destination = (
            link_destination(
                url,
                request_host=_host_of(request.headers),
                targets=self._targets,
                allowed=self.server.link_hosts,
            )
            if self._targets
            else None
        )
        if destination is None:
            return
        target, path = destination
        headers = self._request_headers(self._route, request, 0)
        try:
            response, _ = await self.server.call_origin(
                self._route, [target], b"POST", path, headers, b""
            )
            if not isinstance(response, _Answer):
                await response.aclose()
        except OriginError as exc:
            log.info("gone link %s failed: %s", url, exc)

    # --- WebSocket ---

    async def _handle_websocket(self, request: h11.Request) -> None:
        route = self._route_for(request, "ws")
        if self.server.routes is not None and route is None:
            self._respond_now(
                502, b"Bad Gateway", [(b"Content-Type", b"text/plain")], b"Route not found.\n"
            )
            return
        targets = list(route.targets) if route is not None else []
        self._route = route
        self._hold_request = request
        sub = Subscriber(Transport.WEBSOCKET, owner=self)
        loop = asyncio.get_running_loop()
        prefix = route.prefix if route is not None else ""
        debug = self.config.debug or (route is not None and route.debug)
        session: GripWebSocket
        if not targets or targets[0].over_http or targets[0].kind == "test":
            # WebSocket-over-HTTP (the starter kit's origin speaks it too)
            self._targets = [t for t in targets if t.over_http or t.kind == "test"]
            session = WebSocketGateway(
                self.server.broker.hub,
                sub,
                connection_id=os.urandom(16).hex(),
                channel_prefix=prefix,
                implicit_channels=[c for t in self._targets for c in t.sub],
                one_event=any(t.one_event for t in self._targets),
                debug=debug,
                max_pending=200_000,
                jitter=lambda: int.from_bytes(os.urandom(2), "big") / 65536,
            )
        else:
            self._targets = [t for t in targets if not t.over_http and t.kind == "net"]
            session = WebSocketProxy(
                self.server.broker.hub,
                sub,
                channel_prefix=prefix,
                implicit_channels=[c for t in self._targets for c in t.sub],
                debug=debug,
            )
        self.subscriber = sub
        self.session = session
        self._resume_from = resume_id(request.target, request.headers)
        self._perform_ws(session.start(loop.time()))

    def _perform_ws(self, actions: Sequence[WebSocketAction]) -> None:
        for action in actions:
            if isinstance(action, OriginPost):
                self.server.spawn(self._ws_post(action))
            elif isinstance(action, SendToOrigin):
                if self._origin_ws is not None:
                    self._origin_ws.send(action)
            elif isinstance(action, CloseOrigin):
                if self._origin_ws is not None:
                    self._origin_ws.close()
                    self._origin_ws = None
            elif isinstance(action, ConnectOrigin):
                self.server.spawn(self._connect_origin_ws())
            elif isinstance(action, AcceptClient):
                self._accept_websocket(action.headers)
            elif isinstance(action, RejectClient):
                self.session = None
                self.subscriber = None
                self._respond_now(action.status, action.reason, action.headers, action.body)
            elif isinstance(action, CloseClient):
                sub = self.subscriber
                if action.abort:
                    self._abort()
                    continue
                if sub is not None and self.transport is not None and not self._closed:
                    self.transport.write(sub.take_output())
                self.session = None
                self.subscriber = None
                self._cancel_timer()
                self._close()
        if self._resume_from is not None and self.subscriber and self.subscriber.channels:
            self.server.resume(self.subscriber, self._resume_from)  # the first subscriptions
            self._resume_from = None
        self.server.broker.sync()

    async def _ws_post(self, action: OriginPost) -> None:
        gateway = self.session
        if not isinstance(gateway, WebSocketGateway):
            return
        request = self.held
        headers = self._request_headers(
            self._route, request, len(action.body), websocket=True, extra=action.headers
        )
        loop = asyncio.get_running_loop()
        try:
            response, _ = await self.server.call_origin(
                self._route,
                self._targets,
                b"POST",
                self._origin_path(self._route, request.target),
                headers,
                action.body,
            )
            body = (
                response.body
                if isinstance(response, _Answer)
                else await response.read_body(1_000_000)
            )
        except OriginError as exc:
            if action.expect_answer and self.session is gateway:
                log.info("WebSocket-over-HTTP request failed: %s", exc)
                self._perform_ws(gateway.origin_failed(str(exc), loop.time()))
                self.flush()
            return
        if not action.expect_answer or self.session is not gateway:
            return
        self._perform_ws(
            gateway.origin_response(
                response.status, response.reason, response.headers, body, loop.time()
            )
        )
        self.flush()

    async def _connect_origin_ws(self) -> None:
        """Open this client's own WebSocket to the origin (the first target that connects)."""
        proxy = self.session
        assert isinstance(proxy, WebSocketProxy)
        request = self.held
        loop = asyncio.get_running_loop()
        headers = self._request_headers(self._route, request, 0, websocket=True)
        key = base64.b64encode(os.urandom(16))
        headers += [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", key),
            (b"Sec-WebSocket-Version", b"13"),
        ]
        path = self._origin_path(self._route, request.target)
        for target in self._targets:
            origin_ws = OriginWebSocket(self, proxy, path, headers, key)
            # set before connecting: the handshake answer (and the client's first frames after
            # it) can arrive before create_connection returns here
            self._origin_ws = origin_ws
            try:
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda ws=origin_ws: ws,
                        target.host,
                        target.port,
                        ssl=_client_ssl(target),
                        server_hostname=(target.host_header or target.host) if target.ssl else None,
                    ),
                    self.config.origin_connect_timeout,
                )
            except (TimeoutError, OSError) as exc:
                log.info("WebSocket origin %s failed: %s", target.authority, exc)
                self._origin_ws = None
                continue
            if self.session is not proxy:  # the client left meanwhile
                origin_ws.close()
            return
        if self.session is proxy:
            self._perform_ws(proxy.origin_failed("could not connect to any target"))

    def _accept_websocket(self, extra: Sequence[tuple[bytes, bytes]]) -> None:
        request = self.held
        key = _header(request.headers, b"sec-websocket-key") or b""
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(key)),
            *extra,
        ]
        self._send(
            h11.InformationalResponse(
                status_code=101, headers=headers, reason=b"Switching Protocols"
            )
        )
        trailing, _ = self.h11.trailing_data
        self.ws = WsConnection(ConnectionType.SERVER)
        self._log(request, "ws")
        if trailing:
            self._ws_received(trailing)

    def _ws_received(self, data: bytes) -> None:
        ws = self.ws
        gateway = self.session
        assert ws is not None
        ws.receive_data(data)
        loop = asyncio.get_running_loop()
        actions: list[WebSocketAction] = []
        for event in ws.events():
            if not isinstance(gateway, GripWebSocket) or self.session is not gateway:
                break
            now = loop.time()
            if isinstance(event, TextMessage | BytesMessage):
                if not self._ws_message:
                    self._ws_text = isinstance(event, TextMessage)
                chunk = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                self._ws_message += chunk
                if len(self._ws_message) > 200_000:
                    actions += gateway.client_close(1009, "message too big", now)
                    continue
                if event.message_finished:
                    message = bytes(self._ws_message)
                    self._ws_message.clear()
                    actions += gateway.client_message(message, self._ws_text, now)
            elif isinstance(event, Ping):
                actions += gateway.client_ping(bytes(event.payload), now)
            elif isinstance(event, Pong):
                actions += gateway.client_pong(bytes(event.payload), now)
            elif isinstance(event, CloseConnection):
                code = int(event.code) if event.code is not None else None
                actions += gateway.client_close(code, event.reason or "", now)
        self._perform_ws(actions)
        self.flush()

    # --- lifecycle ---

    def shutdown(self) -> None:
        """Server stopping: end streams cleanly, close WebSockets with 1001, time out long-polls."""
        session = self.session
        if isinstance(session, GripWebSocket):
            self._perform_ws(session.shutdown())
        elif isinstance(session, StreamHold):
            session.client_gone()
            self._end_stream()
            self._close()
        elif isinstance(session, ResponseHold):
            response = session.timeout_response()
            session.client_gone()
            self._respond_now(response.status, response.reason, response.headers, response.body)
            self._close()
        elif not self.busy:
            self._close()
        # else: a request is waiting for the origin; it gets the grace period to finish


def _client_ssl(target: Target) -> ssl_module.SSLContext | None:
    if not target.ssl:
        return None
    context = ssl_module.create_default_context()
    if target.insecure:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


class OriginWebSocket(asyncio.Protocol):
    """The proxy's own WebSocket to the origin for one client: h11 for the handshake, wsproto
    for frames. Everything it sees goes to the client connection's `WebSocketProxy`."""

    def __init__(
        self,
        client: ClientConnection,
        proxy: WebSocketProxy,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        key: bytes,
    ) -> None:
        self.client = client
        self.proxy = proxy
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.h11: h11.Connection | None = h11.Connection(h11.CLIENT)
        self.ws: WsConnection | None = None
        self.response: h11.Response | None = None
        self.body = bytearray()
        self.message = bytearray()
        self.message_text = False
        self.closing = False
        self.request_bytes = (
            self.h11.send(h11.Request(method=b"GET", target=path, headers=headers)) or b""
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request_bytes)

    def _deliver(self, actions: Sequence[WebSocketAction]) -> None:
        if self.client.session is self.proxy:
            self.client._perform_ws(actions)
            self.client.flush()

    def data_received(self, data: bytes) -> None:
        try:
            if self.ws is None:
                self._handshake(data)
            else:
                self._frames(data)
        except (h11.ProtocolError, ProtocolError, ValueError) as exc:
            self.close()
            self._deliver(self.proxy.origin_failed(str(exc)))

    def _handshake(self, data: bytes) -> None:
        conn = self.h11
        assert conn is not None
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                accept = _header(event.headers, b"sec-websocket-accept")
                if accept != generate_accept_token(self.key):
                    raise ValueError("origin answered with a wrong Sec-WebSocket-Accept")
                trailing, _ = conn.trailing_data
                self.h11 = None
                self.ws = WsConnection(ConnectionType.CLIENT)
                now = asyncio.get_running_loop().time()
                self._deliver(self.proxy.origin_accepted(event.headers, now))
                if trailing:
                    self._frames(trailing)
                return
            if isinstance(event, h11.Response):
                self.response = event
            elif isinstance(event, h11.Data):
                self.body += event.data
                if len(self.body) > 100_000:
                    raise ValueError("origin rejection body too large")
            elif isinstance(event, h11.EndOfMessage) and self.response is not None:
                response = self.response
                self.close()
                self._deliver(
                    self.proxy.origin_rejected(
                        response.status_code, response.reason, response.headers, bytes(self.body)
                    )
                )
                return

    def _frames(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        ws.receive_data(data)
        actions: list[WebSocketAction] = []
        now = asyncio.get_running_loop().time()
        for event in ws.events():
            if isinstance(event, TextMessage | BytesMessage):
                if not self.message:
                    self.message_text = isinstance(event, TextMessage)
                self.message += (
                    event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                )
                if event.message_finished:
                    message = bytes(self.message)
                    self.message.clear()
                    actions += self.proxy.origin_message(message, self.message_text, now)
            elif isinstance(event, Ping):
                actions += self.proxy.origin_ping(bytes(event.payload))
            elif isinstance(event, Pong):
                actions += self.proxy.origin_pong(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                code = int(event.code) if event.code is not None else None
                if ws.state is ConnectionState.REMOTE_CLOSING:  # not an answer to ours
                    self._write(ws.send(event.response()))
                actions += self.proxy.origin_close(code, event.reason or "")
                self.close()
        self._deliver(actions)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and data:
            self.transport.write(data)

    def send(self, action: SendToOrigin) -> None:
        ws = self.ws
        if ws is None or self.closing:
            return
        event: Any
        if action.kind == "text":
            event = TextMessage(data=action.data.decode("utf-8"))
        elif action.kind == "binary":
            event = BytesMessage(data=action.data)
        elif action.kind == "ping":
            event = Ping(payload=action.data)
        elif action.kind == "pong":
            event = Pong(payload=action.data)
        else:
            event = CloseConnection(code=action.code or 1000, reason=action.reason or None)
        try:
            self._write(ws.send(event))
        except LocalWsProtocolError:
            self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self.transport = None
            self._deliver(self.proxy.origin_failed(str(exc) if exc else "origin closed"))


def h11_reason(status: int) -> bytes:
    from gripcore._instruct import reason_phrase

    return reason_phrase(status)


class PublishConnection(asyncio.Protocol):
    """The publish API: one h11 server connection; requests answered by the core."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=10_000)
        self.transport: asyncio.Transport | None = None
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.too_large = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.publish_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.publish_connections.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.h11.receive_data(data)
            self._process()
        except h11.RemoteProtocolError as exc:
            self._answer(exc.error_status_hint, b"text/plain", f"{exc}\n".encode(), close=True)

    def eof_received(self) -> bool | None:
        with contextlib.suppress(h11.RemoteProtocolError):
            self.h11.receive_data(b"")
            self._process()
        return None

    def _process(self) -> None:
        limit = self.server.config.max_publish_body
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request = event
                self.body = bytearray()
                self.too_large = False
                if (
                    event.method == b"POST"
                    and _header(event.headers, b"content-length") is None
                    and _header(event.headers, b"transfer-encoding") is None
                ):
                    self._answer(
                        411, b"text/plain", b"Request requires Content-Length.\n", close=True
                    )
                    return
                length = _header(event.headers, b"content-length")
                if limit and length is not None and length.isdigit() and int(length) > limit:
                    self.too_large = True
                    self._answer(
                        413,
                        b"text/plain",
                        f"Request body too large (limit {limit} bytes).\n".encode(),
                        close=True,
                    )
                    return
            elif isinstance(event, h11.Data):
                self.body += event.data
                if limit and len(self.body) > limit:
                    self._answer(
                        413,
                        b"text/plain",
                        f"Request body too large (limit {limit} bytes).\n".encode(),
                        close=True,
                    )
                    return
            elif isinstance(event, h11.EndOfMessage):
                if self._handle():  # answered once the engine took the items
                    return
                if not self._next_cycle():
                    return
            elif isinstance(event, h11.ConnectionClosed):
                if self.transport is not None:
                    self.transport.close()
                return

    def _next_cycle(self) -> bool:
        """After a response: close, or get ready for the next request (True: read on)."""
        if self.transport is None:
            return False
        if self.h11.our_state is h11.MUST_CLOSE:  # Connection: close, or HTTP/1.0
            self.transport.close()
            self.transport = None
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def _handle(self) -> bool:
        """Answer the request; True when the answer comes later (a remote engine)."""
        request = self.request
        assert request is not None
        config = self.server.config
        response = handle_publish_request(
            request.method,
            request.target,
            request.headers,
            bytes(self.body),
            publish_key=config.publish_key,
            max_body=config.max_publish_body,
            max_content_size=config.max_content_size,
            metrics=self.server.metrics.render,
            publish_iss=config.publish_iss,
            now=time.time(),
        )
        if response.items and self.server.engine_driver is not None:
            self.server.spawn(self._publish_remote(request, response))
            return True
        if response.items:
            self.server.publish(response.items)
            log.info("publish items=%d", len(response.items))
        self._send_response(response.status, response.headers, response.body)
        return False

    async def _publish_remote(self, request: h11.Request, response: PublishResponse) -> None:
        """Publish through the engine, then answer: 200, or 503 when it cannot take them.
        Pipelined requests wait (h11 pauses) until this answer is out."""
        try:
            await self.server.publish_items(response.items)
        except EngineUnavailable as exc:
            response = engine_unavailable_response(request.headers, str(exc))
        else:
            log.info("publish items=%d", len(response.items))
        self._send_response(response.status, response.headers, response.body)
        if self._next_cycle():
            self._process()

    def _answer(self, status: int, ctype: bytes, body: bytes, *, close: bool = False) -> None:
        self._send_response(status, [(b"Content-Type", ctype)], body, close=close)

    def _send_response(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, *, close: bool = False
    ) -> None:
        if self.transport is None or self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        out = [*list(headers), (b"Content-Length", str(len(body)).encode())]
        if close:
            out.append((b"Connection", b"close"))
        try:
            data = self.h11.send(
                h11.Response(status_code=status, headers=out, reason=h11_reason(status))
            )
            data += self.h11.send(h11.Data(data=body)) or b""
            data += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self.transport.close()
            return
        self.transport.write(data)
        if close:
            self.transport.close()
            self.transport = None


def run(config: Config, *, ready: Callable[[Server], None] | None = None) -> int:
    """Run a server until SIGINT/SIGTERM; SIGHUP reloads routes. Returns the exit status.
    Uses uvloop when it is installed (the `uvloop` extra)."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.run(_main(config, ready))
    return int(uvloop.run(_main(config, ready)))


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


def _announce(server: Server) -> None:
    """Say where we listen; with no routes, print the starter kit's banner for a newcomer."""
    assert server.publish_address is not None
    publish_url = _url(server.publish_address, "/publish/")
    for address in server.listen_addresses:
        # the address as bound (0.0.0.0 means every interface); the banner shows a local URL
        log.info("listening on http://%s (publish API %s)", _authority(address), publish_url)
    if server.routes is None:
        print(_starter.banner(_url(server.listen_addresses[0]), publish_url), flush=True)


async def _main(config: Config, ready: Callable[[Server], None] | None) -> int:
    import signal

    try:
        server = Server(config)
        await server.start()
    except EngineUnavailable as exc:
        print(f"gripcore serve: cannot start: engine unavailable: {exc}", file=sys.stderr)
        await server.close()
        return EXIT_ENGINE_UNAVAILABLE
    except (OSError, UnicodeDecodeError, ProtocolError) as exc:
        # a routes file that does not parse, a key that does not load, a port in use...
        print(f"gripcore serve: cannot start: {exc}", file=sys.stderr)
        return 2
    _announce(server)
    if ready is not None:
        ready(server)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_routes)
    await stop.wait()
    await server.close(config.shutdown_grace)
    return 0
