"""Publish items: the typed item model, and the parser, validator and encoder of publish bodies.

A publisher sends `POST /publish` with `{"items": [item, ...]}` (pushpin-behaviour.md section 5).
Each item names a `channel` and carries one payload per transport, called a *format*:
`http-response` (delivered to held long-polls), `http-stream` (appended to held streams) and
`ws-message` (sent to WebSocket subscribers). This module turns such bodies into values and back.

Strategy:

* **Values are validated when built.** `Item`, `HttpResponseFormat`, `HttpStreamFormat` and
  `WsMessageFormat` are frozen, slotted dataclasses whose constructors check every field, so a
  hand-built item is exactly as valid as a parsed one. A bad hand-built value raises
  `LocalProtocolError` (our caller's mistake).
* **The parser only translates JSON into constructor arguments** (null means absent, base64 is
  decoded, header objects become pairs) and checks JSON types. It then lets the constructors judge
  the rest and converts their `LocalProtocolError` into `PublishError` at its one boundary
  (`parse_item`), prefixed with the item's index. Messages use Pushpin's wording
  (`src/handler/publishitem.cpp`, `publishformat.cpp`) wherever it has one.
* **Values are canonical.** Fields an action does not use must keep their defaults (Pushpin
  ignores them when parsing, and so do we), so two items that deliver the same thing compare
  equal, and `parse_items([item_to_json(i)]) == [i]` for every valid item.
* **Bounded and linear.** Each format's content is limited (`DEFAULT_MAX_CONTENT_SIZE`, 413 via
  `ContentTooLargeError`); a `body-patch` is not content and only the control API's body limit
  bounds it. Every step is one pass over its input.

Actions: all four (`send`, `hint`, `close`, `refresh`) parse for every format, as in Pushpin;
delivery decides what they mean. No-ops there: `close`/`refresh` on `http-response`, `refresh` on
`http-stream`, `hint` on `ws-message`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, TypeGuard

from ._errors import ContentTooLargeError, LocalProtocolError, PublishError

__all__ = [
    "ACTIONS",
    "DEFAULT_MAX_CONTENT_SIZE",
    "WS_MESSAGE_TYPES",
    "Action",
    "HttpResponseFormat",
    "HttpStreamFormat",
    "Item",
    "JsonPatchOp",
    "WsMessageFormat",
    "WsMessageType",
    "default_reason",
    "encode_publish_body",
    "item_to_json",
    "parse_item",
    "parse_items",
    "parse_publish_body",
]

# Fastly Fanout documents 32,767 bytes as the most content one published format may carry; using
# the same number keeps publishers portable between gripcore and Fanout. 0 means unlimited.
DEFAULT_MAX_CONTENT_SIZE: Final = 32_767

Action: TypeAlias = Literal["send", "hint", "close", "refresh"]
WsMessageType: TypeAlias = Literal["text", "binary", "ping", "pong"]
JsonPatchOp: TypeAlias = Mapping[str, Any]

ACTIONS: Final[tuple[Action, ...]] = ("send", "hint", "close", "refresh")
WS_MESSAGE_TYPES: Final[tuple[WsMessageType, ...]] = ("text", "binary", "ping", "pong")

_ITEM: Final = "publish item object"
_HTTP_RESPONSE: Final = "'http-response'"
_HTTP_STREAM: Final = "'http-stream'"
_WS_MESSAGE: Final = "'ws-message'"

# RFC 9110 section 5.6.2: a field name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What an HTTP/1.1 writer can put on the wire (RFC 9112 sections 4 and 5, as h11 enforces them
# when it sends): a reason phrase is HTAB, SP, VCHAR and obs-text; a field value is the same
# without surrounding whitespace (stripped here, as RFC 9110 section 5.5 says it is not part of
# the value). Anything else (other control characters, text beyond Latin-1) could be accepted
# here yet never be written to a subscriber.
_REASON = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_FIELD_VALUE = _REASON
_OWS = " \t"
# A long-poll gets a final response: 1xx are interim answers and 101 switches protocols (RFC
# 9110 section 15.2), so a published response starts at 200; three digits end at 999.
_LOWEST_STATUS = 200
_HIGHEST_STATUS = 999
# RFC 9110 sections 15.3.5 and 15.4.5: 204 and 304 answers have no content.
_NO_CONTENT_STATUS: Final = frozenset((204, 304))
# RFC 6455 section 5.5: control frames (ping, pong, close) carry at most 125 payload bytes.
_MAX_CONTROL_PAYLOAD = 125
_MAX_CLOSE_REASON = _MAX_CONTROL_PAYLOAD - 2  # the close code takes two of the 125
# Close codes a server may send (RFC 6455 section 7.4) that strict peers (wsproto, browsers) accept:
# the defined codes except those reserved or local-only (1004-1006, 1014-1015, other 1xxx/2xxx),
# plus the ranges for libraries (3000-3999) and applications (4000-4999).
_SENDABLE_CLOSE_CODES: Final = frozenset((1000, 1001, 1002, 1003, *range(1007, 1014)))
_LOWEST_APP_CLOSE_CODE = 3000
_HIGHEST_APP_CLOSE_CODE = 4999
_QUOTE_LIMIT = 64  # names echoed in error messages are cut here so a message stays one line


def default_reason(code: int) -> str:
    """The standard reason phrase for HTTP status `code`, or Pushpin's `Undefined Reason`."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Undefined Reason"


