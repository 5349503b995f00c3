"""A driver for the sans-IO proxy core made of plain values, for unit tests.

`Harness` builds a `ProxyNode` on a hand-advanced clock and gives each `ProxyConnection` a
`RecordingIO` that records what the core asks a driver to do: bytes written, close, abort,
timers armed and cancelled, and the flows it spawned. `Harness.run` then runs spawned flows
the way adapters/asyncio/_server.py's `run_flow` does, performing each operation against a
scripted `Origin`: canned responses (`Reply`) per request, `OriginError`s thrown in, and
origin WebSocket links attached to a `RecordingLink`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h11

from gripcore._config import Config
from gripcore._connection import OriginWsLink, ProxyConnection
from gripcore._items import Item, parse_publish_body
from gripcore._node import (
    ClientWritable,
    ConnectOriginWebSocket,
    DiscardBody,
    Flow,
    FlowOp,
    NextChunk,
    OriginRequest,
    ProxyNode,
    ReadBody,
    run_flow_step,
)
from gripcore._originhttp import OriginError, too_large

H = list[tuple[bytes, bytes]]


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class RecordingIO:
    """A client connection's `ConnectionIO`: everything the core asked for, in order."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.aborted = False
        self.half_closed = False  # close_write: lingering after an early error answer
        self.timers: list[float] = []
        self.cancels = 0
        self.flows: list[Flow] = []

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.aborted, "write after close"
        self.out += data

    def close(self) -> None:
        self.closed = True

    def close_write(self) -> None:
        self.half_closed = True

    def abort(self) -> None:
        self.aborted = True

    def set_timer(self, deadline: float) -> None:
        self.timers.append(deadline)

    def cancel_timer(self) -> None:
        self.cancels += 1

    def spawn(self, flow: Flow) -> None:
        self.flows.append(flow)

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class RecordingLink:
    """An origin WebSocket connection's `LinkIO`."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


@dataclass
class Reply:
    """A canned origin response: the driver's response object for one `OriginRequest`.
    `chunks` is the body as it arrives; `error` (if set) is thrown in once they are read."""

    status: int = 200
    reason: bytes = b"OK"
    headers: H = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    error: OriginError | None = None
    discarded: bool = False
    read: int = 0  # ReadBody / NextChunk operations performed on it

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def reply(
    status: int = 200, body: bytes = b"", headers: Iterable[tuple[bytes, bytes]] = (), **kw: Any
) -> Reply:
    """A reply with a Content-Length unless `headers` says otherwise."""
    hs = list(headers)
    if not any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in hs):
        hs.append((b"Content-Length", str(len(body)).encode()))
    return Reply(status, h11_reason(status), hs, [body] if body else [], **kw)


def h11_reason(status: int) -> bytes:
    from gripcore._instruct import reason_phrase

    return reason_phrase(status)


Answerer = Callable[[OriginRequest], "Reply | OriginError"]


class Origin:
    """Scripted origin: answers `OriginRequest`s from a queue (or a function), records them."""

    def __init__(self) -> None:
        self.replies: list[Reply | OriginError | Answerer] = []
        self.requests: list[OriginRequest] = []
        self.links: list[tuple[ConnectOriginWebSocket, RecordingLink]] = []
        self.connect_errors: list[OriginError | None] = []
        self.on_connect: Callable[[OriginWsLink], None] | None = None
        self.waited_writable = 0  # ClientWritable operations (a relay waiting for the client)
        self.on_wait_writable: Callable[[], None] | None = None

    def queue(self, *replies: Reply | OriginError | Answerer) -> None:
        self.replies.extend(replies)

    def perform(self, op: FlowOp) -> Any:
        if isinstance(op, OriginRequest):
            self.requests.append(op)
            assert self.replies, f"unexpected origin request {op.method!r} {op.path!r}"
            answer = self.replies.pop(0)
            if callable(answer) and not isinstance(answer, Reply | OriginError):
                answer = answer(op)
            if isinstance(answer, OriginError):
                raise answer
            return answer
        if isinstance(op, ReadBody):
            r: Reply = op.response
            r.read += 1
            body = r.body
            r.chunks = []
            if r.error is not None:
                raise r.error
            if len(body) > op.limit:
                raise too_large("origin", op.limit)
            return body
        if isinstance(op, NextChunk):
            r = op.response
            r.read += 1
            if r.chunks:
                return r.chunks.pop(0)
            if r.error is not None:
                raise r.error
            return None
        if isinstance(op, DiscardBody):
            op.response.discarded = True
            return None
        if isinstance(op, ClientWritable):
            self.waited_writable += 1
            if self.on_wait_writable is not None:
                self.on_wait_writable()
            return None
        assert isinstance(op, ConnectOriginWebSocket)
        error = self.connect_errors.pop(0) if self.connect_errors else None
        if error is not None:
            raise error
        link = RecordingLink()
        self.links.append((op, link))
        op.link.attach(link)
        if self.on_connect is not None:
            self.on_connect(op.link)
        return None


def run_flow(
    flow: Flow,
    perform: Callable[[FlowOp], Any],
    value: Any = None,
    error: BaseException | None = None,
) -> None:
    """As the asyncio driver's `run_flow`: perform each operation, send back its result or
    its exception. `value` or `error`: the outcome of the operation a test performed itself
    (the flow was started with `next`)."""
    while (op := run_flow_step(flow, value, error)) is not None:
        value, error = None, None
        try:
            value = perform(op)
        except Exception as exc:
            error = exc


class Harness:
    """A node, its clock, a scripted origin and the connections made so far."""

    def __init__(self, files: dict[str, bytes] | None = None, **config: Any) -> None:
        self.clock = Clock()
        self.files: dict[str, bytes] = dict(files or {})
        self.config = Config(**config)
        self.node = ProxyNode(
            self.config,
            clock=self.clock,
            wall_clock=lambda: 1_700_000_000.0,
            read_file=self._read,
            is_file=lambda path: path in self.files,
            random_bytes=lambda n: bytes(range(n)),
        )
        self.flushes = 0
        self.broker_timers: list[float | None] = []
        self.node.schedule_flush = self._schedule_flush
        self.node.set_broker_timer = self.broker_timers.append
        self.origin = Origin()

    def _read(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise OSError(2, "No such file", path) from None

    def _schedule_flush(self) -> None:
        self.flushes += 1

    def connect(self, peer: str = "127.0.0.1") -> tuple[ProxyConnection, RecordingIO]:
        io = RecordingIO()
        conn = ProxyConnection(self.node, io, peer)
        assert conn.connection_made()
        return conn, io

    def run(self, io: RecordingIO) -> int:
        """Run every flow `io` has spawned (and those they spawn) to its end; how many ran."""
        n = 0
        while io.flows:
            run_flow(io.flows.pop(0), self.origin.perform)
            n += 1
        return n

    def run_one(self, flow: Flow) -> None:
        """Run one flow to its end (the flows it spawns wait in their connection's io)."""
        run_flow(flow, self.origin.perform)

    def resume(self, flow: Flow, value: Any) -> None:
        """Finish a flow a test started by hand: `value` answers the operation it yielded."""
        run_flow(flow, self.origin.perform, value)

    def fail(self, flow: Flow, error: BaseException) -> None:
        """Finish a flow a test started by hand, its operation failing with `error`."""
        run_flow(flow, self.origin.perform, error=error)

    def request(self, conn: ProxyConnection, io: RecordingIO, data: bytes) -> bytes:
        """Feed `data`, run what it spawned, and return what was written."""
        conn.receive_data(data)
        self.run(io)
        return io.take()

    def publish(self, *items: dict[str, Any]) -> list[Item]:
        import json

        parsed = parse_publish_body(json.dumps({"items": list(items)}).encode())
        self.node.publish(parsed)
        return parsed

    def flush_all(self) -> None:
        """The driver's flush passes, until no connection is dirty."""
        before = self.flushes
        self.node.flush_pass()
        while self.flushes > before:  # the node asked for another pass
            before = self.flushes
            self.node.flush_pass()


def get(target: bytes = b"/", *headers: tuple[bytes, bytes], host: bytes = b"example") -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: " + host]
    lines += [n + b": " + v for n, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def post(target: bytes, body: bytes, *headers: tuple[bytes, bytes]) -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: example"]
    lines += [n + b": " + v for n, v in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parse_responses(data: bytes) -> list[tuple[h11.Response, bytes]]:
    """The complete responses in `data` (as a client reads them after a GET)."""
    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[h11.Response, bytes]] = []
    conn.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            break
        if isinstance(event, h11.Response):
            response, body = event, bytearray()
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            out.append((response, bytes(body)))
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
                conn.send(h11.Request(method=b"GET", target=b"/", headers=[(b"Host", b"x")]))
                conn.send(h11.EndOfMessage())
            else:
                break
    return out
