"""Origin helpers: what a web application behind a GRIP proxy needs, with no I/O at all.

An origin behind gripcore, Pushpin or Fastly Fanout answers requests with GRIP instructions and
checks that requests really came through its proxy. This module builds and checks those things
as plain values, so any framework (WSGI, ASGI, anything) can use them:

* **GRIP responses.** `hold_stream`, `hold_response` and the general `grip_response` return a
  `GripResponse`, a `(status, headers, body)` triple to hand to the framework. Instructions go
  in `Grip-*` headers (`form="headers"`, the default) or in an `application/grip-instruct` JSON
  body (`form="json"`). The encoders are the inverse of the proxy's parser: whatever is built
  here parses back with `gripcore.parse_instruct` to the same instructions (a property test
  checks it), and anything the parser would reject or alter raises `LocalProtocolError` here,
  at the origin, instead of a 502 at the proxy.
* **WebSocket-over-HTTP.** `WebSocketContext(headers, body)` decodes the events of one request,
  records what the application does (accept, send, subscribe, close, ...) and encodes the
  answer with `response()`: `OPEN` first when accepting, control messages as `c:` text, other
  messages with the `m:` prefix, `Sec-WebSocket-Extensions: grip`. A client `PING` is answered
  with a `PONG`, a client `CLOSE` is echoed unless the application closed first, and no close
  code outside what a server may send is ever emitted (gripcontrol sends code 0).
* **Grip-Sig.** `verify_request(headers, key, now)` returns the token's claims, or None when the
  `Grip-Sig` is absent *or invalid*: the GRIP spec asks origins to treat an invalid signature
  as an absent one. `verify_request_strict` raises `SigError` saying why instead. Keys are an
  HS256 secret, an ES256/RS256 public key as PEM or JWK (`FASTLY_FANOUT_JWK` is Fastly's), or a
  key parsed beforehand with `gripcore.parse_verify_key` (cheaper per request).

Choices, where GRIP leaves room:

* A client status other than 200 (or any reason phrase) is sent as `Grip-Status` on a 200
  response, so frameworks that refuse some statuses (304 with a body, 1xx) still work; in the
  JSON form it is `response.code`.
* Keep-alive data goes out raw when a header can carry it verbatim, else in Pushpin's `cstring`
  format (readable: `\\n` for newlines); `keep_alive_format` forces a format. The JSON form
  cannot say `mode`, and Pushpin then behaves as `interval`: an `idle` keep-alive is therefore
  sent as a `Grip-Keep-Alive` header even in the JSON form.
* `Grip-Link` URLs have `"`, `,`, `;`, spaces and non-ASCII characters percent-encoded (a header
  list could not carry them); other invalid links raise.
* Headers are `(str, str)` pairs of latin-1 text, as in WSGI (PEP 3333); non-latin-1 names and
  meta values are carried as UTF-8 bytes, as Pushpin reads them. Each GRIP header appears at
  most once (lists are comma-joined), so frameworks that keep headers in a dict can send them.

Errors: builders raise `LocalProtocolError` for arguments the proxy would reject or could not
receive; `WebSocketContext` raises `WebSocketEventsError` for a body that does not decode (the
peer's fault) and `LocalProtocolError` for misuse (sending after `close()`, an invalid code);
`verify_request_strict` raises `SigError`, `verify_request` only `LocalProtocolError` (bad key).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, NamedTuple, TypeAlias
from urllib.parse import quote

from ._errors import LocalProtocolError, SigError
from ._headers import (
    decode_utf8_text,
    encode_utf8_text,
    format_param_list,
    get_header,
)
from ._instruct import (
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    GRIP_INSTRUCT_CONTENT_TYPE,
    Channel,
    HoldMode,
    KeepAlive,
    Link,
    _link_url,
    instruct_body_limit,
)
from ._sig import SigningKey, VerifyKey, parse_verify_key, validate_sig
from ._wscontrol import (
    ControlMessage,
    Detach,
    MessageType,
    SetMeta,
    Subscribe,
    Unsubscribe,
    encode_control_message,
)
from ._wscontrol import KeepAlive as KeepAliveControl
from ._wscontrol import KeepAliveMode as ControlKeepAliveMode
from ._wsevents import (
    DEFAULT_MAX_EVENT_SIZE,
    Binary,
    Close,
    Disconnect,
    Open,
    Ping,
    Pong,
    Text,
    WebSocketEvent,
    decode_events,
    encode_events,
)

__all__ = [
    "GRIP_INSTRUCT_CONTENT_TYPE",
    "WEBSOCKET_EVENTS_CONTENT_TYPE",
    "Channel",
    "GripResponse",
    "KeepAlive",
    "KeepAliveFormat",
    "Link",
    "WebSocketContext",
    "grip_response",
    "hold_response",
    "hold_stream",
    "is_websocket_over_http",
    "verify_request",
    "verify_request_strict",
]

WEBSOCKET_EVENTS_CONTENT_TYPE: Final = "application/websocket-events"

KeepAliveFormat: TypeAlias = Literal["auto", "raw", "cstring", "base64"]
InstructForm: TypeAlias = Literal["headers", "json"]
HeadersArg: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]]
ChannelsArg: TypeAlias = str | Channel | Iterable[str | Channel]
RequestHeaders: TypeAlias = Any  # a Mapping, an object with .items(), or (name, value) pairs

# Pushpin keeps integers from headers in a C int.
_MAX_INT: Final = 2**31 - 1
# RFC 9110 token: a header or parameter name.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A header value h11 and the proxy's parser keep intact: visible latin-1 with inner SP/HTAB.
_HEADER_VALUE: Final = re.compile(r"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
# A reason phrase that survives `Grip-Status` trimming and JSON: visible text, inner spaces.
_REASON: Final = re.compile(r"[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")
# Link characters a comma-split parameter header cannot carry verbatim are percent-encoded.
_LINK_SAFE: Final = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '",;')
# Bytes the cstring format may write as themselves (visible ASCII except the header
# delimiters and the escape character).
_CSTRING_PLAIN: Final = frozenset(range(0x21, 0x7F)) - frozenset(b'",;\\')
_CSTRING_ESCAPES: Final = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n"}
# Close codes a server may send (RFC 6455 section 7.4.1) and peers accept.
_SENDABLE_CLOSE_CODES: Final = frozenset((1000, 1001, 1002, 1003, *range(1007, 1014)))
_APP_CLOSE_CODES: Final = range(3000, 5000)
# RFC 6455 section 5.5: a close frame carries at most 125 bytes, two of them the code.
_MAX_CLOSE_REASON: Final = 123
_NOT_ACCEPTED_BODY: Final = b"WebSocket connection not accepted\n"


class GripResponse(NamedTuple):
    """A response for the origin's framework to send: `status, headers, body = response`.

    `headers` are `(name, value)` pairs of latin-1 text (WSGI style); `header_bytes()` gives
    them as bytes (ASGI style).
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header_bytes(self) -> list[tuple[bytes, bytes]]:
        """The headers as `(bytes, bytes)` pairs; never raises for values built here."""
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]