# --- validation helpers shared by the constructors (they raise LocalProtocolError) -------------


def _quote(name: str) -> str:
    """`name` in quotes for an error message, shortened and with control characters escaped."""
    if len(name) > _QUOTE_LIMIT:
        name = name[: _QUOTE_LIMIT - 3] + "..."
    if not name.isprintable():
        name = name.encode("unicode_escape").decode("ascii")
    return f"'{name}'"


def _is_unicode(value: str) -> bool:
    """True unless `value` holds a lone surrogate (JSON `\\ud800`), which no encoding can carry."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(value: object, owner: str, key: str) -> str:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{owner} contains '{key}' with wrong type")
    if not _is_unicode(value):
        raise LocalProtocolError(f"{owner} contains '{key}' with invalid value")
    return value


def _check_optional_text(value: object, owner: str, key: str) -> str | None:
    """None, or a non-empty string (the parser maps the empty string to None first)."""
    if value is None:
        return None
    text = _check_text(value, owner, key)
    if not text:
        raise LocalProtocolError(f"{owner} contains '{key}' with invalid value")
    return text


def _check_int(value: object, owner: str, key: str) -> int:
    # bool is an int subclass in Python, but `true` is not a number in JSON.
    if not isinstance(value, int) or isinstance(value, bool):
        raise LocalProtocolError(f"{owner} contains '{key}' with wrong type")
    return value


def _check_bytes(value: object, owner: str, key: str) -> bytes:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{owner} contains '{key}' with wrong type")
    return value


def _check_action(value: object, owner: str) -> Action:
    for action in ACTIONS:
        if value == action:
            return action
    if not isinstance(value, str):
        raise LocalProtocolError(f"{owner} contains 'action' with wrong type")
    # Pushpin rejects an unknown action with an empty message; we say what was wrong.
    raise LocalProtocolError(f"{owner} contains 'action' with unknown value")


def _check_ws_type(value: object) -> WsMessageType:
    for message_type in WS_MESSAGE_TYPES:
        if value == message_type:
            return message_type
    if not isinstance(value, str):
        raise LocalProtocolError(f"{_WS_MESSAGE} contains 'type' with wrong type")
    raise LocalProtocolError(f"{_WS_MESSAGE} contains 'type' with unknown value")


def _check_unused(owner: str, action: str, used: Iterable[tuple[str, bool]]) -> None:
    """Fields that `action` does not use must keep their defaults (values stay canonical)."""
    for key, is_set in used:
        if is_set:
            raise LocalProtocolError(
                f"{owner} with action '{action}' contains '{key}', which only other actions use"
            )


def _is_sequence(value: object) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _check_content_filters(value: object, owner: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not _is_sequence(value):
        raise LocalProtocolError(f"{owner} contains 'content-filters' with wrong type")
    for name in value:
        if not isinstance(name, str) or not _is_unicode(name):
            # Pushpin says "content-filters contains element with wrong type"; naming the
            # format tells apart the three formats that may carry the list.
            raise LocalProtocolError(f"{owner} contains 'content-filters' element with wrong type")
    return tuple(value)


def _check_headers(value: object) -> tuple[tuple[str, str], ...]:
    if not _is_sequence(value):
        raise LocalProtocolError(f"{_HTTP_RESPONSE} contains 'headers' with wrong type")
    headers: list[tuple[str, str]] = []
    for header in value:
        if not _is_sequence(header):
            raise LocalProtocolError("headers contains element with wrong type")
        if len(header) != 2:
            raise LocalProtocolError("headers contains list with wrong number of elements")
        name, val = header
        if not isinstance(name, str):
            raise LocalProtocolError("header contains name element with wrong type")
        if not isinstance(val, str):
            raise LocalProtocolError("header contains value element with wrong type")
        if not _TOKEN.fullmatch(name):
            raise LocalProtocolError(f"headers contains {_quote(name)}, which is not a valid name")
        val = val.strip(_OWS)
        if not _FIELD_VALUE.fullmatch(val):
            raise LocalProtocolError(f"headers contains {_quote(name)} with invalid value")
        headers.append((name, val))
    return tuple(headers)


def _check_body_patch(value: object) -> tuple[JsonPatchOp, ...]:
    """Check the shape of a JSON Patch (RFC 6902) and keep a private, read-only copy of each op.

    Applying the patch is the delivery's job; here each op must be a JSON object with an `op`
    string, and everything in it must be plain JSON (a copy through `json` proves both).
    """
    if not _is_sequence(value):
        raise LocalProtocolError(f"{_HTTP_RESPONSE} contains 'body-patch' with wrong type")
    ops: list[JsonPatchOp] = []
    for index, op in enumerate(value):
        where = f"{_HTTP_RESPONSE} contains 'body-patch' element {index}"
        if not isinstance(op, Mapping):
            raise LocalProtocolError(f"{where} with wrong type")
        name = op.get("op")
        if name is None:
            raise LocalProtocolError(f"{where} without 'op'")
        if not isinstance(name, str):
            raise LocalProtocolError(f"{where} with 'op' of wrong type")
        try:
            text = json.dumps(dict(op), allow_nan=False, ensure_ascii=False)
            copy = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            copy = None
        if not isinstance(copy, dict) or not _is_unicode(text):
            raise LocalProtocolError(f"{where}, which is not JSON")
        ops.append(MappingProxyType(copy))
    return tuple(ops)


# --- the values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpResponseFormat:
    """A whole HTTP response, delivered to subscribers holding a long-poll (`http-response`).

    `code` is 200-999 (a final answer); 204 and 304 carry no body. `reason` None means the
    standard phrase for `code` (see `reason_phrase`); a given one is HTAB, SP, VCHAR or Latin-1
    obs-text. With action `send` exactly one of `body` and `body_patch` is given; other actions
    use no other field. Headers are (name, value) pairs in order; names must be tokens, values
    (stripped of surrounding whitespace) HTAB, SP, VCHAR or obs-text. Not hashable
    (`body_patch` holds JSON mappings).

    Raises `LocalProtocolError` when a field is invalid.
    """

    action: Action = "send"
    code: int = 200
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    body_patch: tuple[JsonPatchOp, ...] | None = None
    content_filters: tuple[str, ...] | None = None

    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        owner = _HTTP_RESPONSE
        action = _check_action(self.action, owner)
        if action != "send":
            _check_unused(
                owner,
                action,
                (
                    ("code", self.code != 200),
                    ("reason", self.reason is not None),
                    ("headers", bool(self.headers)),
                    ("body", self.body is not None),
                    ("body-patch", self.body_patch is not None),
                    ("content-filters", self.content_filters is not None),
                ),
            )
            return
        code = _check_int(self.code, owner, "code")
        # Pushpin allows 0-999 (and a long-poll answered 100 or 101 then waits forever); a final
        # status line needs three digits and a code of 200 or more.
        if not _LOWEST_STATUS <= code <= _HIGHEST_STATUS:
            raise LocalProtocolError(f"{owner} contains 'code' with invalid value")
        reason = _check_optional_text(self.reason, owner, "reason")
        if reason is not None and not _REASON.fullmatch(reason):
            raise LocalProtocolError(f"{owner} contains 'reason' with invalid value")
        object.__setattr__(self, "headers", _check_headers(self.headers))
        if self.body is not None:
            _check_bytes(self.body, owner, "body")
            if self.body_patch is not None:
                raise LocalProtocolError(f"{owner} contains both 'body' and 'body-patch'")
        elif self.body_patch is not None:
            object.__setattr__(self, "body_patch", _check_body_patch(self.body_patch))
        else:
            raise LocalProtocolError(
                f"{owner} does not contain 'body', 'body-bin', or 'body-patch'"
            )
        if code in _NO_CONTENT_STATUS and (self.body or self.body_patch is not None):
            raise LocalProtocolError(f"{owner} contains a body with code {code}, which has none")
        content_filters = _check_content_filters(self.content_filters, owner)
        object.__setattr__(self, "content_filters", content_filters)

    @property
    def reason_phrase(self) -> str:
        """The reason phrase to send: `reason`, or the standard one for `code`."""
        return self.reason if self.reason is not None else default_reason(self.code)


@dataclass(frozen=True, slots=True)
class HttpStreamFormat:
    """A chunk appended verbatim to held HTTP streams (`http-stream`); nothing is added to it.

    `content` and `content_filters` belong to action `send`; other actions use neither.

    Raises `LocalProtocolError` when a field is invalid.
    """

    action: Action = "send"
    content: bytes = b""
    content_filters: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        owner = _HTTP_STREAM
        action = _check_action(self.action, owner)
        _check_bytes(self.content, owner, "content")
        if action != "send":
            _check_unused(
                owner,
                action,
                (
                    ("content", bool(self.content)),
                    ("content-filters", self.content_filters is not None),
                ),
            )
            return
        content_filters = _check_content_filters(self.content_filters, owner)
        object.__setattr__(self, "content_filters", content_filters)


@dataclass(frozen=True, slots=True)
class WsMessageFormat:
    """A WebSocket message for WebSocket subscribers (`ws-message`), sent as-is.

    Action `send` uses `type`, `content` and `content_filters`: `text` content must be UTF-8,
    `ping`/`pong` content at most 125 bytes (a control frame). Action `close` uses `code` and
    `reason`: `code` None closes without a status; otherwise it must be a code a server may send
    (1000-1003, 1007-1013, 3000-4999); `reason` needs a `code` and fits in 123 UTF-8 bytes.
    `hint` and `refresh` use no field.

    Raises `LocalProtocolError` when a field is invalid.
    """

    action: Action = "send"
    type: WsMessageType = "text"
    content: bytes = b""
    code: int | None = None
    reason: str | None = None
    content_filters: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        owner = _WS_MESSAGE
        action = _check_action(self.action, owner)
        _check_ws_type(self.type)
        content = _check_bytes(self.content, owner, "content")
        if action != "send":
            _check_unused(
                owner,
                action,
                (
                    ("type", self.type != "text"),
                    ("content", bool(content)),
                    ("content-filters", self.content_filters is not None),
                ),
            )
        if action != "close":
            _check_unused(
                owner,
                action,
                (("code", self.code is not None), ("reason", self.reason is not None)),
            )
        if action == "send":
            self._check_send(content)
        elif action == "close":
            self._check_close()

    def _check_send(self, content: bytes) -> None:
        owner = _WS_MESSAGE
        if self.type == "text":
            try:
                content.decode("utf-8")
            except UnicodeDecodeError:
                raise LocalProtocolError(
                    f"{owner} contains 'content' with invalid value (a text message must be UTF-8)"
                ) from None
        elif self.type in ("ping", "pong") and len(content) > _MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError(
                f"{owner} contains a {self.type} of {len(content)} bytes, over the"
                f" {_MAX_CONTROL_PAYLOAD} bytes a control frame can carry"
            )
        content_filters = _check_content_filters(self.content_filters, owner)
        object.__setattr__(self, "content_filters", content_filters)

    def _check_close(self) -> None:
        owner = _WS_MESSAGE
        if self.code is not None:
            code = _check_int(self.code, owner, "code")
            if code not in _SENDABLE_CLOSE_CODES and not (
                _LOWEST_APP_CLOSE_CODE <= code <= _HIGHEST_APP_CLOSE_CODE
            ):
                raise LocalProtocolError(f"{owner} contains 'code' with invalid value")
        reason = _check_optional_text(self.reason, owner, "reason")
        if reason is not None:
            if self.code is None:
                raise LocalProtocolError(f"{owner} contains 'reason' without 'code'")
            if len(reason.encode("utf-8")) > _MAX_CLOSE_REASON:
                raise LocalProtocolError(
                    f"{owner} contains 'reason' longer than {_MAX_CLOSE_REASON} bytes"
                )


def _empty_meta() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Item:
    """One published item: a channel and the payload to deliver in each transport's format.

    `id`/`prev_id` drive sequencing and dedup (None when not given; never empty). `meta` is a
    read-only mapping of strings for filters. `no_seq` bypasses the sequencing buffer; `size`
    overrides the size used for stats accounting. At least one format is required. Not hashable
    (`meta` is a mapping); items compare by value.

    Raises `LocalProtocolError` when a field is invalid.
    """

    channel: str
    id: str | None = None
    prev_id: str | None = None
    meta: Mapping[str, str] = field(default_factory=_empty_meta)
    no_seq: bool = False
    size: int | None = None
    http_response: HttpResponseFormat | None = None
    http_stream: HttpStreamFormat | None = None
    ws_message: WsMessageFormat | None = None

    __hash__ = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        # Pushpin accepts an empty channel, but no subscriber can name it: reject it.
        if not _check_text(self.channel, _ITEM, "channel"):
            raise LocalProtocolError(f"{_ITEM} contains 'channel' with invalid value")
        _check_optional_text(self.id, _ITEM, "id")
        _check_optional_text(self.prev_id, _ITEM, "prev-id")
        if not isinstance(self.meta, Mapping):
            raise LocalProtocolError(f"{_ITEM} contains 'meta' with wrong type")
        meta: dict[str, str] = {}
        for key, value in self.meta.items():
            if not isinstance(key, str):
                raise LocalProtocolError(f"{_ITEM} contains 'meta' with wrong type")
            if not isinstance(value, str):
                raise LocalProtocolError(f"'meta' contains {_quote(key)} with wrong type")
            if not (_is_unicode(key) and _is_unicode(value)):
                raise LocalProtocolError(f"'meta' contains {_quote(key)} with invalid value")
            meta[key] = value
        object.__setattr__(self, "meta", MappingProxyType(meta))
        if not isinstance(self.no_seq, bool):
            raise LocalProtocolError(f"{_ITEM} contains 'no-seq' with wrong type")
        if self.size is not None and _check_int(self.size, _ITEM, "size") < 0:
            raise LocalProtocolError(f"{_ITEM} contains 'size' with invalid value")
        for fmt, cls, key in (
            (self.http_response, HttpResponseFormat, "http-response"),
            (self.http_stream, HttpStreamFormat, "http-stream"),
            (self.ws_message, WsMessageFormat, "ws-message"),
        ):
            if fmt is not None and not isinstance(fmt, cls):
                raise LocalProtocolError(f"{_ITEM} contains '{key}' with wrong type")
        if self.http_response is None and self.http_stream is None and self.ws_message is None:
            raise LocalProtocolError("no formats specified")


# --- parsing -----------------------------------------------------------------------------------


def _get(obj: Mapping[str, Any], key: str) -> Any:
    """The value of `key`; a JSON null counts as absent (publishers often send `"id": null`)."""
    return obj.get(key)


def _json_text(obj: Mapping[str, Any], owner: str, key: str) -> str | None:
    """An optional string field; the empty string counts as absent, as in Pushpin."""
    value = _get(obj, key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PublishError(f"{owner} contains '{key}' with wrong type")
    return value or None


def _json_bytes(obj: Mapping[str, Any], owner: str, key: str, bin_key: str) -> bytes | None:
    """`bin_key` (base64) if present, else `key` (a string, sent as UTF-8), else None."""
    value = _get(obj, bin_key)
    if value is not None:
        if not isinstance(value, str):
            raise PublishError(f"{owner} contains '{bin_key}' with wrong type")
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII string
            raise PublishError(f"{owner} contains '{bin_key}' with invalid base64") from None
    value = _get(obj, key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PublishError(f"{owner} contains '{key}' with wrong type")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise PublishError(f"{owner} contains '{key}' with invalid value") from None


def _check_size(content: bytes, limit: int, owner: str, obj: Mapping[str, Any], key: str) -> None:
    if limit and len(content) > limit:
        given = f"{key}-bin" if _get(obj, f"{key}-bin") is not None else key
        raise ContentTooLargeError(
            f"{owner} contains '{given}' of {len(content)} bytes, over the limit of {limit}"
        )


def _json_list(obj: Mapping[str, Any], owner: str, key: str) -> tuple[Any, ...] | None:
    value = _get(obj, key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise PublishError(f"{owner} contains '{key}' with wrong type")
    return tuple(value)


def _json_action(obj: Mapping[str, Any], owner: str) -> Action:
    value = _get(obj, "action")
    return "send" if value is None else _check_action(value, owner)


def _parse_http_response(obj: Any, limit: int) -> HttpResponseFormat:
    owner = _HTTP_RESPONSE
    if not isinstance(obj, dict):
        raise PublishError(f"{owner} is not an object")
    action = _json_action(obj, owner)
    if action != "send":
        return HttpResponseFormat(action=action)
    code = _get(obj, "code")
    code = 200 if code is None else _check_int(code, owner, "code")
    reason = _json_text(obj, owner, "reason")
    headers = _get(obj, "headers")
    if headers is None:
        headers = ()
    elif isinstance(headers, dict):
        for name, value in headers.items():
            if not isinstance(value, str):
                raise PublishError(f"headers contains {_quote(str(name))} with wrong type")
        headers = tuple(headers.items())
    elif not isinstance(headers, list):
        raise PublishError(f"{owner} contains 'headers' with wrong type")
    content_filters = _json_list(obj, owner, "content-filters")
    body = _json_bytes(obj, owner, "body", "body-bin")
    body_patch = None
    if body is not None:
        _check_size(body, limit, owner, obj, "body")
    else:
        body_patch = _json_list(obj, owner, "body-patch")
        if body_patch is None:
            raise PublishError(f"{owner} does not contain 'body', 'body-bin', or 'body-patch'")
    return HttpResponseFormat(
        code=code,
        reason=reason,
        headers=headers,
        body=body,
        body_patch=body_patch,
        content_filters=content_filters,
    )


def _parse_http_stream(obj: Any, limit: int) -> HttpStreamFormat:
    owner = _HTTP_STREAM
    if not isinstance(obj, dict):
        raise PublishError(f"{owner} is not an object")
    action = _json_action(obj, owner)
    if action != "send":
        return HttpStreamFormat(action=action)
    content_filters = _json_list(obj, owner, "content-filters")
    content = _json_bytes(obj, owner, "content", "content-bin")
    if content is None:
        raise PublishError(f"{owner} does not contain 'content' or 'content-bin'")
    _check_size(content, limit, owner, obj, "content")
    return HttpStreamFormat(content=content, content_filters=content_filters)


def _parse_ws_message(obj: Any, limit: int) -> WsMessageFormat:
    owner = _WS_MESSAGE
    if not isinstance(obj, dict):
        raise PublishError(f"{owner} is not an object")
    action = _json_action(obj, owner)
    if action == "close":
        code = _get(obj, "code")
        if code is not None:
            _check_int(code, owner, "code")
        return WsMessageFormat(action=action, code=code, reason=_json_text(obj, owner, "reason"))
    if action != "send":
        return WsMessageFormat(action=action)
    message_type = _get(obj, "type")
    if message_type is not None:
        message_type = _check_ws_type(message_type)
    content_filters = _json_list(obj, owner, "content-filters")
    content = _json_bytes(obj, owner, "content", "content-bin")
    if content is None:
        if message_type in (None, "text", "binary"):
            raise PublishError(f"{owner} does not contain 'content' or 'content-bin'")
        content = b""
    _check_size(content, limit, owner, obj, "content")
    if message_type is None:
        # Pushpin: binary when the publisher sent content-bin, else text.
        message_type = "binary" if _get(obj, "content-bin") is not None else "text"
    return WsMessageFormat(
        type=message_type,
        content=content,
        content_filters=content_filters,
    )


def _parse_item(obj: Any, limit: int) -> Item:
    if not isinstance(obj, dict):
        raise PublishError(f"{_ITEM} is not an object")
    channel = _get(obj, "channel")
    if channel is None:
        raise PublishError(f"{_ITEM} does not contain 'channel'")
    _check_text(channel, _ITEM, "channel")
    item_id = _json_text(obj, _ITEM, "id")
    prev_id = _json_text(obj, _ITEM, "prev-id")
    formats = _get(obj, "formats")
    if formats is None:
        # Legacy form: the formats sit on the item itself. When `formats` is present it wins and
        # top-level format keys are ignored, as in Pushpin.
        formats = obj
    elif not isinstance(formats, dict):
        raise PublishError(f"{_ITEM} contains 'formats' with wrong type")
    http_response = _get(formats, "http-response")
    http_stream = _get(formats, "http-stream")
    ws_message = _get(formats, "ws-message")
    if http_response is None and http_stream is None and ws_message is None:
        raise PublishError("no formats specified")
    if http_response is not None:
        http_response = _parse_http_response(http_response, limit)
    if http_stream is not None:
        http_stream = _parse_http_stream(http_stream, limit)
    if ws_message is not None:
        ws_message = _parse_ws_message(ws_message, limit)
    meta = _get(obj, "meta")
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise PublishError(f"{_ITEM} contains 'meta' with wrong type")
    no_seq = _get(obj, "no-seq")
    return Item(
        channel=channel,
        id=item_id,
        prev_id=prev_id,
        meta=meta,
        no_seq=False if no_seq is None else no_seq,
        size=_get(obj, "size"),
        http_response=http_response,
        http_stream=http_stream,
        ws_message=ws_message,
    )


def _check_limit(max_content_size: object) -> int:
    if not isinstance(max_content_size, int) or isinstance(max_content_size, bool):
        raise LocalProtocolError("max_content_size must be an int >= 0 (0 means unlimited)")
    if max_content_size < 0:
        raise LocalProtocolError("max_content_size must be an int >= 0 (0 means unlimited)")
    return max_content_size


def parse_item(
    obj: Any, *, index: int = 0, max_content_size: int = DEFAULT_MAX_CONTENT_SIZE
) -> Item:
    """Build an `Item` from one decoded JSON item object.

    Raises `PublishError` (`ContentTooLargeError` when a format's content is over
    `max_content_size`, 0 meaning unlimited) with a message starting `item <index>: `.
    Raises `LocalProtocolError` if `max_content_size` itself is invalid.
    """
    limit = _check_limit(max_content_size)
    try:
        return _parse_item(obj, limit)
    except PublishError as exc:
        raise type(exc)(f"item {index}: {exc.msg}") from None
    except LocalProtocolError as exc:  # a value constructor judged the publisher's input
        raise PublishError(f"item {index}: {exc.msg}") from None


def parse_items(items: Any, *, max_content_size: int = DEFAULT_MAX_CONTENT_SIZE) -> list[Item]:
    """Build `Item`s from a decoded JSON list of item objects (indexes in messages are 0-based).

    Raises `PublishError`/`ContentTooLargeError` as `parse_item` does, or
    `PublishError("object contains 'items' with wrong type")` when `items` is not a list.
    """
    limit = _check_limit(max_content_size)
    if not isinstance(items, list):
        raise PublishError("object contains 'items' with wrong type")
    return [parse_item(obj, index=i, max_content_size=limit) for i, obj in enumerate(items)]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_publish_body(
    body: bytes, *, max_content_size: int = DEFAULT_MAX_CONTENT_SIZE
) -> list[Item]:
    """Parse a `POST /publish` body, `{"items": [...]}` in UTF-8 JSON, into items.

    Any invalid item rejects the whole batch. Raises `PublishError` with Pushpin's messages:
    `Body is not valid JSON.` (also for bad UTF-8, NaN/Infinity, or nesting too deep to parse),
    `Invalid format.` (not an object), `Invalid format: object does not contain 'items'`,
    `Invalid format: object contains 'items' with wrong type`, and
    `Invalid format: item N: <what is wrong>`; `ContentTooLargeError` (413) for content over
    `max_content_size` (0: unlimited). Duplicate JSON keys: the last one wins.
    Raises `LocalProtocolError` if `body` is not bytes or `max_content_size` is invalid.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise LocalProtocolError("a publish body must be bytes")
    limit = _check_limit(max_content_size)
    try:
        doc = json.loads(str(body, "utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSON and UTF-8 errors are ValueErrors
        raise PublishError("Body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise PublishError("Invalid format.")
    if _get(doc, "items") is None:
        raise PublishError("Invalid format: object does not contain 'items'")
    try:
        return parse_items(doc["items"], max_content_size=limit)
    except PublishError as exc:
        raise type(exc)(f"Invalid format: {exc.msg}") from None


# --- encoding ----------------------------------------------------------------------------------


def _bytes_to_json(content: bytes, key: str, bin_key: str) -> dict[str, str]:
    """`{key: text}` when `content` is UTF-8, else `{bin_key: base64}`."""
    try:
        return {key: content.decode("utf-8")}
    except UnicodeDecodeError:
        return {bin_key: base64.b64encode(content).decode("ascii")}


def _http_response_to_json(fmt: HttpResponseFormat) -> dict[str, Any]:
    if fmt.action != "send":
        return {"action": fmt.action}
    out: dict[str, Any] = {}
    if fmt.code != 200:
        out["code"] = fmt.code
    if fmt.reason is not None:
        out["reason"] = fmt.reason
    if fmt.headers:
        out["headers"] = [list(pair) for pair in fmt.headers]  # pairs keep order and repeats
    if fmt.body is not None:
        out.update(_bytes_to_json(fmt.body, "body", "body-bin"))
    else:
        assert fmt.body_patch is not None
        out["body-patch"] = [dict(op) for op in fmt.body_patch]
    if fmt.content_filters is not None:
        out["content-filters"] = list(fmt.content_filters)
    return out


def _http_stream_to_json(fmt: HttpStreamFormat) -> dict[str, Any]:
    if fmt.action != "send":
        return {"action": fmt.action}
    out: dict[str, Any] = _bytes_to_json(fmt.content, "content", "content-bin")
    if fmt.content_filters is not None:
        out["content-filters"] = list(fmt.content_filters)
    return out


def _ws_message_to_json(fmt: WsMessageFormat) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fmt.action == "close":
        out["action"] = "close"
        if fmt.code is not None:
            out["code"] = fmt.code
        if fmt.reason is not None:
            out["reason"] = fmt.reason
        return out
    if fmt.action != "send":
        return {"action": fmt.action}
    # The key chosen for the content implies the type (content-bin: binary, content: text).
    if fmt.type == "binary":
        out["content-bin"] = base64.b64encode(fmt.content).decode("ascii")
    elif fmt.type == "text":
        out["content"] = fmt.content.decode("utf-8")
    else:
        out["type"] = fmt.type
        if fmt.content:
            out.update(_bytes_to_json(fmt.content, "content", "content-bin"))
    if fmt.content_filters is not None:
        out["content-filters"] = list(fmt.content_filters)
    return out


def item_to_json(item: Item) -> dict[str, Any]:
    """The canonical JSON-able form of `item` (formats under `formats`, defaults left out).

    Content that is UTF-8 is written as `body`/`content`, anything else as base64 `*-bin`.
    """
    out: dict[str, Any] = {"channel": item.channel}
    if item.id is not None:
        out["id"] = item.id
    if item.prev_id is not None:
        out["prev-id"] = item.prev_id
    formats: dict[str, Any] = {}
    if item.http_response is not None:
        formats["http-response"] = _http_response_to_json(item.http_response)
    if item.http_stream is not None:
        formats["http-stream"] = _http_stream_to_json(item.http_stream)
    if item.ws_message is not None:
        formats["ws-message"] = _ws_message_to_json(item.ws_message)
    out["formats"] = formats
    if item.meta:
        out["meta"] = dict(item.meta)
    if item.no_seq:
        out["no-seq"] = True
    if item.size is not None:
        out["size"] = item.size
    return out


def encode_publish_body(items: Iterable[Item]) -> bytes:
    """A `POST /publish` body (compact UTF-8 JSON) carrying `items`; it parses back to equal items
    (given a `max_content_size` that admits their content)."""
    doc = {"items": [item_to_json(item) for item in items]}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
