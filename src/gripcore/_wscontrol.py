"""GRIP WebSocket control messages and the origin-to-client message rule.

In GRIP mode the origin talks to the proxy inside its own WebSocket stream (native or
WebSocket-over-HTTP `TEXT` events): a text message starting with `c:` carries a JSON control
message (`c:{"type":"subscribe","channel":"room"}`); other messages must start with the message
prefix negotiated in the `grip` extension (default `m:`), which is stripped before relaying.

Strategy. Control messages are values: frozen, slotted dataclasses under `ControlMessage`,
validated when built (`LocalProtocolError`). `parse_control_message()` checks the JSON shape field
by field (§4.3 table of the behaviour spec) and raises `ControlMessageError` for anything wrong;
`encode_control_message()` is its inverse, used by origin-side helpers and tests.
`classify_origin_message()` applies the prefix rule and `parse_grip_extension()` reads the
negotiated prefix from the origin's `Sec-WebSocket-Extensions` response header.

Error contract: Pushpin ignores an invalid control message and keeps the connection open. The
core raises `ControlMessageError` (a `RemoteProtocolError`) with a message saying what was wrong;
the gateway is expected to log it and ignore the message, not to close the connection.
Anything else (wrong argument types from our caller, invalid values) is `LocalProtocolError`.

Choices made where Pushpin is lax or silent: `content-bin` must be strict RFC 4648 base64;
`timeout` must be a JSON integer (not a float, not a bool) in 0..2**31-1, and 0 means the default
for both `keep-alive` (55 s) and `send-delayed` (1 s); `send-delayed` without content sends an
empty message; strings must be valid Unicode (no lone surrogates). As in Pushpin, `keep-alive`
and `send-delayed` default `message-type` to `text` even when `content-bin` is given (quirk).
The five-filter limit and `connection_subscription_max` are the session's to enforce, not ours.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn, TypeGuard, TypeVar

from ._errors import ControlMessageError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_MESSAGE_PREFIX",
    "DEFAULT_SEND_DELAYED_TIMEOUT",
    "KEEP_ALIVE_MODES",
    "MAX_TIMEOUT",
    "MESSAGE_TYPES",
    "ControlMessage",
    "Detach",
    "FlushDelayed",
    "KeepAlive",
    "KeepAliveMode",
    "MessageType",
    "SendDelayed",
    "Session",
    "SetMeta",
    "Subscribe",
    "Unsubscribe",
    "classify_origin_message",
    "encode_control_message",
    "parse_control_message",
    "parse_grip_extension",
]

MessageType = Literal["text", "binary", "ping", "pong"]
KeepAliveMode = Literal["idle", "interval"]

MESSAGE_TYPES: Final[tuple[MessageType, ...]] = ("text", "binary", "ping", "pong")
KEEP_ALIVE_MODES: Final[tuple[KeepAliveMode, ...]] = ("idle", "interval")

CONTROL_PREFIX: Final = b"c:"
DEFAULT_MESSAGE_PREFIX: Final = b"m:"

# Pushpin's defaults when `timeout` is absent or 0.
DEFAULT_KEEP_ALIVE_TIMEOUT: Final = 55
DEFAULT_SEND_DELAYED_TIMEOUT: Final = 1

# Pushpin keeps timeouts (seconds) in a C int; larger values cannot mean anything sensible.
MAX_TIMEOUT: Final = 2**31 - 1


# --- values ----------------------------------------------------------------------------------


def _check_str(what: str, value: object, *, non_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be a string, not {type(value).__name__}")
    if non_empty and not value:
        raise LocalProtocolError(f"{what} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} is not valid Unicode (lone surrogate)") from None


def _check_content(value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"content must be bytes, not {type(value).__name__}")


def _check_choice(what: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise LocalProtocolError(f"{what} must be one of {', '.join(choices)}, not {value!r}")


def _check_timeout(value: object) -> None:
    if type(value) is not int or not 1 <= value <= MAX_TIMEOUT:
        raise LocalProtocolError(f"timeout must be an int in 1..{MAX_TIMEOUT}, not {value!r}")


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """Base of the GRIP WebSocket control messages."""


@dataclass(frozen=True, slots=True)
class Subscribe(ControlMessage):
    """`subscribe`: subscribe the connection to `channel`, with optional message `filters`."""

    channel: str
    filters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_str("channel", self.channel, non_empty=True)
        if not isinstance(self.filters, tuple):
            raise LocalProtocolError(
                f"filters must be a tuple of strings, not {type(self.filters).__name__}"
            )
        for name in self.filters:
            _check_str("filter name", name)


@dataclass(frozen=True, slots=True)
class Unsubscribe(ControlMessage):
    """`unsubscribe`: drop the subscription to `channel`."""

    channel: str

    def __post_init__(self) -> None:
        _check_str("channel", self.channel, non_empty=True)


@dataclass(frozen=True, slots=True)
class Detach(ControlMessage):
    """`detach`: close the origin side, keep the client connected (one-way push)."""


@dataclass(frozen=True, slots=True)
class Session(ControlMessage):
    """`session`: associate a session id; None or "" clears it."""

    id: str | None = None

    def __post_init__(self) -> None:
        if self.id is not None:
            _check_str("session id", self.id)


@dataclass(frozen=True, slots=True)
class SetMeta(ControlMessage):
    """`set-meta`: set subscription meta `name` (used by filters); a None `value` deletes it."""

    name: str
    value: str | None = None

    def __post_init__(self) -> None:
        _check_str("meta name", self.name, non_empty=True)
        if self.value is not None:
            _check_str("meta value", self.value)


@dataclass(frozen=True, slots=True)
class KeepAlive(ControlMessage):
    """`keep-alive`: send `content` as a `message_type` message when idle for (`mode="idle"`) or
    every (`mode="interval"`) `timeout` seconds. `content=None` disables keep-alives."""

    content: bytes | None = None
    message_type: MessageType = "text"
    timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    mode: KeepAliveMode = "idle"

    def __post_init__(self) -> None:
        _check_content(self.content, optional=True)
        _check_choice("message_type", self.message_type, MESSAGE_TYPES)
        _check_timeout(self.timeout)
        _check_choice("mode", self.mode, KEEP_ALIVE_MODES)


@dataclass(frozen=True, slots=True)
class SendDelayed(ControlMessage):
    """`send-delayed`: send `content` as a `message_type` message after `timeout` seconds; a new
    one first flushes (sends) any pending one."""

    content: bytes
    message_type: MessageType = "text"
    timeout: int = DEFAULT_SEND_DELAYED_TIMEOUT

    def __post_init__(self) -> None:
        _check_content(self.content, optional=False)
        _check_choice("message_type", self.message_type, MESSAGE_TYPES)
        _check_timeout(self.timeout)


@dataclass(frozen=True, slots=True)
class FlushDelayed(ControlMessage):
    """`flush-delayed`: send the pending delayed message now."""


# --- parsing ---------------------------------------------------------------------------------

_C = TypeVar("_C", bound=str)


class _Fields:
    """Typed access to one control message's JSON object; errors name the message type."""

    __slots__ = ("obj", "type")

    def __init__(self, obj: dict[str, Any], type_: str) -> None:
        self.obj = obj
        self.type = type_

    def fail(self, msg: str) -> NoReturn:
        raise ControlMessageError(f"'{self.type}' control message: {msg}")

    def optional_str(self, key: str) -> str | None:
        """The string at `key`; None when absent or null."""
        value = self.obj.get(key)
        if value is None or isinstance(value, str):
            return value
        self.fail(f"'{key}' must be a string, not {_json_type(value)}")

    def required_str(self, key: str) -> str:
        value = self.optional_str(key)
        if value is None:
            self.fail(f"missing '{key}'")
        return value

    def choice(self, key: str, choices: dict[str, _C], default: _C) -> _C:
        name = self.optional_str(key)
        if name is None:
            return default
        if name not in choices:
            self.fail(f"'{key}' must be one of {', '.join(choices)}, not {name!r}")
        return choices[name]

    def timeout(self, default: int) -> int:
        """`timeout` in seconds: absent, null or 0 means `default`."""
        value = self.obj.get("timeout")
        if value is None:
            return default
        if type(value) is not int or not 0 <= value <= MAX_TIMEOUT:
            self.fail(f"'timeout' must be an integer in 0..{MAX_TIMEOUT}, not {value!r}")
        return value or default

    def content(self) -> bytes | None:
        """`content-bin` (base64) wins over `content` (a string sent as its UTF-8 bytes)."""
        encoded = self.optional_str("content-bin")
        if encoded is not None:
            try:
                return base64.b64decode(encoded, validate=True)
            except ValueError:  # binascii.Error, or non-ASCII characters
                self.fail("'content-bin' is not valid base64")
        text = self.optional_str("content")
        if text is None:
            return None
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            self.fail("'content' is not valid Unicode (lone surrogate)")


