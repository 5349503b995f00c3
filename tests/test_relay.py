"""Tests of the publish relay between workers (gripcore._relay) and of the node's two publish
paths: `publish` (relays, then fans out) and `publish_relayed` (fans out only)."""

from __future__ import annotations

import os
import pickle

import pytest

from gripcore._config import Config
from gripcore._errors import LocalProtocolError
from gripcore._hub import Subscriber, Transport
from gripcore._items import Item, parse_publish_body
from gripcore._node import ProxyNode, unsupported_options
from gripcore._relay import (
    MAX_RELAY_FRAME,
    RelayDecoder,
    encode_relay_frame,
    relay_frame_limit,
)

BODY = (
    b'{"items": ['
    b'{"channel": "a", "id": "1", "meta": {"k": "v"},'
    b' "formats": {"http-stream": {"content": "data: one\\n\\n"}, "ws-message": {"content": "one"}}},'
    b'{"channel": "a", "id": "2", "prev-id": "1",'
    b' "formats": {"http-response": {"code": 201, "headers": {"X-A": "b"}, "body": "two"}}},'
    b'{"channel": "b", "formats": {"ws-message": {"action": "close", "code": 4000}}}'
    b"]}"
)


def items() -> list[Item]:
    return parse_publish_body(BODY)


def test_a_frame_carries_a_batch_and_its_length() -> None:
    batch = items()
    frame = encode_relay_frame(batch)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert RelayDecoder().receive_data(frame) == [batch]
    decoded = RelayDecoder().receive_data(frame)[0]
    assert decoded[0].meta == {"k": "v"}
    with pytest.raises(TypeError):  # still the read-only view the parser made
        decoded[0].meta["k"] = "w"  # type: ignore[index]


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    batch = items()
    stream = encode_relay_frame(batch[:1]) + encode_relay_frame(batch[1:]) + encode_relay_frame([])
    decoder = RelayDecoder()
    out: list[list[Item]] = []
    for i in range(len(stream)):  # one byte at a time
        out += decoder.receive_data(stream[i : i + 1])
    assert out == [batch[:1], batch[1:], []]
    assert decoder.buffered == 0
    # everything at once, with the start of a fourth frame left waiting
    decoder = RelayDecoder()
    assert decoder.receive_data(stream + stream[:6]) == [batch[:1], batch[1:], []]
    assert decoder.buffered == 6


def test_a_frame_over_the_limit_is_refused() -> None:
    batch = items()
    frame = encode_relay_frame(batch)
    size = len(frame) - 4
    with pytest.raises(LocalProtocolError, match=f"relay frame of {size} bytes exceeds {size - 1}"):
        RelayDecoder(max_frame=size - 1).receive_data(frame[:4])
    assert RelayDecoder(max_frame=size).receive_data(frame) == [batch]
    with pytest.raises(LocalProtocolError, match=f"exceeds {size - 1}"):
        encode_relay_frame(batch, max_frame=size - 1)
    assert encode_relay_frame(batch, max_frame=size) == frame


def test_the_limit_follows_the_publish_body_limit() -> None:
    assert relay_frame_limit(1_000_000) == MAX_RELAY_FRAME
    assert relay_frame_limit(100_000_000) == 800_000_000
    # the default limit holds a full default-size publish body with room to spare
    content = "x" * 30_000
    body = (
        b'{"items": ['
        + b",".join(
            b'{"channel": "c", "formats": {"http-stream": {"content": "%s"}}}' % content.encode()
            for _ in range(33)
        )
        + b"]}"
    )
    assert len(body) < Config().max_publish_body
    assert len(encode_relay_frame(parse_publish_body(body))) < relay_frame_limit(len(body))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not a pickle", "relay frame does not decode: "),
        (pickle.dumps({"items": []}), "relay frame is not a batch of items"),
        (pickle.dumps(["an item?"]), "relay frame is not a batch of items"),
    ],
)
def test_a_frame_that_is_not_a_batch_is_a_broken_relay(payload: bytes, message: str) -> None:
    frame = len(payload).to_bytes(4, "big") + payload
    with pytest.raises(LocalProtocolError, match=message):
        RelayDecoder().receive_data(frame)


# --- the node's side -----------------------------------------------------------------------------


def make_node(**config: object) -> ProxyNode:
    return ProxyNode(
        Config(**config),  # type: ignore[arg-type]
        clock=lambda: 100.0,
        wall_clock=lambda: 1_700_000_000.0,
        read_file=lambda path: b"",
        is_file=os.path.isfile,
        random_bytes=os.urandom,
    )


class Owner:
    """What a driver's connection is to the hub: the object a woken subscriber names."""


def subscribe(node: ProxyNode, channel: str) -> Subscriber:
    sub = Subscriber(Transport.STREAM, owner=Owner())
    node.broker.hub.subscribe(sub, channel)
    return sub


def test_publish_relays_first_and_publish_relayed_does_not_relay_again() -> None:
    worker0, worker1 = make_node(), make_node()
    frames: list[bytes] = []
    order: list[str] = []
    worker0.relay = lambda frame: (frames.append(frame), order.append("relay"))  # type: ignore[func-returns-value]
    worker0.schedule_flush = lambda: order.append("flush")
    worker1.schedule_flush = lambda: order.append("flush1")
    subs0 = subscribe(worker0, "a")
    subs1 = subscribe(worker1, "a")
    batch = items()
    worker0.publish(batch)
    worker0.publish(batch[:1])  # a duplicate id: dropped by each sequencer alike
    assert order == ["relay", "flush", "relay"]
    decoder = RelayDecoder()
    relayed = decoder.receive_data(b"".join(frames))
    assert relayed == [batch, batch[:1]]
    for received in relayed:
        worker1.publish_relayed(received)
    assert order[-1] == "flush1"
    assert subs0.outbuf == subs1.outbuf == bytearray(b"b\r\ndata: one\n\n\r\n")
    for node in (worker0, worker1):
        assert node.broker.stats.received == 4
        assert node.broker.sequencer.stats.duplicates_dropped == 1


def test_a_node_without_siblings_does_not_relay() -> None:
    node = make_node()
    sub = subscribe(node, "a")
    node.publish(items()[:1])
    assert node.relay is None
    assert sub.outbuf == bytearray(b"b\r\ndata: one\n\n\r\n")


@pytest.mark.parametrize(
    ("adapter", "workers", "problem"),
    [
        ("asyncio", 1, None),
        ("asyncio", 4, None),
        ("gevent", 1, None),
        ("gevent", 2, "--workers 2: only the asyncio adapter runs several workers"),
    ],
)
def test_only_the_asyncio_adapter_runs_workers(
    adapter: str, workers: int, problem: str | None
) -> None:
    assert unsupported_options(Config(adapter=adapter, workers=workers)) == problem


def test_tls_listeners_are_refused_where_not_served() -> None:
    tls = {"tls_listen": (("127.0.0.1", 8443),), "tls_cert": "c.pem", "tls_key": "k.pem"}
    assert unsupported_options(Config(adapter="gevent", **tls)) == (  # type: ignore[arg-type]
        "--tls-listen: only the asyncio adapter serves TLS so far"
    )
    assert unsupported_options(Config(workers=2, **tls)) == (  # type: ignore[arg-type]
        "--tls-listen: not available with --workers above 1 yet"
    )
    assert unsupported_options(Config(**tls)) is None  # type: ignore[arg-type]
