"""The ZeroMQ ingress core (gripcore._zmqin): tnetstrings, Pushpin's PULL and SUB messages,
the SUB socket's subscriptions; and the node's side of it (receive_zmq, watch_channels)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripcore._config import Config
from gripcore._errors import PublishError
from gripcore._hub import ChannelChange, Hub, Subscriber, Transport
from gripcore._items import Item, parse_item
from gripcore._node import unsupported_options
from gripcore._zmqin import (
    MAX_TNETSTRING_DEPTH,
    advertised_uris,
    decode_pull_message,
    decode_sub_message,
    dump_tnetstring,
    encode_pull_message,
    handle_command,
    ingress_sockets,
    parse_tnetstring,
    subscription_op,
)

from .sansio_support import Harness

# (tnetstring, value) vectors, as data: strings are bytes, dict keys too.
TNET_VECTORS: list[tuple[bytes, Any]] = [
    (b"0:,", b""),
    (b"5:hello,", b"hello"),
    (b"3:a:b,", b"a:b"),
    (b"1:0#", 0),
    (b"3:-12#", -12),
    (b"3:1.5^", 1.5),
    (b"4:true!", True),
    (b"5:false!", False),
    (b"0:~", None),
    (b"0:]", []),
    (b"8:1:a,1:1#]", [b"a", 1]),
    (b"0:}", {}),
    (b"18:1:k,4:1:v,]1:n,0:~}", {b"k": [b"v"], b"n": None}),
]

BAD_TNET: list[tuple[bytes, str]] = [
    (b"", "length prefix"),
    (b"hello", "length prefix"),
    (b":x,", "length prefix"),
    (b"01:a,", "length prefix"),
    (b"1a:a,", "length prefix"),
    (b"1234567890:a,", "length prefix"),
    (b"5:abc,", "truncated"),
    (b"3:abc", "truncated"),
    (b"1:a?", "type tag"),
    (b"1:x#", "integer"),
    (b"2:--#", "integer"),
    (b"1:x^", "float"),
    (b"3:yes!", "boolean"),
    (b"1:x~", "null"),
    (b"4:1:a,}", "dict without a value"),
    (b"8:1:1#1:a,}", "dict key is not a string"),
    (b"5:hello,x", "trailing data"),
]


@pytest.mark.parametrize(("data", "value"), TNET_VECTORS)
def test_tnetstring_vectors(data: bytes, value: Any) -> None:
    assert parse_tnetstring(data) == value


@pytest.mark.parametrize(("data", "value"), TNET_VECTORS)
def test_tnetstring_every_cut_and_trailing_byte_is_an_error(data: bytes, value: Any) -> None:
    for end in range(len(data)):
        with pytest.raises(PublishError, match="tnetstring parse failed"):
            parse_tnetstring(data[:end])
    with pytest.raises(PublishError, match="trailing data"):
        parse_tnetstring(data + b"0:~")


@pytest.mark.parametrize(("data", "reason"), BAD_TNET)
def test_tnetstring_errors(data: bytes, reason: str) -> None:
    with pytest.raises(PublishError, match=reason):
        parse_tnetstring(data)


def _nested(depth: int) -> bytes:
    data = b"0:]"
    for _ in range(depth):
        data = b"%d:%s]" % (len(data), data)
    return data


def test_tnetstring_depth_is_bounded() -> None:
    assert parse_tnetstring(_nested(MAX_TNETSTRING_DEPTH - 1))  # MAX lists
    with pytest.raises(PublishError, match="nested too deep"):
        parse_tnetstring(_nested(MAX_TNETSTRING_DEPTH))


def test_tnetstring_agrees_with_the_tnetstring_package() -> None:
    tnetstring = pytest.importorskip("tnetstring")
    value = {b"a": [b"x", 1, -2, True, None, {b"b": b"\xff\x00"}], b"c": {}}
    assert parse_tnetstring(tnetstring.dumps(value)) == tnetstring.loads(tnetstring.dumps(value))


@given(st.binary(max_size=64))
def test_arbitrary_frames_raise_only_publish_errors(data: bytes) -> None:
    for frames, decode in (([data], decode_pull_message), ([b"c", data], decode_sub_message)):
        try:
            assert isinstance(decode(frames), Item)
        except PublishError as exc:
            assert exc.msg.startswith("received message with")


# --- messages ------------------------------------------------------------------------------------


def _tnet(value: Any) -> bytes:
    """A minimal tnetstring encoder for the vectors below (str is sent as UTF-8 bytes)."""
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s," % (len(value), value)
    if isinstance(value, bool):
        payload = b"true" if value else b"false"
        return b"%d:%s!" % (len(payload), payload)
    if isinstance(value, int):
        payload = str(value).encode()
        return b"%d:%s#" % (len(payload), payload)
    if isinstance(value, list):
        payload = b"".join(_tnet(v) for v in value)
        return b"%d:%s]" % (len(payload), payload)
    assert isinstance(value, dict)
    payload = b"".join(_tnet(k) + _tnet(v) for k, v in value.items())
    return b"%d:%s}" % (len(payload), payload)


def test_json_message_is_an_item_as_over_http() -> None:
    obj = {"channel": "c", "id": "1", "formats": {"http-stream": {"content": "x"}}}
    item = decode_pull_message([b"J" + json.dumps(obj).encode()])
    assert item == parse_item(obj)


def test_tnetstring_message_with_and_without_its_t() -> None:
    obj = {"channel": "c", "prev-id": "0", "meta": {"k": "v"}, "http-stream": {"content": "x"}}
    expected = parse_item(obj)
    assert decode_pull_message([_tnet(obj)]) == expected
    assert decode_pull_message([b"T" + _tnet(obj)]) == expected


def test_tnetstring_content_is_taken_byte_for_byte() -> None:
    obj = {
        "channel": "c",
        "formats": {
            "http-response": {"code": 201, "headers": [["X-A", "1"]], "body": b"\xff\x00"},
            "http-stream": {"content-bin": b"\x80"},
            "ws-message": {"content": b"text \xc3\xa9"},
        },
    }
    item = decode_pull_message([_tnet(obj)])
    assert item.http_response is not None and item.http_response.body == b"\xff\x00"
    assert item.http_response.code == 201 and item.http_response.headers == (("X-A", "1"),)
    assert item.http_stream is not None and item.http_stream.content == b"\x80"
    assert item.ws_message is not None
    assert (item.ws_message.type, item.ws_message.content) == ("text", "text é".encode())


def test_tnetstring_ws_message_types_follow_pushpin() -> None:
    def ws(fmt: dict[str, Any]) -> Any:
        item = decode_pull_message([_tnet({"channel": "c", "ws-message": fmt})])
        assert item.ws_message is not None
        return item.ws_message.type, item.ws_message.content

    assert ws({"content-bin": b"\x01"}) == ("binary", b"\x01")
    assert ws({"content": b"\x01", "type": "binary"}) == ("binary", b"\x01")
    assert ws({"content": b"a", "content-bin": b"b"}) == ("binary", b"b")  # -bin wins


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "parts != 1"),
        ([b"J{}", b"J{}"], "parts != 1"),
        ([b"J{"], "json parse failed"),
        ([b"J\xff"], "json parse failed"),
        ([b'J{"channel": NaN}'], "json parse failed"),  # not JSON, as over HTTP
        ([b"J[]"], "not a valid json object"),
        ([b"J{}"], "does not contain 'channel'"),
        ([b"5:hello,"], "publish item object is not an object"),
        ([_tnet({"channel": b"\xff", "http-stream": {"content": "x"}})], "not UTF-8"),
        ([_tnet({"channel": "c", "http-stream": {"content": 1}})], "'content' with wrong type"),
        ([_tnet({"channel": "c", "http-stream": [b"x"]})], "http-stream.* is not an object"),
        ([_tnet({"channel": "c", "formats": {"other": b"x"}})], "no formats specified"),
        ([_tnet({"channel": "c", "formats": b"x"})], "'formats' with wrong type"),
    ],
)
def test_invalid_pull_messages(frames: list[bytes], message: str) -> None:
    with pytest.raises(PublishError, match=message):
        decode_pull_message(frames)


def test_sub_message_takes_its_channel_from_the_first_frame() -> None:
    item = decode_sub_message([b"news", b'J{"channel": "other", "http-stream": {"content": "x"}}'])
    assert item.channel == "news"
    item = decode_sub_message([b"", _tnet({"channel": "own", "http-stream": {"content": "x"}})])
    assert item.channel == "own"  # an empty first frame leaves the item's


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([b"J{}"], "parts != 2"),
        ([b"a", b"b", b"c"], "parts != 2"),
        ([b"\xff", b'J{"http-stream": {"content": "x"}}'], "channel that is not UTF-8"),
        ([b"c", b"J{}"], "no formats specified"),
    ],
)
def test_invalid_sub_messages(frames: list[bytes], message: str) -> None:
    with pytest.raises(PublishError, match=message):
        decode_sub_message(frames)


def test_content_limit_applies() -> None:
    frame = _tnet({"channel": "c", "http-stream": {"content": b"x" * 11}})
    with pytest.raises(PublishError, match="over the limit of 10"):
        decode_pull_message([frame], max_content_size=10)


def test_encode_then_decode_is_the_same_item() -> None:
    item = Item(
        channel="c",
        id="1",
        ws_message=parse_item({"channel": "c", "ws-message": {"content-bin": "AAE="}}).ws_message,
    )
    frame = encode_pull_message(item)
    assert frame.startswith(b"J{")
    assert decode_pull_message([frame]) == item


def test_subscription_ops() -> None:
    assert subscription_op(ChannelChange("é", subscribed=True)) == (True, "é".encode())
    assert subscription_op(ChannelChange("a", subscribed=False)) == (False, b"a")


# --- the hub and the node ------------------------------------------------------------------------


def test_hub_tells_its_listener_of_each_change_and_keeps_them_too() -> None:
    hub = Hub()
    seen: list[ChannelChange] = []
    hub.channel_listener = seen.append
    a, b = Subscriber(Transport.STREAM), Subscriber(Transport.STREAM)
    hub.subscribe(a, "x")
    hub.subscribe(b, "x")
    hub.unsubscribe(a, "x")
    hub.remove(b)
    assert seen == [ChannelChange("x", True), ChannelChange("x", False)]
    assert hub.take_channel_changes() == seen


def test_node_watch_channels_reports_existing_channels_first() -> None:
    harness = Harness()
    hub = harness.node.broker.hub
    sub = Subscriber(Transport.STREAM)
    hub.subscribe(sub, "old")
    ops: list[tuple[bool, bytes]] = []
    harness.node.watch_channels(ops.append)
    hub.subscribe(sub, "new")
    hub.remove(sub)
    assert ops == [(True, b"old"), (True, b"new"), (False, b"old"), (False, b"new")]


def test_node_receive_zmq_publishes_or_counts() -> None:
    harness = Harness()
    node = harness.node
    sub = Subscriber(Transport.STREAM)
    node.broker.hub.subscribe(sub, "c")
    node.receive_zmq("pull", [b'J{"channel": "c", "http-stream": {"content": "a"}}'])
    node.receive_zmq("sub", [b"c", b'J{"http-stream": {"content": "b"}}'])
    node.receive_zmq("pull", [b"garbage"])
    node.receive_zmq("sub", [b"c"])
    assert node.broker.stats.received == 2
    text = node.metrics.render().decode()
    assert 'gripcore_zmq_items_received_total{socket="pull"} 1' in text
    assert 'gripcore_zmq_items_received_total{socket="sub"} 1' in text
    assert 'gripcore_zmq_invalid_messages_total{socket="pull"} 1' in text
    assert 'gripcore_zmq_invalid_messages_total{socket="sub"} 1' in text


def test_the_sub_socket_is_refused_with_several_workers() -> None:
    config = Config(workers=2, push_in_sub_spec="tcp://127.0.0.1:5562")
    assert unsupported_options(config) == "--push-in-sub-spec: not available with --workers above 1"
    assert unsupported_options(Config(workers=2, push_in_spec="tcp://127.0.0.1:5560")) is None


def test_drivers_without_pyzmq_say_which_extra_to_install() -> None:
    from gripcore.adapters._zmqload import MISSING_ZMQ, import_zmq

    with pytest.raises(OSError, match=r"install gripcore\[zmq\]"):
        import_zmq("zmq.no_such_flavour")
    assert MISSING_ZMQ.endswith("need pyzmq: install gripcore[zmq]")


# --- the command socket --------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "value"), TNET_VECTORS)
def test_dump_tnetstring_is_the_inverse_of_parse(data: bytes, value: Any) -> None:
    assert dump_tnetstring(value) == data
    assert parse_tnetstring(dump_tnetstring(value)) == value


def test_dump_tnetstring_text_and_errors() -> None:
    assert dump_tnetstring({"é": "x"}) == b"9:2:\xc3\xa9,1:x,}"
    with pytest.raises(TypeError, match="cannot encode set"):
        dump_tnetstring({1})


URIS = {"command": "tcp://*:5563", "publish-pull": "tcp://*:5560"}


def test_get_zmq_uris_as_pubcontrol_asks() -> None:
    answer = parse_tnetstring(handle_command(b"25:6:method,12:get-zmq-uris,}", URIS))
    assert answer == {
        b"success": True,
        b"value": {b"command": b"tcp://*:5563", b"publish-pull": b"tcp://*:5560"},
    }


def test_command_answers_carry_the_id_and_refuse_other_methods() -> None:
    request = dump_tnetstring({"id": "r1", "method": "recover"})
    answer = parse_tnetstring(handle_command(request, URIS))
    assert answer == {b"id": b"r1", b"success": False, b"condition": b"method-not-found"}


@pytest.mark.parametrize("frame", [b"", b"garbage", b"0:}", b"9:6:method,}", b"5:1:a,]"])
def test_command_that_does_not_parse_is_bad_format(frame: bytes) -> None:
    answer = parse_tnetstring(handle_command(frame, URIS))
    assert answer == {b"success": False, b"condition": b"bad-format"}


def test_advertised_uris_as_configured_or_as_bound() -> None:
    specs = {"pull": "tcp://*:5560", "sub": "tcp://127.0.0.1:*", "command": "ipc:///tmp/c"}
    endpoints = {"pull": "tcp://0.0.0.0:5560", "sub": "tcp://127.0.0.1:40001", "command": "x"}
    assert advertised_uris(specs, endpoints) == {
        "publish-pull": "tcp://*:5560",
        "publish-sub": "tcp://127.0.0.1:40001",
        "command": "ipc:///tmp/c",
    }


def test_ingress_sockets_for_the_options_set() -> None:
    assert ingress_sockets(None, None, None) == []
    assert ingress_sockets("tcp://a:1", None, "ipc:///c") == [
        ("pull", "PULL", "tcp://a:1"),
        ("command", "REP", "ipc:///c"),
    ]
    assert ingress_sockets(None, "tcp://a:2", None) == [("sub", "SUB", "tcp://a:2")]
