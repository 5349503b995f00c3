"""The subscription hub: membership, fast and slow fan-out, actions, filters, limits."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripcore import LocalProtocolError
from gripcore._hub import (
    MAX_QUEUED_ITEMS,
    BufferOverflow,
    ChannelChange,
    CloseRequested,
    FilterFailed,
    Framing,
    GapDetected,
    HintReceived,
    Hub,
    RefreshRequested,
    ResponseReady,
    Subscriber,
    Transport,
)
from gripcore._items import HttpResponseFormat, HttpStreamFormat, Item, WsMessageFormat


def stream_item(channel: str, content: bytes, **kw: object) -> Item:
    return Item(channel=channel, http_stream=HttpStreamFormat(content=content), **kw)  # type: ignore[arg-type]


def all_formats(channel: str, text: str, **kw: object) -> Item:
    data = text.encode()
    return Item(
        channel=channel,
        http_response=HttpResponseFormat(body=data),
        http_stream=HttpStreamFormat(content=data),
        ws_message=WsMessageFormat(content=data),
        **kw,  # type: ignore[arg-type]
    )


def test_subscribe_reports_channel_changes() -> None:
    hub = Hub()
    a, b = Subscriber(Transport.STREAM), Subscriber(Transport.WEBSOCKET)
    assert hub.subscribe(a, "news")
    assert hub.subscribe(b, "news")
    assert hub.subscriber_count("news") == 2
    assert hub.take_channel_changes() == [ChannelChange("news", subscribed=True)]
    assert hub.unsubscribe(a, "news")
    assert not hub.unsubscribe(a, "news")
    assert hub.take_channel_changes() == []
    hub.remove(b)
    assert hub.take_channel_changes() == [ChannelChange("news", subscribed=False)]
    assert not hub.has_subscribers("news")
    assert hub.subscriber_count("news") == 0
    assert hub.subscribers("news") == []
    assert list(hub.channels()) == []


def test_empty_channel_name_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Hub().subscribe(Subscriber(Transport.STREAM), "")


def test_channel_limit_per_subscriber() -> None:
    hub = Hub(max_channels_per_subscriber=2)
    sub = Subscriber(Transport.STREAM)
    assert hub.subscribe(sub, "a")
    assert hub.subscribe(sub, "b")
    assert not hub.subscribe(sub, "c")
    assert hub.subscribe(sub, "a", filters=("skip-self",))  # re-subscribing is not a new channel
    assert set(sub.channels) == {"a", "b"}
    assert not hub.has_subscribers("c")


def test_stream_fanout_encodes_once_per_framing() -> None:
    hub = Hub()
    chunked = Subscriber(Transport.STREAM)
    raw = Subscriber(Transport.STREAM, framing=Framing.RAW)
    ws = Subscriber(Transport.WEBSOCKET)
    poll = Subscriber(Transport.RESPONSE)
    for sub in (chunked, raw, ws, poll):
        hub.subscribe(sub, "news")
    result = hub.publish(all_formats("news", "data: hi\n\n"))
    assert result.delivered == 4
    assert chunked.take_output() == b"a\r\ndata: hi\n\n\r\n"
    assert raw.take_output() == b"data: hi\n\n"
    assert ws.take_output() == b"\x81\x0adata: hi\n\n"
    assert poll.outbuf == bytearray()
    [event] = poll.take_events()
    assert isinstance(event, ResponseReady)
    assert event.body == b"data: hi\n\n" and event.format.code == 200
    assert not poll.channels  # a long-poll leaves every channel once answered
    assert set(result.woken) == {chunked, raw, ws, poll}


def _inflate(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one short server frame, inflated when RSV1 says so."""
    assert frame[1] < 126
    payload = frame[2:]
    if frame[0] & 0x40:
        payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    return frame[0], payload


def test_deflate_websockets_get_one_compressed_frame() -> None:
    hub = Hub()
    plain, zipped, filtered = (Subscriber(Transport.WEBSOCKET) for _ in range(3))
    hub.set_framing(zipped, Framing.WEBSOCKET_DEFLATE)
    hub.set_framing(filtered, Framing.WEBSOCKET_DEFLATE)
    hub.subscribe(plain, "c")
    hub.subscribe(zipped, "c")
    hub.subscribe(filtered, "c", filters=("skip-self",))  # the slow path
    text = b"the same words, the same words, the same words"
    result = hub.publish(Item(channel="c", ws_message=WsMessageFormat(content=text)))
    assert result.delivered == 3
    assert plain.take_output() == b"\x81" + bytes([len(text)]) + text
    compressed = zipped.take_output()
    assert compressed == filtered.take_output()  # the same bytes, whatever the path
    assert _inflate(compressed) == (0xC1, text) and len(compressed) < len(text)
    # control frames are never compressed (RFC 7692 section 6.1)
    hub.publish(Item(channel="c", ws_message=WsMessageFormat(type="ping", content=b"p")))
    assert zipped.take_output() == b"\x89\x01p"
    # a close action reaches them too
    hub.publish(Item(channel="c", ws_message=WsMessageFormat(action="close")))
    assert any(zipped.take_events())


