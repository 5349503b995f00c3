"""ZeroMQ publishing ingress, sans-IO: Pushpin's `push_in_spec` and `push_in_sub_spec` messages.

Pushpin (v1.36, src/handler/engine.cpp) takes published items on two ZeroMQ sockets besides
its HTTP publish API, and gripcore takes them the same way (the driver owns the sockets:
adapters/asyncio/_zmq.py, adapters/gevent/_zmq.py; the core never imports zmq):

* `push_in_spec`: a PULL socket (bound). Each message is one frame holding one item object,
  channel included (`inPull_readyRead`; a message of more than one frame is skipped).
* `push_in_sub_spec`: a SUB socket (bound; publishers connect an XPUB socket to it). The SUB
  socket subscribes to each channel as it gains its first subscriber and unsubscribes when it
  loses its last (`addSub` / `removeSub`), so a publisher that reads its XPUB socket's
  subscription messages (`\\x01channel` / `\\x00channel`) publishes only what someone
  receives. Each message is two frames, `[channel, item]`; the first frame's channel is the
  item's (`inSub_readyRead`). ZeroMQ matches subscriptions by prefix, so items of channel
  `ab` also arrive while `a` is subscribed; they find no subscriber and are dropped, as in
  Pushpin.

The item frame (`parseJsonOrTnetstring`): `J` and a JSON object, or a tnetstring
(optionally after a `T`). The object is an item as in the HTTP publish API's `items` list,
parsed by the same `parse_item`, so ZeroMQ items get the same validation, and then the same
dedup, sequencing and engine as HTTP publishes (the driver hands them to `ProxyNode.publish`).
A tnetstring carries bytes, not text: keys and text values must be UTF-8; a format's `body`
or `content` (and `-bin`) bytes are taken as they are, byte for byte, and a ws-message given
`content` is text unless it says otherwise, as Pushpin decides.

* `command_spec`: a REP socket answering Pushpin's ZRPC requests (a tnetstring `{id, method,
  args}`, answered `{id, success, value}` or `{id, success: false, condition}`). Only
  `get-zmq-uris` is served, with the `command`, `publish-pull` and `publish-sub` specs, which is
  what pubcontrol's ZeroMQ client asks to discover the other two sockets (django-grip's
  `control_zmq_uri`); any other method is `method-not-found`.

An invalid message raises `PublishError` here; the node logs it, counts it
(`zmq_invalid_messages_total`) and goes on: a publisher's mistake is never fatal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Final

from ._errors import PublishError
from ._hub import ChannelChange
from ._items import DEFAULT_MAX_CONTENT_SIZE, Item, _reject_constant, item_to_json, parse_item

__all__ = [
    "MAX_TNETSTRING_DEPTH",
    "SubscriptionOp",
    "advertised_uris",
    "decode_pull_message",
    "decode_sub_message",
    "dump_tnetstring",
    "encode_pull_message",
    "handle_command",
    "parse_tnetstring",
    "subscription_op",
]

# Nesting of lists and dicts a tnetstring may have: an item is 4 deep (item, formats, format,
# headers list and pair); 64 leaves room for any meta a publisher sends, and bounds the stack.
MAX_TNETSTRING_DEPTH: Final = 64

_FORMATS: Final = ("http-response", "http-stream", "ws-message")
_BYTES_KEYS: Final = {"body": "body-bin", "content": "content-bin"}

# (subscribe, topic): what the SUB socket is to do.
SubscriptionOp = tuple[bool, bytes]


class _Invalid(Exception):
    pass


# --- tnetstring ----------------------------------------------------------------------------------


def _tnet_value(data: bytes, pos: int, limit: int, depth: int) -> tuple[Any, int]:
    """The value starting at `pos` and ending by `limit`, and the position after it (linear:
    nested values are read in place, never copied). Raises `_Invalid`."""
    colon = data.find(b":", pos, min(pos + 10, limit))  # at most 9 digits, as Pushpin
    if colon <= pos:
        raise _Invalid("length prefix")
    digits = data[pos:colon]
    if not digits.isdigit() or (len(digits) > 1 and digits[:1] == b"0"):
        raise _Invalid("length prefix")
    start = colon + 1
    end = start + int(digits)
    if end >= limit:
        raise _Invalid("truncated")
    tag = data[end : end + 1]
    after = end + 1
    if tag in (b"]", b"}"):
        if depth >= MAX_TNETSTRING_DEPTH:
            raise _Invalid("nested too deep")
        values: list[Any] = []
        cursor = start
        while cursor < end:
            value, cursor = _tnet_value(data, cursor, end, depth + 1)
            values.append(value)
        if tag == b"]":
            return values, after
        if len(values) % 2:
            raise _Invalid("dict without a value for its last key")
        keys = values[0::2]
        if not all(isinstance(key, bytes) for key in keys):
            raise _Invalid("dict key is not a string")
        return dict(zip(keys, values[1::2], strict=True)), after
    payload = data[start:end]
    if tag == b",":
        return payload, after
    if tag == b"#":
        text = payload.removeprefix(b"-")
        if not text.isdigit():
            raise _Invalid("integer")
        return int(payload), after
    if tag == b"^":
        try:
            return float(payload), after
        except ValueError:
            raise _Invalid("float") from None
    if tag == b"!":
        if payload not in (b"true", b"false"):
            raise _Invalid("boolean")
        return payload == b"true", after
    if tag == b"~":
        if payload:
            raise _Invalid("null")
        return None, after
    raise _Invalid("type tag")


def parse_tnetstring(data: bytes) -> Any:
    """Decode one tnetstring (https://tnetstrings.info) that must fill `data` exactly.

    Strings come back as bytes, dicts with bytes keys. Raises `PublishError` for anything else
    than one well-formed value (trailing bytes included), or nesting over
    `MAX_TNETSTRING_DEPTH`.
    """
    try:
        value, end = _tnet_value(data, 0, len(data), 0)
        if end != len(data):
            raise _Invalid("trailing data")
    except _Invalid as exc:
        raise PublishError(
            f"received message with invalid format (tnetstring parse failed: {exc})"
        ) from None
    return value


def _text(value: Any) -> Any:
    """Tnetstring bytes as text (UTF-8), recursively; other values as they are."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise PublishError("received message with a string that is not UTF-8") from None
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    return value


def _format_as_json(fmt: Any, ws: bool) -> Any:
    """A tnetstring format object in the JSON form `parse_item` reads: bytes content as its
    base64 `-bin` key (byte-exact), text elsewhere."""
    if not isinstance(fmt, dict):
        return _text(fmt)
    out: dict[str, Any] = {}
    raw_keys: set[str] = set()
    for key, value in fmt.items():
        name = _text(key)
        if name in _BYTES_KEYS.values() and isinstance(value, bytes):
            raw_keys.add(name)
            out[name] = base64.b64encode(value).decode("ascii")
        elif name not in _BYTES_KEYS:
            out[name] = _text(value)
    for name, bin_name in _BYTES_KEYS.items():
        value = fmt.get(name.encode())
        if bin_name in raw_keys or value is None:
            continue
        if not isinstance(value, bytes):
            out[name] = value  # parse_item names the wrong type
            continue
        out[bin_name] = base64.b64encode(value).decode("ascii")
        if ws and "type" not in out:
            out["type"] = "text"  # `content` is text unless the item says otherwise
    return out


def _item_as_json(obj: Any) -> Any:
    """A tnetstring item object in the JSON form `parse_item` reads (the formats on the item
    itself or under `formats`)."""
    if not isinstance(obj, dict):
        return _text(obj)  # parse_item says it is not an object
    item: dict[str, Any] = {}
    for key, value in obj.items():
        name = _text(key)
        if name in _FORMATS:
            item[name] = _format_as_json(value, name == "ws-message")
        elif name == "formats" and isinstance(value, dict):
            item[name] = _item_as_json(value)
        else:
            item[name] = _text(value)
    return item


# --- messages ------------------------------------------------------------------------------------


def _decode_object(frame: bytes) -> Any:
    if frame[:1] == b"J":
        try:
            doc = json.loads(frame[1:].decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise PublishError("received message with invalid format (json parse failed)") from None
        if not isinstance(doc, dict):
            raise PublishError("received message with invalid format (not a valid json object)")
        return doc
    return _item_as_json(parse_tnetstring(frame[1:] if frame[:1] == b"T" else frame))


def _item(obj: Any, channel: str | None, max_content_size: int) -> Item:
    if channel is not None and isinstance(obj, dict):
        obj = {**obj, "channel": channel}
    try:
        return parse_item(obj, max_content_size=max_content_size)
    except PublishError as exc:
        message = exc.msg.removeprefix("item 0: ")
        raise PublishError(f"received message with invalid format: {message}") from None


def decode_pull_message(
    frames: Sequence[bytes], *, max_content_size: int = DEFAULT_MAX_CONTENT_SIZE
) -> Item:
    """The item of one PULL-socket message (one frame). Raises `PublishError` saying what is
    wrong, with Pushpin's wording."""
    if len(frames) != 1:
        raise PublishError("received message with parts != 1")
    return _item(_decode_object(bytes(frames[0])), None, max_content_size)


def decode_sub_message(
    frames: Sequence[bytes], *, max_content_size: int = DEFAULT_MAX_CONTENT_SIZE
) -> Item:
    """The item of one SUB-socket message, `[channel, item]`; the first frame names the
    channel (an empty one leaves the item's own). Raises `PublishError`."""
    if len(frames) != 2:
        raise PublishError("received message with parts != 2")
    obj = _decode_object(bytes(frames[1]))
    try:
        channel = bytes(frames[0]).decode("utf-8") or None
    except UnicodeDecodeError:
        raise PublishError("received message with a channel that is not UTF-8") from None
    return _item(obj, channel, max_content_size)


def encode_pull_message(item: Item) -> bytes:
    """One PULL-socket message for `item`: `J` and its JSON (what `gripcore publish --spec`
    sends)."""
    return b"J" + json.dumps(item_to_json(item), separators=(",", ":")).encode("utf-8")


def subscription_op(change: ChannelChange) -> SubscriptionOp:
    """What the SUB socket does for a hub channel change: subscribe to a channel that gained
    its first subscriber, unsubscribe from one that lost its last."""
    return change.subscribed, change.channel.encode("utf-8")


# --- the command socket --------------------------------------------------------------------------


def dump_tnetstring(value: Any) -> bytes:
    """`value` (bytes, str as UTF-8, bool, int, float, None, and lists and dicts of these) as a
    tnetstring. Raises `TypeError` for anything else."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        payload, tag = value, b","
    elif isinstance(value, bool):
        payload, tag = (b"true" if value else b"false"), b"!"
    elif isinstance(value, int):
        payload, tag = str(value).encode(), b"#"
    elif isinstance(value, float):
        payload, tag = repr(value).encode(), b"^"
    elif value is None:
        payload, tag = b"", b"~"
    elif isinstance(value, list):
        payload, tag = b"".join(dump_tnetstring(v) for v in value), b"]"
    elif isinstance(value, dict):
        parts = (dump_tnetstring(k) + dump_tnetstring(v) for k, v in value.items())
        payload, tag = b"".join(parts), b"}"
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a tnetstring")
    return b"%d:%s%s" % (len(payload), payload, tag)


def handle_command(frame: bytes, uris: dict[str, str]) -> bytes:
    """The answer of the command socket to one request `frame`. `uris` maps `command`,
    `publish-pull` and `publish-sub` to the specs publishers should use (those configured).
    Never raises: a request that does not parse gets condition `bad-format`."""
    try:
        request = parse_tnetstring(bytes(frame))
    except PublishError:
        request = None
    if not isinstance(request, dict) or not isinstance(request.get(b"method"), bytes):
        return dump_tnetstring({"success": False, "condition": "bad-format"})
    answer: dict[str, Any] = {}
    request_id = request.get(b"id")
    if isinstance(request_id, bytes):
        answer["id"] = request_id
    if request[b"method"] == b"get-zmq-uris":
        answer["success"] = True
        answer["value"] = dict(uris)
    else:
        answer["success"] = False
        answer["condition"] = "method-not-found"
    return dump_tnetstring(answer)


_URI_NAMES: Final = {"command": "command", "pull": "publish-pull", "sub": "publish-sub"}


def advertised_uris(specs: dict[str, str], endpoints: dict[str, str]) -> dict[str, str]:
    """What `get-zmq-uris` answers: each bound socket ("command", "pull", "sub") under its
    Pushpin name, as configured (a `*` host is for the publisher to resolve, as with Pushpin),
    or as bound when the port was left to the system (`tcp://HOST:*`)."""
    return {
        _URI_NAMES[name]: endpoints[name] if spec.endswith(":*") else spec
        for name, spec in specs.items()
    }


def ingress_sockets(
    push_in_spec: str | None, push_in_sub_spec: str | None, command_spec: str | None
) -> list[tuple[str, str, str]]:
    """The sockets a driver binds, as (name, ZeroMQ socket type, spec), for the options set:
    "pull" (PULL), "sub" (SUB), "command" (REP), in that order."""
    wanted = [
        ("pull", "PULL", push_in_spec),
        ("sub", "SUB", push_in_sub_spec),
        ("command", "REP", command_spec),
    ]
    return [(name, kind, spec) for name, kind, spec in wanted if spec]
