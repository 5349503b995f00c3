"""Hypothesis strategies for GRIP artefacts, valid and (separately) deliberately invalid.

Strategy: every *valid* strategy draws the value first (a `Channel`, an `Item`, a list of
WebSocket events...) and then encodes it the way the protocol allows, so each example carries its
own expected meaning. Encoding goes through gripcore's own encoders where one exists
(`format_param_list`, `item_to_json`, `encode_event`, `encode_control_message`, `mint_sig`); the
rest (keep-alive `cstring`, the JSON instruct body, non-canonical WebSocket-over-HTTP framings)
is written here from the behaviour spec. A user testing their own GRIP server, origin or library
feeds the encoded form to their code and compares with the expected value.

Every *invalid* strategy yields `Invalid(value, error, message)`: an input, the gripcore error
class it must raise and a substring of the message (Pushpin's wording where it has one). Each is
built from a table of templates with drawn variable parts, and every template is checked against
the core in gripcore's own tests. `gripcore.testing.properties.assert_rejects` runs one.

Which parser each strategy targets (what "accepts" means):

* `instructs`, `invalid_instructs`: `parse_instruct(status, reason, headers, body)`;
* `grip_channel_headers`, `grip_keep_alive_headers`: a `Grip-Channel` / `Grip-Keep-Alive` header of
  an otherwise empty GRIP response (see `instructs` for whole responses);
* `items`, `item_objects`, `publish_bodies`, `invalid_publish_bodies`: `parse_item` /
  `parse_publish_body` (contents stay far below the default 32,767-byte limit);
* `websocket_events`, `websocket_event_streams`, `invalid_websocket_event_streams`:
  `decode_events` / `WebSocketEventsDecoder`;
* `control_messages`, `invalid_control_messages`: `parse_control_message` (what follows `c:`);
* `grip_sigs`, `invalid_grip_sigs`: `validate_sig(token, key, now=now, iss=iss)`.

Sizes are kept small (a few elements, tens of bytes) so that a hundred examples run in well
under a second; the large-input properties belong to each parser's own tests.

This module needs hypothesis (`pip install gripcore[test]`); `import gripcore` does not.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import strategies as st

from .._errors import (
    ContentTooLargeError,
    ControlMessageError,
    InstructError,
    LocalProtocolError,
    ProtocolError,
    PublishError,
    SigError,
    WebSocketEventsError,
)
from .._headers import encode_utf8_text, format_param_list
from .._instruct import (
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_TIMEOUT,
    MAX_FILTERS,
    MIN_KEEP_ALIVE_TIMEOUT,
    MIN_TIMEOUT,
    Channel,
    HoldMode,
    Instruct,
    KeepAlive,
    KeepAliveMode,
)
from .._items import (
    ACTIONS,
    DEFAULT_MAX_CONTENT_SIZE,
    Action,
    HttpResponseFormat,
    HttpStreamFormat,
    Item,
    WsMessageFormat,
    encode_publish_body,
    item_to_json,
)
from .._sig import SigningKey, mint_sig
from .._wscontrol import (
    KEEP_ALIVE_MODES,
    MAX_TIMEOUT,
    MESSAGE_TYPES,
    ControlMessage,
    Detach,
    FlushDelayed,
    SendDelayed,
    Session,
    SetMeta,
    Subscribe,
    Unsubscribe,
    encode_control_message,
)
from .._wscontrol import KeepAlive as WsKeepAlive
from .._wsevents import (
    Binary,
    Close,
    Disconnect,
    Open,
    Ping,
    Pong,
    Text,
    WebSocketEvent,
    encode_event,
    encode_events,
)

__all__ = [
    "ExpectedInstruct",
    "InstructCase",
    "Invalid",
    "OriginResponse",
    "SigToken",
    "channels",
    "control_messages",
    "grip_channel_headers",
    "grip_keep_alive_headers",
    "grip_sigs",
    "instructs",
    "invalid_control_messages",
    "invalid_grip_sigs",
    "invalid_instructs",
    "invalid_publish_bodies",
    "invalid_websocket_event_streams",
    "item_objects",
    "items",
    "json_values",
    "publish_bodies",
    "split_points",
    "websocket_event_streams",
    "websocket_events",
]

T = TypeVar("T")

# Small collections keep examples fast and readable; the parsers' own tests cover large inputs.
MAX_LIST = 4
# Short strings: long enough for escapes and multi-byte UTF-8, short enough to read in a report.
MAX_TEXT = 12
# Payload bytes per event or format; far below every size limit of the core.
MAX_PAYLOAD = 64
# A fixed wall-clock `now` (2023-11-14) for Grip-Sig cases: tokens are reproducible, no clock.
SIG_NOW = 1_700_000_000


# --- values ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Invalid(Generic[T]):
    """A deliberately invalid input: `value` must make its parser raise `error` (or a subclass)
    with `message` somewhere in the error text. Raises `LocalProtocolError` when `error` is not a
    `ProtocolError` class or `message` is empty."""

    value: T
    error: type[ProtocolError]
    message: str

    def __post_init__(self) -> None:
        if not (isinstance(self.error, type) and issubclass(self.error, ProtocolError)):
            raise LocalProtocolError("Invalid.error must be a ProtocolError subclass")
        if not isinstance(self.message, str) or not self.message:
            raise LocalProtocolError("Invalid.message must be a non-empty str")


@dataclass(frozen=True, slots=True)
class OriginResponse:
    """An origin's answer as a proxy receives it: the arguments of `parse_instruct`."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class ExpectedInstruct:
    """What a GRIP proxy must make of an `OriginResponse`: the parts of `Instruct` a generated
    response determines. `status` is the status the client is to see."""

    hold: HoldMode | None
    channels: tuple[Channel, ...]
    timeout: int
    keep_alive: KeepAlive | None
    meta: Mapping[str, str]
    status: int

    def mismatches(self, instruct: Instruct) -> list[str]:
        """One line per field where `instruct` differs from this expectation (empty: it matches)."""
        out = []
        for name in ("hold", "channels", "timeout", "keep_alive", "status"):
            expected, actual = getattr(self, name), getattr(instruct, name)
            if expected != actual:
                out.append(f"{name}: expected {expected!r}, got {actual!r}")
        if dict(self.meta) != dict(instruct.meta):
            out.append(f"meta: expected {dict(self.meta)!r}, got {dict(instruct.meta)!r}")
        return out


