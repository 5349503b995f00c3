"""The gevent driver: greenlets, sockets and timers around the sans-IO core.

The same proxy as adapters/asyncio, driven by gevent: every decision is the core's
(`gripcore._node.ProxyNode`, `gripcore._connection.ProxyConnection`,
`gripcore._node.PublishConnection`). Per client socket one greenlet reads and feeds the core;
the core's flows (origin requests) run in greenlets of their own and block only themselves.
No monkey-patching is needed or done: sockets come from `gevent.socket` and `gevent.server`.

Writes never block the caller. Fan-out passes and timers run as hub callbacks, where a greenlet
may not block, so `_Writer.write` sends what the kernel takes at once and queues the rest for a
writer greenlet; above WRITE_HIGH queued bytes the connection is told to pause (the hub's
output limit then applies to slow readers), below WRITE_LOW to resume: the asyncio transport's
write-buffer marks, the same numbers. A relay waiting for a paused client blocks on
`ClientIO.writable`. Out of descriptors, a listener pauses as the node says (`_Listener`)
rather than printing a traceback per failed accept.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.pool
import gevent.server
import gevent.socket
import gevent.ssl

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
from gripcore._originhttp import OriginError, describe_os_error
from gripcore._routes import Target
from gripcore._systemd import READY, STOPPING, WATCHDOG, Notifier

from .._system import file_stamp, sd_notify, system_node, systemd_notifier
from ._origin import OriginClient
from ._redis import RedisDriver
from ._zmq import ZmqIngress

__all__ = ["Server", "run"]

WRITE_HIGH = 256 * 1024
WRITE_LOW = 64 * 1024
READ_SIZE = 256 * 1024
EXIT_ENGINE_UNAVAILABLE = 3  # as the asyncio adapter: Redis unreachable at start
ROUTES_POLL_INTERVAL = 1.0


class _Writer:
    """Non-blocking writes to a gevent socket, with a queue drained by a greenlet."""

    def __init__(self, sock: gevent.socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()
        self.closed = False
        self._close_after = False
        self._shutdown_after = False
        self._drainer: gevent.Greenlet | None = None

    def write(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if not self.pending:
            try:
                sent = self.sock._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._hard_close()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self.pending += data
        if self._drainer is None:
            self._drainer = gevent.spawn(self._drain)
        if len(self.pending) > WRITE_HIGH:
            self.paused()

    def _drain(self) -> None:
        try:
            while self.pending and not self.closed:
                data = bytes(self.pending)
                self.pending.clear()
                self.sock.sendall(data)
                if len(self.pending) < WRITE_LOW:
                    self.resumed()
        except OSError:
            self._hard_close()
            return
        finally:
            self._drainer = None
        if self._close_after:
            self._hard_close()
        elif self._shutdown_after:
            self._shutdown()

    def close(self) -> None:
        """Close once what is queued has gone out."""
        if self.pending and self._drainer is not None:
            self._close_after = True
        else:
            self._hard_close()

    def close_write(self) -> None:
        """End the sending side once what is queued has gone out; reading goes on."""
        if self.pending and self._drainer is not None:
            self._shutdown_after = True
        else:
            self._shutdown()

    def _shutdown(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self.sock.shutdown(gevent.socket.SHUT_WR)

    def abort(self) -> None:
        self.pending.clear()
        self._hard_close()

    def _hard_close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pending.clear()
            self.sock.close()  # wakes a greenlet blocked reading it

    def paused(self) -> None:
        """Queued bytes went over WRITE_HIGH."""

    def resumed(self) -> None:
        """Queued bytes went under WRITE_LOW."""


class ClientIO(_Writer):
    """One client socket: the `ConnectionIO` of its core `ProxyConnection`."""

    def __init__(self, server: Server, sock: gevent.socket.socket) -> None:
        super().__init__(sock)
        self.server = server
        self.conn: ProxyConnection | None = None
        self._timer: Any = None
        self._paused = False
        self.writable = gevent.event.Event()  # clear while paused
        self.writable.set()

    def paused(self) -> None:
        if not self._paused and self.conn is not None:
            self._paused = True
            self.writable.clear()
            self.conn.pause_writing()

    def resumed(self) -> None:
        if self._paused and self.conn is not None:
            self._paused = False
            self.writable.set()
            self.conn.resume_writing()

    def _hard_close(self) -> None:
        super()._hard_close()
        self.writable.set()

    def wait_writable(self) -> None:
        self.writable.wait()

    def set_timer(self, deadline: float) -> None:
        self.cancel_timer()
        timer = gevent.get_hub().loop.timer(max(0.0, deadline - time.monotonic()))
        timer.start(self._fire)
        self._timer = timer

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    def _fire(self) -> None:
        self.cancel_timer()
        if self.conn is not None:
            self.conn.on_timer()

    def spawn(self, flow: Flow) -> None:
        self.server.spawn(self.server.run_flow, flow)


class _Listener(gevent.server.StreamServer):  # type: ignore[misc]
    """A StreamServer that, out of descriptors (EMFILE and kin), pauses for what the node says
    (`ProxyNode.accept_failed`: counted, logged once per interval) instead of printing a
    traceback per failed accept."""

    def __init__(self, node: Any, name: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node = node
        self._name = name
        self._pause: Any = None

    def do_read(self) -> Any:
        try:
            return super().do_read()
        except OSError as exc:
            if exc.errno not in ACCEPT_RESOURCE_ERRORS:
                raise
            pause = self._node.accept_failed(self._name, exc)
            self.stop_accepting()
            self._close_pause()
            self._pause = self.loop.timer(pause)
            self._pause.start(self._start_accepting_if_started)
            return None

    def _close_pause(self) -> None:
        if self._pause is not None:
            self._pause.close()
            self._pause = None

    def close(self) -> None:
        self._close_pause()
        super().close()


class _PublishTimer:
    """The read deadline of one publish connection, as a loop timer (a hub callback: it only
    writes what the core answers and closes, which wakes the greenlet reading the socket)."""

    def __init__(self, publisher: PublishConnection, io: _Writer) -> None:
        self.publisher = publisher
        self.io = io
        self._timer: Any = None
        self._at: float | None = None

    def arm(self) -> None:
        deadline = self.publisher.next_deadline()
        if deadline is None or (self._at is not None and self._at <= deadline):
            return
        self.cancel()
        self._at = deadline
        self._timer = gevent.get_hub().loop.timer(max(0.0, deadline - time.monotonic()))
        self._timer.start(self._fire)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._at = None

    def _fire(self) -> None:
        self.cancel()
        out, close = self.publisher.handle_timer(time.monotonic())
        self.io.write(out)
        if self.publisher.take_half_close():
            self.io.close_write()
        if close:
            self.io.close()
        else:
            self.arm()


class LinkIO(_Writer):
    """The socket of a core `OriginWsLink`."""


class Server(NodeServer):
    """One gripcore proxy on gevent: client listeners, the publish API and the shared node."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.node = system_node(config, time.monotonic)
        self.node.schedule_flush = self._schedule_flush
        self.node.set_broker_timer = self._set_broker_timer
        self.engine_driver = self.node.make_engine_driver(RedisDriver, self._publish_in_background)
        self.origin = OriginClient(
            connect_timeout=config.origin_connect_timeout,
            response_timeout=config.origin_response_timeout,
        )
        self._group = gevent.pool.Group()  # flows and other helper greenlets
        self.socket_greenlets = gevent.pool.Pool()  # one per client or publisher socket
        self._servers: list[_Listener] = []
        self._broker_timer: Any = None
        self._watcher: gevent.Greenlet | None = None
        self.zmq = ZmqIngress(config, self.node)  # --push-in-spec / --push-in-sub-spec
        self.publish_connections: set[_Writer] = set()
        self.listen_addresses: list[tuple[str, int]] = []
        self.publish_address: tuple[str, int] | None = None

    # --- setup and shutdown ---

    def start(self) -> None:
        """Listen. Raises EngineUnavailable when the engine (Redis) cannot be reached."""
        if self.engine_driver is not None:
            self.engine_driver.start()
        for host, port in self.config.listen:
            server = _Listener(
                self.node,
                "client",
                (host, port),
                self._serve_client,
                backlog=4096,
                spawn=self.socket_greenlets,
            )
            server.start()
            self._servers.append(server)
            self.listen_addresses.append(server.address[:2])
        host, port = self.config.publish_listen
        server = _Listener(
            self.node,
            "publish",
            (host, port),
            self._serve_publisher,
            backlog=1024,
            spawn=self.socket_greenlets,
        )
        server.start()
        self._servers.append(server)
        self.publish_address = server.address[:2]
        self.zmq.start()
        if self.config.routes_file and not self.config.routes:
            self._watcher = gevent.spawn(self._watch_routes, self.config.routes_file)
        self.node.listening = True

    def _watch_routes(self, path: str) -> None:
        last = file_stamp(path)
        while True:
            gevent.sleep(ROUTES_POLL_INTERVAL)
            current = file_stamp(path)
            if current != last:
                last = current
                self.reload_routes()

    def close(self, grace: float = 0.0) -> None:
        """Stop listening and end every connection cleanly (see the asyncio driver)."""
        self.node.closing = True
        if self._watcher is not None:
            self._watcher.kill()
        for server in self._servers:
            server.close()
        self.zmq.close()
        self.node.close_all()
        for publisher in list(self.publish_connections):
            publisher.close()
        if len(self._group) and grace > 0:
            self._group.join(timeout=grace)
        for conn in list(self.node.connections):
            conn.close()
        self._group.kill(block=True, timeout=5)
        self.socket_greenlets.join(timeout=5)
        self.origin.close()
        if self.engine_driver is not None:
            self.engine_driver.close()
        if self._broker_timer is not None:
            self._broker_timer.close()
        gevent.sleep(0)

    @property
    def greenlets(self) -> int:
        """Greenlets running for this server (sockets and flows), for leak checks."""
        return len(self._group) + len(self.socket_greenlets)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        return self._group.spawn(fn, *args)

    # --- the node's requests ---

    def publish_items(self, items: Sequence[Item]) -> None:
        """Publish through the engine. Raises EngineUnavailable when it cannot take them."""
        if self.engine_driver is None:
            self.node.publish(items)
        else:
            self.engine_driver.publish(items)

    def _publish_in_background(self, items: Sequence[Item]) -> None:
        self.spawn(self._publish_quietly, items)

    def _publish_quietly(self, items: Sequence[Item]) -> None:
        with contextlib.suppress(EngineUnavailable):  # logged by the driver
            self.publish_items(items)

    def _schedule_flush(self) -> None:
        gevent.get_hub().loop.run_callback(self.node.flush_pass)

    def _set_broker_timer(self, deadline: float | None) -> None:
        if self._broker_timer is not None:
            self._broker_timer.close()
            self._broker_timer = None
        if deadline is not None:
            timer = gevent.get_hub().loop.timer(max(0.0, deadline - time.monotonic()))
            timer.start(self._on_broker_timer)
            self._broker_timer = timer

    def _on_broker_timer(self) -> None:
        if self._broker_timer is not None:
            self._broker_timer.close()
            self._broker_timer = None
        self.node.handle_broker_timer()

    def run_flow(self, flow: Flow) -> None:
        """Run a core flow: perform each operation it yields, blocking this greenlet only."""
        value: Any = None
        error: BaseException | None = None
        while (op := run_flow_step(flow, value, error)) is not None:
            value, error = None, None
            try:
                value = self._perform(op)
            except Exception as exc:  # OriginError and request errors go back into the flow
                error = exc

    def _perform(self, op: FlowOp) -> Any:
        if isinstance(op, ReadBody):
            return op.response.read_body(op.limit)
        if isinstance(op, NextChunk):
            return op.response.next_chunk()
        if isinstance(op, DiscardBody):
            return op.response.close()
        if isinstance(op, ClientWritable):
            return op.io.wait_writable()
        if isinstance(op, OriginRequest):
            t = op.target
            return self.origin.request(
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
        return self._connect_origin_ws(op.target, op.link)

    def _connect_origin_ws(self, target: Target, link: OriginWsLink) -> None:
        try:
            sock = gevent.socket.create_connection(
                (target.host, target.port), timeout=self.config.origin_connect_timeout
            )
            if target.ssl:
                context = gevent.ssl.create_default_context()
                if target.insecure:
                    context.check_hostname = False
                    context.verify_mode = gevent.ssl.CERT_NONE
                sock = context.wrap_socket(sock, server_hostname=target.host_header or target.host)
            sock.settimeout(None)
        except OSError as exc:
            raise OriginError("connect", describe_os_error(exc)) from exc
        io = LinkIO(sock)
        link.attach(io)
        self.spawn(self._pump_link, sock, io, link)

    def _pump_link(self, sock: gevent.socket.socket, io: LinkIO, link: OriginWsLink) -> None:
        reason: str | None = None
        try:
            while not io.closed:
                data = sock.recv(READ_SIZE)
                if not data:
                    break
                link.data_received(data)
        except OSError as exc:
            reason = None if io.closed else str(exc)
        io.close()
        link.connection_lost(reason)

    # --- sockets ---

    def _serve_client(self, sock: gevent.socket.socket, address: Any) -> None:
        io = ClientIO(self, sock)
        peer = address[0] if address else ""
        conn = ProxyConnection(self.node, io, peer)
        if not conn.connection_made():
            io.close()
            return
        io.conn = conn
        try:
            while not io.closed:
                try:
                    data = sock.recv(READ_SIZE)
                except OSError:
                    break
                if not data:
                    conn.eof_received()
                    io.close()  # as asyncio: the transport closes after EOF
                    break
                conn.receive_data(data)
        finally:
            if not io.closed:
                io.close()
            io.cancel_timer()
            conn.connection_lost()

    def _serve_publisher(self, sock: gevent.socket.socket, address: Any) -> None:
        publisher = PublishConnection(self.node)
        io = _Writer(sock)
        timer = _PublishTimer(publisher, io)
        self.publish_connections.add(io)
        try:
            out, close = publisher.connection_made()
            io.write(out)
            while not io.closed and not close:
                timer.arm()
                try:
                    data = sock.recv(READ_SIZE)
                except OSError:
                    break
                out, close = publisher.receive_data(data)
                while publisher.awaiting is not None and not close:
                    io.write(out)
                    error: str | None = None
                    try:
                        self.publish_items(publisher.awaiting)
                    except EngineUnavailable as exc:
                        error = str(exc)
                    out, close = publisher.engine_answered(error)
                io.write(out)
                if publisher.take_half_close():
                    io.close_write()
                if not data:
                    break
        finally:
            timer.cancel()
            io.close()
            publisher.connection_lost()
            self.publish_connections.discard(io)


def run(config: Config, *, ready: Callable[[Server], None] | None = None) -> int:
    """Run a server until SIGINT/SIGTERM; SIGHUP reloads routes. Returns the exit status."""
    problem = unsupported_options(config)
    if problem is not None:
        print(f"gripcore serve: {problem}", file=sys.stderr)
        return 2
    try:
        server = Server(config)
        server.start()
    except EngineUnavailable as exc:
        print(f"gripcore serve: cannot start: engine unavailable: {exc}", file=sys.stderr)
        server.close()
        return EXIT_ENGINE_UNAVAILABLE
    except (OSError, UnicodeDecodeError, ProtocolError) as exc:
        print(f"gripcore serve: cannot start: {exc}", file=sys.stderr)
        return 2
    assert server.publish_address is not None
    banner = server.node.announce(server.listen_addresses, server.publish_address)
    if banner is not None:
        print(banner, flush=True)
    if ready is not None:
        ready(server)
    notifier = systemd_notifier()  # systemd, Type=notify
    sd_notify(notifier, READY)
    watchdog = None
    if notifier is not None and notifier.watchdog_interval is not None:
        watchdog = gevent.spawn(_ping_watchdog, notifier, notifier.watchdog_interval)
    stop = gevent.event.Event()
    handlers = [
        gevent.signal_handler(signal.SIGINT, stop.set),
        gevent.signal_handler(signal.SIGTERM, stop.set),
        gevent.signal_handler(signal.SIGHUP, server.reload_routes),
    ]
    stop.wait()
    for handler in handlers:
        handler.cancel()
    sd_notify(notifier, STOPPING)
    server.close(config.shutdown_grace)
    if watchdog is not None:  # pinged through the grace period, which systemd also times
        watchdog.kill()
    return 0


def _ping_watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        sd_notify(notifier, WATCHDOG)
        gevent.sleep(interval)
