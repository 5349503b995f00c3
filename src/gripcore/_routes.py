"""Routes: which origin a client request goes to, read from a Pushpin routes file.

A routes file has one route per line; `#` starts a comment and blank lines are ignored. A line is
space-separated *sections*, each `value[,prop[=val]]*`, where values may be double-quoted with
`\\"` and `\\\\` escapes. The first section is the **condition** (a domain, `*` for any, or empty
for a route reachable only by `id`), the others are **targets** (`host:port`, `[ipv6]:port` or
`test`; several targets are an ordered failover list). Examples::

    * localhost:80
    *,path_beg=/ws localhost:8000,over_http
    example.com,ssl=yes 10.0.0.1:443,ssl,host=example.com
    *,id=chat,prefix=chat- app:80

Matching follows Pushpin (`src/proxy/domainmap.cpp`): the request's host selects its own rules if
it has any, else the `*` rules, with no fallback to `*` when the host has rules but none match
(Pushpin then answers 502). Within those rules a route matches when its `proto`, `ssl` (each when
given) and `path_beg` (a prefix of the still percent-encoded path) match, and the most specific
match wins: proto-specific over unspecified, then the longer `path_beg`, then ssl-specific.
Pushpin applies that preference pairwise in file order, which makes a few combinations depend on
line order (`path_beg=/a` against `ssl=yes`); here it is one total order, so the order of lines
never matters, as its documentation promises.

Strategy: the tokenizer is Pushpin's, one left-to-right pass per line with a regex search for the
next special character (linear in the line). Each line becomes a validated `Route` value; the
`RouteTable` indexes them by normalized host (lowercase, port and IPv6 brackets stripped) with each
host's rules sorted most-specific first, so `match` returns the first rule that matches.

Deliberate differences from Pushpin, all toward refusing configurations that cannot mean what
they say; each raises `RoutesError` naming the line (Pushpin logs and skips the line):

* unknown options, and options repeated where only one makes sense;
* a value on a flag option (Pushpin reads target `ssl=no` as `ssl`);
* bad numbers (Pushpin reads them as 0), `path_rem` together with `replace_beg`;
* zhttp/zhttpreq targets (ZeroMQ backends are not supported), a port in a condition domain;
* duplicate route ids (Pushpin marks such an id unusable).

Options parsed but not implemented are accepted and reported in `RouteTable.warnings`:
`jsonp_mode`, `jsonp_cb`, `jsonp_body`, `jsonp_defcb`, `jsonp_defmethod`, `session`, `sockjs`,
`sockjs_as_path`, `log_level` (conditions) and `ipc_file_mode`, `client_cert`, `client_key`
(targets). Duplicate conditions are skipped with a warning, as in Pushpin. Tabs separate sections
like spaces do (Pushpin only splits on spaces).

The implicit id of a route without `id=` is `<domain|*>,<http|ws|*>,<ssl|no-ssl|*>,<path_beg|*>`.
Pushpin's labels are inverted (`ssl=yes` is labelled `no-ssl`); here `ssl=yes` is `ssl`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ._errors import LocalProtocolError, RoutesError
from ._sig import parse_key_spec

__all__ = [
    "IGNORED_CONDITION_OPTIONS",
    "IGNORED_TARGET_OPTIONS",
    "Route",
    "RouteTable",
    "RouteWarning",
    "Target",
    "format_route_line",
    "parse_route_line",
    "parse_routes",
]

Proto: TypeAlias = Literal["http", "ws"]

# Options whose meaning gripcore does not implement: accepted so Pushpin files load, and reported.
IGNORED_CONDITION_OPTIONS = frozenset(
    {
        "jsonp_mode",
        "jsonp_cb",
        "jsonp_body",
        "jsonp_defcb",
        "jsonp_defmethod",
        "session",
        "sockjs",
        "sockjs_as_path",
        "log_level",
    }
)
IGNORED_TARGET_OPTIONS = frozenset({"ipc_file_mode", "client_cert", "client_key"})

_CONDITION_FLAGS = frozenset({"orig_headers", "debug", "aco", "no_grip"})
_CONDITION_VALUES = frozenset(
    {"proto", "ssl", "path_beg", "id", "sig_iss", "sig_key", "prefix", "as_host"}
    | {"path_rem", "replace_beg", "header"}
)
_TARGET_FLAGS = frozenset(
    {"ssl", "untrusted", "trust_connect_host", "insecure", "over_http", "one_event"}
)
_REPEATABLE = frozenset({"header", "sub"})

# The characters that end an unquoted run: a quote opens a quoted run, the rest end the token.
_SPECIAL = re.compile(r'[", #\t]')
# Host names as DNS and container networks spell them; IP literals are checked by `ipaddress`.
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# Plain digits only (Qt's toInt would also take a sign or spaces); 5 covers 65535.
_PORT = re.compile(r"[0-9]{1,5}")
# path_rem: 9 digits is far beyond any URL length and keeps int() trivially cheap.
_SMALL_INT = re.compile(r"[0-9]{1,9}")
# RFC 9110 token characters, for header names.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Values holding any of these are written quoted by format_route_line.
_NEEDS_QUOTES = re.compile(r'[", #\t\\]')


# --- values ------------------------------------------------------------------------------------


def _ipv6(text: str) -> str | None:
    """The compressed form of an IPv6 address, or None if `text` is not one."""
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


def _check_host(host: str, what: str, line: int) -> None:
    if not (_HOST_NAME.fullmatch(host) or _ipv6(host)):
        raise RoutesError(f"{what} {host!r} is not a host name or IP address", line=line)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a route sends requests: an origin `host:port`, or Pushpin's built-in `test` handler.

    `ssl` connects with TLS (`insecure` skips certificate checks); `host_header` is the `Host`
    header and TLS server name to send (target option `host=`); `over_http` speaks
    WebSocket-over-HTTP to the origin for WebSocket clients (`one_event`: one event per request);
    `untrusted` subjects origin-supplied links to the internal-address block; `sub` channels are
    subscribed implicitly; `trust_connect_host` trusts the TLS certificate for the connect host.
    A `test` target (`kind="test"`) has host `"test"` and port 0.
    Raises `RoutesError` (line 0) for an invalid host, port or channel.
    """

    host: str
    port: int
    ssl: bool = False
    over_http: bool = False
    untrusted: bool = False
    insecure: bool = False
    host_header: str | None = None
    sub: tuple[str, ...] = ()
    one_event: bool = False
    trust_connect_host: bool = False
    kind: Literal["net", "test"] = "net"

    def __post_init__(self) -> None:
        if self.kind == "test":
            if (self.host, self.port) != ("test", 0):
                raise RoutesError("a test target has host 'test' and port 0")
        elif self.kind == "net":
            _check_host(self.host, "target host", 0)
            if isinstance(self.port, bool) or not isinstance(self.port, int):
                raise RoutesError(f"target port must be an int, not {self.port!r}")
            if not 1 <= self.port <= 65535:
                raise RoutesError(f"target port {self.port} is out of range 1-65535")
        else:
            raise RoutesError(f"target kind must be 'net' or 'test', not {self.kind!r}")
        if self.host_header is not None and not _is_clean(self.host_header, allow_space=False):
            raise RoutesError(f"target host= value {self.host_header!r} is invalid")
        if not isinstance(self.sub, tuple) or not all(
            isinstance(channel, str) and channel for channel in self.sub
        ):
            raise RoutesError("target sub= channels must be a tuple of non-empty strings")

    @property
    def authority(self) -> str:
        """`host:port` (`[ipv6]:port` for IPv6), or `test` for the test handler."""
        if self.kind == "test":
            return "test"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _is_clean(text: object, *, allow_space: bool = True) -> bool:
    """A non-empty string with no control characters (and no spaces unless allowed)."""
    if not isinstance(text, str) or not text:
        return False
    return all(ch >= " " and ch != "\x7f" and (allow_space or ch != " ") for ch in text)


