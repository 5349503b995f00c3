"""Pushpin's own config file (`pushpin.conf`) read as `gripcore serve` options.

Strategy. A Pushpin user switching to gripcore brings `/etc/pushpin/pushpin.conf`. This module
reads it as Pushpin 1.36 does (`src/corelib/settings.cpp`, a `QSettings` INI file: `[section]`
headers, `key=value` lines, `;`/`#` comments, an optional `[global] include` read for keys the
main file does not set, `{rundir}`/`{ipc_prefix}` substituted, `[global] port_offset` added to
`tcp://` ports and to `push_in_http_port`) and turns each setting into one of three outcomes,
all reported:

- *mapped*: the setting becomes a gripcore option, given as the text the option's flag would
  take (so the option's own parser validates it and names `pushpin.conf:LINE` when it is bad);
- *ignored*: gripcore does the job differently or has no such feature; the report says why;
- *default*: the value is Pushpin's default and gripcore's default already matches.

`serve` layers the mapped options under its own config file, environment and flags
(`load_config(pushpin_options=...)`), and logs the report once at start. The module does no
I/O: the caller passes the file's text and a `read_file` for the include.

Error contract: `parse_pushpin_config` raises `ConfigError` (source `FILE:LINE`) for a line that
is neither a section, a comment nor `key=value`, and for a list value Pushpin itself refuses
(a bad `http_port`). Unknown keys are reported, never fatal, as Pushpin ignores them.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ._config import ConfigError

__all__ = ["PushpinConfig", "PushpinSetting", "parse_pushpin_config"]

# Longest config file read: Pushpin's shipped one is 7 KB; a megabyte is not a config file.
MAX_PUSHPIN_CONFIG_SIZE: Final = 1_000_000

_SECTION = re.compile(r"\[([^\]]*)\]\s*")
_TCP_PORT = re.compile(r"(tcp://[^:/]*:)([0-9]+)")


@dataclass(frozen=True, slots=True)
class PushpinSetting:
    """One setting of the file and what became of it.

    `option` is the gripcore flag it maps to (without dashes) and `value` the text given to it;
    both are None when the setting is ignored, and then `note` says why.
    """

    section: str
    key: str
    raw: str
    source: str
    option: str | None = None
    value: str | None = None
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}/{self.key}"

    def describe(self) -> str:
        if self.option is not None:
            return f"{self.name} = {self.raw!r} -> --{self.option} {self.value}" + (
                f" ({self.note})" if self.note else ""
            )
        return f"{self.name} ignored: {self.note}"


@dataclass(frozen=True, slots=True)
class PushpinConfig:
    """What was read, setting by setting, in file order."""

    file_name: str
    settings: tuple[PushpinSetting, ...]

    def options(self) -> dict[str, tuple[str, str]]:
        """Option flag -> (text, source), for `load_config(pushpin_options=...)`."""
        return {
            s.option: (s.value, s.source)
            for s in self.settings
            if s.option is not None and s.value is not None
        }

    def report(self) -> list[str]:
        """One line per setting: which flag it became, or why it was ignored."""
        return [s.describe() for s in self.settings]


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _items(text: str, file_name: str) -> list[tuple[str, str, str, str]]:
    """(section in lower case, key, value, source) for each `key=value` line, in order."""
    out: list[tuple[str, str, str, str]] = []
    section = "general"  # QSettings' name for keys before any section
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        match = _SECTION.fullmatch(stripped)
        if match:
            section = match.group(1).strip().lower()
            continue
        key, found, value = stripped.partition("=")
        if not found or not key.strip():
            raise ConfigError(
                "not a [section], a comment or a key=value line", source=f"{file_name}:{number}"
            )
        key = key.strip()
        source = f"{file_name}:{number}: [{section}] {key}"
        out.append((section, key, _unquote(value), source))
    return out


def _listen_list(value: str, source: str, key: str) -> str:
    """Pushpin's `[addr:]port` list (runner parsePort) as gripcore's `--listen` text: a bare
    port listens on every address."""
    out: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if ":" not in part:
            if not part.isdigit():
                raise ConfigError(f"invalid {key}: {part!r}", source=source)
            part = f"0.0.0.0:{part}"
        out.append(part)
    return ",".join(out)


def _log_level(value: str) -> tuple[str, str]:
    """Pushpin's `log_level` is a list of `N` and `service:N`; gripcore has one level."""
    default = ""
    per_service = []
    for part in (p.strip() for p in value.split(",")):
        if ":" in part:
            per_service.append(part)
        elif part:
            default = part
    level = {"4": "3"}.get(default, default) or "2"  # Pushpin's 4 (trace) is gripcore's debug
    note = f"per-service levels {', '.join(per_service)} ignored" if per_service else ""
    return level, note


# (section, key) -> (gripcore flag, how the value becomes the flag's text, note)
_Convert = Callable[[str, str, str], str]


def _same(value: str, source: str, key: str) -> str:
    return value


def _first(value: str, source: str, key: str) -> str:
    """Pushpin's `push_in_sub_specs` is a list; gripcore binds one SUB socket, the first."""
    return value.split(",")[0].strip()


