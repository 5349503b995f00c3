"""Tests for gripcore._filters: message filters (spec §2.6, §3.5; checklist rows 103 and 105).

Every rule is a row in a table below; error rows carry Pushpin's exact message. Hypothesis
checks that escaping round-trips through the template scanner and that arbitrary meta and
content raise only `FilterError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gripcore._errors import FilterError, LocalProtocolError
from gripcore._filters import (
    BUILD_ID,
    CONTENT_FILTERS,
    KNOWN_FILTERS,
    MAX_FILTERS,
    REQUIRE_SUB,
    SKIP_SELF,
    SKIP_USERS,
    VAR_SUBST,
    FilterContext,
    apply_filters,
    content_filter_names,
    drops,
    filter_response_body,
    matches_content_filters,
    needs_filtering,
)

from .hypothesis_support import examples

DROP = None


def ctx(
    sub: Mapping[str, str] | None = None,
    pub: Mapping[str, str] | None = None,
    channels: Sequence[str] = ("ch",),
    prev_ids: Mapping[str, str] | None = None,
) -> FilterContext:
    return FilterContext(
        sub_meta=sub or {},
        pub_meta=pub or {},
        channels=frozenset(channels),
        prev_ids=prev_ids or {},
    )


def test_names_and_limits() -> None:
    assert MAX_FILTERS == 5
    assert {"skip-self", "skip-users", "require-sub", "build-id", "var-subst"} == KNOWN_FILTERS
    assert {"build-id", "var-subst"} == CONTENT_FILTERS
    assert (SKIP_SELF, SKIP_USERS, REQUIRE_SUB, BUILD_ID, VAR_SUBST) == (
        "skip-self",
        "skip-users",
        "require-sub",
        "build-id",
        "var-subst",
    )


# -- delivery filters -----------------------------------------------------------------------

# (filter, sub meta, pub meta, channels, delivered?)
DELIVERY_VECTORS: list[tuple[str, dict[str, str], dict[str, str], list[str], bool]] = [
    # skip-self: drop if sub `user` non-empty and equal to pub `sender`
    ("skip-self", {"user": "alice"}, {"sender": "alice"}, [], False),
    ("skip-self", {"user": "alice"}, {"sender": "bob"}, [], True),
    ("skip-self", {"user": "alice"}, {}, [], True),
    ("skip-self", {"user": ""}, {"sender": ""}, [], True),
    ("skip-self", {}, {"sender": ""}, [], True),
    ("skip-self", {}, {"sender": "alice"}, [], True),
    ("skip-self", {"user": "alice"}, {"sender": "Alice"}, [], True),
    ("skip-self", {"user": "alice"}, {"sender": " alice"}, [], True),
    # skip-users: drop if sub `user` is in pub `skip_users` (comma-separated, trimmed)
    ("skip-users", {"user": "bob"}, {"skip_users": "alice,bob"}, [], False),
    ("skip-users", {"user": "bob"}, {"skip_users": " alice , bob "}, [], False),
    ("skip-users", {"user": "bob"}, {"skip_users": "bob"}, [], False),
    ("skip-users", {"user": "bob"}, {"skip_users": "\tbob\n"}, [], False),
    ("skip-users", {"user": "bob"}, {"skip_users": "alice,bobby"}, [], True),
    ("skip-users", {"user": "bob"}, {"skip_users": "alice bob"}, [], True),
    ("skip-users", {"user": "bob"}, {}, [], True),
    ("skip-users", {"user": ""}, {"skip_users": "a,,b"}, [], True),
    ("skip-users", {"user": ""}, {"skip_users": ""}, [], True),
    ("skip-users", {}, {"skip_users": ",, ,"}, [], True),
    ("skip-users", {"user": " bob"}, {"skip_users": "bob"}, [], True),
    # require-sub: drop if pub `require_sub` non-empty and not one of the channels
    ("require-sub", {}, {"require_sub": "admins"}, ["news"], False),
    ("require-sub", {}, {"require_sub": "admins"}, ["news", "admins"], True),
    ("require-sub", {}, {"require_sub": "admins"}, [], False),
    ("require-sub", {}, {"require_sub": ""}, [], True),
    ("require-sub", {}, {}, ["news"], True),
    ("require-sub", {}, {"require_sub": "Admins"}, ["admins"], False),
]


@pytest.mark.parametrize(("name", "sub", "pub", "channels", "delivered"), DELIVERY_VECTORS)
def test_delivery_filter(
    name: str, sub: dict[str, str], pub: dict[str, str], channels: list[str], delivered: bool
) -> None:
    content = b"hello %(x)s %I"  # delivery filters never look at content
    result = apply_filters([name], ctx(sub, pub, channels), content)
    if delivered:
        assert result is content
    else:
        assert result is DROP


# -- var-subst ------------------------------------------------------------------------------

# (content, sub meta, expected bytes or FilterError message)
VAR_SUBST_VECTORS: list[tuple[bytes, dict[str, str], bytes | str]] = [
    (b"", {}, b""),
    (b"plain text", {}, b"plain text"),
    (b"hello %(name)s!", {"name": "Alice"}, b"hello Alice!"),
    (b"%(a)s%(b)s", {"a": "1", "b": "2"}, b"12"),
    (b"%(a)s-%(a)s", {"a": "x"}, b"x-x"),
    (b"%(empty)s|", {"empty": ""}, b"|"),
    (b"100%%", {}, b"100%"),
    (b"%%(name)s", {"name": "no"}, b"%(name)s"),
    (b"%%%%", {}, b"%%"),
    (b"%(caf\xc3\xa9)s", {"caf\u00e9": "\u2603"}, "\u2603".encode()),
    (b"%(a\\)b)s", {"a)b": "paren"}, b"paren"),
    (b"%(a\\\\b)s", {"a\\b": "backslash"}, b"backslash"),
    (b"%(\\x)s", {"x": "escaped plain"}, b"escaped plain"),
    (b"%(a(b)s", {"a(b": "open"}, b"open"),
    (b"\xff\x00%(v)s\xfe", {"v": "bin"}, b"\xff\x00bin\xfe"),
    (b"%(lone)s", {"lone": "\ud800"}, b"?"),
    # errors, in Pushpin's words, with the byte position of the fault
    (b"%", {}, "Expected directive after '%' at position 0"),
    (b"abc%", {}, "Expected directive after '%' at position 3"),
    (b"%(", {}, "Expected character after '(' at position 1"),
    (b"%(name", {}, "Unterminated field starting at position 1"),
    (b"x %(na\\)me", {}, "Unterminated field starting at position 3"),
    (b"%(name\\", {}, "Expected character after '\\' at position 6"),
    (b"%(name)", {"name": "x"}, "Expected directive after ')' at position 6"),
    (b"%(name)x", {"name": "x"}, "Unknown directive 'x' at position 7"),
    (b"%(name)I", {"name": "x"}, "Unknown directive 'I' at position 7"),
    (b"%(name)!", {"name": "x"}, "Unknown directive '!' at position 7"),
    (b"%!", {}, "Unknown directive '!' at position 1"),
    (b"% ", {}, "Unknown directive ' ' at position 1"),
    (b"%\xff", {}, "Unknown directive '\\xff' at position 1"),
    (b"%\n", {}, "Unknown directive '\\x0a' at position 1"),
    (b"%d", {}, "Unknown directive 'd' at position 1"),
    (b"%I", {}, "Unknown directive 'I' at position 1"),
    (b"%s", {}, "Directive 's' requires argument at position 1"),
    (b"%()s", {}, "Directive 's' requires argument at position 3"),
    (b"ok %(nope)s", {"name": "x"}, "No such variable 'nope' at position 10"),
    (b"%(\xff)s", {}, "No such variable '\ufffd' at position 4"),
    (b"%(a)s %(b)s", {"a": "1"}, "No such variable 'b' at position 10"),
]


@pytest.mark.parametrize(("content", "sub", "expected"), VAR_SUBST_VECTORS)
def test_var_subst(content: bytes, sub: dict[str, str], expected: bytes | str) -> None:
    context = ctx(sub)
    if isinstance(expected, bytes):
        assert apply_filters(["var-subst"], context, content) == expected
    else:
        with pytest.raises(FilterError) as info:
            apply_filters(["var-subst"], context, content)
        assert str(info.value) == expected
        assert info.value.close_code_hint == 1011


def test_content_without_directives_is_returned_uncopied() -> None:
    content = b"no directives here"
    assert apply_filters(["var-subst"], ctx(), content) is content


# -- build-id -------------------------------------------------------------------------------

# (content, sub meta, channels, prev ids, expected bytes or FilterError message)
BUILD_ID_VECTORS: list[tuple[bytes, dict[str, str], list[str], dict[str, str], bytes | str]] = [
    (b"id=%I", {"id_format": "%(a)s"}, ["a"], {"a": "17"}, b"id=17"),
    (
        b"{%I}",
        {"id_format": "%(a)s:%(b)s"},
        ["a", "b"],
        {"a": "1", "b": "2"},
        b"{1:2}",
    ),
    (b"%I/%I", {"id_format": "fixed"}, ["a"], {}, b"fixed/fixed"),
    (b"%I", {"id_format": ""}, ["a"], {}, b""),
    (b"%I", {"id_format": "100%%"}, ["a"], {}, b"100%"),
    (b"%(lit)I", {"id_format": "%(a)s"}, ["a"], {"a": "1"}, b"lit"),
    (b"%(l\\)t)I", {"id_format": "x"}, ["a"], {}, b"l)t"),
    (b"%()I", {"id_format": "%(a)s"}, ["a"], {"a": "9"}, b"9"),
    (b"%I", {"id_format": "%(a)s", "id_encoding": "hex"}, ["a"], {"a": "AB"}, b"4142"),
    (b"%(\xff)I", {"id_format": "", "id_encoding": "hex"}, ["a"], {}, b"ff"),
    (b"%%I %%(x)s", {"id_format": ""}, ["a"], {}, b"%I %(x)s"),
    (b"no id here", {"id_format": "%(a)s"}, ["a"], {"a": "1"}, b"no id here"),
    (b"%I", {"id_format": "\u2603"}, ["a"], {}, "\u2603".encode()),
    # a literal ID needs no context; a default one does
    (b"%(lit)I", {"id_format": "%(a)s"}, [], {}, b"lit"),
    (
        b"%I",
        {"id_format": "%(a)s"},
        [],
        {},
        "No ID specified and no default ID in context at position 1",
    ),
    # errors
    (b"%I", {}, ["a"], {"a": "1"}, "no sub meta 'id_format'"),
    (b"", {}, ["a"], {"a": "1"}, "no sub meta 'id_format'"),
    (
        b"%I",
        {"id_format": "%(b)s"},
        ["a", "b"],
        {"a": "1"},
        "failed to render ID: No such variable 'b' at position 4",
    ),
    (
        b"%I",
        {"id_format": "%I"},
        ["a"],
        {},
        "failed to render ID: Unknown directive 'I' at position 1",
    ),
    (
        b"x",
        {"id_format": "%("},
        ["a"],
        {},
        "failed to render ID: Expected character after '(' at position 1",
    ),
    (b"%I", {"id_format": "x", "id_encoding": "base64"}, ["a"], {}, "unsupported encoding: base64"),
    (b"%I", {"id_format": "x", "id_encoding": ""}, ["a"], {}, "unsupported encoding: "),
    (b"%s", {"id_format": "x"}, ["a"], {}, "Unknown directive 's' at position 1"),
    (b"%(x)s", {"id_format": "x"}, ["a"], {}, "Unknown directive 's' at position 4"),
    (b"%", {"id_format": "x"}, ["a"], {}, "Expected directive after '%' at position 0"),
]


@pytest.mark.parametrize(("content", "sub", "channels", "prev_ids", "expected"), BUILD_ID_VECTORS)
def test_build_id(
    content: bytes,
    sub: dict[str, str],
    channels: list[str],
    prev_ids: dict[str, str],
    expected: bytes | str,
) -> None:
    context = ctx(sub, channels=channels, prev_ids=prev_ids)
    if isinstance(expected, bytes):
        assert apply_filters(["build-id"], context, content) == expected
    else:
        with pytest.raises(FilterError) as info:
            apply_filters(["build-id"], context, content)
        assert str(info.value) == expected


# -- chains ---------------------------------------------------------------------------------

USER = {"user": "alice", "name": "Alice", "id_format": "%(ch)s"}

# (filters, sub meta, pub meta, content, expected bytes, DROP or FilterError message)
CHAIN_VECTORS: list[tuple[list[str], dict[str, str], dict[str, str], bytes, bytes | str | None]] = [
    ([], USER, {}, b"%bad", b"%bad"),
    (["http-check", "bogus", ""], USER, {}, b"%bad", b"%bad"),
    (["skip-self", "var-subst"], USER, {"sender": "bob"}, b"hi %(name)s", b"hi Alice"),
    (["skip-self", "var-subst"], USER, {"sender": "alice"}, b"%bad", DROP),
    # every delivery filter is asked before any content filter runs (Pushpin's
    # FilterStack::sendAction, then process), so a drop wins over a content filter that would
    # fail, wherever each stands in the list
    (["skip-users", "build-id"], {"user": "a"}, {"skip_users": "a"}, b"%I", DROP),
    (["build-id", "skip-users"], {"user": "a"}, {"skip_users": "a"}, b"%I", DROP),
    (
        ["build-id", "skip-users"],
        {"user": "a"},
        {"skip_users": "b"},
        b"%I",
        "no sub meta 'id_format'",
    ),
    # var-subst and build-id each reject the other's directive, so the first escapes the
    # second's with %% (Pushpin behaves the same)
    (["build-id", "var-subst"], USER, {}, b"%I %%(name)s", b"7 Alice"),
    (["var-subst", "build-id"], USER, {}, b"%(name)s %%I", b"Alice 7"),
    (["var-subst", "build-id"], USER, {}, b"%(name)s %I", "Unknown directive 'I' at position 10"),
    (["var-subst", "var-subst"], {"a": "%(b)s", "b": "B"}, {}, b"%(a)s", b"B"),
    (
        ["skip-self", "skip-users", "require-sub", "build-id", "var-subst"],
        USER,
        {"sender": "bob", "skip_users": "carol", "require_sub": "ch"},
        b"%I:%%(name)s",
        b"7:Alice",
    ),
    (["require-sub", "require-sub"], {}, {"require_sub": "other"}, b"x", DROP),
]


@pytest.mark.parametrize(("filters", "sub", "pub", "content", "expected"), CHAIN_VECTORS)
def test_filter_chain(
    filters: list[str],
    sub: dict[str, str],
    pub: dict[str, str],
    content: bytes,
    expected: bytes | str | None,
) -> None:
    context = ctx(sub, pub, channels=["ch"], prev_ids={"ch": "7"})
    if isinstance(expected, str):
        with pytest.raises(FilterError) as info:
            apply_filters(filters, context, content)
        assert str(info.value) == expected
    else:
        assert apply_filters(filters, context, content) == expected


def test_filters_accept_any_sequence() -> None:
    context = ctx({"name": "A"})
    assert apply_filters(("var-subst",), context, b"%(name)s") == b"A"
    assert apply_filters([], context, b"%(name)s") == b"%(name)s"


# -- content-filters matching and helpers ---------------------------------------------------

# (subscription filters, needs_filtering, content_filter_names)
NAME_VECTORS: list[tuple[list[str], bool, tuple[str, ...]]] = [
    ([], False, ()),
    (["unknown", "http-check", "http-modify"], False, ()),
    (["skip-self"], True, ()),
    (["skip-users", "require-sub"], True, ()),
    (["var-subst"], True, ("var-subst",)),
    (["build-id", "skip-self", "var-subst"], True, ("build-id", "var-subst")),
    (["var-subst", "build-id"], True, ("var-subst", "build-id")),
    (["var-subst", "var-subst"], True, ("var-subst", "var-subst")),
    (["x", "build-id"], True, ("build-id",)),
]


@pytest.mark.parametrize(("filters", "needs", "content_names"), NAME_VECTORS)
def test_filter_name_helpers(
    filters: list[str], needs: bool, content_names: tuple[str, ...]
) -> None:
    assert needs_filtering(filters) is needs
    assert content_filter_names(filters) == content_names
    assert content_filter_names(tuple(filters)) == content_names


# (item content-filters, subscription filters, delivered?)
CONTENT_FILTERS_VECTORS: list[tuple[list[str] | None, list[str], bool]] = [
    (None, [], True),
    (None, ["build-id", "var-subst"], True),
    ([], [], True),
    ([], ["skip-self", "require-sub"], True),
    ([], ["var-subst"], False),
    (["var-subst"], ["var-subst"], True),
    (["var-subst"], ["skip-self", "var-subst", "unknown"], True),
    (["var-subst"], [], False),
    (["var-subst"], ["build-id", "var-subst"], False),
    (["build-id", "var-subst"], ["build-id", "var-subst"], True),
    (["build-id", "var-subst"], ["var-subst", "build-id"], False),
    (["skip-self"], ["skip-self"], False),
    (["http-modify"], ["http-modify"], False),
]


@pytest.mark.parametrize(("item_filters", "sub_filters", "delivered"), CONTENT_FILTERS_VECTORS)
def test_matches_content_filters(
    item_filters: list[str] | None, sub_filters: list[str], delivered: bool
) -> None:
    assert matches_content_filters(item_filters, sub_filters) is delivered
    as_tuple = None if item_filters is None else tuple(item_filters)
    assert matches_content_filters(as_tuple, tuple(sub_filters)) is delivered


# -- caller misuse ----------------------------------------------------------------------------

BAD_CONTEXTS: list[tuple[dict[str, Any], str]] = [
    ({"sub_meta": {"user": 1}}, "FilterContext.sub_meta must map str to str, got 'user': 1"),
    ({"pub_meta": {1: "x"}}, "FilterContext.pub_meta must map str to str, got 1: 'x'"),
    ({"prev_ids": {"ch": None}}, "FilterContext.prev_ids must map str to str"),
    ({"sub_meta": [("user", "a")]}, "FilterContext.sub_meta must be a mapping"),
    ({"channels": "news"}, "FilterContext.channels must be a collection of names, got 'news'"),
    ({"channels": b"news"}, "FilterContext.channels must be a collection of names"),
    ({"channels": 3}, "FilterContext.channels must be a collection of names, got 3"),
    ({"channels": ["a", 2]}, "FilterContext.channels must hold str names, got 2"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_CONTEXTS)
def test_bad_context_is_a_local_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        FilterContext(**kwargs)
    assert message in str(info.value)


def test_context_defaults_and_accepted_collections() -> None:
    empty = FilterContext()
    assert (dict(empty.sub_meta), dict(empty.pub_meta), set(empty.channels)) == ({}, {}, set())
    assert dict(empty.prev_ids) == {}
    listed = FilterContext(channels=["a", "b"], prev_ids={"a": "1"})
    assert apply_filters(["require-sub"], listed, b"x") == b"x"
    assert (
        apply_filters(["require-sub"], FilterContext(pub_meta={"require_sub": "b"}), b"x") is None
    )
    keys = FilterContext(channels={"a": 1, "b": 2}.keys(), pub_meta={"require_sub": "b"})
    assert apply_filters(["require-sub"], keys, b"x") == b"x"


def test_context_is_frozen() -> None:
    context = FilterContext()
    with pytest.raises(AttributeError):
        context.sub_meta = {}  # type: ignore[misc]


BARE_STRING_CALLS: list[tuple[str, Any]] = [
    ("apply_filters", lambda: apply_filters("skip-self", FilterContext(), b"")),
    ("needs_filtering", lambda: needs_filtering("skip-self")),
    ("content_filter_names", lambda: content_filter_names("var-subst")),
    ("matches_content_filters item", lambda: matches_content_filters("var-subst", [])),
    ("matches_content_filters sub", lambda: matches_content_filters([], "var-subst")),
]


@pytest.mark.parametrize(
    "call", [c[1] for c in BARE_STRING_CALLS], ids=[c[0] for c in BARE_STRING_CALLS]
)
def test_a_bare_string_of_filter_names_is_a_local_error(call: Any) -> None:
    with pytest.raises(LocalProtocolError, match="filters must be a sequence of names"):
        call()


# -- properties -------------------------------------------------------------------------------


def escape_text(data: bytes) -> bytes:
    """The inverse of rendering for literal text: every `%` doubled."""
    return data.replace(b"%", b"%%")


def escape_arg(data: bytes) -> bytes:
    """Quote a directive argument: backslash before every `\\` and `)`."""
    return data.replace(b"\\", b"\\\\").replace(b")", b"\\)")


@given(st.binary())
def test_escaped_text_renders_back_to_itself(data: bytes) -> None:
    assert apply_filters(["var-subst"], ctx(), escape_text(data)) == data
    assert apply_filters(["build-id"], ctx({"id_format": ""}), escape_text(data)) == data


@given(
    parts=st.lists(
        st.tuples(st.binary(max_size=20), st.text(min_size=1, max_size=10), st.text(max_size=10)),
        max_size=8,
    ),
    tail=st.binary(max_size=20),
)
def test_var_subst_round_trip(parts: list[tuple[bytes, str, str]], tail: bytes) -> None:
    """Any text around any `%(name)s` directives renders to the text with the values in."""
    variables = {name: value for _, name, value in parts}
    template = b"".join(
        escape_text(text) + b"%(" + escape_arg(name.encode("utf-8", "replace")) + b")s"
        for text, name, _ in parts
    )
    expected = b"".join(
        text + variables[name].encode("utf-8", "replace") for text, name, _ in parts
    )
    result = apply_filters(["var-subst"], ctx(variables), template + escape_text(tail))
    assert result == expected + tail


@given(literal=st.binary(min_size=1, max_size=30), hex_encode=st.booleans())
def test_build_id_literal_round_trip(literal: bytes, hex_encode: bool) -> None:
    sub = {"id_format": "", **({"id_encoding": "hex"} if hex_encode else {})}
    result = apply_filters(["build-id"], ctx(sub), b"%(" + escape_arg(literal) + b")I")
    assert result == (literal.hex().encode() if hex_encode else literal)


_names = st.sampled_from([*sorted(KNOWN_FILTERS), "unknown", "http-check", ""])
_meta_keys = st.sampled_from(
    ["user", "sender", "skip_users", "require_sub", "id_format", "id_encoding", "name", "a"]
)
_meta = st.dictionaries(st.one_of(_meta_keys, st.text(max_size=5)), st.text(max_size=12))
_content = st.one_of(
    st.binary(max_size=60),
    st.lists(st.sampled_from([b"%", b"(", b")", b"\\", b"s", b"I", b"name", b"%%", b"x"])).map(
        b"".join
    ),
)


@settings(max_examples=examples(150))
@given(
    filters=st.lists(_names, max_size=MAX_FILTERS + 2),
    sub=_meta,
    pub=_meta,
    channels=st.frozensets(st.text(max_size=5), max_size=4),
    prev_ids=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=4),
    content=_content,
)
def test_arbitrary_input_raises_only_filter_error(
    filters: list[str],
    sub: dict[str, str],
    pub: dict[str, str],
    channels: frozenset[str],
    prev_ids: dict[str, str],
    content: bytes,
) -> None:
    context = FilterContext(sub_meta=sub, pub_meta=pub, channels=channels, prev_ids=prev_ids)
    try:
        result = apply_filters(filters, context, content)
    except FilterError as exc:
        assert str(exc)
        assert any(name in CONTENT_FILTERS for name in filters)
    else:
        assert result is None or isinstance(result, bytes)
        if not any(name in CONTENT_FILTERS for name in filters):
            assert result is None or result is content


# -- large inputs (linear time) ---------------------------------------------------------------


def test_megabyte_of_directives_renders() -> None:
    unit = b"<%(name)s|%%|" + b"x" * 48 + b">"
    content = unit * (1_000_000 // len(unit))
    result = apply_filters(["var-subst"], ctx({"name": "Al"}), content)
    assert result == (b"<Al|%|" + b"x" * 48 + b">") * (1_000_000 // len(unit))


def test_megabyte_of_id_directives_renders() -> None:
    content = (b"%I%(z)I" + b"." * 57) * 16_000
    result = apply_filters(
        ["build-id"],
        ctx({"id_format": "%(c)s", "id_encoding": "hex"}, prev_ids={"c": "1"}),
        content,
    )
    assert result == (b"317a" + b"." * 57) * 16_000


def test_megabyte_unterminated_field_fails_in_one_pass() -> None:
    content = b"%(" + b"a\\)" * 350_000
    with pytest.raises(FilterError, match=r"Unterminated field starting at position 1$"):
        apply_filters(["var-subst"], ctx(), content)


def test_megabyte_argument_with_escapes() -> None:
    name = b"a\\)" * 300_000
    value = "v" * 10
    content = b"%(" + name + b")s"
    key = (b"a)" * 300_000).decode()
    assert apply_filters(["var-subst"], ctx({key: value}), content) == value.encode()


def test_megabyte_of_percent_signs() -> None:
    content = (b"%%" + b"-" * 30) * 32_000
    assert apply_filters(["var-subst"], ctx(), content) == (b"%" + b"-" * 30) * 32_000


@pytest.mark.parametrize(
    ("filters", "sub", "pub", "dropped"),
    [
        ([], USER, {"sender": "alice"}, False),
        (["build-id", "var-subst", "skip-self"], USER, {"sender": "alice"}, True),
        (["skip-users"], USER, {"skip_users": "bob"}, False),
        (["require-sub"], {}, {"require_sub": "ch"}, False),
        (["require-sub", "skip-users"], {}, {"require_sub": "other"}, True),
    ],
)
def test_drops_asks_only_the_delivery_filters(
    filters: list[str], sub: dict[str, str], pub: dict[str, str], dropped: bool
) -> None:
    """What decides for a close or a hint: content filters are not run (build-id without an
    id_format would fail), only skip-self, skip-users and require-sub."""
    assert drops(filters, ctx(sub, pub)) is dropped


@pytest.mark.parametrize(
    ("channel_filters", "meta", "body", "expected"),
    [
        ([(), ("skip-users",)], {}, b"100%%", b"100%%"),  # no build-id: the body as it is
        ([("build-id",), ("var-subst", "build-id")], {"id_format": "x"}, b"", b""),
        ([("build-id", "var-subst")], {"id_format": "x"}, b"a %%(b)s %(c)I", b"a %(b)s c"),
        # build-id runs once however many channels name it
        ([("build-id",), ("build-id",)], {"id_format": "x"}, b"%%%%", b"%%"),
        ([("build-id",)], {"id_format": "x"}, b"%I", "No ID specified and no default ID"),
        ([("build-id",)], {}, b"x", "no sub meta 'id_format'"),
    ],
)
def test_filter_response_body(
    channel_filters: list[tuple[str, ...]], meta: dict[str, str], body: bytes, expected: object
) -> None:
    """A stream's own bodies go through build-id only, with no channels nor prev-ids."""
    if isinstance(expected, str):
        with pytest.raises(FilterError, match=expected):
            filter_response_body(channel_filters, meta, body)
    else:
        assert filter_response_body(channel_filters, meta, body) == expected


def test_filter_response_body_refuses_a_bare_string() -> None:
    with pytest.raises(LocalProtocolError):
        filter_response_body(["build-id"], {}, b"x")