def _normalize_host(host: str) -> str:
    """A request host as routes are keyed: lowercase, port, brackets and trailing dot removed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        inner = host[1:end] if end > 0 else host
        return _ipv6(inner) or inner
    if host.count(":") == 1:
        host = host.partition(":")[0]
    elif ":" in host:
        return _ipv6(host) or host
    return host[:-1] if host.endswith(".") else host


def _domain_key(domain: str, line: int) -> str:
    """The lookup key of a condition domain; a domain that carries a port is refused."""
    if domain.startswith("[") and domain.endswith("]"):
        inner = domain[1:-1]
        key = _ipv6(inner)
        if key is None:
            raise RoutesError(f"condition domain {domain!r} is not an IPv6 address", line=line)
        return key
    if ":" in domain:
        key = _ipv6(domain)
        if key is None:
            raise RoutesError(f"condition domain {domain!r} must not include a port", line=line)
        return key
    _check_host(domain, "condition domain", line)
    return _normalize_host(domain)


def _implicit_id(domain: str, proto: Proto | None, ssl: bool | None, path_beg: str | None) -> str:
    ssl_label = "*" if ssl is None else ("ssl" if ssl else "no-ssl")
    return f"{domain},{proto or '*'},{ssl_label},{path_beg or '*'}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One line of a routes file: a condition, request settings, and the targets to try in order.

    Condition: `domain` (exact host, `"*"` for any, `None` for a route reachable only by `id`),
    `proto` (`"http"`/`"ws"`/None), `ssl` (None = either) and `path_beg`. `id` is the explicit id
    (`explicit_id=True`, which also gives the route its own stats) or the implicit one. Settings:
    `prefix` for channel names, `sig_iss`/`sig_key` (a key spec for `_sig.parse_key_spec`,
    `file:` ones unread), `debug`, `no_grip` (plain proxying), `as_host`, `path_rem` and
    `replace_beg` (see `rewrite_path`), `headers` to set on the origin request (an empty value
    deletes the header), `aco` (CORS), `orig_headers`. `ignored_options` lists options accepted
    but not implemented; `line` is where the route was read (0 if built in code).
    Raises `RoutesError` (with `line`) when the values are inconsistent.
    """

    domain: str | None
    targets: tuple[Target, ...]
    id: str = ""
    explicit_id: bool = False
    proto: Proto | None = None
    ssl: bool | None = None
    path_beg: str | None = None
    prefix: str = ""
    sig_iss: str | None = None
    sig_key: str | None = None
    debug: bool = False
    no_grip: bool = False
    as_host: str | None = None
    path_rem: int = 0
    replace_beg: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    aco: bool = False
    orig_headers: bool = False
    ignored_options: tuple[str, ...] = ()
    line: int = 0
    _key: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        line = self.line
        key = None
        if self.domain is not None:
            if self.domain == "*":
                key = None
            elif not isinstance(self.domain, str) or not self.domain:
                raise RoutesError("condition domain must be a host, '*' or None", line=line)
            else:
                key = _domain_key(self.domain, line)
        object.__setattr__(self, "_key", key)
        if self.proto not in (None, "http", "ws"):
            raise RoutesError("proto must be set to 'http' or 'ws'", line=line)
        if self.ssl not in (None, True, False):
            raise RoutesError("ssl must be set to 'yes' or 'no'", line=line)
        if self.path_beg is not None and not self.path_beg:
            raise RoutesError("path_beg cannot be empty", line=line)
        if not self.targets or not all(isinstance(t, Target) for t in self.targets):
            raise RoutesError("must specify condition and at least one target", line=line)
        if not self.id:
            if self.explicit_id:
                raise RoutesError("id cannot be empty", line=line)
            if self.domain is None:
                raise RoutesError("condition has no domain or id", line=line)
            implicit = _implicit_id(self.domain, self.proto, self.ssl, self.path_beg)
            object.__setattr__(self, "id", implicit)
        if isinstance(self.path_rem, bool) or not isinstance(self.path_rem, int):
            raise RoutesError("path_rem must be an int", line=line)
        for name in ("id", "path_beg", "prefix", "sig_iss", "sig_key", "as_host", "replace_beg"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise RoutesError(f"{name} must be a str, not {type(value).__name__}", line=line)
            if value is not None and ("\n" in value or "\r" in value):
                raise RoutesError(f"{name} cannot hold a line break", line=line)
        if self.path_rem < 0:
            raise RoutesError("path_rem must not be negative", line=line)
        if self.replace_beg is not None and self.path_rem != len(self.path_beg or ""):
            raise RoutesError(
                "replace_beg replaces path_beg: path_rem must be its length", line=line
            )
        for name in ("sig_iss", "sig_key", "as_host"):
            if getattr(self, name) == "":
                raise RoutesError(f"{name} must be None or non-empty", line=line)
        if self.as_host is not None:
            _split_host_port(self.as_host, "as_host", line, port_required=False)
        for name, value in self.headers:
            if not _TOKEN.fullmatch(name):
                raise RoutesError(f"header name {name!r} is not a valid token", line=line)
            if value and (not _is_clean(value) or value.startswith(" ")):
                raise RoutesError(
                    f"header {name} value must not start with a space or hold control characters",
                    line=line,
                )
        if self.sig_key is not None and not self.sig_key.startswith("file:"):
            try:
                parse_key_spec(self.sig_key)
            except LocalProtocolError as exc:
                raise RoutesError(f"sig_key: {exc.msg}", line=line) from None

    def matches(self, path: str, proto: Proto, ssl: bool) -> bool:
        """Whether this route's condition (proto, ssl, path_beg; not the domain) fits a request."""
        return (
            (self.proto is None or self.proto == proto)
            and (self.ssl is None or self.ssl == ssl)
            and (self.path_beg is None or path.startswith(self.path_beg))
        )

    def rewrite_path(self, path: str) -> str:
        """The origin request path: `path_rem` leading characters dropped, `replace_beg` prepended.

        `replace_beg` replaces the matched `path_beg` (`path_rem` is then `len(path_beg)`).
        """
        if self.path_rem:
            path = path[self.path_rem :]
        if self.replace_beg:
            path = self.replace_beg + path
        return path

    @property
    def _specificity(self) -> tuple[bool, int, bool]:
        return (self.proto is not None, len(self.path_beg or ""), self.ssl is not None)

    @property
    def _condition(self) -> tuple[str | None, Proto | None, bool | None, str | None]:
        return (self._key, self.proto, self.ssl, self.path_beg)


@dataclass(frozen=True, slots=True)
class RouteWarning:
    """Something in a routes file that loaded but deserves the operator's attention."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


# --- the line tokenizer ------------------------------------------------------------------------


@dataclass(slots=True)
class _Section:
    value: str
    props: list[tuple[str, str]]


def _read_quoted(line: str, start: int, out: list[str], lineno: int) -> int:
    """Decode the quoted run whose opening quote is at `start`; return the index after it.

    The closing-quote position is searched again only once an escaped quote has been passed, so
    a long run of escapes is still read in linear time.
    """
    at, length = start + 1, len(line)
    close = line.find('"', at)
    while True:
        if close != -1 and close < at:
            close = line.find('"', at)
        slash = line.find("\\", at, length if close == -1 else close)
        if slash == -1:
            if close == -1:
                raise RoutesError("unterminated quoted string", line=lineno)
            out.append(line[at:close])
            return close + 1
        out.append(line[at:slash])
        escaped = line[slash + 1 : slash + 2]
        if not escaped:
            raise RoutesError("unterminated quoted string", line=lineno)
        if escaped not in ('"', "\\"):
            raise RoutesError(
                f"invalid escape '\\{escaped}' in quoted string (only \\\" and \\\\)",
                line=lineno,
            )
        out.append(escaped)
        at = slash + 2


def _split_sections(line: str, lineno: int = 0) -> list[_Section]:
    """Split a routes line into sections, exactly as Pushpin's RoutesFile::parseLine does.

    A section's first token is its value, unless that token contains `=`: then the value is
    empty and the token is read again as the first prop (so `id=chat app:80` is a condition
    with an empty domain).
    """
    sections: list[_Section] = []
    index, length = 0, len(line)
    reading_prop = False
    while True:
        if not reading_prop:
            while index < length and line[index] in " \t":
                index += 1
            if index >= length or line[index] == "#":
                return sections
        start = index
        parts: list[str] = []
        while True:
            match = _SPECIAL.search(line, index)
            at = match.start() if match else length
            parts.append(line[index:at])
            if at < length and line[at] == '"':
                index = _read_quoted(line, at, parts, lineno)
                continue
            break
        part = "".join(parts)
        if not reading_prop:
            if "=" in part:
                sections.append(_Section("", []))
                index, reading_prop = start, True
                continue
            sections.append(_Section(part, []))
        else:
            if not part:
                raise RoutesError("expecting prop", line=lineno)
            name, _, value = part.partition("=")
            if not name:
                raise RoutesError("empty prop name", line=lineno)
            sections[-1].props.append((name, value))
        if at < length and line[at] == ",":
            index, reading_prop = at + 1, True
        else:
            index, reading_prop = at, False


# --- lines to routes ---------------------------------------------------------------------------


class _Options:
    """A section's props, checked against what the section accepts and consumed by name."""

    def __init__(
        self,
        props: list[tuple[str, str]],
        *,
        flags: frozenset[str],
        values: frozenset[str],
        ignored: frozenset[str],
        where: str,
        lineno: int,
    ) -> None:
        self._lineno = lineno
        self._values: dict[str, list[str]] = {}
        self.ignored: list[str] = []
        for name, value in props:
            if name in ignored:
                self.ignored.append(name)
            elif name not in flags and name not in values:
                raise RoutesError(f"unknown {where} option {name!r}", line=lineno)
            elif name in flags and value:
                raise RoutesError(f"{where} option {name!r} takes no value", line=lineno)
            elif name in self._values and name not in _REPEATABLE:
                raise RoutesError(f"{where} option {name!r} given more than once", line=lineno)
            self._values.setdefault(name, []).append(value)

    def flag(self, name: str) -> bool:
        return name in self._values

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return None if values is None else values[0]

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name, [])


