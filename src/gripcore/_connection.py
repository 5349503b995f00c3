"""One client connection of a proxy node, sans-IO: HTTP/1.1 requests, holds and WebSockets.

`ProxyConnection` is what a driver creates per accepted socket. The driver feeds it what it
reads (`receive_data`, `eof_received`, `connection_lost`), tells it when writing may go on
(`pause_writing`, `resume_writing`) and when its timer fires (`on_timer`), and runs the flows it
spawns (origin requests, see gripcore._node). Everything it wants done goes through the small
`ConnectionIO` interface the driver gives it: write bytes, close, abort, arm or cancel one timer,
spawn a flow. Per connection:

    read -> h11 / wsproto -> core session -> actions -> write / origin flow -> timer

All decisions are here, shared by every driver: request limits (431, 413), the route, the origin
request's headers and Grip-Sig, the choice between relaying the origin's answer and holding the
request, the hold and WebSocket sessions (gripcore._holds, _wsgateway, _wsproxy), keep-alive
timers, slow consumers, next and gone links, retries, and clean shutdown.

`OriginWsLink` is the proxy's own WebSocket toward a native WebSocket origin (one per client on
such routes): h11 for the handshake, wsproto for frames; the driver only connects and moves bytes.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import math
from collections.abc import Callable, Generator, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol

import h11
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError as LocalWsProtocolError
from wsproto.utilities import generate_accept_token

from . import _starter
from ._errors import InstructError, ProtocolError, PublishError
from ._history import resume_id
from ._holds import (
    EndStream,
    FetchNextLink,
    HoldAction,
    PostGoneLink,
    Respond,
    ResponseHold,
    Retry,
    StreamHold,
)
from ._hub import BufferOverflow, Framing, MessagesDropped, Subscriber, Transport
from ._instruct import Instruct, instruct_body_limit, is_grip_response, reason_phrase
from ._items import parse_publish_body
from ._node import (
    Answer,
    ClientWritable,
    ConnectOriginWebSocket,
    Flow,
    FlowOp,
    NextChunk,
    ProxyNode,
    discard_body,
    perform,
    read_body,
)
from ._originhttp import OriginError
from ._proxy import (
    Passthrough,
    classify_response,
    link_client_headers,
    link_destination,
    origin_request_headers,
)
from ._routes import Route, Target
from ._speedups import encode_ws_frame
from ._timeouts import ReadDeadlines, ReadPhase
from ._wsdeflate_server import negotiate
from ._wsgateway import OriginPost, WebSocketGateway
from ._wsgrip import (
    AcceptClient,
    CloseClient,
    GripWebSocket,
    RejectClient,
    WebSocketAction,
    handshake_refusal,
)
from ._wsproxy import CloseOrigin, ConnectOrigin, SendToOrigin, WebSocketProxy

__all__ = ["ConnectionIO", "LinkIO", "OriginWsLink", "ProxyConnection"]

log = logging.getLogger("gripcore")

_ERROR_BODY = b"Error while proxying to origin.\n"

_OVERLOADED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 26\r\nConnection: close\r\n\r\nToo many open connections\n"
)

# What a client too slow to send its request head (or body) gets before the close, as nginx's
# client_header_timeout answers (raw bytes: h11 has no request to answer yet).
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 16\r\nConnection: close\r\n\r\nRequest timeout\n"
)

_TEXT = [(b"Content-Type", b"text/plain")]


def _too_many(wait: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of the 429 the per-address limits answer (RFC 6585 section 4)."""
    retry = str(max(1, math.ceil(wait))).encode()
    return [*_TEXT, (b"Retry-After", retry)], b"Too many connections from this address\n"


# What a connection whose processing failed gets: before its response started, this 502 (h11
# may be in its error state by then, so it is written as bytes); on a WebSocket, a close frame
# with 1011 (RFC 6455 section 7.4.1: an unexpected condition); otherwise the connection closes.
_BROKEN = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(_ERROR_BODY), _ERROR_BODY)
)
_CLOSE_INTERNAL_ERROR = encode_ws_frame(0x8, (1011).to_bytes(2, "big"))

# Request headers that frame the body: both on one request (RFC 9112 section 6.3) means the
# connection cannot be trusted for another request.
_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")
# Headers of a whole answer that are the connection's to set, not the origin's or a publisher's.
_WHOLE_ANSWER_OWN = (b"content-length", b"connection", b"transfer-encoding")

_P = ParamSpec("_P")


