"""The subscription hub: channel -> subscribers, and the fan-out of one published item.

Strategy. A publish to a channel with thousands of held connections must cost little more than
one buffer append per connection. So the hub keeps, for every channel, two kinds of members:

* **fast** members: stream or WebSocket subscribers whose subscription has no filters and no
  prev-id. They all receive the same bytes, so the hub encodes each item once per framing (raw
  HTTP/1.0 body bytes, an HTTP/1.1 chunk, a WebSocket frame) and hands the encoded payload and a
  ``{subscriber: output buffer}`` dict to the compiled ``fanout`` loop, which appends the payload
  to every buffer without creating a Python object per delivery.
* **slow** members: response holds (long-polls), and subscriptions with filters or a prev-id.
  Each is handled one by one: filters run, prev-ids are checked, and what the session must act on
  becomes a `HubEvent` in the subscriber's ``events`` list. A subscriber whose next-link
  request is in flight is slow too: `hold_items` keeps its items and `release_items` replays
  them against the answer's prev-ids, as Pushpin's per-session publish queue does.

Nothing here writes to a socket. Output waits in ``Subscriber.outbuf`` and ``Subscriber.events``;
`Hub.publish` returns the subscribers that went from idle to having something pending (woken),
so the adapter schedules exactly one flush per connection however many items arrive meanwhile
(DESIGN.md, "Data flow of one publish").

Slow consumers. Each subscriber's ``outbuf`` is bounded by ``max_output_buffer``. An item that
would overflow it goes to the overflow policy: ``close`` (the default) skips the item and emits
`BufferOverflow`, and the session ends the connection so the client reconnects and recovers;
``drop-oldest`` drops whole messages from the front of the buffer until the item fits, delivers
it, and emits `MessagesDropped`. Message boundaries are recovered by parsing the framed bytes at
the front (an HTTP/1.1 chunk, or a WebSocket message of one or more frames), which is sound
because the adapter always drains the whole buffer when it writes, so the buffer starts on a
boundary. ``drop-oldest`` falls back to ``close`` when the item alone is larger than the
buffer, or when making room would mean dropping something that is not a whole droppable message:
an HTTP/1.0 body (it has no boundaries), the last chunk (it ends the body), a close frame (it
ends the WebSocket), or bytes it cannot parse. Then nothing at all is dropped.

Channel names in the hub are the names used for subscription, that is with any route `prefix`
already applied; `Subscriber.channel_prefix` lets filters see the un-prefixed names, as Pushpin's
`require-sub` does.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from ._errors import FilterError, LocalProtocolError
from ._filters import (
    FilterContext,
    apply_filters,
    drops,
    matches_content_filters,
    needs_filtering,
)
from ._items import HttpResponseFormat, HttpStreamFormat, Item, WsMessageFormat
from ._speedups import encode_chunk, encode_ws_frame, fanout
from ._wsdeflate import deflate_frame

__all__ = [
    "DEFAULT_MAX_CHANNELS_PER_SUBSCRIBER",
    "DEFAULT_MAX_OUTPUT_BUFFER",
    "MAX_QUEUED_ITEMS",
    "OVERFLOW_POLICIES",
    "WS_OPCODES",
    "BufferOverflow",
    "ChannelChange",
    "CloseRequested",
    "FilterFailed",
    "Framing",
    "GapDetected",
    "HintReceived",
    "Hub",
    "HubEvent",
    "MessagesDropped",
    "OverflowPolicy",
    "PublishResult",
    "RefreshRequested",
    "ResponseReady",
    "Subscriber",
    "Subscription",
    "Transport",
    "split_ws_messages",
]

# Pushpin's connection_subscription_max: beyond it HTTP holds are truncated and WebSocket
# subscribe requests are ignored. Bounds the hub's memory per connection.
DEFAULT_MAX_CHANNELS_PER_SUBSCRIBER = 20

# Bytes that may wait for one client before the slow-consumer policy applies. 1 MiB holds ~30
# maximum-size items (32 KiB each): far more than a live reader lets pile up between two loop
# iterations, yet small enough that the policy (close, by default) catches a stalled reader
# long before it matters to memory.
DEFAULT_MAX_OUTPUT_BUFFER = 1 << 20

# Pushpin's PUBLISH_QUEUE_MAX: items a stream keeps while its next-link request is in flight
# (`Hub.hold_items`). A recovery answer arrives within a request's time; beyond a hundred items
# meanwhile the stream is far behind, and the next gap recovers the rest from the origin.
MAX_QUEUED_ITEMS = 100

# What happens to an item that would overflow a subscriber's output buffer (see the header).
OverflowPolicy = Literal["close", "drop-oldest"]
OVERFLOW_POLICIES: Final[tuple[OverflowPolicy, ...]] = get_args(OverflowPolicy)

WS_OPCODES = {"text": 0x1, "binary": 0x2, "ping": 0x9, "pong": 0xA}


class Transport(enum.Enum):
    """How a subscriber receives items; the value is the publish format it consumes."""

    RESPONSE = "http-response"  # long-poll: one http-response completes the request
    STREAM = "http-stream"  # HTTP streaming and Server-Sent Events
    WEBSOCKET = "ws-message"  # WebSocket clients (native or behind WebSocket-over-HTTP)


class Framing(enum.IntEnum):
    """How published bytes are framed on the subscriber's connection."""

    RAW = 0  # HTTP/1.0 stream: the body is delimited by connection close, bytes go as they are
    CHUNKED = 1  # HTTP/1.1 stream: each item is one chunk
    WEBSOCKET = 2  # one WebSocket frame per message
    NONE = 3  # response holds: the session builds a whole response
    WEBSOCKET_DEFLATE = 4  # a WebSocket with permessage-deflate: one compressed frame per message