def _split_host_port(text: str, what: str, lineno: int, *, port_required: bool) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = (text[1:end], text[end + 1 :]) if end != -1 else ("", text)
        if not host or _ipv6(host) is None:
            raise RoutesError(f"{what} {text!r}: bad IPv6 address", line=lineno)
        if not rest and not port_required:
            return host, 0
        if not rest.startswith(":"):
            raise RoutesError(f"{what} bad format {text!r} (expected [ipv6]:port)", line=lineno)
        sport = rest[1:]
    else:
        host, colon, sport = text.partition(":")
        if not host or (not colon and port_required):
            raise RoutesError(f"{what} bad format {text!r} (expected host:port)", line=lineno)
        _check_host(host, what, lineno)
        if not colon:
            return host, 0
    if not _PORT.fullmatch(sport) or not 1 <= int(sport) <= 65535:
        raise RoutesError(f"{what} invalid port in {text!r}", line=lineno)
    return host, int(sport)


def _parse_target(section: _Section, lineno: int) -> tuple[Target, list[str]]:
    opts = _Options(
        section.props,
        flags=_TARGET_FLAGS,
        values=frozenset({"host", "sub"}),
        ignored=IGNORED_TARGET_OPTIONS,
        where="target",
        lineno=lineno,
    )
    value = section.value
    if value.startswith(("zhttp/", "zhttpreq/")):
        raise RoutesError(f"target {value!r}: zhttp targets are not supported", line=lineno)
    if value == "test":
        host, port, kind = "test", 0, "test"
    else:
        host, port = _split_host_port(value, "target", lineno, port_required=True)
        kind = "net"
    host_header = opts.get("host")
    if host_header is not None and not _is_clean(host_header, allow_space=False):
        raise RoutesError(f"target host= value {host_header!r} is invalid", line=lineno)
    target = Target(
        host,
        port,
        ssl=opts.flag("ssl"),
        over_http=opts.flag("over_http"),
        untrusted=opts.flag("untrusted"),
        insecure=opts.flag("insecure"),
        host_header=host_header,
        # Pushpin skips empty sub= values.
        sub=tuple(channel for channel in opts.get_all("sub") if channel),
        one_event=opts.flag("one_event"),
        trust_connect_host=opts.flag("trust_connect_host"),
        kind="test" if kind == "test" else "net",
    )
    return target, opts.ignored


