"""Configuration of `gripcore serve`: every option, its default, and how the sources combine.

Strategy:

* **One table names every option once.** `OPTIONS` holds, per `Config` field, its long flag (which
  is also its config-file key), its environment variable (`GRIPCORE_` + the flag in upper case
  with `_`), a help line, a parser for text and TOML values and a checker for typed values. The
  command line builds argparse and `--help` from it; `load_config` reads every source through it;
  `Config` checks its fields with the same checkers. Nothing about an option is written twice.
* **Sources are layered**, lowest first: the defaults, the config file (TOML), the environment,
  the command-line flags. A higher source replaces a lower one's value, lists included
  (`--listen` given on the command line replaces the file's `listen`, it does not extend it).
* **A value is judged where it enters**, so an error names the option and where it came from:
  `option --max-connections: ...`, `environment variable GRIPCORE_HISTORY: ...`,
  `gripcore.toml:12: max-connections: ...`, or `Config.max_connections: ...` for a hand-built
  `Config`. Typos do not pass silently: an unknown config-file key is an error that lists the
  known names. An unknown `GRIPCORE_*` variable is only a warning (passed to the caller's
  `on_warning`), because the environment is not ours alone: Kubernetes gives every pod
  `GRIPCORE_PORT`, `GRIPCORE_SERVICE_HOST`, `GRIPCORE_PORT_7999_TCP...` when a Service is named
  `gripcore`, and a pod must not exit over them.
* **Sans-IO.** Nothing here reads a file or the process environment: callers pass the file's text
  and an `environ` mapping. Relative paths in a config file (`routes`, `sig-key = "file:..."`) are
  resolved against the file's directory, as Pushpin resolves them against its config directory;
  that is string work on the name the caller passed.

Every error is a `ConfigError`, a `LocalProtocolError` (a misconfiguration on our side).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os.path
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from ._engine import DEFAULT_ENGINE_LINGER, parse_engine_url
from ._errors import LocalProtocolError
from ._hub import DEFAULT_MAX_CHANNELS_PER_SUBSCRIBER, DEFAULT_MAX_OUTPUT_BUFFER
from ._items import DEFAULT_MAX_CONTENT_SIZE
from ._sequencer import DEFAULT_ID_CACHE_TTL, DEFAULT_MESSAGE_WAIT

__all__ = [
    "ADAPTERS",
    "DEFAULT_CLIENT_HEADER_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_LINGER_TIMEOUT",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_PUBLISH_BODY",
    "DEFAULT_MAX_PUBLISH_CONNECTIONS",
    "DEFAULT_MAX_REQUEST_BODY",
    "DEFAULT_MAX_REQUEST_HEADER_SIZE",
    "DEFAULT_ORIGIN_CONNECT_TIMEOUT",
    "DEFAULT_ORIGIN_RESPONSE_TIMEOUT",
    "DEFAULT_PUBLISH_LISTEN",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_SIG_KEY",
    "ENV_PREFIX",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "OPTIONS",
    "SLOW_CONSUMER_POLICIES",
    "Config",
    "ConfigError",
    "Option",
    "dump_config",
    "format_listen",
    "load_config",
    "parse_listen",
]

ENV_PREFIX: Final = "GRIPCORE_"

# Pushpin's runner http_port: clients connect to 7999 on every interface.
DEFAULT_LISTEN: Final = (("0.0.0.0", 7999),)
# Pushpin's push_in_http_addr/port: the publish API stays on loopback unless asked otherwise,
# because it is unauthenticated by default.
DEFAULT_PUBLISH_LISTEN: Final = ("127.0.0.1", 5561)

# Most worker processes (--workers): each is a whole copy of the proxy with its own broker and
# one relay stream; far more than any machine's cores is a typo, not a deployment.
MAX_WORKERS: Final = 256
# Pushpin's client_maxconn: past it new clients wait in the listen backlog rather than each
# taking a descriptor and buffers.
DEFAULT_MAX_CONNECTIONS: Final = 50_000
# Pushpin's client_buffer_size: a whole request head must fit, else 431.
DEFAULT_MAX_REQUEST_HEADER_SIZE: Final = 8192
# Pushpin buffers at most 100,000 request-body bytes so it can replay them if the origin answers
# with a GRIP hold; larger bodies cannot be held.
DEFAULT_MAX_REQUEST_BODY: Final = 100_000
# Pushpin's push_in_http_max_body_size: one publish request, many items.
DEFAULT_MAX_PUBLISH_BODY: Final = 1_000_000
# Connect to the origin quickly or fail over / answer 502; five seconds covers a slow handshake.
DEFAULT_ORIGIN_CONNECT_TIMEOUT: Final = 5.0
# The origin must begin its answer within a minute. Holds do not count: once the origin has
# answered with a hold instruction, the proxy holds the client, not the origin.
DEFAULT_ORIGIN_RESPONSE_TIMEOUT: Final = 60.0
# A request head must arrive within a minute, and then its body within another, else 408 and
# close: nginx's client_header_timeout / client_body_timeout. A socket that trickles bytes holds
# a descriptor and a --max-connections slot; a minute is generous for any real client.
DEFAULT_CLIENT_HEADER_TIMEOUT: Final = 60.0
# An idle keep-alive connection (between requests) is closed after 75 s: nginx's
# keepalive_timeout, longer than browsers keep idle sockets (Chrome 300 s is the exception; it
# reconnects). Held connections (streams, long-polls, WebSockets) are never idle-closed.
DEFAULT_KEEPALIVE_TIMEOUT: Final = 75.0
# After an early error answer (413, 431, 400) the proxy reads and discards what the client is
# still sending for at most this long before closing, so the client can read the answer instead
# of a reset: nginx's lingering_timeout (5 s).
DEFAULT_LINGER_TIMEOUT: Final = 5.0
# Publish API connections at once: publishers are few and short-lived; the cap keeps a flood of
# slow publish sockets from taking the descriptors the client side needs.
DEFAULT_MAX_PUBLISH_CONNECTIONS: Final = 128
# Pushpin's connmgr shutdown timeout: time for held clients to be told and for writes to drain.
DEFAULT_SHUTDOWN_GRACE: Final = 10.0
# Pushpin's shipped config signs every origin request (sig_key=changeme, sig_iss=pushpin), and
# origins (django-grip, serve-grip, gripcontrol) decide "I am behind a GRIP proxy" from a valid
# Grip-Sig: a drop-in must do the same. The key is well known, so `serve` warns about it.
DEFAULT_SIG_KEY: Final = "changeme"
# The spelling that turns signing off (as does the empty string).
SIG_KEY_OFF: Final = "none"

LOG_LEVELS: Final = ("error", "warning", "info", "debug")
LOG_FORMATS: Final = ("text", "json")
ADAPTERS: Final = ("asyncio", "gevent")
SLOW_CONSUMER_POLICIES: Final = ("close", "drop-oldest")

# Pushpin's numeric log levels (runner log_level: 0 error ... 3 debug) and Python's "warn".
_LOG_LEVEL_ALIASES: Final = {
    "0": "error",
    "1": "warning",
    "2": "info",
    "3": "debug",
    "warn": "warning",
}
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MAX_HOSTNAME = 253  # RFC 1035 section 2.3.4: a domain name is at most 255 octets on the wire
_PORT_DIGITS = re.compile(r"[0-9]{1,5}")
_HIGHEST_PORT = 65_535
_INTEGER = re.compile(r"[+-]?[0-9][0-9_]*")
# No option is near 10**30; the cap also keeps int() far from its 4,300-digit refusal.
_MAX_INTEGER_DIGITS = 30
# Control characters other than tab would break a log line, a header or a routes line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# What a TOML basic string must escape (spec: control characters other than tab may not appear
# raw; escaping tab too keeps the output plain).
_TOML_ESCAPE = re.compile(r"[\x00-\x1f\x7f]")
_QUOTE_LIMIT = 60  # values echoed in error messages are cut here so a message stays one line
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TRUE: Final = frozenset(("1", "true", "yes", "on"))
_FALSE: Final = frozenset(("0", "false", "no", "off"))
# GRIPCORE_* variables that are not options: the config file's path (read by the command line)
# and the build/test switches of the compiled hot path (read by `_speedups`).
_OTHER_ENV: Final = frozenset(
    (
        "GRIPCORE_CONFIG",
        "GRIPCORE_PUSHPIN_CONFIG",
        "GRIPCORE_NO_EXTENSIONS",
        "GRIPCORE_REQUIRE_EXTENSIONS",
    )
)
# A top-level `key =` line or `[key]` table header of a TOML document (bare, "basic" or 'literal'
# key).
_TOML_KEY_LINE = re.compile(
    r"""[ \t]*\[?[ \t]*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|([A-Za-z0-9_-]+))[ \t]*[=\]]"""
)


class ConfigError(LocalProtocolError):
    """An option has an invalid value, or a source names an option that does not exist.

    `source` says where the value came from (`option --listen`, `environment variable
    GRIPCORE_LISTEN`, `gripcore.toml:3: listen`, `Config.listen`); `reason` is what was wrong.
    The message is `"<source>: <reason>"`.
    """

    def __init__(self, reason: str, *, source: str = "") -> None:
        super().__init__(f"{source}: {reason}" if source else reason)
        self.source = source
        self.reason = reason


class _Invalid(Exception):
    """A value is wrong; the caller adds which option and which source."""


def _quote(value: str) -> str:
    if len(value) > _QUOTE_LIMIT:
        value = value[: _QUOTE_LIMIT - 3] + "..."
    return repr(value)


def _kind(value: object) -> str:
    """How an unexpected value is named in a message (TOML and Python names agree enough)."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for cls, name in names.items():
        if type(value) is cls:
            return name
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _is_unicode(text: str) -> bool:
    """False when `text` holds a lone surrogate (undecodable environment bytes), which no config
    file can carry and no header or path API accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- listen addresses ---------------------------------------------------------------------------


def _check_host(host: object) -> str:
    if not isinstance(host, str):
        raise _Invalid(f"host must be a string, got {_kind(host)}")
    if not host:
        raise _Invalid("the host is empty")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return host
    labels = host.removesuffix(".").split(".")
    if (
        len(host) > _MAX_HOSTNAME
        or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels)
        or all(label.isdigit() for label in labels)  # a mistyped IPv4 address, not a name
    ):
        raise _Invalid(f"{_quote(host)} is not an IP address or a host name")
    return host


def _check_port(port: object) -> int:
    if not isinstance(port, int) or isinstance(port, bool):
        raise _Invalid(f"port must be an integer, got {_kind(port)}")
    if not 0 <= port <= _HIGHEST_PORT:
        raise _Invalid(f"port {port} is out of range (0-{_HIGHEST_PORT})")
    return port


def _parse_port(text: str) -> int:
    if not _PORT_DIGITS.fullmatch(text):
        raise _Invalid(f"port {_quote(text)} is not a number from 0 to {_HIGHEST_PORT}")
    return _check_port(int(text))


def _parse_listen(value: str, default_host: str) -> tuple[str, int]:
    text = value.strip()
    if not text:
        raise _Invalid("the address is empty, expected [HOST:]PORT")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise _Invalid(f"{_quote(text)} has '[' without ']'")
        if not rest.startswith(":"):
            raise _Invalid(f"{_quote(text)} needs a port after ']', as in [::1]:7999")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"{_quote(host)} in brackets is not an IPv6 address") from None
        return host, _parse_port(rest[1:])
    host, colon, port = text.rpartition(":")
    if not colon:
        return default_host, _parse_port(text)
    if ":" in host:
        raise _Invalid(f"{_quote(text)}: write an IPv6 address in brackets, as in [::1]:7999")
    return _check_host(host), _parse_port(port)


def parse_listen(value: str, default_host: str) -> tuple[str, int]:
    """Parse a `[HOST:]PORT` listen address into `(host, port)`.

    `7999` gives `(default_host, 7999)`; `127.0.0.1:8000`, `localhost:8000` and `[::1]:7999`
    (IPv6 in brackets, returned without them) give their host. Port 0 asks the system for a
    free port. Raises `ConfigError` naming what is wrong.
    """
    try:
        return _parse_listen(value, default_host)
    except _Invalid as exc:
        raise ConfigError(str(exc)) from None


def format_listen(address: tuple[str, int]) -> str:
    """`(host, port)` as `HOST:PORT` (`[HOST]:PORT` for IPv6), which `parse_listen` reads back."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_address(value: object) -> tuple[str, int]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise _Invalid(f"must be a (host, port) pair, got {_kind(value)}")
    return _check_host(value[0]), _check_port(value[1])


