"""The engine core for highly available Redis: Sentinel and Redis Cluster URLs, hash-tagged
keys, shard channels grouped by the primary owning their slot, and what the drivers are told.
The real servers (a Sentinel failover, a cluster node restart) are in test_cluster_ha.py."""

from __future__ import annotations

import pytest
import redis.crc
from hypothesis import given
from hypothesis import strategies as st

from gripcore._engine import (
    MAX_REASON,
    PUBLISH_SCRIPT,
    SHARDED_PUBLISH_SCRIPT,
    RedisEngine,
    RedisTarget,
    Subscribe,
    Unsubscribe,
    client_options,
    cluster_slots,
    encode_item,
    failure_reason,
    hash_tag,
    key_slot,
    link_lost_message,
    parse_engine_url,
    pubsub_options,
    slot_owner,
)
from gripcore._errors import LocalProtocolError
from gripcore._hub import Framing, Hub, Subscriber, Transport
from gripcore._items import HttpStreamFormat, Item
from gripcore._sequencer import Sequencer

# CLUSTER SLOTS as Redis 7 answers it for three primaries (ids and replicas trimmed)
SLOTS_REPLY = [
    [10923, 16383, [b"127.0.0.1", 7002, b"id3"]],
    [0, 5460, [b"127.0.0.1", 7000, b"id1"]],
    [5461, 10922, [b"127.0.0.1", 7001, b"id2"], [b"127.0.0.1", 7005, b"id5"]],
]
SLOTS = cluster_slots(SLOTS_REPLY)


def item(channel: str, content: str, id: str | None = None) -> Item:
    return Item(channel=channel, id=id, http_stream=HttpStreamFormat(content=content.encode()))


def cluster_engine(**options: object) -> RedisEngine:
    target = parse_engine_url("redis+cluster://127.0.0.1:7000,127.0.0.1:7001?prefix=t:")
    return RedisEngine(target, Hub(), Sequencer(), **options)  # type: ignore[arg-type]


def stream(engine: RedisEngine, *channels: str) -> Subscriber:
    sub = Subscriber(Transport.STREAM, framing=Framing.RAW)
    for channel in channels:
        engine.hub.subscribe(sub, channel)
    return sub


# --- URLs ---------------------------------------------------------------------------------------


def test_sentinel_url() -> None:
    target = parse_engine_url("redis+sentinel://u:p%40w@s1:26400,[::1],s3:7/mymaster/2")
    assert target == RedisTarget(
        "s1",
        26400,
        2,
        username="u",
        password="p@w",
        prefix="gripcore:2:",
        mode="sentinel",
        nodes=(("s1", 26400), ("::1", 26379), ("s3", 7)),
        master_name="mymaster",
    )
    assert target.display == "redis+sentinel://s1:26400,[::1]:26379,s3:7/mymaster/2"
    plain = parse_engine_url("redis+sentinel://:pw@s1/m?prefix=app:")
    assert (plain.db, plain.password, plain.username, plain.prefix) == (0, "pw", None, "app:")
    assert plain.master_name == "m"


def test_cluster_url() -> None:
    target = parse_engine_url("redis+cluster://n1:7000,n2/")
    assert (target.mode, target.nodes, target.db) == ("cluster", (("n1", 7000), ("n2", 6379)), 0)
    assert target.prefix == "gripcore:0:"
    assert target.display == "redis+cluster://n1:7000,n2:6379"
    assert parse_engine_url("redis+cluster://u@n1").username == "u"
    assert parse_engine_url("redis+cluster://u@n1").password is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26400",  # no master name
        "redis+sentinel://s1:26400/m/0/x",
        "redis+sentinel://s1:26400/m/x",
        "redis+sentinel://s1:port/m",
        "redis+sentinel://s1,,s2/m",
        "redis+sentinel://a@s1@/m",
        "redis+sentinel://s1/m?db=2",
        "redis+cluster://n1/0",  # a cluster has database 0 only
        "redis+cluster://n1?prefix=a{b}:",  # the hash tag must be the first
        "redis+cluster://n1?prefix=a}",
        "redis+cluster://",
    ],
)
def test_ha_urls_rejected(url: str) -> None:
    with pytest.raises(LocalProtocolError, match="redis\\+sentinel://HOST:PORT"):
        parse_engine_url(url)


