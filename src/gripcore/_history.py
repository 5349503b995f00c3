"""Per-channel bounded history, and the rule that picks what a resuming client missed.

Strategy. A client that reconnects says the id of the last item it saw (SSE `Last-Event-ID`, or
the WebSocket `last-event-id` query parameter, docs/cluster.md). When that id is among the last
N items of a channel, the items published after it are exactly what the client missed, and they
are delivered before live ones. When it is not (older than the history, or never published), the
history has nothing to say: nothing special happens and the origin's own recovery (Grip-Last,
next links) applies, exactly as without history.

Two stores keep the last N items per channel: `History` here (a ring buffer per channel, the
memory engine's), and a Redis Stream per channel (the Redis engine's, see `_engine.py`). Both
answer through `missed_after`, so the rule is written once.

Items without an id are kept too: they cannot be named as a last-seen id, but a client that
resumes from an earlier item missed them all the same.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TypeVar
from urllib.parse import parse_qsl

from ._errors import LocalProtocolError
from ._items import Item

__all__ = [
    "DEFAULT_MAX_HISTORY_CHANNELS",
    "MAX_HISTORY",
    "MAX_LAST_EVENT_ID",
    "History",
    "missed_after",
    "resume_id",
]

# Longest last-seen id taken from a request; item ids are short tokens, and anything longer is
# not an id this broker handed out.
MAX_LAST_EVENT_ID = 1024

# Channels whose history the memory engine keeps, least recently published evicted first. With
# the largest history (MAX_HISTORY) and small items this stays within a few hundred MB; an
# evicted channel only loses the ability to resume, never deliveries.
DEFAULT_MAX_HISTORY_CHANNELS = 10_000

# Largest per-channel history accepted. A resume replays at most this many items to one client;
# a client further behind than that is better served by the origin's recovery path.
MAX_HISTORY = 10_000

T = TypeVar("T")


def missed_after(entries: Sequence[tuple[str | None, T]], last_id: str) -> list[T] | None:
    """`entries` are (item id, value) oldest first. Returns the values after the newest entry
    whose id is `last_id` (possibly none), or None when no entry has that id."""
    for index in range(len(entries) - 1, -1, -1):
        if entries[index][0] == last_id:
            return [value for _, value in entries[index + 1 :]]
    return None


def resume_id(target: bytes, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The last-seen id a client request carries: the `Last-Event-ID` header (what EventSource
    sends on reconnect), else the `last-event-id` query parameter (how a WebSocket client, which
    cannot set headers from a browser, says it). None when absent, empty, over
    MAX_LAST_EVENT_ID characters, or not UTF-8."""
    raw: bytes | None = None
    for name, value in headers:
        if name.lower() == b"last-event-id":
            raw = value.strip()
    if raw is None and b"?" in target:
        query = target.split(b"?", 1)[1].decode("latin-1")
        for key, text in parse_qsl(query, encoding="latin-1"):
            if key == "last-event-id":
                raw = text.encode("latin-1")
    if not raw or len(raw) > MAX_LAST_EVENT_ID:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class History:
    """The last `size` items of each channel, in delivery order (the memory engine's store).

    Raises `LocalProtocolError` for a size outside 1..MAX_HISTORY or a channel limit below 1.
    """

    __slots__ = ("_channels", "_max_channels", "_size")

    def __init__(self, size: int, *, max_channels: int = DEFAULT_MAX_HISTORY_CHANNELS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_HISTORY:
            raise LocalProtocolError(f"history size must be 1..{MAX_HISTORY}, got {size!r}")
        if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
            raise LocalProtocolError(f"history max_channels must be >= 1, got {max_channels!r}")
        self._size = size
        self._max_channels = max_channels
        self._channels: OrderedDict[str, deque[Item]] = OrderedDict()

    @property
    def size(self) -> int:
        return self._size

    def record(self, item: Item) -> None:
        """Remember `item` as its channel's newest (the oldest falls out when full)."""
        channels = self._channels
        ring = channels.get(item.channel)
        if ring is None:
            if len(channels) >= self._max_channels:
                channels.popitem(last=False)
            ring = channels[item.channel] = deque(maxlen=self._size)
        else:
            channels.move_to_end(item.channel)
        ring.append(item)

    def items(self, channel: str) -> list[Item]:
        """The channel's remembered items, oldest first."""
        return list(self._channels.get(channel, ()))

    def missed(self, channel: str, last_id: str) -> list[Item] | None:
        """The items after the one with id `last_id`, or None when it is not remembered."""
        ring = self._channels.get(channel)
        if ring is None:
            return None
        return missed_after([(item.id, item) for item in ring], last_id)