_MESSAGE_TYPE_NAMES: Final[dict[str, MessageType]] = {name: name for name in MESSAGE_TYPES}
_KEEP_ALIVE_MODE_NAMES: Final[dict[str, KeepAliveMode]] = {name: name for name in KEEP_ALIVE_MODES}


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else "null"


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _is_object(value: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict)


def _parse_subscribe(f: _Fields) -> ControlMessage:
    channel = f.required_str("channel")
    filters = f.obj.get("filters")
    if filters is None:
        return Subscribe(channel)
    if not isinstance(filters, list) or not all(isinstance(name, str) for name in filters):
        f.fail("'filters' must be an array of strings")
    return Subscribe(channel, tuple(filters))


def _parse_unsubscribe(f: _Fields) -> ControlMessage:
    return Unsubscribe(f.required_str("channel"))


def _parse_detach(f: _Fields) -> ControlMessage:
    return Detach()


def _parse_session(f: _Fields) -> ControlMessage:
    return Session(f.optional_str("id"))


def _parse_set_meta(f: _Fields) -> ControlMessage:
    return SetMeta(f.required_str("name"), f.optional_str("value"))


def _parse_keep_alive(f: _Fields) -> ControlMessage:
    return KeepAlive(
        f.content(),
        f.choice("message-type", _MESSAGE_TYPE_NAMES, "text"),
        f.timeout(DEFAULT_KEEP_ALIVE_TIMEOUT),
        f.choice("mode", _KEEP_ALIVE_MODE_NAMES, "idle"),
    )