def _parse_header(text: str, lineno: int) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name:
        raise RoutesError("header must use format 'name:value'", line=lineno)
    return name, value.lstrip(" ")


def _parse_route(sections: list[_Section], lineno: int) -> Route:
    condition = sections[0]
    opts = _Options(
        condition.props,
        flags=_CONDITION_FLAGS,
        values=_CONDITION_VALUES,
        ignored=IGNORED_CONDITION_OPTIONS,
        where="condition",
        lineno=lineno,
    )
    proto = opts.get("proto")
    if proto not in (None, "http", "ws"):
        raise RoutesError("proto must be set to 'http' or 'ws'", line=lineno)
    ssl = opts.get("ssl")
    if ssl not in (None, "yes", "no"):
        raise RoutesError("ssl must be set to 'yes' or 'no'", line=lineno)
    path_beg = opts.get("path_beg")
    path_rem = opts.get("path_rem")
    replace_beg = opts.get("replace_beg")
    if path_rem is not None:
        if replace_beg is not None:
            raise RoutesError("path_rem and replace_beg cannot be combined", line=lineno)
        if not _SMALL_INT.fullmatch(path_rem):
            raise RoutesError("path_rem must be a non-negative integer", line=lineno)
    elif replace_beg is not None:
        # Pushpin: replace_beg removes what path_beg matched, then prepends its value.
        path_rem = str(len(path_beg or ""))
    jsonp_mode = opts.get("jsonp_mode")
    if jsonp_mode not in (None, "basic", "extended"):
        raise RoutesError("jsonp_mode must be set to 'basic' or 'extended'", line=lineno)
    route_id = opts.get("id")
    headers = tuple(_parse_header(text, lineno) for text in opts.get_all("header"))
    ignored = opts.ignored
    targets = []
    for section in sections[1:]:
        target, target_ignored = _parse_target(section, lineno)
        targets.append(target)
        ignored.extend(target_ignored)
    return Route(
        domain=condition.value or None,
        targets=tuple(targets),
        id=route_id or "",
        explicit_id=route_id is not None,
        proto="http" if proto == "http" else "ws" if proto == "ws" else None,
        ssl=None if ssl is None else ssl == "yes",
        path_beg=path_beg,
        prefix=opts.get("prefix") or "",
        # An empty value means "not set", as in Pushpin.
        sig_iss=opts.get("sig_iss") or None,
        sig_key=opts.get("sig_key") or None,
        as_host=opts.get("as_host") or None,
        path_rem=int(path_rem or 0),
        replace_beg=replace_beg,
        headers=headers,
        debug=opts.flag("debug"),
        no_grip=opts.flag("no_grip"),
        aco=opts.flag("aco"),
        orig_headers=opts.flag("orig_headers"),
        ignored_options=tuple(ignored),
        line=lineno,
    )


