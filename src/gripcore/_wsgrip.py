"""What every client WebSocket session shares, whatever carries it to the origin.

A client WebSocket reaches the origin either over WebSocket-over-HTTP (`_wsgateway`) or over a
WebSocket of its own (`_wsproxy`). Both do the same on the client side, and this base class is
the one place that does it:

* frames for the client are written into `subscriber.outbuf` (split at 16 KiB, close frames
  with a code only when an endpoint may send it);
* GRIP mode (pushpin-behaviour.md section 4.3): the origin accepted the `grip` extension, so a
  text message starting with `c:` is a control message (subscribe, unsubscribe, detach,
  set-meta, keep-alive, send-delayed, flush-delayed), others need the message prefix;
* keep-alives and delayed sends toward the client, with their deadlines;
* the hub's actions for the connection: a published close, a slow-consumer overflow, a
  filter failure in debug mode.

Subclasses say how the connection ends (`_end`), what detaching means (`_detach`), and what a
published close and refresh do toward their origin (`_tell_origin_closed`, `_refresh`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from ._errors import ControlMessageError, LocalProtocolError, RemoteProtocolError
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

__all__ = [
    "MAX_FRAME",
    "AcceptClient",
    "CloseClient",
    "GripWebSocket",
    "RejectClient",
    "WebSocketAction",
    "close_payload",
    "encode_frames",
    "handshake_refusal",
    "parse_close_payload",
]

# Frames toward the client carry at most this much (Pushpin splits messages at 16 KiB).
MAX_FRAME = 16_384

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


@dataclass(frozen=True, slots=True)
class WebSocketAction:
    """Something the adapter must do for a client WebSocket connection."""


@dataclass(frozen=True, slots=True)
class AcceptClient(WebSocketAction):
    """Complete the client handshake (101) with these extra response headers."""

    headers: Headers


@dataclass(frozen=True, slots=True)
class RejectClient(WebSocketAction):
    """Refuse the client handshake with this response."""

    status: int
    reason: bytes
    headers: Headers
    body: bytes


# RFC 6455 section 4.2.1: the client's key is a base64-encoded 16-byte nonce, the version 13.
_WS_KEY_BYTES = 16
_WS_VERSION = b"13"
_TEXT = (b"Content-Type", b"text/plain")


def handshake_refusal(headers: Sequence[tuple[bytes, bytes]]) -> RejectClient | None:
    """The answer to a client's opening handshake the server must refuse, or None (RFC 6455
    section 4.2.1): a `Sec-WebSocket-Version` other than 13 gets 426 with the version we speak
    (section 4.2.2), a missing `Sec-WebSocket-Key` or one that is not the base64 of 16 bytes
    gets 400. Header names are matched case-insensitively."""
    version = key = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"sec-websocket-version" and version is None:
            version = value
        elif lower == b"sec-websocket-key" and key is None:
            key = value
    if version != _WS_VERSION:
        return RejectClient(
            426,
            b"Upgrade Required",
            [_TEXT, (b"Sec-WebSocket-Version", _WS_VERSION)],
            b"Unsupported WebSocket version.\n",
        )
    try:
        nonce = base64.b64decode(key or b"", validate=True)
    except binascii.Error:
        nonce = b""
    if len(nonce) != _WS_KEY_BYTES:
        return RejectClient(400, b"Bad Request", [_TEXT], b"Invalid Sec-WebSocket-Key.\n")
    return None


@dataclass(frozen=True, slots=True)
class CloseClient(WebSocketAction):
    """Write what is in `outbuf` (a close frame when there was one to send), then close.
    `abort`: drop the connection at once (a client that stopped reading: slow consumer)."""

    abort: bool = False


def _sendable_close_code(code: int) -> bool:
    """Codes an endpoint may put in a close frame (RFC 6455 section 7.4): 1005, 1006 and 1015
    are reserved for reporting, and below 1000 nothing is defined. Old GRIP libraries send 0
    (gripcontrol's `close()` without a code), which clients would reject as a protocol error."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_payload(code: int | None, reason: str) -> bytes:
    """The payload of a close frame toward a client: no status for codes it may not carry."""
    if code is None or not _sendable_close_code(code):
        return b""  # a close frame without a status: valid for any client
    # a close frame carries 125 bytes: the code and 123 of reason, cut between characters
    cut = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
    return code.to_bytes(2, "big") + cut.encode("utf-8")


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a close frame's payload as `close_payload` writes it: no code for an
    empty payload. Undecodable reason bytes are replaced; never raises."""
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")


def encode_frames(opcode: int, payload: bytes) -> bytes:
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


class GripWebSocket:
    """The client side of one WebSocket session, and GRIP mode on the origin's messages."""

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        *,
        channel_prefix: str = "",
        implicit_channels: Sequence[str] = (),
        debug: bool = False,
    ) -> None:
        if subscriber.transport is not Transport.WEBSOCKET:
            raise LocalProtocolError(f"a {type(self).__name__} needs a WEBSOCKET subscriber")
        self.hub = hub
        self.subscriber = subscriber
        self.channel_prefix = channel_prefix
        self.implicit = frozenset(channel_prefix + c for c in implicit_channels)
        self.debug = debug
        self.grip = False
        self.message_prefix = b"m:"
        self._keep_alive: KeepAlive | None = None
        self._keep_alive_at: float | None = None
        self._delayed: tuple[bytes, float] | None = None
        subscriber.channel_prefix = channel_prefix

    # --- hooks for the transports ---

    def _end(self, actions: list[WebSocketAction]) -> list[WebSocketAction]:
        raise NotImplementedError

    def _detach(self) -> list[WebSocketAction]:
        raise NotImplementedError

    def _tell_origin_closed(self) -> list[WebSocketAction]:
        """A published close ended the client: what the origin is told (nothing by default)."""
        return []

    def _refresh(self, now: float) -> list[WebSocketAction]:
        """A published refresh (meaningful for WebSocket-over-HTTP only)."""
        return []

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    # --- what the adapter calls, whatever the transport ---

    def start(self, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    def client_message(self, data: bytes, is_text: bool, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    def client_ping(self, data: bytes, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    def client_pong(self, data: bytes, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    def client_close(self, code: int | None, reason: str, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    def client_gone(self, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    def shutdown(self) -> list[WebSocketAction]:
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        raise NotImplementedError

    def handle_timer(self, now: float) -> list[WebSocketAction]:
        raise NotImplementedError

    # --- toward the client ---

    def _send_to_client(self, opcode: int, payload: bytes) -> None:
        self.subscriber.outbuf += encode_frames(opcode, payload)

    def _close_client(
        self, code: int | None, reason: str = "", *, frame: bool = True, abort: bool = False
    ) -> list[WebSocketAction]:
        """Send a close frame (without a status when `code` is None), unless `frame` is False
        or `abort` (the connection is dropped), and end the connection."""
        if frame and not abort:
            self.subscriber.outbuf += encode_ws_frame(0x8, close_payload(code, reason))
        return self._end([CloseClient(abort)])

    # --- GRIP mode ---

    def _accept_grip(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """GRIP mode when the origin's handshake answer accepts the `grip` extension; then the
        route's implicit channels are subscribed."""
        for name, value in headers:
            if name.lower() == b"sec-websocket-extensions":
                try:
                    prefix = parse_grip_extension(value)
                except RemoteProtocolError:
                    prefix = None  # unparsable: no grip element, as in Pushpin
                if prefix is not None:
                    self.grip = True
                    self.message_prefix = prefix
        for channel in self.implicit:
            self.hub.subscribe(self.subscriber, channel)

    def _origin_message(self, data: bytes, is_text: bool, now: float) -> list[WebSocketAction]:
        """A whole message from the origin: relayed, dropped, or a control message."""
        opcode = 0x1 if is_text else 0x2
        if not self.grip:
            self._send_to_client(opcode, data)
            return []
        try:
            what = classify_origin_message(
                data, is_text=is_text, message_prefix=self.message_prefix
            )
        except ControlMessageError:
            return []  # Pushpin ignores invalid control messages
        if isinstance(what, bytes):
            self._send_to_client(opcode, what)
            return []
        if what is None:
            return []  # unprefixed messages are dropped in GRIP mode
        return self._control(what, now)

    def _control(self, msg: ControlMessage, now: float) -> list[WebSocketAction]:
        sub = self.subscriber
        if isinstance(msg, Subscribe):
            if len(msg.filters) > MAX_FILTERS:
                reason = f"too many filters for channel '{msg.channel}'" if self.debug else ""
                return self._close_client(CLOSE_INTERNAL, reason)
            # beyond the channel limit Pushpin ignores WebSocket subscriptions
            self.hub.subscribe(sub, self.channel_prefix + msg.channel, filters=msg.filters)
        elif isinstance(msg, Unsubscribe):
            name = self.channel_prefix + msg.channel
            if name not in self.implicit:
                self.hub.unsubscribe(sub, name)
        elif isinstance(msg, Detach):
            return self._detach()
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
            self._delayed = (encode_frames(opcode, msg.content), now + msg.timeout)
        elif isinstance(msg, FlushDelayed):
            self._flush_delayed()
        return []  # Session: only meaningful with a state service, which we do not run

    def _flush_delayed(self) -> None:
        if self._delayed is not None:
            self.subscriber.outbuf += self._delayed[0]
            self._delayed = None

    # --- hub events and timers ---

    def handle_events(self, events: Sequence[HubEvent], now: float) -> list[WebSocketAction]:
        """Act on what the hub queued for this connection."""
        actions: list[WebSocketAction] = []
        for event in events:
            if self.closed:
                break
            if isinstance(event, CloseRequested):
                tell = self._tell_origin_closed()
                actions += self._close_client(event.code, event.reason or "")
                actions += tell
            elif isinstance(event, RefreshRequested):
                actions += self._refresh(now)
            elif isinstance(event, BufferOverflow):
                actions += self._close_client(CLOSE_TRY_LATER, "slow consumer", abort=True)
            elif isinstance(event, FilterFailed) and self.debug:
                actions += self._close_client(CLOSE_INTERNAL, event.message)
        return actions

    def wrote(self, now: float) -> None:
        """The adapter wrote to the client: an idle-mode keep-alive starts counting again."""
        ka = self._keep_alive
        if ka is not None and ka.mode == "idle":
            self._keep_alive_at = now + ka.timeout

    def _client_deadlines(self) -> list[float]:
        times = [self._keep_alive_at, self._delayed[1] if self._delayed is not None else None]
        return [t for t in times if t is not None]

    def _client_timers(self, now: float) -> None:
        """Delayed sends and keep-alives that are due."""
        if self._delayed is not None and now >= self._delayed[1]:
            self._flush_delayed()
        ka = self._keep_alive
        if ka is not None and self._keep_alive_at is not None and now >= self._keep_alive_at:
            assert ka.content is not None
            self._send_to_client(WS_OPCODES[ka.message_type], ka.content)
            self._keep_alive_at = now + ka.timeout
