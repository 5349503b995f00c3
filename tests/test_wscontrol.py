"""GRIP WebSocket control messages, the origin message rule and the `grip` extension."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripcore._errors import ControlMessageError, LocalProtocolError, RemoteProtocolError
from gripcore._wscontrol import (
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_SEND_DELAYED_TIMEOUT,
    KEEP_ALIVE_MODES,
    MAX_TIMEOUT,
    MESSAGE_TYPES,
    ControlMessage,
    Detach,
    FlushDelayed,
    KeepAlive,
    SendDelayed,
    Session,
    SetMeta,
    Subscribe,
    Unsubscribe,
    classify_origin_message,
    encode_control_message,
    parse_control_message,
    parse_grip_extension,
)

# (JSON after "c:", the message it parses to)
VALID_MESSAGES: list[tuple[str, ControlMessage]] = [
    ('{"type":"subscribe","channel":"room"}', Subscribe("room")),
    (
        '{"type":"subscribe","channel":"room","filters":["skip-self","x"]}',
        Subscribe("room", ("skip-self", "x")),
    ),
    ('{"type":"subscribe","channel":"room","filters":[]}', Subscribe("room")),
    ('{"type":"subscribe","channel":"room","filters":null}', Subscribe("room")),
    ('{"type":"subscribe","channel":"caf\\u00e9 \u263a"}', Subscribe("café ☺")),
    ('{"type":"subscribe","channel":"a","extra":{"x":[1]},"id":5}', Subscribe("a")),
    (' \n{ "channel" : "a" , "type" : "subscribe" }\t', Subscribe("a")),
    ('{"type":"unsubscribe","channel":"room"}', Unsubscribe("room")),
    ('{"type":"detach"}', Detach()),
    ('{"type":"session","id":"s1"}', Session("s1")),
    ('{"type":"session"}', Session()),
    ('{"type":"session","id":null}', Session(None)),
    ('{"type":"session","id":""}', Session("")),
    ('{"type":"set-meta","name":"user","value":"alice"}', SetMeta("user", "alice")),
    ('{"type":"set-meta","name":"user"}', SetMeta("user")),
    ('{"type":"set-meta","name":"user","value":null}', SetMeta("user", None)),
    ('{"type":"set-meta","name":"user","value":""}', SetMeta("user", "")),
    ('{"type":"keep-alive"}', KeepAlive(None)),
    ('{"type":"keep-alive","content":"{}"}', KeepAlive(b"{}", "text", 55, "idle")),
    ('{"type":"keep-alive","content":""}', KeepAlive(b"")),
    ('{"type":"keep-alive","content":"\u00e9"}', KeepAlive("é".encode())),
    # Quirk kept from Pushpin: content-bin without message-type still means a TEXT frame.
    ('{"type":"keep-alive","content-bin":"AAE="}', KeepAlive(b"\x00\x01", "text")),
    ('{"type":"keep-alive","content-bin":"","content":"x"}', KeepAlive(b"")),
    ('{"type":"keep-alive","content":"x","content-bin":"eQ=="}', KeepAlive(b"y")),
    ('{"type":"keep-alive","content":"x","message-type":"binary"}', KeepAlive(b"x", "binary")),
    ('{"type":"keep-alive","content":"x","message-type":"ping"}', KeepAlive(b"x", "ping")),
    ('{"type":"keep-alive","content":"x","message-type":"pong"}', KeepAlive(b"x", "pong")),
    ('{"type":"keep-alive","content":"x","message-type":"text"}', KeepAlive(b"x", "text")),
    ('{"type":"keep-alive","content":"x","timeout":0}', KeepAlive(b"x", timeout=55)),
    ('{"type":"keep-alive","content":"x","timeout":null}', KeepAlive(b"x", timeout=55)),
    ('{"type":"keep-alive","content":"x","timeout":30}', KeepAlive(b"x", timeout=30)),
    (
        '{"type":"keep-alive","content":"x","timeout":2147483647}',
        KeepAlive(b"x", timeout=MAX_TIMEOUT),
    ),
    ('{"type":"keep-alive","content":"x","mode":"interval"}', KeepAlive(b"x", mode="interval")),
    ('{"type":"keep-alive","content":"x","mode":"idle"}', KeepAlive(b"x", mode="idle")),
    ('{"type":"keep-alive","mode":"interval","timeout":5}', KeepAlive(None, "text", 5, "interval")),
    ('{"type":"send-delayed","content":"hi"}', SendDelayed(b"hi")),
    ('{"type":"send-delayed"}', SendDelayed(b"")),
    ('{"type":"send-delayed","content":"hi","timeout":0}', SendDelayed(b"hi", timeout=1)),
    ('{"type":"send-delayed","content":"hi","timeout":10}', SendDelayed(b"hi", timeout=10)),
    (
        '{"type":"send-delayed","content-bin":"/w==","message-type":"binary"}',
        SendDelayed(b"\xff", "binary"),
    ),
    ('{"type":"send-delayed","content":"hi","mode":"ignored"}', SendDelayed(b"hi")),
    ('{"type":"flush-delayed"}', FlushDelayed()),
]

# (payload, text the ControlMessageError message must contain)
INVALID_MESSAGES: list[tuple[bytes | str, str]] = [
    (b"", "not valid JSON"),
    (b"{", "not valid JSON"),
    (b'{"type":"detach"} x', "not valid JSON"),
    (b"\xff", "not valid UTF-8"),
    ('\ufeff{"type":"detach"}', "not valid JSON"),
    ('{"type":"keep-alive","timeout":NaN}', "NaN is not JSON"),
    ('{"type":"keep-alive","timeout":-Infinity}', "-Infinity is not JSON"),
    ('{"type":"keep-alive","timeout":' + "9" * 5000 + "}", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[]", "must be a JSON object, not an array"),
    ('"subscribe"', "must be a JSON object, not a string"),
    ("1", "must be a JSON object, not a number"),
    ("null", "must be a JSON object, not null"),
    ("true", "must be a JSON object, not a boolean"),
    ("{}", "control message has no 'type'"),
    ('{"type":null}', "control message has no 'type'"),
    ('{"type":1}', "'type' must be a string, not a number"),
    ('{"type":{"a":1}}', "'type' must be a string, not an object"),
    ('{"type":"Subscribe","channel":"a"}', "unknown control message type 'Subscribe'"),
    ('{"type":"close"}', "unknown control message type 'close'"),
    ('{"type":"subscribe"}', "'subscribe' control message: missing 'channel'"),
    ('{"type":"subscribe","channel":""}', "'subscribe' control message: channel must not be empty"),
    ('{"type":"subscribe","channel":5}', "'channel' must be a string, not a number"),
    ('{"type":"subscribe","channel":["a"]}', "'channel' must be a string, not an array"),
    ('{"type":"subscribe","channel":"\\ud800"}', "channel is not valid Unicode"),
    (
        '{"type":"subscribe","channel":"a","filters":"skip-self"}',
        "'filters' must be an array of strings",
    ),
    ('{"type":"subscribe","channel":"a","filters":[1]}', "'filters' must be an array of strings"),
    ('{"type":"subscribe","channel":"a","filters":{}}', "'filters' must be an array of strings"),
    (
        '{"type":"subscribe","channel":"a","filters":["\\udfff"]}',
        "filter name is not valid Unicode",
    ),
    ('{"type":"unsubscribe"}', "'unsubscribe' control message: missing 'channel'"),
    ('{"type":"unsubscribe","channel":""}', "channel must not be empty"),
    ('{"type":"session","id":5}', "'id' must be a string, not a number"),
    ('{"type":"set-meta","value":"x"}', "missing 'name'"),
    ('{"type":"set-meta","name":""}', "meta name must not be empty"),
    ('{"type":"set-meta","name":"user","value":5}', "'value' must be a string, not a number"),
    ('{"type":"set-meta","name":"user","value":false}', "'value' must be a string, not a boolean"),
    ('{"type":"keep-alive","content":5}', "'content' must be a string"),
    ('{"type":"keep-alive","content":"\\ud800"}', "'content' is not valid Unicode"),
    ('{"type":"keep-alive","content-bin":5}', "'content-bin' must be a string"),
    ('{"type":"keep-alive","content-bin":"!!!!"}', "'content-bin' is not valid base64"),
    ('{"type":"keep-alive","content-bin":"AAE"}', "'content-bin' is not valid base64"),
    ('{"type":"keep-alive","content-bin":"AA\\nE="}', "'content-bin' is not valid base64"),
    ('{"type":"keep-alive","content-bin":"\u00e9\u00e9=="}', "'content-bin' is not valid base64"),
    ('{"type":"keep-alive","message-type":"close"}', "'message-type' must be one of text, binary"),
    ('{"type":"keep-alive","message-type":1}', "'message-type' must be a string"),
    ('{"type":"keep-alive","timeout":"5"}', "'timeout' must be an integer in 0..2147483647"),
    ('{"type":"keep-alive","timeout":-1}', "'timeout' must be an integer"),
    ('{"type":"keep-alive","timeout":1.5}', "'timeout' must be an integer"),
    ('{"type":"keep-alive","timeout":30.0}', "'timeout' must be an integer"),
    ('{"type":"keep-alive","timeout":true}', "'timeout' must be an integer"),
    ('{"type":"keep-alive","timeout":2147483648}', "'timeout' must be an integer"),
    (
        '{"type":"keep-alive","mode":"sometimes"}',
        "'mode' must be one of idle, interval, not 'sometimes'",
    ),
    ('{"type":"send-delayed","timeout":-5}', "'send-delayed' control message: 'timeout' must be"),
    ('{"type":"send-delayed","message-type":"TEXT"}', "'message-type' must be one of"),
]

# (message, its exact encoding)
ENCODE_VECTORS: list[tuple[ControlMessage, bytes]] = [
    (Subscribe("room"), b'c:{"type":"subscribe","channel":"room"}'),
    (
        Subscribe("r", ("skip-self",)),
        b'c:{"type":"subscribe","channel":"r","filters":["skip-self"]}',
    ),
    (Subscribe("café"), 'c:{"type":"subscribe","channel":"café"}'.encode()),
    (Unsubscribe("room"), b'c:{"type":"unsubscribe","channel":"room"}'),
    (Detach(), b'c:{"type":"detach"}'),
    (Session(), b'c:{"type":"session"}'),
    (Session("s"), b'c:{"type":"session","id":"s"}'),
    (SetMeta("user"), b'c:{"type":"set-meta","name":"user"}'),
    (SetMeta("user", "a"), b'c:{"type":"set-meta","name":"user","value":"a"}'),
    (KeepAlive(), b'c:{"type":"keep-alive"}'),
    (KeepAlive(b"{}"), b'c:{"type":"keep-alive","content":"{}"}'),
    (
        KeepAlive(b"\x00\x01", "binary", 30, "interval"),
        b'c:{"type":"keep-alive","content-bin":"AAE=","message-type":"binary","timeout":30,'
        b'"mode":"interval"}',
    ),
    (
        KeepAlive(b"\xff", "ping"),
        b'c:{"type":"keep-alive","content-bin":"/w==","message-type":"ping"}',
    ),
    (SendDelayed(b"hi"), b'c:{"type":"send-delayed","content":"hi"}'),
    (
        SendDelayed(b"x", "binary", 5),
        b'c:{"type":"send-delayed","content-bin":"eA==","message-type":"binary","timeout":5}',
    ),
    (FlushDelayed(), b'c:{"type":"flush-delayed"}'),
]

# (data, is_text, message_prefix, result)
CLASSIFY_VECTORS: list[tuple[bytes, bool, bytes, ControlMessage | bytes | None]] = [
    (b'c:{"type":"detach"}', True, b"m:", Detach()),
    (b'c:{"type":"detach"}', False, b"m:", None),
    (b'c:{"type":"detach"}', False, b"", b'c:{"type":"detach"}'),
    (b'c:{"type":"detach"}', True, b"", Detach()),
    (b'c:{"type":"detach"}', True, b"c:", Detach()),
    (b"m:hello", True, b"m:", b"hello"),
    (b"m:hello", False, b"m:", b"hello"),
    (b"m:", True, b"m:", b""),
    (b"m", True, b"m:", None),
    (b"hello", True, b"m:", None),
    (b"hello", False, b"m:", None),
    (b"", True, b"m:", None),
    (b"hello", True, b"", b"hello"),
    (b"\x00\xff", False, b"", b"\x00\xff"),
    (b"", False, b"", b""),
    (b"x-hi", True, b"x-", b"hi"),
    (b"m:hi", True, b"x-", None),
    (b"M:hi", True, b"m:", None),
    (b"C:{}", True, b"m:", None),
]

# (Sec-WebSocket-Extensions value, message prefix or None)
EXTENSION_VECTORS: list[tuple[bytes, bytes | None]] = [
    (b"", None),
    (b"grip", b"m:"),
    (b" grip ", b"m:"),
    (b"GRIP", b"m:"),
    (b"grip; message-prefix=foo", b"foo"),
    (b'grip; message-prefix=""', b""),
    (b'grip; message-prefix="m:"', b"m:"),
    (b'grip; message-prefix="a\\"b\\\\c"', b'a"b\\c'),
    (b"grip;message-prefix=x", b"x"),
    (b'grip ; message-prefix = "x" ', b"x"),
    (b"grip; Message-Prefix=x", b"x"),
    (b"grip; message-prefix", b""),
    (b"grip; other=1", b"m:"),
    (b"grip; other; message-prefix=y; z=2", b"y"),
    (b"gripx", None),
    (b"permessage-deflate", None),
    (b"permessage-deflate; client_max_window_bits, grip; message-prefix=m", b"m"),
    (b'x; a="grip, y", grip; message-prefix="p,;q"', b"p,;q"),
    (b'x; a="grip, y"', None),
    (b", , grip", b"m:"),
    (b"grip, grip; message-prefix=x", b"m:"),
    (b'grip; message-prefix=x, junk "', b"x"),
    (b"x,\tgrip", b"m:"),
]

# (Sec-WebSocket-Extensions value, text the RemoteProtocolError message must contain)
BAD_EXTENSION_VECTORS: list[tuple[bytes, str]] = [
    (b'x; a="unterminated, grip', "unterminated quoted string at byte 5"),
    (b"x y, grip", "unexpected b'y' at byte 2"),
    (b'x; a="q"z, grip', "unexpected b'z' at byte 8"),
    (b"=grip", "unexpected b'='"),
    (b'"grip"', "unexpected b'\"'"),
]


def _ids(vectors: list[Any]) -> list[str]:
    return [repr(v[0])[:60] for v in vectors]


@pytest.mark.parametrize(("payload", "expected"), VALID_MESSAGES, ids=_ids(VALID_MESSAGES))
def test_parse_valid(payload: str, expected: ControlMessage) -> None:
    assert parse_control_message(payload) == expected
    assert parse_control_message(payload.encode("utf-8")) == expected
    assert classify_origin_message(b"c:" + payload.encode(), is_text=True) == expected


@pytest.mark.parametrize(("payload", "message"), INVALID_MESSAGES, ids=_ids(INVALID_MESSAGES))
def test_parse_invalid(payload: bytes | str, message: str) -> None:
    with pytest.raises(ControlMessageError) as info:
        parse_control_message(payload)
    assert message in str(info.value)
    assert info.value.close_code_hint == 1011


def test_parse_rejects_non_text_payload() -> None:
    with pytest.raises(LocalProtocolError, match="payload must be bytes or str, not int"):
        parse_control_message(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("msg", "encoded"), ENCODE_VECTORS, ids=_ids(ENCODE_VECTORS))
def test_encode(msg: ControlMessage, encoded: bytes) -> None:
    assert encode_control_message(msg) == encoded
    assert parse_control_message(encoded[2:]) == msg


@pytest.mark.parametrize("thing", [ControlMessage(), object(), "detach"], ids=repr)
def test_encode_rejects_foreign_objects(thing: ControlMessage) -> None:
    with pytest.raises(LocalProtocolError, match="not a control message"):
        encode_control_message(thing)


# (constructor, arguments, text the LocalProtocolError message must contain)
BAD_VALUES: list[tuple[type[ControlMessage], tuple[Any, ...], str]] = [
    (Subscribe, ("",), "channel must not be empty"),
    (Subscribe, (b"room",), "channel must be a string, not bytes"),
    (Subscribe, ("room", ["a"]), "filters must be a tuple of strings, not list"),
    (Subscribe, ("room", (1,)), "filter name must be a string, not int"),
    (Unsubscribe, (None,), "channel must be a string, not NoneType"),
    (Unsubscribe, ("\ud800",), "channel is not valid Unicode"),
    (Session, (5,), "session id must be a string"),
    (SetMeta, ("",), "meta name must not be empty"),
    (SetMeta, ("user", 5), "meta value must be a string"),
    (KeepAlive, ("text",), "content must be bytes, not str"),
    (KeepAlive, (b"x", "close"), "message_type must be one of text, binary, ping, pong"),
    (KeepAlive, (b"x", "text", 0), "timeout must be an int in 1..2147483647, not 0"),
    (KeepAlive, (b"x", "text", True), "timeout must be an int"),
    (KeepAlive, (b"x", "text", 2**31), "timeout must be an int"),
    (KeepAlive, (b"x", "text", 5, "always"), "mode must be one of idle, interval"),
    (SendDelayed, (None,), "content must be bytes, not NoneType"),
    (SendDelayed, (b"x", "binary", 0), "timeout must be an int"),
    (SendDelayed, (b"x", "bin"), "message_type must be one of"),
]


@pytest.mark.parametrize(
    ("cls", "args", "message"), BAD_VALUES, ids=[repr(v[1]) for v in BAD_VALUES]
)
def test_value_validation(cls: type[ControlMessage], args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        cls(*args)
    assert message in str(info.value)


def test_defaults() -> None:
    assert KeepAlive().timeout == DEFAULT_KEEP_ALIVE_TIMEOUT == 55
    assert SendDelayed(b"").timeout == DEFAULT_SEND_DELAYED_TIMEOUT == 1
    assert KeepAlive() == KeepAlive(None, "text", 55, "idle")
    assert MESSAGE_TYPES == ("text", "binary", "ping", "pong")
    assert KEEP_ALIVE_MODES == ("idle", "interval")
    with pytest.raises(AttributeError):
        Subscribe("a").channel = "b"  # type: ignore[misc]


@pytest.mark.parametrize(("data", "is_text", "prefix", "expected"), CLASSIFY_VECTORS, ids=repr)
def test_classify_origin_message(
    data: bytes, is_text: bool, prefix: bytes, expected: ControlMessage | bytes | None
) -> None:
    assert classify_origin_message(data, is_text=is_text, message_prefix=prefix) == expected


def test_classify_default_prefix_and_invalid_control() -> None:
    assert classify_origin_message(b"m:x", is_text=False) == b"x"
    with pytest.raises(ControlMessageError, match="unknown control message type 'nope'"):
        classify_origin_message(b'c:{"type":"nope"}', is_text=True)
    with pytest.raises(ControlMessageError, match="not valid JSON"):
        classify_origin_message(b"c:", is_text=True)


@pytest.mark.parametrize(("value", "expected"), EXTENSION_VECTORS, ids=repr)
def test_parse_grip_extension(value: bytes, expected: bytes | None) -> None:
    assert parse_grip_extension(value) == expected


@pytest.mark.parametrize(("value", "message"), BAD_EXTENSION_VECTORS, ids=repr)
def test_parse_grip_extension_invalid(value: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_grip_extension(value)
    assert message in str(info.value)


# --- properties --------------------------------------------------------------------------------

texts = st.text(max_size=20)
names = st.text(min_size=1, max_size=20)
message_types = st.sampled_from(MESSAGE_TYPES)
timeouts = st.integers(1, MAX_TIMEOUT)
contents = st.binary(max_size=30) | texts.map(str.encode)

messages = st.one_of(
    st.builds(Subscribe, names, st.lists(texts, max_size=4).map(tuple)),
    st.builds(Unsubscribe, names),
    st.just(Detach()),
    st.builds(Session, st.none() | texts),
    st.builds(SetMeta, names, st.none() | texts),
    st.builds(
        KeepAlive, st.none() | contents, message_types, timeouts, st.sampled_from(KEEP_ALIVE_MODES)
    ),
    st.builds(SendDelayed, contents, message_types, timeouts),
    st.just(FlushDelayed()),
)


@given(messages)
def test_round_trip(msg: ControlMessage) -> None:
    encoded = encode_control_message(msg)
    assert encoded.startswith(b"c:")
    assert parse_control_message(encoded[2:]) == msg
    assert parse_control_message(encoded[2:].decode()) == msg
    assert classify_origin_message(encoded, is_text=True) == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "channel",
    "filters",
    "id",
    "name",
    "value",
    "content",
    "content-bin",
    "message-type",
    "timeout",
    "mode",
]
shaped_objects = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "subscribe",
                "unsubscribe",
                "detach",
                "session",
                "set-meta",
                "keep-alive",
                "send-delayed",
                "flush-delayed",
                "other",
            ]
        )
    },
    optional={
        field: json_values
        | st.sampled_from(["", "a", "AAE=", "text", "binary", "interval", "skip-self"])
        | st.integers(-2, 100)
        | st.lists(st.text(max_size=5), max_size=3)
        for field in FIELDS
    },
)


def _parses_or_control_error(payload: bytes | str) -> None:
    try:
        msg = parse_control_message(payload)
    except ControlMessageError:
        return
    # Whatever parsed is a valid value that survives an encode/parse round trip.
    assert isinstance(msg, ControlMessage)
    assert parse_control_message(encode_control_message(msg)[2:]) == msg


@given(shaped_objects)
def test_fuzz_shaped_objects(obj: dict[str, Any]) -> None:
    _parses_or_control_error(json.dumps(obj))


@given(json_values)
def test_fuzz_json_values(value: Any) -> None:
    _parses_or_control_error(json.dumps(value))


@given(st.text(max_size=60) | st.binary(max_size=60))
def test_fuzz_text_and_bytes(payload: bytes | str) -> None:
    _parses_or_control_error(payload)


@given(st.binary(max_size=40), st.booleans(), st.sampled_from([b"m:", b"", b"x"]))
def test_fuzz_classify(data: bytes, is_text: bool, prefix: bytes) -> None:
    try:
        result = classify_origin_message(b"c:" + data, is_text=is_text, message_prefix=prefix)
    except ControlMessageError:
        assert is_text
        return
    assert result is None or isinstance(result, bytes | ControlMessage)


@given(st.binary(max_size=60) | st.text('grip;,="\\ m:-\t', max_size=40).map(str.encode))
def test_fuzz_grip_extension(value: bytes) -> None:
    try:
        prefix = parse_grip_extension(value)
    except RemoteProtocolError:
        return
    assert prefix is None or isinstance(prefix, bytes)


def test_large_control_message() -> None:
    content = "é" * 500_000  # 1 MB of UTF-8
    msg = parse_control_message(json.dumps({"type": "keep-alive", "content": content}))
    assert msg == KeepAlive(content.encode())
    assert parse_control_message(encode_control_message(msg)[2:]) == msg
    many = parse_control_message(
        json.dumps({"type": "subscribe", "channel": "c", "filters": ["f"] * 100_000})
    )
    assert many == Subscribe("c", ("f",) * 100_000)


def test_large_extension_header() -> None:
    value = b", ".join(
        [b'x%d; a="%s"' % (i, b"v" * 50) for i in range(10_000)] + [b"grip; message-prefix=z"]
    )
    assert parse_grip_extension(value) == b"z"
