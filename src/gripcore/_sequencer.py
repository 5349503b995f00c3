"""Per-channel deduplication and prev-id ordering of published items (spec §6).

Strategy. A publisher may send the same item twice (retries, several publish inputs) and may
send a channel's items out of order (several publisher processes). Before an item reaches the
hub, the `Sequencer`:

1. **Dedups**: an item with an `id` whose `(channel, id)` was seen within `id_cache_ttl`
   seconds is dropped silently and counted. This applies to every item, with or without
   subscribers.
2. **Orders**: when the item is sequenced (not `no_seq`, and the channel has subscribers), the
   channel's last delivered id is known, and the item's `prev_id` names another id, the item is
   buffered under its `prev_id`. Otherwise it is delivered, becomes the channel's last id
   (an item without an id makes the last id unknown), and any buffered item whose `prev_id` is
   the new last id follows it, repeatedly (chain flush).
3. **Gives up waiting**: a buffered item is released anyway `message_wait` seconds after it
   arrived, in arrival order, and becomes the last id (then chain-flushes). The docs' promise
   is "sequence IDs improve ordering but do not guarantee gap-free delivery".

Everything is driven by the caller: time comes in as `now` (seconds, monotonic), and the owner
asks `next_deadline()` when to call `handle_timer(now)`. Time never runs backwards inside a
`Sequencer`: a `now` earlier than one already seen is treated as the latest one seen, which keeps
every internal queue sorted by expiry in insertion order.

Costs. Every operation is O(1) amortised (a chain flush is O(length of the chain)). The dedup
cache and the pending queue are `OrderedDict`s in arrival order, so expiry pops from the left
(`dict` would degrade: repeated deletion at the front makes finding the first live entry slow);
the last-id table is an `OrderedDict` used as an LRU by last update, as Pushpin's is.

Decisions, where Pushpin's behaviour was a choice (README material):

* `id_cache_ttl` defaults to 60 s (Pushpin's shipped config); Pushpin's code default is 0, which
  disables dedup — pass `id_cache_ttl=0` for that (Appendix A item 6).
* Items published with `no_seq`, or to a channel without subscribers, are delivered at once and
  do *not* update the channel's last id (Pushpin quirk kept, Appendix A item 7).
* Pushpin scans the buffer every second, so a held item goes out 5 to 6 s after it arrived; here it
  goes out exactly at `arrival + message_wait`, the deadline `next_deadline()` announced.
* Dedup entries expire lazily, on the next `publish` or `handle_timer`; `next_deadline()` does not
  schedule wake-ups for them (the cache is capped by count, so an idle broker's memory stays
  bounded without timer churn).
* An item dropped from the buffer (same prev-id as a buffered item, or buffer full) has already
  been recorded in the dedup cache, so a retry with the same id within the TTL is dropped too
  (Pushpin order: dedup first, then sequencing).
* Pushpin bounds each channel's buffer but not the total; `max_pending` adds a global cap so a
  flood spread over many channels cannot grow memory without bound.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ._errors import LocalProtocolError

__all__ = [
    "DEFAULT_ID_CACHE_TTL",
    "DEFAULT_MAX_CHANNELS",
    "DEFAULT_MAX_IDS",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_PER_CHANNEL",
    "DEFAULT_MESSAGE_WAIT",
    "SequencedItem",
    "Sequencer",
    "SequencerStats",
]

# Pushpin's shipped pushpin.conf sets id_cache_ttl=60 (seconds); its code default (0) disables
# dedup. A minute covers publisher retries with backoff.
DEFAULT_ID_CACHE_TTL = 60.0

# Pushpin's message_wait default (5000 ms): long enough for a slower publisher path to catch up,
# short enough that a real gap stalls the channel only briefly.
DEFAULT_MESSAGE_WAIT = 5.0

# Pushpin's CHANNEL_PENDING_MAX: one channel's out-of-order burst larger than this is a gap, not
# a reordering, and waiting on it only delays everything behind it.
DEFAULT_MAX_PENDING_PER_CHANNEL = 100

# Dedup entries remembered, oldest evicted first. 250,000 covers the whole 60 s TTL at about
# 4,000 published items with ids per second (well above what one Python process delivers), at
# roughly 200 bytes per entry: ~50 MB at worst. Past it dedup degrades to a shorter window.
DEFAULT_MAX_IDS = 250_000

# Channels whose last id is remembered (LRU by last update). Pushpin keeps 1,000,000; here an
# entry exists only for a channel with subscribers that received a sequenced item (it is
# forgotten when the last subscriber leaves), and 100,000 subscribed channels is beyond one
# process. Eviction only makes a channel behave as newly subscribed: its next item is delivered
# at once, whatever its prev-id.
DEFAULT_MAX_CHANNELS = 100_000

# Buffered items across all channels. Not in Pushpin (it bounds channels only); 100 full
# channel buffers, ~10,000 items, is a deep reordering already, so beyond it drop rather than
# grow.
DEFAULT_MAX_PENDING = 10_000


class SequencedItem(Protocol):
    """What the sequencer reads from an item. The publish `Item` satisfies it."""

    @property
    def channel(self) -> str: ...

    @property
    def id(self) -> str | None: ...

    @property
    def prev_id(self) -> str | None: ...

    @property
    def no_seq(self) -> bool: ...


ItemT = TypeVar("ItemT", bound=SequencedItem)


@dataclass(frozen=True, slots=True)
class SequencerStats:
    """A snapshot of a sequencer's counters (totals since creation) and current sizes."""

    delivered: int = 0
    """Items handed out by `publish` or `handle_timer`."""
    duplicates_dropped: int = 0
    """Items dropped because their (channel, id) was seen within the TTL."""
    released_on_timeout: int = 0
    """Buffered items released after `message_wait` without their predecessor."""
    prev_id_conflict_dropped: int = 0
    """Items dropped because another buffered item already waited on the same prev-id."""
    overflow_dropped: int = 0
    """Items dropped because the channel's buffer (or the global one) was full."""
    unsubscribed_dropped: int = 0
    """Buffered items discarded because their channel lost its last subscriber."""
    pending: int = 0
    """Items buffered now."""
    cached_ids: int = 0
    """Dedup entries held now (expired ones are purged lazily)."""
    last_ids: int = 0
    """Channels whose last id is known now."""


