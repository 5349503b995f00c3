"""A client WebSocket proxied to the origin over a WebSocket of its own (Pushpin's default).

pushpin-behaviour.md section 4.1: the proxy opens a WebSocket to the origin for each client,
offering `Sec-WebSocket-Extensions: grip`. If the origin's handshake answer accepts `grip`,
the session is in GRIP mode: text messages from the origin starting with `c:` are control
messages and others need the message prefix (`_wsgrip`); otherwise messages pass through
untouched. Pings, pongs and closes are relayed both ways with their payloads and codes.

This module is the state machine only. The adapter connects to the origin and does the
handshake when asked (`ConnectOrigin`), then feeds in what happens on either side:
`origin_accepted` / `origin_rejected` / `origin_failed`, `origin_message` / `origin_ping` /
`origin_pong` / `origin_close`, and `client_message` / `client_ping` / `client_pong` /
`client_close` / `client_gone`. It answers with actions: `SendToOrigin` (a frame for the
origin connection), `CloseOrigin`, and the client-side `AcceptClient` / `RejectClient` /
`CloseClient`; frames for the client go to `subscriber.outbuf`.

`detach` closes the origin side and keeps the client: publishes still reach it, and what it
sends is dropped (one-way push). A published `refresh` has no meaning here (Pushpin: WebSocket-
over-HTTP only) and is ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ._errors import LocalProtocolError
from ._hub import Hub, Subscriber
from ._wsgrip import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    AcceptClient,
    CloseClient,
    GripWebSocket,
    RejectClient,
    WebSocketAction,
)

__all__ = [
    "MAX_REJECT_BODY",
    "AcceptClient",
    "CloseClient",
    "CloseOrigin",
    "ConnectOrigin",
    "ProxyState",
    "RejectClient",
    "SendToOrigin",
    "WebSocketProxy",
]

# Body of a rejecting origin handshake answer relayed to the client (as for WebSocket-over-HTTP).
MAX_REJECT_BODY = 100_000

# Headers of the origin's 101 that describe the origin hop, never relayed to the client.
_HANDSHAKE_PRIVATE = frozenset(
    {
        b"connection",
        b"upgrade",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"content-length",
        b"transfer-encoding",
        b"keep-alive",
    }
)
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"content-length"}
)


class ProxyState(enum.Enum):
    CONNECTING = "connecting"  # the origin handshake is under way
    OPEN = "open"  # both sides open
    CLOSING = "closing"  # the client's close went to the origin; waiting for its answer
    DETACHED = "detached"  # origin side closed by `detach`: one-way push to the client
    CLOSED = "closed"


_C, _O, _G, _D, _X = (
    ProxyState.CONNECTING,
    ProxyState.OPEN,
    ProxyState.CLOSING,
    ProxyState.DETACHED,
    ProxyState.CLOSED,
)

_TRANSITIONS: dict[tuple[ProxyState, str], ProxyState] = {
    (_C, "accepted"): _O,
    (_C, "rejected"): _X,
    (_C, "close"): _X,
    (_C, "client-gone"): _X,
    (_O, "client-close"): _G,
    (_O, "detach"): _D,
    (_O, "close"): _X,
    (_O, "origin-lost"): _D,
    (_G, "origin-lost"): _D,
    (_O, "client-gone"): _X,
    (_G, "close"): _X,
    (_G, "client-gone"): _X,
    (_D, "close"): _X,
    (_D, "client-gone"): _X,
    (_X, "client-gone"): _X,
}


@dataclass(frozen=True, slots=True)
class ConnectOrigin(WebSocketAction):
    """Open the WebSocket to the origin (handshake offering `grip`), then report the outcome."""


@dataclass(frozen=True, slots=True)
class SendToOrigin(WebSocketAction):
    """Send one frame to the origin: a message, a ping or pong, or a close."""

    kind: Literal["text", "binary", "ping", "pong", "close"]
    data: bytes = b""
    code: int | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CloseOrigin(WebSocketAction):
    """Drop the origin connection (no answer is awaited)."""


class WebSocketProxy(GripWebSocket):
    """One client WebSocket and its own WebSocket to the origin."""

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        *,
        channel_prefix: str = "",
        implicit_channels: Sequence[str] = (),
        debug: bool = False,
    ) -> None:
        super().__init__(
            hub,
            subscriber,
            channel_prefix=channel_prefix,
            implicit_channels=implicit_channels,
            debug=debug,
        )
        self.state = _C
        self._started = False
        self._client_close: tuple[int | None, str] = (CLOSE_NORMAL, "")

    # --- plumbing ---

    def _move(self, event: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"WebSocket proxy: {event!r} while {self.state.value}")
        self.state = nxt

    @property
    def closed(self) -> bool:
        return self.state is _X

    def _end(self, actions: list[WebSocketAction]) -> list[WebSocketAction]:
        origin_open = self.state in (_O, _G)
        self._move("close")
        self.hub.remove(self.subscriber)
        return [*actions, CloseOrigin()] if origin_open else actions

    def _detach(self) -> list[WebSocketAction]:
        if self.state is _G:
            # the origin detaches instead of answering the client's close: answer it here
            code, reason = self._client_close
            return self._close_client(code if code is not None else CLOSE_NORMAL, reason)
        self._move("detach")
        return [CloseOrigin()]

    # --- the origin ---

    def start(self, now: float) -> list[WebSocketAction]:
        """Ask the adapter to connect to the origin."""
        if self._started:
            raise LocalProtocolError("WebSocket proxy already started")
        self._started = True
        del now
        return [ConnectOrigin()]

    def origin_accepted(
        self, headers: Sequence[tuple[bytes, bytes]], now: float
    ) -> list[WebSocketAction]:
        """The origin answered the handshake with 101: accept the client with its headers."""
        self._move("accepted")
        self._accept_grip(headers)
        kept = [(n, v) for n, v in headers if n.lower() not in _HANDSHAKE_PRIVATE]
        del now
        return [AcceptClient(kept)]

    def origin_rejected(
        self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> list[WebSocketAction]:
        """The origin refused the handshake: the client gets its answer."""
        self._move("rejected")
        kept = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
        return [RejectClient(status, reason, kept, body[:MAX_REJECT_BODY])]

    def origin_failed(self, message: str) -> list[WebSocketAction]:
        """The origin connection failed (connect error, broken frames, reset)."""
        del message
        if self.state is _C:
            self._move("rejected")
            return [RejectClient(502, b"Bad Gateway", [], b"Error while proxying to origin.\n")]
        if self.state in (_O, _G):
            self._move("origin-lost")  # the origin side is gone already: nothing to close there
            return self._close_client(CLOSE_INTERNAL, "origin connection failed")
        return []

    def origin_message(self, data: bytes, is_text: bool, now: float) -> list[WebSocketAction]:
        if self.state not in (_O, _G):
            return []
        return self._origin_message(data, is_text, now)

    def origin_ping(self, data: bytes) -> list[WebSocketAction]:
        if self.state in (_O, _G):
            self._send_to_client(0x9, data)
        return []

    def origin_pong(self, data: bytes) -> list[WebSocketAction]:
        if self.state in (_O, _G):
            self._send_to_client(0xA, data)
        return []

    def origin_close(self, code: int | None, reason: str) -> list[WebSocketAction]:
        """The origin closed: the client gets the same code and reason."""
        if self.state not in (_O, _G):
            return []
        if self.state is _G:
            code, reason = self._client_close  # our close was answered: echo the client's
        return self._close_client(code if code is not None else CLOSE_NORMAL, reason)

    # --- the client ---

    def client_message(self, data: bytes, is_text: bool, now: float) -> list[WebSocketAction]:
        """A whole message from the client (the adapter reassembles fragments)."""
        del now
        if self.state is not _O:
            return []  # detached or closing: dropped
        return [SendToOrigin("text" if is_text else "binary", data)]

    def client_ping(self, data: bytes, now: float) -> list[WebSocketAction]:
        del now
        return [SendToOrigin("ping", data)] if self.state is _O else []

    def client_pong(self, data: bytes, now: float) -> list[WebSocketAction]:
        del now
        return [SendToOrigin("pong", data)] if self.state is _O else []

    def client_close(self, code: int | None, reason: str, now: float) -> list[WebSocketAction]:
        """The client sent a close frame: forward it; close the client when the origin answers.

        Raises LocalProtocolError while connecting (the client has not been accepted)."""
        del now
        if self.state in (_G, _X):
            return []  # a second close, or one after the end
        if self.state is _D:
            return self._close_client(code if code is not None else CLOSE_NORMAL, reason)
        self._move("client-close")  # refused while connecting: the client was not accepted yet
        self._client_close = (code, reason if code is not None else "")
        return [SendToOrigin("close", code=code, reason=self._client_close[1])]

    def client_gone(self, now: float) -> list[WebSocketAction]:
        """The client vanished: drop the origin connection."""
        del now
        origin_open = self.state in (_C, _O, _G)
        self._move("client-gone")
        self.hub.remove(self.subscriber)
        return [CloseOrigin()] if origin_open else []

    def shutdown(self) -> list[WebSocketAction]:
        """The server is stopping: close the client with 1001 (going away)."""
        if self.state is _X:
            return []
        if self.state is _C:
            self._move("rejected")
            return [
                CloseOrigin(),
                RejectClient(503, b"Service Unavailable", [], b"Server shutting down.\n"),
            ]
        return self._close_client(CLOSE_GOING_AWAY, "server shutting down")

    # --- timers ---

    def next_deadline(self) -> float | None:
        if self.state is _X:
            return None
        times = self._client_deadlines()
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[WebSocketAction]:
        if self.state is not _X:
            self._client_timers(now)
        return []