def _parse_send_delayed(f: _Fields) -> ControlMessage:
    content = f.content()
    return SendDelayed(
        b"" if content is None else content,
        f.choice("message-type", _MESSAGE_TYPE_NAMES, "text"),
        f.timeout(DEFAULT_SEND_DELAYED_TIMEOUT),
    )


def _parse_flush_delayed(f: _Fields) -> ControlMessage:
    return FlushDelayed()


_PARSERS: Final = {
    "subscribe": _parse_subscribe,
    "unsubscribe": _parse_unsubscribe,
    "detach": _parse_detach,
    "session": _parse_session,
    "set-meta": _parse_set_meta,
    "keep-alive": _parse_keep_alive,
    "send-delayed": _parse_send_delayed,
    "flush-delayed": _parse_flush_delayed,
}


def parse_control_message(payload: bytes | str) -> ControlMessage:
    """Parse the JSON of a control message (what follows `c:`).

    Raises `ControlMessageError` when the payload is not UTF-8 JSON, not an object, has a missing
    or unknown `type`, or a field of the wrong type or value (Pushpin ignores such messages: log
    and ignore, keep the connection). Unknown extra fields are ignored.
    """
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ControlMessageError(f"control message is not valid UTF-8: {exc.reason}") from None
    elif not isinstance(payload, str):
        raise LocalProtocolError(f"payload must be bytes or str, not {type(payload).__name__}")
    try:
        obj = json.loads(payload, parse_constant=_reject_constant)
    except RecursionError:
        raise ControlMessageError("control message JSON is nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError, NaN/Infinity, too many integer digits
        raise ControlMessageError(f"control message is not valid JSON: {exc}") from None
    if not _is_object(obj):
        raise ControlMessageError(f"control message must be a JSON object, not {_json_type(obj)}")
    type_ = obj.get("type")
    if type_ is None:
        raise ControlMessageError("control message has no 'type'")
    if not isinstance(type_, str):
        raise ControlMessageError(
            f"control message 'type' must be a string, not {_json_type(type_)}"
        )
    parse = _PARSERS.get(type_)
    if parse is None:
        raise ControlMessageError(f"unknown control message type {type_!r}")
    fields = _Fields(obj, type_)
    try:
        return parse(fields)
    except LocalProtocolError as exc:  # a value check of the dataclass
        fields.fail(exc.msg)


# --- encoding --------------------------------------------------------------------------------


def _content_fields(content: bytes, message_type: str) -> dict[str, str]:
    if message_type != "binary":
        try:
            return {"content": content.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"content-bin": base64.b64encode(content).decode("ascii")}


def _to_json(msg: ControlMessage) -> dict[str, Any]:
    match msg:
        case Subscribe(channel, filters):
            obj: dict[str, Any] = {"type": "subscribe", "channel": channel}
            if filters:
                obj["filters"] = list(filters)
            return obj
        case Unsubscribe(channel):
            return {"type": "unsubscribe", "channel": channel}
        case Detach():
            return {"type": "detach"}
        case Session(session_id):
            return (
                {"type": "session"} if session_id is None else {"type": "session", "id": session_id}
            )
        case SetMeta(name, value):
            obj = {"type": "set-meta", "name": name}
            if value is not None:
                obj["value"] = value
            return obj
        case KeepAlive(content, message_type, timeout, mode):
            obj = {"type": "keep-alive"}
            if content is not None:
                obj.update(_content_fields(content, message_type))
            if message_type != "text":
                obj["message-type"] = message_type
            if timeout != DEFAULT_KEEP_ALIVE_TIMEOUT:
                obj["timeout"] = timeout
            if mode != "idle":
                obj["mode"] = mode
            return obj
        case SendDelayed(content, message_type, timeout):
            obj = {"type": "send-delayed", **_content_fields(content, message_type)}
            if message_type != "text":
                obj["message-type"] = message_type
            if timeout != DEFAULT_SEND_DELAYED_TIMEOUT:
                obj["timeout"] = timeout
            return obj
        case FlushDelayed():
            return {"type": "flush-delayed"}
    raise LocalProtocolError(f"cannot encode {msg!r}: not a control message")


def encode_control_message(msg: ControlMessage) -> bytes:
    """`c:` + compact JSON for `msg`; fields at their default value are left out.

    Raises `LocalProtocolError` for an object that is not one of our control messages.
    """
    body = json.dumps(_to_json(msg), separators=(",", ":"), ensure_ascii=False)
    return CONTROL_PREFIX + body.encode("utf-8")


# --- the message rule and the grip extension -------------------------------------------------


def classify_origin_message(
    data: bytes, *, is_text: bool, message_prefix: bytes = DEFAULT_MESSAGE_PREFIX
) -> ControlMessage | bytes | None:
    """Decide what a whole message from the origin in GRIP mode is.

    The rule, in order:
    1. a text message starting with `c:` is a control message: returns the parsed
       `ControlMessage` (raises `ControlMessageError` if invalid: log it and drop the message);
    2. a text or binary message starting with `message_prefix` is relayed: returns the payload
       with the prefix stripped (with an empty prefix, every message not caught by rule 1);
    3. anything else returns None: drop it (Pushpin logs "dropping unprefixed message").

    Only whole messages are classified; Pushpin ignores fragmented `c:` messages, which is the
    gateway's concern. Ping, pong and close frames are always relayed and never come here.
    """
    if is_text and data.startswith(CONTROL_PREFIX):
        return parse_control_message(data[len(CONTROL_PREFIX) :])
    if data.startswith(message_prefix):
        return data[len(message_prefix) :]
    return None


_OWS = re.compile(rb"[ \t]*")
_TOKEN = re.compile(rb'[^\s;,="]*')
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)


