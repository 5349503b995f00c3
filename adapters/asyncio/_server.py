"""The asyncio driver: sockets, timers and the origin client around the sans-IO core.

Everything that decides anything lives in `gripcore`: the node (`gripcore._node.ProxyNode`:
broker, routes, signing, metrics, fan-out passes), each client connection
(`gripcore._connection.ProxyConnection`: HTTP, holds, WebSockets) and the publish API
(`gripcore._node.PublishConnection`). This module reads bytes and feeds them in, writes what
comes out, arms the timers the core asks for, and runs its origin *flows*: generators that yield
the origin I/O they need (`run_flow`). Per connection:

    read -> ProxyConnection -> write / timer / flow (origin request) -> ProxyConnection

Fan-out: a publish appends encoded items to each subscriber's output buffer and marks its
connection dirty; the node asks for one flush pass (`call_soon`), which writes 512 connections
per loop iteration, so a connection gets one `write()` per pass however many items arrived
(DESIGN.md, "Data flow of one publish").

Listeners are accepted from here (`Acceptor`), not by `loop.create_server`: out of descriptors,
asyncio's own accept loop logs a traceback and schedules a retry for every connection waiting
in the backlog (thousands a second); ours pauses the listener as the node says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl as ssl_module
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

from gripcore._config import Config
from gripcore._connection import OriginWsLink, ProxyConnection
from gripcore._engine import EngineUnavailable
from gripcore._errors import ProtocolError
from gripcore._items import Item
from gripcore._node import (
    ACCEPT_RESOURCE_ERRORS,
    ClientWritable,
    ConnectOriginWebSocket,
    DiscardBody,
    Flow,
    FlowOp,
    NextChunk,
    NodeServer,
    OriginRequest,
    PublishConnection,
    ReadBody,
    run_flow_step,
    unsupported_options,
)
from gripcore._originhttp import OriginError
from gripcore._routes import Target
from gripcore._systemd import READY, STOPPING, WATCHDOG, Notifier

from .._system import file_stamp, sd_notify, server_tls_context, system_node, systemd_notifier
from ._origin import OriginClient
from ._redis import RedisDriver
from ._scheduling import LoopScheduling
from ._workers import CLIENT_BACKLOG, PUBLISH_BACKLOG, Worker, _bind, run_workers
from ._zmq import ZmqIngress

__all__ = ["Server", "run"]

log = logging.getLogger("gripcore")

# Write-buffer marks for client transports: above HIGH the connection stops draining its
# subscriber buffer (so the hub's output limit applies to slow readers); below LOW it resumes.
WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024

# `gripcore serve`'s exit status when the engine (Redis) cannot be reached at start; 2 is for
# a configuration that cannot work, 1 for anything unexpected.
EXIT_ENGINE_UNAVAILABLE = 3

# Connections accepted per readiness event of a listener before the loop runs other work.
ACCEPT_BATCH = 64
# A TLS client has this long to finish its handshake (nginx: client_header_timeout covers it).
TLS_HANDSHAKE_TIMEOUT = 10.0

# How often the routes file is checked for changes (Pushpin watches it with a 1 s debounce).
ROUTES_POLL_INTERVAL = 1.0


def _clock() -> float:
    """The core's clock: CLOCK_MONOTONIC, the base of the loop's own `time()` (so deadlines go
    to `call_at` as they are), read afresh. uvloop's `loop.time()` is libuv's time, cached
    once per loop iteration in whole milliseconds: it left a flush slice's own duration out of
    `publish_to_write_seconds`."""
    return time.monotonic()


class Server(NodeServer, LoopScheduling):
    """One gripcore proxy: client listeners, the publish API and the node they share."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node = system_node(config, _clock)
        self.node.schedule_flush = self._schedule_flush
        self.node.set_broker_timer = self._set_broker_timer
        self.engine_driver = self.node.make_engine_driver(RedisDriver, self._publish_in_background)
        self.origin = OriginClient(
            connect_timeout=config.origin_connect_timeout,
            response_timeout=config.origin_response_timeout,
        )
        self._watcher: asyncio.Task[None] | None = None  # the routes-file watcher
        self.zmq = ZmqIngress(config, self.node)  # --push-in-spec / --push-in-sub-spec
        self.publish_connections: set[PublishProtocol] = set()
        self._servers: list[Acceptor] = []
        self._broker_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.listen_addresses: list[tuple[str, int]] = []
        self.tls_addresses: list[tuple[str, int]] = []
        self.tls_context: ssl_module.SSLContext | None = None  # --tls-listen; swapped on SIGHUP
        self.publish_address: tuple[str, int] | None = None

    # --- setup and shutdown ---

    async def _watch_routes(self, path: str) -> None:
        """Reload the routes file when it changes (polled: portable, and one stat a second)."""
        last = file_stamp(path)
        while True:
            await asyncio.sleep(ROUTES_POLL_INTERVAL)
            current = file_stamp(path)
            if current != last:
                last = current
                self.reload_routes()

    def reload(self) -> None:
        """SIGHUP: the routes, and the TLS certificate and key for new connections (held ones
        keep theirs); a certificate that does not load leaves the current one in place."""
        self.reload_routes()
        if self.tls_context is None:
            return
        try:
            self.tls_context = server_tls_context(self.config)
        except (OSError, ssl_module.SSLError) as exc:
            log.error("TLS certificate not reloaded, keeping the current one: %s", exc)
            return
        log.info("TLS certificate reloaded")

    async def start(self, worker: Worker | None = None) -> None:
        """Listen (on `worker`'s sockets when one of several worker processes, see _workers:
        then only worker 0 has the publish API) and start watching the routes file. Raises
        EngineUnavailable when the engine (Redis) cannot be reached."""
        if self.engine_driver is not None:
            await self.engine_driver.start()
        # per --listen address: its sockets (one per address the host resolves to)
        listeners: list[list[socket.socket]] = []
        publish: list[socket.socket] = []
        if worker is not None:
            listeners = [[sock] for sock in worker.listen]
            publish = [worker.publish] if worker.publish is not None else []
        else:
            try:
                for host, port in self.config.listen:
                    groups = _bind(host, port, 1, CLIENT_BACKLOG, share=False)
                    listeners.append([sock for group in groups for sock in group])
                host, port = self.config.publish_listen
                groups = _bind(host, port, 1, PUBLISH_BACKLOG, share=False)
                publish = [sock for group in groups for sock in group]
            except OSError:
                for sock in (sock for socks in listeners for sock in socks):
                    sock.close()
                raise
        for socks in listeners:
            self.listen_addresses.append(socks[0].getsockname()[:2])
            for sock in socks:
                self._servers.append(Acceptor(self, sock, "client", lambda: ClientProtocol(self)))
        if self.config.tls_listen:
            self.tls_context = server_tls_context(self.config)
            for host, port in self.config.tls_listen:
                for group in _bind(host, port, 1, CLIENT_BACKLOG, share=False):
                    for sock in group:
                        self.tls_addresses.append(sock.getsockname()[:2])
                        acceptor = Acceptor(
                            self, sock, "tls", lambda: ClientProtocol(self, tls=True), tls=True
                        )
                        self._servers.append(acceptor)
        for sock in publish:
            self._servers.append(Acceptor(self, sock, "publish", lambda: PublishProtocol(self)))
        if publish:
            self.publish_address = publish[0].getsockname()[:2]
        if worker is None or worker.publish is not None:
            self.zmq.start()  # with the publish API: in worker 0 only
        if self.config.routes_file and not self.config.routes:
            self._watcher = asyncio.ensure_future(self._watch_routes(self.config.routes_file))
        self.node.listening = True

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening, end every connection cleanly, and release every resource.

        Held sessions end at once (streams with their last chunk, long-polls with their
        timeout response, WebSockets with 1001); requests still waiting for the origin get up
        to `grace` seconds to be answered, then whatever is left is closed.
        """
        self.node.closing = True
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        for server in self._servers:
            server.close()
        await self.zmq.close()
        self.node.close_all()
        for publisher in list(self.publish_connections):
            publisher.close()
        in_flight = [t for t in self._tasks if not t.done()]
        if in_flight and grace > 0:
            await asyncio.wait(in_flight, timeout=grace)
        for conn in list(self.node.connections):
            conn.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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

    # --- the node's requests ---

    async def publish_items(self, items: Sequence[Item]) -> None:
        """Publish through the engine. Raises EngineUnavailable when it cannot take them."""
        if self.engine_driver is None:
            self.node.publish(items)
        else:
            await self.engine_driver.publish(items)

    def _publish_in_background(self, items: Sequence[Item]) -> None:
        self.spawn(self._publish_quietly(items))

    async def _publish_quietly(self, items: Sequence[Item]) -> None:
        with contextlib.suppress(EngineUnavailable):  # logged by the driver
            await self.publish_items(items)

    async def run_flow(self, flow: Flow) -> None:
        """Run a core flow: perform each operation it yields and send back the result (or
        throw the error in)."""
        value: Any = None
        error: BaseException | None = None
        while (op := run_flow_step(flow, value, error)) is not None:
            value, error = None, None
            try:
                value = await self._perform(op)
            except Exception as exc:  # OriginError and request errors go back into the flow
                error = exc

    async def _perform(self, op: FlowOp) -> Any:
        if isinstance(op, ReadBody):
            return await op.response.read_body(op.limit)
        if isinstance(op, NextChunk):
            return await anext(op.response, None)
        if isinstance(op, DiscardBody):
            return await op.response.aclose()
        if isinstance(op, ClientWritable):
            return await op.io.wait_writable()
        if isinstance(op, OriginRequest):
            t = op.target
            return await self.origin.request(
                t.host,
                t.port,
                op.method,
                op.path,
                op.headers,
                op.body,
                ssl=t.ssl,
                insecure=t.insecure,
                server_hostname=t.host_header,
            )
        assert isinstance(op, ConnectOriginWebSocket)
        return await self._connect_origin_ws(op.target, op.link)

    async def _connect_origin_ws(self, target: Target, link: OriginWsLink) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: OriginWsProtocol(link),
                    target.host,
                    target.port,
                    ssl=_client_ssl(target),
                    server_hostname=(target.host_header or target.host) if target.ssl else None,
                ),
                self.config.origin_connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            raise OriginError("connect", str(exc) or type(exc).__name__) from exc


class Acceptor:
    """One listening socket: accepts on the loop's readiness callbacks and hands each socket
    to the loop as a transport for `factory`'s protocol. Out of descriptors (EMFILE and kin),
    it stops watching the socket for the pause the node says (`ProxyNode.accept_failed`, which
    counts and logs it), instead of retrying a listener that stays readable in a busy loop."""

    def __init__(
        self,
        server: Server,
        sock: socket.socket,
        name: str,
        factory: Callable[[], asyncio.Protocol],
        *,
        tls: bool = False,
    ) -> None:
        self.server = server
        self.tls = tls
        self.sock = sock
        self.name = name
        self.factory = factory
        self.loop = asyncio.get_running_loop()
        self._resume: asyncio.TimerHandle | None = None
        self._closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in ACCEPT_RESOURCE_ERRORS:
                    log.warning("%s listener: accept failed: %s", self.name, exc)
                    return
                pause = self.server.node.accept_failed(self.name, exc)
                self.loop.remove_reader(self.sock.fileno())
                self._resume = self.loop.call_later(pause, self._resume_accepting)
                return
            conn.setblocking(False)
            self.server.spawn(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            if self.tls:  # the context of the moment: SIGHUP swaps in a renewed certificate
                await self.loop.connect_accepted_socket(
                    self.factory,
                    conn,
                    ssl=self.server.tls_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                )
            else:
                await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:  # gone before it was set up
            conn.close()

    def _resume_accepting(self) -> None:
        self._resume = None
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _client_ssl(target: Target) -> ssl_module.SSLContext | None:
    if not target.ssl:
        return None
    context = ssl_module.create_default_context()
    if target.insecure:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


class ClientProtocol(asyncio.Protocol):
    """One client socket, driving a core `ProxyConnection` (its `ConnectionIO`)."""

    def __init__(self, server: Server, *, tls: bool = False) -> None:
        self.server = server
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.conn: ProxyConnection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()  # clear while the transport is over its high mark
        self._writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)  # uvloop: no subclass
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        # the fan-out pass writes through this: the transport's own method, one call less
        self.write = transport.write  # type: ignore[method-assign]
        peer = transport.get_extra_info("peername")
        conn = ProxyConnection(self.server.node, self, peer[0] if peer else "")
        conn.tls = self.tls
        if conn.connection_made():
            self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_timer()
        self._writable.set()
        if self.conn is not None:
            self.conn.connection_lost()

    def pause_writing(self) -> None:
        self._writable.clear()
        if self.conn is not None:
            self.conn.pause_writing()

    def resume_writing(self) -> None:
        self._writable.set()
        if self.conn is not None:
            self.conn.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.receive_data(data)

    def eof_received(self) -> bool | None:
        if self.conn is not None:
            self.conn.eof_received()
        return None

    # ConnectionIO

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close_write(self) -> None:
        transport = self.transport
        if transport is not None:
            if transport.can_write_eof():
                transport.write_eof()
            else:  # TLS: no half-close
                transport.close()

    async def wait_writable(self) -> None:
        await self._writable.wait()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def set_timer(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self.conn is not None:
            self.conn.on_timer()

    def spawn(self, flow: Flow) -> None:
        self.server.spawn(self.server.run_flow(flow))


class OriginWsProtocol(asyncio.Protocol):
    """The socket of a core `OriginWsLink` (its `LinkIO`)."""

    def __init__(self, link: OriginWsLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.link.attach(self)

    def data_received(self, data: bytes) -> None:
        self.link.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.link.connection_lost(str(exc) if exc else None)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


class PublishProtocol(asyncio.Protocol):
    """The publish API: one socket driving a core `PublishConnection`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.publish = PublishConnection(server.node)
        self.transport: asyncio.Transport | None = None
        self._publishing = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.publish_connections.add(self)
        self._write(*self.publish.connection_made())

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.publish_connections.discard(self)
        self.publish.connection_lost()
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool | None:
        self._feed(b"")
        return None

    def _feed(self, data: bytes) -> None:
        self._write(*self.publish.receive_data(data))

    def _write(self, out: bytes, close: bool) -> None:
        if self.transport is None:
            return
        if out:
            self.transport.write(out)
        if close:
            self.transport.close()
            self.transport = None
            return
        if self.publish.take_half_close() and self.transport.can_write_eof():
            self.transport.write_eof()
        if self.publish.awaiting is not None and not self._publishing:
            self._publishing = True
            self.server.spawn(self._publish_remote(self.publish.awaiting))
        self._arm_timer()

    def _arm_timer(self) -> None:
        """The core's read deadline; a timer set for an earlier time is kept (it re-arms)."""
        deadline = self.publish.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self._write(*self.publish.handle_timer(self.server.node.clock()))

    async def _publish_remote(self, items: Sequence[Item]) -> None:
        """Publish through the engine, then answer: 200, or 503 when it cannot take them.
        Pipelined requests wait (h11 pauses) until this answer is out."""
        error: str | None = None
        try:
            await self.server.publish_items(items)
        except EngineUnavailable as exc:
            error = str(exc)
        self._publishing = False
        self._write(*self.publish.engine_answered(error))