def _boundary(
    method: Callable[Concatenate[ProxyConnection, _P], None],
) -> Callable[Concatenate[ProxyConnection, _P], None]:
    """What a driver calls on a connection: an unexpected exception in it ends this connection
    (`ProxyConnection.fail`), never the driver's loop or another connection."""

    @functools.wraps(method)
    def guarded(self: ProxyConnection, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception as exc:
            self.fail(exc)

    return guarded


# After an early error answer, what the client still sends is read and discarded (lingering
# close, as nginx) so that it reads the answer rather than a reset; past this many bytes (or
# --linger-timeout) the connection is closed anyway. 64 MiB covers a publish or upload of any
# size a client would send before looking at the answer.
LINGER_DISCARD_LIMIT = 64 * 1024 * 1024

# Bodies of non-GRIP answers up to this size are read whole and sent with a Content-Length;
# larger ones (and those without a length) are relayed as they arrive.
RELAY_WHOLE_LIMIT = 1024 * 1024

# Upper bounds for origin answers the proxy reads whole.
INSTRUCT_READ_LIMIT = 16 * 1024 * 1024
WS_EVENTS_READ_LIMIT = 1_000_000

# WebSocket messages from clients (reassembled) and the gateway's queue toward the origin.
MAX_CLIENT_MESSAGE = 200_000
MAX_PENDING_TO_ORIGIN = 200_000


class ConnectionIO(Protocol):
    """What a driver does for one client connection."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Close after what was written has gone out."""

    def close_write(self) -> None:
        """End the sending side once what was written has gone out (half-close); reading goes
        on until `close` or `abort`."""

    def abort(self) -> None:
        """Drop the connection now, discarding unsent data."""

    def set_timer(self, deadline: float) -> None:
        """Call `on_timer` at `deadline` (clock seconds), replacing any timer armed."""

    def cancel_timer(self) -> None: ...

    def spawn(self, flow: Flow) -> None:
        """Run `flow` concurrently (its operations are origin I/O)."""


class LinkIO(Protocol):
    """What a driver does for an origin WebSocket connection."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


def h11_reason(status: int) -> bytes:
    return reason_phrase(status)


def _host_of(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name.lower() == b"host":
            return value.decode("latin-1")
    return ""


def _content_type(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The media type of a Content-Type header, lower case, without parameters."""
    value = _header(headers, b"content-type") or b""
    return value.partition(b";")[0].strip().lower()


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = _header(request.headers, b"upgrade")
    return request.method == b"GET" and upgrade is not None and upgrade.lower() == b"websocket"


class ProxyConnection:
    """One client connection: HTTP/1.1 requests (h11), then maybe a held session or a WebSocket."""

    def __init__(self, node: ProxyNode, io: ConnectionIO, peer: str = "") -> None:
        self.node = node
        self.config = node.config
        self.io = io
        self.peer = peer
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
        self._timer_at: float | None = None
        self.paused = False  # the transport's buffer is above its high mark
        self.closed = False
        self._route: Route | None = None
        self._trusted = False  # the request came from a GRIP proxy in front (--upstream-key)
        self.tls = False  # set by the driver: the client came in over TLS (X-Forwarded-Proto)
        self._targets: Sequence[Target] = ()
        self._hold_request: h11.Request | None = None
        self._origin_ws: OriginWsLink | None = None
        self._resume_from: str | None = None  # a WebSocket's last-event-id, until subscribed
        self._limit_key: str | None = None  # the address this connection counts against
        self._request_key: str | None = None  # through a trusted proxy: the request's client
        self.id = node.connection_number()  # names the connection in logs
        self._answering = False  # bytes of the current response went out
        self._must_close = False  # the request's framing was ambiguous: close after answering
        self.reads = ReadDeadlines(self.config, node.clock())
        self._discarded = 0  # bytes read and dropped while lingering

    # --- driver callbacks ---

    def connection_made(self) -> bool:
        """Count the connection in; False (after answering 503) when over --max-connections."""
        if len(self.node.connections) >= self.node.max_connections:
            # over the limit: a short answer rather than a silent reset, then close
            self.io.write(_OVERLOADED)
            self.closed = True
            self.io.close()
            return False
        limits = self.node.limits
        if limits.enabled and not limits.is_trusted_proxy(self.peer):
            wait = limits.acquire(self.peer, self.node.clock())
            if wait is not None:
                headers, body = _too_many(wait)
                head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
                self.io.write(
                    b"HTTP/1.1 429 Too Many Requests\r\n%sContent-Length: %d\r\n"
                    b"Connection: close\r\n\r\n%s" % (head, len(body), body)
                )
                self.closed = True
                self.io.close()
                return False
            self._limit_key = self.peer
        self.node.connections.add(self)
        self._arm_read_timer()
        return True

    def _release_limits(self) -> None:
        for key in (self._limit_key, self._request_key):
            if key is not None:
                self.node.limits.release(key)
        self._limit_key = self._request_key = None

    def _admit_request(self, request: h11.Request) -> bool:
        """Through a trusted proxy, the request counts against its client (X-Forwarded-For)
        while it is handled or held; False after answering 429."""
        limits = self.node.limits
        if not limits.enabled or self._limit_key is not None or self._request_key is not None:
            return True
        forwarded = [v for n, v in request.headers if n.lower() == b"x-forwarded-for"]
        client = limits.client_address(self.peer, forwarded)
        wait = limits.acquire(client, self.node.clock())
        if wait is not None:
            headers, body = _too_many(wait)
            self._respond_now(429, b"Too Many Requests", headers, body)
            return False
        self._request_key = client
        return True

    @_boundary
    def connection_lost(self) -> None:
        self.closed = True
        self._release_limits()
        self.node.connections.discard(self)
        self._cancel_timer()
        session = self.session
        if session is not None:
            if isinstance(session, GripWebSocket):
                self._perform_ws(session.client_gone(self.node.clock()))
            else:
                self._perform_hold(session.client_gone())
        if self.subscriber is not None:
            # the session left the hub already; this covers one that failed to start
            self.node.broker.hub.remove(self.subscriber)
        if self._origin_ws is not None:
            self._origin_ws.close()
            self._origin_ws = None

    def pause_writing(self) -> None:
        self.paused = True

    @_boundary
    def resume_writing(self) -> None:
        self.paused = False
        self.flush()

    @_boundary
    def receive_data(self, data: bytes) -> None:
        if self.ws is not None:
            self._ws_received(data)
            return
        reads = self.reads
        if reads.phase is ReadPhase.LINGER:
            self._discarded += len(data)
            if self._discarded > LINGER_DISCARD_LIMIT:
                self._close()
            return
        if reads.phase is not ReadPhase.BUSY:
            reads.bytes_received(self.node.clock())
        self.h11.receive_data(data)  # only buffers: errors come from next_event
        self._process()

    @_boundary
    def eof_received(self) -> None:
        if self.reads.phase is ReadPhase.LINGER:
            self._close()  # the client sent everything and read the answer
        elif self.ws is None:
            with contextlib.suppress(h11.RemoteProtocolError):
                self.h11.receive_data(b"")
            if not self.busy:
                self._process()

    @_boundary
    def on_timer(self) -> None:
        self._timer_at = None
        session = self.session
        if self.closed:
            return
        if session is None:
            self._read_timeout()
            return
        now = self.node.clock()
        if isinstance(session, GripWebSocket):
            self._perform_ws(session.handle_timer(now))
        else:
            self._perform_hold(session.handle_timer(now))
        self.flush()

    # --- HTTP requests ---

    def _process(self) -> None:
        while not self.busy and not self.closed:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint  # 431 for a head over max_incomplete_event_size
                self._fail(status, h11_reason(status) + b"\n")
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                self._arm_read_timer()
                return
            if isinstance(event, h11.Request):
                self.reads.head_received(self.node.clock())
                size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
                if size > self.config.max_request_header_size:
                    # h11 bounds only incomplete heads; a complete one can still be too large
                    self._fail(431, b"Request header fields too large.\n")
                    return
                # RFC 9112 section 6.3: with both Transfer-Encoding and Content-Length (h11
                # reads the body by the former) the server MUST close after responding, so
                # nothing after this body is taken for another request
                framing = {n.lower() for n, _ in event.headers if n.lower() in _FRAMING_HEADERS}
                self._must_close = len(framing) == 2
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
                self.reads.busy()
                self._cancel_timer()  # the read timer: holds arm their own
                self._spawn(self._handle(self.request, bytes(self.body)))
            else:  # h11.ConnectionClosed: the client is done
                self._close()
                return

    def _fail(self, status: int, body: bytes) -> None:
        """Answer an unusable request, then close the connection: after a lingering read of
        what the client still sends (it may send a whole body before reading the answer, and
        a close with unread data would reset the connection and lose the answer)."""
        with contextlib.suppress(h11.LocalProtocolError):  # nothing to answer when h11 says so
            self._send_whole(status, h11_reason(status), _TEXT, body, close=True)
        self._linger()

    def _linger(self) -> None:
        """After an early answer: end the sending side, discard what still arrives, close at
        the client's EOF, past LINGER_DISCARD_LIMIT bytes or at --linger-timeout. Called on an
        open connection only (an early answer is to a request it is reading)."""
        self.reads.linger(self.node.clock())
        self._cancel_timer()
        self.io.close_write()
        self._arm_read_timer()

    def _arm_read_timer(self) -> None:
        """Arm the timer for the read deadline (none while a request is answered or held).
        A timer already set for an earlier time is kept: it fires and re-arms."""
        deadline = self.reads.deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            self._timer_at = deadline
            self.io.set_timer(deadline)

    def _read_timeout(self) -> None:
        """The timer fired with no session: a read deadline may have passed."""
        phase = self.reads.expired(self.node.clock())
        if phase is None:
            self._arm_read_timer()
            return
        if phase is ReadPhase.HEAD or phase is ReadPhase.BODY:
            log.info("closing %s: request not received in time (408)", self.peer)
            self._write(_REQUEST_TIMEOUT)
            self._linger()  # the client may still be sending: let it read the 408
        else:
            self._close()

    def _send(self, event: Any) -> None:
        self._write(self._encode(event))

    def _encode(self, event: Any) -> bytes | None:
        if self._must_close and isinstance(event, h11.Response):
            # h11 sees its own Connection: close and moves to MUST_CLOSE (see _request_done)
            headers = [(n, v) for n, v in event.headers.raw_items() if n.lower() != b"connection"]
            headers.append((b"Connection", b"close"))
            event = h11.Response(
                status_code=event.status_code, reason=event.reason, headers=headers
            )
        data: bytes | None = self.h11.send(event)
        return data

    def _write(self, data: bytes | None) -> None:
        if data and not self.closed:
            self._answering = True
            self.io.write(data)

    def _spawn(self, flow: Flow) -> None:
        self.io.spawn(self._guarded(flow))

    def _guarded(self, flow: Flow) -> Flow:
        """A flow of this connection (origin I/O): an unexpected exception in it ends this
        connection (`fail`); the origin's own errors are handled inside the flow."""
        try:
            yield from flow
        except Exception as exc:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """The boundary of this connection's processing: an unexpected exception (a bug, or
        something accepted that cannot be written) ends this connection only. Counted in
        `connection_errors_total`, logged with the connection's id and route; the client gets
        a 502 if its response had not started, a close frame with 1011 on a WebSocket, or else
        the connection closes. The session leaves the hub here: its own clean-up may be what
        broke."""
        self.node.connection_errors.inc()
        route = self._route.id if self._route is not None else "-"
        log.error(
            "connection %d (%s) on route %s failed: %r",
            self.id,
            self.peer,
            route,
            exc,
            exc_info=exc,
        )
        sub = self.subscriber
        self.session = None
        self.subscriber = None
        self._cancel_timer()
        if sub is not None:
            self.node.broker.hub.remove(sub)
        if self._origin_ws is not None:
            self._origin_ws.close()
            self._origin_ws = None
        if self.closed:
            return
        if self.ws is not None:
            self.io.write(_CLOSE_INTERNAL_ERROR)
        elif not self._answering:
            self.io.write(_BROKEN)
        self._close()

    def _send_whole(
        self,
        status: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        *,
        close: bool = False,
    ) -> None:
        out = [(n, v) for n, v in headers if n.lower() not in _WHOLE_ANSWER_OWN]
        out.append((b"Content-Length", str(len(body)).encode()))
        if close:
            out.append((b"Connection", b"close"))
        # encoded whole before any of it is written: an answer h11 refuses leaves none behind
        head = self._encode(h11.Response(status_code=status, reason=reason, headers=out))
        # RFC 9110 section 9.3.2: the answer to HEAD is the head alone (the length is the GET's)
        head_only = self.request is not None and self.request.method == b"HEAD"
        data = self._encode(h11.Data(data=body)) if body and not head_only else b""
        self._write(b"".join((head or b"", data or b"", self._encode(h11.EndOfMessage()) or b"")))

    def _request_done(self) -> None:
        """The response is complete: serve the next request on this connection, or close."""
        if self._request_key is not None:
            self.node.limits.release(self._request_key)
            self._request_key = None
        self.session = None
        self.subscriber = None
        self._cancel_timer()
        if self.closed:
            return
        if self.node.closing:
            self._close()
            return
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            self.busy = False
            self._answering = False
            self.reads.idle(self.node.clock())
            self._process()
        else:  # MUST_CLOSE on either side: Connection: close, or HTTP/1.0
            self._close()

    def _abort(self) -> None:
        """Drop the connection now, discarding what it has not read (slow consumer)."""
        self.session = None
        self.subscriber = None
        self._cancel_timer()
        # only the flush of an open connection gets here (a slow consumer's overflow)
        self.closed = True
        self.io.abort()

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.io.close()

    def close(self) -> None:
        """The driver gives up on this connection (server closing after its grace period)."""
        self._close()

    def _handle(self, request: h11.Request, body: bytes) -> Flow:
        if self.closed:
            return  # the client left before this flow started: nobody to answer
        if not self._admit_request(request):
            return
        if _is_websocket_upgrade(request):
            self._handle_websocket(request)
        else:
            yield from self._handle_http(request, body)

    def _route_for(self, request: h11.Request, proto: str) -> Route | None:
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        return self.node.route_for(_host_of(request.headers), path, proto)

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
        link: str | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Headers of an origin request for `request`. With `link` (a next or gone link URL),
        the request is the proxy's own, as Pushpin makes it: none of the client's headers go
        along (`link_client_headers`), only a Host for the link and the GRIP headers."""
        grip = (route is None or not route.no_grip) and not self._trusted
        host = None
        if route is not None and route.as_host:
            host = route.as_host.encode("latin-1")
        client_headers: Sequence[tuple[bytes, bytes]] = request.headers
        peer = self.peer
        if link is not None:
            client_headers = link_client_headers(request.headers, link)
            peer = ""
        return origin_request_headers(
            client_headers,
            body_length=body_length,
            peer=peer,
            grip=grip,
            sig_token=self.node.sign(route) if grip else None,
            websocket=websocket,
            client_tls=self.tls,
            trusted_client=self._trusted,
            route_headers=route.headers if route is not None else (),
            host=host,
            extra=extra,
        )

    def _handle_http(self, request: h11.Request, body: bytes) -> Flow:
        if self.node.routes is None and request.method == b"POST":
            path = request.target.split(b"?", 1)[0]
            if path == b"/test/publish":
                self._starter_publish(body)
                return
        route = self._route_for(request, "http")
        if self.node.routes is not None and route is None:
            self._respond_now(502, b"Bad Gateway", _TEXT, b"Route not found.\n")
            return
        self._route = route
        self._targets = route.targets if route is not None else ()
        self._trusted = self.node.is_trusted(request.headers)
        if (
            not self._trusted
            and self._targets
            and self._targets[0].over_http
            and _content_type(request.headers) == b"application/websocket-events"
        ):
            # A client could otherwise speak for a WebSocket session (Connection-Id, Meta-*):
            # only gripcore, or a trusted proxy in front, sends these (Pushpin: the same 403).
            self._respond_now(
                403, b"Forbidden", _TEXT, b"Client not allowed to send WebSocket events directly.\n"
            )
            return
        debug = self.config.debug or (route is not None and route.debug)
        answer = yield from self._origin_exchange(route, request, body, ())
        if answer is None:
            return
        try:
            instruct = yield from self._classify(answer, route, request)
        except InstructError as exc:
            detail = f"Failed to parse accept instructions: {exc.msg}\n".encode()
            self._respond_now(502, b"Bad Gateway", _TEXT, detail if debug else _ERROR_BODY)
            return
        except OriginError as exc:
            self._origin_broke(exc)
            return
        if instruct is None:
            return  # relayed as it is
        self._log(request, "accept" if instruct.hold else str(instruct.status))
        self._start_hold(instruct, request, route, debug)

    def _origin_exchange(
        self,
        route: Route | None,
        request: h11.Request,
        body: bytes,
        extra: Sequence[tuple[bytes, bytes]],
    ) -> Generator[FlowOp, Any, Any]:
        """One origin request on behalf of the client; None when an error was already answered."""
        headers = self._request_headers(route, request, len(body), extra=extra)
        try:
            response, _ = yield from self.node.call_origin(
                route,
                self._targets,
                request.method,
                self._origin_path(route, request.target),
                headers,
                body,
            )
        except OriginError as exc:
            log.info(
                "%s %s -> error: %s", request.method.decode(), request.target.decode("latin-1"), exc
            )
            status = 504 if exc.kind == "timeout" else 502
            detail = f"{exc}\n".encode() if self.config.debug else _ERROR_BODY
            self._respond_now(status, h11_reason(status), _TEXT, detail)
            return None
        return response

    def _classify(
        self, answer: Any, route: Route | None, request: h11.Request
    ) -> Generator[FlowOp, Any, Instruct | None]:
        """GRIP instructions, or None after relaying a plain response."""
        grip = (route is None or not route.no_grip) and not self._trusted
        if not grip or not is_grip_response(answer.headers):
            if isinstance(answer, Answer):
                body = answer.body
            else:
                relayed = yield from self._relay(answer, request)
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
        limit = instruct_body_limit(answer.headers)
        body = yield from read_body(answer, limit if limit is not None else INSTRUCT_READ_LIMIT)
        uri = f"http://{_host_of(request.headers) or 'localhost'}{request.target.decode('latin-1')}"
        result = classify_response(
            answer.status, answer.reason, answer.headers, body, request_uri=uri
        )
        assert isinstance(result, Instruct)
        return result

    def _relay(self, response: Any, request: h11.Request) -> Generator[FlowOp, Any, bytes | None]:
        """Relay a non-GRIP origin response, streaming its body. Small bodies come back whole
        (for the caller to send with a Content-Length); None once relayed by streaming."""
        length = _header(response.headers, b"content-length")
        if length is not None and length.isdigit() and int(length) <= RELAY_WHOLE_LIMIT:
            body: bytes = yield from read_body(response, int(length) + 1)
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
        while True:
            if self.paused:
                # the client's transport is over its high mark: read no more from the origin
                # until it drains (else one client that does not read buffers the whole body)
                yield from perform(ClientWritable(self.io))
            chunk = yield from perform(NextChunk(response))
            if chunk is None:
                break
            if self.closed:
                yield from discard_body(response)
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
            self._respond_now(502, b"Bad Gateway", _TEXT, detail)
        else:
            self._close()

    def _respond_now(
        self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        if self.closed:
            return
        self._send_whole(status, reason, headers, body)
        self._request_done()

    def _starter_publish(self, body: bytes) -> None:
        try:
            item_id = self.node.random_bytes(8).hex()  # unique across workers and restarts
            items = parse_publish_body(_starter.parse_publish_form(body, item_id=item_id))
        except PublishError as exc:
            self._respond_now(400, b"Bad Request", _TEXT, (exc.msg + "\n").encode())
            return
        self.node.publish(items)
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
        if self.closed:
            return  # the client left while the origin answered: nothing to hold for it
        now = self.node.clock()
        hub = self.node.broker.hub
        prefix = route.prefix if route is not None else ""
        implicit = [c for t in self._targets for c in t.sub]
        if instruct.hold is None and instruct.next_link is None:
            self._respond_now(instruct.status, instruct.reason, instruct.headers, instruct.body)
            return
        self._hold_request = request
        if instruct.hold == "response":
            sub = Subscriber(Transport.RESPONSE, owner=self)
            self.subscriber = sub
            poll = ResponseHold(
                hub,
                sub,
                instruct,
                now,
                channel_prefix=prefix,
                implicit_channels=implicit,
                last_ids=self.node.broker.sequencer,
            )
            self.session = poll
            self._perform_hold(poll.take_actions())
            last_id = resume_id(request.target, request.headers)
            if last_id is not None and self.session is poll:
                self.node.resume(sub, last_id)  # a long-poll answered at once with what it missed
            self.flush()
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
            hub,
            sub,
            instruct,
            now,
            channel_prefix=prefix,
            implicit_channels=implicit,
            debug=debug,
            last_ids=self.node.broker.sequencer,
        )
        self.session = session
        last_id = resume_id(request.target, request.headers)
        if last_id is not None:
            self.node.resume(sub, last_id)
        self._perform_hold(session.take_actions())
        self.flush()

    @_boundary
    def flush(self) -> None:
        """Drain the subscriber: act on hub events, write pending bytes, re-arm the timer."""
        sub = self.subscriber
        session = self.session
        if sub is None or session is None or self.closed:
            return
        if sub.events:
            events = sub.take_events()
            route = self._route.id if self._route is not None else "starter"
            if any(isinstance(e, BufferOverflow) for e in events):
                self.node.slow_consumers.inc(labels=(route,))
                log.warning(
                    "closing slow consumer: connection %d (%s) on route %s (output buffer full)",
                    self.id,
                    self.peer,
                    route,
                )
            dropped = sum(e.count for e in events if isinstance(e, MessagesDropped))
            if dropped:
                log.info(
                    "dropped %d oldest messages for slow consumer: connection %d (%s) on route %s",
                    dropped,
                    self.id,
                    self.peer,
                    route,
                )
            if isinstance(session, GripWebSocket):
                self._perform_ws(session.handle_events(events, self.node.clock()))
            else:
                self._perform_hold(session.handle_events(events))
            if self.session is not session:
                return
        if sub.outbuf and not self.paused:
            self.io.write(sub.take_output())
            session.wrote(self.node.clock())
        self._arm_timer()

    def _arm_timer(self) -> None:
        """Make sure a timer fires by the session's next deadline. A timer already set for an
        earlier time is kept (it fires, finds nothing due and re-arms): idle keep-alives move
        their deadline on every write, and re-arming per write would cost more than the write."""
        session = self.session
        deadline = session.next_deadline() if session is not None else None
        if deadline is None:
            if self._timer_at is not None:
                self._cancel_timer()
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        self._timer_at = deadline
        self.io.set_timer(deadline)

    def _cancel_timer(self) -> None:
        if self._timer_at is not None:
            self.io.cancel_timer()
        self._timer_at = None

    def _perform_hold(self, actions: Sequence[HoldAction]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                self.node.broker.sync()
                self._respond_now(action.status, action.reason, action.headers, action.body)
            elif isinstance(action, EndStream):
                if action.abort:
                    self._abort()
                else:
                    self._end_stream()
            elif isinstance(action, Retry):
                self._spawn(self._retry(action))
            elif isinstance(action, FetchNextLink):
                self._spawn(self._fetch_next_link(action))
            else:
                assert isinstance(action, PostGoneLink)
                self._spawn(self._post_link(action.url))
        self.node.broker.sync()

    def _end_stream(self) -> None:
        """Write what is pending, end the body (last chunk), then keep-alive or close."""
        assert isinstance(self.session, StreamHold) and self.subscriber is not None
        self._write(self.subscriber.take_output())
        # the body bytes went around h11, which tracks no size for chunked or
        # close-delimited bodies; it writes the end of the body and moves to DONE
        self._send(h11.EndOfMessage())
        self._request_done()

    def _retry(self, action: Retry) -> Flow:
        session = self.session
        if not isinstance(session, ResponseHold):
            return  # the hold ended (server shutdown) before this flow started
        request = self.held
        answer = yield from self._origin_exchange(
            self._route, request, bytes(self.body), action.grip_last
        )
        if answer is None:
            session.client_gone()
            return
        try:
            instruct = yield from self._classify(answer, self._route, request)
        except OriginError as exc:
            session.client_gone()
            self._origin_broke(exc)
            return
        except InstructError:
            session.client_gone()
            self._respond_now(502, b"Bad Gateway", _TEXT, _ERROR_BODY)
            return
        if self.session is not session:
            return
        self._perform_hold(session.retry_response(instruct, self.node.clock()))
        self.flush()

    def _link_destination(self, url: str) -> tuple[Target, bytes] | None:
        return link_destination(  # None without targets (the starter kit, which sends no links)
            url,
            request_host=_host_of(self.held.headers),
            targets=self._targets,
            allowed=self.node.link_hosts,
        )

    def _fetch_next_link(self, action: FetchNextLink) -> Flow:
        session = self.session
        if not isinstance(session, StreamHold):
            return  # the stream ended (server shutdown) before this flow started
        request = self.held
        instruct: Instruct | None = None
        destination = self._link_destination(action.url)
        if destination is not None or self.node.routes is None:
            target, path = destination if destination is not None else (None, action.url.encode())
            headers = self._request_headers(
                self._route, request, 0, extra=action.grip_last, link=action.url
            )
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            try:
                response, _ = yield from self.node.call_origin(
                    self._route, [target] if target is not None else (), b"GET", path, headers, b""
                )
                if 200 <= response.status < 300:
                    instruct = yield from self._classify_link(response, request)
            except (OriginError, ProtocolError) as exc:
                log.info("next link %s failed: %s", action.url, exc)
        else:
            log.warning("next link %s refused: not a route target", action.url)
        if self.session is not session:
            return
        self._perform_hold(session.next_link_response(instruct, self.node.clock()))
        self.flush()

    def _classify_link(
        self, response: Any, request: h11.Request
    ) -> Generator[FlowOp, Any, Instruct]:
        body = yield from read_body(response, INSTRUCT_READ_LIMIT)
        uri = f"http://{_host_of(request.headers) or 'localhost'}{request.target.decode('latin-1')}"
        if not is_grip_response(response.headers):
            return Instruct(status=response.status, reason=response.reason, body=body)
        result = classify_response(
            response.status, response.reason, response.headers, body, request_uri=uri
        )
        assert isinstance(result, Instruct)
        return result

    def _post_link(self, url: str) -> Flow:
        request = self.held
        destination = self._link_destination(url)
        if destination is None:
            return
        target, path = destination
        headers = self._request_headers(self._route, request, 0, link=url)
        try:
            response, _ = yield from self.node.call_origin(
                self._route, [target], b"POST", path, headers, b""
            )
            yield from discard_body(response)
        except OriginError as exc:
            log.info("gone link %s failed: %s", url, exc)

    # --- WebSocket ---

    def _handle_websocket(self, request: h11.Request) -> None:
        refusal = handshake_refusal(request.headers)
        if refusal is not None:
            self._respond_now(refusal.status, refusal.reason, refusal.headers, refusal.body)
            return
        route = self._route_for(request, "ws")
        if self.node.routes is not None and route is None:
            self._respond_now(502, b"Bad Gateway", _TEXT, b"Route not found.\n")
            return
        targets = list(route.targets) if route is not None else []
        self._route = route
        self._trusted = False  # a WebSocket is always GRIP-processed here
        self._hold_request = request
        sub = Subscriber(Transport.WEBSOCKET, owner=self)
        hub = self.node.broker.hub
        prefix = route.prefix if route is not None else ""
        debug = self.config.debug or (route is not None and route.debug)
        session: GripWebSocket
        if not targets or targets[0].over_http or targets[0].kind == "test":
            # WebSocket-over-HTTP (the starter kit's origin speaks it too)
            self._targets = [t for t in targets if t.over_http or t.kind == "test"]
            session = WebSocketGateway(
                hub,
                sub,
                connection_id=self.node.connection_id(),
                channel_prefix=prefix,
                implicit_channels=[c for t in self._targets for c in t.sub],
                one_event=any(t.one_event for t in self._targets),
                debug=debug,
                max_pending=MAX_PENDING_TO_ORIGIN,
                jitter=self.node.jitter,
            )
        else:
            self._targets = [t for t in targets if not t.over_http and t.kind == "net"]
            session = WebSocketProxy(
                hub,
                sub,
                channel_prefix=prefix,
                implicit_channels=[c for t in self._targets for c in t.sub],
                debug=debug,
            )
        self.subscriber = sub
        self.session = session
        self._resume_from = resume_id(request.target, request.headers)
        self._perform_ws(session.start(self.node.clock()))

    def _perform_ws(self, actions: Sequence[WebSocketAction]) -> None:
        for action in actions:
            if isinstance(action, OriginPost):
                self._spawn(self._ws_post(action))
            elif isinstance(action, SendToOrigin):
                if self._origin_ws is not None:
                    self._origin_ws.send(action)
            elif isinstance(action, CloseOrigin):
                if self._origin_ws is not None:
                    self._origin_ws.close()
                    self._origin_ws = None
            elif isinstance(action, ConnectOrigin):
                self._spawn(self._connect_origin_ws())
            elif isinstance(action, AcceptClient):
                self._accept_websocket(action.headers)
            elif isinstance(action, RejectClient):
                self.session = None
                self.subscriber = None
                self._respond_now(action.status, action.reason, action.headers, action.body)
            else:
                assert isinstance(action, CloseClient)  # the last kind of action
                if action.abort:
                    self._abort()
                    continue
                assert self.subscriber is not None  # a close comes from the live session
                self._write(self.subscriber.take_output())
                self.session = None
                self.subscriber = None
                self._cancel_timer()
                self._close()
        if self._resume_from is not None and self.subscriber and self.subscriber.channels:
            self.node.resume(self.subscriber, self._resume_from)  # the first subscriptions
            self._resume_from = None
        self.node.broker.sync()

    def _ws_post(self, action: OriginPost) -> Flow:
        gateway = self.session
        if not isinstance(gateway, WebSocketGateway):
            return
        request = self.held
        headers = self._request_headers(
            self._route, request, len(action.body), websocket=True, extra=action.headers
        )
        try:
            response, _ = yield from self.node.call_origin(
                self._route,
                self._targets,
                b"POST",
                self._origin_path(self._route, request.target),
                headers,
                action.body,
            )
            body = yield from read_body(response, WS_EVENTS_READ_LIMIT)
        except OriginError as exc:
            if action.expect_answer and self.session is gateway:
                log.info("WebSocket-over-HTTP request failed: %s", exc)
                self._perform_ws(gateway.origin_failed(str(exc), self.node.clock()))
                self.flush()
            return
        if not action.expect_answer or self.session is not gateway:
            return
        self._perform_ws(
            gateway.origin_response(
                response.status, response.reason, response.headers, body, self.node.clock()
            )
        )
        self.flush()

    def _connect_origin_ws(self) -> Flow:
        """Open this client's own WebSocket to the origin (the first target that connects)."""
        proxy = self.session
        if not isinstance(proxy, WebSocketProxy):
            return  # refused (server shutdown) before this flow started
        request = self.held
        headers = self._request_headers(self._route, request, 0, websocket=True)
        path = self._origin_path(self._route, request.target)
        for target in self._targets:
            link = OriginWsLink(self, proxy, path, headers, self.node.random_bytes(16))
            # set before connecting: the handshake answer (and the client's first frames after
            # it) can arrive before the connect operation returns here
            self._origin_ws = link
            try:
                yield from perform(ConnectOriginWebSocket(target, link))
            except OriginError as exc:
                log.info("WebSocket origin %s failed: %s", target.authority, exc)
                self._origin_ws = None
                continue
            if self.session is not proxy:  # the client left meanwhile
                link.close()
            return
        if self.session is proxy:
            self._perform_ws(proxy.origin_failed("could not connect to any target"))

    def _accept_websocket(self, extra: Sequence[tuple[bytes, bytes]]) -> None:
        request = self.held
        key = _header(request.headers, b"sec-websocket-key")
        assert key is not None  # checked by handshake_refusal
        headers = [
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", generate_accept_token(key)),
            *extra,
        ]
        deflate = None
        if self.config.allow_compression and not any(
            n.lower() == b"sec-websocket-extensions" for n, _ in extra
        ):
            deflate = negotiate(request.headers, MAX_CLIENT_MESSAGE)
        if deflate is not None:
            headers.append((b"Sec-WebSocket-Extensions", deflate[1]))
        self._send(
            h11.InformationalResponse(
                status_code=101, headers=headers, reason=b"Switching Protocols"
            )
        )
        trailing, _ = self.h11.trailing_data
        if deflate is None:
            self.ws = WsConnection(ConnectionType.SERVER)
        else:
            self.ws = WsConnection(ConnectionType.SERVER, extensions=[deflate[0]])
            assert self.subscriber is not None  # every WebSocket session has one
            # published messages reach it compressed, once for all such subscribers
            self.node.broker.hub.set_framing(self.subscriber, Framing.WEBSOCKET_DEFLATE)
        self._log(request, "ws")
        if trailing:
            self._ws_received(trailing)

    def _ws_received(self, data: bytes) -> None:
        ws = self.ws
        gateway = self.session
        assert ws is not None
        ws.receive_data(data)
        actions: list[WebSocketAction] = []
        for event in ws.events():
            if not isinstance(gateway, GripWebSocket) or self.session is not gateway:
                break
            now = self.node.clock()
            if isinstance(event, TextMessage | BytesMessage):
                if not self._ws_message:
                    self._ws_text = isinstance(event, TextMessage)
                chunk = event.data.encode() if isinstance(event, TextMessage) else bytes(event.data)
                self._ws_message += chunk
                if len(self._ws_message) > MAX_CLIENT_MESSAGE:
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
            else:  # frames only (no handshake events): a CloseConnection
                assert isinstance(event, CloseConnection)
                code = int(event.code) if event.code is not None else None
                actions += gateway.client_close(code, event.reason or "", now)
        self._perform_ws(actions)
        self.flush()

    # --- lifecycle ---

    @_boundary
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


class OriginWsLink:
    """The proxy's own WebSocket to the origin for one client: h11 for the handshake, wsproto
    for frames. Everything it sees goes to the client connection's `WebSocketProxy`."""

    def __init__(
        self,
        client: ProxyConnection,
        proxy: WebSocketProxy,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        nonce: bytes,
    ) -> None:
        self.client = client
        self.proxy = proxy
        self.key = base64.b64encode(nonce)
        self.io: LinkIO | None = None
        self.h11: h11.Connection | None = h11.Connection(h11.CLIENT)
        self.ws: WsConnection | None = None
        self.response: h11.Response | None = None
        self.body = bytearray()
        self.message = bytearray()
        self.message_text = False
        self.closing = False
        headers = [
            *headers,
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", self.key),
            (b"Sec-WebSocket-Version", b"13"),
        ]
        self.request_bytes = (
            self.h11.send(h11.Request(method=b"GET", target=path, headers=headers)) or b""
        )

    def attach(self, io: LinkIO) -> None:
        """The driver connected: send the handshake."""
        self.io = io
        io.write(self.request_bytes)

    def _deliver(self, actions: Sequence[WebSocketAction]) -> None:
        if self.client.session is self.proxy:
            self.client._perform_ws(actions)
            self.client.flush()

    def data_received(self, data: bytes) -> None:
        try:
            try:
                if self.ws is None:
                    self._handshake(data)
                else:
                    self._frames(data)
            except (h11.ProtocolError, ProtocolError, ValueError) as exc:
                self.close()
                self._deliver(self.proxy.origin_failed(str(exc)))
        except Exception as exc:  # the client connection's boundary covers its link too
            self.close()
            self.client.fail(exc)

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
                self._deliver(self.proxy.origin_accepted(event.headers, self.client.node.clock()))
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
        now = self.client.node.clock()
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
            else:  # frames only (no handshake events): a CloseConnection
                assert isinstance(event, CloseConnection)
                code = int(event.code) if event.code is not None else None
                if ws.state is ConnectionState.REMOTE_CLOSING:  # not an answer to ours
                    self._write(ws.send(event.response()))
                actions += self.proxy.origin_close(code, event.reason or "")
                self.close()
        self._deliver(actions)

    def _write(self, data: bytes) -> None:
        if self.io is not None and data:
            self.io.write(data)

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
        if self.io is not None:
            self.io.close()
            self.io = None

    def connection_lost(self, reason: str | None) -> None:
        """The driver's connection ended (`reason`: the error, if any)."""
        if not self.closing:
            self.closing = True
            self.io = None
            self._deliver(self.proxy.origin_failed(reason or "origin closed"))
