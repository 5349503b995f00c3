"""GRIP-style header value parsing, shared by every module that reads parameter headers.

Strategy: Pushpin's rules (`src/core/httpheaders.cpp`), reproduced exactly so that origins see the
same behaviour from gripcore as from Pushpin.

* A multi-valued header is split on commas **outside double quotes**
  (`split_header_values`). Inside quotes a backslash escapes the next character. Each element is
  trimmed. A comma ending the value adds no empty element, but an empty element between two
  commas (or before the first) is kept as `""`; an unterminated quote makes the rest of the value
  one element.
* Each element is a parameter list `first; k=v; k="quoted \\"v\\""` (`parse_param_list`). The
  first element is taken verbatim (trimmed, up to the first `;`, quotes not interpreted); each
  parameter is `name`, `name=token` or `name="quoted"`. Text between a closing quote and the next
  `;` is ignored, as Pushpin does. A parameter without `=` has the value `None`; `name=` has `""`.
  `parse_params` parses every element as a parameter (Pushpin's "ParseAllParameters" mode, used by
  `Grip-Set-Meta`). Names are compared case-insensitively (`HeaderValue.get`).
* Headers in the core are `list[tuple[bytes, bytes]]` as h11 gives them. Names are matched
  case-insensitively. Values are turned into text with **latin-1**, which maps each byte to one
  character, so the ASCII delimiters above are found at the same offsets as in the bytes and
  nothing can fail to decode. Values that carry names (channels, ids, meta) are then re-read as
  UTF-8 with `decode_utf8_text`, as Pushpin's `QString::fromUtf8` does (invalid sequences become
  U+FFFD); `encode_utf8_text` is its inverse for encoders.
* "Whitespace" is HTTP/Qt whitespace (space, tab, CR, LF, VT, FF), never Python's wider
  `str.strip()` set (which would eat `\\xa0` and `\\x85`, legitimate latin-1 bytes).

Every function here is linear in the length of its input: scanning jumps between delimiters with
compiled regular expressions and never goes back over text it has passed.

Errors: `parse_param_list` and `parse_params` raise `RemoteProtocolError` for a parameter whose
quoted value is unterminated or ends in a lone backslash (the peer sent an unparsable header); the
caller decides whether to skip the element, as Pushpin does for `Grip-Channel`. The encoder
`format_param_list` raises `LocalProtocolError` for names or values it cannot represent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "WHITESPACE",
    "HeaderValue",
    "Headers",
    "decode_utf8_text",
    "encode_utf8_text",
    "format_param_list",
    "get_header",
    "get_header_values",
    "get_split_header_values",
    "header_text",
    "parse_param_list",
    "parse_params",
    "split_header_values",
]

Headers = Sequence[tuple[bytes, bytes]]
"""Header list as h11 gives it: (name, value) byte pairs, names in any case."""

WHITESPACE = " \t\r\n\v\f"
"""What a header parser trims (Qt's `trimmed()` set); see the module docstring."""

# Outside quotes: the next comma (end of element) or quote (start of a quoted run).
_COMMA_OR_QUOTE = re.compile(r'[,"]')
# Inside quotes: the next closing quote or escaping backslash.
_QUOTE_OR_BACKSLASH = re.compile(r'["\\]')
# Start of a parameter: the next `=` (it has a value) or `;` (it has none).
_EQUALS_OR_SEMICOLON = re.compile(r"[=;]")

# RFC 9110 token characters: what may appear in a parameter name or an unquoted value.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What a quoted-string may hold: HTAB, SP, visible ASCII and obs-text (latin-1 upper half).
_QUOTABLE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# First element of an encoded parameter list: visible latin-1 text without `"`, `,` or `;`,
# inner spaces allowed (the parser trims the ends, so they could not round-trip).
_FIRST_CHAR = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x7e\x80-\xff]"
_FIRST = re.compile(rf"{_FIRST_CHAR}+(?:[ \t]+{_FIRST_CHAR}+)*")