_DEFAULT_FRAMING = {
    Transport.RESPONSE: Framing.NONE,
    Transport.STREAM: Framing.CHUNKED,
    Transport.WEBSOCKET: Framing.WEBSOCKET,
}


# --- events for the session ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubEvent:
    """Something the subscriber's session must act on; `channel` is where it came from."""

    channel: str


@dataclass(frozen=True, slots=True)
class ResponseReady(HubEvent):
    """A long-poll received its response. The subscriber has left every channel already.

    `body` is the published body after filters, or None when the format carries a
    `body-patch` for the session to apply to the hold's own body.
    """

    item_id: str | None
    format: HttpResponseFormat
    body: bytes | None


@dataclass(frozen=True, slots=True)
class HintReceived(HubEvent):
    """Action `hint`: something changed; a long-poll retries, a stream re-fetches its next link."""


@dataclass(frozen=True, slots=True)
class RefreshRequested(HubEvent):
    """Action `refresh` on a WebSocket: the gateway makes a WebSocket-over-HTTP request now."""


@dataclass(frozen=True, slots=True)
class CloseRequested(HubEvent):
    """Action `close`: end the stream, or close the WebSocket with `code`/`reason`.

    The subscriber has left every channel; what was already in `outbuf` goes first.
    """

    code: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class GapDetected(HubEvent):
    """An item's prev-id did not follow the subscription's: the session recovers from origin."""

    expected_prev_id: str
    item_prev_id: str


@dataclass(frozen=True, slots=True)
class FilterFailed(HubEvent):
    """A filter raised; the item was not delivered to this subscriber (debug mode reports it)."""

    message: str


@dataclass(frozen=True, slots=True)
class BufferOverflow(HubEvent):
    """The output buffer is full: the item was not delivered; the slow-consumer policy applies."""

    dropped_bytes: int


@dataclass(frozen=True, slots=True)
class MessagesDropped(HubEvent):
    """Under ``drop-oldest``: `count` whole messages (`bytes` bytes of framed output) that were
    waiting in the output buffer were dropped to make room for newer ones. Sessions may ignore
    it; the adapter counts it. Consecutive drops for one channel are merged into one event."""

    count: int
    bytes: int

    def __post_init__(self) -> None:
        if self.count < 1 or self.bytes < 1:
            raise LocalProtocolError(
                f"MessagesDropped needs count and bytes >= 1, got {self.count} and {self.bytes}"
            )


# --- message boundaries in framed output (for drop-oldest) ---------------------------------