def test_set_framing_refiles_and_refuses_a_framing_of_another_transport() -> None:
    hub = Hub()
    sub = Subscriber(Transport.WEBSOCKET)
    hub.subscribe(sub, "c")
    hub.set_framing(sub, Framing.WEBSOCKET_DEFLATE)
    hub.publish(Item(channel="c", ws_message=WsMessageFormat(content=b"x" * 50)))
    assert sub.take_output()[0] == 0xC1
    hub.set_framing(sub, Framing.WEBSOCKET)
    hub.publish(Item(channel="c", ws_message=WsMessageFormat(content=b"y")))
    assert sub.take_output() == b"\x81\x01y"
    with pytest.raises(LocalProtocolError, match="does not fit"):
        hub.set_framing(sub, Framing.CHUNKED)
    with pytest.raises(LocalProtocolError, match="does not fit"):
        Subscriber(Transport.STREAM, framing=Framing.WEBSOCKET_DEFLATE)


def test_woken_only_when_going_from_idle_to_pending() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "c")
    assert hub.publish(stream_item("c", b"1")).woken == [sub]
    assert hub.publish(stream_item("c", b"2")).woken == []
    assert sub.take_output() == b"1\r\n1\r\n1\r\n2\r\n"
    assert hub.publish(stream_item("c", b"3")).woken == [sub]


def test_items_for_other_channels_and_formats_are_not_delivered() -> None:
    hub = Hub()
    ws = Subscriber(Transport.WEBSOCKET)
    hub.subscribe(ws, "a")
    assert hub.publish(stream_item("a", b"stream only")).delivered == 0
    assert hub.publish(stream_item("nobody", b"x")).delivered == 0
    assert not ws.pending


@pytest.mark.parametrize(
    ("ws_type", "opcode"), [("text", 0x81), ("binary", 0x82), ("ping", 0x89), ("pong", 0x8A)]
)
def test_ws_message_types(ws_type: str, opcode: int) -> None:
    hub = Hub()
    sub = Subscriber(Transport.WEBSOCKET)
    hub.subscribe(sub, "c")
    hub.publish(Item(channel="c", ws_message=WsMessageFormat(type=ws_type, content=b"ab")))  # type: ignore[arg-type]
    assert sub.take_output() == bytes([opcode, 2]) + b"ab"


def test_close_action_stream_and_ws() -> None:
    hub = Hub()
    stream, ws, poll = (
        Subscriber(Transport.STREAM),
        Subscriber(Transport.WEBSOCKET),
        Subscriber(Transport.RESPONSE),
    )
    for sub in (stream, ws, poll):
        hub.subscribe(sub, "c")
        hub.subscribe(sub, "other")
    item = Item(
        channel="c",
        http_response=HttpResponseFormat(action="close"),
        http_stream=HttpStreamFormat(action="close"),
        ws_message=WsMessageFormat(action="close", code=4000, reason="bye"),
    )
    result = hub.publish(item)
    assert set(result.woken) == {stream, ws}
    assert stream.take_events() == [CloseRequested("c")]
    assert ws.take_events() == [CloseRequested("c", 4000, "bye")]
    assert not stream.channels and not ws.channels  # closed subscribers leave every channel
    assert poll.events == [] and set(poll.channels) == {"c", "other"}  # ignored for long-polls


def test_hint_and_refresh_actions() -> None:
    hub = Hub()
    stream, ws, poll = (
        Subscriber(Transport.STREAM),
        Subscriber(Transport.WEBSOCKET),
        Subscriber(Transport.RESPONSE),
    )
    for sub in (stream, ws, poll):
        hub.subscribe(sub, "c")
    hub.publish(
        Item(
            channel="c",
            http_response=HttpResponseFormat(action="hint"),
            http_stream=HttpStreamFormat(action="hint"),
            ws_message=WsMessageFormat(action="hint"),
        )
    )
    assert stream.take_events() == [HintReceived("c")]
    assert poll.take_events() == [HintReceived("c")]
    assert ws.events == []  # ws-message hint is accepted and ignored, as Pushpin does
    hub.publish(Item(channel="c", ws_message=WsMessageFormat(action="refresh")))
    assert ws.take_events() == [RefreshRequested("c")]
    assert hub.subscriber_count("c") == 3


