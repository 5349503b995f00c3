"""Held HTTP requests: the long-poll (ResponseHold) and stream (StreamHold) state machines."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore import LocalProtocolError
from gripcore._broker import Broker
from gripcore._holds import (
    EndStream,
    FetchNextLink,
    HoldAction,
    HoldState,
    PostGoneLink,
    Respond,
    ResponseHold,
    Retry,
    StreamHold,
    published_response,
)
from gripcore._hub import FilterFailed, Framing, Hub, Subscriber, Transport
from gripcore._instruct import Channel, Instruct, KeepAlive, Link
from gripcore._items import HttpResponseFormat, HttpStreamFormat, Item
from gripcore._speedups import encode_chunk

from .hypothesis_support import examples

H = list[tuple[bytes, bytes]]

TIMEOUT_HEADERS = ((b"Content-Type", b"text/plain"), (b"X-Keep", b"k"), (b"content-type", b"x/y"))
GONE = Link("http://example.com/gone?id=1")


def poll_instruct(**kw: Any) -> Instruct:
    fields: dict[str, Any] = {
        "hold": "response",
        "channels": (Channel("news"),),
        "timeout": 30,
        "headers": TIMEOUT_HEADERS,
        "body": b"timeout\n",
    }
    fields.update(kw)
    return Instruct(**fields)


def stream_instruct(**kw: Any) -> Instruct:
    fields: dict[str, Any] = {"hold": "stream", "channels": (Channel("a"),), "body": b"hello\n"}
    fields.update(kw)
    return Instruct(**fields)


def send(hub: Hub, channel: str, **fmt: Any) -> Item:
    item = Item(channel=channel, http_response=HttpResponseFormat(**fmt))
    hub.publish(item)
    return item


def stream_item(channel: str, content: bytes = b"", **kw: Any) -> Item:
    action = kw.pop("action", "send")
    return Item(channel=channel, http_stream=HttpStreamFormat(action, content), **kw)


def new_poll(
    instruct: Instruct | None = None, now: float = 100.0, **kw: Any
) -> tuple[Hub, Subscriber, ResponseHold]:
    hub = Hub()
    sub = Subscriber(Transport.RESPONSE)
    hold = ResponseHold(hub, sub, instruct or poll_instruct(), now, **kw)
    return hub, sub, hold


def new_stream(
    instruct: Instruct | None = None,
    now: float = 0.0,
    framing: Framing = Framing.CHUNKED,
    hub: Hub | None = None,
    **kw: Any,
) -> tuple[Hub, Subscriber, StreamHold]:
    hub = hub or Hub()
    sub = Subscriber(Transport.STREAM, framing=framing)
    hold = StreamHold(hub, sub, instruct or stream_instruct(), now, **kw)
    return hub, sub, hold


def deliver(hub: Hub, sub: Subscriber, hold: ResponseHold | StreamHold) -> list[HoldAction]:
    return hold.handle_events(sub.take_events())


# --- ResponseHold -----------------------------------------------------------------------------


def test_response_hold_needs_a_response_subscriber() -> None:
    with pytest.raises(LocalProtocolError) as info:
        ResponseHold(Hub(), Subscriber(Transport.STREAM), poll_instruct(), 0.0)
    assert str(info.value) == "a response hold needs a RESPONSE subscriber"


def test_subscribes_with_prefix_meta_and_implicit_channels() -> None:
    instruct = poll_instruct(
        channels=(Channel("news", prev_id="7", filters=("skip-self",)), Channel("b")),
        meta={"user": "alice"},
    )
    hub, sub, hold = new_poll(instruct, channel_prefix="p:", implicit_channels=("all", "b"))
    assert hold.state is HoldState.HOLDING and not hold.done
    assert list(sub.channels) == ["p:news", "p:b", "p:all"]
    assert sub.channels["p:news"].prev_id == "7"
    assert sub.channels["p:news"].filters == ("skip-self",)
    assert sub.channel_prefix == "p:"
    assert sub.meta == {"user": "alice"}
    assert hub.subscribers("p:all") == [sub]


def test_timeout_response_is_exactly_the_instruct_response() -> None:
    instruct = poll_instruct(status=202, reason=b"Accepted Later", gone_link=GONE)
    hub, _sub, hold = new_poll(instruct, now=100.0)
    assert hold.next_deadline() == 130.0
    assert hold.handle_timer(129.999) == []
    assert hold.handle_timer(130.0) == [
        Respond(202, b"Accepted Later", list(TIMEOUT_HEADERS), b"timeout\n"),
        PostGoneLink(GONE.url),
    ]
    assert hold.done and hold.state is HoldState.DONE
    assert hold.next_deadline() is None
    assert not hub.has_subscribers("news")
    assert hold.handle_timer(500.0) == []
    assert hold.client_gone() == []  # the gone link fired once


# (id, published fields, expected Respond)
PUBLISHED_VECTORS: list[tuple[str, dict[str, Any], Respond]] = [
    (
        "published header replaces every inherited one of that name; Grip-* dropped",
        {"headers": (("Content-Type", "application/json"), ("X-New", "1"), ("Grip-Channel", "x"),
                     ("grip-expose-headers", "X-Keep")), "body": b"{}"},
        Respond(200, b"OK", [(b"X-Keep", b"k"), (b"Content-Type", b"application/json"), (b"X-New", b"1")], b"{}"),
    ),
    ("default reason", {"code": 404, "body": b"gone"}, Respond(404, b"Not Found", list(TIMEOUT_HEADERS), b"gone")),
    ("unregistered code", {"code": 599, "body": b""}, Respond(599, b"Undefined Reason", list(TIMEOUT_HEADERS), b"")),
    ("explicit reason", {"code": 200, "reason": "Fine", "body": b"x"}, Respond(200, b"Fine", list(TIMEOUT_HEADERS), b"x")),
    ("repeated published header kept", {"headers": (("Set-Cookie", "a=1"), ("set-cookie", "b=2")), "body": b""},
     Respond(200, b"OK", [*TIMEOUT_HEADERS, (b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2")], b"")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "expected"),
    [v[1:] for v in PUBLISHED_VECTORS],
    ids=[v[0] for v in PUBLISHED_VECTORS],
)
def test_published_response(fields: dict[str, Any], expected: Respond) -> None:
    hub, sub, hold = new_poll(poll_instruct(gone_link=GONE))
    send(hub, "news", **fields)
    assert deliver(hub, sub, hold) == [expected, PostGoneLink(GONE.url)]
    assert hold.done
    assert hold.next_deadline() is None


# (id, hold body, patch, delivered body)
PATCH_VECTORS: list[tuple[str, bytes, list[dict[str, Any]], bytes]] = [
    ("patched, newline kept", b'{"n":1}\n', [{"op": "replace", "path": "/n", "value": 2}], b'{"n":2}\n'),
    ("patched, CRLF kept", b"[1]\r\n", [{"op": "add", "path": "/-", "value": 2}], b"[1,2]\r\n"),
    ("failed patch -> empty body", b'{"n":1}\n', [{"op": "remove", "path": "/x"}], b""),
    ("hold body not JSON -> empty body", b"timeout\n", [], b""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "patch", "expected"), [v[1:] for v in PATCH_VECTORS], ids=[v[0] for v in PATCH_VECTORS]
)
def test_body_patch_applies_to_the_hold_body(
    body: bytes, patch: list[dict[str, Any]], expected: bytes
) -> None:
    hub, sub, hold = new_poll(poll_instruct(body=body))
    send(hub, "news", body_patch=tuple(patch))
    [respond] = deliver(hub, sub, hold)
    assert respond == Respond(200, b"OK", list(TIMEOUT_HEADERS), expected)


def test_published_response_function_directly() -> None:
    fmt = HttpResponseFormat(code=201, headers=(("X-A", "1"),), body=b"ignored")
    assert published_response(
        500, [(b"x-a", b"0"), (b"B", b"2")], b"t", fmt, b"filtered"
    ) == Respond(201, b"Created", [(b"B", b"2"), (b"X-A", b"1")], b"filtered")


def _poll_with_prev_ids(**kw: Any) -> tuple[Hub, Subscriber, ResponseHold]:
    instruct = poll_instruct(
        channels=(Channel("news", prev_id="7"), Channel("plain"), Channel("x", prev_id='a"b')),
        gone_link=GONE,
    )
    return new_poll(instruct, channel_prefix="p:", **kw)


RETRY_HEADERS = [(b"Grip-Last", b'news; last-id="7"'), (b"Grip-Last", b'x; last-id="a\\"b"')]


def test_hint_retries_with_grip_last() -> None:
    hub, sub, hold = _poll_with_prev_ids()
    hub.publish(Item(channel="p:plain", http_response=HttpResponseFormat(action="hint")))
    assert deliver(hub, sub, hold) == [Retry(RETRY_HEADERS)]
    assert hold.state is HoldState.WAITING_ORIGIN
    assert list(hub.channels()) == []  # left every channel while the origin is asked
    assert hold.next_deadline() is None
    assert hold.handle_timer(10_000.0) == []


def test_gap_retries_with_the_expected_prev_id() -> None:
    hub, sub, hold = _poll_with_prev_ids()
    send(hub, "p:news", body=b"x")  # an item without prev-id cannot show a gap: delivered
    [respond, gone] = deliver(hub, sub, hold)
    assert isinstance(respond, Respond) and gone == PostGoneLink(GONE.url)

    hub, sub, hold = _poll_with_prev_ids()
    hub.publish(
        Item(channel="p:news", id="9", prev_id="8", http_response=HttpResponseFormat(body=b"x"))
    )
    assert deliver(hub, sub, hold) == [Retry(RETRY_HEADERS)]


def test_retry_answered_with_a_new_hold() -> None:
    hub, sub, hold = _poll_with_prev_ids(implicit_channels=("all",))
    hub.publish(Item(channel="p:news", http_response=HttpResponseFormat(action="hint")))
    deliver(hub, sub, hold)
    assert sub.channels == {}
    again = poll_instruct(
        channels=(Channel("news", prev_id="9"),), timeout=20, body=b"second\n", meta={"k": "v"}
    )
    assert hold.retry_response(again, now=500.0) == []
    assert hold.state is HoldState.HOLDING
    assert list(sub.channels) == ["p:news", "p:all"]  # re-subscribed, implicit channel kept
    assert sub.channels["p:news"].prev_id == "9"
    assert sub.meta == {"k": "v"}
    assert hold.next_deadline() == 520.0
    assert hold.handle_timer(520.0) == [
        Respond(200, b"OK", list(TIMEOUT_HEADERS), b"second\n"),
        PostGoneLink(GONE.url),
    ]


def test_retry_answered_with_a_final_response() -> None:
    hub, sub, hold = _poll_with_prev_ids()
    hub.publish(Item(channel="p:news", http_response=HttpResponseFormat(action="hint")))
    deliver(hub, sub, hold)
    final = Instruct(status=200, headers=((b"X", b"1"),), body=b"missed items")
    assert hold.retry_response(final, now=1.0) == [
        Respond(200, b"OK", [(b"X", b"1")], b"missed items"),
        PostGoneLink(GONE.url),
    ]
    assert hold.done


def test_retry_answered_with_a_plain_response_the_adapter_relays() -> None:
    hub, sub, hold = new_poll()
    hub.publish(Item(channel="news", http_response=HttpResponseFormat(action="hint")))
    assert deliver(hub, sub, hold) == [Retry([])]
    assert hold.retry_response(None, now=1.0) == []
    assert hold.done


def test_retry_response_in_the_wrong_state() -> None:
    _hub, _sub, hold = new_poll()
    with pytest.raises(LocalProtocolError) as info:
        hold.retry_response(None, now=1.0)
    assert str(info.value) == "ResponseHold: 'origin-final' while holding"
    with pytest.raises(LocalProtocolError):
        hold.retry_response(poll_instruct(), now=1.0)
    assert hold.state is HoldState.HOLDING


def test_retry_answer_after_the_client_left_is_ignored() -> None:
    hub, sub, hold = new_poll(poll_instruct(gone_link=GONE))
    hub.publish(Item(channel="news", http_response=HttpResponseFormat(action="hint")))
    deliver(hub, sub, hold)
    assert hold.client_gone() == [PostGoneLink(GONE.url)]
    assert hold.retry_response(poll_instruct(), now=1.0) == []
    assert hold.retry_response(None, now=1.0) == []
    assert not hub.has_subscribers("news")


def test_client_gone_unsubscribes_and_fires_the_gone_link_once() -> None:
    hub, _sub, hold = new_poll(poll_instruct(gone_link=GONE), implicit_channels=("all",))
    assert hold.client_gone() == [PostGoneLink(GONE.url)]
    assert list(hub.channels()) == []
    assert hold.client_gone() == []
    assert hold.handle_events([FilterFailed("news", "x")]) == []


def test_only_the_first_answer_counts() -> None:
    hub, sub, hold = new_poll()
    send(hub, "news", body=b"first")  # the subscriber leaves the channel: one event only
    events = sub.take_events()
    events += [events[0]]
    assert deliver(hub, sub, hold) == []
    assert hold.handle_events(events) == [Respond(200, b"OK", list(TIMEOUT_HEADERS), b"first")]


def test_filter_failure_does_not_end_a_long_poll() -> None:
    hub, sub, hold = new_poll(poll_instruct(channels=(Channel("news", filters=("var-subst",)),)))
    send(hub, "news", body=b"%(missing)s")
    [event] = sub.take_events()
    assert isinstance(event, FilterFailed)
    assert hold.handle_events([event]) == []
    assert hold.state is HoldState.HOLDING


def test_close_and_refresh_are_ignored_by_long_polls() -> None:
    hub, sub, hold = new_poll()
    hub.publish(Item(channel="news", http_response=HttpResponseFormat(action="close")))
    hub.publish(Item(channel="news", http_response=HttpResponseFormat(action="refresh")))
    assert sub.take_events() == []
    assert hold.state is HoldState.HOLDING


# --- StreamHold -------------------------------------------------------------------------------


def test_stream_hold_needs_a_stream_subscriber() -> None:
    with pytest.raises(LocalProtocolError) as info:
        StreamHold(Hub(), Subscriber(Transport.RESPONSE), stream_instruct(), 0.0)
    assert str(info.value) == "a stream hold needs a STREAM subscriber"


@pytest.mark.parametrize(
    ("framing", "initial", "published", "end"),
    [
        (Framing.CHUNKED, b"6\r\nhello\n\r\n", b"3\r\nabc\r\n", b"0\r\n\r\n"),
        (Framing.RAW, b"hello\n", b"abc", b""),
    ],
)
def test_stream_framing(framing: Framing, initial: bytes, published: bytes, end: bytes) -> None:
    hub, sub, hold = new_stream(framing=framing)
    assert sub.take_output() == initial
    hub.publish(stream_item("a", b"abc"))
    assert sub.take_output() == published
    assert hold.end_bytes() == end
    assert hold.take_actions() == []


def test_empty_initial_body_writes_nothing() -> None:
    _hub, sub, hold = new_stream(stream_instruct(body=b""))
    assert sub.outbuf == bytearray()
    assert hold.next_deadline() is None


def test_idle_keep_alive_restarts_when_data_is_written() -> None:
    ka = KeepAlive(b":\n", timeout=10, mode="idle")
    _hub, sub, hold = new_stream(stream_instruct(keep_alive=ka))
    sub.take_output()
    assert hold.next_deadline() == 10.0
    hold.wrote(5.0)
    assert hold.next_deadline() == 15.0
    assert hold.handle_timer(14.9) == []
    assert sub.outbuf == bytearray()
    assert hold.handle_timer(15.0) == []
    assert sub.take_output() == b"2\r\n:\n\r\n"
    assert hold.next_deadline() == 25.0


def test_interval_keep_alive_ignores_writes() -> None:
    ka = KeepAlive(b"ping\n", timeout=10, mode="interval")
    _hub, sub, hold = new_stream(stream_instruct(keep_alive=ka), framing=Framing.RAW)
    sub.take_output()
    hold.wrote(5.0)
    assert hold.next_deadline() == 10.0
    hold.handle_timer(10.0)
    hold.handle_timer(20.5)
    assert sub.take_output() == b"ping\nping\n"
    assert hold.next_deadline() == 30.5


def test_next_link_timer_fetches_with_grip_last() -> None:
    instruct = stream_instruct(
        channels=(Channel("a", prev_id="1"), Channel("b")),
        next_link=Link("http://example.com/next?after=1", timeout=60),
        keep_alive=KeepAlive(b"\n", timeout=100, mode="interval"),
    )
    hub, sub, hold = new_stream(instruct, channel_prefix="p:")
    assert hold.next_deadline() == 60.0
    hub.publish(stream_item("p:a", b"two", id="2", prev_id="1"))
    assert sub.channels["p:a"].prev_id == "2"
    assert hold.handle_timer(59.0) == []
    fetch = FetchNextLink("http://example.com/next?after=1", [(b"Grip-Last", b'a; last-id="2"')])
    assert hold.handle_timer(60.0) == [fetch]
    assert hold.state is HoldState.WAITING_ORIGIN
    assert hold.next_deadline() == 100.0  # only the keep-alive while the fetch is in flight
    assert hold.handle_timer(100.0) == []
    assert sub.take_output().endswith(b"1\r\n\n\r\n")


def test_next_link_answer_appends_body_and_switches_channels() -> None:
    instruct = stream_instruct(next_link=Link("http://example.com/n1", timeout=60))
    hub, sub, hold = new_stream(instruct, implicit_channels=("all",))
    sub.take_output()
    hold.handle_timer(60.0)
    answer = stream_instruct(
        channels=(Channel("b", prev_id="5"),),
        body=b"more",
        meta={"user": "u"},
        next_link=Link("http://example.com/n2", timeout=30),
        keep_alive=KeepAlive(b"k", timeout=7, mode="idle"),
    )
    assert hold.next_link_response(answer, now=61.0) == []
    assert sub.take_output() == b"4\r\nmore\r\n"
    assert set(sub.channels) == {"b", "all"}
    assert not hub.has_subscribers("a")
    assert sub.meta == {"user": "u"}
    assert hold.state is HoldState.HOLDING
    assert hold.next_deadline() == 68.0  # keep-alive 61 + 7, next link at 91
    assert hold.handle_timer(91.0) == [
        FetchNextLink("http://example.com/n2", [(b"Grip-Last", b'b; last-id="5"')])
    ]


def test_next_link_answer_without_hold_fetches_again_or_ends() -> None:
    instruct = stream_instruct(next_link=Link("http://example.com/n1", timeout=60), gone_link=GONE)
    hub, sub, hold = new_stream(instruct, framing=Framing.RAW)
    hold.handle_timer(60.0)
    chained = Instruct(body=b"page2", next_link=Link("http://example.com/n2", timeout=120))
    assert hold.next_link_response(chained, now=61.0) == [
        FetchNextLink("http://example.com/n2", [])
    ]
    assert list(sub.channels) == ["a"]  # a non-hold answer keeps the subscriptions
    assert hold.next_link_response(Instruct(body=b"last"), now=62.0) == [
        EndStream(None),
        PostGoneLink(GONE.url),
    ]
    assert sub.take_output() == b"hello\npage2last"
    assert hold.done and not hub.has_subscribers("a")
    assert hold.next_link_response(Instruct(body=b"late"), now=63.0) == []


@pytest.mark.parametrize("debug", [False, True])
def test_next_link_failure_ends_the_stream(debug: bool) -> None:
    instruct = stream_instruct(next_link=Link("http://example.com/n", timeout=5))
    hub, sub, hold = new_stream(instruct, debug=debug)
    sub.take_output()
    hold.handle_timer(5.0)
    assert hold.next_link_response(None, now=6.0) == [EndStream("Failed to retrieve next link.")]
    error = b"\n\nFailed to retrieve next link.\n"
    assert sub.take_output() == (b"%x\r\n%b\r\n" % (len(error), error) if debug else b"")
    assert not hub.has_subscribers("a")


def test_next_link_returning_a_response_hold_is_an_error() -> None:
    _hub, _sub, hold = new_stream(
        stream_instruct(next_link=Link("http://example.com/n", timeout=5))
    )
    hold.handle_timer(5.0)
    assert hold.next_link_response(poll_instruct(), now=6.0) == [
        EndStream("Next link returned non-stream hold.")
    ]


def test_initial_non_hold_with_next_link_fetches_at_once() -> None:
    instruct = Instruct(body=b"first page", next_link=Link("http://example.com/n", timeout=120))
    _hub, _sub, hold = new_stream(instruct)
    assert hold.take_actions() == [FetchNextLink("http://example.com/n", [])]
    assert hold.take_actions() == []
    assert hold.state is HoldState.WAITING_ORIGIN


def test_next_link_without_timeout_has_no_timer() -> None:
    hub, sub, hold = new_stream(stream_instruct(next_link=Link("http://example.com/n", timeout=0)))
    assert hold.next_deadline() is None
    hub.publish(Item(channel="a", http_stream=HttpStreamFormat(action="hint")))
    assert deliver(hub, sub, hold) == [FetchNextLink("http://example.com/n", [])]


def test_prev_id_without_next_link_ends_the_stream() -> None:
    instruct = stream_instruct(channels=(Channel("a"), Channel("feed", prev_id="3")))
    hub, sub, hold = new_stream(instruct, debug=True)
    assert hold.take_actions() == [
        EndStream("channel 'feed' specifies prev-id, but no next link found")
    ]
    assert hold.done
    assert not hub.has_subscribers("feed")
    assert sub.take_output().endswith(
        b"\n\nchannel 'feed' specifies prev-id, but no next link found\n\r\n"
    )


def test_close_action_ends_the_stream() -> None:
    hub, sub, hold = new_stream(stream_instruct(gone_link=GONE))
    hub.publish(stream_item("a", b"bye"))
    hub.publish(Item(channel="a", http_stream=HttpStreamFormat(action="close")))
    events = sub.take_events()
    assert hold.handle_events(events * 2) == [EndStream(None), PostGoneLink(GONE.url)]
    assert sub.take_output() + hold.end_bytes() == b"6\r\nhello\n\r\n3\r\nbye\r\n0\r\n\r\n"
    assert hold.done and hold.next_deadline() is None
    assert hold.handle_timer(1e9) == []
    assert hold.client_gone() == []


def test_buffer_overflow_ends_the_stream() -> None:
    hub, sub, hold = new_stream(hub=Hub(max_output_buffer=20))
    hub.publish(stream_item("a", b"x" * 30))
    assert deliver(hub, sub, hold) == [EndStream("slow consumer: output buffer full", abort=True)]
    assert sub.take_output() == b"6\r\nhello\n\r\n"


def test_filter_failure_ends_the_stream_only_in_debug_mode() -> None:
    instruct = stream_instruct(channels=(Channel("a", filters=("var-subst",)),), body=b"")
    hub, sub, hold = new_stream(instruct)
    hub.publish(stream_item("a", b"%(nope)s"))
    events = sub.take_events()
    assert hold.handle_events(events) == []
    hub, sub, hold = new_stream(instruct, debug=True)
    hub.publish(stream_item("a", b"%(nope)s"))
    [end] = deliver(hub, sub, hold)
    assert isinstance(end, EndStream) and end.error is not None
    assert sub.take_output() == b"%x\r\n\n\n%b\n\r\n" % (len(end.error) + 3, end.error.encode())


def test_hint_and_gap_fetch_the_next_link() -> None:
    instruct = stream_instruct(
        channels=(Channel("a", prev_id="1"),), next_link=Link("http://example.com/n", timeout=60)
    )
    hub, sub, hold = new_stream(instruct)
    hub.publish(stream_item("a", b"late", id="5", prev_id="4"))
    assert deliver(hub, sub, hold) == [
        FetchNextLink("http://example.com/n", [(b"Grip-Last", b'a; last-id="1"')])
    ]
    # while the fetch is in flight, further hints do nothing
    hub.publish(Item(channel="a", http_stream=HttpStreamFormat(action="hint")))
    assert deliver(hub, sub, hold) == []


def test_hint_without_next_link_does_nothing() -> None:
    hub, sub, hold = new_stream()
    hub.publish(Item(channel="a", http_stream=HttpStreamFormat(action="hint")))
    assert deliver(hub, sub, hold) == []
    assert hold.state is HoldState.HOLDING


def test_next_link_response_in_the_wrong_state() -> None:
    _hub, _sub, hold = new_stream(
        stream_instruct(next_link=Link("http://example.com/n", timeout=9))
    )
    with pytest.raises(LocalProtocolError) as info:
        hold.next_link_response(None, now=1.0)
    assert str(info.value) == "StreamHold: 'origin-answer' while holding"


def test_wrote_after_the_end_changes_nothing() -> None:
    ka = KeepAlive(b":\n", timeout=10, mode="idle")
    _hub, _sub, hold = new_stream(stream_instruct(keep_alive=ka))
    assert hold.client_gone() == []
    hold.wrote(5.0)
    assert hold.next_deadline() is None


def test_client_gone_while_fetching() -> None:
    instruct = stream_instruct(next_link=Link("http://example.com/n", timeout=5), gone_link=GONE)
    hub, _sub, hold = new_stream(instruct)
    hold.handle_timer(5.0)
    assert hold.client_gone() == [PostGoneLink(GONE.url)]
    assert hold.next_link_response(stream_instruct(), now=6.0) == []
    assert not hub.has_subscribers("a")


# --- property: any sequence of inputs keeps the machine consistent ------------------------------

inputs = st.lists(
    st.sampled_from(["timer", "publish", "hint", "close", "gone", "answer", "fail", "wrote"]),
    max_size=12,
)


@settings(max_examples=examples(60))
@given(inputs)
def test_stream_hold_sweep(steps: list[str]) -> None:
    instruct = stream_instruct(
        next_link=Link("http://example.com/n", timeout=10),
        keep_alive=KeepAlive(b"k", timeout=3, mode="idle"),
        gone_link=GONE,
    )
    hub, sub, hold = new_stream(instruct)
    now = 0.0
    gone_fired = 0
    for step in steps:
        now += 4.0
        actions: list[HoldAction] = []
        try:
            if step == "timer":
                actions = hold.handle_timer(now)
            elif step == "publish":
                hub.publish(stream_item("a", b"x"))
            elif step == "hint":
                hub.publish(Item(channel="a", http_stream=HttpStreamFormat(action="hint")))
                actions = deliver(hub, sub, hold)
            elif step == "close":
                hub.publish(Item(channel="a", http_stream=HttpStreamFormat(action="close")))
                actions = deliver(hub, sub, hold)
            elif step == "gone":
                actions = hold.client_gone()
            elif step in ("answer", "fail"):
                answer = dataclasses.replace(instruct, body=b"") if step == "answer" else None
                actions = hold.next_link_response(answer, now)
            else:
                hold.wrote(now)
        except LocalProtocolError:
            assert step in ("answer", "fail") and hold.state is HoldState.HOLDING
        gone_fired += actions.count(PostGoneLink(GONE.url))
        if hold.done:
            assert hold.next_deadline() is None
            assert sub.channels == {}
        else:
            assert hold.next_deadline() is not None  # the keep-alive always needs a timer
    assert gone_fired == (1 if hold.done else 0)


# --- build-id on the stream's own bodies (Pushpin's ProxyContent filters) ------------------

ES_CHANNELS = (Channel("events-x", prev_id="3", filters=("build-id", "skip-users")),)


def test_initial_and_next_link_bodies_go_through_build_id() -> None:
    """django-eventstream escapes `%` in the events of its own bodies for build-id: `%%` must
    reach the client as `%`. A next-link answer is filtered with the filters in force when it
    was asked for."""
    instruct = stream_instruct(
        hold=None,
        channels=ES_CHANNELS,
        body=b"data: 100%% %%(user)s %(lit)I\n\n",
        meta={"id_format": "x:%(events-x)s"},
        next_link=Link("http://example.com/n1"),
    )
    _hub, sub, hold = new_stream(instruct)
    assert sub.take_output() == encode_chunk(b"data: 100% %(user)s lit\n\n")
    assert hold.take_actions() == [FetchNextLink("http://example.com/n1", [])]
    answer = stream_instruct(channels=(Channel("events-x", prev_id="4"),), body=b"50%%")
    assert hold.next_link_response(answer, now=1.0) == [
        EndStream("channel 'events-x' specifies prev-id, but no next link found")
    ]
    assert sub.take_output() == b"3\r\n50%\r\n"


def test_a_body_build_id_cannot_render_ends_the_stream() -> None:
    """No prev-ids reach the body filter (as in Pushpin), so a bare `%I` is an error."""
    instruct = stream_instruct(channels=ES_CHANNELS, body=b"id: %I\n", meta={"id_format": "x"})
    _hub, sub, hold = new_stream(instruct, debug=True)
    message = "filter error: No ID specified and no default ID in context at position 5"
    assert hold.take_actions() == [EndStream(message)]
    assert hold.done and not sub.channels
    assert sub.take_output() == encode_chunk(f"\n\n{message}\n".encode())


def test_a_next_link_body_build_id_cannot_render_ends_the_stream() -> None:
    instruct = stream_instruct(
        channels=ES_CHANNELS,
        meta={"id_format": "x"},
        next_link=Link("http://example.com/n", timeout=60),
    )
    _hub, _sub, hold = new_stream(instruct)
    hold.handle_timer(60.0)
    assert hold.state is HoldState.WAITING_ORIGIN
    answer = stream_instruct(body=b"%I")
    message = "filter error: No ID specified and no default ID in context at position 1"
    assert hold.next_link_response(answer, now=61.0) == [EndStream(message)]
    assert hold.done


def test_items_published_during_a_next_link_request_follow_its_answer() -> None:
    """Pushpin queues them: those the answer covered are dropped (no duplicate), those after
    it are delivered after its body (no loss, no wait for the next gap)."""
    instruct = stream_instruct(
        channels=(Channel("a", prev_id="1"),), next_link=Link("http://example.com/n")
    )
    hub, sub, hold = new_stream(instruct)
    sub.take_output()
    hub.publish(stream_item("a", b"late", id="3", prev_id="2"))  # a gap: recover
    [fetch] = hold.handle_events(sub.take_events())
    assert isinstance(fetch, FetchNextLink)
    for n in (2, 3, 4):
        hub.publish(stream_item("a", b"<%d>" % n, id=str(n), prev_id=str(n - 1)))
    assert sub.outbuf == bytearray() and sub.events == []
    answer = stream_instruct(
        channels=(Channel("a", prev_id="3"),),
        body=b"<2><3>",
        next_link=Link("http://example.com/n"),
    )
    assert hold.next_link_response(answer, now=1.0) == []
    assert sub.take_output() == encode_chunk(b"<2><3>") + encode_chunk(b"<4>")
    assert sub.channels["a"].prev_id == "4"


def test_a_first_hold_behind_the_last_delivered_id_recovers_at_once() -> None:
    """An item went out on the channel before this hold subscribed: its prev-id is stale, so
    the next link is fetched at once (and the stale last id forgotten), as Pushpin does."""
    broker = Broker()
    other = Subscriber(Transport.STREAM)
    broker.hub.subscribe(other, "p:a")
    item = Item(channel="p:a", id="8", prev_id="7", http_stream=HttpStreamFormat(content=b"x"))
    broker.publish([item], now=0.0)
    assert broker.sequencer.last_id("p:a") == "8"
    link = Link("http://example.com/n")
    stale = stream_instruct(channels=(Channel("a", prev_id="7"), Channel("b", prev_id="1")))
    stale = dataclasses.replace(stale, next_link=link)
    _, _sub, hold = new_stream(
        stale, hub=broker.hub, channel_prefix="p:", last_ids=broker.sequencer
    )
    assert hold.take_actions() == [
        FetchNextLink(
            "http://example.com/n",
            [(b"Grip-Last", b'a; last-id="7"'), (b"Grip-Last", b'b; last-id="1"')],
        )
    ]
    assert broker.sequencer.last_id("p:a") is None
    broker.publish([dataclasses.replace(item, id="9", prev_id="8")], now=0.0)
    current = dataclasses.replace(stale, channels=(Channel("a", prev_id="9"),))
    _, _, fresh = new_stream(
        current, hub=broker.hub, channel_prefix="p:", last_ids=broker.sequencer
    )
    assert fresh.take_actions() == []  # up to date: held as it is


def test_a_long_poll_behind_the_last_delivered_id_is_retried_at_once() -> None:
    broker = Broker()
    other = Subscriber(Transport.STREAM)
    broker.hub.subscribe(other, "news")
    item = Item(channel="news", id="8", prev_id="7", http_stream=HttpStreamFormat(content=b"x"))
    broker.publish([item], now=0.0)
    sub = Subscriber(Transport.RESPONSE)
    stale = poll_instruct(channels=(Channel("news", prev_id="7"),))
    hold = ResponseHold(broker.hub, sub, stale, 0.0, last_ids=broker.sequencer)
    assert hold.take_actions() == [Retry([(b"Grip-Last", b'news; last-id="7"')])]
    assert hold.state is HoldState.WAITING_ORIGIN and not sub.channels
    assert hold.take_actions() == []
    broker.publish([dataclasses.replace(item, id="9", prev_id="8")], now=0.0)
    current = poll_instruct(channels=(Channel("news", prev_id="9"),))
    fresh = ResponseHold(
        broker.hub, Subscriber(Transport.RESPONSE), current, 0.0, last_ids=broker.sequencer
    )
    assert fresh.take_actions() == [] and fresh.state is HoldState.HOLDING