def _ms_to_seconds(value: str, source: str, key: str) -> str:
    try:
        return f"{int(value.strip()) / 1000:g}"
    except ValueError:
        raise ConfigError(
            f"{key} must be whole milliseconds, got {value!r}", source=source
        ) from None


def _sig_key(value: str, source: str, key: str) -> str:
    return value if value else "none"  # Pushpin sends no Grip-Sig when its key is empty


_MAPPED: Final[dict[tuple[str, str], tuple[str, _Convert, str]]] = {
    ("runner", "http_port"): ("listen", _listen_list, ""),
    ("runner", "client_maxconn"): ("max-connections", _same, ""),
    ("runner", "client_buffer_size"): (
        "max-request-header-size",
        _same,
        "Pushpin's per-connection buffer; gripcore bounds the request head with it",
    ),
    ("proxy", "routesfile"): ("routes", _same, ""),
    ("proxy", "debug"): ("debug", _same, ""),
    ("proxy", "sig_iss"): ("sig-iss", _same, ""),
    ("proxy", "sig_key"): ("sig-key", _sig_key, ""),
    ("proxy", "upstream_key"): ("upstream-key", _same, ""),
    ("handler", "push_in_http_max_body_size"): ("max-publish-body", _same, ""),
    ("handler", "push_in_spec"): ("push-in-spec", _same, "needs gripcore[zmq]"),
    ("handler", "push_in_sub_specs"): ("push-in-sub-spec", _first, "needs gripcore[zmq]"),
    ("handler", "push_in_sub_spec"): ("push-in-sub-spec", _first, "needs gripcore[zmq]"),
    ("handler", "command_spec"): ("command-spec", _same, "answers get-zmq-uris"),
    ("handler", "message_wait"): ("message-wait", _ms_to_seconds, "milliseconds to seconds"),
    ("handler", "id_cache_ttl"): ("id-cache-ttl", _same, ""),
    ("handler", "connection_subscription_max"): ("max-channels-per-connection", _same, ""),
}

_IGNORED: Final[dict[tuple[str, str], str]] = {
    ("global", "include"): "Pushpin's internal wiring between its own processes",
    ("global", "rundir"): "gripcore is one process: no run directory or IPC sockets",
    ("global", "ipc_prefix"): "gripcore is one process: no IPC sockets",
    ("global", "port_offset"): "applied to the ports read here, as Pushpin does",
    ("global", "stats_connection_ttl"): "statistics are at /metrics on the publish listener",
    ("runner", "services"): "gripcore is one process (see --workers)",
    ("runner", "logdir"): "gripcore logs to standard error (systemd or your runner keeps it)",
    ("runner", "condure_bin"): "no helper processes",
    ("runner", "mongrel2_bin"): "no helper processes",
    ("runner", "m2sh_bin"): "no helper processes",
    ("runner", "zurl_bin"): "no helper processes",
    ("runner", "local_ports"): "no unix-socket client listeners",
    ("runner", "https_ports"): "Pushpin's certificates live in its runner/certs folder: give "
    "gripcore --tls-listen with --tls-cert and --tls-key",
    ("proxy", "auto_cross_origin"): "not supported: answer CORS in the origin",
    ("proxy", "accept_x_forwarded_protocol"): "not supported",
    ("proxy", "set_x_forwarded_protocol"): "not supported",
    ("proxy", "x_forwarded_for"): "not supported",
    ("proxy", "x_forwarded_for_trusted"): "not supported",
    ("proxy", "orig_headers_need_mark"): "not supported",
    ("proxy", "accept_pushpin_route"): "not supported",
    ("proxy", "log_from"): "the request log line has the client's address",
    ("proxy", "log_user_agent"): "not logged",
    ("proxy", "sockjs_url"): "SockJS is not supported",
    ("proxy", "updates_check"): "gripcore never calls home",
    ("proxy", "organization_name"): "gripcore never calls home",
    ("handler", "push_in_sub_connect"): "the SUB socket always binds (connecting is not supported)",
    ("handler", "push_in_http_max_headers_size"): "the publish listener bounds its head itself",
    ("handler", "stats_spec"): "statistics are at /metrics on the publish listener",
    ("handler", "stats_format"): "statistics are at /metrics (Prometheus text)",
    ("handler", "stats_report_interval"): "statistics are at /metrics on the publish listener",
    ("handler", "stats_subscription_ttl"): "statistics are at /metrics on the publish listener",
    ("handler", "stats_connection_ttl"): "statistics are at /metrics on the publish listener",
    ("handler", "message_rate"): "no delivery rate limit: slow clients are handled by "
    "--slow-consumer-policy",
    ("handler", "message_hwm"): "bounded per client by --max-output-buffer",
    ("handler", "subscription_linger"): "see --engine-linger (Redis engine)",
}


_ZMQ_KEYS: Final = frozenset(
    {
        ("handler", "push_in_spec"),
        ("handler", "push_in_sub_specs"),
        ("handler", "push_in_sub_spec"),
        ("handler", "command_spec"),
    }
)


