"""The engines' sans-IO core: the Redis engine's commands and decisions, fed replies as data.

The Redis engine is driven the way the asyncio driver drives it (sync, take_commands, receive,
subscribed, history_read, link_down/link_up), with the messages built exactly as the publish
script builds them ("<stream id>\\n<item JSON>"). The real Redis round trip is tested
end to end in test_cluster.py.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore._engine import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    HEALTH_INTERVAL,
    PUBLISH_SCRIPT,
    MemoryEngine,
    ReadHistory,
    Received,
    RedisEngine,
    RedisTarget,
    ScriptCall,
    Subscribe,
    Unsubscribe,
    client_options,
    decode_item,
    encode_item,
    link_back_message,
    link_lost_message,
    link_silent,
    next_backoff,
    parse_engine_url,
    pubsub_options,
)
from gripcore._errors import LocalProtocolError, PublishError
from gripcore._history import History
from gripcore._hub import Framing, Hub, Subscriber, Transport
from gripcore._items import HttpStreamFormat, Item
from gripcore._sequencer import Sequencer

from .hypothesis_support import examples

TARGET = RedisTarget("127.0.0.1", prefix="t:")


def item(channel: str, content: str, id: str | None = None, prev_id: str | None = None) -> Item:
    return Item(
        channel=channel,
        id=id,
        prev_id=prev_id,
        http_stream=HttpStreamFormat(content=content.encode()),
    )


def message(it: Item, sid: str = "") -> bytes:
    """A channel message as PUBLISH_SCRIPT publishes it."""
    return sid.encode() + b"\n" + encode_item(it)


def entry(it: Item, sid: str) -> tuple[bytes, dict[bytes, bytes]]:
    """One XREVRANGE entry as PUBLISH_SCRIPT's XADD writes it."""
    return sid.encode(), {b"i": (it.id or "").encode(), b"m": encode_item(it)}


def stream(*channels: str, engine: RedisEngine | MemoryEngine) -> Subscriber:
    sub = Subscriber(Transport.STREAM, framing=Framing.RAW)
    for channel in channels:
        engine.hub.subscribe(sub, channel)
    return sub


def redis_engine(message_wait: float = 5.0, **options: object) -> tuple[RedisEngine, list[int]]:
    kicks: list[int] = []
    engine = RedisEngine(
        TARGET,
        Hub(),
        Sequencer(message_wait=message_wait),
        on_commands=lambda: kicks.append(1),
        **options,  # type: ignore[arg-type]
    )
    engine.link_up(0.0)
    return engine, kicks


def subscribed(engine: RedisEngine, *channels: str, now: float = 0.0) -> list[object]:
    """Sync, take the commands, and confirm the SUBSCRIBE as Redis would."""
    engine.sync()
    commands: list[object] = list(engine.take_commands(now))
    for channel in channels:
        engine.subscribed(f"t:c:{channel}".encode())
    return commands


# --- the engine URL ---------------------------------------------------------------------------


def test_engine_url_defaults_and_parts() -> None:
    assert parse_engine_url("redis://h") == RedisTarget("h", 6379, 0, prefix="gripcore:0:")
    assert parse_engine_url("rediss://u:p%40ss@[::1]:7000/3?prefix=app:") == RedisTarget(
        "::1", 7000, 3, tls=True, username="u", password="p@ss", prefix="app:"
    )
    assert parse_engine_url("redis://:secret@h/").password == "secret"
    assert parse_engine_url("redis://:secret@h/").username is None


@pytest.mark.parametrize(
    "url",
    [
        "memory",
        "http://h",
        "redis://",
        "redis://h:port",
        "redis://h/x",
        "redis://h/\u0661",  # a digit, but not an ASCII one
        "redis://h/0?db=1",
        "redis://h/0?prefix=a&prefix=b",
    ],
)
def test_engine_url_rejects(url: str) -> None:
    with pytest.raises(LocalProtocolError, match="engine URL must be redis://"):
        parse_engine_url(url)


def test_target_display_hides_credentials() -> None:
    assert parse_engine_url("redis://u:pw@h:1/2").display == "redis://h:1/2"
    assert parse_engine_url("rediss://[::1]").display == "rediss://[::1]:6379/0"