def _check_optional_addresses(value: object) -> tuple[tuple[str, int], ...]:
    if isinstance(value, tuple | list) and not value:
        return ()
    return _check_addresses(value)


def _check_addresses(value: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, tuple | list):
        raise _Invalid(f"must be a list of (host, port) pairs, got {_kind(value)}")
    if not value:
        raise _Invalid("needs at least one address")
    addresses = tuple(_check_address(item) for item in value)
    seen: set[tuple[str, int]] = set()
    for address in addresses:
        if address in seen and address[1] != 0:
            raise _Invalid(f"{format_listen(address)} is listed twice")
        seen.add(address)
    return addresses


def _parse_address(default_host: str) -> Callable[[object], tuple[str, int]]:
    def parse(raw: object) -> tuple[str, int]:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return default_host, _check_port(raw)
        if not isinstance(raw, str):
            raise _Invalid(f"must be a [HOST:]PORT string, got {_kind(raw)}")
        return _parse_listen(raw, default_host)

    return parse


def _parse_addresses(raw: object) -> tuple[tuple[str, int], ...]:
    """A comma-separated string, a port number, or a list of either (from TOML or repeated flags)."""
    parse_one = _parse_address(DEFAULT_LISTEN[0][0])
    items = raw if isinstance(raw, list | tuple) else [raw]
    addresses: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, str):
            addresses.extend(parse_one(part) for part in item.split(","))
        else:
            addresses.append(parse_one(item))
    return tuple(addresses)