# One chunk's size line as `encode_chunk` writes it: hex digits (16 cover any size), no
# extensions. Bounding the digits bounds the scan on a buffer that does not hold chunks.
_CHUNK_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,16})\r\n")

_WS_FIN = 0x80
_WS_RSV = 0x70
_WS_MASK = 0x80
_WS_CONTINUATION = 0x0
_WS_CLOSE = 0x8


def _chunk_end(buf: bytearray, pos: int) -> int | None:
    """Where the chunk starting at `pos` ends, or None when there is no whole chunk there (or
    it is the last chunk, which ends the body and must never be dropped)."""
    m = _CHUNK_SIZE_LINE.match(buf, pos)
    if m is None:
        return None
    size = int(m[1], 16)
    end = m.end() + size + 2
    if size == 0 or end > len(buf) or buf[end - 2 : end] != b"\r\n":
        return None
    return end


def _ws_frame(buf: bytes | bytearray, pos: int) -> tuple[int, bool, int, int] | None:
    """(opcode, FIN, payload start, end) of the unmasked frame starting at `pos`, or None when
    no whole frame this server could have framed (no RSV bits, no mask) is there."""
    if pos + 2 > len(buf):
        return None
    first, second = buf[pos], buf[pos + 1]
    if first & _WS_RSV or second & _WS_MASK:
        return None
    length, head = second & 0x7F, 2
    if length == 126:
        length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
    elif length == 127:
        length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
    end = pos + head + length
    # a truncated header reads as a shorter length, but end still passes len(buf): None
    if end > len(buf):
        return None
    return first & 0x0F, bool(first & _WS_FIN), pos + head, end


def _ws_frame_end(buf: bytearray, pos: int) -> tuple[int, bool, int] | None:
    """(opcode, FIN, end) of the unmasked frame starting at `pos`, or None (see `_ws_frame`)."""
    frame = _ws_frame(buf, pos)
    return None if frame is None else (frame[0], frame[1], frame[3])


def _ws_message_end(buf: bytearray, pos: int) -> int | None:
    """Where the WebSocket message starting at `pos` ends: one final frame, or a first frame
    and its continuations up to the final one. None when there is no whole message there, the
    front is a continuation (the message's head was written already), or a close frame (it ends
    the connection and must go out)."""
    frame = _ws_frame_end(buf, pos)
    if frame is None:
        return None
    opcode, fin, pos = frame
    if opcode in (_WS_CONTINUATION, _WS_CLOSE):
        return None
    while not fin:
        frame = _ws_frame_end(buf, pos)
        if frame is None or frame[0] != _WS_CONTINUATION:
            return None  # cut short, or a control frame inside the message: leave it whole
        _, fin, pos = frame
    return pos


def split_ws_messages(data: bytes | bytearray) -> list[tuple[int, bytes]]:
    """The whole messages in WebSocket output framed here (a drained `outbuf`), as (opcode,
    payload) pairs with continuation frames joined to their first frame: for a transport that
    sends messages rather than frames (an ASGI server's `websocket.send`). Control frames
    inside a fragmented message come out before it, as they went on the wire first.

    Raises `LocalProtocolError` for bytes that are not whole frames of that kind (the buffer
    must be drained whole, as the adapters do: it then starts and ends on a frame boundary).
    """
    messages: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    opcode = 0
    pos = 0
    while pos < len(data):
        frame = _ws_frame(data, pos)
        if frame is None:
            raise LocalProtocolError(f"no whole WebSocket frame at offset {pos}")
        kind, fin, start, pos = frame
        payload = bytes(data[start:pos])
        if kind >= 0x8:  # control frames are never fragmented
            messages.append((kind, payload))
            continue
        if (kind == _WS_CONTINUATION) != bool(parts):
            raise LocalProtocolError(f"unexpected WebSocket frame opcode {kind} at offset {pos}")
        if not parts:
            opcode = kind
        parts.append(payload)
        if fin:
            messages.append((opcode, b"".join(parts)))
            parts = []
    if parts:
        raise LocalProtocolError("WebSocket output ends inside a fragmented message")
    return messages