# --- argument checks ---------------------------------------------------------------------------


def _fail(message: str) -> LocalProtocolError:
    return LocalProtocolError(message)


def _check_int(what: str, value: object, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= _MAX_INT:
        raise _fail(f"{what} must be an int in {minimum}..{_MAX_INT}, not {value!r}")
    return value


def _utf8(what: str, value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise _fail(f"{what} must be str or bytes, not {type(value).__name__}")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(f"{what} is not encodable as UTF-8 (lone surrogate)") from None


def _check_text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(f"{what} must be a str, not {type(value).__name__}")
    _utf8(what, value)
    return value


def _channels(channels: ChannelsArg) -> tuple[Channel, ...]:
    if isinstance(channels, str | Channel):
        channels = (channels,)
    given: object = channels
    if isinstance(given, bytes) or not isinstance(given, Iterable):
        raise _fail("channels must be a channel name, a Channel, or an iterable of them")
    out: list[Channel] = []
    for channel in channels:
        if isinstance(channel, str):
            channel = Channel(channel)
        elif not isinstance(channel, Channel):
            raise _fail(f"a channel must be a str or a Channel, not {type(channel).__name__}")
        for text in (channel.name, channel.prev_id or "", *channel.filters):
            _utf8(f"channel {channel.name!r}", text)
        out.append(channel)
    return tuple(out)


def _headers(headers: HeadersArg) -> list[tuple[str, str]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: list[tuple[str, str]] = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise _fail("headers must be (name, value) pairs of str")
        name, value = pair
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise _fail(f"header name {name!r} is not a token")
        if name.lower().startswith("grip-"):
            raise _fail(f"header {name!r}: give GRIP instructions as arguments, not headers")
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise _fail(
                f"header {name!r} must have a str value of visible latin-1 text (inner spaces"
                " allowed), not {value!r}"
            )
        out.append((name, value))
    return out


def _link(what: str, link: Link | str | None, *, timeout_allowed: bool) -> Link | None:
    if link is None:
        return None
    if isinstance(link, str):
        link = Link(link)
    elif not isinstance(link, Link):
        raise _fail(f"{what} must be a URL str or a Link, not {type(link).__name__}")
    if link.timeout is not None and not timeout_allowed:
        raise _fail(f"{what} has no timeout")
    if link.timeout is not None:
        _check_int(f"{what} timeout", link.timeout)
    url = _link_url(_percent_encode(link.url), None)
    if url is None:
        raise _fail(f"{what} {link.url!r} is not a valid http(s) URL or relative reference")
    return Link(url, link.timeout)


def _percent_encode(url: str) -> str:
    try:
        return quote(url, safe=_LINK_SAFE, encoding="utf-8", errors="strict")
    except UnicodeEncodeError:
        raise _fail(f"link {url!r} is not encodable as UTF-8") from None


# --- header encoders ---------------------------------------------------------------------------


def _channel_header(channel: Channel) -> str:
    params: list[tuple[str, str | None]] = []
    if channel.prev_id is not None:
        params.append(("prev-id", encode_utf8_text(channel.prev_id)))
    params.extend(("filter", encode_utf8_text(f)) for f in channel.filters)
    try:
        return format_param_list(encode_utf8_text(channel.name), params)
    except LocalProtocolError as exc:
        raise _fail(
            f"channel {channel.name!r} cannot be sent in a Grip-Channel header ({exc.msg});"
            " use form='json'"
        ) from None


def _param_text(name: str, value: str) -> str:
    """`name=value` with the value bare or quoted, as `format_param_list` writes parameters."""
    return format_param_list("x", [(name, value)])[len("x; ") :]


def _meta_header(key: str, value: str) -> str:
    if not _TOKEN.fullmatch(key):
        raise _fail(f"meta key {key!r} cannot be sent in a Grip-Set-Meta header; use form='json'")
    try:
        return _param_text(key, encode_utf8_text(value))
    except LocalProtocolError:
        raise _fail(
            f"meta {key!r} has a value a header cannot carry: {value!r}; use form='json' with a"
            " hold"
        ) from None


def _cstring(data: bytes) -> str:
    parts = [
        chr(byte) if byte in _CSTRING_PLAIN else _CSTRING_ESCAPES.get(byte, f"\\x{byte:02x}")
        for byte in data
    ]
    return "".join(parts)


def _keep_alive_header(keep_alive: KeepAlive, data_format: KeepAliveFormat) -> str:
    params: list[tuple[str, str | None]] = []
    text = keep_alive.data.decode("latin-1")
    if data_format == "auto":
        try:
            format_param_list(text)
        except LocalProtocolError:
            data_format = "cstring"
        else:
            data_format = "raw"
    if data_format == "raw":
        try:
            format_param_list(text)
        except LocalProtocolError:
            raise _fail(
                f"keep-alive data {keep_alive.data!r} cannot be sent raw in a header;"
                " use keep_alive_format='cstring' or 'base64'"
            ) from None
    elif data_format == "cstring":
        text = _cstring(keep_alive.data)
        params.append(("format", "cstring"))
    elif data_format == "base64":
        text = base64.b64encode(keep_alive.data).decode("ascii")
        params.append(("format", "base64"))
    else:
        raise _fail(f"keep_alive_format must be auto, raw, cstring or base64, not {data_format!r}")
    if keep_alive.timeout != DEFAULT_KEEP_ALIVE_TIMEOUT:
        params.append(("timeout", str(keep_alive.timeout)))
    if keep_alive.mode != "idle":
        params.append(("mode", keep_alive.mode))
    return format_param_list(text, params)


def _link_header(link: Link, rel: str) -> str:
    params: list[tuple[str, str | None]] = [("rel", rel)]
    if link.timeout is not None:
        params.append(("timeout", str(link.timeout)))
    return format_param_list(f"<{link.url}>", params)


def _text_or_bin(data: bytes, key: str) -> dict[str, str]:
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{key}-bin": base64.b64encode(data).decode("ascii")}


# --- GRIP responses ----------------------------------------------------------------------------


def grip_response(
    *,
    hold: HoldMode | None = None,
    channels: ChannelsArg = (),
    timeout: int | None = None,
    keep_alive: KeepAlive | bytes | str | None = None,
    keep_alive_format: KeepAliveFormat = "auto",
    status: int = 200,
    reason: str | None = None,
    headers: HeadersArg = (),
    body: bytes | str = b"",
    meta: Mapping[str, str] | None = None,
    next_link: Link | str | None = None,
    gone_link: Link | str | None = None,
    expose_headers: Iterable[str] | None = None,
    form: InstructForm = "headers",
) -> GripResponse:
    """Build a GRIP response; see `hold_stream` and `hold_response` for the common cases.

    `hold` is `"stream"`, `"response"` or None (no hold: with `next_link`, Pushpin's "GRIP
    next" chaining). `channels` are names or `Channel(name, prev_id, filters)` values.
    `timeout` (seconds) is the response-hold timeout (the proxy raises it to at least 5);
    `keep_alive` (a `KeepAlive(data, timeout, mode)`, or just the data) is the stream keep-alive.
    `status`/`reason` are what the client sees (for a response hold: on timeout); `headers` and
    `body` are the client's headers and body. `meta` is subscription meta (`Grip-Set-Meta`), for
    filters. `next_link` (`Link(url, timeout)` or a URL) and `gone_link` (a URL) are Grip-Links;
    `expose_headers` lists the only headers the proxy may pass to the client (header form only).

    Raises `LocalProtocolError` for any argument the proxy would reject or could not receive (a
    channel name with a comma in the header form, a `Grip-*` header, a body over what the proxy
    buffers for this instruct, ...), saying which.
    """
    if hold not in (None, "stream", "response"):
        raise _fail(f"hold must be 'stream', 'response' or None, not {hold!r}")
    if form not in ("headers", "json"):
        raise _fail(f"form must be 'headers' or 'json', not {form!r}")
    channel_list = _channels(channels)
    if timeout is not None:
        _check_int("timeout", timeout)
    if keep_alive is not None and not isinstance(keep_alive, KeepAlive):
        keep_alive = KeepAlive(_utf8("keep_alive", keep_alive))
    if type(status) is not int or not 100 <= status <= 999:
        raise _fail(f"status must be an int in 100..999, not {status!r}")
    if reason is not None and not (isinstance(reason, str) and _REASON.fullmatch(reason)):
        raise _fail(f"reason must be visible text without surrounding spaces, not {reason!r}")
    reason_bytes = None if reason is None else _utf8("reason", reason)
    client_headers = _headers(headers)
    body_bytes = _utf8("body", body)
    meta_items = [
        (_check_text("meta key", k), _check_text(f"meta {k!r}", v)) for k, v in (meta or {}).items()
    ]
    if any(not k for k, _ in meta_items):
        raise _fail("meta keys must not be empty")
    next_value = _link("next_link", next_link, timeout_allowed=True)
    gone_value = _link("gone_link", gone_link, timeout_allowed=False)

    out: list[tuple[str, str]] = []
    if form == "headers":
        if any(
            n.lower() == "content-type" and v.lower().startswith(GRIP_INSTRUCT_CONTENT_TYPE)
            for n, v in client_headers
        ):
            raise _fail(f"Content-Type {GRIP_INSTRUCT_CONTENT_TYPE} needs form='json'")
        out.extend(client_headers)
        if hold is not None:
            out.append(("Grip-Hold", hold))
        if channel_list:
            out.append(("Grip-Channel", ", ".join(_channel_header(c) for c in channel_list)))
        if timeout is not None:
            out.append(("Grip-Timeout", str(timeout)))
        if expose_headers is not None:
            names = [_check_text("expose_headers name", n) for n in expose_headers]
            if not all(_TOKEN.fullmatch(n) for n in names):
                raise _fail(f"expose_headers must be header names, not {names!r}")
            if names:
                out.append(("Grip-Expose-Headers", ", ".join(names)))
        if keep_alive is not None:
            out.append(("Grip-Keep-Alive", _keep_alive_header(keep_alive, keep_alive_format)))
        if meta_items:
            out.append(("Grip-Set-Meta", ", ".join(_meta_header(k, v) for k, v in meta_items)))
        if status != 200 or reason_bytes is not None:
            grip_status = str(status)
            if reason_bytes is not None:
                grip_status += " " + reason_bytes.decode("latin-1")
            out.append(("Grip-Status", grip_status))
        out_body = body_bytes
    else:
        if expose_headers is not None:
            raise _fail("expose_headers applies to the header form only")
        out.append(("Content-Type", GRIP_INSTRUCT_CONTENT_TYPE))
        document: dict[str, Any] = {}
        if hold is not None:
            hold_obj: dict[str, Any] = {
                "mode": hold,
                "channels": [_channel_json(c) for c in channel_list],
            }
            if timeout is not None:
                hold_obj["timeout"] = timeout
            if keep_alive is not None and keep_alive.mode == "interval":
                hold_obj["keep-alive"] = {
                    **_text_or_bin(keep_alive.data, "content"),
                    "timeout": keep_alive.timeout,
                }
            if meta_items:
                hold_obj["meta"] = dict(meta_items)
            document["hold"] = hold_obj
        else:
            if channel_list or timeout is not None:
                raise _fail("channels and timeout need a hold in the JSON form")
            if meta_items:
                out.append(("Grip-Set-Meta", ", ".join(_meta_header(k, v) for k, v in meta_items)))
        if keep_alive is not None and (hold is None or keep_alive.mode == "idle"):
            # The JSON form cannot say `mode`; Pushpin then behaves as `interval`.
            out.append(("Grip-Keep-Alive", _keep_alive_header(keep_alive, keep_alive_format)))
        response: dict[str, Any] = {}
        if status != 200:
            response["code"] = status
        if reason is not None:
            response["reason"] = reason
        if client_headers:
            response["headers"] = [[n, _json_header_value(n, v)] for n, v in client_headers]
        if body_bytes:
            response.update(_text_or_bin(body_bytes, "body"))
        if response:
            document["response"] = response
        out_body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    links = [_link_header(next_value, "next")] if next_value is not None else []
    if gone_value is not None:
        links.append(_link_header(gone_value, "gone"))
    if links:
        out.append(("Grip-Link", ", ".join(links)))

    header_bytes = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out]
    limit = instruct_body_limit(header_bytes)
    if limit is not None and len(out_body) > limit:
        raise _fail(
            f"body of {len(out_body)} bytes is over the {limit} bytes a GRIP proxy accepts with"
            " this instruct (a stream hold may send more)"
        )
    return GripResponse(200, out, out_body)


def _channel_json(channel: Channel) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": channel.name}
    if channel.prev_id is not None:
        obj["prev-id"] = channel.prev_id
    if channel.filters:
        obj["filters"] = list(channel.filters)
    return obj


def _json_header_value(name: str, value: str) -> str:
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(
            f"header {name!r}: the JSON form carries text, and this value's bytes are not UTF-8"
        ) from None


def hold_stream(
    channels: ChannelsArg,
    *,
    headers: HeadersArg = (),
    body: bytes | str = b"",
    keep_alive: KeepAlive | bytes | str | None = None,
    keep_alive_format: KeepAliveFormat = "auto",
    status: int = 200,
    reason: str | None = None,
    meta: Mapping[str, str] | None = None,
    next_link: Link | str | None = None,
    gone_link: Link | str | None = None,
    expose_headers: Iterable[str] | None = None,
    form: InstructForm = "headers",
) -> GripResponse:
    """A stream hold: the client gets `headers` and `body` now, then what is published to
    `channels` (`http-stream` content). Raises `LocalProtocolError` as `grip_response` does."""
    return grip_response(
        hold="stream",
        channels=channels,
        keep_alive=keep_alive,
        keep_alive_format=keep_alive_format,
        status=status,
        reason=reason,
        headers=headers,
        body=body,
        meta=meta,
        next_link=next_link,
        gone_link=gone_link,
        expose_headers=expose_headers,
        form=form,
    )


def hold_response(
    channels: ChannelsArg,
    *,
    timeout: int | None = None,
    headers: HeadersArg = (),
    body: bytes | str = b"",
    status: int = 200,
    reason: str | None = None,
    meta: Mapping[str, str] | None = None,
    expose_headers: Iterable[str] | None = None,
    form: InstructForm = "headers",
) -> GripResponse:
    """A response hold (long-poll): the client waits for an `http-response` published to
    `channels`, or gets (`status`, `headers`, `body`) after `timeout` seconds (default 55).
    Raises `LocalProtocolError` as `grip_response` does."""
    return grip_response(
        hold="response",
        channels=channels,
        timeout=timeout,
        status=status,
        reason=reason,
        headers=headers,
        body=body,
        meta=meta,
        expose_headers=expose_headers,
        form=form,
    )


# --- request headers ---------------------------------------------------------------------------


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace")
    raise _fail(f"header names and values must be str or bytes, not {type(value).__name__}")


def _request_headers(headers: RequestHeaders) -> list[tuple[bytes, bytes]]:
    """Framework headers (a mapping, `.items()`, or pairs; str or bytes) as byte pairs."""
    items = headers.items() if hasattr(headers, "items") else headers
    try:
        pairs = list(items)
    except TypeError:
        raise _fail("headers must be a mapping or an iterable of (name, value) pairs") from None
    out = []
    for pair in pairs:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise _fail("headers must be a mapping or an iterable of (name, value) pairs")
        out.append((_to_bytes(pair[0]), _to_bytes(pair[1])))
    return out


def is_websocket_over_http(headers: RequestHeaders) -> bool:
    """Whether a request is WebSocket-over-HTTP (its Content-Type says so). Raises
    `LocalProtocolError` only for headers that are not a mapping or pairs."""
    value = get_header(_request_headers(headers), b"content-type")
    if value is None:
        return False
    return value.split(b";", 1)[0].strip().lower() == WEBSOCKET_EVENTS_CONTENT_TYPE.encode()


# --- Grip-Sig ----------------------------------------------------------------------------------


def _verify_key(key: VerifyKey | SigningKey | str | bytes | Mapping[str, Any]) -> VerifyKey:
    if isinstance(key, VerifyKey):
        return key
    if isinstance(key, SigningKey):
        return key.verify_key
    if isinstance(key, bytes):
        if not key:
            raise _fail("the Grip-Sig key is empty")
        return VerifyKey("HS256", key)
    parsed = parse_verify_key(key)
    if parsed is None:
        raise _fail("the Grip-Sig key is empty")
    return parsed


def verify_request_strict(
    headers: RequestHeaders,
    key: VerifyKey | SigningKey | str | bytes | Mapping[str, Any],
    now: float,
    *,
    iss: str | None = None,
    leeway: float = 0,
) -> dict[str, Any]:
    """The claims of the request's valid `Grip-Sig`.

    `key`: an HS256 secret (str or bytes), a PEM public key, a JWK (a mapping such as
    `FASTLY_FANOUT_JWK`, or its JSON), or a key from `parse_verify_key`. `now` is wall-clock
    epoch seconds (`time.time()`); `iss`, when given, must equal the token's issuer (Fanout:
    `fastly:<service-id>`). Raises `SigError` (`reason`: missing, malformed, bad-signature,
    expired, no-exp, wrong-issuer) and `LocalProtocolError` for a key that does not parse.
    """
    verify_key = _verify_key(key)
    token = get_header(_request_headers(headers), b"grip-sig")
    return validate_sig(token, verify_key, now=now, iss=iss, leeway=leeway)


def verify_request(
    headers: RequestHeaders,
    key: VerifyKey | SigningKey | str | bytes | Mapping[str, Any],
    now: float,
    *,
    iss: str | None = None,
    leeway: float = 0,
) -> dict[str, Any] | None:
    """The claims of the request's `Grip-Sig`, or None when it is absent or invalid.

    GRIP: "treat an invalid signature as absent". Same arguments as `verify_request_strict`;
    raises only `LocalProtocolError` (a key that does not parse, bad arguments).
    """
    try:
        return verify_request_strict(headers, key, now, iss=iss, leeway=leeway)
    except SigError:
        return None


# --- WebSocket-over-HTTP -----------------------------------------------------------------------


def _check_close(code: int, reason: str) -> None:
    if type(code) is not int or (
        code not in _SENDABLE_CLOSE_CODES and code not in _APP_CLOSE_CODES
    ):
        raise _fail(
            f"close code must be one a server may send (1000-1003, 1007-1013, 3000-4999),"
            f" not {code!r}"
        )
    if len(_utf8("close reason", _check_text("close reason", reason))) > _MAX_CLOSE_REASON:
        raise _fail(f"close reason is longer than {_MAX_CLOSE_REASON} UTF-8 bytes")


class WebSocketContext:
    """One WebSocket-over-HTTP request from the proxy, and the answer being built.

    Built from the request's headers (a mapping or pairs, str or bytes) and body; `events` are
    its decoded events, `messages` the client's TEXT (str) and BINARY (bytes) messages in order
    (also readable one by one with `recv()`). `id` is the `Connection-Id`; `meta` the connection
    meta from `Meta-*` headers (lower-case names). A client PING is answered with a PONG; a client
    CLOSE (`client_closed`, `close_code`, `close_reason`) is echoed back unless `close()` is
    called; `disconnected` is set by DISCONNECT.

    Raises `WebSocketEventsError` for a body that does not decode, `LocalProtocolError` for
    headers that are not headers.
    """

    def __init__(
        self,
        headers: RequestHeaders,
        body: bytes,
        *,
        message_prefix: str | bytes = "m:",
        max_event_size: int = DEFAULT_MAX_EVENT_SIZE,
    ) -> None:
        pairs = _request_headers(headers)
        if not isinstance(body, bytes):
            raise _fail(f"body must be bytes, not {type(body).__name__}")
        self.events: tuple[WebSocketEvent, ...] = tuple(
            decode_events(body, max_event_size=max_event_size)
        )
        self.message_prefix = _utf8("message_prefix", message_prefix)
        self._extension = "grip"
        if self.message_prefix != b"m:":
            try:
                self._extension = format_param_list(
                    "grip", [("message-prefix", self.message_prefix.decode("latin-1"))]
                )
            except LocalProtocolError:
                raise _fail(
                    f"message prefix {message_prefix!r} cannot be sent in a header"
                ) from None
        connection_id = get_header(pairs, b"connection-id")
        self.id: str | None = None if connection_id is None else connection_id.decode("latin-1")
        self.meta: dict[str, str] = {
            decode_utf8_text(name[5:].decode("latin-1")).lower(): decode_utf8_text(
                value.decode("latin-1")
            )
            for name, value in pairs
            if name.lower().startswith(b"meta-") and len(name) > 5
        }
        self.accepted = False
        self.closed = False
        self.client_closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.disconnected = False
        self.keep_alive_interval: int | None = None
        self._out: list[WebSocketEvent] = []
        self._set_meta: dict[str, str] = {}
        self._read = 0
        messages: list[str | bytes] = []
        for event in self.events:
            if isinstance(event, Text):
                messages.append(event.text)
            elif isinstance(event, Binary):
                messages.append(event.data)
            elif isinstance(event, Ping):
                self._out.append(Pong(event.data))
            elif isinstance(event, Close):
                self.client_closed = True
                self.close_code, self.close_reason = event.code, event.reason
            elif isinstance(event, Disconnect):
                self.disconnected = True
        self.messages: tuple[str | bytes, ...] = tuple(messages)

    @property
    def is_opening(self) -> bool:
        """Whether this request opens the connection (its first event is OPEN)."""
        return bool(self.events) and isinstance(self.events[0], Open)

    def can_recv(self) -> bool:
        """Whether `recv()` has a message left."""
        return self._read < len(self.messages)

    def recv(self) -> str | bytes | None:
        """The next client message (str for TEXT, bytes for BINARY), or None when none is left."""
        if self._read >= len(self.messages):
            return None
        self._read += 1
        return self.messages[self._read - 1]

    def accept(self) -> None:
        """Accept the connection: the response starts with OPEN. Raises `LocalProtocolError`
        when this request does not open a connection."""
        if not self.is_opening:
            raise _fail("accept() answers an OPEN, and this request has none")
        self.accepted = True

    def _queue(self, event: WebSocketEvent) -> None:
        if self.closed:
            raise _fail("the connection is closing: nothing may be sent after close()")
        self._out.append(event)

    def send(self, message: str | bytes) -> None:
        """Send a text message to the client (prefixed with the message prefix). Raises
        `LocalProtocolError` for bytes that are not UTF-8, or after `close()`."""
        self._queue(Text(self.message_prefix + _utf8("message", message)))

    def send_binary(self, message: bytes | str) -> None:
        """Send a binary message to the client. Raises `LocalProtocolError` after `close()`."""
        self._queue(Binary(self.message_prefix + _utf8("message", message)))

    def send_control(self, message: ControlMessage) -> None:
        """Send a GRIP control message (`c:{...}`) to the proxy. Raises `LocalProtocolError` for
        a non-control message, or after `close()`."""
        self._queue(Text(encode_control_message(message)))

    def subscribe(self, channel: str, filters: Iterable[str] = ()) -> None:
        """Subscribe the connection to `channel`. Raises `LocalProtocolError` for an empty name."""
        self.send_control(Subscribe(channel, tuple(filters)))

    def unsubscribe(self, channel: str) -> None:
        """Unsubscribe the connection from `channel`."""
        self.send_control(Unsubscribe(channel))

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (None: delete) subscription meta `name`, used by filters such as `skip-self`."""
        self.send_control(SetMeta(name, value))

    def detach(self) -> None:
        """Detach: the proxy stops calling the origin and keeps pushing to the client."""
        self.send_control(Detach())

    def keep_alive(
        self,
        content: str | bytes | None,
        *,
        message_type: MessageType = "text",
        timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT,
        mode: ControlKeepAliveMode = "idle",
    ) -> None:
        """Have the proxy send `content` to the client when idle for (or every) `timeout`
        seconds; `content=None` turns keep-alives off. Raises `LocalProtocolError` for invalid
        values."""
        data = None if content is None else _utf8("keep-alive content", content)
        self.send_control(KeepAliveControl(data, message_type, timeout, mode))

    def set_connection_meta(self, name: str, value: str | None) -> None:
        """Set (None or "": delete) connection meta, echoed by the proxy as `Meta-<name>` on later
        requests (`Set-Meta-<name>` header). Raises `LocalProtocolError` for a name that is not a
        token or a value with control characters."""
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise _fail(f"connection meta name must be a token, not {name!r}")
        text = encode_utf8_text(_check_text("connection meta value", value or ""))
        if not _HEADER_VALUE.fullmatch(text):
            raise _fail(f"connection meta {name!r} has a value a header cannot carry: {value!r}")
        self._set_meta[name] = text
        if text:
            self.meta[name.lower()] = value or ""
        else:
            self.meta.pop(name.lower(), None)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with `code` and `reason`. Raises `LocalProtocolError` for a code
        a server may not send or a reason over 123 bytes (no code 0, unlike gripcontrol)."""
        _check_close(code, reason)
        self._queue(Close(code, reason))
        self.closed = True

    def response(self) -> GripResponse:
        """The answer to this request.

        200 `application/websocket-events` with OPEN first when accepting, then the queued events
        (and the echo of a client CLOSE); `Sec-WebSocket-Extensions: grip` (with the message
        prefix when not `m:`), `Set-Meta-*` and `Keep-Alive-Interval` headers. An opening request
        that was not accepted gets a 403, which the proxy relays as the handshake's rejection.
        """
        if self.is_opening and not self.accepted:
            return GripResponse(403, [("Content-Type", "text/plain")], _NOT_ACCEPTED_BODY)
        events: list[WebSocketEvent] = [Open()] if self.is_opening else []
        events.extend(self._out)
        if self.client_closed and not self.closed:
            code = self.close_code
            if code is not None and (code in _SENDABLE_CLOSE_CODES or code in _APP_CLOSE_CODES):
                events.append(Close(code, self.close_reason))
            else:
                events.append(Close())
        headers = [
            ("Content-Type", WEBSOCKET_EVENTS_CONTENT_TYPE),
            ("Sec-WebSocket-Extensions", self._extension),
        ]
        headers.extend((f"Set-Meta-{name}", value) for name, value in self._set_meta.items())
        if self.keep_alive_interval is not None:
            interval = _check_int("keep_alive_interval", self.keep_alive_interval, 1)
            headers.append(("Keep-Alive-Interval", str(interval)))
        return GripResponse(200, headers, encode_events(events))
