"""Message filters: per-subscription rules that drop or rewrite a published item (spec §2.6).

A subscription names up to `MAX_FILTERS` filters (`filter=` on `Grip-Channel`, `filters` in a
JSON instruct or a WebSocket `subscribe` control message). When an item is delivered to that
subscriber, `apply_filters` runs them in order; the first one that drops the item ends the chain.
Names this module does not know are ignored, as Pushpin ignores them (checklist row 9).

| filter        | effect                                                                        |
|---------------|-------------------------------------------------------------------------------|
| `skip-self`   | drop when sub meta `user` is non-empty and equals pub meta `sender`            |
| `skip-users`  | drop when sub meta `user` is non-empty and listed in pub meta `skip_users`     |
|               | (comma-separated, each entry trimmed)                                          |
| `require-sub` | drop when pub meta `require_sub` is non-empty and the connection is not        |
|               | subscribed to a channel of that (un-prefixed) name                             |
| `build-id`    | replace `%I` in the content with an ID rendered from sub meta `id_format`,     |
|               | `%(literal)I` with `literal`; sub meta `id_encoding=hex` hex-encodes           |
| `var-subst`   | replace `%(name)s` in the content with sub meta `name`                         |

Templates. Both content filters, and the `id_format` template, share Pushpin's directive syntax:
`%%` is a literal `%`; `%X` is directive `X` (an ASCII letter); `%(arg)X` passes `arg`, in which
a backslash escapes the next byte (so `\\)` puts a `)` in the argument); an empty `()` is no
argument. Anything else is an error with the byte position of the fault, in Pushpin's words
("Unknown directive 'x' at position 4"). Templates are scanned as bytes, as Pushpin does, so a
binary WebSocket message can be filtered too; names and values from meta are UTF-8.

Strategy. One left-to-right pass per template: `bytes.find` jumps to the next `%`, and an
argument is matched by a possessive regular expression anchored at its start, so nothing is
rescanned; the output is a list of pieces joined once. A megabyte of content full of
directives renders in linear time. A template with no `%` is returned as it is, without a copy.

Errors. `apply_filters` raises `FilterError` when a filter cannot run: a template error, a
missing variable, `build-id` without sub meta `id_format`, or an `id_encoding` other than `hex`.
The caller drops the item for that subscriber (Pushpin's default) or, in debug mode, fails the
session with the message. Building a `FilterContext` from values of the wrong type, or passing a
bare string where a list of filter names belongs, raises `LocalProtocolError`.

Decisions (README material):

* `MAX_FILTERS` is for the instruct parsers to enforce; `apply_filters` runs whatever list it is
  given (Pushpin's JSON instructs do not enforce the limit either, Appendix A item 3).
* `build-id` renders `id_format` only when the connection has at least one channel (Pushpin
  renders it from the session's channel table, which is empty otherwise); `%I` then fails with
  "No ID specified and no default ID in context". The prev-ids it uses are the session's *after*
  the current item is applied, so `%(chan)s` is the delivered item's own ID (Pushpin 1.36,
  spec section 2.6 and Appendix A item 11): the caller (the hub) passes them that way.
* Delivery filters are all asked before any content filter runs, and they alone decide for
  actions without content (`close`, `hint`): `drops`, Pushpin's `FilterStack::sendAction`.
* `build-id` also rewrites a stream's own response bodies (`filter_response_body`, Pushpin's
  ProxyContent target), with the subscription meta only.
* A channel in `channels` without an entry in `prev_ids` is an unknown variable for `id_format`,
  as Pushpin's null prev-id is.
* Meta strings that cannot be encoded as UTF-8 (lone surrogates from JSON `\\ud800` escapes) are
  encoded with replacement characters rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._errors import FilterError, LocalProtocolError

__all__ = [
    "BUILD_ID",
    "CONTENT_FILTERS",
    "KNOWN_FILTERS",
    "MAX_FILTERS",
    "PROXY_CONTENT_FILTERS",
    "REQUIRE_SUB",
    "SKIP_SELF",
    "SKIP_USERS",
    "VAR_SUBST",
    "FilterContext",
    "apply_filters",
    "content_filter_names",
    "drops",
    "filter_response_body",
    "matches_content_filters",
    "needs_filtering",
]

# Pushpin's MESSAGEFILTERSTACK_SIZE_MAX: a handful is all a real subscription uses, and every
# filter costs a pass over the content for every delivery.
MAX_FILTERS = 5

SKIP_SELF = "skip-self"
SKIP_USERS = "skip-users"
REQUIRE_SUB = "require-sub"
BUILD_ID = "build-id"
VAR_SUBST = "var-subst"

KNOWN_FILTERS = frozenset({SKIP_SELF, SKIP_USERS, REQUIRE_SUB, BUILD_ID, VAR_SUBST})
"""The filter names this module runs; any other name in a filter list is ignored."""

CONTENT_FILTERS = frozenset({BUILD_ID, VAR_SUBST})
"""The filters that modify content (Pushpin's MessageContent target; `http-modify` is 2.0-only
and not supported)."""

PROXY_CONTENT_FILTERS = frozenset({BUILD_ID})
"""The filters that also rewrite a stream's own response bodies (Pushpin's ProxyContent
target): see `filter_response_body`."""


def _check_str_map(name: str, value: object) -> None:
    if not isinstance(value, Mapping):
        raise LocalProtocolError(f"FilterContext.{name} must be a mapping, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise LocalProtocolError(
                f"FilterContext.{name} must map str to str, got {key!r}: {item!r}"
            )


def _check_names(filters: object) -> None:
    if isinstance(filters, str | bytes):
        raise LocalProtocolError(f"filters must be a sequence of names, not the string {filters!r}")


@dataclass(frozen=True, slots=True)
class FilterContext:
    """What the filters see about one subscriber and one item.

    `sub_meta` is the subscription meta (`Grip-Set-Meta`, instruct `meta`, WebSocket
    `set-meta`); `pub_meta` is the published item's `meta`; `channels` are the connection's
    subscribed channel names without any route prefix; `prev_ids` maps each channel that has
    one to the session's current prev-id (after the item being filtered is applied).

    Raises `LocalProtocolError` when a field has the wrong type (a mapping not of str to str,
    or `channels` given as a bare string or holding a non-string).
    """

    sub_meta: Mapping[str, str] = field(default_factory=dict)
    pub_meta: Mapping[str, str] = field(default_factory=dict)
    channels: Collection[str] = frozenset()
    prev_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_str_map("sub_meta", self.sub_meta)
        _check_str_map("pub_meta", self.pub_meta)
        _check_str_map("prev_ids", self.prev_ids)
        channels: object = self.channels
        if isinstance(channels, str | bytes) or not isinstance(channels, Collection):
            raise LocalProtocolError(
                f"FilterContext.channels must be a collection of names, got {channels!r}"
            )
        for channel in channels:
            if not isinstance(channel, str):
                raise LocalProtocolError(
                    f"FilterContext.channels must hold str names, got {channel!r}"
                )


def needs_filtering(filters: Sequence[str]) -> bool:
    """True when `filters` names at least one known filter (otherwise delivery can skip the
    chain). Raises `LocalProtocolError` if `filters` is a bare string."""
    _check_names(filters)
    return any(name in KNOWN_FILTERS for name in filters)


def content_filter_names(filters: Sequence[str]) -> tuple[str, ...]:
    """The content-modifying filters in `filters` (`build-id`, `var-subst`), in order, repeats
    kept: what a published format's `content-filters` is compared with. Raises
    `LocalProtocolError` if `filters` is a bare string."""
    _check_names(filters)
    return tuple(name for name in filters if name in CONTENT_FILTERS)


def matches_content_filters(
    item_content_filters: Sequence[str] | None, sub_filters: Sequence[str]
) -> bool:
    """Whether a format may go to a subscriber with `sub_filters` on the channel.

    A format without `content-filters` (None) goes to everyone. With it, it goes only where
    the subscriber's content filters equal it exactly, in order (`[]` matches subscribers with
    no content filter), so a publisher can send one variant per filter setup. Raises
    `LocalProtocolError` if either argument is a bare string.
    """
    if item_content_filters is None:
        return True
    _check_names(item_content_filters)
    return tuple(item_content_filters) == content_filter_names(sub_filters)


def drops(filters: Sequence[str], ctx: FilterContext) -> bool:
    """Whether a delivery filter in `filters` (`skip-self`, `skip-users`, `require-sub`) drops
    the item for this subscriber. Content filters are not run: this is what decides for
    actions without content (`close`, `hint`), as Pushpin's `FilterStack::sendAction` does.
    Raises `LocalProtocolError` if `filters` is a bare string."""
    _check_names(filters)
    for name in filters:
        if name == SKIP_SELF:
            if _skip_self(ctx):
                return True
        elif name == SKIP_USERS:
            if _skip_users(ctx):
                return True
        elif name == REQUIRE_SUB and _require_sub(ctx):
            return True
    return False


def apply_filters(filters: Sequence[str], ctx: FilterContext, content: bytes) -> bytes | None:
    """Run the filter chain for one delivery.

    As in Pushpin, every delivery filter is asked first (`drops`); only when none drops the
    item do the content filters run, in order. Returns the content to deliver (the same object
    when no filter changed it), or None when a filter drops the item for this subscriber.
    Unknown names are skipped. Raises `FilterError` when a content filter cannot run (see the
    module docstring), and `LocalProtocolError` if `filters` is a bare string.
    """
    if drops(filters, ctx):
        return None
    for name in filters:
        if name == BUILD_ID:
            content = _build_id(ctx, content)
        elif name == VAR_SUBST:
            content = _render(content, _variable_handler(ctx.sub_meta))
    return content


def filter_response_body(
    channel_filters: Iterable[Sequence[str]], sub_meta: Mapping[str, str], body: bytes
) -> bytes:
    """The filters that also apply to a stream's own response bodies (Pushpin's ProxyContent
    target: `build-id`), for the initial body of a stream hold or a non-hold with a next link
    and the body of each next-link answer. `channel_filters` are the filter lists of the
    session's channels; each such filter runs once, in first-seen order, with the subscription
    meta only, as Pushpin does: no channels, no prev-ids, so `%%` becomes `%`, `%(id)I` inserts
    `id`, and a bare `%I` fails ("No ID specified and no default ID in context"). An origin
    that escapes its stored events for `build-id` (django-eventstream does) relies on this.

    Raises `FilterError` when a filter cannot run, `LocalProtocolError` if a filter list is a
    bare string.
    """
    names: list[str] = []
    for filters in channel_filters:
        _check_names(filters)
        for name in filters:
            if name in PROXY_CONTENT_FILTERS and name not in names:
                names.append(name)
    if not names or not body:
        return body
    out = apply_filters(names, FilterContext(sub_meta=sub_meta), body)
    assert out is not None  # build-id drops nothing
    return out


# -- delivery filters -------------------------------------------------------------------------


def _skip_self(ctx: FilterContext) -> bool:
    user = ctx.sub_meta.get("user", "")
    return user != "" and ctx.pub_meta.get("sender", "") == user


def _skip_users(ctx: FilterContext) -> bool:
    user = ctx.sub_meta.get("user", "")
    if user == "":
        return False
    skip_users = ctx.pub_meta.get("skip_users", "")
    return any(part.strip() == user for part in skip_users.split(","))


def _require_sub(ctx: FilterContext) -> bool:
    require_sub = ctx.pub_meta.get("require_sub", "")
    return require_sub != "" and require_sub not in ctx.channels


# -- content filters --------------------------------------------------------------------------


def _build_id(ctx: FilterContext, content: bytes) -> bytes:
    id_format = ctx.sub_meta.get("id_format")
    if id_format is None:
        raise FilterError("no sub meta 'id_format'")
    default_id: bytes | None = None
    if ctx.channels or ctx.prev_ids:
        try:
            default_id = _render(_utf8(id_format), _variable_handler(ctx.prev_ids))
        except FilterError as exc:
            raise FilterError(f"failed to render ID: {exc}") from None
    id_encoding = ctx.sub_meta.get("id_encoding")
    if id_encoding is not None and id_encoding != "hex":
        raise FilterError(f"unsupported encoding: {id_encoding}")
    return _render(content, _id_handler(default_id, hex_encode=id_encoding == "hex"))


# -- the template scanner ---------------------------------------------------------------------


class _DirectiveError(Exception):
    """A handler refused a directive; `_render` adds the position and raises FilterError."""


# A handler gets the directive byte and its argument (None when absent) and returns the bytes
# to insert, or raises _DirectiveError.
_Handler = Callable[[int, bytes | None], bytes]

# The inside of a `%(...)` field: runs of plain bytes or backslash escapes. Possessive, so a
# missing `)` fails in one pass instead of backtracking.
_FIELD = re.compile(rb"(?:[^\\)]++|\\.)*+", re.DOTALL)
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)

_PERCENT = 0x25
_OPEN = 0x28
_CLOSE = 0x29


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def _show(byte: int) -> str:
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}"


def _is_letter(byte: int) -> bool:
    return 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _render(template: bytes, handler: _Handler) -> bytes:
    """Expand the directives of `template` in one pass. Raises FilterError with the position
    of the first fault."""
    size = len(template)
    find = template.find
    pieces: list[bytes] = []
    pos = 0
    while (marker := find(b"%", pos)) >= 0:
        pieces.append(template[pos:marker])
        at = marker + 1
        if at >= size:
            raise FilterError(f"Expected directive after '%' at position {marker}")
        byte = template[at]
        arg: bytes | None = None
        if byte == _PERCENT:
            pieces.append(b"%")
            pos = at + 1
            continue
        if byte == _OPEN:
            if at + 1 >= size:
                raise FilterError(f"Expected character after '(' at position {at}")
            match = _FIELD.match(template, at + 1)
            assert match is not None  # the pattern matches the empty string
            end = match.end()
            if end >= size:
                raise FilterError(f"Unterminated field starting at position {at}")
            if template[end] != _CLOSE:
                # The field stopped on a backslash with nothing after it: the last byte.
                raise FilterError(f"Expected character after '\\' at position {end}")
            if end + 1 >= size:
                raise FilterError(f"Expected directive after ')' at position {end}")
            raw = template[at + 1 : end]
            arg = _ESCAPE.sub(rb"\1", raw) if b"\\" in raw else raw
            if not arg:
                arg = None  # Pushpin: an empty field is no argument
            at = end + 1
            byte = template[at]
        elif not _is_letter(byte):
            raise FilterError(f"Unknown directive '{_show(byte)}' at position {at}")
        try:
            pieces.append(handler(byte, arg))
        except _DirectiveError as exc:
            raise FilterError(f"{exc} at position {at}") from None
        pos = at + 1
    if not pieces:
        return template
    pieces.append(template[pos:])
    return b"".join(pieces)


def _variable_handler(variables: Mapping[str, str]) -> _Handler:
    """`%(name)s` -> the variable's UTF-8 value (var-subst and id_format)."""

    def handle(directive: int, arg: bytes | None) -> bytes:
        if directive != 0x73:  # 's'
            raise _DirectiveError(f"Unknown directive '{_show(directive)}'")
        if arg is None:
            raise _DirectiveError("Directive 's' requires argument")
        name = arg.decode("utf-8", "replace")
        value = variables.get(name)
        if value is None:
            raise _DirectiveError(f"No such variable '{name}'")
        return _utf8(value)

    return handle


def _id_handler(default_id: bytes | None, *, hex_encode: bool) -> _Handler:
    """`%I` -> the default ID; `%(literal)I` -> `literal`; hex-encoded when asked."""

    def handle(directive: int, arg: bytes | None) -> bytes:
        if directive != 0x49:  # 'I'
            raise _DirectiveError(f"Unknown directive '{_show(directive)}'")
        value = arg if arg is not None else default_id
        if value is None:
            raise _DirectiveError("No ID specified and no default ID in context")
        return value.hex().encode("ascii") if hex_encode else value

    return handle