def test_driver_options_per_mode() -> None:
    sentinel = parse_engine_url("redis+sentinel://u:pw@s1:26400/m/3")
    options = client_options(sentinel)
    assert "host" not in options and "ssl" not in options
    assert (options["db"], options["username"], options["password"]) == (3, "u", "pw")
    cluster = client_options(parse_engine_url("redis+cluster://n1:7000"))
    assert "host" not in cluster and "db" not in cluster
    assert pubsub_options(sentinel, ("10.0.0.2", 6400))["host"] == "10.0.0.2"
    assert pubsub_options(sentinel, ("10.0.0.2", 6400))["port"] == 6400
    assert link_lost_message(sentinel, "gone").startswith(
        "lost the Redis engine at redis+sentinel://s1:26400/m/3 (gone)"
    )


# --- slots and hash tags ------------------------------------------------------------------------


@given(st.text(max_size=12))
def test_key_slot_is_redis_crc16_slot(key: str) -> None:
    assert key_slot(key) == redis.crc.key_slot(key.encode("utf-8"))


@given(st.text(max_size=12), st.text(max_size=8))
def test_every_key_of_a_channel_is_in_one_slot(channel: str, item_id: str) -> None:
    engine = cluster_engine()
    names = [
        engine.redis_channel(channel),
        engine.stream_key(channel),
        engine.dedup_key(channel, item_id),
    ]
    assert len({key_slot(name) for name in names}) == 1
    assert engine.redis_channel(channel).endswith("c:" + channel)


def test_hash_tags() -> None:
    assert hash_tag("news") == "{news}"
    assert hash_tag("a}b") == "{~617d62}"
    assert hash_tag("") == "{~}"
    engine = cluster_engine()
    assert engine.redis_channel("news") == "t:{news}c:news"
    assert engine.stream_key("news") == "t:{news}h:news"
    assert engine.dedup_key("news", "7") == "t:{news}id:4:news7"


def test_slot_owners() -> None:
    assert SLOTS[0] == (0, 5460, "127.0.0.1", 7000)
    assert slot_owner(SLOTS, 0) == ("127.0.0.1", 7000)
    assert slot_owner(SLOTS, 5461) == ("127.0.0.1", 7001)
    assert slot_owner(SLOTS, 16383) == ("127.0.0.1", 7002)
    gap = cluster_slots([[100, 200, [b"h", 1]]])
    assert slot_owner(gap, 99) is None
    assert slot_owner(gap, 201) is None
    assert slot_owner((), 5) is None


# --- the engine in a cluster --------------------------------------------------------------------


def test_cluster_publishes_with_spublish_in_the_channels_slot() -> None:
    engine = cluster_engine(history=5)
    assert engine.script == SHARDED_PUBLISH_SCRIPT
    assert not engine.pipelined  # each run may go to another primary
    assert "redis.call('SPUBLISH', ARGV[3]" in SHARDED_PUBLISH_SCRIPT
    assert "SPUBLISH" not in PUBLISH_SCRIPT
    (call,) = engine.publish_calls([item("news", "a", id="1")])
    assert call.keys == ("t:{news}id:4:news1", "t:{news}h:news")
    assert call.args[2] == "t:{news}c:news"


