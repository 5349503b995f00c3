"""The history ring, the missed-items rule, the last-seen id of a request, and the hub's pause
and single-subscriber delivery that resume is built on."""

from __future__ import annotations

import pytest

from gripcore._errors import LocalProtocolError
from gripcore._history import MAX_HISTORY, MAX_LAST_EVENT_ID, History, missed_after, resume_id
from gripcore._hub import Framing, Hub, Subscriber, Transport
from gripcore._items import HttpStreamFormat, Item
from gripcore._publishapi import engine_unavailable_response


def item(channel: str, content: str, id: str | None = None) -> Item:
    return Item(channel=channel, id=id, http_stream=HttpStreamFormat(content=content.encode()))


def test_missed_after_picks_what_follows_the_newest_match() -> None:
    entries = [("1", "a"), (None, "b"), ("2", "c"), ("1", "d"), ("3", "e")]
    assert missed_after(entries, "1") == ["e"]
    assert missed_after(entries, "2") == ["d", "e"]
    assert missed_after(entries, "3") == []
    assert missed_after(entries, "9") is None
    assert missed_after([], "1") is None


def test_history_keeps_the_last_n_per_channel() -> None:
    history = History(2)
    assert history.size == 2
    for n in range(4):
        history.record(item("a", str(n), id=str(n)))
    history.record(item("b", "x"))
    assert [i.id for i in history.items("a")] == ["2", "3"]
    assert history.missed("a", "2") == [item("a", "3", id="3")]
    assert history.missed("a", "1") is None  # fell out of the ring
    assert history.missed("nope", "1") is None
    assert history.items("nope") == []


def test_history_evicts_the_least_recently_published_channel() -> None:
    history = History(1, max_channels=2)
    history.record(item("a", "1", id="1"))
    history.record(item("b", "1", id="1"))
    history.record(item("a", "2", id="2"))  # a is now the most recent
    history.record(item("c", "1", id="1"))
    assert history.items("b") == []
    assert history.missed("a", "2") == []


@pytest.mark.parametrize(
    ("size", "max_channels"), [(0, 1), (MAX_HISTORY + 1, 1), (True, 1), (1, 0), (1, False)]
)
def test_history_limits(size: int, max_channels: int) -> None:
    with pytest.raises(LocalProtocolError):
        History(size, max_channels=max_channels)


@pytest.mark.parametrize(
    ("target", "headers", "expected"),
    [
        (b"/s", [(b"Last-Event-ID", b" 42 ")], "42"),
        (b"/s?last-event-id=7&x=1", [], "7"),
        (b"/s?last-event-id=a%20b", [(b"last-event-id", b"h")], "h"),  # the header wins
        (b"/s?other=1", [(b"Accept", b"*/*")], None),
        (b"/s", [], None),
        (b"/s", [(b"Last-Event-ID", b"")], None),
        (b"/s", [(b"Last-Event-ID", b"\xff")], None),
        (b"/s", [(b"Last-Event-ID", b"x" * (MAX_LAST_EVENT_ID + 1))], None),
        (b"/s?last-event-id=%C3%A9", [], "\u00e9"),
    ],
)
def test_resume_id(target: bytes, headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert resume_id(target, headers) == expected


def test_paused_subscriber_is_skipped_then_served_again() -> None:
    hub = Hub()
    paused = Subscriber(Transport.STREAM, framing=Framing.RAW)
    other = Subscriber(Transport.STREAM, framing=Framing.RAW)
    hub.subscribe(paused, "c")
    hub.subscribe(other, "c")
    hub.pause(paused, "c")
    assert not paused.channels["c"].is_fast
    hub.publish(item("c", "live"))
    assert paused.take_output() == b""
    assert other.take_output() == b"live"
    # replay reaches a paused subscriber; resubscribing keeps the pause
    assert hub.deliver_to(paused, "c", item("c", "replayed")).delivered == 1
    hub.subscribe(paused, "c", filters=())
    assert paused.channels["c"].paused
    hub.pause(paused, "c", paused=False)
    assert paused.channels["c"].is_fast
    hub.publish(item("c", "!"))
    assert paused.take_output() == b"replayed!"
    assert hub.take_channel_changes()[0].subscribed  # the pause itself changed no channel


def test_pause_and_deliver_to_an_unsubscribed_channel() -> None:
    hub = Hub()
    sub = Subscriber(Transport.STREAM)
    with pytest.raises(LocalProtocolError, match="not subscribed"):
        hub.pause(sub, "c")
    assert hub.deliver_to(sub, "c", item("c", "x")).delivered == 0


def test_engine_unavailable_response_in_both_formats() -> None:
    text = engine_unavailable_response([], "Redis at redis://h:1/0: refused")
    assert text.status == 503
    assert (b"Retry-After", b"1") in text.headers
    assert text.body == (
        b"Service Unavailable: the engine cannot take items now (Redis at redis://h:1/0: "
        b"refused); they may not have been published, retry later\n"
    )
    as_json = engine_unavailable_response([(b"Accept", b"application/json")], "down")
    assert as_json.headers[0] == (b"Content-Type", b"application/json")
    assert as_json.body.startswith(b'{"message": "Service Unavailable: the engine')