def header_text(value: bytes) -> str:
    """Decode a header value as latin-1 (one character per byte; never fails)."""
    return value.decode("latin-1")


def decode_utf8_text(text: str) -> str:
    """Re-read latin-1 header text as UTF-8; invalid sequences become U+FFFD.

    Input characters above U+00FF (not header text) raise `LocalProtocolError`.
    """
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("header text must only hold characters up to U+00FF") from None
    return raw.decode("utf-8", "replace")


def encode_utf8_text(value: str) -> str:
    """Turn any string into latin-1 header text holding its UTF-8 bytes.

    The inverse of `decode_utf8_text`: `decode_utf8_text(encode_utf8_text(s)) == s`. Lone
    surrogates (not encodable as UTF-8) raise `LocalProtocolError`.
    """
    try:
        return value.encode("utf-8").decode("latin-1")
    except UnicodeEncodeError:
        raise LocalProtocolError("value is not encodable as UTF-8") from None


def _name_bytes(name: bytes | str) -> bytes:
    return (name.encode("latin-1", "replace") if isinstance(name, str) else name).lower()


def get_header_values(headers: Headers, name: bytes | str) -> list[bytes]:
    """Every value of the header called `name` (case-insensitive), in order; never raises."""
    wanted = _name_bytes(name)
    return [value for key, value in headers if key.lower() == wanted]


def get_header(headers: Headers, name: bytes | str) -> bytes | None:
    """The first value of header `name` (case-insensitive), or None if absent; never raises."""
    wanted = _name_bytes(name)
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def get_split_header_values(headers: Headers, name: bytes | str) -> list[str]:
    """All values of header `name` as latin-1 text, each split on commas outside quotes.

    This is Pushpin's `getAll(name, split=true)`; never raises.
    """
    out: list[str] = []
    for value in get_header_values(headers, name):
        out.extend(split_header_values(header_text(value)))
    return out


def split_header_values(value: str) -> list[str]:
    """Split a header value on commas outside double quotes; each element trimmed.

    `"a, b"` gives `["a", "b"]`; `"a,,b"` gives `["a", "", "b"]`; `"a,"` gives `["a"]`; `""` gives
    `[]`. A backslash inside quotes escapes the next character. An unterminated quote makes the
    rest of the value one element (as Pushpin does). Never raises.
    """
    parts: list[str] = []
    size = len(value)
    start = 0
    while start < size:
        pos = start
        end = size
        while True:
            found = _COMMA_OR_QUOTE.search(value, pos)
            if found is None:
                break
            if found.group() == ",":
                end = found.start()
                break
            # A quoted run: find its closing quote, skipping escaped characters.
            pos = found.end()
            closed = False
            while not closed:
                inner = _QUOTE_OR_BACKSLASH.search(value, pos)
                if inner is None or (inner.group() == "\\" and inner.end() >= size):
                    break
                if inner.group() == '"':
                    closed = True
                pos = inner.end() + (inner.group() == "\\")
            if not closed:
                break  # Unterminated: the rest of the value is one element.
        parts.append(value[start:end].strip(WHITESPACE))
        start = end + 1
    return parts


@dataclass(frozen=True, slots=True)
class HeaderValue:
    """One parsed parameter-list element: `first; name=value; ...`.

    `params` keeps every parameter in order (names as written, values `None` when there was no
    `=`), so repeated parameters such as `filter=` survive.
    """

    first: str
    params: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.first, str):
            raise LocalProtocolError("HeaderValue.first must be a str")
        for param in self.params:
            if (
                not isinstance(param, tuple)
                or len(param) != 2
                or not isinstance(param[0], str)
                or not (param[1] is None or isinstance(param[1], str))
            ):
                raise LocalProtocolError("HeaderValue.params must be (str, str | None) pairs")

    def has(self, name: str) -> bool:
        """Whether a parameter called `name` (case-insensitive) is present, with or without value."""
        wanted = name.lower()
        return any(key.lower() == wanted for key, _ in self.params)

    def get(self, name: str) -> str | None:
        """Value of the first parameter called `name` (case-insensitive); None if absent or bare."""
        wanted = name.lower()
        for key, value in self.params:
            if key.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str | None]:
        """Values of every parameter called `name` (case-insensitive), in order."""
        wanted = name.lower()
        return [value for key, value in self.params if key.lower() == wanted]