# --- items through Redis ----------------------------------------------------------------------


def test_item_codec_round_trips_and_rejects() -> None:
    it = Item(
        "c", id="1", prev_id="0", meta={"k": "v"}, http_stream=HttpStreamFormat(content=b"\xff")
    )
    assert decode_item(encode_item(it), 100) == it
    with pytest.raises(ValueError):
        decode_item(b"{", 100)
    with pytest.raises(PublishError):
        decode_item(b'{"channel": "c"}', 100)


def test_received_reads_the_items_sequencing_fields() -> None:
    received = Received(Item("c", id="2", prev_id="1", no_seq=True, http_stream=HttpStreamFormat()))
    assert (received.channel, received.id, received.prev_id, received.no_seq) == (
        "c",
        "2",
        "1",
        True,
    )
    assert received.sid == ""


def test_publish_calls_carry_dedup_history_and_channel() -> None:
    engine, _ = redis_engine(history=50, id_cache_ttl=60.0)
    first, second = engine.publish_calls([item("news", "a", id="7"), item("news", "b")])
    assert first == ScriptCall(
        ("t:id:4:news7", "t:h:news"),
        (60_000, 50, "t:c:news", "7", encode_item(first_item()), 86_400_000),
    )
    assert second.keys == ("t:id:4:news", "t:h:news")
    assert second.args[3] == ""  # no id: the script skips dedup
    assert "SET', KEYS[1], '1', 'NX', 'PX'" in PUBLISH_SCRIPT


def first_item() -> Item:
    return item("news", "a", id="7")


def test_publish_ttl_off_and_rounded_up() -> None:
    off, _ = redis_engine(id_cache_ttl=0.0)
    assert off.publish_calls([item("c", "a", id="1")])[0].args[:2] == (0, 0)
    tiny, _ = redis_engine(id_cache_ttl=0.0001)
    assert tiny.publish_calls([item("c", "a", id="1")])[0].args[0] == 1


def test_published_counts_what_redis_took_and_dropped() -> None:
    engine, _ = redis_engine()
    engine.published([1, 0, b"0", "0", 1])
    assert engine.stats.received == 5
    assert engine.engine_stats.duplicates == 3
    engine.publish_failed(4)
    assert engine.engine_stats.rejected == 4


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match=r"history size must be 1\.\.10000, got -1"):
        RedisEngine(TARGET, Hub(), Sequencer(), history=-1)
    with pytest.raises(LocalProtocolError, match="got 10001"):
        RedisEngine(TARGET, Hub(), Sequencer(), history=10_001)
    with pytest.raises(LocalProtocolError, match="linger"):
        RedisEngine(TARGET, Hub(), Sequencer(), linger=-1)
    with pytest.raises(LocalProtocolError):
        RedisEngine(TARGET, Hub(), Sequencer(), max_resume_hold=0)


# --- subscriptions follow interest, with a linger ---------------------------------------------


def test_subscribes_on_first_subscriber_and_lingers_before_unsubscribing() -> None:
    engine, kicks = redis_engine(linger=5.0)
    assert engine.sync() == []
    assert kicks == []
    a = stream("news", "sport", engine=engine)
    b = stream("news", engine=engine)
    assert subscribed(engine) == [Subscribe(("t:c:news", "t:c:sport"))]
    assert kicks
    assert engine.subscribed_channels == {"news", "sport"}
    engine.hub.remove(a)
    engine.sync()
    assert engine.take_commands(10.0) == []  # sport lingers until 15
    assert engine.next_deadline() == 15.0
    engine.hub.remove(b)
    engine.sync()
    assert engine.take_commands(12.0) == []  # news lingers until 17
    engine.handle_timer(14.9)
    assert engine.take_commands(14.9) == []
    engine.handle_timer(15.0)
    assert engine.take_commands(15.0) == [Unsubscribe(("t:c:sport",))]
    assert engine.next_deadline() == 17.0
    # a subscriber comes back while news lingers: no new SUBSCRIBE, no UNSUBSCRIBE
    c = stream("news", engine=engine)
    engine.sync()
    engine.handle_timer(20.0)
    assert engine.take_commands(20.0) == []
    assert engine.next_deadline() is None
    assert engine.subscribed_channels == {"news"}
    engine.hub.remove(c)


