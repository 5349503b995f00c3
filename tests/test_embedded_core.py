"""The core pieces embedded mode (gripcore.asgi) drives: WebSocket output split back into
messages, close payloads read back, and the headers an in-process application sees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import gripcore.asgi
from gripcore import InstructError, LocalProtocolError
from gripcore._hub import split_ws_messages
from gripcore._instruct import Instruct
from gripcore._proxy import (
    GRIP_FEATURES,
    app_request_headers,
    local_link_target,
    next_link_instruct,
)
from gripcore._speedups import encode_ws_frame, ws_frame_header
from gripcore._wsgrip import MAX_FRAME, close_payload, encode_frames, parse_close_payload

# --- split_ws_messages ----------------------------------------------------------------------


def test_empty_output_has_no_messages() -> None:
    assert split_ws_messages(b"") == []


def test_whole_frames_come_back_as_messages() -> None:
    data = (
        encode_ws_frame(0x1, b"hello")
        + encode_ws_frame(0x2, b"\x00\xff")
        + encode_ws_frame(0x9, b"ping")
        + encode_ws_frame(0x8, close_payload(1001, "bye"))
    )
    assert split_ws_messages(bytearray(data)) == [
        (0x1, b"hello"),
        (0x2, b"\x00\xff"),
        (0x9, b"ping"),
        (0x8, b"\x03\xe9bye"),
    ]


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70_000])
def test_every_length_encoding(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert split_ws_messages(encode_ws_frame(0x2, payload)) == [(0x2, payload)]


def test_fragmented_message_is_joined() -> None:
    payload = b"x" * (MAX_FRAME * 2 + 10)
    framed = encode_frames(0x1, payload)
    assert framed.count(b"x" * 10) > 0 and len(framed) > len(payload) + 6  # three frames
    assert split_ws_messages(framed + encode_ws_frame(0x1, b"next")) == [
        (0x1, payload),
        (0x1, b"next"),
    ]


def _first_fragment(opcode: int, payload: bytes) -> bytes:
    header = bytearray(ws_frame_header(opcode, len(payload)))
    header[0] &= 0x7F  # not FIN
    return bytes(header) + payload


def test_control_frame_inside_a_fragmented_message_comes_first() -> None:
    data = (
        _first_fragment(0x1, b"hel")
        + encode_ws_frame(0xA, b"pong")
        + encode_ws_frame(0x0, b"lo")  # the final continuation
    )
    assert split_ws_messages(data) == [(0xA, b"pong"), (0x1, b"hello")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (encode_ws_frame(0x1, b"hello")[:-1], "no whole WebSocket frame at offset 0"),
        (b"\xc1\x00", "no whole WebSocket frame at offset 0"),  # RSV bit set
        (b"\x81\x80\x00\x00\x00\x00", "no whole WebSocket frame at offset 0"),  # masked
        (encode_ws_frame(0x0, b"lo"), "unexpected WebSocket frame opcode 0"),
        (_first_fragment(0x1, b"a") + encode_ws_frame(0x1, b"b"), "unexpected WebSocket frame"),
        (_first_fragment(0x2, b"a"), "ends inside a fragmented message"),
    ],
)
def test_what_is_not_whole_frames_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        split_ws_messages(data)


@given(st.lists(st.tuples(st.sampled_from([0x1, 0x2, 0x9, 0xA]), st.binary(max_size=300))))
def test_split_inverts_framing(messages: list[tuple[int, bytes]]) -> None:
    data = b"".join(
        encode_frames(op, p) if op < 8 else encode_ws_frame(op, p) for op, p in messages
    )
    assert split_ws_messages(data) == messages


# --- parse_close_payload ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", (None, "")),
        (b"\x03", (None, "")),
        (b"\x03\xe8", (1000, "")),
        (b"\x0f\xa0done", (4000, "done")),
        (b"\x03\xe8\xff", (1000, "\ufffd")),
    ],
)
def test_close_payload_is_read_back(payload: bytes, expected: tuple[int | None, str]) -> None:
    assert parse_close_payload(payload) == expected


@given(st.sampled_from([None, 1000, 1001, 1011, 3000, 4999]), st.text(max_size=60))
def test_close_payload_round_trip(code: int | None, reason: str) -> None:
    parsed = parse_close_payload(close_payload(code, reason))
    if code is None:
        assert parsed == (None, "")
    else:
        assert parsed[0] == code
        assert reason.startswith(parsed[1])


# --- app_request_headers --------------------------------------------------------------------


def test_app_request_headers_drop_client_grip_headers_and_add_ours() -> None:
    client = [
        (b"host", b"example.com"),
        (b"Grip-Sig", b"forged"),
        (b"content-length", b"3"),
        (b"grip-last", b"ch; last-id=1"),
        (b"connection", b"keep-alive"),
    ]
    assert app_request_headers(client) == [
        (b"host", b"example.com"),
        (b"content-length", b"3"),
        (b"connection", b"keep-alive"),
        (b"Grip-Feature", GRIP_FEATURES),
    ]
    assert app_request_headers(
        client, sig_token=b"tok", extra=[(b"Grip-Last", b'ch; last-id="2"')]
    )[-3:] == [
        (b"Grip-Feature", GRIP_FEATURES),
        (b"Grip-Sig", b"tok"),
        (b"Grip-Last", b'ch; last-id="2"'),
    ]


# --- links back to the application -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com/next", b"/next"),
        ("http://example.com:80/next?a=1&b=%20", b"/next?a=1&b=%20"),
        ("http://EXAMPLE.com", b"/"),
        ("https://example.com/next", None),  # another scheme
        ("http://example.com:8080/next", None),  # another port
        ("http://elsewhere.test/next", None),
        ("http://example.com:x/next", None),  # not a port
        ("/relative", None),  # links arrive resolved; an unresolved one goes nowhere
    ],
)
def test_local_link_target(url: str, expected: bytes | None) -> None:
    assert local_link_target(url, request_uri="http://example.com/stream?x=1") == expected


def test_next_link_instruct() -> None:
    assert next_link_instruct(404, b"Not Found", [], b"gone") is None
    assert next_link_instruct(200, b"", [(b"content-type", b"text/plain")], b"more") == Instruct(
        status=200, reason=b"", body=b"more"
    )
    instruct = next_link_instruct(
        200, b"OK", [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"a")], b"", request_uri=None
    )
    assert instruct is not None and instruct.hold == "stream"
    assert [c.name for c in instruct.channels] == ["a"]
    with pytest.raises(InstructError):
        next_link_instruct(204, b"", [(b"Grip-Hold", b"forever")], b"")


def test_public_module_names_the_driver() -> None:
    from gripcore.adapters.asgi import GripMiddleware

    assert gripcore.asgi.GripMiddleware is GripMiddleware
    assert gripcore.asgi.__all__ == ["GripMiddleware", "current_middleware"]