def _parse_params_from(value: str, start: int) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    size = len(value)
    while start < size:
        found = _EQUALS_OR_SEMICOLON.search(value, start)
        if found is None:
            out.append((value[start:].strip(WHITESPACE), None))
            break
        name = value[start : found.start()].strip(WHITESPACE)
        if found.group() == ";":
            out.append((name, None))
            start = found.end()
            continue
        at = found.end()
        if at < size and value[at] == '"':
            chunks: list[str] = []
            pos = at + 1
            while True:
                inner = _QUOTE_OR_BACKSLASH.search(value, pos)
                if inner is None:
                    raise RemoteProtocolError(f"unterminated quoted value for parameter '{name}'")
                chunks.append(value[pos : inner.start()])
                if inner.group() == '"':
                    pos = inner.end()
                    break
                if inner.end() >= size:
                    raise RemoteProtocolError(
                        f"quoted value for parameter '{name}' ends with a lone backslash"
                    )
                chunks.append(value[inner.end()])
                pos = inner.end() + 1
            out.append((name, "".join(chunks)))
            # Anything between the closing quote and the next `;` is ignored, as in Pushpin.
            semi = value.find(";", pos)
            start = size if semi == -1 else semi + 1
        else:
            semi = value.find(";", at)
            end = size if semi == -1 else semi
            out.append((name, value[at:end].strip(WHITESPACE)))
            start = size if semi == -1 else semi + 1
    return tuple(out)


def parse_param_list(value: str) -> HeaderValue:
    """Parse `first; k=v; k="quoted"` with the first element verbatim (Pushpin's default mode).

    The first element runs to the first `;` (quotes not interpreted) and is trimmed.
    Raises `RemoteProtocolError` for an unterminated quoted parameter value or one ending in a lone
    backslash.
    """
    semi = value.find(";")
    if semi == -1:
        return HeaderValue(value.strip(WHITESPACE))
    return HeaderValue(value[:semi].strip(WHITESPACE), _parse_params_from(value, semi + 1))


def parse_params(value: str) -> tuple[tuple[str, str | None], ...]:
    """Parse every `;`-separated element as a parameter (Pushpin's ParseAllParameters mode).

    `"a=b; c"` gives `(("a", "b"), ("c", None))`; `""` gives `()`. Raises `RemoteProtocolError`
    as `parse_param_list` does.
    """
    return _parse_params_from(value, 0)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_param_list(first: str, params: Iterable[tuple[str, str | None]] = ()) -> str:
    """Encode `first; name=value; ...`, the inverse of `parse_param_list`.

    Values that are RFC 9110 tokens are written bare, others quoted with `\\` and `"` escaped;
    `None` writes a bare name. The result is header text (latin-1; see `encode_utf8_text` for
    non-latin-1 values) safe to join with commas. Raises `LocalProtocolError` if `first` is not
    visible text free of `,`, `;` and `"` (or has surrounding whitespace), if a name is not a
    token, or if a value holds control characters (other than tab) or characters above U+00FF.
    """
    if not _FIRST.fullmatch(first):
        raise LocalProtocolError(f"cannot encode {first!r} as the first element of a header value")
    parts = [first]
    for name, value in params:
        if not _TOKEN.fullmatch(name):
            raise LocalProtocolError(f"parameter name {name!r} is not a token")
        if value is None:
            parts.append(name)
        elif _TOKEN.fullmatch(value):
            parts.append(f"{name}={value}")
        elif _QUOTABLE.fullmatch(value):
            parts.append(f"{name}={_quote(value)}")
        else:
            raise LocalProtocolError(f"value of parameter '{name}' cannot be put in a header")
    return "; ".join(parts)