@dataclass(slots=True, eq=False)
class _Pending(Generic[ItemT]):
    # eq=False: hashed by identity, so it can key the arrival-order queue.
    item: ItemT
    prev_id: str
    deadline: float


def _check_limit(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LocalProtocolError(f"Sequencer {name} must be an integer >= 1, got {value!r}")
    return value


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LocalProtocolError(f"Sequencer {name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise LocalProtocolError(
            f"Sequencer {name} must be a finite number of seconds >= 0, got {value!r}"
        )
    return float(value)


class Sequencer(Generic[ItemT]):
    """Dedup and prev-id ordering for published items, per channel (spec §6).

    `id_cache_ttl` is how long (seconds) a (channel, id) pair is remembered for dedup; 0
    disables dedup. `message_wait` is how long (seconds) an out-of-order item waits for its
    predecessor. The `max_*` limits bound memory; what they drop is counted in `stats`.

    Raises `LocalProtocolError` for a negative, infinite or NaN duration, a limit below 1, or a
    `now` that is not a finite number. Published items themselves are never rejected: every
    outcome (deliver, buffer, drop) is normal operation.
    """

    __slots__ = (
        "_by_arrival",
        "_delivered",
        "_duplicates_dropped",
        "_id_cache_ttl",
        "_last_ids",
        "_max_channels",
        "_max_ids",
        "_max_pending",
        "_max_pending_per_channel",
        "_message_wait",
        "_now",
        "_overflow_dropped",
        "_pending",
        "_prev_id_conflict_dropped",
        "_released_on_timeout",
        "_seen",
        "_unsubscribed_dropped",
    )

    def __init__(
        self,
        *,
        id_cache_ttl: float = DEFAULT_ID_CACHE_TTL,
        message_wait: float = DEFAULT_MESSAGE_WAIT,
        max_pending_per_channel: int = DEFAULT_MAX_PENDING_PER_CHANNEL,
        max_ids: int = DEFAULT_MAX_IDS,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self._id_cache_ttl = _check_seconds("id_cache_ttl", id_cache_ttl)
        self._message_wait = _check_seconds("message_wait", message_wait)
        self._max_pending_per_channel = _check_limit(
            "max_pending_per_channel", max_pending_per_channel
        )
        self._max_ids = _check_limit("max_ids", max_ids)
        self._max_channels = _check_limit("max_channels", max_channels)
        self._max_pending = _check_limit("max_pending", max_pending)
        self._now = -math.inf
        # (channel, id) -> expiry time, in insertion order, which is expiry order.
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        # channel -> last delivered id, least recently updated first.
        self._last_ids: OrderedDict[str, str] = OrderedDict()
        # channel -> {prev_id: buffered item}
        self._pending: dict[str, dict[str, _Pending[ItemT]]] = {}
        # every buffered item, in arrival order, which is deadline order.
        self._by_arrival: OrderedDict[_Pending[ItemT], None] = OrderedDict()
        self._delivered = 0
        self._duplicates_dropped = 0
        self._released_on_timeout = 0
        self._prev_id_conflict_dropped = 0
        self._overflow_dropped = 0
        self._unsubscribed_dropped = 0

    # -- public API ---------------------------------------------------------------------------

    def publish(self, item: ItemT, now: float, *, has_subscribers: bool = True) -> list[ItemT]:
        """Take one published item; return the items now ready to deliver, in order.

        The list is empty when the item was a duplicate or was buffered, holds just `item` in
        the common case, and holds several items when `item` completes a buffered chain.
        `has_subscribers` says whether the channel has at least one subscriber now: without
        one, the item is not sequenced (and does not become the channel's last id).
        """
        now = self._advance(now)
        self._purge_ids(now)
        item_id = item.id
        if item_id is not None and self._id_cache_ttl > 0:
            key = (item.channel, item_id)
            if key in self._seen:
                self._duplicates_dropped += 1
                return []
            if len(self._seen) >= self._max_ids:
                self._seen.popitem(last=False)
            self._seen[key] = now + self._id_cache_ttl
        if item.no_seq or not has_subscribers:
            self._delivered += 1
            return [item]
        prev_id = item.prev_id
        last = self._last_ids.get(item.channel)
        if last is not None and prev_id is not None and prev_id != last:
            self._buffer(item, prev_id, now)
            return []
        ready: list[ItemT] = []
        self._deliver(item, ready)
        return ready

    def next_deadline(self) -> float | None:
        """When `handle_timer` must next run: the earliest buffered item's release time, or
        None when nothing is buffered."""
        first = next(iter(self._by_arrival), None)
        return None if first is None else first.deadline

    def handle_timer(self, now: float) -> list[ItemT]:
        """Release buffered items whose wait is over (arrival + `message_wait` <= `now`), in
        arrival order, each followed by whatever it chain-flushes; purge expired dedup
        entries. Returns the items to deliver, in order (often empty)."""
        now = self._advance(now)
        self._purge_ids(now)
        ready: list[ItemT] = []
        by_arrival = self._by_arrival
        while by_arrival:
            pending = next(iter(by_arrival))
            if pending.deadline > now:
                break
            del by_arrival[pending]
            self._unlink(pending)
            self._released_on_timeout += 1
            self._deliver(pending.item, ready)
        return ready

    def channel_unsubscribed(self, channel: str) -> None:
        """The channel lost its last subscriber: discard its buffered items and forget its last
        id, so that "the first message received for a newly subscribed channel is always
        delivered immediately, regardless of prev-id value" (Pushpin docs)."""
        channel_pending = self._pending.pop(channel, None)
        if channel_pending is not None:
            for pending in channel_pending.values():
                del self._by_arrival[pending]
            self._unsubscribed_dropped += len(channel_pending)
        self._last_ids.pop(channel, None)

    def last_id(self, channel: str) -> str | None:
        """The id of the last item sequenced and delivered on `channel`, or None when unknown.
        A hold whose prev-id differs from it is stale (spec §2.1, §3.4)."""
        return self._last_ids.get(channel)

    def forget_last_id(self, channel: str) -> None:
        """Make `channel`'s last id unknown (a gap was detected downstream)."""
        self._last_ids.pop(channel, None)

    def pending_count(self, channel: str | None = None) -> int:
        """Items buffered on `channel`, or on all channels when `channel` is None."""
        if channel is None:
            return len(self._by_arrival)
        return len(self._pending.get(channel, ()))

    @property
    def stats(self) -> SequencerStats:
        """A snapshot of the counters and current sizes."""
        return SequencerStats(
            delivered=self._delivered,
            duplicates_dropped=self._duplicates_dropped,
            released_on_timeout=self._released_on_timeout,
            prev_id_conflict_dropped=self._prev_id_conflict_dropped,
            overflow_dropped=self._overflow_dropped,
            unsubscribed_dropped=self._unsubscribed_dropped,
            pending=len(self._by_arrival),
            cached_ids=len(self._seen),
            last_ids=len(self._last_ids),
        )

    # -- internals ----------------------------------------------------------------------------

    def _advance(self, now: float) -> float:
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise LocalProtocolError(f"now must be a finite number of seconds, got {now!r}")
        if now < self._now:
            return self._now
        self._now = now
        return now

    def _purge_ids(self, now: float) -> None:
        seen = self._seen
        while seen:
            key = next(iter(seen))
            if seen[key] > now:
                break
            del seen[key]

    def _buffer(self, item: ItemT, prev_id: str, now: float) -> None:
        channel_pending = self._pending.get(item.channel)
        if channel_pending is None:
            channel_pending = self._pending[item.channel] = {}
        if prev_id in channel_pending:
            self._prev_id_conflict_dropped += 1
        elif (
            len(channel_pending) >= self._max_pending_per_channel
            or len(self._by_arrival) >= self._max_pending
        ):
            self._overflow_dropped += 1
        else:
            pending = _Pending(item, prev_id, now + self._message_wait)
            channel_pending[prev_id] = pending
            self._by_arrival[pending] = None
        if not channel_pending:
            del self._pending[item.channel]

    def _unlink(self, pending: _Pending[ItemT]) -> None:
        channel = pending.item.channel
        channel_pending = self._pending[channel]
        del channel_pending[pending.prev_id]
        if not channel_pending:
            del self._pending[channel]

    def _set_last(self, channel: str, item_id: str | None) -> None:
        last_ids = self._last_ids
        if item_id is None:
            last_ids.pop(channel, None)
        elif channel in last_ids:
            last_ids[channel] = item_id
            last_ids.move_to_end(channel)
        else:
            if len(last_ids) >= self._max_channels:
                last_ids.popitem(last=False)
            last_ids[channel] = item_id

    def _deliver(self, item: ItemT, ready: list[ItemT]) -> None:
        """Deliver `item` as the channel's next in sequence, then chain-flush behind it."""
        channel = item.channel
        while True:
            item_id = item.id
            self._set_last(channel, item_id)
            ready.append(item)
            self._delivered += 1
            if item_id is None:
                return
            channel_pending = self._pending.get(channel)
            if channel_pending is None:
                return
            pending = channel_pending.pop(item_id, None)
            if pending is None:
                return
            if not channel_pending:
                del self._pending[channel]
            del self._by_arrival[pending]
            item = pending.item
