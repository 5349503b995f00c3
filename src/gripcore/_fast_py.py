"""Pure-Python reference twin of the compiled hot path (`_fast.pyx`).

This module is the specification: `_fast.pyx` has the same names, signatures, results and
exceptions, and one test suite runs against both (tests/test_fast.py). Only functions that run
per delivery or per byte live here, and each earns its place with a number in bench/.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = [
    "encode_chunk",
    "encode_woh_event",
    "encode_ws_frame",
    "fanout",
    "flush_connections",
    "ws_frame_header",
]

_MAX_WS_OPCODE = 0x0F
# Largest payload length a frame header can carry: RFC 6455 5.2 says the 64-bit length's most
# significant bit must be 0. Longer is an OverflowError, as a C Py_ssize_t would give.
_MAX_WS_LENGTH = 2**63 - 1


def _need_bytes(value: object, name: str) -> None:
    """The compiled twin's `bytes ... not None` arguments: exactly bytes (no bytearray,
    memoryview, str or subclass), else TypeError."""
    if type(value) is not bytes:
        raise TypeError(
            f"Argument {name!r} has incorrect type (expected bytes, got {type(value).__name__})"
        )


def _need_int(value: object, name: str) -> int:
    """An int argument (bool included, as it is an int); anything else is a TypeError."""
    if not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def encode_chunk(data: bytes) -> bytes:
    """Frame `data` as one HTTP/1.1 chunk (hex size, CRLF, data, CRLF).

    Empty data encodes to nothing: a zero-size chunk would end the body (RFC 9112 section 7.1).
    """
    _need_bytes(data, "data")
    n = len(data)
    if n == 0:
        return b""
    return b"%x\r\n%b\r\n" % (n, data)


def ws_frame_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, final WebSocket frame (server to client, RFC 6455 5.2).

    Raises TypeError for a non-int argument, ValueError for an opcode outside 0-15 or a negative
    length, OverflowError for a length over 2**63 - 1.
    """
    _need_int(opcode, "opcode")
    _need_int(length, "length")
    if not 0 <= opcode <= _MAX_WS_OPCODE:
        raise ValueError(f"invalid WebSocket opcode {opcode}")
    if length < 0:
        raise ValueError("negative WebSocket payload length")
    if length > _MAX_WS_LENGTH:
        raise OverflowError("WebSocket payload length over 2**63 - 1")
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 0x10000:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def encode_ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final WebSocket frame carrying `payload` (server to client)."""
    _need_int(opcode, "opcode")
    _need_bytes(payload, "payload")
    return ws_frame_header(opcode, len(payload)) + payload


def encode_woh_event(event_type: bytes, content: bytes | None) -> bytes:
    """One WebSocket-over-HTTP event: `TYPE\\r\\n`, or `TYPE <hex len>\\r\\n<content>\\r\\n`."""
    _need_bytes(event_type, "event_type")
    if content is not None:
        _need_bytes(content, "content")
    if content is None:
        return event_type + b"\r\n"
    return b"%b %x\r\n%b\r\n" % (event_type, len(content), content)


def fanout(
    targets: dict[Hashable, bytearray],
    payload: bytes,
    woken: list[Hashable],
    overflowed: list[Hashable],
    limit: int,
) -> int:
    """Append `payload` to every output buffer in `targets` (subscriber -> its buffer).

    A subscriber whose buffer was empty is appended to `woken` (the adapter must schedule a
    flush for it); one whose buffer would grow past `limit` bytes (0 = no limit) gets nothing and
    is appended to `overflowed` (the caller applies the slow-consumer policy). Returns how many
    buffers received the payload.
    """
    if type(targets) is not dict:
        raise TypeError(
            f"Argument 'targets' has incorrect type (expected dict, got {type(targets).__name__})"
        )
    _need_bytes(payload, "payload")
    for name, value in (("woken", woken), ("overflowed", overflowed)):
        if type(value) is not list:
            raise TypeError(
                f"Argument {name!r} has incorrect type (expected list, got {type(value).__name__})"
            )
    _need_int(limit, "limit")
    if not -_MAX_WS_LENGTH - 1 <= limit <= _MAX_WS_LENGTH:
        raise OverflowError("limit does not fit a C ssize_t")
    n = len(payload)
    delivered = 0
    for key, buf in targets.items():
        if type(buf) is not bytearray:
            raise TypeError("fanout targets must map to bytearray buffers")
        size = len(buf)
        if limit and size + n > limit:
            overflowed.append(key)
            continue
        if not size:
            woken.append(key)
        buf += payload
        delivered += 1
    return delivered


def flush_connections(batch: list[Any], now: float) -> None:
    """One slice of a fan-out pass: write each connection's pending output in one `io.write`.

    `batch` holds `gripcore._connection.ProxyConnection`s; what is read of each: `subscriber`
    (its `outbuf`, a bytearray, and `events`), `session` (`wrote(now)`), `closed`, `paused`,
    `io` (`write(bytes)`) and `flush()`. A connection with hub events waiting, no session or
    subscriber, or closed goes through its own `flush()` (acts on the events, re-arms its
    timer). The others only have bytes: written unless the transport asked for a pause, then
    `session.wrote(now)` (an idle keep-alive starts counting again). A write moves a keep-alive
    deadline later and never makes one where there was none (a session has a keep-alive
    deadline from the moment it has a keep-alive), so the timer armed, or not armed, at the last
    state change stays right (ProxyConnection._arm_timer). `now` is the slice's clock time.
    An exception in one connection's turn goes to its `fail(exc)` (which ends that connection)
    and the slice goes on with the next one.
    """
    if type(batch) is not list:
        raise TypeError(
            f"Argument 'batch' has incorrect type (expected list, got {type(batch).__name__})"
        )
    for conn in batch:
        try:
            sub = conn.subscriber
            session = conn.session
            if sub is None or session is None or conn.closed or sub.events:
                conn.flush()
                continue
            buf = sub.outbuf
            if buf and not conn.paused:
                data = bytes(buf)
                buf.clear()
                conn.io.write(data)
                session.wrote(now)
        except Exception as exc:  # one connection's failure ends it, not the pass
            conn.fail(exc)