# where the message at a position ends, by framing; framings without boundaries are absent
_MESSAGE_END: Final[dict[Framing | None, Callable[[bytearray, int], int | None]]] = {
    Framing.CHUNKED: _chunk_end,
    Framing.WEBSOCKET: _ws_message_end,
    Framing.WEBSOCKET_DEFLATE: _ws_message_end,
}

_WEBSOCKET_FRAMINGS: Final = (Framing.WEBSOCKET, Framing.WEBSOCKET_DEFLATE)


# --- subscribers --------------------------------------------------------------------------


@dataclass(slots=True)
class Subscription:
    """One channel of one subscriber."""

    filters: tuple[str, ...] = ()
    prev_id: str | None = None
    paused: bool = False  # a resume is reading history: the engine holds live items meanwhile

    @property
    def is_fast(self) -> bool:
        return self.prev_id is None and not self.paused and not needs_filtering(self.filters)


@dataclass(eq=False, slots=True)
class Subscriber:
    """A connection as the hub sees it: what it wants, and where its output waits.

    Sessions own one each. The adapter drains `outbuf` (bytes for the client, already framed)
    and `events` (things the session must act on) when the hub reports the subscriber woken.
    Identity-hashed, so it can key the hub's dicts.
    """

    transport: Transport
    id: str = ""
    framing: Framing | None = None
    meta: dict[str, str] = field(default_factory=dict)
    channel_prefix: str = ""
    outbuf: bytearray = field(default_factory=bytearray)
    events: list[HubEvent] = field(default_factory=list)
    channels: dict[str, Subscription] = field(default_factory=dict)
    owner: Any = None  # the adapter's connection object, for finding it when woken
    queue: list[Item] | None = None  # items kept while a next-link request is in flight

    def __post_init__(self) -> None:
        if self.framing is None:
            self.framing = _DEFAULT_FRAMING[self.transport]
        valid = (
            self.framing is Framing.NONE
            if self.transport is Transport.RESPONSE
            else self.framing is not Framing.NONE
            and (self.framing in _WEBSOCKET_FRAMINGS) == (self.transport is Transport.WEBSOCKET)
        )
        if not valid:
            raise LocalProtocolError(f"framing {self.framing.name} does not fit {self.transport}")

    def __hash__(self) -> int:
        return id(self)

    @property
    def pending(self) -> bool:
        """True while output or events wait for the session."""
        return bool(self.outbuf) or bool(self.events)

    def take_output(self) -> bytes:
        """Drain `outbuf`. The buffer object itself is kept: the hub holds a reference to it,
        so never rebind `outbuf`; clear it (as here) or `del outbuf[:n]` after a partial write."""
        data = bytes(self.outbuf)
        self.outbuf.clear()
        return data

    def take_events(self) -> list[HubEvent]:
        events = self.events[:]
        self.events.clear()
        return events

    def filter_context(self, pub_meta: Mapping[str, str]) -> FilterContext:
        """What filters see of this subscriber, for an item carrying `pub_meta`."""
        cut = len(self.channel_prefix)
        names = [c[cut:] if c.startswith(self.channel_prefix) else c for c in self.channels]
        prev_ids = {
            names[i]: s.prev_id
            for i, s in enumerate(self.channels.values())
            if s.prev_id is not None
        }
        return FilterContext(
            sub_meta=self.meta, pub_meta=pub_meta, channels=frozenset(names), prev_ids=prev_ids
        )


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """A channel gained its first subscriber (`subscribed`) or lost its last one."""

    channel: str
    subscribed: bool


@dataclass(slots=True)
class PublishResult:
    """What one publish did: deliveries made, and subscribers that now need the adapter.

    `woken` lists each subscriber whose output or events went from empty to pending; one with
    both may appear twice, so adapters collect them into a set of connections to flush.
    """

    delivered: int = 0
    woken: list[Hashable] = field(default_factory=list)


