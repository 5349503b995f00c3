"""End-to-end test support: a real gripcore server, real origins and raw clients on loopback.

Nothing here is mocked: the proxy runs its asyncio adapter on real sockets in a background
thread; origins are real HTTP servers (stdlib `http.server`, or third-party GRIP libraries);
clients speak raw bytes over sockets so tests can assert exactly what a client receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gripcore._config import Config

DEFAULT_TIMEOUT = 5.0

# Every client socket a test opens, closed after each test by the autouse fixture in conftest.
OPEN_CLIENTS: list[RawClient] = []


# The adapter `running_proxy` starts unless told otherwise; conftest's `proxy_adapter` fixture
# runs a test once per adapter by setting it.
ADAPTER = "asyncio"


class ProxyThread:
    """A gripcore server (the asyncio or the gevent adapter) running in a background thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.adapter = config.adapter
        self.loop = asyncio.new_event_loop() if self.adapter == "asyncio" else None
        self.server: Any = None
        self._hub: Any = None
        self._stop: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        target = self._run if self.adapter == "asyncio" else self._run_gevent
        self._thread = threading.Thread(target=target, name="gripcore-proxy", daemon=True)

    def _run(self) -> None:
        from gripcore.adapters.asyncio._server import Server

        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        try:
            self.server = Server(self.config)
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.close())
        self.loop.close()

    def _run_gevent(self) -> None:
        import gevent
        import gevent.event

        from gripcore.adapters.gevent._server import Server

        self._hub = gevent.get_hub()
        self._stop = gevent.event.Event()
        try:
            self.server = Server(self.config)
            self.server.start()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._stop.wait()
        self.server.close()
        self._hub.destroy(destroy_loop=True)

    def start(self) -> ProxyThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self.loop is not None:
            if self.loop.is_running():
                self.loop.call_soon_threadsafe(self.loop.stop)
        elif self._hub is not None and self._error is None:
            self._hub.loop.run_callback_threadsafe(self._stop.set)
        self._thread.join(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the proxy's loop (or gevent hub) and return its result."""
        result: list[Any] = []
        done = threading.Event()

        def run() -> None:
            try:
                result.append(fn())
            finally:
                done.set()

        if self.loop is not None:
            self.loop.call_soon_threadsafe(run)
        else:
            self._hub.loop.run_callback_threadsafe(run)
        done.wait(5)
        return result[0] if result else None

    def tasks(self) -> int:
        """Tasks (asyncio) or greenlets (gevent) the proxy has running."""
        if self.loop is not None:
            loop = self.loop
            return int(self.call(lambda: len(asyncio.all_tasks(loop))))
        return int(self.call(lambda: self.server.greenlets))

    @property
    def port(self) -> int:
        return int(self.server.listen_addresses[0][1])

    @property
    def publish_port(self) -> int:
        assert self.server.publish_address is not None
        return int(self.server.publish_address[1])


@contextlib.contextmanager
def running_proxy(**options: Any) -> Iterator[ProxyThread]:
    options.setdefault("listen", (("127.0.0.1", 0),))
    options.setdefault("publish_listen", ("127.0.0.1", 0))
    options.setdefault("adapter", ADAPTER)
    proxy = ProxyThread(Config(**options)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


# --- origins -----------------------------------------------------------------------------


@dataclass
class OriginRequest:
    method: str
    path: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes


Handler = Callable[[OriginRequest], tuple[int, list[tuple[str, str]], bytes]]


@dataclass
class Origin:
    """A real HTTP/1.1 origin on loopback; `routes` maps a path (without query) to a handler."""

    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[OriginRequest] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    bind_port: int = 0  # 0: any free port

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def start(self) -> Origin:
        origin = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = OriginRequest(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    list(self.headers.items()),
                    body,
                )
                origin.requests.append(request)
                handler = origin.routes.get(self.path.split("?", 1)[0])
                if handler is None:
                    status, headers, out = 404, [("Content-Type", "text/plain")], b"no such path\n"
                else:
                    status, headers, out = handler(request)
                self.send_response_only(status)  # no Server/Date: tests compare exact bytes
                for name, value in headers:
                    self.send_header(name, value)
                if not any(n.lower() == "content-length" for n, _ in headers):
                    self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # the stdlib's 5 drops connections under a burst

        self.server = Server(("127.0.0.1", self.bind_port), RequestHandler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# --- clients -----------------------------------------------------------------------------


class RawClient:
    """A client socket that sends raw bytes and reads what comes back."""

    def __init__(self, port: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        OPEN_CLIENTS.append(self)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def get(self, path: str, headers: str = "", host: str = "example.com") -> None:
        self.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())

    def read_until(self, marker: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Everything up to and including `marker` (the rest stays buffered)."""
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not received; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before {marker!r}; got {self.buffer!r}")
            self.buffer += chunk
        end = self.buffer.index(marker) + len(marker)
        data, self.buffer = self.buffer[:end], self.buffer[end:]
        return data

    def read_exactly(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"wanted {n} bytes; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_to_close(self, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not closed; got {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                data, self.buffer = self.buffer, b""
                return data
            self.buffer += chunk

    def read_response(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[bytes, bytes]:
        """A whole Content-Length response: (head, body)."""
        head = self.read_until(b"\r\n\r\n", timeout)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return head, self.read_exactly(length, timeout)

    def nothing_for(self, seconds: float) -> bool:
        """True when nothing arrives for `seconds` (and the connection stays open)."""
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        self.buffer += chunk
        return False

    def close(self) -> None:
        self.sock.close()


def publish(
    port: int, items: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """POST items to the publish API with a raw socket; returns (status, body)."""
    body = json.dumps({"items": items}).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    client = RawClient(port)
    try:
        client.send(
            f"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
            + body
        )
        head, data = client.read_response()
    finally:
        client.close()
    status = int(head.split(b" ", 2)[1])
    return status, data


def wait_for(predicate: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def subscribers(proxy: ProxyThread, channel: str) -> int:
    return int(proxy.call(lambda: proxy.server.broker.hub.subscriber_count(channel)))


class WsClient:
    """A WebSocket client (wsproto) over a raw socket, for end-to-end tests."""

    def __init__(
        self,
        port: int,
        path: str,
        host: str = "example.com",
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        extensions: list[Any] | None = None,
    ) -> None:
        from wsproto import WSConnection
        from wsproto.connection import ConnectionType
        from wsproto.events import Request

        self.raw = RawClient(port)
        self.ws = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=host, target=path, extra_headers=extra_headers or [], extensions=extensions or []
        )
        self.raw.send(self.ws.send(request))
        self.events: list[Any] = []
        self.handshake: Any = None
        self.closed: Any = None

    def _pump(self, timeout: float) -> None:
        self.raw.sock.settimeout(timeout)
        data = self.raw.sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        self.ws.receive_data(data)
        for event in self.ws.events():
            self.events.append(event)

    def accept(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        """Wait for the handshake answer: AcceptConnection or RejectConnection (+ data)."""
        from wsproto.events import AcceptConnection, RejectConnection

        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if isinstance(event, AcceptConnection | RejectConnection):
                    self.events.remove(event)
                    self.handshake = event
                    return event
            self._pump(max(0.01, deadline - time.monotonic()))

    def next_event(self, timeout: float = DEFAULT_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no WebSocket event")
            self._pump(remaining)
        return self.events.pop(0)

    def receive_message(self, timeout: float = DEFAULT_TIMEOUT) -> str | bytes:
        from wsproto.events import BytesMessage, TextMessage

        parts: list[Any] = []
        while True:
            event = self.next_event(timeout)
            if isinstance(event, TextMessage | BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)
            else:
                raise AssertionError(f"expected a message, got {event!r}")

    def send_text(self, text: str) -> None:
        from wsproto.events import TextMessage

        self.raw.send(self.ws.send(TextMessage(data=text)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        from wsproto.events import CloseConnection

        self.raw.send(self.ws.send(CloseConnection(code=code, reason=reason)))


class NativeWsOrigin:
    """A real WebSocket origin (wsproto server on asyncio, in a thread) speaking GRIP: it
    accepts the `grip` extension, subscribes the connection to `channel` on open, answers
    `say X` with `m:X`, `detach` with a detach control message, `bye` with close 4002, and
    echoes pings (wsproto's pong). `reject_path` answers 403 instead of upgrading."""

    def __init__(self, channel: str = "native", reject_path: str = "/deny") -> None:
        self.channel = channel
        self.reject_path = reject_path
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.handshakes: list[list[tuple[bytes, bytes]]] = []
        self.received: list[str] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NativeWsOrigin:
        self._thread.start()
        self._ready.wait(5)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()
        self.loop.run_until_complete(server.wait_closed())
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from wsproto import WSConnection
        from wsproto.connection import ConnectionType
        from wsproto.events import (
            AcceptConnection,
            CloseConnection,
            Ping,
            RejectConnection,
            RejectData,
            Request,
            TextMessage,
        )

        ws = WSConnection(ConnectionType.SERVER)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        self.handshakes.append(
                            [(n.lower(), v) for n, v in event.extra_headers]
                            + [
                                (b"sec-websocket-extensions", str(e).encode())
                                for e in event.extensions
                            ]
                        )
                        if event.target == self.reject_path:
                            writer.write(
                                ws.send(
                                    RejectConnection(
                                        status_code=403,
                                        headers=[(b"content-type", b"text/plain")],
                                        has_body=True,
                                    )
                                )
                                + ws.send(RejectData(data=b"members only\n"))
                            )
                            await writer.drain()
                            return
                        grip = any(str(e).startswith("grip") for e in event.extensions)
                        extra = [(b"Sec-WebSocket-Extensions", b"grip")] if grip else []
                        writer.write(ws.send(AcceptConnection(extra_headers=extra)))
                        control = json.dumps({"type": "subscribe", "channel": self.channel})
                        writer.write(ws.send(TextMessage(data="c:" + control)))
                    elif isinstance(event, TextMessage):
                        self.received.append(event.data)
                        if event.data.startswith("say "):
                            writer.write(ws.send(TextMessage(data="m:" + event.data[4:])))
                        elif event.data == "detach":
                            writer.write(ws.send(TextMessage(data='c:{"type":"detach"}')))
                        elif event.data == "bye":
                            writer.write(ws.send(CloseConnection(code=4002, reason="origin bye")))
                    elif isinstance(event, Ping):
                        writer.write(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        writer.write(ws.send(event.response()))
                        await writer.drain()
                        return
                await writer.drain()
        except Exception:
            return
        finally:
            writer.close()


def stop_pushpin(run_pushpin: str, workdir: str) -> None:
    """Stop a Pushpin started by ../shared/tools/run-pushpin in `workdir`, and whatever it left:
    its pid files can name the `setsid` wrapper rather than the process (zurl was seen to
    outlive `run-pushpin stop`), so anything still running with this directory in its command
    line is ended too."""
    import subprocess

    subprocess.run(["bash", run_pushpin, "stop", workdir], timeout=60, check=False)
    subprocess.run(["pkill", "-9", "-f", "--", f"--config[= ]{workdir}/"], timeout=10, check=False)


def wait_pushpin_accepting(http_port: int, origin_port: int, timeout: float = 30.0) -> None:
    """Pushpin's ports open before its handler takes GRIP answers ("Accept service
    unavailable", 500, on a loaded machine): hold a probe stream through a probe origin on
    `origin_port` until Pushpin answers it with 200, then stop the probe origin."""
    probe = Origin(
        routes={
            "/gripcore-probe": lambda r: (
                200,
                [("Grip-Hold", "stream"), ("Grip-Channel", "probe")],
                b"",
            )
        },
        bind_port=origin_port,
    ).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            head = b""
            try:
                c = RawClient(http_port)
                c.get("/gripcore-probe")
                head = c.read_until(b"\r\n\r\n")
                c.close()
            except (ConnectionError, TimeoutError):
                pass  # not listening yet
            if head.startswith(b"HTTP/1.1 200 "):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Pushpin never accepted GRIP answers: {head!r}")
            time.sleep(0.2)
    finally:
        probe.stop()
