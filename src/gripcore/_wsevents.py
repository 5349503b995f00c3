"""The `application/websocket-events` codec of WebSocket-over-HTTP (WOH).

A WOH body is a concatenation of events. Each event is a type token followed either by `\\r\\n`
(no content) or by a space, the content length in hexadecimal, `\\r\\n`, the content bytes and
`\\r\\n`::

    OPEN\\r\\n
    TEXT 5\\r\\nhello\\r\\n
    CLOSE 6\\r\\n\\x03\\xe8done\\r\\n

Strategy. Events are values (frozen, slotted dataclasses validated when built). The encoder
builds each event with the hot-path `encode_woh_event` (lowercase hex, as Pushpin emits). The
decoder follows h11: `receive_data()` appends to one bytearray, `next_event()` returns an event or
`NEED_DATA`. It keeps three cursors so every byte is examined a bounded number of times whatever
the feeding pattern: `_start` (first byte of the event being decoded), `_scan` (where the search
for the type line's CRLF resumes) and, once the type line is parsed, the header remembered in
`_header` so the content is only length-checked until it is complete. The consumed prefix is
dropped only when it is large and at least half the buffer, which keeps the copying amortised
linear. An incomplete event is never consumed, so `trailing_data` is exactly what is pending.

Decoding rules (Pushpin's, §4.2 of the behaviour spec): the length is hex in any case; a type
line without a space means no content, and `OPEN 0\\r\\n\\r\\n` is as good as `OPEN\\r\\n`; unknown
event types are skipped (their content is still consumed); a bad hex length, a missing CRLF, an
overlong type line or content over the limit is an error. Choices made where Pushpin is lax:
TEXT content must be valid UTF-8, a CLOSE reason must be valid UTF-8, and a one-byte CLOSE content
(half a status code) is an error; content given with OPEN or DISCONNECT is ignored.

Error contract: whatever the peer sends, the decoder raises only `WebSocketEventsError` (a
`RemoteProtocolError`), with a message saying what was wrong at which byte offset of the stream;
the decoder is then unusable and re-raises the same error. Misuse by the caller (bad limits, data
after end of input, invalid event values) raises `LocalProtocolError`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from ._errors import LocalProtocolError, WebSocketEventsError
from ._speedups import encode_woh_event

__all__ = [
    "DEFAULT_MAX_EVENT_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_TYPE_LINE_SIZE",
    "NEED_DATA",
    "Binary",
    "Close",
    "Disconnect",
    "NeedData",
    "Open",
    "Ping",
    "Pong",
    "Text",
    "WebSocketEvent",
    "WebSocketEventsDecoder",
    "decode_events",
    "encode_event",
    "encode_events",
    "split_message",
]

# Pushpin refuses WOH response bodies over 1,000,000 bytes, so no single event's content from a
# compatible origin can be larger.
DEFAULT_MAX_EVENT_SIZE: Final = 1_000_000

# The longest type line Pushpin produces is `DISCONNECT` plus a space and a length; 64 bytes leaves
# room for unknown types and zero-padded lengths while rejecting a garbage stream early.
MAX_TYPE_LINE_SIZE: Final = 64

# Pushpin splits each message it sends to a client into frames of at most 16 KiB.
DEFAULT_MAX_FRAME_SIZE: Final = 16_384

# The consumed prefix of the receive buffer is dropped only once it is at least this large (and
# at least half the buffer): small enough to bound the waste, large enough that the tail moves
# rarely.
_COMPACT_THRESHOLD: Final = 65_536

# Close status codes are 16-bit big-endian integers.
_MAX_CLOSE_CODE: Final = 0xFFFF

_CRLF: Final = b"\r\n"
_EVENT_TYPE = re.compile(rb"[\x21-\x7e]+")
_HEX_LENGTH = re.compile(rb"[0-9A-Fa-f]+")


class NeedData(enum.Enum):
    """Type of the `NEED_DATA` sentinel returned by `WebSocketEventsDecoder.next_event()`."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


