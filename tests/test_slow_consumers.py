"""Slow consumers: the hub's `drop-oldest` overflow policy, its fallbacks, and its events.

Every test runs the policy on both delivery paths: a *fast* subscriber (no filters, no prev-id,
fed by the compiled `fanout`) and a *slow* one (a prev-id subscription, fed one by one).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder, Opcode

from gripcore import LocalProtocolError
from gripcore._holds import StreamHold
from gripcore._hub import (
    OVERFLOW_POLICIES,
    BufferOverflow,
    Framing,
    Hub,
    MessagesDropped,
    Subscriber,
    Transport,
)
from gripcore._instruct import Channel, Instruct
from gripcore._items import HttpStreamFormat, Item, WsMessageFormat
from gripcore._speedups import encode_chunk, encode_ws_frame, ws_frame_header

from .hypothesis_support import examples

PATHS = ["fast", "slow"]


def subscribe(hub: Hub, framing: Framing, path: str, channel: str = "c") -> Subscriber:
    transport = Transport.WEBSOCKET if framing is Framing.WEBSOCKET else Transport.STREAM
    sub = Subscriber(transport, framing=framing)
    # a prev-id subscription takes the slow path; items without a prev-id are still delivered
    hub.subscribe(sub, channel, prev_id=None if path == "fast" else "0")
    return sub


def item(channel: str, content: bytes) -> Item:
    return Item(
        channel=channel,
        http_stream=HttpStreamFormat(content=content),
        ws_message=WsMessageFormat(content=content),
    )


def frame(framing: Framing, content: bytes) -> bytes:
    """How the hub frames one published item for `framing`."""
    if framing is Framing.WEBSOCKET:
        return encode_ws_frame(0x1, content)
    return encode_chunk(content) if framing is Framing.CHUNKED else content


def fragments(opcode: int, *parts: bytes) -> bytes:
    """One WebSocket message as several frames: FIN only on the last, continuations after."""
    out = bytearray()
    for i, part in enumerate(parts):
        header = bytearray(ws_frame_header(opcode if i == 0 else 0, len(part)))
        if i < len(parts) - 1:
            header[0] &= 0x7F
        out += header + part
    return bytes(out)


def decode_ws(data: bytes) -> list[tuple[Opcode, bytes]]:
    """Whole messages in `data`, decoded as a client would; fails on a partial message."""
    decoder = FrameDecoder(client=True)
    decoder.receive_bytes(data)
    messages: list[tuple[Opcode, bytes]] = []
    opcode, payload = None, bytearray()
    while (f := decoder.process_buffer()) is not None:
        opcode = f.opcode if f.opcode is not Opcode.CONTINUATION else opcode
        assert isinstance(f.payload, bytes)
        payload += f.payload
        if f.message_finished:
            assert opcode is not None
            messages.append((opcode, bytes(payload)))
            opcode, payload = None, bytearray()
    assert opcode is None and not payload, "a message was cut"
    return messages


def decode_chunks(data: bytes) -> list[bytes]:
    """Whole chunks in `data`; fails on a partial chunk."""
    chunks, pos = [], 0
    while pos < len(data):
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end], 16)
        start = line_end + 2
        assert data[start + size : start + size + 2] == b"\r\n", "a chunk was cut"
        chunks.append(data[start : start + size])
        pos = start + size + 2
    return chunks


# --- configuration and the event ------------------------------------------------------------


def test_policies_and_default() -> None:
    assert OVERFLOW_POLICIES == ("close", "drop-oldest")
    assert Hub().overflow_policy == "close"
    with pytest.raises(LocalProtocolError, match="unknown overflow policy 'newest'"):
        Hub(overflow_policy="newest")  # type: ignore[arg-type]


@pytest.mark.parametrize(("count", "size"), [(0, 5), (1, 0), (-1, -1)])
def test_messages_dropped_is_validated(count: int, size: int) -> None:
    with pytest.raises(LocalProtocolError, match="MessagesDropped needs count and bytes >= 1"):
        MessagesDropped("c", count, size)


# --- exact buffers after drops ----------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_chunked_drops_oldest_whole_chunks(path: str) -> None:
    hub = Hub(max_output_buffer=20, overflow_policy="drop-oldest")
    sub = subscribe(hub, Framing.CHUNKED, path)
    hub.publish(item("c", b"aaaa"))  # 9 bytes framed
    hub.publish(item("c", b"bbbb"))  # 18
    result = hub.publish(item("c", b"cc"))  # 7 more: 25 > 20, the first chunk goes
    assert result.delivered == 1
    assert result.woken == [sub]  # its first event
    assert bytes(sub.outbuf) == b"4\r\nbbbb\r\n2\r\ncc\r\n"
    assert sub.take_events() == [MessagesDropped("c", 1, 9)]
    assert (hub.dropped_messages, hub.dropped_bytes) == (1, 9)
    result = hub.publish(item("c", b"0123456789a"))  # 16 framed: both waiting chunks go
    assert result.delivered == 1 and result.woken == [sub]
    assert bytes(sub.outbuf) == b"b\r\n0123456789a\r\n"
    assert sub.take_events() == [MessagesDropped("c", 2, 16)]
    assert (hub.dropped_messages, hub.dropped_bytes) == (3, 25)


@pytest.mark.parametrize("path", PATHS)
def test_websocket_drops_oldest_whole_messages(path: str) -> None:
    """7-, 16- and 64-bit lengths, a fragmented message, a ping: each dropped whole."""
    big, huge = b"m" * 300, b"h" * 70_000
    hub = Hub(max_output_buffer=71_000, overflow_policy="drop-oldest")
    sub = subscribe(hub, Framing.WEBSOCKET, path)
    sub.outbuf += fragments(0x2, b"frag1", b"frag2", b"frag3")  # written by the session
    sub.outbuf += encode_ws_frame(0x9, b"ping")
    hub.publish(item("c", b"small"))
    hub.publish(item("c", big))
    hub.publish(item("c", huge))
    assert decode_ws(bytes(sub.outbuf))[-1] == (Opcode.TEXT, huge)
    # waiting: 21 (fragments) + 6 (ping) + 7 (small) + 304 (big) + 70,010 (huge) = 70,348; a
    # 904-byte frame is 252 over the limit: the first four messages go (338), the huge one stays
    assert len(sub.outbuf) == 70_348
    result = hub.publish(item("c", b"n" * 900))
    assert result.delivered == 1
    assert decode_ws(bytes(sub.outbuf)) == [(Opcode.TEXT, huge), (Opcode.TEXT, b"n" * 900)]
    assert sub.take_events() == [MessagesDropped("c", 4, 338)]
    # the 64-bit-length message is dropped whole too
    result = hub.publish(item("c", b"x" * 1000))
    assert decode_ws(bytes(sub.outbuf)) == [(Opcode.TEXT, b"n" * 900), (Opcode.TEXT, b"x" * 1000)]
    assert sub.take_events() == [MessagesDropped("c", 1, 70_010)]
    assert hub.dropped_messages == 5


def test_stream_hold_initial_body_is_a_droppable_message() -> None:
    hub = Hub(max_output_buffer=16, overflow_policy="drop-oldest")
    sub = Subscriber(Transport.STREAM)
    instruct = Instruct(hold="stream", channels=(Channel("c"),), body=b"hello\n")
    hold = StreamHold(hub, sub, instruct, 0.0)
    assert bytes(sub.outbuf) == b"6\r\nhello\n\r\n"
    hub.publish(item("c", b"news"))
    assert bytes(sub.outbuf) == b"4\r\nnews\r\n"
    events = sub.take_events()
    assert events == [MessagesDropped("c", 1, 11)]
    assert hold.handle_events(events) == []  # sessions ignore it: the stream goes on


def test_drops_for_one_channel_merge_into_one_event() -> None:
    hub = Hub(max_output_buffer=12, overflow_policy="drop-oldest")
    sub = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "a")
    hub.subscribe(sub, "b")
    for channel, data in [("a", b"1"), ("a", b"2"), ("a", b"3"), ("a", b"4"), ("b", b"5")]:
        hub.publish(item(channel, data))
    hub.publish(item("a", b"6"))
    # two 6-byte chunks fit: every item after the first two drops one
    assert bytes(sub.outbuf) == b"1\r\n5\r\n1\r\n6\r\n"
    assert sub.take_events() == [
        MessagesDropped("a", 2, 12),
        MessagesDropped("b", 1, 6),
        MessagesDropped("a", 1, 6),
    ]
    assert hub.dropped_messages == 4


# --- fallbacks to close -------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_raw_framing_falls_back_to_close(path: str) -> None:
    hub = Hub(max_output_buffer=8, overflow_policy="drop-oldest")
    sub = subscribe(hub, Framing.RAW, path)
    hub.publish(item("c", b"12345"))
    result = hub.publish(item("c", b"6789"))
    assert result.delivered == 0
    assert bytes(sub.outbuf) == b"12345"
    assert sub.take_events() == [BufferOverflow("c", 4)]
    assert hub.dropped_messages == 0


@pytest.mark.parametrize("framing", [Framing.CHUNKED, Framing.WEBSOCKET])
@pytest.mark.parametrize("path", PATHS)
def test_item_larger_than_the_buffer_falls_back_to_close(framing: Framing, path: str) -> None:
    hub = Hub(max_output_buffer=12, overflow_policy="drop-oldest")
    sub = subscribe(hub, framing, path)
    hub.publish(item("c", b"a"))
    before = bytes(sub.outbuf)
    result = hub.publish(item("c", b"b" * 11))  # framed, 13 or 15 bytes: never fits
    assert result.delivered == 0
    assert bytes(sub.outbuf) == before
    assert sub.take_events() == [BufferOverflow("c", 11)]
    assert hub.dropped_messages == 0


# What may wait at the front of a buffer that drop-oldest must not drop (or cannot parse): the
# policy then falls back to close, and nothing at all is dropped, not even whole messages
# before it.
UNDROPPABLE = [
    (Framing.CHUNKED, b"0\r\n\r\n", "the last chunk ends the body"),
    (Framing.CHUNKED, b"3\r\nabcXY", "chunk data not followed by CRLF"),
    (Framing.CHUNKED, b"9\r\nabc", "a cut chunk"),
    (Framing.CHUNKED, b"3;ext=1\r\nabc\r\n", "a chunk extension"),
    (Framing.CHUNKED, b"+3\r\nabc\r\n", "not a hex size"),
    (Framing.CHUNKED, b"1" * 17 + b"\r\n", "a size line too long"),
    (Framing.CHUNKED, b"hello", "plain bytes"),
    (Framing.WEBSOCKET, encode_ws_frame(0x8, b"\x03\xe8"), "a close frame"),
    (Framing.WEBSOCKET, fragments(0x1, b"a", b"b")[3:], "a continuation: the head went out"),
    (Framing.WEBSOCKET, fragments(0x1, b"a", b"b")[:5], "a fragmented message cut short"),
    (Framing.WEBSOCKET, fragments(0x1, b"a", b"b")[:3], "a first fragment alone"),
    (
        Framing.WEBSOCKET,
        fragments(0x1, b"a", b"b")[:3] + encode_ws_frame(0x9, b"") + b"\x80\x01b",
        "a control frame inside a fragmented message",
    ),
    (
        Framing.WEBSOCKET,
        fragments(0x1, b"a", b"b")[:3] + encode_ws_frame(0x1, b"b"),
        "a new message inside a fragmented message",
    ),
    (Framing.WEBSOCKET, b"\x81\x85mask" + b"hello", "a masked frame"),
    (Framing.WEBSOCKET, b"\xc1\x01a", "an RSV bit set"),
    (Framing.WEBSOCKET, b"\x81\x05ab", "a cut payload"),
    (Framing.WEBSOCKET, b"\x81\x7e\x00", "a cut 16-bit length"),
    (Framing.WEBSOCKET, b"\x81\x7f\x00\x00\x00", "a cut 64-bit length"),
    (Framing.WEBSOCKET, b"\x81", "a cut header"),
]


@pytest.mark.parametrize(
    ("framing", "front", "why"), UNDROPPABLE, ids=[why for _, _, why in UNDROPPABLE]
)
@pytest.mark.parametrize("whole_first", [False, True])
@pytest.mark.parametrize("path", PATHS)
def test_undroppable_front_falls_back_to_close(
    framing: Framing, front: bytes, why: str, whole_first: bool, path: str
) -> None:
    hub = Hub(max_output_buffer=40, overflow_policy="drop-oldest")
    sub = subscribe(hub, framing, path)
    if whole_first:
        sub.outbuf += frame(framing, b"whole")
    sub.outbuf += front
    before = bytes(sub.outbuf)
    # the largest item that fits in an empty buffer: everything waiting must go
    content = next(b"z" * n for n in range(40, 0, -1) if len(frame(framing, b"z" * n)) <= 40)
    result = hub.publish(item("c", content))
    assert result.delivered == 0, why
    assert bytes(sub.outbuf) == before
    assert sub.take_events() == [BufferOverflow("c", len(content))]
    assert hub.dropped_messages == 0


@pytest.mark.parametrize("framing", [Framing.CHUNKED, Framing.WEBSOCKET, Framing.RAW])
@pytest.mark.parametrize("path", PATHS)
def test_close_policy_never_drops(framing: Framing, path: str) -> None:
    hub = Hub(max_output_buffer=16)
    sub = subscribe(hub, framing, path)
    hub.publish(item("c", b"first"))
    before = bytes(sub.outbuf)
    assert hub.publish(item("c", b"0123456789ab")).delivered == 0
    assert bytes(sub.outbuf) == before
    assert sub.take_events() == [BufferOverflow("c", 12)]
    assert hub.dropped_messages == 0


def test_only_the_full_subscriber_is_affected() -> None:
    hub = Hub(max_output_buffer=30, overflow_policy="drop-oldest")
    stalled = subscribe(hub, Framing.CHUNKED, "fast")
    readers = [subscribe(hub, Framing.CHUNKED, "fast") for _ in range(100)]
    for n in range(10):
        hub.publish(item("c", b"msg%d" % n))
        for reader in readers:
            assert reader.take_output() == encode_chunk(b"msg%d" % n)
    assert decode_chunks(bytes(stalled.outbuf)) == [b"msg7", b"msg8", b"msg9"]
    assert all(not reader.events for reader in readers)


def test_large_buffer_of_small_messages_is_dropped_in_one_pass() -> None:
    """1 MiB of 7-byte chunks, then one item that needs 90% of them gone: linear, exact."""
    limit = 1 << 20
    hub = Hub(max_output_buffer=limit, overflow_policy="drop-oldest")
    sub = subscribe(hub, Framing.CHUNKED, "fast")
    small = encode_chunk(b"xx")
    count = limit // len(small)
    sub.outbuf += small * count
    big = b"B" * (limit * 9 // 10)
    assert hub.publish(item("c", big)).delivered == 1
    framed = encode_chunk(big)
    kept = (limit - len(framed)) // len(small)
    assert bytes(sub.outbuf) == small * kept + framed
    assert sub.take_events() == [MessagesDropped("c", count - kept, (count - kept) * len(small))]


# --- the property -------------------------------------------------------------------------


@settings(max_examples=examples(150), deadline=None)
@given(
    framing=st.sampled_from([Framing.CHUNKED, Framing.WEBSOCKET]),
    path=st.sampled_from(PATHS),
    limit=st.integers(1, 400),
    ops=st.lists(st.one_of(st.integers(0, 300), st.just(-1)), max_size=40),
)
def test_drop_oldest_keeps_whole_messages_under_the_limit(
    framing: Framing, path: str, limit: int, ops: list[int]
) -> None:
    """After any sequence of publishes (sizes) and drains (-1): the buffer is whole messages,
    never over the limit, exactly the newest published ones that fit, ending with the newest."""
    hub = Hub(max_output_buffer=limit, overflow_policy="drop-oldest")
    sub = subscribe(hub, framing, path)
    model: list[bytes] = []  # contents of the messages waiting, oldest first
    for n, size in enumerate(ops):
        if size < 0:
            sub.take_output()
            model.clear()
            continue
        content = (b"%d:" % n + b"." * size)[: max(size, 1)]
        framed = frame(framing, content)
        hub.publish(item("c", content))
        if len(framed) <= limit:
            model.append(content)
            while sum(len(frame(framing, m)) for m in model) > limit:
                model.pop(0)
        data = bytes(sub.outbuf)
        assert len(data) <= limit
        if framing is Framing.WEBSOCKET:
            assert decode_ws(data) == [(Opcode.TEXT, m) for m in model]
        else:
            assert decode_chunks(data) == model
        if len(framed) <= limit:
            assert data.endswith(framed)
    dropped = sum(e.count for e in sub.events if isinstance(e, MessagesDropped))
    assert dropped == hub.dropped_messages
