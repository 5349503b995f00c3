"""The WebSocket-over-HTTP gateway: one client WebSocket driven by HTTP requests to the origin.

pushpin-behaviour.md section 4.2 is the spec. The client speaks WebSocket to us; the origin
sees a series of `POST`s whose bodies are `application/websocket-events`. This module is the
per-connection state machine in between; it performs no I/O:

* the adapter feeds it what the client does (`client_message`, `client_ping`, `client_close`,
  `client_gone`), what the origin answers (`origin_response`, `origin_failed`), hub events
  (publishes already went to `subscriber.outbuf`; actions arrive as `HubEvent`s) and timers;
* it answers with `GatewayAction`s (`OriginPost`, `AcceptClient`, `RejectClient`, `CloseClient`)
  and writes WebSocket frames for the client into `subscriber.outbuf`.

Rules kept from the reference: the first request carries only `OPEN` and its answer must start
with `OPEN`; one request in flight per connection, client messages batched behind it (or one
message event per request with `one_event`); `Keep-Alive-Interval` (at least 20 s) makes empty
requests when idle; `Set-Meta-*` answers become `Meta-*` request headers; GRIP mode only when the
origin accepts the `grip` extension (`c:` control messages, message prefix); failed requests
after the handshake are retried up to 5 times with backoff; an unclean client disconnect sends
`DISCONNECT`.

Deliberate differences from Pushpin 1.36, each documented in the README: a `Content-Type` with
parameters (`application/websocket-events; charset=utf-8`) is accepted; a published close also
tells the origin with a `DISCONNECT` request; an output buffer overflow closes with 1013; a
shutdown before the handshake completed refuses the client with 503.

The transitions live in `_TRANSITIONS`; an input with no entry for the state is refused with
`LocalProtocolError` (the adapter called at the wrong time).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ._errors import (
    ControlMessageError,
    LocalProtocolError,
    RemoteProtocolError,
    WebSocketEventsError,
)
from ._filters import MAX_FILTERS
from ._hub import (
    WS_OPCODES,
    BufferOverflow,
    CloseRequested,
    FilterFailed,
    Hub,
    HubEvent,
    RefreshRequested,
    Subscriber,
    Transport,
)
from ._proxy import Headers
from ._speedups import encode_ws_frame, ws_frame_header
from ._wscontrol import (
    ControlMessage,
    Detach,
    FlushDelayed,
    KeepAlive,
    SendDelayed,
    SetMeta,
    Subscribe,
    Unsubscribe,
    classify_origin_message,
    parse_grip_extension,
)
from ._wsevents import (
    Binary,
    Close,
    Disconnect,
    Open,
    Ping,
    Pong,
    Text,
    WebSocketEvent,
    decode_events,
    encode_events,
)

__all__ = [
    "DEFAULT_MAX_PENDING",
    "MAX_RETRIES",
    "MIN_KEEP_ALIVE_INTERVAL",
    "AcceptClient",
    "CloseClient",
    "GatewayAction",
    "GatewayState",
    "OriginPost",
    "RejectClient",
    "WebSocketGateway",
]

CONTENT_TYPE = b"application/websocket-events"
# Client content waiting for the origin (Pushpin: 200,000 bytes); beyond it the client is closed.
DEFAULT_MAX_PENDING = 200_000
# Frames toward the client carry at most this much (Pushpin splits messages at 16 KiB).
MAX_FRAME = 16_384
# Body of a rejecting handshake response relayed to the client (Pushpin caps it at 100,000).
MAX_REJECT_BODY = 100_000
# Keep-Alive-Interval below this is raised to it (Pushpin), so origins cannot make us poll fast.
MIN_KEEP_ALIVE_INTERVAL = 20
# Requests that fail after the handshake are retried this often, 1 s * 2**n + jitter apart.
MAX_RETRIES = 5

# Response headers that describe the origin hop only: never relayed, even in a rejection.
_HOP_BY_HOP_RESPONSE = frozenset(
    {
        b"content-length",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"content-encoding",
    }
)

# Response headers that stay between gateway and origin, never reaching an accepted client.
_PRIVATE_RESPONSE = frozenset(
    {
        b"content-length",
        b"content-type",
        b"keep-alive-interval",
        b"sec-websocket-extensions",
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"upgrade",
        b"content-encoding",
    }
)

_CLOSE_NORMAL = 1000
_CLOSE_GOING_AWAY = 1001
_CLOSE_TOO_BIG = 1009
_CLOSE_INTERNAL = 1011
_CLOSE_TRY_LATER = 1013


class GatewayState(enum.Enum):
    CONNECTING = "connecting"  # the OPEN request is in flight
    IDLE = "idle"  # connected, no request in flight
    REQUESTING = "requesting"  # connected, a request in flight
    DETACHED = "detached"  # the origin let go: publishes still flow, client input is dropped
    CLOSED = "closed"


_C, _I, _R, _D, _X = (
    GatewayState.CONNECTING,
    GatewayState.IDLE,
    GatewayState.REQUESTING,
    GatewayState.DETACHED,
    GatewayState.CLOSED,
)

_TRANSITIONS: dict[tuple[GatewayState, str], GatewayState] = {
    (_C, "accepted"): _I,
    (_C, "rejected"): _X,
    (_C, "client-gone"): _X,
    (_I, "request"): _R,
    (_I, "detach"): _D,
    (_I, "close"): _X,
    (_I, "client-gone"): _X,
    (_R, "answered"): _I,
    (_R, "detach"): _D,
    (_R, "close"): _X,
    (_R, "client-gone"): _X,
    (_D, "close"): _X,
    (_D, "client-gone"): _X,
    (_X, "client-gone"): _X,
}


@dataclass(frozen=True, slots=True)
class GatewayAction:
    """Something the adapter must do for the connection."""


@dataclass(frozen=True, slots=True)
class OriginPost(GatewayAction):
    """POST `body` to the origin; `headers` go after the replayed client handshake headers.
    `expect_answer` False: fire and forget (DISCONNECT), do not feed the answer back."""

    body: bytes
    headers: Headers
    expect_answer: bool = True


@dataclass(frozen=True, slots=True)
class AcceptClient(GatewayAction):
    """Complete the client handshake (101) with these extra response headers."""

    headers: Headers


@dataclass(frozen=True, slots=True)
class RejectClient(GatewayAction):
    """Refuse the client handshake with this response."""

    status: int
    reason: bytes
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class CloseClient(GatewayAction):
    """Write what is in `outbuf` (a close frame when there was one to send), then close."""


def _sendable_close_code(code: int) -> bool:
    """Codes an endpoint may put in a close frame (RFC 6455 section 7.4): 1005, 1006 and 1015
    are reserved for reporting, and below 1000 nothing is defined. Old GRIP libraries send 0
    (gripcontrol's `close()` without a code), which clients would reject as a protocol error."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _close_payload(code: int | None, reason: str) -> bytes:
    if code is None or not _sendable_close_code(code):
        return b""  # a close frame without a status: valid for any client
    # a close frame carries 125 bytes: the code and 123 of reason, cut between characters
    cut = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
    return code.to_bytes(2, "big") + cut.encode("utf-8")


def _frames(opcode: int, payload: bytes) -> bytes:
    """A message as frames of at most MAX_FRAME bytes (continuations after the first)."""
    if len(payload) <= MAX_FRAME:
        return encode_ws_frame(opcode, payload)
    parts = []
    for start in range(0, len(payload), MAX_FRAME):
        piece = payload[start : start + MAX_FRAME]
        last = start + MAX_FRAME >= len(payload)
        header = bytearray(ws_frame_header(opcode if start == 0 else 0, len(piece)))
        if not last:
            header[0] &= 0x7F
        parts.append(bytes(header) + piece)
    return b"".join(parts)


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()


class WebSocketGateway:
    """One client WebSocket bridged to the origin over WebSocket-over-HTTP."""

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        *,
        connection_id: str,
        channel_prefix: str = "",
        implicit_channels: Sequence[str] = (),
        one_event: bool = False,
        debug: bool = False,
        max_pending: int = DEFAULT_MAX_PENDING,
        jitter: Callable[[], float] = lambda: 0.5,
    ) -> None:
        if subscriber.transport is not Transport.WEBSOCKET:
            raise LocalProtocolError("a WebSocket gateway needs a WEBSOCKET subscriber")
        self.hub = hub
        self.subscriber = subscriber
        self.connection_id = connection_id
        self.channel_prefix = channel_prefix
        self.implicit = frozenset(channel_prefix + c for c in implicit_channels)
        self.one_event = one_event
        self.debug = debug
        self.max_pending = max_pending
        self._jitter = jitter
        self.state = _C
        self.grip = False
        self.message_prefix = b"m:"
        self.meta: dict[str, str] = {}  # Set-Meta-* -> Meta-* (connection level)
        self._pending: list[WebSocketEvent] = []
        self._pending_bytes = 0
        self._in_flight: bytes | None = None
        self._close_in_flight = False  # the request in flight carries the client's CLOSE
        self._client_close_code = _CLOSE_NORMAL
        self._refresh = False
        self._retries = 0
        self._retry_at: float | None = None
        self._ka_interval: float | None = None
        self._ka_request_at: float | None = None
        self._last_request_at = 0.0
        self._keep_alive: KeepAlive | None = None
        self._keep_alive_at: float | None = None
        self._delayed: tuple[bytes, float] | None = None
        subscriber.channel_prefix = channel_prefix

    # --- plumbing ---

    def _move(self, event: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"WebSocket gateway: {event!r} while {self.state.value}")
        self.state = nxt

    @property
    def closed(self) -> bool:
        return self.state is _X

    def _headers(self) -> Headers:
        headers: Headers = [
            (b"Connection-Id", self.connection_id.encode("ascii")),
            (b"Content-Type", CONTENT_TYPE),
            (b"Accept", CONTENT_TYPE),
        ]
        headers.extend(
            (b"Meta-" + name.encode("latin-1"), value.encode("latin-1"))
            for name, value in self.meta.items()
        )
        return headers

    def _post(self, body: bytes, now: float) -> OriginPost:
        self._in_flight = body
        self._last_request_at = now
        self._schedule_keep_alive_request()
        return OriginPost(body, self._headers())

    def _schedule_keep_alive_request(self) -> None:
        """Keep-Alive-Interval counts from the last request made."""
        interval = self._ka_interval
        self._ka_request_at = self._last_request_at + interval if interval is not None else None

    def _send_to_client(self, opcode: int, payload: bytes) -> None:
        self.subscriber.outbuf += _frames(opcode, payload)

    def _close_client(
        self, code: int | None, reason: str = "", *, frame: bool = True
    ) -> list[GatewayAction]:
        """Send a close frame (without a status when `code` is None), unless `frame` is False
        (the connection is dropped), and end the connection."""
        if frame:
            self.subscriber.outbuf += encode_ws_frame(0x8, _close_payload(code, reason))
        return self._end([CloseClient()])

    def _end(self, actions: list[GatewayAction]) -> list[GatewayAction]:
        self._move("close")
        self.hub.remove(self.subscriber)
        return actions

    # --- start and origin answers ---

    def start(self, now: float) -> list[GatewayAction]:
        """The first request of the connection: OPEN only."""
        if self.state is not _C or self._in_flight is not None:
            raise LocalProtocolError("WebSocket gateway already started")
        return [self._post(encode_events([Open()]), now)]

    def origin_response(
        self,
        status: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        now: float,
    ) -> list[GatewayAction]:
        """The origin answered the request in flight."""
        if self.state is _C:
            return self._handshake_response(status, reason, headers, body, now)
        if self.state is not _R:
            return []  # answered after detach or close: nothing left to do
        self._in_flight = None
        self._retries = 0
        content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
        if status != 200 or _media_type(content_type) != CONTENT_TYPE:
            return self._close_client(_CLOSE_INTERNAL, "origin request failed")
        try:
            events = decode_events(body)
        except WebSocketEventsError:
            return self._close_client(_CLOSE_INTERNAL, "invalid origin response")
        self._move("answered")
        self._read_connection_headers(headers)
        actions = self._apply_events(events, now)
        if self.state is not _X and self._close_in_flight:
            # the origin did not answer our CLOSE with one (it may even have detached): close
            # the client ourselves
            return actions + self._close_client(self._client_close_code, "")
        return actions + self._maybe_request(now)

    def _handshake_response(
        self,
        status: int,
        reason: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        now: float,
    ) -> list[GatewayAction]:
        self._in_flight = None
        content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
        events: list[WebSocketEvent] = []
        ok = status == 200 and _media_type(content_type) == CONTENT_TYPE
        if ok:
            try:
                events = decode_events(body)
            except WebSocketEventsError:
                ok = False
            else:
                ok = bool(events) and isinstance(events[0], Open)
        if not ok:
            self._move("rejected")
            if status == 200:  # a 200 that is not a valid OPEN answer is the origin's fault
                return [RejectClient(502, b"Bad Gateway", [], b"Error while proxying to origin.\n")]
            kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP_RESPONSE]
            return [RejectClient(status, reason, kept, body[:MAX_REJECT_BODY])]
        self._move("accepted")
        for name, value in headers:
            if name.lower() == b"sec-websocket-extensions":
                try:
                    prefix = parse_grip_extension(value)
                except RemoteProtocolError:
                    prefix = None  # unparsable: no grip element, as in Pushpin
                if prefix is not None:
                    self.grip = True
                    self.message_prefix = prefix
        self._read_connection_headers(headers)
        for channel in self.implicit:
            self.hub.subscribe(self.subscriber, channel)
        accept = [
            (n, v)
            for n, v in headers
            if n.lower() not in _PRIVATE_RESPONSE and not n.lower().startswith(b"set-meta-")
        ]
        actions: list[GatewayAction] = [AcceptClient(accept)]
        actions += self._apply_events(events[1:], now)
        if self.state is _I:
            actions += self._maybe_request(now)
        return actions

    def _read_connection_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            lower = name.lower()
            if lower.startswith(b"set-meta-") and len(lower) > 9:
                key = name[9:].decode("latin-1")
                if value:
                    self.meta[key] = value.decode("latin-1")
                else:
                    self.meta.pop(key, None)
            elif lower == b"keep-alive-interval":
                text = value.strip()
                # as Qt's toInt: a 32-bit value or invalid (and invalid disables)
                seconds = int(text) if text.isdigit() and len(text) <= 10 else 0
                self._ka_interval = (
                    float(max(seconds, MIN_KEEP_ALIVE_INTERVAL)) if 0 < seconds < 2**31 else None
                )
                self._schedule_keep_alive_request()

    def origin_failed(self, message: str, now: float) -> list[GatewayAction]:
        """The request in flight failed (connect error, timeout, broken response)."""
        if self.state is _C:
            self._move("rejected")
            return [RejectClient(502, b"Bad Gateway", [], b"Error while proxying to origin.\n")]
        if self.state is not _R:
            return []
        if self._retries >= MAX_RETRIES:
            self._in_flight = None
            return self._close_client(_CLOSE_INTERNAL, "origin unavailable")
        self._retry_at = now + float(2**self._retries) + self._jitter()
        self._retries += 1
        del message
        return []

    # --- events from the origin ---

    def _apply_events(self, events: Iterable[WebSocketEvent], now: float) -> list[GatewayAction]:
        actions: list[GatewayAction] = []
        for event in events:
            if self.state is _X:
                break
            if isinstance(event, Text | Binary):
                actions += self._origin_message(event, now)
            elif isinstance(event, Ping):
                self._send_to_client(0x9, event.data)
            elif isinstance(event, Pong):
                self._send_to_client(0xA, event.data)
            elif isinstance(event, Close):
                return actions + self._close_client(
                    event.code if event.code is not None else _CLOSE_NORMAL, event.reason
                )
            else:
                # DISCONNECT: the origin forgot us; OPEN after the handshake is an error
                return actions + self._close_client(None, frame=False)
        return actions

    def _origin_message(self, event: Text | Binary, now: float) -> list[GatewayAction]:
        is_text = isinstance(event, Text)
        opcode = 0x1 if is_text else 0x2
        if not self.grip:
            self._send_to_client(opcode, event.data)
            return []
        try:
            what = classify_origin_message(
                event.data, is_text=is_text, message_prefix=self.message_prefix
            )
        except ControlMessageError:
            return []  # Pushpin ignores invalid control messages
        if isinstance(what, bytes):
            self._send_to_client(opcode, what)
            return []
        if what is None:
            return []  # unprefixed messages are dropped in GRIP mode
        return self._control(what, now)

    def _control(self, msg: ControlMessage, now: float) -> list[GatewayAction]:
        sub = self.subscriber
        if isinstance(msg, Subscribe):
            if len(msg.filters) > MAX_FILTERS:
                reason = f"too many filters for channel '{msg.channel}'" if self.debug else ""
                return self._close_client(_CLOSE_INTERNAL, reason)
            # beyond the channel limit Pushpin ignores WebSocket subscriptions
            self.hub.subscribe(sub, self.channel_prefix + msg.channel, filters=msg.filters)
        elif isinstance(msg, Unsubscribe):
            name = self.channel_prefix + msg.channel
            if name not in self.implicit:
                self.hub.unsubscribe(sub, name)
        elif isinstance(msg, Detach):
            self._move("detach")
            self._pending.clear()
            self._pending_bytes = 0
        elif isinstance(msg, SetMeta):
            if msg.value is None:
                sub.meta.pop(msg.name, None)
            else:
                sub.meta[msg.name] = msg.value
        elif isinstance(msg, KeepAlive):
            self._keep_alive = msg if msg.content is not None else None
            self._keep_alive_at = now + msg.timeout if self._keep_alive is not None else None
        elif isinstance(msg, SendDelayed):
            self._flush_delayed()
            opcode = WS_OPCODES[msg.message_type]
            self._delayed = (_frames(opcode, msg.content), now + msg.timeout)
        elif isinstance(msg, FlushDelayed):
            self._flush_delayed()
        return []  # Session: only meaningful with a state service, which we do not run

    def _flush_delayed(self) -> None:
        if self._delayed is not None:
            self.subscriber.outbuf += self._delayed[0]
            self._delayed = None

    # --- the client ---

    def client_message(self, data: bytes, is_text: bool, now: float) -> list[GatewayAction]:
        """A whole message from the client (the adapter reassembles fragments)."""
        if self.state in (_D, _X, _C):
            return []  # detached: discarded; before the handshake ends: cannot happen
        event: WebSocketEvent = Text(data) if is_text else Binary(data)
        self._pending.append(event)
        self._pending_bytes += len(data)
        if self._pending_bytes > self.max_pending:
            return self._close_client(_CLOSE_TOO_BIG, "too much data pending for the origin")
        return self._maybe_request(now)

    def client_ping(self, data: bytes, now: float) -> list[GatewayAction]:
        return self._client_control(Ping(data), now)

    def client_pong(self, data: bytes, now: float) -> list[GatewayAction]:
        return self._client_control(Pong(data), now)

    def _client_control(self, event: WebSocketEvent, now: float) -> list[GatewayAction]:
        if self.state not in (_I, _R):
            return []
        self._pending.append(event)
        return self._maybe_request(now)

    def client_close(self, code: int | None, reason: str, now: float) -> list[GatewayAction]:
        """The client sent a close frame: forward it, close once the origin answers."""
        if self.state in (_D, _C):
            return self._close_client(code if code is not None else _CLOSE_NORMAL, reason)
        if self.state is _X:
            return []
        self._client_close_code = code if code is not None else _CLOSE_NORMAL
        self._pending.append(Close(code, reason if code is not None else ""))
        return self._maybe_request(now)

    def client_gone(self, now: float) -> list[GatewayAction]:
        """The client vanished without a close: tell the origin with DISCONNECT."""
        connected = self.state in (_I, _R)
        self._move("client-gone")
        self.hub.remove(self.subscriber)
        if not connected:
            return []
        body = encode_events([Disconnect()])
        return [OriginPost(body, self._headers(), expect_answer=False)]

    def shutdown(self) -> list[GatewayAction]:
        """The server is stopping: close the client with 1001 (going away)."""
        if self.state is _X:
            return []
        if self.state is _C:  # no WebSocket yet: refuse the handshake
            self._move("rejected")
            return [RejectClient(503, b"Service Unavailable", [], b"Server shutting down.\n")]
        return self._close_client(_CLOSE_GOING_AWAY, "server shutting down")

    # --- hub events ---

    def handle_events(self, events: Iterable[HubEvent], now: float) -> list[GatewayAction]:
        actions: list[GatewayAction] = []
        for event in events:
            if self.state is _X:
                break
            if isinstance(event, CloseRequested):
                origin_was_live = self.state in (_I, _R)
                actions += self._close_client(event.code, event.reason or "")
                if origin_was_live:
                    body = encode_events([Disconnect()])
                    actions.append(OriginPost(body, self._headers(), expect_answer=False))
            elif isinstance(event, RefreshRequested):
                self._refresh = True
                if self.state is _I:
                    actions += self._maybe_request(now)
            elif isinstance(event, BufferOverflow):
                actions += self._close_client(_CLOSE_TRY_LATER, "slow consumer")
            elif isinstance(event, FilterFailed) and self.debug:
                actions += self._close_client(_CLOSE_INTERNAL, event.message)
        return actions

    # --- requests and timers ---

    def _maybe_request(self, now: float) -> list[GatewayAction]:
        if self.state is not _I or self._retry_at is not None:
            return []
        if not self._pending and not self._refresh:
            return []
        if self.one_event:
            batch, self._pending = self._pending[:1], self._pending[1:]
        else:
            batch, self._pending = self._pending, []
        self._pending_bytes = sum(
            len(e.data) for e in self._pending if isinstance(e, Text | Binary)
        )
        self._refresh = False
        self._close_in_flight = any(isinstance(e, Close) for e in batch)
        self._move("request")
        return [self._post(encode_events(batch), now)]

    def next_deadline(self) -> float | None:
        if self.state is _X:
            return None
        times = [
            t
            for t in (
                self._retry_at,
                self._ka_request_at if self.state is _I else None,
                self._keep_alive_at,
                self._delayed[1] if self._delayed is not None else None,
            )
            if t is not None
        ]
        return min(times) if times else None

    def wrote(self, now: float) -> None:
        """The adapter wrote to the client: an idle-mode keep-alive starts counting again."""
        ka = self._keep_alive
        if ka is not None and ka.mode == "idle":
            self._keep_alive_at = now + ka.timeout

    def handle_timer(self, now: float) -> list[GatewayAction]:
        actions: list[GatewayAction] = []
        if self.state is _X:
            return actions
        if self._delayed is not None and now >= self._delayed[1]:
            self._flush_delayed()
        ka = self._keep_alive
        if ka is not None and self._keep_alive_at is not None and now >= self._keep_alive_at:
            assert ka.content is not None
            self._send_to_client(WS_OPCODES[ka.message_type], ka.content)
            self._keep_alive_at = now + ka.timeout
        if self._retry_at is not None and now >= self._retry_at and self.state is _R:
            self._retry_at = None
            assert self._in_flight is not None
            actions.append(self._post(self._in_flight, now))
        elif self.state is _I and self._ka_request_at is not None and now >= self._ka_request_at:
            self._refresh = True
            actions += self._maybe_request(now)
        return actions
