"""Tests for gripcore._sequencer: dedup and prev-id ordering (spec §6, checklist rows 98-101).

Scenarios are data: each is a list of steps run against one `Sequencer`, every step checking
what came out. Hypothesis then checks the properties the scenarios illustrate: any permutation
of a chain comes out in order, duplicates never come out twice, memory stays within its caps,
timers fire when announced, and every item is accounted for.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gripcore._errors import LocalProtocolError
from gripcore._sequencer import (
    DEFAULT_ID_CACHE_TTL,
    DEFAULT_MAX_PENDING_PER_CHANNEL,
    DEFAULT_MESSAGE_WAIT,
    SequencedItem,
    Sequencer,
    SequencerStats,
)

from .hypothesis_support import examples


@dataclass(frozen=True, slots=True)
class Item:
    """A stand-in for the publish Item: just what the sequencer reads, plus a tag for
    telling id-less items apart in expectations."""

    channel: str = "ch"
    id: str | None = None
    prev_id: str | None = None
    no_seq: bool = False
    tag: str = ""


def msg(id: str | None, prev_id: str | None = None, **kw: Any) -> Item:
    return Item(id=id, prev_id=prev_id, **kw)


def name(item: Item) -> str:
    return item.tag or item.id or "?"


# -- scenario steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pub:
    """Publish `item` at time `t`; expect these items out (by tag or id)."""

    t: float
    item: Item
    out: list[str]
    subs: bool = True


@dataclass(frozen=True)
class Tick:
    """Run the timer at `t`; expect these items out."""

    t: float
    out: list[str]


@dataclass(frozen=True)
class Deadline:
    """Expect `next_deadline()` to be this."""

    at: float | None


@dataclass(frozen=True)
class Last:
    """Expect `last_id(channel)` to be this."""

    id: str | None
    channel: str = "ch"


@dataclass(frozen=True)
class Unsub:
    channel: str = "ch"


@dataclass(frozen=True)
class Forget:
    channel: str = "ch"


@dataclass(frozen=True)
class Stats:
    """Expect these stats fields to have these values."""

    fields: dict[str, int]


Step = Pub | Tick | Deadline | Last | Unsub | Forget | Stats

# (scenario id, Sequencer kwargs, steps)
SCENARIOS: list[tuple[str, dict[str, Any], list[Step]]] = [
    (
        "in-order chain goes straight through",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("b", "a"), ["b"]),
            Pub(0, msg("c", "b"), ["c"]),
            Last("c"),
            Deadline(None),
            Stats({"delivered": 3, "pending": 0, "last_ids": 1, "cached_ids": 3}),
        ],
    ),
    (
        "out-of-order item waits for its predecessor, then both go in order",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(1, msg("c", "b"), []),
            Deadline(1 + DEFAULT_MESSAGE_WAIT),
            Stats({"pending": 1}),
            Pub(2, msg("b", "a"), ["b", "c"]),
            Last("c"),
            Deadline(None),
            Stats({"delivered": 3, "pending": 0, "released_on_timeout": 0}),
        ],
    ),
    (
        "a long chain published backwards flushes at once when the gap fills",
        {},
        [
            Pub(0, msg("1"), ["1"]),
            Pub(0, msg("5", "4"), []),
            Pub(0, msg("4", "3"), []),
            Pub(0, msg("3", "2"), []),
            Pub(0, msg("2", "1"), ["2", "3", "4", "5"]),
            Last("5"),
        ],
    ),
    (
        "first message on a channel is delivered whatever its prev-id",
        {},
        [Last(None), Pub(0, msg("x", "zzz"), ["x"]), Last("x")],
    ),
    (
        "item without prev-id is delivered even when the last id is known",
        {},
        [Pub(0, msg("a"), ["a"]), Pub(0, msg("z"), ["z"]), Last("z")],
    ),
    (
        "item without id is delivered and makes the last id unknown",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg(None, "a", tag="n1"), ["n1"]),
            Last(None),
            Pub(0, msg("c", "b"), ["c"]),
        ],
    ),
    (
        "duplicate id within the TTL is dropped; at exactly the TTL it is new again",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(1, msg("a"), []),
            Pub(DEFAULT_ID_CACHE_TTL - 0.001, msg("a", "a"), []),
            Stats({"duplicates_dropped": 2}),
            Pub(DEFAULT_ID_CACHE_TTL, msg("a", "a"), ["a"]),
        ],
    ),
    (
        "dedup is per channel",
        {},
        [
            Pub(0, msg("a", channel="x"), ["a"]),
            Pub(0, msg("a", channel="y"), ["a"]),
            Pub(0, msg("a", channel="x"), []),
        ],
    ),
    (
        "id_cache_ttl=0 disables dedup (Pushpin's code default)",
        {"id_cache_ttl": 0},
        [Pub(0, msg("a"), ["a"]), Pub(0, msg("a"), ["a"]), Stats({"cached_ids": 0})],
    ),
    (
        "items without an id are never duplicates",
        {},
        [Pub(0, msg(None, tag="n1"), ["n1"]), Pub(0, msg(None, tag="n2"), ["n2"])],
    ),
    (
        "dedup applies to channels without subscribers and no-seq items too",
        {},
        [
            Pub(0, msg("a"), ["a"], subs=False),
            Pub(0, msg("a"), [], subs=False),
            Pub(0, msg("b", no_seq=True), ["b"]),
            Pub(0, msg("b", no_seq=True), []),
        ],
    ),
    (
        "no-seq bypasses the buffer and leaves the last id alone",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b", no_seq=True), ["c"]),
            Last("a"),
            Pub(0, msg("b", "a"), ["b"]),
        ],
    ),
    (
        "without subscribers items pass and the last id is not updated (Pushpin quirk)",
        {},
        [
            Pub(0, msg("a"), ["a"], subs=False),
            Last(None),
            Pub(0, msg("c", "b"), ["c"]),
            Last("c"),
            Pub(0, msg("d", "zz"), ["d"], subs=False),
            Last("c"),
        ],
    ),
    (
        "a buffered item is released exactly message_wait after it arrived",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(1, msg("c", "b"), []),
            Deadline(6.0),
            Tick(5.999, []),
            Tick(6.0, ["c"]),
            Last("c"),
            Deadline(None),
            Stats({"released_on_timeout": 1, "delivered": 2}),
            Pub(7, msg("d", "c"), ["d"]),
            # the late predecessor is itself out of order now: it waits, then goes anyway
            Pub(7, msg("b", "a"), []),
            Tick(12, ["b"]),
            Last("b"),
        ],
    ),
    (
        "a released item chain-flushes what waited behind it",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(1, msg("c", "b"), []),
            Pub(2, msg("d", "c"), []),
            Pub(3, msg("f", "e"), []),
            Deadline(6.0),
            Tick(6.0, ["c", "d"]),
            Deadline(8.0),
            Tick(100, ["f"]),
            Stats({"released_on_timeout": 2, "delivered": 4, "pending": 0}),
        ],
    ),
    (
        "releases across channels go in arrival order",
        {"message_wait": 2},
        [
            Pub(0, msg("a", channel="x"), ["a"]),
            Pub(0, msg("a", channel="y"), ["a"]),
            Pub(1, msg("y3", "y2", channel="y"), []),
            Pub(1, msg("x3", "x2", channel="x"), []),
            Pub(1.5, msg("y9", "y8", channel="y"), []),
            Tick(10, ["y3", "x3", "y9"]),
            Last("x3", "x"),
            Last("y9", "y"),
        ],
    ),
    (
        "a second buffered item with the same prev-id is dropped",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b"), []),
            Pub(0, msg("c2", "b"), []),
            Stats({"prev_id_conflict_dropped": 1, "pending": 1}),
            Pub(0, msg("b", "a"), ["b", "c"]),
        ],
    ),
    (
        "a re-sent buffered item is a duplicate, not a conflict",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b"), []),
            Pub(0, msg("c", "b"), []),
            Stats({"duplicates_dropped": 1, "prev_id_conflict_dropped": 0}),
        ],
    ),
    (
        "a dropped item's id stays in the dedup cache (dedup runs first, as in Pushpin)",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b"), []),
            Pub(0, msg("c2", "b"), []),
            Pub(0, msg("b", "a"), ["b", "c"]),
            Pub(0, msg("c2", "c"), []),
            Stats({"duplicates_dropped": 1}),
        ],
    ),
    (
        "the per-channel buffer is capped; the overflow is dropped",
        {"max_pending_per_channel": 2},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("x1", "p1"), []),
            Pub(0, msg("x2", "p2"), []),
            Pub(0, msg("x3", "p3"), []),
            Pub(0, msg("a", channel="other"), ["a"]),
            Pub(0, msg("o1", "p1", channel="other"), []),
            Stats({"overflow_dropped": 1, "pending": 3}),
        ],
    ),
    (
        "the global buffer is capped too",
        {"max_pending": 1},
        [
            Pub(0, msg("a", channel="x"), ["a"]),
            Pub(0, msg("a", channel="y"), ["a"]),
            Pub(0, msg("x2", "x1", channel="x"), []),
            Pub(0, msg("y2", "y1", channel="y"), []),
            Stats({"overflow_dropped": 1, "pending": 1}),
            Pub(0, msg("y1", "a", channel="y"), ["y1"]),
        ],
    ),
    (
        "last subscriber leaving discards the buffer and the last id",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b"), []),
            Pub(0, msg("d", "c"), []),
            Unsub(),
            Last(None),
            Deadline(None),
            Stats({"unsubscribed_dropped": 2, "pending": 0, "last_ids": 0}),
            Pub(1, msg("x", "w"), ["x"]),
            Tick(100, []),
        ],
    ),
    (
        "unsubscribing a channel with nothing buffered only forgets its last id",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("a", channel="z"), ["a"]),
            Pub(0, msg("c", "b", channel="z"), []),
            Unsub(),
            Unsub("never-seen"),
            Last(None),
            Last("a", "z"),
            Stats({"unsubscribed_dropped": 0, "pending": 1}),
        ],
    ),
    (
        "forget_last_id makes the next item first again",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Forget(),
            Last(None),
            Pub(0, msg("c", "b"), ["c"]),
            Forget("nope"),
        ],
    ),
    (
        "buffered items stay when the last id is forgotten, and flush on their predecessor",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b"), []),
            Pub(0, msg(None, "a", tag="n"), ["n"]),
            Pub(0, msg("b", "a"), ["b", "c"]),
        ],
    ),
    (
        "a chain flush stops at the first missing link",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg("c", "b"), []),
            Pub(0, msg("e", "d"), []),
            Pub(0, msg("b", "a"), ["b", "c"]),
            Stats({"pending": 1}),
            Pub(0, msg("d", "c"), ["d", "e"]),
        ],
    ),
    (
        "a released item without an id makes the last id unknown",
        {},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(0, msg(None, "b", tag="n"), []),
            Tick(5, ["n"]),
            Last(None),
        ],
    ),
    (
        "the last-id table is an LRU by last update",
        {"max_channels": 2},
        [
            Pub(0, msg("a", channel="x"), ["a"]),
            Pub(0, msg("a", channel="y"), ["a"]),
            Pub(0, msg("b", "a", channel="x"), ["b"]),
            Pub(0, msg("a", channel="z"), ["a"]),
            Last("b", "x"),
            Last(None, "y"),
            Last("a", "z"),
            Stats({"last_ids": 2}),
        ],
    ),
    (
        "the dedup cache is capped, oldest evicted first",
        {"max_ids": 2},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(1, msg("b"), ["b"]),
            Pub(2, msg("c"), ["c"]),
            Stats({"cached_ids": 2}),
            Pub(3, msg("a"), ["a"]),
            Pub(3, msg("c"), []),
        ],
    ),
    (
        "expired dedup entries are purged by the timer too",
        {"id_cache_ttl": 10},
        [
            Pub(0, msg("a"), ["a"]),
            Pub(5, msg("b"), ["b"]),
            Stats({"cached_ids": 2}),
            Tick(10, []),
            Stats({"cached_ids": 1}),
            Deadline(None),
            Tick(15, []),
            Stats({"cached_ids": 0}),
        ],
    ),
    (
        "time never runs backwards: an earlier now counts as the latest seen",
        {},
        [
            Pub(10, msg("a"), ["a"]),
            Pub(5, msg("c", "b"), []),
            Deadline(15.0),
            Tick(14, []),
            Tick(15, ["c"]),
            Pub(70, msg("z"), ["z"]),
            Pub(3, msg("a", "z"), ["a"]),
        ],
    ),
    (
        "message_wait=0 releases a buffered item on the next timer run",
        {"message_wait": 0},
        [Pub(0, msg("a"), ["a"]), Pub(1, msg("c", "b"), []), Deadline(1.0), Tick(1, ["c"])],
    ),
]


def _run(kwargs: dict[str, Any], steps: list[Step]) -> None:
    seq: Sequencer[Item] = Sequencer(**kwargs)
    for n, step in enumerate(steps):
        where = f"step {n}: {step}"
        if isinstance(step, Pub):
            out = seq.publish(step.item, step.t, has_subscribers=step.subs)
            assert [name(i) for i in out] == step.out, where
        elif isinstance(step, Tick):
            out = seq.handle_timer(step.t)
            assert [name(i) for i in out] == step.out, where
        elif isinstance(step, Deadline):
            assert seq.next_deadline() == step.at, where
        elif isinstance(step, Last):
            assert seq.last_id(step.channel) == step.id, where
        elif isinstance(step, Unsub):
            seq.channel_unsubscribed(step.channel)
        elif isinstance(step, Forget):
            seq.forget_last_id(step.channel)
        else:
            stats = seq.stats
            assert {k: getattr(stats, k) for k in step.fields} == step.fields, where


@pytest.mark.parametrize(
    ("kwargs", "steps"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_scenario(kwargs: dict[str, Any], steps: list[Step]) -> None:
    _run(kwargs, steps)


def test_publish_returns_the_same_item_objects() -> None:
    seq: Sequencer[Item] = Sequencer()
    a, c, b = msg("a"), msg("c", "b"), msg("b", "a")
    assert seq.publish(a, 0)[0] is a
    assert seq.publish(c, 0) == []
    out = seq.publish(b, 0)
    assert out[0] is b
    assert out[1] is c


def test_pending_count_per_channel_and_total() -> None:
    seq: Sequencer[Item] = Sequencer()
    for channel in ("x", "y"):
        seq.publish(Item(channel, "a"), 0)
    seq.publish(Item("x", "3", "2"), 0)
    seq.publish(Item("x", "5", "4"), 0)
    seq.publish(Item("y", "3", "2"), 0)
    assert seq.pending_count("x") == 2
    assert seq.pending_count("y") == 1
    assert seq.pending_count("z") == 0
    assert seq.pending_count() == 3


def test_defaults_follow_pushpin_shipped_config() -> None:
    assert DEFAULT_ID_CACHE_TTL == 60.0
    assert DEFAULT_MESSAGE_WAIT == 5.0
    assert DEFAULT_MAX_PENDING_PER_CHANNEL == 100
    seq: Sequencer[Item] = Sequencer()
    assert seq.stats == SequencerStats()


def test_item_protocol_accepts_plain_objects() -> None:
    """Any object with the four attributes will do, mutable or frozen."""

    class Plain:
        def __init__(self, id: str) -> None:
            self.channel = "ch"
            self.id: str | None = id
            self.prev_id: str | None = None
            self.no_seq = False

    item: SequencedItem = Plain("a")
    seq: Sequencer[SequencedItem] = Sequencer()
    assert seq.publish(item, 0) == [item]
    assert seq.last_id("ch") == "a"


# -- argument checking --------------------------------------------------------------------------

BAD_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"id_cache_ttl": -1}, "id_cache_ttl must be a finite number of seconds >= 0, got -1"),
    ({"id_cache_ttl": math.inf}, "id_cache_ttl must be a finite number of seconds >= 0"),
    ({"message_wait": math.nan}, "message_wait must be a finite number of seconds >= 0"),
    ({"message_wait": "5"}, "message_wait must be a number of seconds, got '5'"),
    ({"message_wait": True}, "message_wait must be a number of seconds, got True"),
    ({"max_pending_per_channel": 0}, "max_pending_per_channel must be an integer >= 1, got 0"),
    ({"max_ids": 1.5}, "max_ids must be an integer >= 1, got 1.5"),
    ({"max_channels": False}, "max_channels must be an integer >= 1, got False"),
    ({"max_pending": -3}, "max_pending must be an integer >= 1, got -3"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_local_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        Sequencer(**kwargs)
    assert message in str(info.value)
    assert info.value.error_status_hint == 500


def test_integer_durations_are_accepted() -> None:
    seq: Sequencer[Item] = Sequencer(id_cache_ttl=1, message_wait=2)
    seq.publish(msg("a"), 0)
    seq.publish(msg("c", "b"), 0)
    assert seq.next_deadline() == 2.0


BAD_NOW: list[Any] = [math.nan, math.inf, -math.inf, "1", None, True]


@pytest.mark.parametrize("now", BAD_NOW, ids=repr)
def test_bad_now_is_a_local_error(now: Any) -> None:
    seq: Sequencer[Item] = Sequencer()
    with pytest.raises(LocalProtocolError, match="now must be a finite number of seconds"):
        seq.publish(msg("a"), now)
    with pytest.raises(LocalProtocolError, match="now must be a finite number of seconds"):
        seq.handle_timer(now)
    assert seq.stats == SequencerStats()


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=examples(100))
@given(order=st.permutations(range(1, 26)), gaps=st.lists(st.floats(0, 0.1), min_size=25))
def test_any_permutation_of_a_chain_comes_out_in_order_once(
    order: list[int], gaps: list[float]
) -> None:
    """A seed item makes the channel's last id known; then items 1..25 (each naming the one
    before as prev-id) are published in any order within the wait window."""
    seq: Sequencer[Item] = Sequencer()
    out = seq.publish(msg("0"), 0.0)
    now = 0.0
    for n, gap in zip(order, gaps, strict=False):
        now += gap
        out += seq.publish(msg(str(n), str(n - 1)), now)
    assert [i.id for i in out] == [str(n) for n in range(26)]
    assert seq.next_deadline() is None
    assert seq.stats.released_on_timeout == 0


# A random stream of operations over few channels and ids, so collisions are common.
_channels = st.sampled_from(["x", "y", "z"])
_ids = st.one_of(st.none(), st.sampled_from([str(n) for n in range(12)]))
_items = st.builds(Item, channel=_channels, id=_ids, prev_id=_ids)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.floats(0, 3), _items, st.booleans(), st.booleans()),
        st.tuples(st.just("tick"), st.floats(0, 3)),
        st.tuples(st.just("unsub"), _channels),
        st.tuples(st.just("forget"), _channels),
    ),
    max_size=80,
)


class Driver:
    """Runs a stream of operations the way an adapter would: before time moves to `t`, every
    deadline the sequencer announced up to `t` is honoured with `handle_timer(deadline)`."""

    def __init__(self, seq: Sequencer[Item]) -> None:
        self.seq = seq
        self.now = 0.0
        self.out: list[tuple[float, Item]] = []
        self.published = 0

    def advance(self, dt: float) -> None:
        target = self.now + dt
        while (deadline := self.seq.next_deadline()) is not None and deadline <= target:
            released = self.seq.handle_timer(deadline)
            assert released, "a timer run at the announced deadline released nothing"
            self.now = max(self.now, deadline)
            self.out += [(self.now, i) for i in released]
        self.now = target

    def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "pub":
            _, dt, item, subs, no_seq = op
            self.advance(dt)
            if no_seq:
                item = Item(item.channel, item.id, item.prev_id, True)
            self.published += 1
            self.out += [
                (self.now, i) for i in self.seq.publish(item, self.now, has_subscribers=subs)
            ]
        elif kind == "tick":
            self.advance(op[1])
            self.out += [(self.now, i) for i in self.seq.handle_timer(self.now)]
        elif kind == "unsub":
            self.seq.channel_unsubscribed(op[1])
        else:
            self.seq.forget_last_id(op[1])


@settings(max_examples=examples(120))
@given(ops=_ops)
def test_every_item_is_delivered_dropped_or_pending(ops: list[tuple[Any, ...]]) -> None:
    driver = Driver(Sequencer(message_wait=1.0))
    for op in ops:
        driver.run(op)
    s = driver.seq.stats
    dropped = (
        s.duplicates_dropped
        + s.prev_id_conflict_dropped
        + s.overflow_dropped
        + s.unsubscribed_dropped
    )
    assert s.delivered == len(driver.out)
    assert s.delivered + dropped + s.pending == driver.published


@settings(max_examples=examples(120))
@given(ops=_ops)
def test_duplicates_are_never_delivered_twice_within_the_ttl(ops: list[tuple[Any, ...]]) -> None:
    driver = Driver(Sequencer(id_cache_ttl=1000.0, message_wait=1.0))
    for op in ops:
        driver.run(op)
    keyed = Counter((i.channel, i.id) for _, i in driver.out if i.id is not None)
    assert all(count == 1 for count in keyed.values()), keyed


@settings(max_examples=examples(120))
@given(ops=_ops)
def test_memory_stays_within_the_caps(ops: list[tuple[Any, ...]]) -> None:
    seq: Sequencer[Item] = Sequencer(
        max_pending_per_channel=3, max_pending=5, max_ids=6, max_channels=2, message_wait=1.0
    )
    driver = Driver(seq)
    for op in ops:
        driver.run(op)
        s = seq.stats
        assert all(seq.pending_count(c) <= 3 for c in "xyz")
        assert s.pending <= 5
        assert s.cached_ids <= 6
        assert s.last_ids <= 2


@settings(max_examples=examples(120))
@given(ops=_ops, fraction=st.floats(0, 0.999))
def test_timer_releases_exactly_at_the_announced_deadline(
    ops: list[tuple[Any, ...]], fraction: float
) -> None:
    seq: Sequencer[Item] = Sequencer(message_wait=1.0)
    driver = Driver(seq)
    for op in ops:
        driver.run(op)
    deadline = seq.next_deadline()
    if deadline is None:
        assert seq.stats.pending == 0
        return
    assert deadline >= driver.now  # the driver honoured every earlier deadline
    before = seq.stats.released_on_timeout
    early = driver.now + (deadline - driver.now) * fraction
    assume(early < deadline)
    assert seq.handle_timer(early) == []
    assert seq.handle_timer(deadline) != []
    assert seq.stats.released_on_timeout > before


@settings(max_examples=examples(60))
@given(
    items=st.lists(
        st.builds(
            Item,
            channel=st.text(max_size=5),
            id=st.one_of(st.none(), st.text(max_size=3)),
            prev_id=st.one_of(st.none(), st.text(max_size=3)),
            no_seq=st.booleans(),
        ),
        max_size=50,
    ),
    times=st.lists(st.floats(-1e9, 1e9), min_size=50),
)
def test_arbitrary_items_never_raise(items: list[Item], times: list[float]) -> None:
    """Whatever a publisher sends, and whatever (finite) times the caller passes, the
    sequencer only delivers, buffers or drops."""
    seq: Sequencer[Item] = Sequencer()
    out: list[Item] = []
    for item, now in zip(items, times, strict=False):
        out += seq.publish(item, now)
        out += seq.handle_timer(now)
    assert len(out) <= len(items)


# -- large inputs (no quadratic blowup) ---------------------------------------------------------


def test_large_in_order_stream_with_a_small_dedup_cache() -> None:
    seq: Sequencer[Item] = Sequencer(max_ids=1000, max_channels=100)
    delivered = 0
    for n in range(50_000):
        channel = f"c{n % 500}"
        prev = str(n - 500) if n >= 500 else None
        delivered += len(seq.publish(Item(channel, str(n), prev), n * 0.001))
    s = seq.stats
    assert delivered == 50_000
    assert s.cached_ids == 1000
    assert s.last_ids == 100
    assert s.pending == 0


def test_large_reversed_chains_flush_in_linear_time() -> None:
    seq: Sequencer[Item] = Sequencer(max_pending=100_000)
    out: list[Item] = []
    for c in range(300):
        channel = f"c{c}"
        out += seq.publish(Item(channel, "0"), 0)
        for n in range(100, 1, -1):
            out += seq.publish(Item(channel, str(n), str(n - 1)), 0)
    assert seq.stats.pending == 29_700
    for c in range(300):
        out += seq.publish(Item(f"c{c}", "1", "0"), 1)
    assert seq.stats.pending == 0
    by_channel: dict[str, list[str | None]] = {}
    for item in out:
        by_channel.setdefault(item.channel, []).append(item.id)
    assert len(by_channel) == 300
    assert all(ids == [str(n) for n in range(101)] for ids in by_channel.values())


def test_large_timeout_release_in_arrival_order() -> None:
    seq: Sequencer[Item] = Sequencer(max_pending=20_000, max_pending_per_channel=100)
    for c in range(200):
        seq.publish(Item(f"c{c}", "a"), 0)
    for n in range(20_000):
        seq.publish(Item(f"c{n % 200}", f"x{n}", f"gap{n}"), n * 1e-5)
    released = seq.handle_timer(100)
    assert [i.id for i in released] == [f"x{n}" for n in range(20_000)]
    assert seq.next_deadline() is None