def test_prev_id_subscription_tracks_and_detects_gaps() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "c", prev_id="1")
    hub.publish(stream_item("c", b"two", id="2", prev_id="1"))
    assert sub.take_output() == b"3\r\ntwo\r\n"
    assert sub.channels["c"].prev_id == "2"
    hub.publish(stream_item("c", b"four", id="4", prev_id="3"))
    assert sub.outbuf == bytearray()
    assert sub.take_events() == [GapDetected("c", "2", "3")]
    hub.publish(stream_item("c", b"no prev", id="5"))  # items without prev-id are delivered
    assert sub.take_output() == b"7\r\nno prev\r\n"
    hub.set_prev_id(sub, "c", None)
    assert sub.channels["c"].is_fast
    with pytest.raises(LocalProtocolError):
        hub.set_prev_id(sub, "unknown", "x")


def test_skip_self_filter() -> None:
    hub = Hub()
    alice = Subscriber(Transport.WEBSOCKET, meta={"user": "alice"})
    bob = Subscriber(Transport.WEBSOCKET, meta={"user": "bob"})
    hub.subscribe(alice, "chat", filters=("skip-self",))
    hub.subscribe(bob, "chat", filters=("skip-self",))
    result = hub.publish(
        Item(channel="chat", meta={"sender": "alice"}, ws_message=WsMessageFormat(content=b"hi"))
    )
    assert result.delivered == 1
    assert alice.outbuf == bytearray()
    assert bob.take_output() == b"\x81\x02hi"


def test_var_subst_filter_and_content_filters_match() -> None:
    hub = Hub()
    plain = Subscriber(Transport.STREAM)
    subst = Subscriber(Transport.STREAM, meta={"name": "Ann"})
    hub.subscribe(plain, "c")
    hub.subscribe(subst, "c", filters=("var-subst",))
    templated = Item(
        channel="c",
        id="v",
        http_stream=HttpStreamFormat(content=b"hello %(name)s", content_filters=("var-subst",)),
    )
    hub.publish(templated)
    assert plain.outbuf == bytearray()  # content-filters must equal the subscriber's exactly
    assert subst.take_output() == b"9\r\nhello Ann\r\n"
    hub.publish(Item(channel="c", http_stream=HttpStreamFormat(content=b"x", content_filters=())))
    assert plain.take_output() == b"1\r\nx\r\n"
    assert subst.outbuf == bytearray()  # () is not ("var-subst",): variants go to their own
    hub.publish(stream_item("c", b"100%% sure"))  # no content-filters: everyone, filters run
    assert plain.take_output() == b"a\r\n100%% sure\r\n"
    assert subst.take_output() == b"9\r\n100% sure\r\n"


def test_filter_error_is_an_event_for_that_subscriber_only() -> None:
    hub = Hub()
    bad = Subscriber(Transport.STREAM, meta={})
    good = Subscriber(Transport.STREAM)
    hub.subscribe(bad, "c", filters=("var-subst",))
    hub.subscribe(good, "c")
    hub.publish(stream_item("c", b"%(missing)s"))
    [event] = bad.take_events()
    assert isinstance(event, FilterFailed) and "missing" in event.message
    assert good.take_output() == b"b\r\n%(missing)s\r\n"


def test_require_sub_sees_unprefixed_channels() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM, channel_prefix="app-")
    hub.subscribe(sub, "app-room", filters=("require-sub",))
    hub.subscribe(sub, "app-vip")
    item = Item(
        channel="app-room", meta={"require_sub": "vip"}, http_stream=HttpStreamFormat(content=b"v")
    )
    assert hub.publish(item).delivered == 1
    hub.unsubscribe(sub, "app-vip")
    assert hub.publish(item).delivered == 0


def test_response_hold_with_filters_and_patch() -> None:
    hub = Hub()
    sub = Subscriber(Transport.RESPONSE, meta={"user": "u1"})
    hub.subscribe(sub, "c", filters=("skip-self",))
    patch = HttpResponseFormat(body_patch=({"op": "add", "path": "/a", "value": 1},))
    hub.publish(Item(channel="c", meta={"sender": "u1"}, http_response=patch))
    assert sub.events == []  # skipped by its own filter, still held
    hub.publish(Item(channel="c", http_response=patch))
    [event] = sub.take_events()
    assert isinstance(event, ResponseReady) and event.body is None and event.format is patch


