"""The in-process broker: sequencer (dedup, prev-id order, wait limit) in front of the hub."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gripcore._broker import Broker, BrokerStats
from gripcore._hub import ChannelChange, Framing, Hub, Subscriber, Transport
from gripcore._items import HttpStreamFormat, Item
from gripcore._sequencer import Sequencer


def item(channel: str, content: str, id: str | None = None, prev_id: str | None = None) -> Item:
    return Item(
        channel=channel,
        id=id,
        prev_id=prev_id,
        http_stream=HttpStreamFormat(content=content.encode()),
    )


def raw_stream(broker: Broker, *channels: str) -> Subscriber:
    sub = Subscriber(Transport.STREAM, framing=Framing.RAW)
    for channel in channels:
        broker.hub.subscribe(sub, channel)
    return sub


def test_publish_delivers_and_counts() -> None:
    broker = Broker()
    sub = raw_stream(broker, "news")
    result = broker.publish([item("news", "a"), item("news", "b"), item("other", "x")], now=0.0)
    assert result.delivered == 2
    assert result.woken == [sub]
    assert sub.take_output() == b"ab"
    assert broker.stats == BrokerStats(received=3, fanned_out=3, delivered=2)


def test_duplicates_are_dropped_across_publishes() -> None:
    broker = Broker()
    sub = raw_stream(broker, "news")
    assert broker.publish([item("news", "1", id="a")], now=0.0).delivered == 1
    assert broker.publish([item("news", "1 again", id="a")], now=1.0).delivered == 0
    assert (
        broker.publish([item("news", "2", id="b"), item("news", "2 again", id="b")], 2.0).woken
        == []
    )
    assert sub.take_output() == b"12"
    assert broker.stats == BrokerStats(received=4, fanned_out=2, delivered=2)
    assert broker.sequencer.stats.duplicates_dropped == 2


def test_dedup_window_expires() -> None:
    broker = Broker(sequencer=Sequencer(id_cache_ttl=10.0))
    sub = raw_stream(broker, "news")
    broker.publish([item("news", "1", id="a")], now=0.0)
    broker.publish([item("news", "2", id="a")], now=9.0)
    broker.publish([item("news", "3", id="a")], now=10.0)
    assert sub.take_output() == b"13"


def test_prev_id_orders_items_across_publishes() -> None:
    broker = Broker()
    sub = raw_stream(broker, "news")
    broker.publish([item("news", "1", id="1")], now=0.0)
    assert broker.publish([item("news", "3", id="3", prev_id="2")], now=1.0).delivered == 0
    assert broker.next_deadline() == 6.0
    assert sub.take_output() == b"1"
    result = broker.publish([item("news", "2", id="2", prev_id="1")], now=2.0)
    assert result.delivered == 2
    assert sub.take_output() == b"23"
    assert broker.next_deadline() is None
    assert broker.stats == BrokerStats(received=3, fanned_out=3, delivered=3)


def test_timer_releases_an_item_whose_predecessor_never_came() -> None:
    broker = Broker(sequencer=Sequencer(message_wait=5.0))
    sub = raw_stream(broker, "news")
    broker.publish([item("news", "1", id="1")], now=0.0)
    assert sub.take_output() == b"1"
    broker.publish([item("news", "3", id="3", prev_id="2")], now=1.0)
    assert broker.handle_timer(5.9).delivered == 0
    result = broker.handle_timer(6.0)
    assert result.delivered == 1
    assert result.woken == [sub]
    assert sub.take_output() == b"3"
    # the released item is the channel's last id now: its successor flows at once
    assert broker.publish([item("news", "4", id="4", prev_id="3")], now=7.0).delivered == 1
    assert broker.stats == BrokerStats(received=3, fanned_out=3, delivered=3)


def test_unsubscribing_forgets_sequencing_state() -> None:
    broker = Broker()
    sub = raw_stream(broker, "news")
    broker.publish([item("news", "1", id="1")], now=0.0)
    broker.publish([item("news", "3", id="3", prev_id="2")], now=1.0)
    assert broker.sequencer.pending_count("news") == 1
    broker.hub.remove(sub)
    assert broker.sync() == [ChannelChange("news", subscribed=False)]
    assert broker.sequencer.pending_count("news") == 0
    assert broker.sequencer.last_id("news") is None
    assert broker.next_deadline() is None
    # a new subscriber gets the first item whatever its prev-id
    again = raw_stream(broker, "news")
    assert broker.publish([item("news", "9", id="9", prev_id="8")], now=2.0).delivered == 1
    assert again.take_output() == b"9"


def test_resubscribe_before_the_next_publish_still_forgets() -> None:
    broker = Broker()
    sub = raw_stream(broker, "news")
    broker.publish([item("news", "1", id="1")], now=0.0)
    broker.hub.remove(sub)
    sub = raw_stream(broker, "news")  # unsubscribed and subscribed again between two publishes
    assert broker.publish([item("news", "5", id="5", prev_id="4")], now=1.0).delivered == 1
    assert sub.take_output() == b"5"


def test_sync_reports_changes_and_keeps_other_channels() -> None:
    broker = Broker()
    a = raw_stream(broker, "a")
    raw_stream(broker, "b")
    broker.publish([item("b", "1", id="1")], now=0.0)
    broker.hub.remove(a)
    assert broker.sync() == [ChannelChange("a", subscribed=False)]
    assert broker.sync() == []
    assert broker.sequencer.last_id("b") == "1"


def test_handle_timer_syncs_first() -> None:
    broker = Broker()
    sub = raw_stream(broker, "news")
    broker.publish([item("news", "1", id="1"), item("news", "3", id="3", prev_id="2")], now=0.0)
    broker.hub.remove(sub)
    assert broker.handle_timer(100.0).delivered == 0  # the buffered item was dropped by sync
    assert broker.sequencer.stats.unsubscribed_dropped == 1
    assert broker.stats.fanned_out == 1


def test_channel_without_subscribers_is_not_sequenced() -> None:
    broker = Broker()
    result = broker.publish(
        [item("empty", "1", id="1"), item("empty", "3", id="3", prev_id="2")], 0.0
    )
    assert result.delivered == 0
    assert broker.stats == BrokerStats(received=2, fanned_out=2, delivered=0)
    assert broker.sequencer.last_id("empty") is None


def test_broker_with_a_given_hub() -> None:
    hub = Hub(max_output_buffer=0)
    broker = Broker(hub=hub)
    sub = Subscriber(Transport.WEBSOCKET)
    hub.subscribe(sub, "c")
    broker.publish([Item(channel="c", http_stream=HttpStreamFormat(content=b"x"))], now=0.0)
    assert broker.hub is hub
    assert not sub.pending  # WebSocket subscribers take ws-message only


@given(st.permutations(list(range(1, 9))))
def test_any_arrival_order_is_delivered_in_sequence(order: list[int]) -> None:
    broker = Broker()
    sub = raw_stream(broker, "c")
    broker.publish([item("c", "0", id="0")], now=0.0)
    for n in order:
        broker.publish([item("c", str(n), id=str(n), prev_id=str(n - 1))], now=1.0)
    assert sub.take_output() == b"012345678"
    assert broker.stats.delivered == 9


def test_many_items_in_one_publish() -> None:
    broker = Broker()
    sub = raw_stream(broker, "c")
    items = [item("c", "x", id=str(n), prev_id=str(n - 1) if n else None) for n in range(20_000)]
    result = broker.publish(items, now=0.0)
    assert result.delivered == 20_000
    assert result.woken == [sub]
    assert sub.take_output() == b"x" * 20_000
    # a reversed burst (within the per-channel buffer) comes out in order with its head
    tail = [item("c", str(n % 10), id=str(n), prev_id=str(n - 1)) for n in range(20_000, 20_100)]
    assert broker.publish(reversed(tail[1:]), now=1.0).delivered == 0
    assert broker.publish([tail[0]], now=1.0).delivered == 100
    assert sub.take_output() == b"0123456789" * 10