def run(config: Config, *, ready: Callable[[Server], None] | None = None) -> int:
    """Run a server until SIGINT/SIGTERM; SIGHUP reloads routes. Returns the exit status.
    Uses uvloop when it is installed (the `uvloop` extra). With `config.workers` > 1, runs that
    many worker processes under a supervisor (_workers; `ready` is then not called)."""
    problem = unsupported_options(config)
    if problem is not None:
        print(f"gripcore serve: {problem}", file=sys.stderr)
        return 2
    if config.workers > 1:
        return run_workers(config, lambda worker: _run_loop(_main(config, None, worker)))
    return _run_loop(_main(config, ready))


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    # the loop runs outside the `except ImportError` block: inside it, every exception logged
    # while serving would carry the ImportError as its context
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        uvloop = None
    if uvloop is None:
        return asyncio.run(main)
    return int(uvloop.run(main))


async def _ping_watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        sd_notify(notifier, WATCHDOG)
        await asyncio.sleep(interval)


def _announce(server: Server) -> None:
    assert server.publish_address is not None
    for host, port in server.tls_addresses:
        shown = f"[{host}]" if ":" in host else host
        log.info("TLS client listener on https://%s:%d", shown, port)
    banner = server.node.announce(server.listen_addresses, server.publish_address)
    if banner is not None:
        print(banner, flush=True)