def _check_bytes(what: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{what} must be bytes, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class WebSocketEvent:
    """Base of the WebSocket-over-HTTP events."""


@dataclass(frozen=True, slots=True)
class Open(WebSocketEvent):
    """`OPEN`: the first event of a connection, in both directions."""


@dataclass(frozen=True, slots=True)
class Text(WebSocketEvent):
    """`TEXT`: one whole text message. `data` holds its UTF-8 bytes, validated when built."""

    data: bytes

    def __post_init__(self) -> None:
        _check_bytes("Text data", self.data)
        try:
            self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LocalProtocolError(f"Text data is not valid UTF-8: {exc.reason}") from None

    @property
    def text(self) -> str:
        """The message as a string."""
        return self.data.decode("utf-8")


@dataclass(frozen=True, slots=True)
class Binary(WebSocketEvent):
    """`BINARY`: one whole binary message."""

    data: bytes

    def __post_init__(self) -> None:
        _check_bytes("Binary data", self.data)


@dataclass(frozen=True, slots=True)
class Ping(WebSocketEvent):
    """`PING` with its payload (encoded without content when empty, as Pushpin does)."""

    data: bytes = b""

    def __post_init__(self) -> None:
        _check_bytes("Ping data", self.data)


@dataclass(frozen=True, slots=True)
class Pong(WebSocketEvent):
    """`PONG` with its payload (encoded without content when empty, as Pushpin does)."""

    data: bytes = b""

    def __post_init__(self) -> None:
        _check_bytes("Pong data", self.data)


@dataclass(frozen=True, slots=True)
class Close(WebSocketEvent):
    """`CLOSE`: content is the 2-byte big-endian `code` then the UTF-8 `reason`; no code, no content.

    Raises `LocalProtocolError` when built with a code outside 0..65535, a reason without a code
    (the encoding cannot carry it) or a reason that is not encodable as UTF-8.
    """

    code: int | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.code is not None and (
            type(self.code) is not int or not 0 <= self.code <= _MAX_CLOSE_CODE
        ):
            raise LocalProtocolError(
                f"Close code must be an integer in 0..65535, not {self.code!r}"
            )
        if not isinstance(self.reason, str):
            raise LocalProtocolError(
                f"Close reason must be a str, not {type(self.reason).__name__}"
            )
        if self.reason and self.code is None:
            raise LocalProtocolError("a Close reason needs a code: the encoding cannot carry it")
        try:
            self.reason.encode("utf-8")
        except UnicodeEncodeError:
            raise LocalProtocolError("Close reason is not encodable as UTF-8") from None


@dataclass(frozen=True, slots=True)
class Disconnect(WebSocketEvent):
    """`DISCONNECT`: the connection is gone without a clean close (or unknown to the server)."""


def encode_event(event: WebSocketEvent) -> bytes:
    """Encode one event. Raises `LocalProtocolError` for an object that is not one of ours."""
    match event:
        case Open():
            return encode_woh_event(b"OPEN", None)
        case Text(data):
            return encode_woh_event(b"TEXT", data)
        case Binary(data):
            return encode_woh_event(b"BINARY", data)
        case Ping(data):
            return encode_woh_event(b"PING", data or None)
        case Pong(data):
            return encode_woh_event(b"PONG", data or None)
        case Close(code, reason):
            if code is None:
                return encode_woh_event(b"CLOSE", None)
            return encode_woh_event(b"CLOSE", code.to_bytes(2, "big") + reason.encode("utf-8"))
        case Disconnect():
            return encode_woh_event(b"DISCONNECT", None)
    raise LocalProtocolError(f"cannot encode {event!r}: not a WebSocket-over-HTTP event")


def encode_events(events: Iterable[WebSocketEvent]) -> bytes:
    """Encode events into one `application/websocket-events` body (see `encode_event`)."""
    return b"".join([encode_event(event) for event in events])


def _decode_close(content: bytes) -> Close:
    if not content:
        return Close()
    if len(content) == 1:
        raise LocalProtocolError("CLOSE content of 1 byte: a status code takes 2")
    try:
        reason = content[2:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LocalProtocolError(f"CLOSE reason is not valid UTF-8: {exc.reason}") from None
    return Close(int.from_bytes(content[:2], "big"), reason)


def _decode_open(content: bytes) -> Open:
    return Open()


def _decode_disconnect(content: bytes) -> Disconnect:
    return Disconnect()


_DECODERS: Final = {
    b"OPEN": _decode_open,
    b"TEXT": Text,
    b"BINARY": Binary,
    b"PING": Ping,
    b"PONG": Pong,
    b"CLOSE": _decode_close,
    b"DISCONNECT": _decode_disconnect,
}


def _default_max_buffer(max_event_size: int) -> int:
    # One maximal event and the start of the next always fit.
    return 2 * (max_event_size + MAX_TYPE_LINE_SIZE + 2 * len(_CRLF))


class WebSocketEventsDecoder:
    """Incremental decoder of `application/websocket-events` (h11 style).

    Feed bytes with `receive_data()` (`b""` or `end_of_data()` marks the end of input), then call
    `next_event()` until it returns `NEED_DATA`, or iterate `events()`. After the end of input,
    `next_event()` raises `WebSocketEventsError` if a partial event is left, and otherwise keeps
    returning `NEED_DATA`.

    `max_event_size` bounds one event's content; `max_buffer` bounds the undecoded bytes held
    (default: room for two maximal events). Both exceeded limits raise `WebSocketEventsError`
    with close code hint 1009. Invalid limits raise `LocalProtocolError`.
    """

    def __init__(
        self, max_event_size: int = DEFAULT_MAX_EVENT_SIZE, max_buffer: int | None = None
    ) -> None:
        if type(max_event_size) is not int or max_event_size < 0:
            raise LocalProtocolError(f"max_event_size must be an int >= 0, not {max_event_size!r}")
        minimum = max_event_size + MAX_TYPE_LINE_SIZE + 2 * len(_CRLF)
        if max_buffer is None:
            max_buffer = _default_max_buffer(max_event_size)
        elif type(max_buffer) is not int or max_buffer < minimum:
            raise LocalProtocolError(
                f"max_buffer must be an int >= {minimum} (one whole event), not {max_buffer!r}"
            )
        self._max_event_size = max_event_size
        self._max_buffer = max_buffer
        self._buf = bytearray()
        self._base = 0  # stream offset of self._buf[0], for error messages
        self._start = 0  # first byte of the event being decoded
        self._scan = 0  # where the search for the type line's CRLF resumes
        # Once the type line is parsed: (type, bytes from _start to content, content length).
        self._header: tuple[bytes, int, int | None] | None = None
        # Buffer length the pending event's content needs (0 while reading a type line): below
        # it, next_event() answers NEED_DATA with one comparison.
        self._needed = 0
        self._eof = False
        self._error: WebSocketEventsError | None = None

    @property
    def trailing_data(self) -> tuple[bytes, bool]:
        """The bytes received but not yet decoded, and whether the end of input was seen."""
        return bytes(self._buf[self._start :]), self._eof

    def receive_data(self, data: bytes) -> None:
        """Append `data`; `b""` marks the end of input.

        Raises `LocalProtocolError` for data after the end of input, and `WebSocketEventsError`
        when the undecoded bytes would exceed `max_buffer` (or the decoder already failed).
        """
        if self._error is not None:
            raise self._error
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after the end of input")
        if self._start:
            self._compact()
        pending = len(self._buf) - self._start + len(data)
        if pending > self._max_buffer:
            raise self._fail(
                f"{pending} undecoded bytes at byte {self._base + self._start} exceed the "
                f"buffer limit of {self._max_buffer} bytes",
                close_code_hint=1009,
            )
        self._buf += data

    def end_of_data(self) -> None:
        """Mark the end of input (same as `receive_data(b"")`)."""
        self.receive_data(b"")

    def next_event(self) -> WebSocketEvent | NeedData:
        """The next decoded event, or `NEED_DATA`. Raises `WebSocketEventsError` (see class)."""
        if self._error is not None:
            raise self._error
        if len(self._buf) < self._needed and not self._eof:
            return NEED_DATA
        while True:
            event = self._decode_one()
            if event is not None:
                return event

    def events(self) -> Iterator[WebSocketEvent]:
        """Yield decoded events until `NEED_DATA`."""
        while (event := self.next_event()) is not NEED_DATA:
            yield event

    def _fail(self, msg: str, *, close_code_hint: int | None = None) -> WebSocketEventsError:
        self._error = WebSocketEventsError(msg, close_code_hint=close_code_hint)
        return self._error

    def _compact(self) -> None:
        start = self._start
        if start == len(self._buf) or (start >= _COMPACT_THRESHOLD and 2 * start >= len(self._buf)):
            del self._buf[:start]
            self._base += start
            self._scan -= start
            self._needed = max(0, self._needed - start)
            self._start = 0

    def _decode_one(self) -> WebSocketEvent | NeedData | None:
        """Decode one event: the event, `NEED_DATA`, or None for a skipped unknown type."""
        buf = self._buf
        start = self._start
        if self._header is None:
            line_end = buf.find(_CRLF, self._scan)
            if line_end == -1:
                # A line of MAX_TYPE_LINE_SIZE may still be waiting for the "\n" of its CRLF.
                if len(buf) - start > MAX_TYPE_LINE_SIZE + 1:
                    raise self._fail(
                        f"event type line at byte {self._base + start} is longer than "
                        f"{MAX_TYPE_LINE_SIZE} bytes or lacks its CRLF"
                    )
                self._scan = max(start, len(buf) - 1)
                return self._need_data("an event type line")
            if line_end - start > MAX_TYPE_LINE_SIZE:
                raise self._fail(
                    f"event type line at byte {self._base + start} is longer than "
                    f"{MAX_TYPE_LINE_SIZE} bytes"
                )
            self._header = self._parse_type_line(bytes(buf[start:line_end]), line_end + 2 - start)
        event_type, header_size, length = self._header
        if length is None:
            self._consume(start + header_size)
            return self._build(event_type, b"", start)
        content_start = start + header_size
        content_end = content_start + length
        if len(buf) < content_end + 2:
            self._needed = content_end + 2
            return self._need_data(f"{length} bytes of {event_type.decode()} content and a CRLF")
        if buf[content_end : content_end + 2] != _CRLF:
            raise self._fail(
                f"missing CRLF after the {length} content bytes of the {event_type.decode()} "
                f"event at byte {self._base + content_end}"
            )
        content = bytes(buf[content_start:content_end])
        self._consume(content_end + 2)
        return self._build(event_type, content, start)

    def _parse_type_line(self, line: bytes, header_size: int) -> tuple[bytes, int, int | None]:
        event_type, space, size = line.partition(b" ")
        where = self._base + self._start
        if not _EVENT_TYPE.fullmatch(event_type):
            raise self._fail(f"invalid event type {event_type!r} at byte {where}")
        if not space:
            return event_type, header_size, None
        if not _HEX_LENGTH.fullmatch(size):
            raise self._fail(
                f"invalid content length {size!r} of the {event_type.decode()} event at byte "
                f"{where}: expected hexadecimal digits"
            )
        length = int(size, 16)
        if length > self._max_event_size:
            raise self._fail(
                f"{event_type.decode()} event at byte {where} has {length} content bytes, over "
                f"the limit of {self._max_event_size}",
                close_code_hint=1009,
            )
        return event_type, header_size, length

    def _need_data(self, expected: str) -> NeedData:
        pending = len(self._buf) - self._start
        if self._eof and pending:
            raise self._fail(
                f"incomplete event at byte {self._base + self._start} at the end of input: "
                f"expected {expected}, {pending} bytes pending"
            )
        return NEED_DATA

    def _consume(self, end: int) -> None:
        self._start = end
        self._scan = end
        self._header = None
        self._needed = 0

    def _build(self, event_type: bytes, content: bytes, where: int) -> WebSocketEvent | None:
        decode = _DECODERS.get(event_type)
        if decode is None:
            return None  # Pushpin ignores event types it does not know.
        try:
            return decode(content)
        except LocalProtocolError as exc:
            raise self._fail(
                f"invalid {event_type.decode()} event at byte {self._base + where}: {exc.msg}"
            ) from None


def decode_events(
    body: bytes, *, max_event_size: int = DEFAULT_MAX_EVENT_SIZE
) -> list[WebSocketEvent]:
    """Decode a whole `application/websocket-events` body.

    Raises `WebSocketEventsError` for invalid content, including a partial event at the end.
    """
    decoder = WebSocketEventsDecoder(
        max_event_size, max_buffer=max(len(body), _default_max_buffer(max_event_size))
    )
    decoder.receive_data(body)
    decoder.end_of_data()
    return list(decoder.events())


def split_message(data: bytes, max_frame: int = DEFAULT_MAX_FRAME_SIZE) -> list[bytes]:
    """Split a message's payload into frame payloads of at most `max_frame` bytes.

    An empty message is one empty frame. A text message may be split inside a UTF-8 sequence:
    WebSocket validates text per message, not per frame. Raises `LocalProtocolError` if
    `max_frame` < 1.
    """
    if type(max_frame) is not int or max_frame < 1:
        raise LocalProtocolError(f"max_frame must be an int >= 1, not {max_frame!r}")
    if len(data) <= max_frame:
        return [data]
    return [data[i : i + max_frame] for i in range(0, len(data), max_frame)]
