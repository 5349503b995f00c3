"""GRIP instructs: what an origin's response tells the proxy to do, parsed into one value.

Strategy: `parse_instruct` takes a complete origin response (status, reason, headers, body) and
returns an `Instruct`: the hold mode, channels, timeouts, keep-alive, meta and links, plus the
response the client is to see (status, reason, headers, body) with every GRIP header removed. It
follows Pushpin's `Instruct::fromResponse` (`src/handler/instruct.cpp`) step by step, in the same
order, so the *first* error found is the one Pushpin would report, with Pushpin's wording:

1. `Grip-Hold` (first header only, exact value `response` or `stream`);
2. `Grip-Channel` (every header, comma lists, `prev-id`, repeated `filter`, at most 5 filters);
3. `Grip-Timeout`; 4. `Grip-Expose-Headers`; 5. `Grip-Keep-Alive` (first header, not comma-split);
6. `Grip-Set-Meta`; 7. `Grip-Status`; 8. `Grip-Link` (`rel=next` / `rel=gone`, last one wins);
9. the client headers: `Grip-*` stripped, the expose whitelist applied, hop-by-hop headers and
   `Content-Length` removed (adapters recompute framing);
10. an `application/grip-instruct` JSON body, merged over the header instructions: JSON hold mode
    wins, channels are appended, timeout and keep-alive data/timeout override, meta merges over,
    `response.code` overrides `Grip-Status`; the outer headers and body are discarded.

Defaults and clamps (§1.6): response-hold timeout 55 s, raised to at least 5 s; keep-alive
timeout 55 s, at least 1 s; next-link timeout 120 s. Integers are parsed as Qt's `toInt` does:
surrounding whitespace and a sign allowed, 32-bit range, nothing else.

Decisions where Pushpin is accidental, documented here and tested:

* **5-filter limit on both paths.** Pushpin checks it only for `Grip-Channel`; we also reject
  six filters in a JSON channel (same message). Unknown filter names are kept in
  `Channel.filters`; the hub ignores names it does not know, as Pushpin does.
* **JSON keep-alive mode** follows Pushpin: it has no `mode`, so the mode comes from a
  `Grip-Keep-Alive` header when there is one, and is `interval` otherwise (what Pushpin's timer
  does in that case). A JSON `keep-alive` without a `timeout` resets the timeout to 55, as in
  Pushpin. A keep-alive whose data ends up empty is no keep-alive (`keep_alive is None`), and a
  header keep-alive whose `cstring`/`base64` data decodes to nothing is an error (Pushpin would
  write empty keep-alives).
* **Empty channel names.** An empty element of a `Grip-Channel` list (`a,,b`) is skipped (Pushpin
  subscribes to a channel named ""); a JSON channel with `"name": ""` is an error. An empty
  `prev-id` is treated as absent, and a bare `filter` parameter (no `=`) is ignored.
* **Unparsable elements are skipped** as in Pushpin: a `Grip-Channel`, `Grip-Set-Meta` or
  `Grip-Link` element with an unterminated quoted parameter is ignored, and so is a whole
  `Grip-Keep-Alive` header.
* **Parameter names are case-insensitive everywhere** (Pushpin compares `filter` case-sensitively
  but `prev-id`, `rel`, `timeout`, `mode` and `format` case-insensitively). Values such as `rel`
  and `mode` are compared exactly, as in Pushpin.
* **Content-Type** is matched on its media type (before `;`), trimmed and case-insensitively
  (media types are case-insensitive; Pushpin compares bytes exactly).
* **JSON types are strict:** numbers must be JSON integers (Pushpin also accepts strings and
  floats that Qt can convert), `null` counts as absent for optional members. JSON `response`
  headers are checked to be sendable (token names, no control characters in values) and have
  `Grip-*`, hop-by-hop and `Content-Length` headers removed like the outer ones. A non-object
  `response` gets a message of our own (Pushpin's is empty).
* **Grip-Link URLs** are `<...>`-wrapped; control characters or spaces, a bad port or bracketed
  host, or an absolute link whose scheme is not http/https make `Grip-Link contains invalid link`
  (Pushpin asks QUrl, which is lenient); non-ASCII bytes are percent-encoded (as QUrl does).
  Relative links are resolved against `request_uri` with `urllib.parse.urljoin`.
* **Status codes** may be 0-999 as in Pushpin (`Grip-Status`, JSON `response.code`); an adapter
  that cannot send a code below 200 must map it itself. An empty reason becomes the standard
  phrase (`http.HTTPStatus`), or Pushpin's `Undefined Reason` for an unregistered code.
* **Body size.** A response body over `MAX_INSTRUCT_BODY` is rejected (`GRIP instruct response
  too large`, status hint 502), except, as in Pushpin, for a stream hold or a non-hold with a next
  link that uses no `build-id` filter: there the adapter may stream the body. JSON instruct bodies
  are always limited (they must be parsed whole). `instruct_body_limit` answers from the headers
  alone, so an adapter can enforce the limit while reading.

Text: header values are read as latin-1 (see `_headers`), and names, ids, meta and filter names as
UTF-8 from those bytes, as Pushpin does. Keep-alive data and the Grip-Status reason keep their
bytes. Every list produced here is proportional to input that is already bounded (h11's header
limit, `MAX_INSTRUCT_BODY`), and every step is linear in its input.

Errors: `parse_instruct` raises only `InstructError` (status hint 502), whatever the origin sent;
`LocalProtocolError` means its caller passed arguments of the wrong type. The value classes raise
`LocalProtocolError` when built with invalid fields.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Literal, NoReturn, cast, get_args
from urllib.parse import quote, urljoin, urlsplit

from ._errors import InstructError, LocalProtocolError, RemoteProtocolError
from ._headers import (
    WHITESPACE,
    Headers,
    HeaderValue,
    decode_utf8_text,
    get_header,
    get_split_header_values,
    header_text,
    parse_param_list,
    parse_params,
)

__all__ = [
    "DEFAULT_KEEP_ALIVE_TIMEOUT",
    "DEFAULT_NEXT_LINK_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "GRIP_INSTRUCT_CONTENT_TYPE",
    "HOP_BY_HOP_HEADERS",
    "MAX_FILTERS",
    "MAX_INSTRUCT_BODY",
    "MIN_KEEP_ALIVE_TIMEOUT",
    "MIN_TIMEOUT",
    "Channel",
    "HoldMode",
    "Instruct",
    "KeepAlive",
    "KeepAliveMode",
    "Link",
    "client_response",
    "instruct_body_limit",
    "is_grip_response",
    "parse_instruct",
    "reason_phrase",
    "strip_grip_headers",
    "strip_hop_by_hop",
]

HoldMode = Literal["response", "stream"]
KeepAliveMode = Literal["idle", "interval"]

# Pushpin's response-hold default: answers before common 60 s idle timeouts of proxies/browsers.
DEFAULT_TIMEOUT = 55
# Pushpin's floor for response holds: shorter holds would turn long-polling into busy polling.
MIN_TIMEOUT = 5
# Pushpin's stream keep-alive default, for the same 60 s idle-timeout reason as DEFAULT_TIMEOUT.
DEFAULT_KEEP_ALIVE_TIMEOUT = 55
# Keep-alives are scheduled in whole seconds; zero would mean a busy loop.
MIN_KEEP_ALIVE_TIMEOUT = 1
# Pushpin's default idle time before a stream re-fetches its next link.
DEFAULT_NEXT_LINK_TIMEOUT = 120
# Pushpin's MESSAGEFILTERSTACK_SIZE_MAX: each filter runs on every delivery to the channel.
MAX_FILTERS = 5
# Pushpin's MAX_ACCEPT_RESPONSE_BODY: an instruct body is buffered whole (and kept as the timeout
# response of a response hold), so it must stay small.
MAX_INSTRUCT_BODY = 100_000

GRIP_INSTRUCT_CONTENT_TYPE = "application/grip-instruct"

HOP_BY_HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"content-encoding", b"transfer-encoding"}
)
"""Lower-case names Pushpin never relays from the origin: they describe only the origin hop."""

_NOT_FOR_CLIENT = HOP_BY_HOP_HEADERS | {b"content-length"}

_INT32_MAX = 2**31 - 1
# Qt's QByteArray::toInt: optional surrounding whitespace, optional sign, decimal digits. Ten
# significant digits are enough for any 32-bit value and keep int() away from very long strings.
_INT = re.compile(r"[ \t\r\n\v\f]*([+-]?)0*([0-9]{1,10})[ \t\r\n\v\f]*")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_B64_ALPHABET = re.compile(r"[^A-Za-z0-9+/]+")
_LINK_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")
_LINK_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))
# What h11 will send: a token name, and a value of visible characters with inner SP/HTAB.
_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
_REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise LocalProtocolError(message)


def _fail(message: str) -> NoReturn:
    raise InstructError(message)


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel to subscribe to: `name`, the `prev_id` already reflected, filter names in order."""

    name: str
    prev_id: str | None = None
    filters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name != "", "channel name must be a str")
        _require(
            self.prev_id is None or (isinstance(self.prev_id, str) and self.prev_id != ""),
            "channel prev_id must be None or a non-empty str",
        )
        _require(
            isinstance(self.filters, Iterable) and not isinstance(self.filters, (str, bytes)),
            "channel filters must be a sequence of strs",
        )
        filters = tuple(self.filters)
        _require(all(isinstance(f, str) for f in filters), "channel filters must be strs")
        _require(len(filters) <= MAX_FILTERS, f"at most {MAX_FILTERS} filters per channel")
        object.__setattr__(self, "filters", filters)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Stream keep-alive: write `data` after `timeout` seconds of no data (`idle`) or every
    `timeout` seconds regardless (`interval`)."""

    data: bytes
    timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT
    mode: KeepAliveMode = "idle"

    def __post_init__(self) -> None:
        _require(isinstance(self.data, bytes) and self.data != b"", "keep-alive data is empty")
        _require(
            type(self.timeout) is int and self.timeout >= MIN_KEEP_ALIVE_TIMEOUT,
            f"keep-alive timeout must be an int >= {MIN_KEEP_ALIVE_TIMEOUT}",
        )
        _require(self.mode in get_args(KeepAliveMode), "keep-alive mode must be idle or interval")


@dataclass(frozen=True, slots=True)
class Link:
    """A `Grip-Link`: `url` (resolved when a request URI was known); `timeout` for `rel=next`."""

    url: str
    timeout: int | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.url, str) and self.url != "", "link url must be a non-empty str")
        _require(
            self.timeout is None or (type(self.timeout) is int and self.timeout >= 0),
            "link timeout must be None or an int >= 0",
        )


@dataclass(frozen=True, slots=True)
class Instruct:
    """A parsed GRIP instruct and the response the client is to see.

    For a response hold, (`status`, `reason`, `headers`, `body`) is the timeout response; for a
    stream hold it is sent at once; without a hold it is the whole answer. `timeout` (seconds)
    matters only to a response hold and `keep_alive` only to a stream hold, but both are parsed
    whatever the hold, as in Pushpin. `meta` is read-only.
    """

    hold: HoldMode | None = None
    channels: tuple[Channel, ...] = ()
    timeout: int = DEFAULT_TIMEOUT
    keep_alive: KeepAlive | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    next_link: Link | None = None
    gone_link: Link | None = None
    status: int = 200
    reason: bytes = b"OK"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    def __post_init__(self) -> None:
        _require(self.hold is None or self.hold in get_args(HoldMode), "bad hold mode")
        _require(isinstance(self.channels, Iterable), "channels must be Channels")
        channels = tuple(self.channels)
        _require(all(isinstance(c, Channel) for c in channels), "channels must be Channels")
        _require(
            type(self.timeout) is int and self.timeout >= MIN_TIMEOUT,
            f"timeout must be an int >= {MIN_TIMEOUT}",
        )
        _require(
            self.keep_alive is None or isinstance(self.keep_alive, KeepAlive), "bad keep_alive"
        )
        _require(isinstance(self.meta, Mapping), "meta must be a mapping")
        meta = dict(self.meta)
        _require(
            all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()),
            "meta must map str to str",
        )
        for link in (self.next_link, self.gone_link):
            _require(link is None or isinstance(link, Link), "links must be Links")
        _require(type(self.status) is int and 0 <= self.status <= 999, "status must be 0-999")
        _require(isinstance(self.reason, bytes), "reason must be bytes")
        _require(isinstance(self.headers, Iterable), "headers must be (bytes, bytes) pairs")
        headers = tuple(self.headers)
        _require(
            all(
                isinstance(h, tuple)
                and len(h) == 2
                and isinstance(h[0], bytes)
                and isinstance(h[1], bytes)
                for h in headers
            ),
            "headers must be (bytes, bytes) pairs",
        )
        _require(isinstance(self.body, bytes), "body must be bytes")
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "meta", MappingProxyType(meta))
        object.__setattr__(self, "headers", headers)


def client_response(instruct: Instruct) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """(status, reason, headers, body) of the response the client sees; never raises."""
    return instruct.status, instruct.reason, list(instruct.headers), instruct.body


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for `status`, or Pushpin's `Undefined Reason`; never raises."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Undefined Reason"


def strip_grip_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The headers without any whose name starts with `Grip-` (case-insensitive); never raises."""
    return [(k, v) for k, v in headers if not k.lower().startswith(b"grip-")]