async def _main(
    config: Config, ready: Callable[[Server], None] | None, worker: Worker | None = None
) -> int:
    import signal

    try:
        server = Server(config)
        await server.start(worker)
        if worker is not None:
            await worker.attach(server)
    except EngineUnavailable as exc:
        print(f"gripcore serve: cannot start: engine unavailable: {exc}", file=sys.stderr)
        await server.close()
        return EXIT_ENGINE_UNAVAILABLE
    except (OSError, UnicodeDecodeError, ProtocolError) as exc:
        # a routes file that does not parse, a key that does not load, a port in use...
        print(f"gripcore serve: cannot start: {exc}", file=sys.stderr)
        return 2
    if worker is None or worker.publish is not None:
        _announce(server)
    if ready is not None:
        ready(server)
    # systemd (Type=notify): one process speaks to it; under --workers that is not a worker
    notifier = systemd_notifier() if worker is None else None
    sd_notify(notifier, READY)
    watchdog = None
    if notifier is not None and notifier.watchdog_interval is not None:
        watchdog = asyncio.ensure_future(_ping_watchdog(notifier, notifier.watchdog_interval))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    if worker is not None:
        worker.watch(stop)
    await stop.wait()
    sd_notify(notifier, STOPPING)
    await server.close(config.shutdown_grace)
    if watchdog is not None:  # pinged through the grace period, which systemd also times
        watchdog.cancel()
    if worker is not None:
        worker.close()
        return worker.status
    return 0