@dataclass(frozen=True, slots=True)
class InstructCase:
    """A valid GRIP response (`response`) and what it instructs (`expected`); `source` says
    whether the instruct is in headers or an application/grip-instruct JSON body."""

    response: OriginResponse
    expected: ExpectedInstruct
    source: str


@dataclass(frozen=True, slots=True)
class SigToken:
    """A Grip-Sig `token` and how to check it: `validate_sig(token, key, now=now, iss=iss)`.

    `key` is the signing key (an HS256 secret or an EC P-256 private key): what a verifier must be
    configured with. For an invalid token it is the key the verifier has, not the one that signed.
    """

    token: str
    key: SigningKey = field(repr=False)
    now: float
    iss: str


# --- shared pieces -----------------------------------------------------------------------------

# Any Unicode scalar value: lone surrogates cannot be encoded as UTF-8.
_ANY_CHAR = st.characters(exclude_categories=["Cs"])
# Characters that survive a header unchanged once UTF-8 encoded: no controls, no delimiters of
# parameter lists, no spaces (which a parser would trim at the ends).
_NAME_CHAR = st.characters(exclude_categories=["Cs", "Cc", "Zs"], exclude_characters=',;"')
# Characters for quoted parameter values: anything visible, inner spaces included.
_VALUE_CHAR = st.characters(exclude_categories=["Cs", "Cc"])
_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
# Bytes a keep-alive's raw data may hold: visible ASCII and the latin-1 upper half, except the
# delimiters `"`, `,` and `;` and the backslash of cstring escapes.
_RAW_BYTES = bytes(sorted(set(range(0x21, 0x7F)) - set(b'",;\\') | set(range(0xA0, 0x100))))
_FILTER_NAMES = ("skip-self", "skip-users", "require-sub", "build-id", "var-subst")


def _text(
    min_size: int = 0, alphabet: st.SearchStrategy[str] = _ANY_CHAR
) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=min_size, max_size=MAX_TEXT)


_tokens = st.text(_TOKEN_ALPHABET, min_size=1, max_size=MAX_TEXT)
_payloads = st.binary(max_size=MAX_PAYLOAD)
_utf8_payloads = _text().map(lambda s: s.encode("utf-8"))


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Arbitrary JSON documents (None, bools, ints, finite floats, text, lists, objects): the
    shapes a fuzz property feeds to a JSON-reading parser."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | _text()
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=MAX_LIST) | st.dictionaries(_text(), inner, max_size=MAX_LIST)
        ),
        max_leaves=max_leaves,
    )


def split_points(size: int) -> st.SearchStrategy[list[int]]:
    """Sorted, distinct offsets in 1..size-1 at which to cut `size` bytes into chunks (for
    `properties.assert_split_invariant`)."""
    if size < 2:
        return st.just([])
    return st.lists(st.integers(1, size - 1), unique=True, max_size=16).map(sorted)


def _header(name: str, value: str) -> tuple[bytes, bytes]:
    return name.encode("ascii"), value.encode("latin-1")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- channels and keep-alives ------------------------------------------------------------------


@st.composite
def channels(draw: st.DrawFn) -> Channel:
    """A `Channel` that a `Grip-Channel` header and a JSON instruct can both carry: a name, an
    optional `prev_id` and up to `MAX_FILTERS` filter names (known ones and arbitrary text)."""
    name = draw(_text(1, _NAME_CHAR))
    prev_id = draw(st.none() | _text(1, _VALUE_CHAR))
    filters = draw(
        st.lists(st.sampled_from(_FILTER_NAMES) | _text(1, _VALUE_CHAR), max_size=MAX_FILTERS)
    )
    return Channel(name, prev_id, tuple(filters))


def format_grip_channel(channel: Channel) -> str:
    """One `Grip-Channel` element for `channel` (header text: latin-1 holding UTF-8)."""
    params: list[tuple[str, str | None]] = []
    if channel.prev_id is not None:
        params.append(("prev-id", encode_utf8_text(channel.prev_id)))
    params.extend(("filter", encode_utf8_text(f)) for f in channel.filters)
    return format_param_list(encode_utf8_text(channel.name), params)


@st.composite
def grip_channel_headers(
    draw: st.DrawFn,
) -> tuple[tuple[tuple[bytes, bytes], ...], tuple[Channel, ...]]:
    """`Grip-Channel` headers and the channels they name, in order: elements are spread over one
    or more header lines, comma-joined, with prev-id and filter parameters."""
    drawn = tuple(draw(st.lists(channels(), min_size=1, max_size=MAX_LIST)))
    elements = [format_grip_channel(c) for c in drawn]
    cuts = draw(split_points(len(elements)))
    headers = []
    for start, end in zip([0, *cuts], [*cuts, len(elements)], strict=True):
        separator = draw(st.sampled_from([",", ", ", " ,  "]))
        headers.append(_header("Grip-Channel", separator.join(elements[start:end])))
    return tuple(headers), drawn