def test_output_limit_overflow_fast_and_slow() -> None:
    hub = Hub(max_output_buffer=8)
    fast = Subscriber(Transport.STREAM, framing=Framing.RAW)
    slow = Subscriber(Transport.STREAM, framing=Framing.RAW)
    hub.subscribe(fast, "c")
    hub.subscribe(slow, "c", prev_id="0")
    hub.publish(stream_item("c", b"12345"))
    result = hub.publish(stream_item("c", b"678"))
    assert result.delivered == 2  # exactly at the limit
    result = hub.publish(stream_item("c", b"9"))
    assert result.delivered == 0
    assert fast.take_events() == [BufferOverflow("c", 1)]
    assert slow.take_events() == [BufferOverflow("c", 1)]
    assert fast.take_output() == b"12345678"


def test_framing_must_fit_transport() -> None:
    with pytest.raises(LocalProtocolError):
        Subscriber(Transport.RESPONSE, framing=Framing.CHUNKED)
    with pytest.raises(LocalProtocolError):
        Subscriber(Transport.STREAM, framing=Framing.WEBSOCKET)
    with pytest.raises(LocalProtocolError):
        Subscriber(Transport.WEBSOCKET, framing=Framing.RAW)
    assert Subscriber(Transport.STREAM).framing is Framing.CHUNKED


@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["sub", "unsub", "remove"]), st.integers(0, 4), st.integers(0, 3)
        ),
        max_size=60,
    )
)
def test_membership_invariants(ops: list[tuple[str, int, int]]) -> None:
    """Whatever the sequence of (un)subscriptions, hub and subscribers agree, and channel
    changes describe exactly the transitions between empty and non-empty channels."""
    hub = Hub(max_channels_per_subscriber=3)
    subs = [Subscriber(Transport.STREAM) for _ in range(5)]
    live: set[str] = set()
    for op, s, c in ops:
        sub, channel = subs[s], f"ch{c}"
        if op == "sub":
            hub.subscribe(sub, channel, filters=("skip-self",) if c % 2 else ())
        elif op == "unsub":
            hub.unsubscribe(sub, channel)
        else:
            hub.remove(sub)
        for change in hub.take_channel_changes():
            assert (change.channel in live) != change.subscribed
            (live.add if change.subscribed else live.discard)(change.channel)
        assert set(hub.channels()) == live
        for channel in live:
            members = set(hub.subscribers(channel))
            assert members == {x for x in subs if channel in x.channels}
        assert all(len(x.channels) <= 3 for x in subs)


def test_ws_item_with_content_filters_skips_unfiltered_subscribers() -> None:
    hub = Hub()
    plain = Subscriber(Transport.WEBSOCKET)
    hub.subscribe(plain, "c")
    variant = WsMessageFormat(content=b"%(name)s", content_filters=("var-subst",))
    assert hub.publish(Item(channel="c", ws_message=variant)).delivered == 0
    assert not plain.pending


# --- the order Pushpin 1.36 applies: prev-id first, then filters (spec section 2.6) ---------

ES_META = {"user": "anonymous", "id_format": "room:%(events-room)s"}


def eventstream_subscriber(hub: Hub, room: str = "room", **meta: str) -> Subscriber:
    """A stream subscribed as django-eventstream subscribes its clients (its instruct)."""
    sub = Subscriber(Transport.STREAM, meta={**ES_META, **meta})
    hub.subscribe(sub, f"events-{room}", filters=("build-id", "skip-users"), prev_id="0")
    hub.subscribe(sub, "user-anonymous", filters=("require-sub",))
    return sub


def es_event(n: int, data: str, **kw: object) -> Item:
    """A django-eventstream publish: `%I` for the id line, build-id content filter."""
    content = f"event: message\nid: %I\ndata: {data}\n\n".encode()
    return Item(
        channel="events-room",
        id=str(n),
        prev_id=str(n - 1),
        http_stream=HttpStreamFormat(content=content, content_filters=("build-id",)),
        **kw,  # type: ignore[arg-type]
    )


def test_build_id_renders_the_delivered_items_own_id() -> None:
    hub = Hub()
    sub = eventstream_subscriber(hub)
    hub.publish(es_event(1, "one"))
    hub.publish(es_event(2, "two"))
    out = sub.take_output()
    assert b"id: room:1\ndata: one" in out and b"id: room:2\ndata: two" in out
    assert sub.channels["events-room"].prev_id == "2"
    assert sub.events == []