def test_linger_zero_unsubscribes_at_once() -> None:
    engine, _ = redis_engine(linger=0.0)
    sub = stream("news", engine=engine)
    subscribed(engine, "news")
    engine.hub.remove(sub)
    engine.sync()
    assert engine.take_commands(3.0) == [Unsubscribe(("t:c:news",))]


def test_next_deadline_is_the_earlier_of_sequencer_and_linger() -> None:
    engine, _ = redis_engine(linger=5.0)
    a = stream("news", "other", engine=engine)
    subscribed(engine, "news", "other")
    engine.receive(b"t:c:news", message(item("news", "1", id="1")), 0.0)
    engine.receive(b"t:c:news", message(item("news", "3", id="3", prev_id="2")), 1.0)
    assert engine.next_deadline() == 6.0  # the sequencer's wait for item 2
    engine.hub.unsubscribe(a, "other")
    engine.sync()
    engine.take_commands(0.5)
    assert engine.next_deadline() == 5.5  # the linger ends first
    result = engine.handle_timer(6.0)
    assert result.delivered == 1
    assert a.take_output() == b"13"


def test_subscribed_ignores_unknown_channels() -> None:
    engine, _ = redis_engine()
    engine.subscribed(b"elsewhere:c:news")
    engine.subscribed("t:c:never-asked")
    assert engine.subscribed_channels == frozenset()


# --- messages from Redis ----------------------------------------------------------------------


def test_receive_sequences_and_delivers() -> None:
    engine, _ = redis_engine()
    sub = stream("news", engine=engine)
    subscribed(engine, "news")
    r1 = engine.receive(b"t:c:news", message(item("news", "a", id="1"), "5-0"), 0.0)
    assert r1.woken == [sub]
    # the same order on every node: 3 (prev 2) waits, 2 releases it
    engine.receive("t:c:news", message(item("news", "c", id="3", prev_id="2")), 0.0)
    engine.receive(b"t:c:news", message(item("news", "b", id="2", prev_id="1")), 0.0)
    assert sub.take_output() == b"abc"
    assert engine.stats.fanned_out == 3
    assert engine.stats.delivered == 3


@pytest.mark.parametrize(
    ("channel", "data"),
    [
        (b"t:c:news", b"5-0\n{"),
        (b"t:c:news", b'\n{"channel": "news"}'),
        (b"t:c:news", b"x-y\n" + encode_item(item("news", "a"))),
        (b"t:c:news", b"\xff\n" + encode_item(item("news", "a"))),
        (b"t:c:other", b"\n" + encode_item(item("news", "a"))),
        (b"elsewhere", b"\n" + encode_item(item("news", "a"))),
    ],
)
def test_receive_counts_what_does_not_decode(channel: bytes, data: bytes) -> None:
    engine, _ = redis_engine()
    sub = stream("news", engine=engine)
    subscribed(engine, "news")
    assert engine.receive(channel, data, 0.0).delivered == 0
    assert engine.engine_stats.bad_messages == 1
    assert sub.take_output() == b""


# --- the link to Redis ------------------------------------------------------------------------


def test_outage_is_counted_and_everything_resubscribed() -> None:
    engine, _ = redis_engine()
    assert engine.up
    engine.link_down(10.0)
    engine.link_down(11.0)  # already down: one outage
    assert not engine.up
    assert engine.engine_stats.outages == 1
    stream("b", "a", engine=engine)
    engine.sync()  # the SUBSCRIBE queued while down is replaced by link_up's
    assert engine.link_up(12.5) == 2.5
    assert engine.take_commands(12.5) == [Subscribe(("t:c:a", "t:c:b"))]
    assert engine.engine_stats.outage_seconds == 2.5


def test_first_connection_reports_no_gap() -> None:
    engine = RedisEngine(TARGET, Hub(), Sequencer())
    assert engine.link_up(3.0) is None
    assert engine.take_commands(3.0) == []


# --- resume from the Redis stream -------------------------------------------------------------


