"""The `application/websocket-events` codec: vectors fed three ways, round trips and fuzzing."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripcore import _wsevents
from gripcore._errors import LocalProtocolError, WebSocketEventsError
from gripcore._wsevents import (
    DEFAULT_MAX_EVENT_SIZE,
    DEFAULT_MAX_FRAME_SIZE,
    MAX_TYPE_LINE_SIZE,
    NEED_DATA,
    Binary,
    Close,
    Disconnect,
    Open,
    Ping,
    Pong,
    Text,
    WebSocketEvent,
    WebSocketEventsDecoder,
    decode_events,
    encode_event,
    encode_events,
    split_message,
)

# (id, body, events it decodes to)
VALID_VECTORS: list[tuple[str, bytes, list[WebSocketEvent]]] = [
    ("empty body", b"", []),
    ("open", b"OPEN\r\n", [Open()]),
    ("open with zero length", b"OPEN 0\r\n\r\n", [Open()]),
    ("open content ignored", b"OPEN 3\r\nabc\r\n", [Open()]),
    ("text", b"TEXT 5\r\nhello\r\n", [Text(b"hello")]),
    ("text empty", b"TEXT 0\r\n\r\n", [Text(b"")]),
    ("text without content", b"TEXT\r\n", [Text(b"")]),
    ("text utf-8", b"TEXT 6\r\nh\xc3\xa9llo\r\n", [Text("héllo".encode())]),
    ("text holding CRLFs", b"TEXT 4\r\n\r\n\r\n\r\n", [Text(b"\r\n\r\n")]),
    (
        "binary lowercase hex",
        b"BINARY 1a\r\n" + bytes(range(26)) + b"\r\n",
        [Binary(bytes(range(26)))],
    ),
    ("binary uppercase hex", b"BINARY 1A\r\n" + b"z" * 26 + b"\r\n", [Binary(b"z" * 26)]),
    ("binary mixed-case hex", b"BINARY 1aB\r\n" + b"q" * 0x1AB + b"\r\n", [Binary(b"q" * 0x1AB)]),
    ("binary zero-padded hex", b"BINARY 0003\r\n\x00\xff\r\r\n", [Binary(b"\x00\xff\r")]),
    ("binary without content", b"BINARY\r\n", [Binary(b"")]),
    ("ping without content", b"PING\r\n", [Ping()]),
    ("ping with zero length", b"PING 0\r\n\r\n", [Ping()]),
    ("ping with payload", b"PING 2\r\nhi\r\n", [Ping(b"hi")]),
    ("pong without content", b"PONG\r\n", [Pong()]),
    ("pong with payload", b"PONG 3\r\n\x00\x01\x02\r\n", [Pong(b"\x00\x01\x02")]),
    ("close without content", b"CLOSE\r\n", [Close()]),
    ("close with zero length", b"CLOSE 0\r\n\r\n", [Close()]),
    ("close with code only", b"CLOSE 2\r\n\x03\xe8\r\n", [Close(1000)]),
    ("close with code and reason", b"CLOSE 6\r\n\x03\xe9gone\r\n", [Close(1001, "gone")]),
    ("close utf-8 reason", b"CLOSE 4\r\n\x0f\xa0\xc3\xa9\r\n", [Close(4000, "é")]),
    ("close code 0", b"CLOSE 2\r\n\x00\x00\r\n", [Close(0)]),
    ("disconnect", b"DISCONNECT\r\n", [Disconnect()]),
    ("unknown type skipped", b"FOO\r\n", []),
    ("unknown type content consumed", b"FOO 3\r\nabc\r\nOPEN\r\n", [Open()]),
    ("types are case-sensitive", b"text 1\r\na\r\nTEXT 1\r\nb\r\n", [Text(b"b")]),
    (
        "a whole session",
        b"OPEN\r\nTEXT 2\r\nc:\r\nX-NEW\r\nBINARY 1\r\n\x00\r\nPING\r\nCLOSE 2\r\n\x03\xe8\r\n",
        [Open(), Text(b"c:"), Binary(b"\x00"), Ping(), Close(1000)],
    ),
]

# (id, body, text the error message must contain)
INVALID_VECTORS: list[tuple[str, bytes, str]] = [
    ("non-hex length", b"TEXT zz\r\n", "invalid content length b'zz' of the TEXT event at byte 0"),
    ("0x prefix", b"TEXT 0x5\r\nhello\r\n", "expected hexadecimal digits"),
    ("signed length", b"TEXT +5\r\nhello\r\n", "invalid content length b'+5'"),
    ("underscore in length", b"TEXT 1_0\r\n", "invalid content length b'1_0'"),
    ("empty length", b"TEXT \r\n", "invalid content length b''"),
    ("space after length", b"TEXT 5 \r\nhello\r\n", "invalid content length b'5 '"),
    ("missing CRLF", b"TEXT 5\r\nhelloXY", "missing CRLF after the 5 content bytes"),
    ("content shorter than length", b"TEXT 5\r\nhi\r\nOPEN\r\n", "at byte 13"),
    ("LF only after content", b"TEXT 1\r\na\nOPEN\r\n", "missing CRLF"),
    ("empty type line", b"\r\n", "invalid event type b''"),
    ("empty type before length", b" 5\r\nhello\r\n", "invalid event type b''"),
    ("control byte in type", b"TE\x00XT\r\n", "invalid event type"),
    ("non-ASCII type", b"T\xc3\x89XT\r\n", "invalid event type"),
    ("overlong type line", b"X" * (MAX_TYPE_LINE_SIZE + 1) + b"\r\n", "longer than 64 bytes"),
    ("no CRLF at all", b"X" * 200, "longer than 64 bytes or lacks its CRLF"),
    ("partial type line", b"OPEN\r\nTEX", "incomplete event at byte 6 at the end of input"),
    ("LF line endings", b"OPEN\n", "incomplete event at byte 0"),
    ("partial content", b"TEXT 5\r\nhel", "expected 5 bytes of TEXT content and a CRLF"),
    ("content without CRLF", b"TEXT 5\r\nhello", "incomplete event"),
    ("content with CR only", b"TEXT 5\r\nhello\r", "incomplete event"),
    ("text not utf-8", b"TEXT 1\r\n\xff\r\n", "invalid TEXT event at byte 0: Text data is not"),
    ("close of 1 byte", b"CLOSE 1\r\n\x03\r\n", "CLOSE content of 1 byte"),
    ("close reason not utf-8", b"CLOSE 3\r\n\x03\xe8\xff\r\n", "CLOSE reason is not valid UTF-8"),
    ("error after good events", b"OPEN\r\nPING\r\nTEXT q\r\n", "at byte 12"),
]

# (event, its encoding)
ENCODE_VECTORS: list[tuple[WebSocketEvent, bytes]] = [
    (Open(), b"OPEN\r\n"),
    (Text(b"hello"), b"TEXT 5\r\nhello\r\n"),
    (Text(b""), b"TEXT 0\r\n\r\n"),
    (Binary(b"\x00" * 26), b"BINARY 1a\r\n" + b"\x00" * 26 + b"\r\n"),
    (Binary(b""), b"BINARY 0\r\n\r\n"),
    (Ping(), b"PING\r\n"),
    (Ping(b"x"), b"PING 1\r\nx\r\n"),
    (Pong(), b"PONG\r\n"),
    (Pong(b"yz"), b"PONG 2\r\nyz\r\n"),
    (Close(), b"CLOSE\r\n"),
    (Close(1000), b"CLOSE 2\r\n\x03\xe8\r\n"),
    (Close(1001, "bye"), b"CLOSE 5\r\n\x03\xe9bye\r\n"),
    (Disconnect(), b"DISCONNECT\r\n"),
]

# A partial event appended after a vector; it must stay unconsumed until completed.
PARTIAL = b"TEXT 5\r\nhel"
PARTIAL_REST = b"lo\r\n"


def drain(decoder: WebSocketEventsDecoder) -> list[WebSocketEvent]:
    return list(decoder.events())


def decode_whole(body: bytes) -> list[WebSocketEvent]:
    decoder = WebSocketEventsDecoder()
    decoder.receive_data(body)
    decoder.end_of_data()
    return drain(decoder)


def decode_bytewise(body: bytes) -> list[WebSocketEvent]:
    decoder = WebSocketEventsDecoder()
    out: list[WebSocketEvent] = []
    for i in range(len(body)):
        decoder.receive_data(body[i : i + 1])
        out += drain(decoder)
    decoder.receive_data(b"")
    return out + drain(decoder)


def decode_chunked(body: bytes, size: int) -> list[WebSocketEvent]:
    decoder = WebSocketEventsDecoder()
    out: list[WebSocketEvent] = []
    for i in range(0, len(body), size):
        decoder.receive_data(body[i : i + size])
        out += drain(decoder)
    decoder.end_of_data()
    return out + drain(decoder)


# --- vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"), [v[1:] for v in VALID_VECTORS], ids=[v[0] for v in VALID_VECTORS]
)
def test_valid_whole(body: bytes, expected: list[WebSocketEvent]) -> None:
    assert decode_whole(body) == expected
    assert decode_events(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"), [v[1:] for v in VALID_VECTORS], ids=[v[0] for v in VALID_VECTORS]
)
def test_valid_bytewise(body: bytes, expected: list[WebSocketEvent]) -> None:
    assert decode_bytewise(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"), [v[1:] for v in VALID_VECTORS], ids=[v[0] for v in VALID_VECTORS]
)
def test_valid_with_trailing_partial_event(body: bytes, expected: list[WebSocketEvent]) -> None:
    decoder = WebSocketEventsDecoder()
    decoder.receive_data(body + PARTIAL)
    assert drain(decoder) == expected
    assert decoder.next_event() is NEED_DATA
    assert decoder.trailing_data == (PARTIAL, False)
    decoder.receive_data(PARTIAL_REST)
    assert decoder.next_event() == Text(b"hello")
    assert decoder.trailing_data == (b"", False)
    decoder.end_of_data()
    assert decoder.next_event() is NEED_DATA
    assert decoder.trailing_data == (b"", True)


@pytest.mark.parametrize(
    ("body", "message"), [v[1:] for v in INVALID_VECTORS], ids=[v[0] for v in INVALID_VECTORS]
)
def test_invalid_whole(body: bytes, message: str) -> None:
    with pytest.raises(WebSocketEventsError) as info:
        decode_whole(body)
    assert message in str(info.value)
    with pytest.raises(WebSocketEventsError):
        decode_events(body)


@pytest.mark.parametrize(
    ("body", "message"), [v[1:] for v in INVALID_VECTORS], ids=[v[0] for v in INVALID_VECTORS]
)
def test_invalid_bytewise(body: bytes, message: str) -> None:
    with pytest.raises(WebSocketEventsError) as info:
        decode_bytewise(body)
    assert message in str(info.value)


@pytest.mark.parametrize(("event", "encoded"), ENCODE_VECTORS, ids=repr)
def test_encode_vectors(
    fast: ModuleType, monkeypatch: pytest.MonkeyPatch, event: WebSocketEvent, encoded: bytes
) -> None:
    monkeypatch.setattr(_wsevents, "encode_woh_event", fast.encode_woh_event)
    assert encode_event(event) == encoded
    assert encode_events([event, event]) == encoded * 2
    assert decode_events(encoded) == [event]


def test_encode_events_empty() -> None:
    assert encode_events([]) == b""
    assert encode_events(iter([Open(), Disconnect()])) == b"OPEN\r\nDISCONNECT\r\n"


@pytest.mark.parametrize("thing", [WebSocketEvent(), object(), b"OPEN"], ids=repr)
def test_encode_rejects_foreign_objects(thing: WebSocketEvent) -> None:
    with pytest.raises(LocalProtocolError, match="not a WebSocket-over-HTTP event"):
        encode_event(thing)


# --- event values ------------------------------------------------------------------------------

# (constructor, arguments, text the error message must contain)
BAD_EVENTS: list[tuple[type[WebSocketEvent], tuple[object, ...], str]] = [
    (Text, ("hello",), "Text data must be bytes, not str"),
    (Text, (b"\xc3",), "Text data is not valid UTF-8"),
    (Text, (bytearray(b"x"),), "must be bytes, not bytearray"),
    (Binary, (None,), "Binary data must be bytes, not NoneType"),
    (Ping, ("x",), "Ping data must be bytes"),
    (Pong, (1,), "Pong data must be bytes"),
    (Close, (70000,), "Close code must be an integer in 0..65535"),
    (Close, (-1,), "Close code must be"),
    (Close, (True,), "Close code must be"),
    (Close, ("1000",), "Close code must be"),
    (Close, (None, "why"), "a Close reason needs a code"),
    (Close, (1000, b"bye"), "Close reason must be a str, not bytes"),
    (Close, (1000, "\ud800"), "Close reason is not encodable as UTF-8"),
]


@pytest.mark.parametrize(
    ("cls", "args", "message"), BAD_EVENTS, ids=[repr(b[1]) for b in BAD_EVENTS]
)
def test_event_validation(
    cls: type[WebSocketEvent], args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(LocalProtocolError) as info:
        cls(*args)
    assert message in str(info.value)


def test_event_values() -> None:
    assert Text("héllo".encode()).text == "héllo"
    assert Close(65535, "x").code == 65535
    assert Open() != Disconnect()  # type: ignore[comparison-overlap]
    assert Ping() == Ping(b"")
    assert len({Text(b"a"), Text(b"a"), Binary(b"a")}) == 2
    with pytest.raises(AttributeError):
        Text(b"a").data = b"b"  # type: ignore[misc]


# --- decoder behaviour -------------------------------------------------------------------------


def test_need_data_sentinel() -> None:
    decoder = WebSocketEventsDecoder()
    assert decoder.next_event() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"
    assert list(decoder.events()) == []
    decoder.end_of_data()
    assert decoder.next_event() is NEED_DATA


def test_events_stop_at_need_data_and_resume() -> None:
    decoder = WebSocketEventsDecoder()
    decoder.receive_data(b"OPEN\r\nPING\r\nTEXT 1")
    assert drain(decoder) == [Open(), Ping()]
    assert decoder.trailing_data == (b"TEXT 1", False)
    decoder.receive_data(b"\r\nx\r\n")
    assert drain(decoder) == [Text(b"x")]


def test_errors_are_sticky() -> None:
    decoder = WebSocketEventsDecoder()
    decoder.receive_data(b"OPEN\r\nTEXT ?\r\n")
    assert decoder.next_event() == Open()
    with pytest.raises(WebSocketEventsError) as first:
        decoder.next_event()
    with pytest.raises(WebSocketEventsError) as again:
        decoder.next_event()
    assert again.value is first.value
    with pytest.raises(WebSocketEventsError):
        decoder.receive_data(b"OPEN\r\n")
    assert first.value.error_status_hint == 502
    assert first.value.close_code_hint == 1011


def test_data_after_end_of_input_is_misuse() -> None:
    decoder = WebSocketEventsDecoder()
    decoder.end_of_data()
    with pytest.raises(LocalProtocolError, match="after the end of input"):
        decoder.receive_data(b"OPEN\r\n")


def test_partial_event_at_end_is_reported_on_next_event() -> None:
    decoder = WebSocketEventsDecoder()
    decoder.receive_data(b"OPEN\r\nTEXT 2\r\na")
    assert decoder.next_event() == Open()
    assert decoder.next_event() is NEED_DATA
    decoder.end_of_data()
    with pytest.raises(
        WebSocketEventsError, match=r"incomplete event at byte 6 .* 9 bytes pending"
    ):
        decoder.next_event()


def test_max_event_size() -> None:
    decoder = WebSocketEventsDecoder(max_event_size=4)
    decoder.receive_data(b"BINARY 4\r\nabcd\r\nBINARY 5\r\n")
    assert decoder.next_event() == Binary(b"abcd")
    with pytest.raises(WebSocketEventsError, match="over the limit of 4") as info:
        decoder.next_event()
    assert info.value.close_code_hint == 1009
    with pytest.raises(WebSocketEventsError, match="1000001 content bytes"):
        decode_events(b"TEXT f4241\r\n")
    assert decode_events(b"TEXT 3\r\nabc\r\n", max_event_size=3) == [Text(b"abc")]
    with pytest.raises(WebSocketEventsError, match="over the limit of 2"):
        decode_events(b"TEXT 3\r\nabc\r\n", max_event_size=2)
    assert DEFAULT_MAX_EVENT_SIZE == 1_000_000


def test_unknown_event_content_counts_against_the_limit() -> None:
    with pytest.raises(WebSocketEventsError, match="FOO event at byte 0 has 5 content bytes"):
        decode_events(b"FOO 5\r\nabcde\r\n", max_event_size=4)


def test_max_buffer() -> None:
    minimum = 10 + MAX_TYPE_LINE_SIZE + 4
    decoder = WebSocketEventsDecoder(max_event_size=10, max_buffer=minimum)
    decoder.receive_data(b"P" * (minimum - 2))
    with pytest.raises(WebSocketEventsError, match=f"exceed the buffer limit of {minimum}") as info:
        decoder.receive_data(b"ING")
    assert info.value.close_code_hint == 1009
    # Decoded bytes no longer count.
    decoder = WebSocketEventsDecoder(max_event_size=10, max_buffer=minimum)
    decoder.receive_data(b"PING\r\n" * 10)
    assert drain(decoder) == [Ping()] * 10
    decoder.receive_data(b"PING\r\n" * 10)
    assert drain(decoder) == [Ping()] * 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_event_size": -1}, "max_event_size must be an int >= 0"),
        ({"max_event_size": 1.5}, "max_event_size must be"),
        ({"max_event_size": True}, "max_event_size must be"),
        ({"max_event_size": 10, "max_buffer": 10}, "max_buffer must be an int >= 78"),
        ({"max_buffer": "big"}, "max_buffer must be"),
    ],
)
def test_decoder_limits_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        WebSocketEventsDecoder(**kwargs)  # type: ignore[arg-type]


def test_decode_events_accepts_a_body_larger_than_the_default_buffer() -> None:
    body = b"TEXT 3\r\nabc\r\n" * 1000
    assert decode_events(body, max_event_size=3) == [Text(b"abc")] * 1000


def test_compaction_keeps_stream_offsets_and_pending_event() -> None:
    event = b"BINARY 3e8\r\n" + b"b" * 1000 + b"\r\n"
    decoder = WebSocketEventsDecoder()
    # Over 64 KiB of complete events plus a partial one whose type line is already parsed.
    decoder.receive_data(event * 100 + b"TEXT 4\r\nab")
    assert drain(decoder) == [Binary(b"b" * 1000)] * 100
    decoder.receive_data(b"c")  # compacts: the consumed prefix is large and most of the buffer
    assert decoder.trailing_data == (b"TEXT 4\r\nabc", False)
    decoder.receive_data(b"d\r\nTEXT 5\r\nhelloXY")
    assert decoder.next_event() == Text(b"abcd")
    with pytest.raises(WebSocketEventsError, match=f"at byte {len(event) * 100 + 14 + 13}$"):
        decoder.next_event()


def test_type_line_of_maximal_length_split_before_lf() -> None:
    line = b"X" * MAX_TYPE_LINE_SIZE
    decoder = WebSocketEventsDecoder()
    decoder.receive_data(line + b"\r")
    assert decoder.next_event() is NEED_DATA
    decoder.receive_data(b"\nOPEN\r\n")
    assert decoder.next_event() == Open()


# --- split_message -----------------------------------------------------------------------------

# (payload, max_frame, frames)
SPLIT_VECTORS: list[tuple[bytes, int, list[bytes]]] = [
    (b"", 4, [b""]),
    (b"abc", 4, [b"abc"]),
    (b"abcd", 4, [b"abcd"]),
    (b"abcde", 4, [b"abcd", b"e"]),
    (b"abcdefgh", 4, [b"abcd", b"efgh"]),
    (b"x" * 16384, DEFAULT_MAX_FRAME_SIZE, [b"x" * 16384]),
    (b"x" * 16385, DEFAULT_MAX_FRAME_SIZE, [b"x" * 16384, b"x"]),
]


@pytest.mark.parametrize(("data", "max_frame", "frames"), SPLIT_VECTORS, ids=repr)
def test_split_message(data: bytes, max_frame: int, frames: list[bytes]) -> None:
    assert split_message(data, max_frame) == frames


@pytest.mark.parametrize("max_frame", [0, -1, 1.0])
def test_split_message_rejects_bad_frame_size(max_frame: int) -> None:
    with pytest.raises(LocalProtocolError, match="max_frame must be an int >= 1"):
        split_message(b"abc", max_frame)


@given(st.binary(max_size=200), st.integers(min_value=1, max_value=50))
def test_split_message_property(data: bytes, max_frame: int) -> None:
    frames = split_message(data, max_frame)
    assert b"".join(frames) == data
    assert all(0 < len(f) <= max_frame for f in frames) or frames == [b""]


# --- properties --------------------------------------------------------------------------------

events_strategy = st.one_of(
    st.just(Open()),
    st.just(Disconnect()),
    st.builds(Text, st.text(max_size=40).map(str.encode)),
    st.builds(Binary, st.binary(max_size=40)),
    st.builds(Ping, st.binary(max_size=10)),
    st.builds(Pong, st.binary(max_size=10)),
    st.just(Close()),
    st.builds(Close, st.integers(0, 0xFFFF), st.text(max_size=20)),
)


@given(st.lists(events_strategy, max_size=12), st.data())
def test_round_trip_split_anywhere(events: list[WebSocketEvent], data: st.DataObject) -> None:
    body = encode_events(events)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8)))
    decoder = WebSocketEventsDecoder()
    out: list[WebSocketEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
        if start < end:  # b"" would mean the end of input
            decoder.receive_data(body[start:end])
            out += drain(decoder)
    decoder.end_of_data()
    out += drain(decoder)
    assert out == events
    assert decoder.trailing_data == (b"", True)


@given(st.binary(max_size=300))
def test_fuzz_bytes_raise_only_websocket_events_error(body: bytes) -> None:
    try:
        events = decode_events(body)
    except WebSocketEventsError:
        return
    assert all(isinstance(e, WebSocketEvent) for e in events)


@given(st.lists(events_strategy, min_size=1, max_size=6), st.data())
def test_fuzz_mutated_bodies(events: list[WebSocketEvent], data: st.DataObject) -> None:
    body = bytearray(encode_events(events))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(body) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            body[at] = data.draw(st.sampled_from(b" \r\n0aFzX\x00\xff"))
        elif action == "insert":
            body.insert(at, data.draw(st.sampled_from(b" \r\n0aFzX\x00\xff")))
        elif len(body) > 1:
            del body[at]
    try:
        whole = decode_events(bytes(body))
    except WebSocketEventsError:
        with pytest.raises(WebSocketEventsError):
            decode_bytewise(bytes(body))
    else:
        assert decode_bytewise(bytes(body)) == whole


def test_one_megabyte_event_fed_byte_at_a_time() -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, over the default limit: raise it
    body = b"BINARY 100000\r\n" + content + b"\r\nOPEN\r\n"
    decoder = WebSocketEventsDecoder(max_event_size=len(content))
    out: list[WebSocketEvent] = []
    for i in range(len(body)):
        decoder.receive_data(body[i : i + 1])
        event = decoder.next_event()
        if event is not NEED_DATA:
            out.append(event)
    assert out == [Binary(content), Open()]


def test_one_megabyte_events_in_seven_byte_pieces() -> None:
    content = "é".encode() * 500_000  # 1,000,000 bytes: exactly the default limit
    body = encode_events([Text(content), Open()])
    assert decode_chunked(body, 7) == [Text(content), Open()]


def test_many_small_events_byte_at_a_time() -> None:
    body = b"PING\r\nTEXT 1\r\nx\r\n" * 10_000
    assert decode_bytewise(body) == [Ping(), Text(b"x")] * 10_000
