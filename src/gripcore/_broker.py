"""The in-process broker (memory engine): dedup and ordering, then fan-out.

One publish goes through `Sequencer` (drop duplicates, hold items whose prev-id is ahead of the
channel, release them in order or when the wait limit passes) and then `Hub.publish` for each
item that is ready. Subscription changes flow the other way: when a channel loses its last
subscriber the sequencer forgets its state, so "the first message to a newly subscribed channel
is always delivered" (pushpin-behaviour.md section 6, step 5).

Time comes in as `now`; `next_deadline` says when the sequencer's wait limit next expires.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ._hub import ChannelChange, Hub, PublishResult
from ._items import Item
from ._sequencer import Sequencer

__all__ = ["Broker", "BrokerStats"]


@dataclass(slots=True)
class BrokerStats:
    """Counters since start: items accepted from publishers, items fanned out, deliveries."""

    received: int = 0
    fanned_out: int = 0
    delivered: int = 0


@dataclass(slots=True)
class Broker:
    hub: Hub = field(default_factory=Hub)
    sequencer: Sequencer[Item] = field(default_factory=Sequencer)
    stats: BrokerStats = field(default_factory=BrokerStats)

    def publish(self, items: Iterable[Item], now: float) -> PublishResult:
        """Publish items (already validated) in order; returns what the fan-out woke."""
        self.sync()
        total = PublishResult()
        for item in items:
            self.stats.received += 1
            ready = self.sequencer.publish(
                item, now, has_subscribers=self.hub.has_subscribers(item.channel)
            )
            self._fan_out(ready, total)
        return total

    def handle_timer(self, now: float) -> PublishResult:
        """Release items whose wait for a predecessor is over."""
        self.sync()
        total = PublishResult()
        self._fan_out(self.sequencer.handle_timer(now), total)
        return total

    def next_deadline(self) -> float | None:
        return self.sequencer.next_deadline()

    def sync(self) -> list[ChannelChange]:
        """Apply subscription changes to the sequencer; returns them for other listeners."""
        changes = self.hub.take_channel_changes()
        for change in changes:
            if not change.subscribed:
                self.sequencer.channel_unsubscribed(change.channel)
        return changes

    def _fan_out(self, ready: list[Item], total: PublishResult) -> None:
        for item in ready:
            result = self.hub.publish(item)
            self.stats.fanned_out += 1
            self.stats.delivered += result.delivered
            total.delivered += result.delivered
            total.woken.extend(result.woken)