def history(*pairs: tuple[Item, str]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """An XREVRANGE reply (newest first) for these (item, stream id) pairs, oldest first."""
    return [entry(it, sid) for it, sid in reversed(pairs)]


def test_resume_waits_for_the_subscription_then_replays_missed_then_held() -> None:
    engine, _ = redis_engine(history=10)
    sub = stream("news", engine=engine)
    engine.resume(sub, "1", 0.0)
    commands = engine.take_commands(0.0)
    assert commands == [Subscribe(("t:c:news",))]  # no read before Redis confirms
    engine.subscribed(b"t:c:news")
    (read,) = engine.take_commands(0.0)
    assert read == ReadHistory(read.token, "t:h:news", 10)  # type: ignore[union-attr]
    assert engine.pending_resumes == 1
    # live items arrive before the reply: 3 is also in the history, 4 is not
    i1, i2, i3, i4 = (item("news", f"<{n}>", id=str(n)) for n in range(1, 5))
    engine.receive(b"t:c:news", message(i3, "3-0"), 0.0)
    engine.receive(b"t:c:news", message(i4, "4-0"), 0.0)
    assert sub.take_output() == b""  # held
    assert isinstance(read, ReadHistory)
    result = engine.history_read(read.token, history((i1, "1-0"), (i2, "2-0"), (i3, "3-0")), 0.0)
    assert sub.take_output() == b"<2><3><4>"
    assert result.delivered == 3
    assert engine.engine_stats.resumes == 1
    assert engine.pending_resumes == 0
    engine.receive(b"t:c:news", message(item("news", "<5>", id="5"), "5-0"), 0.0)
    assert sub.take_output() == b"<5>"  # live again


def test_resume_on_a_confirmed_channel_reads_at_once() -> None:
    engine, _ = redis_engine(history=3)
    stream("news", engine=engine)
    subscribed(engine, "news")
    sub = stream("news", engine=engine)
    engine.resume(sub, "9", 0.0)
    (read,) = engine.take_commands(0.0)
    assert isinstance(read, ReadHistory)
    # the id is not in the history: nothing replayed, held items delivered as they were
    engine.receive(b"t:c:news", message(item("news", "live", id="10")), 0.0)
    engine.history_read(read.token, history((item("news", "old", id="8"), "8-0")), 0.0)
    assert sub.take_output() == b"live"
    assert engine.engine_stats.resume_misses == 1


def test_resume_keeps_held_items_without_stream_id_and_skips_bad_entries() -> None:
    engine, _ = redis_engine(history=3)
    sub = stream("news", engine=engine)
    subscribed(engine, "news")
    engine.resume(sub, "1", 0.0)
    (read,) = engine.take_commands(0.0)
    assert isinstance(read, ReadHistory)
    engine.receive(b"t:c:news", message(item("news", "nosid")), 0.0)
    reply: list[tuple[bytes | str, dict[bytes | str, bytes | str]]] = [
        ("3-0", {"i": "", "m": encode_item(item("news", "str-fields")).decode()}),
        (b"2-0", {b"i": b"", b"m": b"not json"}),
        (b"1-0", {b"i": b"1", b"m": encode_item(item("news", "one", id="1"))}),
    ]
    engine.history_read(read.token, reply, 0.0)
    assert sub.take_output() == b"str-fieldsnosid"
    assert engine.engine_stats.bad_messages == 1


def test_resume_without_history_does_nothing() -> None:
    engine, _ = redis_engine()
    sub = stream("news", engine=engine)
    assert engine.resume(sub, "1", 0.0).delivered == 0
    assert engine.pending_resumes == 0
    assert not sub.channels["news"].paused


def test_failed_read_delivers_what_was_held() -> None:
    engine, _ = redis_engine(history=3)
    sub = stream("news", engine=engine)
    other = stream("news", engine=engine)
    subscribed(engine, "news")
    engine.resume(sub, "1", 0.0)
    engine.resume(other, "1", 0.0)
    first, second = engine.take_commands(0.0)
    assert isinstance(first, ReadHistory) and isinstance(second, ReadHistory)
    engine.receive(b"t:c:news", message(item("news", "x")), 0.0)
    assert engine.history_failed(first.token).woken == [sub]
    assert sub.take_output() == b"x"
    assert engine.history_failed(first.token).delivered == 0  # once only
    assert engine.history_read(first.token, [], 0.0).delivered == 0
    engine.history_failed(second.token)
    assert other.take_output() == b"x"


def test_resume_of_a_subscriber_that_left_delivers_nothing() -> None:
    engine, _ = redis_engine(history=3)
    keep = stream("news", engine=engine)
    sub = stream("news", engine=engine)
    subscribed(engine, "news")
    engine.resume(sub, "1", 0.0)
    (read,) = engine.take_commands(0.0)
    assert isinstance(read, ReadHistory)
    engine.hub.remove(sub)
    engine.sync()
    engine.history_read(read.token, history((item("news", "a", id="1"), "1-0")), 0.0)
    assert sub.take_output() == b""
    assert keep.channels["news"].paused is False


def test_held_overflow_gives_up_the_history() -> None:
    engine, _ = redis_engine(history=3, max_resume_hold=2)
    sub = stream("news", engine=engine)
    engine.resume(sub, "1", 0.0)  # still waiting for the SUBSCRIBE confirmation
    for n in range(3):
        engine.receive(b"t:c:news", message(item("news", str(n))), 0.0)
    assert sub.take_output() == b"012"  # held two, then gave up and went live with the third
    assert engine.pending_resumes == 0
    engine.subscribed(b"t:c:news")  # no read for the abandoned resume
    assert engine.take_commands(0.0) == [Subscribe(("t:c:news",))]


def test_held_overflow_while_reading() -> None:
    engine, _ = redis_engine(history=3, max_resume_hold=1)
    sub = stream("news", engine=engine)
    subscribed(engine, "news")
    engine.resume(sub, "1", 0.0)
    (read,) = engine.take_commands(0.0)
    assert isinstance(read, ReadHistory)
    engine.receive(b"t:c:news", message(item("news", "a")), 0.0)
    engine.receive(b"t:c:news", message(item("news", "b")), 0.0)
    assert sub.take_output() == b"ab"
    assert engine.history_read(read.token, [], 0.0).delivered == 0


def test_waiting_resume_ends_when_the_channel_is_unsubscribed() -> None:
    engine, _ = redis_engine(history=3, linger=1.0)
    sub = stream("news", engine=engine)
    engine.resume(sub, "1", 0.0)
    engine.take_commands(0.0)
    engine.hub.remove(sub)
    engine.sync()
    engine.take_commands(0.0)
    engine.handle_timer(1.0)
    assert engine.take_commands(1.0) == [Unsubscribe(("t:c:news",))]
    assert engine.pending_resumes == 0


def test_link_up_keeps_reads_and_waiting_resumes_read_after_resubscribe() -> None:
    engine, _ = redis_engine(history=3)
    sub = stream("a", "b", engine=engine)
    subscribed(engine, "a")
    engine.resume(sub, "1", 0.0)  # a is confirmed (read now), b waits
    engine.link_down(1.0)
    engine.link_up(2.0)
    commands = engine.take_commands(2.0)
    assert [type(c) for c in commands] == [ReadHistory, Subscribe]
    engine.subscribed(b"t:c:b")
    assert [type(c) for c in engine.take_commands(2.0)] == [ReadHistory]


def test_engine_without_on_commands_just_queues() -> None:
    engine = RedisEngine(TARGET, Hub(), Sequencer())
    stream("news", engine=engine)
    engine.sync()
    assert engine.take_commands(0.0) == [Subscribe(("t:c:news",))]


# --- the memory engine ------------------------------------------------------------------------


def test_memory_engine_records_history_and_resumes() -> None:
    engine = MemoryEngine(history=History(2))
    assert engine.remote is False
    engine.publish([item("news", "a", id="1"), item("news", "b", id="2")], 0.0)
    engine.publish([item("news", "c", id="3")], 0.0)
    assert [i.id for i in engine.history.items("news")] == ["2", "3"]  # type: ignore[union-attr]
    sub = stream("news", engine=engine)
    result = engine.resume(sub, "2", 0.0)
    assert result.woken == [sub]
    assert sub.take_output() == b"c"
    engine.resume(sub, "1", 0.0)  # older than the history: nothing
    assert sub.take_output() == b""
    assert (engine.engine_stats.resumes, engine.engine_stats.resume_misses) == (1, 1)
    assert engine.take_commands(0.0) == []


def test_memory_engine_without_history_does_not_resume() -> None:
    engine = MemoryEngine()
    engine.publish([item("news", "a", id="1")], 0.0)
    sub = stream("news", engine=engine)
    assert engine.resume(sub, "1", 0.0).delivered == 0
    assert json.loads(encode_item(item("news", "a")))["channel"] == "news"


# --- one order everywhere ---------------------------------------------------------------------

_ids = st.sampled_from(["1", "2", "3", "4", None])


@settings(max_examples=examples(60))
@given(
    st.lists(st.tuples(_ids, _ids, st.floats(0, 10, allow_nan=False), st.booleans()), max_size=25)
)
def test_every_node_decides_like_one_node(
    events: list[tuple[str | None, str | None, float, bool]],
) -> None:
    """Two Redis-engine nodes fed Redis's one order deliver exactly what the memory engine
    delivers for the same publishes (dedup, prev-id waits, releases on timeout included)."""
    nodes = [redis_engine(message_wait=2.0)[0] for _ in range(2)]
    memory = MemoryEngine(Hub(), Sequencer(message_wait=2.0))
    engines: list[RedisEngine | MemoryEngine] = [*nodes, memory]
    subs = [stream("c", engine=e) for e in engines]
    for node in nodes:
        subscribed(node, "c")
    now = 0.0
    for n, (id, prev_id, wait, timer) in enumerate(events):
        now += wait
        it = item("c", f"[{n}]", id=id, prev_id=prev_id)
        for node in nodes:
            node.receive(b"t:c:c", message(it, f"{n + 1}-0"), now)
        memory.publish([it], now)
        if timer:
            for engine in engines:
                engine.handle_timer(now)
    for engine in engines:
        engine.handle_timer(now + 10.0)
    outputs = [sub.take_output() for sub in subs]
    assert outputs[0] == outputs[1] == outputs[2]


# --- what both drivers share --------------------------------------------------------------------


def test_handle_push_reads_pubsub_replies() -> None:
    engine, _ = redis_engine()
    sub = stream("news", engine=engine)
    engine.sync()
    engine.take_commands(0.0)
    assert engine.handle_push([b"subscribe", b"t:c:news", 1], 0.0) is None
    assert "news" in engine.subscribed_channels
    result = engine.handle_push([b"message", b"t:c:news", message(item("news", "hi", id="1"))], 0.0)
    assert result is not None and result.woken == [sub]
    assert bytes(sub.take_output()) == b"hi"
    for other in ([b"pong", b""], b"PONG", [b"unsubscribe", b"t:c:x", 0]):
        assert engine.handle_push(other, 0.0) is None


def test_reconnect_backoff_and_health_policy() -> None:
    delays = [BACKOFF_MIN]
    while delays[-1] < BACKOFF_MAX:
        delays.append(next_backoff(delays[-1]))
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert delays[-1] == BACKOFF_MAX == next_backoff(BACKOFF_MAX)
    assert not link_silent(10.0, 10.0 + 3 * HEALTH_INTERVAL)
    assert link_silent(10.0, 10.0 + 3 * HEALTH_INTERVAL + 0.01)
    assert link_silent(0.0, 0.4, interval=0.1)


def test_driver_options_and_messages() -> None:
    target = parse_engine_url("rediss://u:pw@h:7000/3")
    client = client_options(target)
    assert (client["host"], client["port"], client["db"], client["ssl"]) == ("h", 7000, 3, True)
    assert (client["username"], client["password"], client["protocol"]) == ("u", "pw", 2)
    pubsub = pubsub_options(target)
    assert pubsub["socket_timeout"] is None and pubsub["socket_keepalive"] is True
    assert "db" not in pubsub  # pub/sub channels are global to the server
    lost = link_lost_message(target, "Connection refused")
    assert lost.startswith("lost the Redis engine at rediss://h:7000/3 (Connection refused)")
    assert link_back_message(target, 2.25).startswith(
        "Redis engine at rediss://h:7000/3 reconnected after 2.2 s"
    )