# Bytes biased towards those cstring must escape (backslash, CR, LF, delimiters, non-ASCII).
_escapable_bytes = st.lists(
    st.sampled_from(b'\\\r\n\x00;",A~\xff') | st.integers(0, 255), min_size=1, max_size=MAX_TEXT
).map(bytes)


def _cstring(data: bytes, upper: bool) -> str:
    r"""Pushpin's cstring escaping: `\\`, `\r`, `\n`, `\xHH`; visible bytes as themselves."""
    out = []
    for byte in data:
        if byte == 0x5C:
            out.append("\\\\")
        elif byte == 0x0D:
            out.append("\\r")
        elif byte == 0x0A:
            out.append("\\n")
        elif byte in _RAW_BYTES and byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02X}" if upper else f"\\x{byte:02x}")
    return "".join(out)


@st.composite
def grip_keep_alive_headers(draw: st.DrawFn) -> tuple[tuple[bytes, bytes], KeepAlive]:
    """A `Grip-Keep-Alive` header and the `KeepAlive` it means, with data in the `raw`, `cstring`
    or `base64` format, an optional `timeout` (0 is raised to the 1 s minimum) and `mode`."""
    data_format = draw(st.sampled_from(["raw", "cstring", "base64"]))
    params: list[tuple[str, str | None]] = []
    if data_format == "raw":
        data = draw(st.lists(st.sampled_from(_RAW_BYTES), min_size=1, max_size=MAX_TEXT))
        raw = bytes(data)
        first = raw.decode("latin-1")
        if draw(st.booleans()):
            params.append(("format", "raw"))
    elif data_format == "cstring":
        raw = draw(_escapable_bytes)
        first = _cstring(raw, draw(st.booleans()))
        params.append(("format", "cstring"))
    else:
        raw = draw(st.binary(min_size=1, max_size=MAX_TEXT))
        first = base64.b64encode(raw).decode("ascii")
        params.append(("format", "base64"))
    timeout = draw(st.none() | st.integers(0, 10**6))
    if timeout is not None:
        params.append(("timeout", str(timeout)))
    mode: KeepAliveMode | None = draw(st.sampled_from([None, "idle", "interval"]))
    if mode is not None:
        params.append(("mode", mode))
    params = draw(st.permutations(params))
    expected = KeepAlive(
        raw,
        max(DEFAULT_KEEP_ALIVE_TIMEOUT if timeout is None else timeout, MIN_KEEP_ALIVE_TIMEOUT),
        mode or "idle",
    )
    return _header("Grip-Keep-Alive", format_param_list(first, params)), expected


# --- instructs ---------------------------------------------------------------------------------