def strip_hop_by_hop(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The headers without `HOP_BY_HOP_HEADERS`, as Pushpin relays a non-GRIP response.

    `Content-Length` is kept (the body is relayed unchanged); never raises.
    """
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP_HEADERS]


def _is_instruct_content(headers: Headers) -> bool:
    value = get_header(headers, b"content-type")
    if value is None:
        return False
    media_type = header_text(value).split(";", 1)[0].strip(WHITESPACE)
    return media_type.lower() == GRIP_INSTRUCT_CONTENT_TYPE


def is_grip_response(headers: Headers) -> bool:
    """Whether an origin response is a GRIP instruct (§1.2); never raises.

    True if any header name starts with `Grip-` (case-insensitive; even unknown ones such as
    `Grip-Foo`) or the `Content-Type` media type is `application/grip-instruct` (trimmed,
    compared case-insensitively).
    """
    if any(name.lower().startswith(b"grip-") for name, _ in headers):
        return True
    return _is_instruct_content(headers)


def _param_lists(headers: Headers, name: bytes) -> list[HeaderValue]:
    """Every element of header `name`; elements that fail to parse are skipped, as in Pushpin."""
    out: list[HeaderValue] = []
    for element in get_split_header_values(headers, name):
        try:
            out.append(parse_param_list(element))
        except RemoteProtocolError:
            continue
    return out


def _first_text(headers: Headers, name: bytes) -> str | None:
    value = get_header(headers, name)
    return None if value is None else header_text(value).strip(WHITESPACE)


def instruct_body_limit(headers: Headers, *, max_body: int = MAX_INSTRUCT_BODY) -> int | None:
    """Largest origin body a GRIP response with these headers may have, or None for no limit.

    None when Pushpin would stream the body instead of buffering it: a `stream` hold, or no hold
    with a `rel=next` link, provided no channel uses the `build-id` filter (it needs the whole
    body) and the body is not a JSON instruct. Never raises.
    """
    if _is_instruct_content(headers):
        return max_body
    hold = _first_text(headers, b"grip-hold") or ""
    has_next_link = any(
        link.params and link.first and link.get("rel") == "next"
        for link in _param_lists(headers, b"grip-link")
    )
    uses_build_id = any(
        "build-id" in channel.get_all("filter")
        for channel in _param_lists(headers, b"grip-channel")
    )
    if (hold == "stream" or (hold == "" and has_next_link)) and not uses_build_id:
        return None
    return max_body


def _parse_int(text: str | None) -> int | None:
    """Qt's `toInt`: the value, or None if it is not a 32-bit decimal integer."""
    if text is None:
        return None
    match = _INT.fullmatch(text)
    if match is None:
        return None
    value = -int(match.group(2)) if match.group(1) == "-" else int(match.group(2))
    return value if -_INT32_MAX - 1 <= value <= _INT32_MAX else None


def _unescape_cstring(text: str) -> bytes | None:
    r"""Pushpin's cstring format: `\\`, `\r`, `\n`, `\xHH`; other escapes are dropped.

    None for a trailing lone backslash or a bad `\x` escape.
    """
    raw = text.encode("latin-1")
    out = bytearray()
    size = len(raw)
    pos = 0
    while pos < size:
        slash = raw.find(b"\\", pos)
        if slash == -1:
            out += raw[pos:]
            break
        out += raw[pos:slash]
        if slash + 1 >= size:
            return None
        code = raw[slash + 1]
        pos = slash + 2
        if code == 0x5C:  # backslash
            out.append(0x5C)
        elif code == 0x72:  # r
            out.append(0x0D)
        elif code == 0x6E:  # n
            out.append(0x0A)
        elif code == 0x78:  # x
            digits = raw[pos : pos + 2]
            if len(digits) < 2 or not all(d in _HEX for d in digits):
                return None
            out.append(int(digits, 16))
            pos += 2
    return bytes(out)


def _lenient_b64decode(text: str) -> bytes:
    """Qt's lenient `fromBase64`: characters outside the alphabet (and `=`) are skipped."""
    data = _B64_ALPHABET.sub("", text)
    data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
    return base64.b64decode(data + "=" * (-len(data) % 4))


def _scrub(text: str) -> str:
    """Replace lone surrogates (JSON allows `\\ud800`) with U+FFFD so the text encodes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _link_url(text: str, request_uri: str | None) -> str | None:
    """The URL inside `<...>`, resolved against `request_uri`; None if it is not a valid link."""
    if _LINK_FORBIDDEN.search(text):
        return None
    url = quote(text, safe=_LINK_SAFE, encoding="latin-1")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return None
    if parts.scheme and (parts.scheme not in ("http", "https") or not parts.netloc):
        return None
    if request_uri is None:
        return url
    try:
        return urljoin(request_uri, url)
    except ValueError:
        raise LocalProtocolError(f"request_uri {request_uri!r} is not a valid URI") from None


@dataclass(slots=True)
class _Draft:
    """The instruct being assembled (mutable; `parse_instruct` turns it into an `Instruct`)."""

    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    hold: HoldMode | None = None
    channels: list[Channel] = field(default_factory=list)
    timeout: int | None = None
    keep_alive_data: bytes | None = None
    keep_alive_timeout: int | None = None
    keep_alive_mode: KeepAliveMode | None = None
    meta: dict[str, str] = field(default_factory=dict)
    next_link: Link | None = None
    gone_link: Link | None = None


def _channel(name: str, prev_id: str | None, filters: list[str]) -> Channel:
    if len(filters) > MAX_FILTERS:
        _fail(f"too many filters for channel '{name}'")
    return Channel(name, prev_id or None, tuple(filters))


def _parse_keep_alive(draft: _Draft, headers: Headers) -> None:
    text = _first_text(headers, b"grip-keep-alive")
    if not text:
        return
    try:
        params = parse_param_list(text)
    except RemoteProtocolError:
        return  # Pushpin ignores a Grip-Keep-Alive it cannot parse.
    if params.first == "":
        _fail("Grip-Keep-Alive cannot be empty")
    mode = params.get("mode") or "idle"
    if mode not in get_args(KeepAliveMode):
        _fail(f"no such Grip-Keep-Alive mode '{decode_utf8_text(mode)}'")
    timeout = DEFAULT_KEEP_ALIVE_TIMEOUT
    if params.has("timeout"):
        parsed = _parse_int(params.get("timeout"))
        if parsed is None:
            _fail("failed to parse Grip-Keep-Alive timeout value")
        if parsed < 0:
            _fail("Grip-Keep-Alive timeout has invalid value")
        timeout = parsed
    data_format = params.get("format") or "raw"
    data: bytes | None
    if data_format == "raw":
        data = params.first.encode("latin-1")
    elif data_format == "cstring":
        data = _unescape_cstring(params.first)
        if not data:
            _fail("failed to parse Grip-Keep-Alive cstring format")
    elif data_format == "base64":
        data = _lenient_b64decode(params.first)
        if not data:
            _fail("Grip-Keep-Alive cannot be empty")
    else:
        _fail(f"no such Grip-Keep-Alive format '{decode_utf8_text(data_format)}'")
    draft.keep_alive_data = data
    draft.keep_alive_timeout = timeout
    draft.keep_alive_mode = cast(KeepAliveMode, mode)


def _parse_status(draft: _Draft, headers: Headers) -> None:
    text = _first_text(headers, b"grip-status")
    if not text:
        return
    code_text, _, reason = text.partition(" ")
    code = _parse_int(code_text)
    if code is None or not 0 <= code <= 999:
        _fail("Grip-Status contains invalid status code")
    draft.status = code
    draft.reason = reason.encode("latin-1")


def _parse_links(draft: _Draft, headers: Headers, request_uri: str | None) -> None:
    for params in _param_lists(headers, b"grip-link"):
        if not params.params:
            continue
        first = params.first
        if len(first) <= 2 or first[0] != "<" or first[-1] != ">":
            _fail("failed to parse Grip-Link value")
        url = _link_url(first[1:-1], request_uri)
        if url is None:
            _fail("Grip-Link contains invalid link")
        rel = params.get("rel")
        if rel == "next":
            timeout = DEFAULT_NEXT_LINK_TIMEOUT
            if params.has("timeout"):
                parsed = _parse_int(params.get("timeout"))
                if parsed is None:
                    _fail("failed to parse Grip-Link timeout value")
                if parsed < 0:
                    _fail("Grip-Link timeout has invalid value")
                timeout = parsed
            draft.next_link = Link(url, timeout)
        elif rel == "gone":
            draft.gone_link = Link(url)


def _client_headers(
    headers: Iterable[tuple[bytes, bytes]], expose: frozenset[bytes] | None
) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(b"grip-") or lower in _NOT_FOR_CLIENT:
            continue
        if expose is not None and lower not in expose:
            continue
        out.append((name, value))
    return out


def _parse_headers(draft: _Draft, headers: Headers, request_uri: str | None) -> None:
    hold_text = _first_text(headers, b"grip-hold")
    if hold_text is not None:
        if hold_text not in get_args(HoldMode):
            _fail("Grip-Hold must be set to either 'response' or 'stream'")
        draft.hold = cast(HoldMode, hold_text)

    for params in _param_lists(headers, b"grip-channel"):
        if params.first == "":
            continue  # `a,,b`: an empty element names no channel.
        filters = [decode_utf8_text(f) for f in params.get_all("filter") if f is not None]
        prev_id = params.get("prev-id")
        draft.channels.append(
            _channel(
                decode_utf8_text(params.first),
                None if prev_id is None else decode_utf8_text(prev_id),
                filters,
            )
        )

    timeout_text = _first_text(headers, b"grip-timeout")
    if timeout_text is not None:
        timeout = _parse_int(timeout_text)
        if timeout is None:
            _fail("failed to parse Grip-Timeout")
        if timeout < 0:
            _fail("Grip-Timeout has invalid value")
        draft.timeout = timeout

    expose_names = [
        name.encode("latin-1").lower()
        for name in get_split_header_values(headers, b"grip-expose-headers")
    ]
    expose = frozenset(expose_names) if expose_names else None

    _parse_keep_alive(draft, headers)

    for element in get_split_header_values(headers, b"grip-set-meta"):
        try:
            meta_params = parse_params(element)
        except RemoteProtocolError:
            continue  # Unparsable elements are skipped, as in Pushpin.
        if not meta_params:
            _fail("Grip-Set-Meta cannot be empty")
        key, value = meta_params[0]
        draft.meta[decode_utf8_text(key)] = decode_utf8_text(value or "")

    _parse_status(draft, headers)
    _parse_links(draft, headers, request_uri)
    draft.headers = _client_headers(headers, expose)


# -- application/grip-instruct ------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _json_str(obj: dict[str, object], key: str, parent: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        _fail(f"{parent} contains '{key}' with wrong type")
    return _scrub(value)


def _json_int(
    obj: dict[str, object], key: str, parent: str, maximum: int = _INT32_MAX
) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int:
        _fail(f"{parent} contains '{key}' with wrong type")
    if not 0 <= value <= maximum:
        _fail(f"{parent} contains '{key}' with invalid value")
    return value


def _json_object(obj: dict[str, object], key: str, parent: str) -> dict[str, object] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        _fail(f"{parent} contains '{key}' with wrong type")
    return value


def _json_channel(value: object) -> Channel:
    if not isinstance(value, dict):
        _fail("channel is not an object")
    if "name" not in value:
        _fail("channel does not contain 'name'")
    name = value["name"]
    if not isinstance(name, str):
        _fail("channel contains 'name' with wrong type")
    if name == "":
        _fail("channel contains 'name' with invalid value")
    prev_id = _json_str(value, "prev-id", "channel")
    filters = value.get("filters")
    if filters is None:
        filters = []
    if not isinstance(filters, list):
        _fail("channel contains 'filters' with wrong type")
    if not all(isinstance(f, str) for f in filters):
        _fail("filters contains value with wrong type")
    return _channel(_scrub(name), prev_id, [_scrub(f) for f in filters])


def _json_hold(draft: _Draft, hold: dict[str, object]) -> None:
    mode = _json_str(hold, "mode", "hold")
    if mode is None:
        draft.hold = "response"
    elif mode in get_args(HoldMode):
        draft.hold = cast(HoldMode, mode)
    else:
        _fail("hold 'mode' must be set to either 'response' or 'stream'")

    if "channels" not in hold:
        _fail("hold does not contain 'channels'")
    channels = hold["channels"]
    if not isinstance(channels, list):
        _fail("hold contains 'channels' with wrong type")
    draft.channels.extend(_json_channel(c) for c in channels)

    timeout = _json_int(hold, "timeout", "hold")
    if timeout is not None:
        draft.timeout = timeout

    keep_alive = _json_object(hold, "keep-alive", "hold")
    if keep_alive is not None:
        # As in Pushpin, `content-bin` wins and `content` is then not even looked at.
        content_bin = _json_str(keep_alive, "content-bin", "keep-alive")
        if content_bin is not None:
            draft.keep_alive_data = _lenient_b64decode(content_bin)
        else:
            content = _json_str(keep_alive, "content", "keep-alive")
            if content is not None:
                draft.keep_alive_data = content.encode("utf-8")
        ka_timeout = _json_int(keep_alive, "timeout", "keep-alive")
        draft.keep_alive_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT if ka_timeout is None else ka_timeout

    meta = _json_object(hold, "meta", "hold")
    if meta is not None:
        for key, value in meta.items():
            if not isinstance(value, str):
                _fail(f"'meta' contains '{_scrub(key)}' with wrong type")
            draft.meta[_scrub(key)] = _scrub(value)


def _json_header(name: str, value: str) -> tuple[bytes, bytes]:
    name_bytes = _scrub(name).encode("utf-8")
    value_bytes = _scrub(value).encode("utf-8").strip(WHITESPACE.encode("ascii"))
    if not _HEADER_NAME.fullmatch(name_bytes):
        _fail(f"headers contains invalid header name '{_scrub(name)}'")
    if not _HEADER_VALUE.fullmatch(value_bytes):
        _fail(f"headers contains '{_scrub(name)}' with invalid value")
    return name_bytes, value_bytes


def _json_headers(value: object) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if isinstance(value, list):
        for pair in value:
            if not isinstance(pair, list):
                _fail("headers contains element with wrong type")
            if len(pair) != 2:
                _fail("headers contains list with wrong number of elements")
            name, header_value = pair
            if not isinstance(name, str):
                _fail("header contains name element with wrong type")
            if not isinstance(header_value, str):
                _fail("header contains value element with wrong type")
            out.append(_json_header(name, header_value))
    elif isinstance(value, dict):
        for name, header_value in value.items():
            if not isinstance(header_value, str):
                _fail(f"headers contains '{_scrub(name)}' with wrong type")
            out.append(_json_header(name, header_value))
    else:
        _fail("response contains 'headers' with wrong type")
    return _client_headers(out, None)


def _json_response(draft: _Draft, response: dict[str, object]) -> None:
    code = _json_int(response, "code", "response", maximum=999)
    if code is not None:
        draft.status = code
        draft.reason = b""  # A code given in JSON clears the origin's reason.
    reason = _json_str(response, "reason", "response")
    if reason:
        reason_bytes = reason.encode("utf-8")
        if not _REASON.fullmatch(reason_bytes):
            _fail("response contains 'reason' with invalid value")
        draft.reason = reason_bytes
    if response.get("headers") is not None:
        draft.headers = _json_headers(response["headers"])
    body_bin = _json_str(response, "body-bin", "response")  # wins over `body`, as in Pushpin
    if body_bin is not None:
        draft.body = _lenient_b64decode(body_bin)
    else:
        body = _json_str(response, "body", "response")
        if body is not None:
            draft.body = body.encode("utf-8")


def _parse_json(draft: _Draft, status: int, body: bytes) -> None:
    if status != 200:  # the origin's own status, before any Grip-Status
        _fail("response code for application/grip-instruct content must be 200")
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, UnicodeDecodeError and over-long integers.
        _fail("failed to parse application/grip-instruct content as JSON")
    if not isinstance(document, dict):
        _fail("instruct must be an object")

    hold = _json_object(document, "hold", "instruct")
    if hold is not None:
        _json_hold(draft, hold)

    draft.headers = []
    draft.body = b""
    response = _json_object(document, "response", "instruct")
    if response is not None:
        _json_response(draft, response)


def parse_instruct(
    status: int,
    reason: bytes,
    headers: Headers,
    body: bytes,
    *,
    request_uri: str | None = None,
    max_body: int = MAX_INSTRUCT_BODY,
) -> Instruct:
    """Parse an origin's GRIP response into an `Instruct` (see the module docstring for rules).

    `status`, `reason`, `headers` and `body` are the origin response as received (h11-style
    headers); `request_uri` is the URI relative `Grip-Link`s are resolved against. Raises
    `InstructError` (status hint 502) with Pushpin's message for any invalid instruction, and
    `GRIP instruct response too large` when `body` exceeds `instruct_body_limit(headers)`.
    Call it only for responses `is_grip_response` accepts; otherwise it simply returns an
    instruct without a hold. Arguments of the wrong type, or a `request_uri` that is not a URI,
    raise `LocalProtocolError`.
    """
    _require(type(status) is int and 0 <= status <= 999, "status must be an int 0-999")
    _require(isinstance(reason, bytes) and isinstance(body, bytes), "reason and body are bytes")
    # Checked first, as Pushpin's proxy does before the instruct is parsed at all.
    if len(body) > max_body and instruct_body_limit(headers, max_body=max_body) is not None:
        _fail("GRIP instruct response too large")
    draft = _Draft(status=status, reason=reason, headers=[], body=body)
    _parse_headers(draft, headers, request_uri)
    if _is_instruct_content(headers):
        _parse_json(draft, status, body)

    keep_alive = None
    if draft.keep_alive_timeout is not None and draft.keep_alive_data:
        keep_alive = KeepAlive(
            draft.keep_alive_data,
            max(draft.keep_alive_timeout, MIN_KEEP_ALIVE_TIMEOUT),
            draft.keep_alive_mode or "interval",
        )
    return Instruct(
        hold=draft.hold,
        channels=tuple(draft.channels),
        timeout=max(DEFAULT_TIMEOUT if draft.timeout is None else draft.timeout, MIN_TIMEOUT),
        keep_alive=keep_alive,
        meta=draft.meta,
        next_link=draft.next_link,
        gone_link=draft.gone_link,
        status=draft.status,
        reason=draft.reason or reason_phrase(draft.status),
        headers=tuple(draft.headers),
        body=draft.body,
    )