# --- scalar kinds -------------------------------------------------------------------------------


def _check_text(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {_kind(value)}")
    if not _is_unicode(value):
        raise _Invalid("must be valid UTF-8 text")
    return value


def _check_name(value: object) -> str:
    """A non-empty single-line string (a path, an issuer)."""
    text = _check_text(value)
    if not text:
        raise _Invalid("must not be empty")
    if _CONTROL.search(text):
        raise _Invalid("must not contain control characters")
    return text


def _check_optional_name(value: object) -> str | None:
    return None if value is None else _check_name(value)


def _parse_optional_text(raw: object) -> str | None:
    """A string; the empty string means "not set" (so `--sig-key ''` turns signing off)."""
    text = _check_text(raw)
    return text or None


def _parse_sig_key(raw: object) -> str | None:
    """A key spec; `none` or the empty string turn signing off."""
    text = _parse_optional_text(raw)
    return None if text is None or text.lower() == SIG_KEY_OFF else text


def _check_secret(value: object) -> str | None:
    """A key spec; never echoed in messages."""
    if value is None:
        return None
    text = _check_text(value)
    if not text:
        raise _Invalid("must not be empty (leave it unset instead)")
    if _CONTROL.search(text):
        raise _Invalid("must not contain control characters")
    return text


def _check_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {_kind(value)}")
    return value


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Invalid(f"must be true or false (or 1/0, yes/no, on/off), got {_quote(raw)}")
    return _check_bool(raw)


def _check_int(minimum: int, maximum: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"must be an integer >= {minimum}, got {_kind(value)}")
        if value < minimum:
            raise _Invalid(f"must be an integer >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be an integer <= {maximum}, got {value}")
        return value

    return check


def _parse_int(raw: object) -> object:
    if isinstance(raw, str):
        text = raw.strip()
        if not _INTEGER.fullmatch(text) or len(text) > _MAX_INTEGER_DIGITS:
            raise _Invalid(f"must be an integer, got {_quote(raw)}")
        return int(text)
    return raw


def _check_float(
    minimum: float, *, exclusive: bool, what: str = "a number of seconds"
) -> Callable[[object], float]:
    bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"

    def check(value: object) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid(f"must be {what} {bound}, got {_kind(value)}")
        number = float(value)
        if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
            raise _Invalid(f"must be {what} {bound}, got {value!r}")
        return number

    return check


def _parse_rate(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            raise _Invalid(f"must be a number a second, got {_quote(raw)}") from None
    return raw


def _parse_float(raw: object) -> object:
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            raise _Invalid(f"must be a number of seconds, got {_quote(raw)}") from None
    return raw


def _check_choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            shown = _quote(value) if isinstance(value, str) else _kind(value)
            raise _Invalid(f"must be one of {', '.join(choices)}; got {shown}")
        return value

    return check


def _parse_lower(raw: object) -> object:
    return raw.strip().lower() if isinstance(raw, str) else raw


def _parse_log_level(raw: object) -> object:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    word = _parse_lower(raw)
    if isinstance(word, str):
        return _LOG_LEVEL_ALIASES.get(word, word)
    return word


def _check_engine(value: object) -> str:
    """`memory`, or a Redis URL: `redis://HOST[:PORT][/DB]` (`rediss://` for TLS),
    `redis+sentinel://HOST:PORT[,...]/MASTER_NAME[/DB]` or `redis+cluster://HOST:PORT[,...]`."""
    text = _check_name(value)
    if text == "memory":
        return text
    expected = (
        "must be 'memory' or a redis://HOST[:PORT][/DB] URL (or redis+sentinel://HOST:PORT"
        f"[,...]/MASTER_NAME[/DB], redis+cluster://HOST:PORT[,...]), got {_quote(text)}"
    )
    try:
        parse_engine_url(text)
    except LocalProtocolError:
        raise _Invalid(expected) from None
    return text


def _check_zmq_spec(value: object) -> str | None:
    """A ZeroMQ endpoint to bind, `tcp://HOST:PORT` or `ipc://PATH`, as Pushpin's specs."""
    if value is None:
        return None
    text = _check_name(value)
    if not text.startswith(("tcp://", "ipc://")) or len(text) <= len("tcp://"):
        raise _Invalid(f"must be a ZeroMQ tcp://HOST:PORT or ipc://PATH spec, got {_quote(text)}")
    return text


def _check_lines(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple | list):
        raise _Invalid(f"must be a list of route lines, got {_kind(value)}")
    lines: list[str] = []
    for line in value:
        text = _check_name(line)
        if not text.strip():
            raise _Invalid("a route line is blank")
        lines.append(text)
    return tuple(lines)


def _check_networks(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple | list):
        raise _Invalid(f"must be a list of addresses or networks, got {_kind(value)}")
    networks: list[str] = []
    for item in value:
        for text in _check_name(item).split(","):
            try:
                ipaddress.ip_network(text.strip(), strict=False)
            except ValueError:
                raise _Invalid(f"{text.strip()!r} is not an IP address or network") from None
            networks.append(text.strip())
    return tuple(networks)


def _check_link_hosts(value: object) -> tuple[str, ...]:
    if not isinstance(value, tuple | list):
        raise _Invalid(f"must be a list of HOST:PORT, got {_kind(value)}")
    hosts: list[str] = []
    for item in value:
        text = _check_name(item).strip()
        try:
            host, port = parse_listen(text, "")
        except ConfigError as exc:
            raise _Invalid(f"{text!r} is not HOST:PORT ({exc.reason})") from None
        if not host or port == 0:
            raise _Invalid(f"{text!r} is not HOST:PORT")
        hosts.append(text)
    return tuple(hosts)


def _parse_lines(raw: object) -> tuple[str, ...]:
    """Route lines: a string holding one or more lines, or a list of them. Blank lines and `#`
    comments are dropped, as in a routes file."""
    items = raw if isinstance(raw, list | tuple) else [raw]
    lines: list[str] = []
    for item in items:
        # Only CR and LF end a line: str.splitlines would also split on U+0085, U+2028 and more.
        for line in _LINE_BREAK.split(_check_text(item)):
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                lines.append(stripped)
    return tuple(lines)


def _same(raw: object) -> object:
    return raw


# --- the option table ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One `gripcore serve` option: its `Config` field, flag, environment variable and checks.

    `flag` is the long option without dashes and also the config-file key (`-` or `_` accepted).
    `parse` turns a text or TOML value into the field's type; `check` validates (and normalises)
    a typed value. Both raise the private `_Invalid`, which callers turn into `ConfigError`.
    """

    field: str
    flag: str
    metavar: str
    help: str
    parse: Callable[[object], object]
    check: Callable[[object], object]
    repeatable: bool = False
    secret: bool = False

    @property
    def env(self) -> str:
        """The environment variable: `GRIPCORE_` and the flag in upper case with `_`."""
        return ENV_PREFIX + self.flag.upper().replace("-", "_")

    def convert(self, raw: object) -> object:
        """`raw` (text or TOML value) as the field's checked value. Raises `_Invalid`."""
        return self.check(self.parse(raw))


def _limit(field: str, minimum: int, help: str) -> Option:
    return Option(field, field.replace("_", "-"), "N", help, _parse_int, _check_int(minimum))


def _seconds(field: str, help: str, *, exclusive: bool) -> Option:
    check = _check_float(0.0, exclusive=exclusive)
    return Option(field, field.replace("_", "-"), "SECONDS", help, _parse_float, check)


OPTIONS: Final[tuple[Option, ...]] = (
    Option(
        "listen",
        "listen",
        "[HOST:]PORT",
        "client-facing listener; repeat or separate with commas for several",
        _parse_addresses,
        _check_addresses,
        repeatable=True,
    ),
    Option(
        "tls_listen",
        "tls-listen",
        "[HOST:]PORT",
        "a TLS client listener (Pushpin's https_ports), repeatable; needs --tls-cert and --tls-key",
        _parse_addresses,
        _check_optional_addresses,
        repeatable=True,
    ),
    Option(
        "tls_cert",
        "tls-cert",
        "FILE",
        "PEM certificate (chain) of the TLS listeners; read again on SIGHUP",
        _parse_optional_text,
        _check_optional_name,
    ),
    Option(
        "tls_key",
        "tls-key",
        "FILE",
        "PEM private key of the TLS listeners; read again on SIGHUP",
        _parse_optional_text,
        _check_optional_name,
    ),
    Option(
        "publish_listen",
        "publish-listen",
        "[HOST:]PORT",
        "publish API listener (POST /publish/)",
        _parse_address(DEFAULT_PUBLISH_LISTEN[0]),
        _check_address,
    ),
    Option(
        "routes_file",
        "routes",
        "FILE",
        "Pushpin routes file, reloaded when it changes; ignored when inline routes are given",
        _parse_optional_text,
        _check_optional_name,
    ),
    Option(
        "routes",
        "route",
        "LINE",
        "a route in routes-file syntax, e.g. '* 127.0.0.1:8080,over_http'; repeatable; "
        "the environment variable takes one route per line",
        _parse_lines,
        _check_lines,
        repeatable=True,
    ),
    Option(
        "sig_key",
        "sig-key",
        "KEY",
        "Grip-Sig signing key: a secret, base64:SECRET, file:PATH (PEM for ES256/RS256), "
        "or none (no signing)",
        _parse_sig_key,
        _check_secret,
        secret=True,
    ),
    Option("sig_iss", "sig-iss", "ISS", "Grip-Sig issuer claim", _same, _check_name),
    Option(
        "upstream_key",
        "upstream-key",
        "KEY",
        "trust requests whose Grip-Sig is valid for this key (a GRIP proxy in front, as "
        "Pushpin's upstream_key): their Grip-* headers reach the origin and its GRIP answers "
        "go back unprocessed",
        _parse_optional_text,
        _check_secret,
        secret=True,
    ),
    Option(
        "publish_key",
        "publish-key",
        "KEY",
        "require this token on the publish API (Authorization: Bearer or Fastly-Key)",
        _parse_optional_text,
        _check_secret,
        secret=True,
    ),
    Option(
        "publish_iss",
        "publish-iss",
        "ISS",
        "issuer a JWT publish token (HS256, signed with --publish-key) must carry",
        _parse_optional_text,
        _check_optional_name,
    ),
    Option(
        "allow_link_host",
        "allow-link-host",
        "HOST:PORT",
        "a host Grip-Link next/gone links may also reach (repeatable)",
        _parse_lines,
        _check_link_hosts,
        repeatable=True,
    ),
    Option(
        "log_level",
        "log-level",
        "LEVEL",
        f"one of {', '.join(LOG_LEVELS)} (or Pushpin's 0-3)",
        _parse_log_level,
        _check_choice(LOG_LEVELS),
    ),
    Option(
        "log_format",
        "log-format",
        "FORMAT",
        "text (one line per record) or json (one JSON object per line, for log shippers)",
        _parse_lower,
        _check_choice(LOG_FORMATS),
    ),
    Option(
        "debug",
        "debug",
        "",
        "error details in responses, as Pushpin's debug mode",
        _parse_bool,
        _check_bool,
    ),
    Option(
        "allow_compression",
        "allow-compression",
        "",
        "offer permessage-deflate to WebSocket clients (RFC 7692): each published message is "
        "compressed once for all of them",
        _parse_bool,
        _check_bool,
    ),
    Option(
        "engine",
        "engine",
        "ENGINE",
        "memory, redis://HOST[:PORT][/DB], redis+sentinel://H:P[,...]/MASTER[/DB], "
        "redis+cluster://H:P[,...]",
        _same,
        _check_engine,
    ),
    _limit("history", 0, "items kept per channel for recovery (0: none, as Pushpin)"),
    _seconds(
        "engine_linger",
        "stay subscribed in Redis this long after a channel's last local subscriber left",
        exclusive=False,
    ),
    Option(
        "push_in_spec",
        "push-in-spec",
        "SPEC",
        "ZeroMQ PULL socket for published items, as Pushpin's push_in_spec (gripcore[zmq])",
        _parse_optional_text,
        _check_zmq_spec,
    ),
    Option(
        "push_in_sub_spec",
        "push-in-sub-spec",
        "SPEC",
        "ZeroMQ SUB socket for XPUB publishers, as Pushpin's push_in_sub_spec (gripcore[zmq])",
        _parse_optional_text,
        _check_zmq_spec,
    ),
    Option(
        "command_spec",
        "command-spec",
        "SPEC",
        "ZeroMQ socket answering get-zmq-uris, as Pushpin's command_spec (gripcore[zmq])",
        _parse_optional_text,
        _check_zmq_spec,
    ),
    Option(
        "adapter",
        "adapter",
        "NAME",
        f"I/O driver: {', '.join(ADAPTERS)}",
        _parse_lower,
        _check_choice(ADAPTERS),
    ),
    Option(
        "workers",
        "workers",
        "N",
        "processes sharing the client listeners (asyncio adapter)",
        _parse_int,
        _check_int(1, MAX_WORKERS),
    ),
    _limit(
        "max_connections",
        1,
        "most client connections at once (per worker; lowered to fit the descriptor limit)",
    ),
    _limit("max_publish_connections", 1, "most publish API connections at once"),
    _limit(
        "max_connections_per_ip",
        0,
        "most client connections from one address at once (0: no limit; beyond: 429)",
    ),
    Option(
        "new_connections_per_ip",
        "new-connections-per-ip",
        "N",
        "new client connections a second from one address (0: no limit; beyond: 429)",
        _parse_rate,
        _check_float(0.0, exclusive=False, what="a number a second"),
    ),
    Option(
        "trusted_proxy",
        "trusted-proxy",
        "NET",
        "a proxy in front (an address or network, repeatable): its X-Forwarded-For names "
        "the client the per-address limits count",
        _parse_lines,
        _check_networks,
        repeatable=True,
    ),
    _limit("max_request_header_size", 1, "largest client request head in bytes (else 431)"),
    _limit("max_request_body", 1, "largest client request body in bytes (buffered for GRIP)"),
    _limit("max_publish_body", 1, "largest publish request body in bytes (else 413)"),
    _limit("max_content_size", 1, "largest content of one published format in bytes (else 413)"),
    _limit("max_channels_per_connection", 1, "most channels one connection may subscribe to"),
    _limit("max_output_buffer", 1, "bytes that may wait for one slow client"),
    _seconds("id_cache_ttl", "dedup window for published ids (0: off)", exclusive=False),
    _seconds("message_wait", "longest wait for an out-of-order item", exclusive=False),
    _seconds("origin_connect_timeout", "origin connect timeout", exclusive=True),
    _seconds(
        "origin_response_timeout", "time for the origin to begin its response", exclusive=True
    ),
    _seconds(
        "client_header_timeout",
        "time for a request head, then for its body, to arrive on either listener, else 408",
        exclusive=True,
    ),
    _seconds(
        "keepalive_timeout",
        "idle time between requests before a connection is closed",
        exclusive=True,
    ),
    _seconds(
        "linger_timeout",
        "after an early error answer, how long to read and discard what the client still sends",
        exclusive=True,
    ),
    _seconds("shutdown_grace", "time to finish and close connections on stop", exclusive=False),
    Option(
        "slow_consumer_policy",
        "slow-consumer-policy",
        "POLICY",
        "what happens when a client's output buffer is full: " + ", ".join(SLOW_CONSUMER_POLICIES),
        _parse_lower,
        _check_choice(SLOW_CONSUMER_POLICIES),
    ),
)

_BY_FIELD: Final = {option.field: option for option in OPTIONS}
_BY_KEY: Final = {
    spelling: option
    for option in OPTIONS
    for spelling in (option.flag, option.flag.replace("-", "_"))
}
_BY_ENV: Final = {option.env: option for option in OPTIONS}


def _check_listeners(
    listen: tuple[tuple[str, int], ...], publish_listen: tuple[str, int], source: str
) -> None:
    """The publish API cannot share an address with a client listener (port 0 excepted)."""
    if publish_listen[1] != 0 and publish_listen in listen:
        raise ConfigError(
            f"{format_listen(publish_listen)} is also a client listener (listen)", source=source
        )


# --- the configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """Every option of `gripcore serve`, with its default. Checked when built.

    `routes` (inline route lines) win over `routes_file` when both are set, as Pushpin's
    `--route` overrides its routes file. `sig_key` None means off (its default
    is Pushpin's well-known `changeme`); `publish_key` None means off. Sizes are bytes,
    times are seconds.

    Raises `ConfigError` (source `Config.<field>`) for a value of the wrong type or range; lists
    are normalised to tuples and whole-number times to floats.
    """

    listen: tuple[tuple[str, int], ...] = DEFAULT_LISTEN
    tls_listen: tuple[tuple[str, int], ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None
    publish_listen: tuple[str, int] = DEFAULT_PUBLISH_LISTEN
    routes_file: str | None = None
    routes: tuple[str, ...] = ()
    sig_key: str | None = DEFAULT_SIG_KEY
    sig_iss: str = "pushpin"
    upstream_key: str | None = None
    publish_key: str | None = None
    publish_iss: str | None = None
    allow_link_host: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    debug: bool = False
    allow_compression: bool = False
    engine: str = "memory"
    history: int = 0
    engine_linger: float = DEFAULT_ENGINE_LINGER
    push_in_spec: str | None = None
    push_in_sub_spec: str | None = None
    command_spec: str | None = None
    adapter: str = "asyncio"
    workers: int = 1
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_publish_connections: int = DEFAULT_MAX_PUBLISH_CONNECTIONS
    max_connections_per_ip: int = 0
    new_connections_per_ip: float = 0.0
    trusted_proxy: tuple[str, ...] = ()
    max_request_header_size: int = DEFAULT_MAX_REQUEST_HEADER_SIZE
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY
    max_publish_body: int = DEFAULT_MAX_PUBLISH_BODY
    max_content_size: int = DEFAULT_MAX_CONTENT_SIZE
    max_channels_per_connection: int = DEFAULT_MAX_CHANNELS_PER_SUBSCRIBER
    max_output_buffer: int = DEFAULT_MAX_OUTPUT_BUFFER
    id_cache_ttl: float = DEFAULT_ID_CACHE_TTL
    message_wait: float = DEFAULT_MESSAGE_WAIT
    origin_connect_timeout: float = DEFAULT_ORIGIN_CONNECT_TIMEOUT
    origin_response_timeout: float = DEFAULT_ORIGIN_RESPONSE_TIMEOUT
    client_header_timeout: float = DEFAULT_CLIENT_HEADER_TIMEOUT
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    linger_timeout: float = DEFAULT_LINGER_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    slow_consumer_policy: str = "close"

    def __post_init__(self) -> None:
        for option in OPTIONS:
            try:
                value = option.check(getattr(self, option.field))
            except _Invalid as exc:
                raise ConfigError(str(exc), source=f"Config.{option.field}") from None
            object.__setattr__(self, option.field, value)
        _check_listeners(self.listen, self.publish_listen, "Config.publish_listen")
        if self.tls_listen and not (self.tls_cert and self.tls_key):
            raise ConfigError("needs --tls-cert and --tls-key", source="Config.tls_listen")
        for address in self.tls_listen:
            if address[1] != 0 and address in (*self.listen, self.publish_listen):
                raise ConfigError(
                    f"{format_listen(address)} is also a plain listener", source="Config.tls_listen"
                )


# --- sources -------------------------------------------------------------------------------------


def _key_lines(text: str) -> dict[str, int]:
    """The 1-based line of each key's first `key =` line or `[key]` header: tomllib keeps no
    positions, and a document it accepted has its top-level keys on such lines before any
    table."""
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        match = _TOML_KEY_LINE.match(line)
        if match:
            key = next(group for group in match.groups() if group is not None)
            lines.setdefault(key, number)
    return lines


def _resolve(value: object, option: Option, base_dir: str) -> object:
    """A relative path in a config file is relative to the file's directory (as Pushpin's
    `routesfile` and `file:` keys are relative to its config directory)."""
    if not base_dir or not isinstance(value, str):
        return value
    if option.field in ("routes_file", "tls_cert", "tls_key") and not os.path.isabs(value):
        return os.path.join(base_dir, value)
    if option.field == "sig_key" and value.startswith("file:"):
        path = value.removeprefix("file:")
        if path and not os.path.isabs(path):
            return "file:" + os.path.join(base_dir, path)
    return value


def _from_file(text: str, file_name: str | None) -> dict[str, tuple[object, str]]:
    name = file_name or "config file"
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=name) from None
    key_lines = _key_lines(text)
    base_dir = os.path.dirname(file_name) if file_name else ""
    values: dict[str, tuple[object, str]] = {}
    spelled: dict[str, str] = {}
    for key, raw in document.items():
        line = key_lines.get(key)
        where = f"{name}:{line}" if line else name
        option = _BY_KEY.get(key)
        if option is None:
            known = ", ".join(o.flag for o in OPTIONS)
            raise ConfigError(f"unknown key {_quote(key)} (known keys: {known})", source=where)
        source = f"{where}: {key}"
        if option.field in spelled:
            raise ConfigError(
                f"given twice (also as {_quote(spelled[option.field])})", source=source
            )
        spelled[option.field] = key
        values[option.field] = (_convert(option, raw, source, base_dir), source)
    return values


def _from_environ(
    environ: Mapping[str, str], on_warning: Callable[[str], None]
) -> dict[str, tuple[object, str]]:
    values: dict[str, tuple[object, str]] = {}
    unknown: list[str] = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _OTHER_ENV:
            continue
        source = f"environment variable {name}"
        option = _BY_ENV.get(name)
        if option is None:
            unknown.append(name)
            continue
        values[option.field] = (_convert(option, raw, source, ""), source)
    if unknown:
        on_warning(_unknown_env_warning(sorted(unknown)))
    return values


def _unknown_env_warning(names: list[str]) -> str:
    known = [*_BY_ENV, "GRIPCORE_CONFIG"]
    hints = [
        f"{name} (did you mean {close[0]}?)" if close else name
        for name in names
        for close in [difflib.get_close_matches(name, known, n=1, cutoff=0.85)]
    ]
    return (
        f"ignoring unknown environment variable{'s' if len(names) > 1 else ''} "
        f"{', '.join(hints)}: not gripcore options (Kubernetes sets GRIPCORE_PORT, "
        "GRIPCORE_SERVICE_HOST, ... for a Service named gripcore; `gripcore serve --help` "
        "lists the options' variables)"
    )


def _ignore(message: str) -> None:
    """The default `on_warning`: a library caller that does not ask for warnings gets none."""


def _from_argv(argv_options: Mapping[str, Any]) -> dict[str, tuple[object, str]]:
    values: dict[str, tuple[object, str]] = {}
    for field, raw in argv_options.items():
        option = _BY_FIELD.get(field)
        if option is None:
            raise ConfigError(f"unknown option field {_quote(field)}", source="load_config")
        if raw is None:
            continue
        source = f"option --{option.flag}"
        values[field] = (_convert(option, raw, source, ""), source)
    return values


def _convert(option: Option, raw: object, source: str, base_dir: str) -> object:
    try:
        return option.convert(_resolve(raw, option, base_dir))
    except _Invalid as exc:
        raise ConfigError(str(exc), source=source) from None


def load_config(
    argv_options: Mapping[str, Any],
    environ: Mapping[str, str],
    file_text: str | None = None,
    file_name: str | None = None,
    *,
    pushpin_options: Mapping[str, tuple[str, str]] | None = None,
    on_warning: Callable[[str], None] = _ignore,
) -> Config:
    """Build the `Config` from the defaults, Pushpin's config file, a TOML config file, the
    environment and the flags, each overriding the ones before it.

    `argv_options` maps `Config` field names to what the command line gave: a string, a list of
    strings for the repeatable `listen` and `routes`, a bool for `debug`; None means not given.
    `environ` is the process environment: `GRIPCORE_<FLAG>` variables are read (`GRIPCORE_LISTEN`
    comma-separated, `GRIPCORE_ROUTE` one route per line), other names are ignored; unknown
    `GRIPCORE_*` names are ignored too, with one message (naming them) passed to `on_warning`.
    `file_text` is the config file's content and `file_name` its path (for messages and for
    resolving relative paths); keys are the long option names with `-` or `_`.
    `pushpin_options` maps option flags to (text, source), as `_pushpinconf.PushpinConfig.options`
    gives them.

    Raises `ConfigError` naming the option and its source for an invalid value, an unknown
    config-file key, a file that is not TOML, or an unknown field in
    `argv_options`.
    """
    layered: dict[str, tuple[object, str]] = {}
    for flag, (raw, source) in (pushpin_options or {}).items():
        option = _BY_KEY.get(flag)
        if option is None:
            raise ConfigError(f"unknown option {_quote(flag)}", source=source)
        layered[option.field] = (_convert(option, raw, source, ""), source)
    if file_text is not None:
        layered.update(_from_file(file_text, file_name))
    layered.update(_from_environ(environ, on_warning))
    layered.update(_from_argv(argv_options))
    values: dict[str, Any] = {field: value for field, (value, _) in layered.items()}
    # The one check across options, made here too so that its message names the sources.
    sources = [layered[field][1] for field in ("publish_listen", "listen") if field in layered]
    _check_listeners(
        cast(tuple[tuple[str, int], ...], values.get("listen", DEFAULT_LISTEN)),
        cast(tuple[str, int], values.get("publish_listen", DEFAULT_PUBLISH_LISTEN)),
        " and ".join(sources),
    )
    return Config(**values)


# --- writing a configuration back out ----------------------------------------------------------


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = _TOML_ESCAPE.sub(lambda match: f"\\u{ord(match[0]):04x}", escaped)
    return f'"{escaped}"'


def _toml_list(texts: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_string(text) for text in texts) + "]"


def _toml_value(config: Config, option: Option) -> str:
    if option.field in ("listen", "tls_listen"):
        addresses = cast(tuple[tuple[str, int], ...], getattr(config, option.field))
        return _toml_list(format_listen(address) for address in addresses)
    if option.field == "publish_listen":
        return _toml_string(format_listen(config.publish_listen))
    value = getattr(config, option.field)
    if isinstance(value, tuple):
        return _toml_list(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _toml_string(value)


def dump_config(config: Config, *, redact_secrets: bool = False) -> str:
    """`config` as a TOML config file that `load_config` reads back to an equal `Config`.

    Unset options (None) are left out, but for the signing key, whose default is set: its off
    is written `sig-key = "none"`. With `redact_secrets`, a set key is written as a comment
    saying it is set, never with its value.
    """
    lines: list[str] = []
    for option in OPTIONS:
        if getattr(config, option.field) is None:
            if option.field == "sig_key":
                lines.append(f'{option.flag} = "{SIG_KEY_OFF}"')
            continue
        if option.secret and redact_secrets:
            lines.append(f"# {option.flag} is set (hidden)")
        else:
            lines.append(f"{option.flag} = {_toml_value(config, option)}")
    return "\n".join(lines) + "\n"
