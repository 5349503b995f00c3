"""permessage-deflate (`_wsdeflate`): strict offers, compress once, bounded inflation."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode

from gripcore._wsdeflate import RESPONSE, deflate_frame, deflate_message, parse_deflate_offer
from gripcore._wsdeflate_server import ServerDeflate, negotiate


@pytest.mark.parametrize(
    ("offer", "params"),
    [
        ("permessage-deflate", {}),
        ("permessage-deflate; client_max_window_bits", {"client_max_window_bits": None}),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            {"server_no_context_takeover": None, "client_no_context_takeover": None},
        ),
        (
            'permessage-deflate;client_max_window_bits="10"; server_max_window_bits=15',
            {"client_max_window_bits": 10, "server_max_window_bits": 15},
        ),
        ("PERMESSAGE-DEFLATE; Server_Max_Window_Bits=8", {"server_max_window_bits": 8}),
        ("client_max_window_bits=9", {"client_max_window_bits": 9}),  # the parameters alone
        # malformed: declined
        ("permessage-deflate; x_custom", None),
        ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; server_max_window_bits=7", None),
        ("permessage-deflate; client_max_window_bits=16", None),
        ("permessage-deflate; client_max_window_bits=abc", None),
        ("permessage-deflate; client_max_window_bits=015", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate;; client_max_window_bits", None),
    ],
)
def test_parse_offer(offer: str, params: dict[str, int | None] | None) -> None:
    assert parse_deflate_offer(offer) == params


@given(st.text(max_size=80))
def test_parse_offer_never_raises(offer: str) -> None:
    result = parse_deflate_offer(offer)
    assert result is None or isinstance(result, dict)


@given(st.binary(max_size=5000))
def test_deflate_message_inflates_back_and_is_the_same_every_time(payload: bytes) -> None:
    data = deflate_message(payload)
    assert data == deflate_message(payload)  # once for every subscriber
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(data + b"\x00\x00\xff\xff") == payload


def handshake(
    offer: PerMessageDeflate | None, max_message: int = 1_000_000
) -> tuple[WSConnection, WSConnection, list[object]]:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    extensions = [offer] if offer is not None else []
    server.receive_data(client.send(Request(host="x", target="/", extensions=extensions)))
    [request] = list(server.events())
    assert isinstance(request, Request)
    reply = server.send(AcceptConnection(extensions=[ServerDeflate(max_message)]))
    client.receive_data(reply)
    accepted = list(client.events())
    return client, server, accepted


def test_a_browser_offer_is_accepted_with_both_no_context_takeovers() -> None:
    client, server, accepted = handshake(PerMessageDeflate())  # offers client_max_window_bits
    [event] = accepted
    assert isinstance(event, AcceptConnection)
    [ext] = event.extensions
    assert isinstance(ext, PerMessageDeflate) and ext.enabled()
    assert ext.server_no_context_takeover and ext.client_no_context_takeover
    assert RESPONSE.startswith("permessage-deflate; ")
    # the fan-out's frame, made once, is read by the client as an ordinary message
    for text in ("hello", "hello"):  # twice: no context carried between messages
        client.receive_data(deflate_frame(int(Opcode.TEXT), text.encode()))
        assert [e.data for e in client.events() if isinstance(e, TextMessage)] == [text]
    client.receive_data(deflate_frame(int(Opcode.BINARY), b"\x00" * 1000))
    assert [bytes(e.data) for e in client.events() if isinstance(e, BytesMessage)] == [
        b"\x00" * 1000
    ]
    # and the client's compressed messages reach the server
    server.receive_data(client.send(TextMessage(data="from the client " * 50)))
    assert [e.data for e in server.events()] == ["from the client " * 50]


def test_an_offer_that_cannot_be_honoured_is_declined() -> None:
    _, _, accepted = handshake(PerMessageDeflate(server_max_window_bits=10))
    [event] = accepted
    assert isinstance(event, AcceptConnection) and event.extensions == []


def test_no_offer_no_extension() -> None:
    _, _, accepted = handshake(None)
    [event] = accepted
    assert isinstance(event, AcceptConnection) and event.extensions == []


@pytest.mark.parametrize("fragments", [1, 4])
def test_a_compression_bomb_is_refused_with_1009(fragments: int) -> None:
    client, server, _ = handshake(PerMessageDeflate(), max_message=64 * 1024)
    data = "a" * (16 * 1024 * 1024)  # 16 MiB of the same byte: about 16 KB compressed
    size = len(data) // fragments
    wire = b"".join(
        client.send(
            TextMessage(data=data[i * size : (i + 1) * size], message_finished=i == fragments - 1)
        )
        for i in range(fragments)
    )
    assert len(wire) < 100_000
    server.receive_data(wire)
    events = list(server.events())
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1009
    assert not any(isinstance(e, TextMessage) and len(e.data) > 64 * 1024 for e in events)


def test_a_message_just_under_the_limit_passes_and_corrupt_data_is_1007() -> None:
    client, server, _ = handshake(PerMessageDeflate(), max_message=1000)
    server.receive_data(client.send(TextMessage(data="b" * 1000)))
    assert [e.data for e in server.events()] == ["b" * 1000]
    server.receive_data(b"\xc1\x84" + b"\x00" * 4 + b"\xff\xff\xff\xff")  # masked garbage
    events = list(server.events())
    assert isinstance(events[-1], CloseConnection) and events[-1].code == 1007


class _OddOffer(PerMessageDeflate):
    def offer(self) -> str:
        return "client_max_window_bits=99"


def test_a_malformed_offer_is_declined_not_an_error() -> None:
    _, _, accepted = handshake(_OddOffer())
    [event] = accepted
    assert isinstance(event, AcceptConnection) and event.extensions == []


def test_control_frames_pass_uncompressed() -> None:
    client, server, _ = handshake(PerMessageDeflate())
    server.receive_data(client.send(Ping(payload=b"still there?")))
    [ping] = list(server.events())
    assert isinstance(ping, Ping) and ping.payload == b"still there?"


def test_negotiate_takes_the_first_offer_it_can_honour() -> None:
    headers = [
        (b"Host", b"x"),
        (
            b"Sec-WebSocket-Extensions",
            b"x-other; a=1, permessage-deflate; server_max_window_bits=10",
        ),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    ]
    negotiated = negotiate(headers, 1000)
    assert negotiated is not None
    extension, answer = negotiated
    assert answer == RESPONSE.encode() and extension.enabled() and extension.max_message == 1000
    assert negotiate(headers[:2], 1000) is None  # only an offer it cannot honour
    assert negotiate([(b"Host", b"x")], 1000) is None