class _Members:
    """The members of one channel, split into fast (by framing) and slow."""

    __slots__ = ("fast", "slow")

    def __init__(self) -> None:
        # indexed by Framing (NONE's place stays empty: response holds are never fast)
        self.fast: tuple[dict[Hashable, bytearray], ...] = ({}, {}, {}, {}, {})
        self.slow: dict[Subscriber, Subscription] = {}

    def __len__(self) -> int:
        return len(self.slow) + sum(len(d) for d in self.fast)

    def add(self, sub: Subscriber, subscription: Subscription) -> None:
        self.discard(sub)
        if subscription.is_fast and sub.queue is None and sub.framing is not Framing.NONE:
            assert sub.framing is not None
            self.fast[sub.framing][sub] = sub.outbuf
        else:
            self.slow[sub] = subscription

    def discard(self, sub: Subscriber) -> None:
        self.slow.pop(sub, None)
        for d in self.fast:
            d.pop(sub, None)

    def __iter__(self) -> Iterator[Subscriber]:
        yield from self.slow
        for d in self.fast:
            yield from d  # type: ignore[misc]


class Hub:
    """Channel -> subscribers, and fan-out of published items to them.

    `overflow_policy` says what happens to an item that would overflow a subscriber's
    `max_output_buffer` (module header); `dropped_messages` and `dropped_bytes` count what
    ``drop-oldest`` dropped.

    Raises `LocalProtocolError` only when the caller misuses it (an unknown overflow policy,
    subscribing a subscriber to an empty channel name). Never raises for what a publisher sent:
    a filter error becomes a `FilterFailed` event for that one subscriber.
    """

    def __init__(
        self,
        *,
        max_channels_per_subscriber: int = DEFAULT_MAX_CHANNELS_PER_SUBSCRIBER,
        max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER,
        overflow_policy: OverflowPolicy = "close",
    ) -> None:
        if overflow_policy not in OVERFLOW_POLICIES:
            raise LocalProtocolError(
                f"unknown overflow policy {overflow_policy!r}, expected one of "
                + ", ".join(OVERFLOW_POLICIES)
            )
        self.max_channels_per_subscriber = max_channels_per_subscriber
        self.max_output_buffer = max_output_buffer
        self.overflow_policy: OverflowPolicy = overflow_policy
        self.dropped_messages = 0
        self.dropped_bytes = 0
        self._channels: dict[str, _Members] = {}
        self._changes: list[ChannelChange] = []
        self.channel_listener: Callable[[ChannelChange], None] | None = None
        """Told of each channel change as it happens (the ZeroMQ SUB socket's interest), besides
        the changes kept for `take_channel_changes`."""

    # --- membership ---

    def subscribe(
        self,
        sub: Subscriber,
        channel: str,
        *,
        filters: Sequence[str] = (),
        prev_id: str | None = None,
    ) -> bool:
        """Subscribe `sub` to `channel`. Returns False (and does nothing) when the subscriber is
        already at the channel limit. Subscribing again replaces filters and prev-id."""
        if not channel:
            raise LocalProtocolError("channel name must not be empty")
        if channel not in sub.channels and len(sub.channels) >= self.max_channels_per_subscriber:
            return False
        old = sub.channels.get(channel)
        subscription = Subscription(tuple(filters), prev_id, old is not None and old.paused)
        sub.channels[channel] = subscription
        members = self._channels.get(channel)
        if members is None:
            members = self._channels[channel] = _Members()
            self._change(ChannelChange(channel, subscribed=True))
        members.add(sub, subscription)
        return True

    def unsubscribe(self, sub: Subscriber, channel: str) -> bool:
        """Remove `sub` from `channel`; False when it was not subscribed."""
        if sub.channels.pop(channel, None) is None:
            return False
        members = self._channels[channel]
        members.discard(sub)
        if not len(members):
            del self._channels[channel]
            self._change(ChannelChange(channel, subscribed=False))
        return True

    def remove(self, sub: Subscriber) -> None:
        """Remove `sub` from every channel (the connection ended)."""
        sub.queue = None
        for channel in list(sub.channels):
            self.unsubscribe(sub, channel)

    def hold_items(self, sub: Subscriber) -> None:
        """Keep the items published to `sub`'s channels, up to `MAX_QUEUED_ITEMS` (later ones
        are dropped), instead of delivering them: a stream's next-link request is in flight,
        and what it answers decides which of them follow (Pushpin queues them the same way).
        `release_items` delivers them. Holding again changes nothing."""
        if sub.queue is None:
            sub.queue = []
            self._regroup(sub)

    def release_items(self, sub: Subscriber) -> PublishResult:
        """Deliver what `hold_items` kept, against the subscriptions as they are now (the
        next-link answer's prev-ids): items of channels left are dropped, and so are the first
        items that do not follow their channel's prev-id (the answer covered them); from the
        first that follows on, each is delivered as `publish` would, and a gap stops the
        release (the session recovers again; what remains would not follow either)."""
        queue, sub.queue = sub.queue or [], None
        self._regroup(sub)
        result = PublishResult()
        following = False
        for item in queue:
            subscription = sub.channels.get(item.channel)
            if subscription is None:
                continue
            expected = subscription.prev_id
            if not following and expected is not None and item.prev_id not in (None, expected):
                continue
            following = True
            events = len(sub.events)
            self._deliver_slow(sub, subscription, item, result, replay=True)
            if len(sub.events) > events and isinstance(sub.events[-1], GapDetected):
                break
        return result

    def set_framing(self, sub: Subscriber, framing: Framing) -> None:
        """Change how `sub`'s deliveries are framed (a WebSocket that negotiated compression
        once its handshake is answered), filing it again under its channels."""
        if (framing in _WEBSOCKET_FRAMINGS) != (sub.framing in _WEBSOCKET_FRAMINGS):
            raise LocalProtocolError(f"framing {framing.name} does not fit {sub.transport}")
        sub.framing = framing
        self._regroup(sub)

    def _regroup(self, sub: Subscriber) -> None:
        """File `sub` again under fast or slow members after its queue mode changed."""
        for channel, subscription in sub.channels.items():
            self._channels[channel].add(sub, subscription)

    def set_prev_id(self, sub: Subscriber, channel: str, prev_id: str | None) -> None:
        """Update the prev-id a subscription expects (after a recovery response, say)."""
        subscription = sub.channels.get(channel)
        if subscription is None:
            raise LocalProtocolError(f"not subscribed to channel {channel!r}")
        self.subscribe(sub, channel, filters=subscription.filters, prev_id=prev_id)

    def pause(self, sub: Subscriber, channel: str, paused: bool = True) -> None:
        """Stop (or, with `paused` False, restart) deliveries of `channel` to `sub`. While paused
        the subscriber stays a member (no channel change) but `publish` skips it: an engine
        resuming it from history holds the live items meanwhile and hands them over with
        `deliver_to`, so nothing is duplicated or reordered."""
        subscription = sub.channels.get(channel)
        if subscription is None:
            raise LocalProtocolError(f"not subscribed to channel {channel!r}")
        subscription.paused = paused
        self._channels[channel].add(sub, subscription)

    def deliver_to(self, sub: Subscriber, channel: str, item: Item) -> PublishResult:
        """Deliver one item to one subscriber of `channel` (history replayed on resume), with
        the same filters, prev-id checks and framing as `publish`. Nothing happens when `sub`
        is not subscribed to `channel` (any more)."""
        result = PublishResult()
        subscription = sub.channels.get(channel)
        if subscription is not None:
            self._deliver_slow(sub, subscription, item, result, replay=True)
        return result

    def _change(self, change: ChannelChange) -> None:
        self._changes.append(change)
        if self.channel_listener is not None:
            self.channel_listener(change)

    def take_channel_changes(self) -> list[ChannelChange]:
        """Channels that gained a first or lost a last subscriber since the last call, in order.
        The sequencer forgets a channel's state, and a cluster engine (un)subscribes, on these."""
        changes, self._changes = self._changes, []
        return changes

    def has_subscribers(self, channel: str) -> bool:
        return channel in self._channels

    def subscriber_count(self, channel: str) -> int:
        members = self._channels.get(channel)
        return len(members) if members is not None else 0

    def subscribers(self, channel: str) -> list[Subscriber]:
        members = self._channels.get(channel)
        return list(members) if members is not None else []

    def channels(self) -> Iterable[str]:
        return self._channels.keys()

    # --- fan-out ---

    def publish(self, item: Item) -> PublishResult:
        """Deliver one (already sequenced) item to the channel's subscribers."""
        result = PublishResult()
        members = self._channels.get(item.channel)
        if members is None:
            return result
        self._publish_fast(item, members, result)
        for sub, subscription in list(members.slow.items()):
            self._deliver_slow(sub, subscription, item, result)
        return result

    def _publish_fast(self, item: Item, members: _Members, result: PublishResult) -> None:
        raw, chunked, ws, _, deflated = members.fast
        overflowed: list[Hashable] = []
        limit = self.max_output_buffer
        stream = item.http_stream
        if stream is not None and (raw or chunked):
            if stream.action == "send":
                if not stream.content_filters:
                    content = stream.content
                    if raw:
                        result.delivered += fanout(raw, content, result.woken, overflowed, limit)
                        if overflowed:
                            self._overflowed(overflowed, item.channel, content, content, result)
                    if chunked:
                        payload = encode_chunk(content)
                        result.delivered += fanout(
                            chunked, payload, result.woken, overflowed, limit
                        )
                        if overflowed:
                            self._overflowed(overflowed, item.channel, content, payload, result)
            else:
                for sub in [*raw, *chunked]:
                    self._action(sub, item.channel, stream, result)  # type: ignore[arg-type]
        message = item.ws_message
        if message is not None and (ws or deflated):
            if message.action == "send":
                if not message.content_filters:
                    opcode = WS_OPCODES[message.type]
                    for targets, encode in ((ws, encode_ws_frame), (deflated, deflate_frame)):
                        if not targets:
                            continue
                        frame = encode(opcode, message.content)  # once for every subscriber
                        result.delivered += fanout(targets, frame, result.woken, overflowed, limit)
                        if overflowed:
                            self._overflowed(
                                overflowed, item.channel, message.content, frame, result
                            )
            else:
                for sub in [*ws, *deflated]:
                    self._action(sub, item.channel, message, result)  # type: ignore[arg-type]

    def _overflowed(
        self,
        overflowed: list[Hashable],
        channel: str,
        content: bytes,
        payload: bytes,
        result: PublishResult,
    ) -> None:
        """The fast path's subscribers that `fanout` skipped as full: apply the policy to each,
        then empty the list for the next framing."""
        for sub in overflowed:
            self._overflow(sub, channel, content, payload, result)  # type: ignore[arg-type]
        overflowed.clear()

    def _overflow(
        self, sub: Subscriber, channel: str, content: bytes, payload: bytes, result: PublishResult
    ) -> None:
        """`payload` (framed `content`) does not fit in `sub.outbuf`: deliver it after dropping
        the oldest messages (drop-oldest), or skip it with a `BufferOverflow` (close, and the
        fallback when dropping cannot make room)."""
        if self.overflow_policy == "drop-oldest" and self._drop_oldest(
            sub, channel, len(payload), result
        ):
            sub.outbuf += payload  # MessagesDropped woke the subscriber if it was idle
            result.delivered += 1
        else:
            self._emit(sub, BufferOverflow(channel, len(content)), result)

    def _drop_oldest(self, sub: Subscriber, channel: str, size: int, result: PublishResult) -> bool:
        """Drop whole messages from the front of `sub.outbuf` until `size` more bytes fit.
        False, with nothing dropped, when that cannot be done: the item alone is over the limit,
        the framing has no message boundaries, or what waits is not whole droppable messages."""
        limit = self.max_output_buffer
        message_end = _MESSAGE_END.get(sub.framing)
        if size > limit or message_end is None:
            return False
        buf = sub.outbuf
        excess = len(buf) + size - limit
        cut = count = 0
        while cut < excess:
            end = message_end(buf, cut)
            if end is None:
                return False
            cut, count = end, count + 1
        # deleting from a bytearray's front moves its start pointer, not the bytes after it
        del buf[:cut]
        self.dropped_messages += count
        self.dropped_bytes += cut
        last = sub.events[-1] if sub.events else None
        if isinstance(last, MessagesDropped) and last.channel == channel:
            sub.events[-1] = MessagesDropped(channel, last.count + count, last.bytes + cut)
        else:
            self._emit(sub, MessagesDropped(channel, count, cut), result)
        return True

    def _emit(self, sub: Subscriber, event: HubEvent, result: PublishResult) -> None:
        # woken on its first event even when output is pending: a stalled connection (paused
        # writes, full buffer) must still see its overflow event
        if not sub.events:
            result.woken.append(sub)
        sub.events.append(event)

    def _action(
        self,
        sub: Subscriber,
        channel: str,
        fmt: HttpResponseFormat | HttpStreamFormat | WsMessageFormat,
        result: PublishResult,
    ) -> None:
        """Non-send actions: hint, refresh, close (each ignored where Pushpin ignores it)."""
        action = fmt.action
        if action == "hint" and sub.transport is not Transport.WEBSOCKET:
            self._emit(sub, HintReceived(channel), result)
        elif action == "refresh" and sub.transport is Transport.WEBSOCKET:
            self._emit(sub, RefreshRequested(channel), result)
        elif action == "close" and sub.transport is not Transport.RESPONSE:
            code = reason = None
            if isinstance(fmt, WsMessageFormat):
                code, reason = fmt.code, fmt.reason
            self.remove(sub)
            self._emit(sub, CloseRequested(channel, code, reason), result)

    def _deliver_slow(
        self,
        sub: Subscriber,
        subscription: Subscription,
        item: Item,
        result: PublishResult,
        *,
        replay: bool = False,
    ) -> None:
        if subscription.paused and not replay:
            return
        if sub.queue is not None and not replay:
            if len(sub.queue) < MAX_QUEUED_ITEMS:
                sub.queue.append(item)
            return
        fmt: HttpResponseFormat | HttpStreamFormat | WsMessageFormat | None
        if sub.transport is Transport.RESPONSE:
            fmt = item.http_response
        elif sub.transport is Transport.STREAM:
            fmt = item.http_stream
        else:
            fmt = item.ws_message
        if fmt is None:
            return
        expected = subscription.prev_id
        if expected is not None:
            if item.prev_id is not None and item.prev_id != expected:
                self._emit(sub, GapDetected(item.channel, expected, item.prev_id), result)
                return
            # Pushpin 1.36 (httpsession.cpp) moves the channel's prev-id to the item's id
            # before any filter runs: build-id then renders the delivered item's own ID, and an
            # item a filter drops (skip-users) still advances the sequence, so the next item is
            # not mistaken for a gap (spec section 2.6, Appendix A item 11).
            if item.id is not None:
                subscription.prev_id = item.id
        filtering = needs_filtering(subscription.filters)
        if fmt.action != "send":
            # delivery filters (require-sub, skip-users, skip-self) decide for every action: a
            # close meant for the connections subscribed to one channel ends only those
            if filtering and drops(subscription.filters, sub.filter_context(item.meta)):
                return
            self._action(sub, item.channel, fmt, result)
            return
        if not matches_content_filters(fmt.content_filters, subscription.filters):
            return
        content: bytes | None
        content = fmt.body if isinstance(fmt, HttpResponseFormat) else fmt.content
        if filtering:
            # a body-patch has no content yet: the chain still decides whether to deliver
            try:
                filtered = apply_filters(
                    subscription.filters,
                    sub.filter_context(item.meta),
                    content if content is not None else b"",
                )
            except FilterError as exc:
                self._emit(sub, FilterFailed(item.channel, str(exc)), result)
                return
            if filtered is None:
                return
            if content is not None:
                content = filtered
        if isinstance(fmt, HttpResponseFormat):
            self.remove(sub)
            self._emit(sub, ResponseReady(item.channel, item.id, fmt, content), result)
            result.delivered += 1
            return
        assert content is not None
        if sub.framing is Framing.WEBSOCKET:
            assert isinstance(fmt, WsMessageFormat)
            payload = encode_ws_frame(WS_OPCODES[fmt.type], content)
        elif sub.framing is Framing.WEBSOCKET_DEFLATE:
            assert isinstance(fmt, WsMessageFormat)
            payload = deflate_frame(WS_OPCODES[fmt.type], content)
        elif sub.framing is Framing.CHUNKED:
            payload = encode_chunk(content)
        else:
            payload = content
        limit = self.max_output_buffer
        if limit and len(sub.outbuf) + len(payload) > limit:
            self._overflow(sub, item.channel, content, payload, result)
            return
        if not sub.pending:
            result.woken.append(sub)
        sub.outbuf += payload
        result.delivered += 1
