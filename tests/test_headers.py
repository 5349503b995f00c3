"""Header value parsing (`gripcore._headers`): Pushpin's comma/parameter rules as vector tables,
the encoder round trip, and properties: arbitrary input raises only the core's own errors, and
megabyte inputs parse in linear time.

These parsers take complete header values (h11 has already framed the header block), so there is
no incremental feeding to test; the "trailing data" cases are the text after a closing quote and
after a trailing comma, which the vectors cover."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gripcore import LocalProtocolError, ProtocolError, RemoteProtocolError
from gripcore._headers import (
    WHITESPACE,
    HeaderValue,
    decode_utf8_text,
    encode_utf8_text,
    format_param_list,
    get_header,
    get_header_values,
    get_split_header_values,
    header_text,
    parse_param_list,
    parse_params,
    split_header_values,
)

# (header value, elements) -- split on commas outside double quotes, each trimmed.
SPLIT_VECTORS: list[tuple[str, list[str]]] = [
    ("", []),
    ("a", ["a"]),
    ("a,b", ["a", "b"]),
    (" a , b ", ["a", "b"]),
    ("a,", ["a"]),  # a final comma adds nothing
    ("a, ", ["a", ""]),  # ... but whitespace after it is an (empty) element
    ("a,,b", ["a", "", "b"]),
    (",a", ["", "a"]),
    (",", [""]),
    ('a; x="1,2", b', ['a; x="1,2"', "b"]),
    ('"a,b",c', ['"a,b"', "c"]),
    (r'a; x="q\"uo,te", b', [r'a; x="q\"uo,te"', "b"]),
    (r'a; x="back\\", b', [r'a; x="back\\"', "b"]),
    ('a; x="unterminated, b, c', ['a; x="unterminated, b, c']),  # rest is one element
    ('a, b; x="1\\', ["a", 'b; x="1\\']),  # lone backslash at the end: unterminated
    ("a\\,b", ["a\\", "b"]),  # backslash only escapes inside quotes
    ('x="1"y, z', ['x="1"y', "z"]),
    ("\tx\t,\ry\n", ["x", "y"]),
    ("a\xa0,\x85b", ["a\xa0", "\x85b"]),  # latin-1 bytes are not whitespace
]

# (element, first, params) -- first element verbatim, then parameters.
PARAM_VECTORS: list[tuple[str, str, tuple[tuple[str, str | None], ...]]] = [
    ("", "", ()),
    ("apple", "apple", ()),
    ("  apple  ", "apple", ()),
    ("apple; prev-id=item1", "apple", (("prev-id", "item1"),)),
    ("a; filter=f1; filter=f2", "a", (("filter", "f1"), ("filter", "f2"))),
    ("a;x", "a", (("x", None),)),
    ("a; x; y=1", "a", (("x", None), ("y", "1"))),
    ("a; x=", "a", (("x", ""),)),
    ("a; x= ; y", "a", (("x", ""), ("y", None))),
    ("a; x = 1 ", "a", (("x", "1"),)),
    ('a; x="q"', "a", (("x", "q"),)),
    ('a; x=""', "a", (("x", ""),)),
    ('a; x="a;b=c"; y=2', "a", (("x", "a;b=c"), ("y", "2"))),
    (r'a; x="q\"v"', "a", (("x", 'q"v'),)),
    (r'a; x="\\"', "a", (("x", "\\"),)),
    (r'a; x="\q"', "a", (("x", "q"),)),
    ('a; x="v"junk; y=1', "a", (("x", "v"), ("y", "1"))),  # text after the quote is ignored
    ('a; x="v" trailing', "a", (("x", "v"),)),
    ('a; x= "v"', "a", (("x", '"v"'),)),  # a quote not right after `=` is literal
    ("a; x=1=2", "a", (("x", "1=2"),)),
    ("a;", "a", ()),
    ("a; ", "a", (("", None),)),
    ("a;;b", "a", (("", None), ("b", None))),
    ('"q;x"; y', '"q', (('x"', None), ("y", None))),  # first element ignores quotes
    ("<http://x/y?a=b>; rel=next", "<http://x/y?a=b>", (("rel", "next"),)),
    ("; timeout=10", "", (("timeout", "10"),)),
    ("ping\\n; format=cstring", "ping\\n", (("format", "cstring"),)),
]

# (element, params) in parse-all mode (Grip-Set-Meta).
PARAM_ALL_VECTORS: list[tuple[str, tuple[tuple[str, str | None], ...]]] = [
    ("", ()),
    ("foo=bar", (("foo", "bar"),)),
    ("foo", (("foo", None),)),
    ("=bar", (("", "bar"),)),
    ('foo="b a r"; extra=1', (("foo", "b a r"), ("extra", "1"))),
    (" k = v ", (("k", "v"),)),
]

PARAM_ERRORS: list[tuple[str, str]] = [
    ('a; x="unterminated', "unterminated quoted value for parameter 'x'"),
    ('a; x="ends in backslash\\', "quoted value for parameter 'x' ends with a lone backslash"),
    ('a; y=1; x="', "unterminated quoted value for parameter 'x'"),
]

# (first, params, encoded)
FORMAT_VECTORS: list[tuple[str, list[tuple[str, str | None]], str]] = [
    ("apple", [], "apple"),
    ("apple", [("prev-id", "item1")], "apple; prev-id=item1"),
    ("a b", [("x", None)], "a b; x"),
    ("a", [("x", "")], 'a; x=""'),
    ("a", [("x", "has space")], 'a; x="has space"'),
    ("a", [("x", 'q"v')], r'a; x="q\"v"'),
    ("a", [("x", "back\\slash")], r'a; x="back\\slash"'),
    ("a", [("x", "1,2;3")], 'a; x="1,2;3"'),
    (
        "<http://x/?a=b>",
        [("rel", "next"), ("timeout", "10")],
        "<http://x/?a=b>; rel=next; timeout=10",
    ),
    ("caf\xe9", [("m", "\xff\t")], 'caf\xe9; m="\xff\t"'),
]

FORMAT_ERRORS: list[tuple[str, list[tuple[str, str | None]], str]] = [
    ("", [], "first element"),
    (" a", [], "first element"),
    ("a,b", [], "first element"),
    ("a;b", [], "first element"),
    ('a"b', [], "first element"),
    ("a\nb", [], "first element"),
    ("\u20ac", [], "first element"),
    ("a", [("", "1")], "is not a token"),
    ("a", [("a b", "1")], "is not a token"),
    ("a", [("x", "line\nbreak")], "cannot be put in a header"),
    ("a", [("x", "\u20ac")], "cannot be put in a header"),
]


@pytest.mark.parametrize(("value", "expected"), SPLIT_VECTORS)
def test_split_header_values(value: str, expected: list[str]) -> None:
    assert split_header_values(value) == expected


@pytest.mark.parametrize(("value", "first", "params"), PARAM_VECTORS)
def test_parse_param_list(
    value: str, first: str, params: tuple[tuple[str, str | None], ...]
) -> None:
    assert parse_param_list(value) == HeaderValue(first, params)


@pytest.mark.parametrize(("value", "params"), PARAM_ALL_VECTORS)
def test_parse_params(value: str, params: tuple[tuple[str, str | None], ...]) -> None:
    assert parse_params(value) == params


@pytest.mark.parametrize(("value", "message"), PARAM_ERRORS)
def test_parse_param_errors(value: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_param_list(value)
    assert str(info.value) == message
    with pytest.raises(RemoteProtocolError):
        parse_params(value.split(";", 1)[1])


@pytest.mark.parametrize(("first", "params", "encoded"), FORMAT_VECTORS)
def test_format_param_list(first: str, params: list[tuple[str, str | None]], encoded: str) -> None:
    assert format_param_list(first, params) == encoded
    assert parse_param_list(encoded) == HeaderValue(first, tuple(params))


@pytest.mark.parametrize(("first", "params", "message"), FORMAT_ERRORS)
def test_format_param_list_errors(
    first: str, params: list[tuple[str, str | None]], message: str
) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        format_param_list(first, params)


def test_header_value_lookup_is_case_insensitive() -> None:
    value = parse_param_list("ch; Prev-ID=3; filter=a; FILTER=b; bare")
    assert value.get("prev-id") == "3"
    assert value.has("PREV-id")
    assert value.get_all("filter") == ["a", "b"]
    assert value.has("bare") and value.get("bare") is None
    assert not value.has("missing") and value.get("missing") is None
    assert value.get_all("missing") == []


@pytest.mark.parametrize(
    "params",
    [
        (("a",),),
        (("a", 1),),
        ((1, "a"),),
        ["not a tuple"],
    ],
)
def test_header_value_validates_params(params: object) -> None:
    with pytest.raises(LocalProtocolError):
        HeaderValue("x", params)  # type: ignore[arg-type]


def test_header_value_validates_first() -> None:
    with pytest.raises(LocalProtocolError):
        HeaderValue(b"x")  # type: ignore[arg-type]


HEADERS = [
    (b"Grip-Channel", b"a, b"),
    (b"Content-Type", b"text/plain"),
    (b"grip-channel", b'c; x="1,2"'),
    (b"GRIP-CHANNEL", b""),
]


def test_header_lookup() -> None:
    assert get_header_values(HEADERS, b"grip-channel") == [b"a, b", b'c; x="1,2"', b""]
    assert get_header_values(HEADERS, "Grip-Channel") == get_header_values(HEADERS, b"GRIP-channel")
    assert get_header(HEADERS, "content-type") == b"text/plain"
    assert get_header(HEADERS, b"Grip-Channel") == b"a, b"
    assert get_header(HEADERS, b"missing") is None
    assert get_header_values(HEADERS, b"missing") == []
    assert get_split_header_values(HEADERS, "grip-channel") == ["a", "b", 'c; x="1,2"']


def test_header_text_is_latin1_and_utf8_reread() -> None:
    raw = "café ☕".encode()
    text = header_text(raw)
    assert len(text) == len(raw)
    assert decode_utf8_text(text) == "café ☕"
    assert encode_utf8_text("café ☕") == text
    assert decode_utf8_text(header_text(b"bad \xff")) == "bad \ufffd"
    assert header_text(bytes(range(256))) == "".join(map(chr, range(256)))


def test_utf8_text_errors() -> None:
    with pytest.raises(LocalProtocolError):
        decode_utf8_text("\u20ac")
    with pytest.raises(LocalProtocolError):
        encode_utf8_text("\ud800")


def test_whitespace_is_http_whitespace() -> None:
    assert set(WHITESPACE) == set(" \t\r\n\v\f")


# -- properties ---------------------------------------------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'+^`|#$%&",
    min_size=1,
    max_size=10,
)
# Visible latin-1 characters other than the delimiters (C1 controls and NBSP included: they
# are obs-text, not whitespace).
_first_char = st.characters(codec="latin-1", exclude_characters=',;"').filter(
    lambda c: c > " " and c != "\x7f"
)
_first = st.builds(
    lambda words: " ".join(words),
    st.lists(st.text(_first_char, min_size=1, max_size=8), min_size=1, max_size=3),
)
_value_text = st.text(
    alphabet=st.characters(codec="latin-1").filter(
        lambda c: c == "\t" or " " <= c <= "~" or c >= "\x80"
    ),
    max_size=12,
)
_params = st.lists(st.tuples(_token, st.none() | _value_text), max_size=5)


@given(_first, _params)
def test_format_then_parse_round_trips(first: str, params: list[tuple[str, str | None]]) -> None:
    encoded = format_param_list(first, params)
    assert parse_param_list(encoded) == HeaderValue(first, tuple(params))


@given(st.lists(st.tuples(_first, _params), min_size=1, max_size=5))
def test_formatted_elements_survive_comma_join(
    elements: list[tuple[str, list[tuple[str, str | None]]]],
) -> None:
    joined = ", ".join(format_param_list(first, params) for first, params in elements)
    parsed = [parse_param_list(part) for part in split_header_values(joined)]
    assert parsed == [HeaderValue(first, tuple(params)) for first, params in elements]


@given(st.text(alphabet=st.sampled_from(list(',;="\\ ab\t')), max_size=40) | st.text(max_size=40))
def test_arbitrary_text_raises_only_protocol_errors(text: str) -> None:
    parts = split_header_values(text)
    assert all(part == part.strip(WHITESPACE) for part in parts)
    for part in [text, *parts]:
        try:
            value = parse_param_list(part)
        except RemoteProtocolError:
            continue
        assert ";" not in value.first
    with contextlib.suppress(RemoteProtocolError):
        parse_params(text)


@given(st.binary(max_size=60))
def test_arbitrary_header_bytes(raw: bytes) -> None:
    headers = [(b"Grip-Channel", raw), (b"X", raw)]
    try:
        elements = get_split_header_values(headers, b"grip-channel")
        for element in elements:
            parse_param_list(element)
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError)


@given(st.text(max_size=30))
def test_utf8_text_round_trip(value: str) -> None:
    try:
        encoded = encode_utf8_text(value)
    except LocalProtocolError:
        return  # lone surrogates
    assert decode_utf8_text(encoded) == value


# -- linear time on megabyte inputs ---------------------------------------------------------------

MEGABYTE = 1_000_000


def test_megabyte_comma_list() -> None:
    value = ", ".join(f"ch{n}; prev-id=id{n}" for n in range(MEGABYTE // 20))
    assert len(value) > MEGABYTE
    parts = split_header_values(value)
    assert len(parts) == MEGABYTE // 20
    assert parse_param_list(parts[-1]) == HeaderValue(
        f"ch{MEGABYTE // 20 - 1}", (("prev-id", f"id{MEGABYTE // 20 - 1}"),)
    )


def test_megabyte_quoted_runs() -> None:
    value = '"' + '\\"' * (MEGABYTE // 2)  # one unterminated quote full of escapes
    assert split_header_values(value) == [value]
    value = ", ".join(['"x,y"'] * (MEGABYTE // 7))
    assert len(split_header_values(value)) == MEGABYTE // 7


def test_megabyte_parameters() -> None:
    value = "first" + "; filter=f" * (MEGABYTE // 10)
    parsed = parse_param_list(value)
    assert len(parsed.params) == MEGABYTE // 10
    quoted = 'first; x="' + "\\;" * (MEGABYTE // 2) + '"'
    assert parse_param_list(quoted).get("x") == ";" * (MEGABYTE // 2)
    with pytest.raises(RemoteProtocolError):
        parse_param_list(quoted[:-1])