def _skip_ows(value: bytes, pos: int) -> int:
    match = _OWS.match(value, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _token(value: bytes, pos: int) -> tuple[bytes, int]:
    match = _TOKEN.match(value, _skip_ows(value, pos))
    assert match is not None  # the pattern matches the empty string
    return match.group(), _skip_ows(value, match.end())


def _param_value(value: bytes, pos: int) -> tuple[bytes, int]:
    pos = _skip_ows(value, pos)
    if value.startswith(b'"', pos):
        match = _QUOTED.match(value, pos)
        if match is None:
            raise RemoteProtocolError(
                f"Sec-WebSocket-Extensions: unterminated quoted string at byte {pos}"
            )
        return _ESCAPE.sub(rb"\1", match.group(1)), _skip_ows(value, match.end())
    return _token(value, pos)


def parse_grip_extension(value: bytes) -> bytes | None:
    """The message prefix of the `grip` element of a `Sec-WebSocket-Extensions` value.

    Returns None when there is no `grip` element (the session is plain passthrough), else its
    `message-prefix` parameter (token or quoted string; a bare parameter is empty), default
    `m:`. Names compare case-insensitively; the first `grip` element wins and what follows it is
    not examined. Several header lines must be joined with ", " first. Raises
    `RemoteProtocolError` for a value that does not parse before the `grip` element is found
    (an unterminated quoted string, a stray character).
    """
    pos = 0
    end = len(value)
    while pos < end:
        name, pos = _token(value, pos)
        prefix = DEFAULT_MESSAGE_PREFIX
        while value.startswith(b";", pos):
            param, pos = _token(value, pos + 1)
            param_value = b""
            if value.startswith(b"=", pos):
                param_value, pos = _param_value(value, pos + 1)
            if param.lower() == b"message-prefix":
                prefix = param_value
        if pos < end and not value.startswith(b",", pos):
            raise RemoteProtocolError(
                f"Sec-WebSocket-Extensions: unexpected {value[pos : pos + 1]!r} at byte {pos}"
            )
        if name.lower() == b"grip":
            return prefix
        pos += 1
    return None
