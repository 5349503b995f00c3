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

from ._errors import LocalProtocolError, WebSocketEventsError
from ._hub import Hub, Subscriber
from ._proxy import Headers
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
from ._wsgrip import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    AcceptClient,
    CloseClient,
    GripWebSocket,
    RejectClient,
    WebSocketAction,
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
    (_D, "detach"): _D,  # a second detach changes nothing
    (_D, "close"): _X,
    (_D, "client-gone"): _X,
    (_X, "client-gone"): _X,
}


GatewayAction = WebSocketAction  # what the gateway asks of the adapter


@dataclass(frozen=True, slots=True)
class OriginPost(WebSocketAction):
    """POST `body` to the origin; `headers` go after the replayed client handshake headers.
    `expect_answer` False: fire and forget (DISCONNECT), do not feed the answer back."""

    body: bytes
    headers: Headers
    expect_answer: bool = True


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()


class WebSocketGateway(GripWebSocket):
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
        super().__init__(
            hub,
            subscriber,
            channel_prefix=channel_prefix,
            implicit_channels=implicit_channels,
            debug=debug,
        )
        self.connection_id = connection_id
        self.one_event = one_event
        self.max_pending = max_pending
        self._jitter = jitter
        self.state = _C
        self.meta: dict[str, str] = {}  # Set-Meta-* -> Meta-* (connection level)
        self._pending: list[WebSocketEvent] = []
        self._pending_bytes = 0
        self._in_flight: bytes | None = None
        self._close_in_flight = False  # the request in flight carries the client's CLOSE
        self._client_close_code = CLOSE_NORMAL
        self._refresh_wanted = False
        self._retries = 0
        self._retry_at: float | None = None
        self._ka_interval: float | None = None
        self._ka_request_at: float | None = None
        self._last_request_at = 0.0

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
            return self._close_client(CLOSE_INTERNAL, "origin request failed")
        try:
            events = decode_events(body)
        except WebSocketEventsError:
            return self._close_client(CLOSE_INTERNAL, "invalid origin response")
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
        self._accept_grip(headers)
        self._read_connection_headers(headers)
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
            return self._close_client(CLOSE_INTERNAL, "origin unavailable")
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
                actions += self._origin_message(event.data, isinstance(event, Text), now)
            elif isinstance(event, Ping):
                self._send_to_client(0x9, event.data)
            elif isinstance(event, Pong):
                self._send_to_client(0xA, event.data)
            elif isinstance(event, Close):
                return actions + self._close_client(
                    event.code if event.code is not None else CLOSE_NORMAL, event.reason
                )
            else:
                # DISCONNECT: the origin forgot us; OPEN after the handshake is an error
                return actions + self._close_client(None, frame=False)
        return actions

    # --- the client ---

    def client_message(self, data: bytes, is_text: bool, now: float) -> list[GatewayAction]:
        """A whole message from the client (the adapter reassembles fragments)."""
        if self.state in (_D, _X, _C):
            return []  # detached: discarded; before the handshake ends: cannot happen
        event: WebSocketEvent = Text(data) if is_text else Binary(data)
        self._pending.append(event)
        self._pending_bytes += len(data)
        if self._pending_bytes > self.max_pending:
            return self._close_client(CLOSE_TOO_BIG, "too much data pending for the origin")
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
            return self._close_client(code if code is not None else CLOSE_NORMAL, reason)
        if self.state is _X:
            return []
        self._client_close_code = code if code is not None else CLOSE_NORMAL
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
        return self._close_client(CLOSE_GOING_AWAY, "server shutting down")

    # --- hooks of the shared client side (_wsgrip) ---

    def _detach(self) -> list[GatewayAction]:
        self._move("detach")
        self._pending.clear()
        self._pending_bytes = 0
        return []

    def _tell_origin_closed(self) -> list[GatewayAction]:
        """After a published close, the origin hears DISCONNECT (if it was still connected)."""
        if self.state not in (_I, _R):
            return []
        return [OriginPost(encode_events([Disconnect()]), self._headers(), expect_answer=False)]

    def _refresh(self, now: float) -> list[GatewayAction]:
        self._refresh_wanted = True
        return self._maybe_request(now) if self.state is _I else []

    # --- requests and timers ---

    def _maybe_request(self, now: float) -> list[GatewayAction]:
        if self.state is not _I or self._retry_at is not None:
            return []
        if not self._pending and not self._refresh_wanted:
            return []
        if self.one_event:
            batch, self._pending = self._pending[:1], self._pending[1:]
        else:
            batch, self._pending = self._pending, []
        self._pending_bytes = sum(
            len(e.data) for e in self._pending if isinstance(e, Text | Binary)
        )
        self._refresh_wanted = False
        self._close_in_flight = any(isinstance(e, Close) for e in batch)
        self._move("request")
        return [self._post(encode_events(batch), now)]

    def next_deadline(self) -> float | None:
        if self.state is _X:
            return None
        times = self._client_deadlines()
        times += [
            t
            for t in (self._retry_at, self._ka_request_at if self.state is _I else None)
            if t is not None
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[GatewayAction]:
        actions: list[GatewayAction] = []
        if self.state is _X:
            return actions
        self._client_timers(now)
        if self._retry_at is not None and now >= self._retry_at and self.state is _R:
            self._retry_at = None
            assert self._in_flight is not None
            actions.append(self._post(self._in_flight, now))
        elif self.state is _I and self._ka_request_at is not None and now >= self._ka_request_at:
            self._refresh_wanted = True
            actions += self._maybe_request(now)
        return actions