def test_cluster_subscribes_per_slot_owner_and_resubscribes_after_relink() -> None:
    engine = cluster_engine(linger=0.0)
    engine.link_up(0.0, SLOTS)
    channels = ["a", "b", "c", "d", "e", "f"]
    subs = [stream(engine, ch) for ch in channels]
    engine.sync()
    commands = engine.take_commands(0.0)
    assert all(isinstance(c, Subscribe) and c.verb == "SSUBSCRIBE" for c in commands)
    seen = set()
    for command in commands:
        assert isinstance(command, Subscribe)
        # one slot per SSUBSCRIBE (Redis answers CROSSSLOT otherwise), on its owner
        (slot,) = {key_slot(name) for name in command.channels}
        assert slot_owner(SLOTS, slot) == command.node
        seen.update(command.channels)
    assert seen == {engine.redis_channel(ch) for ch in channels}
    assert len({c.node for c in commands if isinstance(c, Subscribe)}) > 1
    # two channels whose tags hash to one slot: one command for both
    by_slot: dict[int, str] = {}
    for n in range(2000):
        name = f"c{n}"
        slot = key_slot(engine.redis_channel(name))
        if slot in by_slot:
            break
        by_slot[slot] = name
    pair = (by_slot[slot], name)
    stream(engine, *pair)
    engine.sync()
    (both,) = engine.take_commands(0.0)
    assert both == Subscribe(tuple(engine.redis_channel(c) for c in pair), slot_owner(SLOTS, slot))
    seen.update(both.channels)
    # a shard message and its confirmation
    assert engine.handle_push([b"ssubscribe", b"t:{a}c:a", 1], 0.0) is None
    out = engine.handle_push([b"smessage", b"t:{a}c:a", b"\n" + encode_item(item("a", "hi"))], 0)
    assert out is not None and out.woken == [subs[0]]
    # Redis dropped a wanted shard channel (its slot moved): the driver must reconnect
    assert not engine.relink
    engine.handle_push([b"sunsubscribe", b"t:{b}c:b", 0], 0.0)
    assert engine.relink
    engine.link_down(1.0)
    engine.link_up(2.0, SLOTS)
    assert not engine.relink
    again = engine.take_commands(2.0)
    assert sorted(n for c in again if isinstance(c, Subscribe) for n in c.channels) == sorted(seen)
    # leaving: SUNSUBSCRIBE on the owner's connection, which is no relink
    engine.hub.unsubscribe(subs[1], "b")
    engine.sync()
    (gone,) = engine.take_commands(3.0)
    assert isinstance(gone, Unsubscribe) and gone.verb == "SUNSUBSCRIBE"
    assert gone == Unsubscribe(("t:{b}c:b",), slot_owner(SLOTS, key_slot("t:{b}c:b")))
    engine.handle_push([b"sunsubscribe", b"t:{b}c:b", 0], 3.0)
    assert not engine.relink


def test_cluster_channel_of_an_unknown_slot_goes_to_a_known_node() -> None:
    engine = cluster_engine()
    engine.link_up(0.0)  # no slot map yet: the first seed node
    stream(engine, "news")
    engine.sync()
    assert engine.take_commands(0.0) == [Subscribe(("t:{news}c:news",), ("127.0.0.1", 7000))]
    engine.link_up(1.0, cluster_slots([[0, 1, [b"h", 9]]]))
    assert engine.take_commands(1.0) == [Subscribe(("t:{news}c:news",), ("h", 9))]


@pytest.mark.parametrize(
    "name",
    [b"t:news", b"t:{news}h:news", b"t:news}c:news", b"t:{news}c:other", b"t:{newsc:news", b"x:"],
)
def test_cluster_ignores_channels_that_are_not_its_own(name: bytes) -> None:
    engine = cluster_engine()
    engine.link_up(0.0, SLOTS)
    stream(engine, "news")
    engine.sync()
    engine.take_commands(0.0)
    out = engine.handle_push([b"smessage", name, b"\n" + encode_item(item("news", "x"))], 0.0)
    assert out is not None and out.delivered == 0
    assert engine.engine_stats.bad_messages == 1


def test_single_server_names_and_commands_are_unchanged() -> None:
    engine = RedisEngine(parse_engine_url("redis://h?prefix=t:"), Hub(), Sequencer())
    engine.link_up(0.0)
    assert engine.script == PUBLISH_SCRIPT
    assert engine.pipelined
    assert engine.redis_channel("a}b") == "t:c:a}b"
    stream(engine, "news")
    engine.sync()
    (command,) = engine.take_commands(0.0)
    assert command == Subscribe(("t:c:news",)) and command.verb == "SUBSCRIBE"
    assert Unsubscribe(("t:c:news",)).verb == "UNSUBSCRIBE"


@pytest.mark.parametrize("key", ["{}x", "a{b", "{a}b", "x{}{a}", "}{a}", "plain", "{\u00e9}"])
def test_key_slot_vectors(key: str) -> None:
    assert key_slot(key) == redis.crc.key_slot(key.encode("utf-8"))


def test_failure_reason_is_short() -> None:
    from redis.sentinel import MasterNotFoundError

    client_repr = "<redis.asyncio.client.Redis(<ConnectionPool(<Connection(host=h)>)>)>"
    assert failure_reason(MasterNotFoundError(f"No master found for 'm' : {client_repr}")) == (
        "No master found for 'm'"
    )
    assert failure_reason(ConnectionError()) == "ConnectionError"
    long = failure_reason(OSError("x" * 500))
    assert len(long) == MAX_REASON and long.endswith("...")