def test_an_item_a_filter_drops_still_advances_the_prev_id() -> None:
    hub = Hub()
    sub = eventstream_subscriber(hub)
    other = eventstream_subscriber(hub)
    other.meta["user"] = "someone"
    hub.publish(es_event(1, "skipped", meta={"skip_users": "x, anonymous"}))
    assert sub.outbuf == bytearray() and sub.channels["events-room"].prev_id == "1"
    assert b"id: room:1\ndata: skipped" in other.take_output()
    hub.publish(es_event(2, "next"))  # follows the skipped one: no gap, no recovery
    assert sub.events == []
    assert b"id: room:2\ndata: next" in sub.take_output()


def test_a_close_goes_only_where_the_delivery_filters_let_it() -> None:
    """django-eventstream's kick: a close on the user's channel with require_sub ends only the
    streams subscribed to the forbidden channel."""
    hub = Hub()
    forbidden = eventstream_subscriber(hub, "a")
    other = eventstream_subscriber(hub, "b")
    meta = {"require_sub": "events-a"}
    hub.publish(
        Item(channel="user-anonymous", meta=meta, http_stream=HttpStreamFormat(content=b"err"))
    )
    hub.publish(
        Item(channel="user-anonymous", meta=meta, http_stream=HttpStreamFormat(action="close"))
    )
    assert forbidden.take_output() == b"3\r\nerr\r\n"
    assert forbidden.take_events() == [CloseRequested("user-anonymous")]
    assert not forbidden.channels
    assert other.outbuf == bytearray() and other.events == []
    assert set(other.channels) == {"events-b", "user-anonymous"}


def test_a_hint_a_filter_drops_is_ignored() -> None:
    hub = Hub()
    poll = Subscriber(Transport.RESPONSE, meta={"user": "u1"})
    hub.subscribe(poll, "c", filters=("skip-users",))
    hint = HttpResponseFormat(action="hint")
    hub.publish(Item(channel="c", meta={"skip_users": "u1"}, http_response=hint))
    assert poll.events == []
    hub.publish(Item(channel="c", meta={"skip_users": "u2"}, http_response=hint))
    assert poll.take_events() == [HintReceived("c")]


def test_a_gap_is_detected_before_any_filter_runs() -> None:
    hub = Hub()
    sub = eventstream_subscriber(hub)
    hub.publish(es_event(3, "late", meta={"skip_users": "anonymous"}))
    assert sub.take_events() == [GapDetected("events-room", "0", "2")]
    assert sub.channels["events-room"].prev_id == "0"


# --- items kept while a stream's next-link request is in flight -------------------------------


def test_held_items_wait_and_are_released_against_the_new_prev_ids() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM)
    fast = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "c", prev_id="1")
    hub.subscribe(sub, "fast")
    hub.subscribe(fast, "fast")
    hub.hold_items(sub)
    hub.hold_items(sub)  # holding again changes nothing
    for n in range(2, 6):
        hub.publish(stream_item("c", b"%d" % n, id=str(n), prev_id=str(n - 1)))
    hub.publish(stream_item("fast", b"f"))  # a fast member while holding is kept too
    hub.publish(stream_item("gone", b"g"))
    assert sub.outbuf == bytearray() and sub.events == []
    assert fast.take_output() == b"1\r\nf\r\n"
    hub.set_prev_id(sub, "c", "3")  # the next-link answer covered items 2 and 3
    hub.unsubscribe(sub, "fast")  # and left a channel
    result = hub.release_items(sub)
    assert sub.take_output() == b"1\r\n4\r\n1\r\n5\r\n"
    assert result.delivered == 2 and sub.channels["c"].prev_id == "5"
    assert sub.queue is None
    hub.subscribe(sub, "fast")
    hub.publish(stream_item("fast", b"f"))  # delivered at once again, on the fast path
    assert sub.take_output() == b"1\r\nf\r\n"


def test_a_gap_stops_the_release_and_the_queue_is_bounded() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "c", prev_id="1")
    hub.hold_items(sub)
    items = [stream_item("c", b"x", id=str(n), prev_id=str(n - 1)) for n in range(2, 200)]
    items[1] = stream_item("c", b"x", id="3", prev_id="X")  # breaks the chain after item 2
    for item in items:
        hub.publish(item)
    assert sub.queue is not None and len(sub.queue) == MAX_QUEUED_ITEMS
    hub.release_items(sub)
    assert sub.take_output() == b"1\r\nx\r\n"
    assert sub.take_events() == [GapDetected("c", "2", "X")]


def test_remove_forgets_held_items() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "c")
    hub.hold_items(sub)
    hub.publish(stream_item("c", b"x"))
    hub.remove(sub)
    assert sub.queue is None
    assert hub.release_items(sub).delivered == 0