def parse_pushpin_config(
    text: str,
    file_name: str,
    *,
    read_file: Callable[[str], str] | None = None,
    zmq: bool = True,
) -> PushpinConfig:
    """Read Pushpin's config `text` (from `file_name`, for messages and relative paths).

    `read_file(path)` reads the `[global] include` file, if the caller allows it; an include that
    cannot be read, or Pushpin's own `internal.conf` (under its `{libdir}`), is reported and
    skipped. `zmq` says whether the ZeroMQ extra (pyzmq) is installed: without it the ZeroMQ
    sockets are reported as ignored, so that a Pushpin config still starts.
    """
    if len(text) > MAX_PUSHPIN_CONFIG_SIZE:
        raise ConfigError(
            f"over {MAX_PUSHPIN_CONFIG_SIZE} characters: not a Pushpin config", source=file_name
        )
    base_dir = os.path.dirname(file_name)
    items = _items(text, file_name)
    values = {(section, key): value for section, key, value, _ in items}

    include = values.get(("global", "include"), "")
    include_note = "Pushpin's internal wiring between its own processes"
    if include and include != "internal.conf" and "{libdir}" not in include:
        path = include if os.path.isabs(include) else os.path.join(base_dir, include)
        try:
            if read_file is None:
                raise OSError(0, "includes are not read here")
            extra = _items(read_file(path), path)
        except OSError as exc:
            include_note = f"cannot read {path}: {exc.strerror or exc}"
        else:
            include_note = f"{path} read for what this file does not set"
            # the main file wins, as Settings::valueRaw
            items += [item for item in extra if (item[0], item[1]) not in values]
            values.update({(s, k): v for s, k, v, _ in extra if (s, k) not in values})

    try:
        offset = int(values.get(("global", "port_offset"), "0") or 0)
    except ValueError:
        offset = 0
    rundir = values.get(("global", "rundir"), "")
    prefix = values.get(("global", "ipc_prefix"), "pushpin-")

    def resolve(value: str) -> str:
        value = value.replace("{rundir}", rundir).replace("{ipc_prefix}", prefix)
        return _TCP_PORT.sub(lambda m: m.group(1) + str(int(m.group(2)) + offset), value)

    settings: list[PushpinSetting] = []
    seen: set[tuple[str, str]] = set()
    for section, key, raw, source in items:
        name = (section, key)
        if name in seen:  # QSettings keeps the last; so does `values`
            continue
        seen.add(name)
        raw = values[name]
        value = resolve(raw)
        if name == ("global", "include"):
            settings.append(PushpinSetting(section, key, raw, source, note=include_note))
        elif name in _PUBLISH_LISTEN:
            if name == _PUBLISH_LISTEN[0] or _PUBLISH_LISTEN[0] not in values:
                settings.append(_publish_listen(values, offset, source))
        elif name == ("runner", "log_level"):
            level, note = _log_level(value)
            settings.append(PushpinSetting(section, key, raw, source, "log-level", level, note))
        elif name in _ZMQ_KEYS and not zmq:
            note = "ZeroMQ publishing needs pyzmq: pip install 'gripcore[zmq]'"
            settings.append(PushpinSetting(section, key, raw, source, note=note))
        elif name in _MAPPED:
            flag, convert, note = _MAPPED[name]
            if name == ("proxy", "routesfile") and value and not os.path.isabs(value):
                value = os.path.join(base_dir, value)  # relative to the config file's folder
            elif value.startswith("file:") and not os.path.isabs(value[5:]):
                value = "file:" + os.path.join(base_dir, value[5:])  # a key file, likewise
            if name == ("proxy", "upstream_key") and not value:
                note = "empty: no proxy in front is trusted"
                settings.append(PushpinSetting(section, key, raw, source, note=note))
                continue
            text_value = convert(value, source, key)
            settings.append(PushpinSetting(section, key, raw, source, flag, text_value, note))
        else:
            note = _IGNORED.get(name, "not a setting gripcore knows")
            settings.append(PushpinSetting(section, key, raw, source, note=note))
    return PushpinConfig(file_name, tuple(settings))


_PUBLISH_LISTEN: Final = (("handler", "push_in_http_port"), ("handler", "push_in_http_addr"))


def _publish_listen(values: dict[tuple[str, str], str], offset: int, source: str) -> PushpinSetting:
    """Pushpin's publish address and port (each with its default) as `--publish-listen`; the
    port moves with `port_offset` (Settings::adjustedPort)."""
    host = values.get(_PUBLISH_LISTEN[1]) or "127.0.0.1"
    port_text = values.get(_PUBLISH_LISTEN[0], "5561").strip()
    port = str(int(port_text) + offset) if port_text.isdigit() else port_text
    shown = f"[{host}]" if ":" in host else host
    return PushpinSetting(
        "handler",
        "push_in_http_addr/push_in_http_port",
        f"{host} {port_text}",
        source,
        "publish-listen",
        f"{shown}:{port}",
    )