def _interleave(
    draw: st.DrawFn, headers: Sequence[tuple[bytes, bytes]], ordered: Sequence[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """`headers` with `ordered` inserted at drawn places, keeping the order of `ordered` (the
    order of `Grip-Channel` lines is the order of the channels)."""
    out = list(headers)
    at = 0
    for header in ordered:
        at = draw(st.integers(at, len(out)))
        out.insert(at, header)
        at += 1
    return out


@st.composite
def _header_instructs(draw: st.DrawFn) -> InstructCase:
    headers: list[tuple[bytes, bytes]] = [(b"Content-Type", b"text/plain")]
    hold: HoldMode | None = draw(st.sampled_from([None, "response", "stream"]))
    if hold is not None:
        headers.append(_header("Grip-Hold", hold))
    channel_headers, drawn = draw(st.none() | grip_channel_headers()) or ((), ())
    timeout = draw(st.none() | st.integers(0, 10**6))
    if timeout is not None:
        headers.append(
            _header("Grip-Timeout", draw(st.sampled_from(["{}", " {} ", "+{}"])).format(timeout))
        )
    keep_alive = None
    if draw(st.booleans()):
        keep_alive_header, keep_alive = draw(grip_keep_alive_headers())
        headers.append(keep_alive_header)
    meta = draw(st.dictionaries(_tokens, _text(0, _VALUE_CHAR), max_size=MAX_LIST))
    if meta:
        elements = [f"{key}={_quoted(encode_utf8_text(value))}" for key, value in meta.items()]
        headers.append(_header("Grip-Set-Meta", ", ".join(elements)))
    status = 200
    if draw(st.booleans()):
        status = draw(st.integers(200, 599))
        headers.append(_header("Grip-Status", f"{status} {draw(st.sampled_from(['', 'Custom']))}"))
    headers = _interleave(draw, draw(st.permutations(headers)), channel_headers)
    body = draw(_utf8_payloads)
    expected = ExpectedInstruct(
        hold=hold,
        channels=drawn,
        timeout=max(DEFAULT_TIMEOUT if timeout is None else timeout, MIN_TIMEOUT),
        keep_alive=keep_alive,
        meta=MappingProxyType(meta),
        status=status,
    )
    return InstructCase(OriginResponse(200, b"OK", tuple(headers), body), expected, "headers")


def _json_channel(channel: Channel) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": channel.name}
    if channel.prev_id is not None:
        obj["prev-id"] = channel.prev_id
    if channel.filters:
        obj["filters"] = list(channel.filters)
    return obj


@st.composite
def _json_instructs(draw: st.DrawFn) -> InstructCase:
    document: dict[str, Any] = {}
    hold: HoldMode | None = None
    drawn: tuple[Channel, ...] = ()
    timeout = DEFAULT_TIMEOUT
    keep_alive = None
    meta: dict[str, str] = {}
    if draw(st.booleans()):
        mode: HoldMode | None = draw(st.sampled_from([None, "response", "stream"]))
        hold = mode or "response"
        drawn = tuple(draw(st.lists(channels(), max_size=MAX_LIST)))
        hold_obj: dict[str, Any] = {"channels": [_json_channel(c) for c in drawn]}
        if mode is not None:
            hold_obj["mode"] = mode
        if draw(st.booleans()):
            hold_obj["timeout"] = draw(st.integers(0, 10**6))
            timeout = max(hold_obj["timeout"], MIN_TIMEOUT)
        if draw(st.booleans()):
            data = draw(_payloads)
            ka_obj: dict[str, Any] = {}
            if draw(st.booleans()):
                ka_obj["content-bin"] = base64.b64encode(data).decode("ascii")
            else:
                data = draw(_utf8_payloads)
                ka_obj["content"] = data.decode("utf-8")
            ka_timeout = draw(st.none() | st.integers(0, 10**6))
            if ka_timeout is not None:
                ka_obj["timeout"] = ka_timeout
            hold_obj["keep-alive"] = ka_obj
            if data:
                # No Grip-Keep-Alive header gives a mode, so the mode is `interval` (Pushpin).
                keep_alive = KeepAlive(
                    data,
                    max(
                        DEFAULT_KEEP_ALIVE_TIMEOUT if ka_timeout is None else ka_timeout,
                        MIN_KEEP_ALIVE_TIMEOUT,
                    ),
                    "interval",
                )
        meta = draw(st.dictionaries(_text(), _text(), max_size=MAX_LIST))
        if meta:
            hold_obj["meta"] = meta
        document["hold"] = hold_obj
    status = 200
    if draw(st.booleans()):
        response: dict[str, Any] = {"body": draw(_text())}
        if draw(st.booleans()):
            status = draw(st.integers(200, 599))
            response["code"] = status
        document["response"] = response
    body = json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8")
    content_type = draw(
        st.sampled_from(
            [
                b"application/grip-instruct",
                b"Application/Grip-Instruct",
                b"application/grip-instruct; charset=utf-8",
            ]
        )
    )
    expected = ExpectedInstruct(hold, drawn, timeout, keep_alive, MappingProxyType(meta), status)
    response_in = OriginResponse(200, b"OK", ((b"Content-Type", content_type),), body)
    return InstructCase(response_in, expected, "json")


def instructs() -> st.SearchStrategy[InstructCase]:
    """Valid GRIP origin responses and what they instruct: hold mode, channels (prev-id,
    filters), timeout, keep-alive, meta and client status, given either as headers (`Grip-Hold`,
    `Grip-Channel`, `Grip-Timeout`, `Grip-Keep-Alive`, `Grip-Set-Meta`, `Grip-Status`) in any
    order, or as an `application/grip-instruct` JSON body."""
    return st.one_of(_header_instructs(), _json_instructs())


def _instruct_json(document: object, status: int = 200) -> OriginResponse:
    body = json.dumps(document).encode("utf-8")
    return OriginResponse(status, b"OK", ((b"Content-Type", b"application/grip-instruct"),), body)


def _grip_header(name: str, value: str) -> OriginResponse:
    return OriginResponse(200, b"OK", (_header(name, value),), b"")


_GRIP_HOLD_ERROR = "Grip-Hold must be set to either 'response' or 'stream'"


@st.composite
def invalid_instructs(draw: st.DrawFn) -> Invalid[OriginResponse]:
    """A GRIP response `parse_instruct` must reject with `InstructError` and Pushpin's message:
    a bad `Grip-Hold`, too many filters, unparsable or negative timeouts, a bad keep-alive mode,
    format or cstring, a bad `Grip-Status` or `Grip-Link`, or a broken JSON instruct."""
    word = draw(_tokens)
    number = draw(st.integers(1, 10**6))
    kind = draw(st.integers(0, 14))
    if kind == 0:
        value = word if word not in ("response", "stream") else word + "x"
        return Invalid(_grip_header("Grip-Hold", value), InstructError, _GRIP_HOLD_ERROR)
    if kind == 1:
        filters = "".join(f"; filter=f{i}" for i in range(MAX_FILTERS + 1 + number % 3))
        case = _grip_header("Grip-Channel", word + filters)
        return Invalid(case, InstructError, f"too many filters for channel '{word}'")
    if kind == 2:
        case = _grip_header("Grip-Timeout", f"{number}x{word}")
        return Invalid(case, InstructError, "failed to parse Grip-Timeout")
    if kind == 3:
        case = _grip_header("Grip-Timeout", f"-{number}")
        return Invalid(case, InstructError, "Grip-Timeout has invalid value")
    if kind == 4:
        mode = word if word not in ("idle", "interval") else word + "x"
        case = _grip_header("Grip-Keep-Alive", f"ping; mode={mode}")
        return Invalid(case, InstructError, f"no such Grip-Keep-Alive mode '{mode}'")
    if kind == 5:
        fmt = word if word not in ("raw", "cstring", "base64") else word + "x"
        case = _grip_header("Grip-Keep-Alive", f"ping; format={fmt}")
        return Invalid(case, InstructError, f"no such Grip-Keep-Alive format '{fmt}'")
    if kind == 6:
        case = _grip_header("Grip-Keep-Alive", f"ping; timeout={number}x{word}")
        return Invalid(case, InstructError, "failed to parse Grip-Keep-Alive timeout value")
    if kind == 7:
        bad = draw(st.sampled_from(["\\", "\\x", "\\xZZ", "\\x4"]))
        case = _grip_header("Grip-Keep-Alive", f"{word}{bad}; format=cstring")
        return Invalid(case, InstructError, "failed to parse Grip-Keep-Alive cstring format")
    if kind == 8:
        case = _grip_header("Grip-Status", str(1000 + number))
        return Invalid(case, InstructError, "Grip-Status contains invalid status code")
    if kind == 9:
        case = _grip_header("Grip-Link", f"http://example.com/{word}; rel=next")
        return Invalid(case, InstructError, "failed to parse Grip-Link value")
    if kind == 10:
        document: dict[str, Any] = {"hold": {"channels": [{"name": word}]}}
        return Invalid(
            _instruct_json(document, status=draw(st.integers(201, 599))),
            InstructError,
            "response code for application/grip-instruct content must be 200",
        )
    if kind == 11:
        body = draw(st.sampled_from([b"{", b"[1,", b"nul", b"\xff", b'{"a": NaN}']))
        case = OriginResponse(200, b"OK", ((b"Content-Type", b"application/grip-instruct"),), body)
        return Invalid(case, InstructError, "failed to parse application/grip-instruct content")
    if kind == 12:
        document = {"hold": {"mode": "response"}}
        return Invalid(_instruct_json(document), InstructError, "hold does not contain 'channels'")
    if kind == 13:
        document = {"hold": {"channels": [{"prev-id": word}]}}
        return Invalid(_instruct_json(document), InstructError, "channel does not contain 'name'")
    document = {"hold": {"channels": [], "timeout": word}}
    return Invalid(
        _instruct_json(document), InstructError, "hold contains 'timeout' with wrong type"
    )


# --- publish items -----------------------------------------------------------------------------


_content_filters = st.none() | st.lists(_text(1), max_size=MAX_LIST).map(tuple)
# What HTTP/1.1 carries in a reason phrase or a field value: HTAB, SP, VCHAR and Latin-1
# obs-text (a field value has no surrounding whitespace: HttpResponseFormat strips it).
_FIELD_ALPHABET = st.sampled_from(
    ["\t", *map(chr, range(0x20, 0x7F)), *map(chr, range(0x80, 0x100))]
)
_reasons = st.none() | _text(1, _FIELD_ALPHABET)
_header_values = _text(0, _FIELD_ALPHABET).map(lambda s: s.strip(" \t"))
_patch_ops = st.builds(
    lambda op, path, value: {"op": op, "path": "/" + path, "value": value},
    st.sampled_from(["add", "replace", "test"]),
    _tokens,
    st.none() | st.integers(-(2**31), 2**31) | _text(),
)
# Close codes a server may send (`WsMessageFormat`): the defined ones and the application range.
_WS_CLOSE_CODES = st.sampled_from([1000, 1001, 1002, 1003, *range(1007, 1014)]) | st.integers(
    3000, 4999
)


@st.composite
def _http_response_formats(draw: st.DrawFn, actions: Sequence[Action]) -> HttpResponseFormat:
    action = draw(st.sampled_from(actions))
    if action != "send":
        return HttpResponseFormat(action=action)
    code = draw(st.integers(200, 999))
    no_content = code in (204, 304)  # a final answer that carries no body
    use_patch = not no_content and draw(st.booleans())
    return HttpResponseFormat(
        code=code,
        reason=draw(_reasons),
        headers=tuple(draw(st.lists(st.tuples(_tokens, _header_values), max_size=MAX_LIST))),
        body=None if use_patch else b"" if no_content else draw(_payloads),
        body_patch=tuple(draw(st.lists(_patch_ops, max_size=MAX_LIST))) if use_patch else None,
        content_filters=draw(_content_filters),
    )


@st.composite
def _http_stream_formats(draw: st.DrawFn, actions: Sequence[Action]) -> HttpStreamFormat:
    action = draw(st.sampled_from(actions))
    if action != "send":
        return HttpStreamFormat(action=action)
    return HttpStreamFormat(content=draw(_payloads), content_filters=draw(_content_filters))


@st.composite
def _ws_message_formats(draw: st.DrawFn, actions: Sequence[Action]) -> WsMessageFormat:
    action = draw(st.sampled_from(actions))
    if action == "close":
        code = draw(st.none() | _WS_CLOSE_CODES)
        reason = None
        if code is not None:
            reason = draw(st.none() | _text(1).filter(lambda s: len(s.encode()) <= 123))
        return WsMessageFormat(action="close", code=code, reason=reason)
    if action != "send":
        return WsMessageFormat(action=action)
    message_type = draw(st.sampled_from(MESSAGE_TYPES))
    content = draw(_utf8_payloads if message_type == "text" else _payloads)
    return WsMessageFormat(
        type=message_type, content=content, content_filters=draw(_content_filters)
    )


@st.composite
def items(draw: st.DrawFn, *, actions: Sequence[Action] = ACTIONS) -> Item:
    """A valid publish `Item`: any channel, optional id/prev-id/meta/no-seq/size, and one to three
    formats (`http-response`, `http-stream`, `ws-message`), each with any of the four actions and
    every field its action uses (body or body-patch, headers, filters, message types, close).
    `actions` limits the actions drawn (Pushpin before 1.37 has no `refresh`, for example)."""
    formats = draw(
        st.lists(st.sampled_from(["http-response", "http-stream", "ws-message"]), min_size=1,
                 max_size=3, unique=True)
    )  # fmt: skip
    return Item(
        channel=draw(_text(1)),
        id=draw(st.none() | _text(1)),
        prev_id=draw(st.none() | _text(1)),
        meta=draw(st.dictionaries(_text(), _text(), max_size=MAX_LIST)),
        no_seq=draw(st.booleans()),
        size=draw(st.none() | st.integers(0, 10**9)),
        http_response=draw(_http_response_formats(actions)) if "http-response" in formats else None,
        http_stream=draw(_http_stream_formats(actions)) if "http-stream" in formats else None,
        ws_message=draw(_ws_message_formats(actions)) if "ws-message" in formats else None,
    )


@st.composite
def item_objects(
    draw: st.DrawFn, *, actions: Sequence[Action] = ACTIONS, nulls: bool = True
) -> tuple[dict[str, Any], Item]:
    """A JSON item object and the `Item` it parses to, in either shape: formats nested under
    `formats`, or (legacy) at item level. With `nulls`, null-valued optional members are
    sprinkled in (gripcore reads null as absent; Pushpin 1.36 rejects a null `prev-id`)."""
    item = draw(items(actions=actions))
    obj = item_to_json(item)
    if draw(st.booleans()):
        obj.update(obj.pop("formats"))
    if nulls:
        for key in draw(st.lists(st.sampled_from(["id", "prev-id", "meta", "size"]), unique=True)):
            obj.setdefault(key, None)
    return obj, item


@st.composite
def publish_bodies(
    draw: st.DrawFn, *, actions: Sequence[Action] = ACTIONS, nulls: bool = True
) -> tuple[bytes, list[Item]]:
    """A `POST /publish` body (`{"items": [...]}`) and the items it carries, in order (see
    `items` for `actions`, `item_objects` for `nulls`)."""
    objects = item_objects(actions=actions, nulls=nulls)
    pairs = draw(st.lists(objects, min_size=1, max_size=MAX_LIST))
    if draw(st.booleans()):
        body = encode_publish_body(item for _, item in pairs)
    else:
        body = json.dumps({"items": [obj for obj, _ in pairs]}).encode("utf-8")
    return body, [item for _, item in pairs]


def _publish(obj: dict[str, Any]) -> bytes:
    return json.dumps({"items": [obj]}).encode("utf-8")


@st.composite
def invalid_publish_bodies(draw: st.DrawFn) -> Invalid[bytes]:
    """A publish body `parse_publish_body` must reject (whole batch) with `PublishError` or
    `ContentTooLargeError` and Pushpin's message (`Invalid format: item 0: ...`)."""
    channel = draw(_tokens)
    kind = draw(st.integers(0, 9))
    if kind == 0:
        body = draw(st.sampled_from([b"", b"{", b"\xff", b'{"items": NaN}', b"[1,"]))
        return Invalid(body, PublishError, "Body is not valid JSON.")
    if kind == 1:
        return Invalid(b'{"item": []}', PublishError, "object does not contain 'items'")
    if kind == 2:
        body = _publish({"formats": {"http-stream": {"content": channel}}})
        return Invalid(body, PublishError, "item 0: publish item object does not contain 'channel'")
    if kind == 3:
        return Invalid(_publish({"channel": channel}), PublishError, "no formats specified")
    if kind == 4:
        action = channel if channel not in ACTIONS else channel + "x"
        body = _publish({"channel": channel, "http-stream": {"action": action}})
        return Invalid(body, PublishError, "'http-stream' contains 'action' with unknown value")
    if kind == 5:
        code = draw(st.integers(1000, 10**6) | st.integers(-(10**6), 99))
        body = _publish({"channel": channel, "http-response": {"code": code, "body": ""}})
        return Invalid(body, PublishError, "'http-response' contains 'code' with invalid value")
    if kind == 6:
        body = _publish({"channel": channel, "ws-message": {"content-bin": "!" + channel}})
        return Invalid(
            body, PublishError, "'ws-message' contains 'content-bin' with invalid base64"
        )
    if kind == 7:
        code = draw(st.sampled_from([0, 999, 1004, 1005, 1006, 1015, 2000, 5000]))
        body = _publish({"channel": channel, "ws-message": {"action": "close", "code": code}})
        return Invalid(body, PublishError, "'ws-message' contains 'code' with invalid value")
    if kind == 8:
        content = "p" * draw(st.integers(126, 200))
        body = _publish({"channel": channel, "ws-message": {"type": "ping", "content": content}})
        return Invalid(body, PublishError, "over the 125 bytes a control frame can carry")
    size = DEFAULT_MAX_CONTENT_SIZE + draw(st.integers(1, 100))
    body = _publish({"channel": channel, "http-stream": {"content": "x" * size}})
    return Invalid(body, ContentTooLargeError, f"of {size} bytes, over the limit of")


# --- WebSocket-over-HTTP and control messages --------------------------------------------------


def websocket_events() -> st.SearchStrategy[WebSocketEvent]:
    """Any WebSocket-over-HTTP event: OPEN, TEXT (UTF-8), BINARY, PING, PONG, CLOSE (with or
    without a code and reason) and DISCONNECT."""
    closes = st.just(Close()) | st.builds(Close, st.integers(0, 0xFFFF), _text())
    return st.one_of(
        st.just(Open()),
        st.builds(Text, _utf8_payloads),
        st.builds(Binary, _payloads),
        st.builds(Ping, _payloads),
        st.builds(Pong, _payloads),
        closes,
        st.just(Disconnect()),
    )


def control_messages() -> st.SearchStrategy[ControlMessage]:
    """Any GRIP WebSocket control message value (`subscribe`, `unsubscribe`, `detach`, `session`,
    `set-meta`, `keep-alive`, `send-delayed`, `flush-delayed`) with every field varied."""
    message_types = st.sampled_from(MESSAGE_TYPES)
    timeouts = st.integers(1, 120) | st.just(MAX_TIMEOUT)
    return st.one_of(
        st.builds(Subscribe, _text(1), st.lists(_text(), max_size=MAX_FILTERS).map(tuple)),
        st.builds(Unsubscribe, _text(1)),
        st.just(Detach()),
        st.builds(Session, st.none() | _text()),
        st.builds(SetMeta, _text(1), st.none() | _text()),
        st.builds(
            WsKeepAlive,
            st.none() | _payloads,
            message_types,
            timeouts,
            st.sampled_from(KEEP_ALIVE_MODES),
        ),
        st.builds(SendDelayed, _payloads, message_types, timeouts),
        st.just(FlushDelayed()),
    )


def _event_parts(event: WebSocketEvent) -> tuple[bytes, bytes | None]:
    """The event type and content `encode_event` writes, recovered from its output."""
    encoded = encode_event(event)
    line, _, rest = encoded.partition(b"\r\n")
    event_type, space, _ = line.partition(b" ")
    return event_type, (rest[:-2] if space else None)


def _frame(event_type: bytes, content: bytes | None, style: str) -> bytes:
    if content is None and style != "empty-content":
        return event_type + b"\r\n"
    content = content or b""
    if style == "upper-hex":
        return b"%b %X\r\n%b\r\n" % (event_type, len(content), content)
    if style == "padded-hex":
        return b"%b %08x\r\n%b\r\n" % (event_type, len(content), content)
    return b"%b %x\r\n%b\r\n" % (event_type, len(content), content)


# Event types a decoder must skip (content still consumed), as Pushpin does.
_UNKNOWN_EVENTS = (b"X-UNKNOWN\r\n", b"FUTURE 3\r\nabc\r\n", b"NOTE 0\r\n\r\n")


@st.composite
def websocket_event_streams(
    draw: st.DrawFn, *, canonical: bool = False
) -> tuple[bytes, list[WebSocketEvent]]:
    """An `application/websocket-events` body and the events it decodes to, in order.

    TEXT events often carry GRIP traffic: `c:` control messages and `m:`-prefixed messages.
    Unless `canonical`, events are also framed the other ways a decoder must accept: upper-case
    or zero-padded hex lengths, `TYPE 0\\r\\n\\r\\n` for an event without content, and event
    types it does not know (skipped). With `canonical` the body is exactly `encode_events`.
    """
    grip_text = st.one_of(
        control_messages().map(lambda m: Text(encode_control_message(m))),
        _utf8_payloads.map(lambda p: Text(b"m:" + p)),
    )
    events = draw(st.lists(websocket_events() | grip_text, max_size=MAX_LIST * 2))
    chunks = []
    for event in events:
        if not canonical and draw(st.integers(0, 5)) == 0:
            chunks.append(draw(st.sampled_from(_UNKNOWN_EVENTS)))
        event_type, content = _event_parts(event)
        styles = ["canonical"]
        if not canonical:
            styles += ["upper-hex", "padded-hex"]
            if content is None:
                styles.append("empty-content")
        chunks.append(_frame(event_type, content, draw(st.sampled_from(styles))))
    return b"".join(chunks), events


@st.composite
def invalid_websocket_event_streams(draw: st.DrawFn) -> Invalid[bytes]:
    """A WebSocket-over-HTTP body `decode_events` must reject with `WebSocketEventsError`: a valid
    prefix of events, then a bad hex length, a missing CRLF, a truncated event, non-UTF-8 TEXT,
    a one-byte CLOSE, an overlong type line or an empty event type."""
    prefix = encode_events(draw(st.lists(websocket_events(), max_size=3)))
    kind = draw(st.integers(0, 6))
    if kind == 0:
        bad = draw(st.sampled_from([b"TEXT zz\r\nab\r\n", b"TEXT -1\r\n\r\n", b"TEXT 1 \r\na\r\n"]))
        return Invalid(prefix + bad, WebSocketEventsError, "invalid content length")
    if kind == 1:
        return Invalid(prefix + b"TEXT 2\r\nabXY", WebSocketEventsError, "missing CRLF after")
    if kind == 2:
        cut = draw(st.sampled_from([b"TEXT 5\r\nab", b"OPEN", b"BINARY 3\r\nabc"]))
        return Invalid(prefix + cut, WebSocketEventsError, "incomplete event at byte")
    if kind == 3:
        bad_utf8 = draw(st.sampled_from([b"\xff", b"\xc3", b"a\xed\xa0\x80"]))
        body = prefix + b"TEXT %x\r\n%b\r\n" % (len(bad_utf8), bad_utf8)
        return Invalid(body, WebSocketEventsError, "invalid TEXT event at byte")
    if kind == 4:
        return Invalid(prefix + b"CLOSE 1\r\n\x03\r\n", WebSocketEventsError, "CLOSE content of 1")
    if kind == 5:
        # 65 bytes without a CRLF could still be a 64-byte line waiting for its "\\r\\n".
        line = b"T" * draw(st.integers(66, 200))
        crlf = draw(st.sampled_from([b"", b"\r\n"]))
        return Invalid(prefix + line + crlf, WebSocketEventsError, "longer than 64 bytes")
    return Invalid(prefix + b"\r\n", WebSocketEventsError, "invalid event type")


@st.composite
def invalid_control_messages(draw: st.DrawFn) -> Invalid[bytes]:
    """A control message payload (what follows `c:`) `parse_control_message` must reject with
    `ControlMessageError`: not UTF-8 JSON, not an object, no or unknown `type`, or a field of the
    wrong type or value."""
    word = draw(_tokens)
    kind = draw(st.integers(0, 7))
    if kind == 0:
        payload = draw(st.sampled_from([b"{", b"\xff", b"NaN", b"", b"{'type': 1}"]))
        return Invalid(payload, ControlMessageError, "control message is not valid")
    if kind == 1:
        payload = json.dumps(draw(st.lists(_tokens) | st.integers() | _text())).encode()
        return Invalid(payload, ControlMessageError, "control message must be a JSON object")
    if kind == 2:
        payload = json.dumps({"channel": word}).encode()
        return Invalid(payload, ControlMessageError, "control message has no 'type'")
    if kind == 3:
        type_ = word if word not in _CONTROL_TYPES else word + "x"
        payload = json.dumps({"type": type_}).encode()
        return Invalid(payload, ControlMessageError, f"unknown control message type {type_!r}")
    if kind == 4:
        payload = json.dumps({"type": "subscribe", "filters": [word]}).encode()
        return Invalid(payload, ControlMessageError, "'subscribe' control message: missing")
    if kind == 5:
        payload = json.dumps({"type": "keep-alive", "content-bin": "!" + word}).encode()
        return Invalid(payload, ControlMessageError, "'content-bin' is not valid base64")
    if kind == 6:
        timeout = draw(st.sampled_from([-1, 1.5, "10", True, MAX_TIMEOUT + 1]))
        text = json.dumps({"type": "send-delayed", "content": word, "timeout": timeout})
        return Invalid(text.encode(), ControlMessageError, "'timeout' must be an integer")
    payload = json.dumps({"type": "subscribe", "channel": word, "filters": word}).encode()
    return Invalid(payload, ControlMessageError, "'filters' must be an array of strings")


_CONTROL_TYPES = frozenset(
    {"subscribe", "unsubscribe", "detach", "session", "set-meta", "keep-alive", "send-delayed",
     "flush-delayed"}
)  # fmt: skip


# --- Grip-Sig ----------------------------------------------------------------------------------

# An HS256 secret of at least 32 bytes, the length RFC 7518 asks for (shorter ones get advice).
_hs256_keys = st.binary(min_size=32, max_size=48).map(lambda s: SigningKey("HS256", s))
# An EC P-256 private key derived from a drawn scalar: deterministic, so hypothesis can replay it.
_es256_keys = st.integers(1, 2**200).map(
    lambda n: SigningKey("ES256", ec.derive_private_key(n, ec.SECP256R1()))
)
_signing_keys = _hs256_keys | _es256_keys
_issuers = st.sampled_from(["pushpin", "fastly:abc123"]) | _tokens


@st.composite
def grip_sigs(draw: st.DrawFn) -> SigToken:
    """A valid Grip-Sig token (HS256 or ES256, claims `iss` and `exp`), checked at a `now` before
    it expires, with the key and issuer it validates against."""
    key = draw(_signing_keys)
    iss = draw(_issuers)
    ttl = draw(st.integers(1, 7200))
    age = draw(st.integers(0, ttl - 1))
    token = mint_sig(key, iss, SIG_NOW - age, ttl=ttl)
    return SigToken(token, key, SIG_NOW, iss)


@st.composite
def invalid_grip_sigs(draw: st.DrawFn) -> Invalid[SigToken]:
    """A Grip-Sig `validate_sig` must reject with `SigError`: expired (including at exactly
    `exp`), signed with another key (same or other algorithm), from another issuer, tampered,
    or not a JWT at all. `SigToken.key` is the key the verifier has."""
    key = draw(_signing_keys)
    iss = draw(_issuers)
    kind = draw(st.integers(0, 4))
    if kind == 0:
        ttl = draw(st.integers(1, 7200))
        token = mint_sig(key, iss, SIG_NOW - ttl - draw(st.integers(0, 10**6)), ttl=ttl)
        return Invalid(SigToken(token, key, SIG_NOW, iss), SigError, "Grip-Sig expired at")
    if kind == 1:
        other = draw(_signing_keys.filter(lambda k: k != key))
        token = mint_sig(other, iss, SIG_NOW)
        message = (
            "signature does not verify"
            if other.alg == key.alg
            else f"Grip-Sig is signed with '{other.alg}' but the key is {key.alg}"
        )
        return Invalid(SigToken(token, key, SIG_NOW, iss), SigError, message)
    if kind == 2:
        token = mint_sig(key, iss + "-other", SIG_NOW)
        return Invalid(SigToken(token, key, SIG_NOW, iss), SigError, "Grip-Sig issuer is")
    if kind == 3:
        header, _, signature = mint_sig(key, iss, SIG_NOW).split(".")
        forged = base64.urlsafe_b64encode(json.dumps({"iss": iss, "exp": 2**40}).encode())
        token = f"{header}.{forged.decode().rstrip('=')}.{signature}"
        return Invalid(SigToken(token, key, SIG_NOW, iss), SigError, "signature does not verify")
    garbage = draw(st.sampled_from(["x", "a.b", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9.e30"]))
    return Invalid(SigToken(garbage, key, SIG_NOW, iss), SigError, "not a valid JWT")