def parse_route_line(line: str, *, lineno: int = 0) -> Route | None:
    """Parse one routes-file line (or `--route` value); `None` for a blank or comment line.

    Raises `RoutesError` (its `line` is `lineno`) for a line that is not a valid route: syntax
    (quotes, empty props), no target, unknown or repeated options, bad values (proto, ssl, ports,
    integers, headers, keys), an empty condition without `id`.
    """
    if not isinstance(line, str):
        raise RoutesError(f"a route line must be a str, not {type(line).__name__}", line=lineno)
    sections = _split_sections(line, lineno)
    if not sections:
        return None
    if len(sections) < 2:
        raise RoutesError("must specify condition and at least one target", line=lineno)
    return _parse_route(sections, lineno)


# --- the table ---------------------------------------------------------------------------------


class RouteTable:
    """The routes in effect: lookup by request (`match`) and by id (`by_id`). Immutable.

    Built from `Route` values (`RouteTable(routes)`), from routes-file text (`parse_routes`) or
    from `--route` options (`RouteTable.from_lines`). A route whose condition repeats an earlier
    one is skipped with an entry in `warnings` (Pushpin's behaviour); options that were accepted
    but are not implemented are listed there too. Raises `RoutesError` for a duplicate route id.
    """

    __slots__ = ("_by_domain", "_by_id", "_routes", "_warnings", "_wildcard")

    def __init__(
        self, routes: Iterable[Route] = (), *, warnings: Iterable[RouteWarning] = ()
    ) -> None:
        kept: list[Route] = []
        notes = list(warnings)
        seen: dict[tuple[str | None, Proto | None, bool | None, str | None], Route] = {}
        by_id: dict[str, Route] = {}
        by_domain: dict[str | None, list[Route]] = {}
        for route in routes:
            if not isinstance(route, Route):
                raise LocalProtocolError(f"RouteTable takes Route values, not {route!r}")
            notes.extend(
                RouteWarning(route.line, f"option {name!r} is not supported; ignored")
                for name in route.ignored_options
            )
            if route.domain is not None:
                first = seen.get(route._condition)
                if first is not None:
                    notes.append(
                        RouteWarning(
                            route.line,
                            f"skipping duplicate condition (same as line {first.line})",
                        )
                    )
                    continue
            if route.id in by_id:
                raise RoutesError(
                    f"duplicate route id {route.id!r} (first on line {by_id[route.id].line})",
                    line=route.line,
                )
            by_id[route.id] = route
            if route.domain is not None:
                seen[route._condition] = route
                by_domain.setdefault(route._key, []).append(route)
            kept.append(route)
        self._routes = tuple(kept)
        self._warnings = tuple(notes)
        self._by_id = by_id
        self._by_domain = {
            key: tuple(sorted(rules, key=lambda r: r._specificity, reverse=True))
            for key, rules in by_domain.items()
        }
        self._wildcard = self._by_domain.pop(None, ())

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> RouteTable:
        """A table from `--route` values; each line's number is its 1-based position."""
        routes = []
        for lineno, line in enumerate(lines, start=1):
            route = parse_route_line(line, lineno=lineno)
            if route is not None:
                routes.append(route)
        return cls(routes)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes in effect, in file order (duplicate conditions left out)."""
        return self._routes

    @property
    def warnings(self) -> tuple[RouteWarning, ...]:
        return self._warnings

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes)

    def match(
        self, host: str, path: str, *, proto: Proto = "http", ssl: bool = False
    ) -> Route | None:
        """The route for a request, or None (Pushpin answers 502 then).

        `host` is the request's host as the client sent it (`Host` header or URI authority; case,
        port, IPv6 brackets and a trailing dot do not matter). `path` is the request path, still
        percent-encoded, without the query. `proto` is `"ws"` for WebSocket requests; `ssl` says
        whether the client connection is TLS. Raises `LocalProtocolError` for bad arguments.
        """
        if not isinstance(host, str) or not isinstance(path, str):
            raise LocalProtocolError("match needs str host and path")
        if proto not in ("http", "ws"):
            raise LocalProtocolError(f"proto must be 'http' or 'ws', not {proto!r}")
        rules = self._by_domain.get(_normalize_host(host), self._wildcard)
        for route in rules:
            if route.matches(path, proto, bool(ssl)):
                return route
        return None

    def by_id(self, route_id: str) -> Route | None:
        """The route with this id (explicit or implicit), or None."""
        return self._by_id.get(route_id)


def parse_routes(text: str) -> RouteTable:
    """Parse a whole routes file (the adapter reads it; the core does no I/O).

    Lines are split on `\\n` (a trailing `\\r` is dropped, and a leading byte-order mark);
    line numbers are 1-based. Raises `RoutesError` for the first invalid line, so a reload can
    keep the previous table rather than load half a file.
    """
    if not isinstance(text, str):
        raise RoutesError(f"routes text must be a str, not {type(text).__name__}")
    text = text.removeprefix("\ufeff")
    return RouteTable.from_lines(line.removesuffix("\r") for line in text.split("\n"))


# --- routes back to lines ----------------------------------------------------------------------


def _quote(value: str) -> str:
    if value and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prop(name: str, value: str) -> str:
    return f"{name}={_quote(value)}"


def format_route_line(route: Route) -> str:
    """The routes-file line for a route; `parse_route_line` gives back an equal route.

    Raises `LocalProtocolError` when given something other than a `Route`.
    """
    if not isinstance(route, Route):
        raise LocalProtocolError(f"format_route_line needs a Route, not {route!r}")
    props: list[str] = []
    if route.explicit_id:
        props.append(_prop("id", route.id))
    if route.proto is not None:
        props.append(f"proto={route.proto}")
    if route.ssl is not None:
        props.append("ssl=yes" if route.ssl else "ssl=no")
    for name in ("path_beg", "sig_iss", "sig_key", "as_host"):
        value = getattr(route, name)
        if value is not None:
            props.append(_prop(name, value))
    if route.prefix:
        props.append(_prop("prefix", route.prefix))
    if route.replace_beg is not None:
        props.append(_prop("replace_beg", route.replace_beg))
    elif route.path_rem:
        props.append(f"path_rem={route.path_rem}")
    props.extend(_prop("header", f"{name}:{value}") for name, value in route.headers)
    props.extend(name for name in sorted(_CONDITION_FLAGS) if getattr(route, name))
    condition = "*" if route.domain == "*" else (route.domain or "")
    sections = [",".join([condition, *props]) if condition else ",".join(props)]
    for target in route.targets:
        parts = [target.authority]
        parts.extend(name for name in sorted(_TARGET_FLAGS) if getattr(target, name))
        if target.host_header is not None:
            parts.append(_prop("host", target.host_header))
        parts.extend(_prop("sub", channel) for channel in target.sub)
        sections.append(",".join(parts))
    return " ".join(sections)
