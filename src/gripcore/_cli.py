"""The `gripcore` command line: `gripcore serve`, `gripcore publish` and `gripcore check`.

This module is the I/O edge of the command line, and the only place outside the adapters that
touches the outside world: it reads the config file, the process environment, standard input and
`@FILE` messages, configures logging, and makes `publish`'s one HTTP request (with
`http.client`). Everything it decides is built from the core: options and their checks come from
`_config.OPTIONS`, published items are `_items.Item` values encoded by `encode_publish_body`.

* `gripcore serve` layers defaults < config file < environment < flags (`load_config`), then
  imports `gripcore.adapters.<adapter>` lazily and calls its `run(config) -> int`.
* `gripcore publish` follows `pushpin-publish`: one item on one channel, by default in all three
  formats (`http-response` body and `http-stream` content get a trailing newline unless
  `--no-eol`; `ws-message` content as given). `--http-response`, `--http-stream`, `--sse` and
  `--ws` select formats instead; `--sse` frames the stream content as one Server-Sent Event.
  `--dry-run` prints the request body instead of sending it.

* `gripcore check proxy|origin` runs the GRIP conformance checks: the catalogue, judging and
  report are `_check`; the network driver is `gripcore.adapters.checker`, imported lazily.

Exit codes: 0 success; 1 the publish failed (refused connection, non-2xx answer) or a check
failed; 2 bad usage or configuration (argparse's convention), including a missing adapter.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import importlib
import importlib.util
import json
import logging
import math
import os
import re
import ssl
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Final, Literal
from urllib.parse import parse_qs, urlsplit

import jwt

from . import __version__, _speedups
from ._check import add_check_parser
from ._config import (
    DEFAULT_SIG_KEY,
    OPTIONS,
    Config,
    ConfigError,
    Option,
    dump_config,
    format_listen,
    load_config,
)
from ._errors import LocalProtocolError
from ._items import HttpResponseFormat, HttpStreamFormat, Item, WsMessageFormat, encode_publish_body
from ._pushpinconf import parse_pushpin_config
from ._zmqin import encode_pull_message

__all__ = [
    "DEFAULT_GRIP_URL",
    "DEFAULT_PUBLISH_TIMEOUT",
    "MAX_CONFIG_FILE_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_RESPONSE_BODY",
    "PublishResponse",
    "build_parser",
    "main",
    "post_publish",
    "publish_endpoint",
    "sse_event",
]

# pushpin-publish's default GRIP URL (it honours GRIP_URL too), on the loopback publish listener.
DEFAULT_GRIP_URL: Final = "http://127.0.0.1:5561"
# A publish is one small request to a local or nearby broker; ten seconds means it is not coming.
DEFAULT_PUBLISH_TIMEOUT: Final = 10.0
# Far above any publish body limit (1 MB by default), so only runaway input (a device, a pipe
# that never ends) is refused, before it is held in memory.
MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
# A config file is a few dozen lines; a megabyte means the wrong file.
MAX_CONFIG_FILE_SIZE: Final = 1024 * 1024
# The publish API answers with a line or two; more is not worth holding.
MAX_RESPONSE_BODY: Final = 64 * 1024
# Lifetime of the JWT made from a GRIP URL's `iss` and `key`, as GRIP publisher libraries use.
_JWT_LIFETIME: Final = timedelta(hours=1)
# --spec values that name a ZeroMQ PULL socket (push_in_spec) rather than a GRIP URL
_ZMQ_SCHEMES: Final = ("tcp://", "ipc://")
_SSE_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_LINE_BREAK = re.compile(r"[\r\n]")
_LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s%(worker_tag)s: %(message)s"

_PROG: Final = "gripcore"
_EPILOG: Final = (
    "Every option can also be set in a TOML config file (--config FILE or GRIPCORE_CONFIG; keys "
    'are the option names, e.g. max-connections = 1000, listen = ["7999"]) and in the '
    "environment (the GRIPCORE_* name shown with each option). Flags override the environment, "
    "which overrides the config file, which overrides the defaults."
)


class _UsageError(Exception):
    """The command line asks for something impossible; exit 2 with the message."""


def _error(command: str, message: str) -> None:
    print(f"{_PROG} {command}: {message}", file=sys.stderr)


# --- the parser ----------------------------------------------------------------------------------


def _show_default(option: Option) -> str:
    value = getattr(Config(), option.field)
    if option.field == "listen":
        return ",".join(format_listen(address) for address in value)
    if option.field == "publish_listen":
        return format_listen(value)
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        help_text = f"{option.help} (default: {_show_default(option)}; env: {option.env})"
        help_text = help_text.replace("%", "%%")
        flag = f"--{option.flag}"
        if option.field == "debug":
            parser.add_argument(
                flag, dest=option.field, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(
                flag,
                dest=option.field,
                metavar=option.metavar,
                action="append" if option.repeatable else "store",
                help=help_text,
            )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file (env: GRIPCORE_CONFIG)",
    )
    parser.add_argument(
        "--pushpin-config",
        metavar="FILE",
        help="read Pushpin's own pushpin.conf: the settings gripcore has become options "
        "(under --config, the environment and flags), the others are listed at start with "
        "the reason (env: GRIPCORE_PUSHPIN_CONFIG)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resulting configuration as TOML (keys hidden) and exit",
    )


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _add_publish_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("channel", help="channel to publish to")
    parser.add_argument(
        "message",
        nargs="?",
        help="content to publish; @FILE reads a file and - reads standard input (both sent "
        "as they are, without an added newline; content that is not UTF-8 is sent as binary)",
    )
    formats = parser.add_argument_group(
        "formats", "which formats to publish (none given: all three, as pushpin-publish)"
    )
    formats.add_argument(
        "--http-response", action="store_true", help="http-response (held long-polls)"
    )
    stream = formats.add_mutually_exclusive_group()
    stream.add_argument("--http-stream", action="store_true", help="http-stream (held streams)")
    stream.add_argument(
        "--sse",
        action="store_true",
        help="http-stream content framed as one Server-Sent Event (event: / id: / data: lines)",
    )
    formats.add_argument("--ws", action="store_true", help="ws-message (WebSocket subscribers)")
    action = parser.add_argument_group("action").add_mutually_exclusive_group()
    action.add_argument(
        "--hint", action="store_true", help="send a hint instead of content (subscribers refetch)"
    )
    action.add_argument(
        "--close", action="store_true", help="close streams and WebSocket connections"
    )
    action.add_argument(
        "--patch", action="store_true", help="MESSAGE is a JSON Patch for held long-poll bodies"
    )
    item = parser.add_argument_group("item")
    item.add_argument("--id", help="item id (sequencing and dedup; also the SSE id: line)")
    item.add_argument("--prev-id", metavar="ID", help="id of the item published before this one")
    item.add_argument("--sender", help="meta value 'sender'")
    item.add_argument(
        "-M", "--meta", action="append", default=[], metavar="K=V", help="meta value (repeatable)"
    )
    item.add_argument("--no-seq", action="store_true", help="bypass the sequencing buffer")
    item.add_argument(
        "--code",
        type=int,
        help="HTTP status of the http-response (default 200); with --close, the WebSocket "
        "close code",
    )
    item.add_argument(
        "--reason", help="HTTP reason phrase; with --close, the WebSocket close reason"
    )
    item.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar='"K: V"',
        help="http-response header (repeatable)",
    )
    item.add_argument("--event", metavar="NAME", help="SSE event name (with --sse)")
    item.add_argument("--no-eol", action="store_true", help="do not add a newline to HTTP payloads")
    target = parser.add_argument_group("target")
    target.add_argument(
        "--url",
        "--spec",
        metavar="URL",
        help=f"GRIP URL of the server; /publish/ is appended (default: $GRIP_URL or "
        f"{DEFAULT_GRIP_URL}; ?key=K in it authenticates with Bearer K, ?iss=I&key=K with "
        f"a JWT signed by K); or a ZeroMQ tcp:// or ipc:// spec of the server's PULL socket "
        f"(--push-in-spec, Pushpin's push_in_spec; needs gripcore[zmq])",
    )
    target.add_argument(
        "--key", "--bearer", metavar="TOKEN", help="authenticate with Authorization: Bearer"
    )
    target.add_argument(
        "--user", metavar="USER:PASS", help="authenticate with HTTP Basic authentication"
    )
    target.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_PUBLISH_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long (default: {DEFAULT_PUBLISH_TIMEOUT:g})",
    )
    target.add_argument(
        "--dry-run", action="store_true", help="print the request body instead of sending it"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `gripcore` with its `serve` and `publish` subcommands."""
    parser = argparse.ArgumentParser(
        prog=_PROG, description="gripcore: a GRIP proxy and realtime push broker."
    )
    parser.add_argument("--version", action="version", version=f"{_PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the GRIP proxy and publish API",
        description="Run the GRIP proxy and its publish API.",
        epilog=_EPILOG,
    )
    _add_serve_options(serve)
    publish = commands.add_parser(
        "publish",
        help="publish one item (like pushpin-publish)",
        description="Publish one item to a GRIP server (gripcore, Pushpin, Fastly Fanout).",
    )
    _add_publish_options(publish)
    add_check_parser(commands)
    return parser


# --- serve ---------------------------------------------------------------------------------------


def _read_config_file(path: str) -> str:
    """The config file's text. Raises `_UsageError` when it cannot be read."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_FILE_SIZE + 1)
    except OSError as exc:
        raise _UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_FILE_SIZE:
        raise _UsageError(f"config file {path} is larger than {MAX_CONFIG_FILE_SIZE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _UsageError(f"config file {path} is not UTF-8 text") from None


def _read_config_file_os(path: str) -> str:
    """`_read_config_file` for a file that may be absent (OSError instead of a usage error)."""
    try:
        return _read_config_file(path)
    except _UsageError as exc:
        raise OSError(0, str(exc)) from None


class _WorkerTag(logging.Filter):
    """Adds `worker` (the --workers index, or None in a single process) and `worker_tag`
    (` [worker N]` or nothing) to every record, so each line says which process wrote it."""

    worker: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        record.worker_tag = "" if self.worker is None else f" [worker {self.worker}]"
        return True


WORKER_TAG = _WorkerTag()


def set_log_worker(index: int | None) -> None:
    """Name this process's worker in its log lines (the --workers supervisor calls it in each
    worker after the fork)."""
    WORKER_TAG.worker = index


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, worker, and the
    exception's traceback when there is one. What log shippers (Loki, Elasticsearch, Cloud
    Logging) parse without a pattern."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, object] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        worker = getattr(record, "worker", None)
        if worker is not None:
            line["worker"] = worker
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def _configure_logging(config: Config) -> None:
    """Log to standard error at the configured level and format (the core and adapters only
    log)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        root.addHandler(handler)
        handler.addFilter(WORKER_TAG)
        if config.log_format == "json":
            handler.setFormatter(JsonLogFormatter())
        else:
            handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    logging.getLogger("gripcore").setLevel(config.log_level.upper())


def _run_adapter(config: Config) -> int:
    name = f"gripcore.adapters.{config.adapter}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if name == missing or name.startswith(missing + "."):
            raise _UsageError(f"the {config.adapter} adapter is not available ({exc})") from None
        raise _UsageError(
            f"the {config.adapter} adapter needs {missing!r}, which is not installed"
        ) from None
    run = getattr(module, "run", None)
    if not callable(run):
        raise _UsageError(f"the {config.adapter} adapter ({name}) has no run(config) function")
    result = run(config)
    return result if isinstance(result, int) else 0


def _serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    config_path = args.config or environ.get("GRIPCORE_CONFIG") or None
    text = _read_config_file(config_path) if config_path else None
    pushpin_path = args.pushpin_config or environ.get("GRIPCORE_PUSHPIN_CONFIG") or None
    argv_options = {option.field: getattr(args, option.field) for option in OPTIONS}
    try:
        pushpin = (
            parse_pushpin_config(
                _read_config_file(pushpin_path),
                pushpin_path,
                read_file=_read_config_file_os,
                zmq=importlib.util.find_spec("zmq") is not None,
            )
            if pushpin_path
            else None
        )
        config = load_config(
            argv_options,
            environ,
            text,
            config_path,
            pushpin_options=pushpin.options() if pushpin else None,
            on_warning=lambda message: _error("serve", f"warning: {message}"),
        )
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    if args.print_config:
        print(dump_config(config, redact_secrets=True), end="")
        return 0
    _configure_logging(config)
    if pushpin is not None:
        serve_log = logging.getLogger("gripcore.serve")
        serve_log.info("read Pushpin's config %s:", pushpin_path)
        for line in pushpin.report():
            serve_log.info("  %s", line)
    if config.sig_key == DEFAULT_SIG_KEY:
        logging.getLogger("gripcore.serve").warning(
            "origin requests are signed (Grip-Sig, iss %r) with Pushpin's well-known default "
            "key %r: anyone can forge them; set --sig-key to a secret of your own "
            "(or --sig-key none to stop signing)",
            config.sig_iss,
            DEFAULT_SIG_KEY,
        )
    is_warning, note = _speedups.hot_path_note(_speedups.impl, environ)
    logging.getLogger("gripcore").log(logging.WARNING if is_warning else logging.INFO, "%s", note)
    try:
        return _run_adapter(config)
    except KeyboardInterrupt:
        return 130  # the shell's code for a run ended by SIGINT


# --- publish: the item ---------------------------------------------------------------------------


def sse_event(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """`data` framed as one Server-Sent Event: `event:` and `id:` lines when given, one `data:`
    line per line of `data` (CRLF, CR or LF end a line), and the blank line that ends the event.

    Raises `LocalProtocolError` when `event` or `id` holds a line break (it would end the field).
    """
    lines: list[bytes] = []
    for name, value in (("event", event), ("id", id)):
        if value is None:
            continue
        if _LINE_BREAK.search(value):
            raise LocalProtocolError(f"the SSE {name} must be one line")
        lines.append(f"{name}: {value}".encode())
    lines.extend(b"data: " + line for line in _SSE_LINE_BREAK.split(data))
    return b"\n".join(lines) + b"\n\n"


def _read_message(arg: str | None, stdin: IO[bytes]) -> tuple[bytes | None, bool]:
    """The message bytes, and whether they came from a file or standard input (sent as-is)."""
    if arg is None:
        return None, False
    if arg != "-" and not arg.startswith("@"):
        # surrogateescape gives back the exact bytes of a command-line argument that is not UTF-8.
        return arg.encode("utf-8", "surrogateescape"), False
    if arg == "-":
        data = stdin.read(MAX_MESSAGE_SIZE + 1)
    else:
        try:
            with open(arg[1:], "rb") as file:
                data = file.read(MAX_MESSAGE_SIZE + 1)
        except OSError as exc:
            raise _UsageError(f"cannot read {arg[1:]}: {exc.strerror or exc}") from None
    if len(data) > MAX_MESSAGE_SIZE:
        raise _UsageError(f"the message is larger than {MAX_MESSAGE_SIZE} bytes")
    return data, True


def _pairs(values: Sequence[str], sep: str, form: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        name, found, rest = value.partition(sep)
        if not found or not name.strip():
            raise _UsageError(f"{value!r} is not in the form {form}")
        pairs.append((name.strip(), rest.strip()))
    return pairs


def _selected(args: argparse.Namespace) -> tuple[bool, bool, bool]:
    """Which formats to publish: (http-response, http-stream, ws-message)."""
    chosen = (args.http_response, args.http_stream or args.sse, args.ws)
    if any(chosen):
        return chosen
    if args.close:
        return False, True, True  # a close means nothing to a long-poll (Pushpin ignores it)
    if args.patch:
        return True, False, False  # a patch applies to the held long-poll body only
    return True, True, True


def _check_usage(args: argparse.Namespace, message: bytes | None) -> None:
    response, _, ws = _selected(args)
    sending = not (args.hint or args.close)
    if sending and message is None:
        raise _UsageError("a message is required (or --hint or --close)")
    if not sending and message is not None:
        raise _UsageError(f"--{'hint' if args.hint else 'close'} takes no message")
    if args.close and args.http_response:
        raise _UsageError("--close applies to http-stream and ws-message, not --http-response")
    if args.patch and (args.http_stream or args.sse or args.ws):
        raise _UsageError("--patch applies to http-response only")
    if args.event is not None and not args.sse:
        raise _UsageError("--event needs --sse")
    for flag, given in (("--code", args.code is not None), ("--reason", args.reason is not None)):
        if given and (args.hint or (args.close and not ws) or (sending and not response)):
            raise _UsageError(f"{flag} applies to http-response, or to ws-message with --close")
    if args.header and not (sending and response):
        raise _UsageError("--header applies to a sent http-response")


def _content_formats(
    args: argparse.Namespace, message: bytes, as_is: bool
) -> tuple[HttpResponseFormat | None, HttpStreamFormat | None, WsMessageFormat | None]:
    response, stream, ws = _selected(args)
    code = 200 if args.code is None else args.code
    headers = tuple(_pairs(args.header, ":", '"NAME: VALUE"'))
    if args.patch:
        try:
            patch = json.loads(message)
        except ValueError:
            raise _UsageError("the --patch message is not JSON") from None
        if not isinstance(patch, list):
            raise _UsageError("the --patch message must be a JSON array (of patch operations)")
        patch_format = HttpResponseFormat(
            code=code, reason=args.reason, headers=headers, body_patch=tuple(patch)
        )
        return patch_format, None, None
    http_body = message if as_is or args.no_eol else message + b"\n"
    if args.sse:
        # A file or stdin usually ends with a newline, which is not part of the event's data.
        data = message.removesuffix(b"\n").removesuffix(b"\r") if as_is else message
        stream_content = sse_event(data, event=args.event, id=args.id)
    else:
        stream_content = http_body
    ws_type: Literal["text", "binary"] = "text"
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        ws_type = "binary"
    response_format = HttpResponseFormat(
        code=code, reason=args.reason, headers=headers, body=http_body
    )
    return (
        response_format if response else None,
        HttpStreamFormat(content=stream_content) if stream else None,
        WsMessageFormat(type=ws_type, content=message) if ws else None,
    )


def _build_item(args: argparse.Namespace, message: bytes | None, as_is: bool) -> Item:
    """The item the publish command line describes. Raises `_UsageError`."""
    _check_usage(args, message)
    response, stream, ws = _selected(args)
    formats: tuple[HttpResponseFormat | None, HttpStreamFormat | None, WsMessageFormat | None]
    try:
        if args.hint:
            formats = (
                HttpResponseFormat(action="hint") if response else None,
                HttpStreamFormat(action="hint") if stream else None,
                WsMessageFormat(action="hint") if ws else None,
            )
        elif args.close:
            close = WsMessageFormat(action="close", code=args.code, reason=args.reason)
            formats = (
                None,
                HttpStreamFormat(action="close") if stream else None,
                close if ws else None,
            )
        else:
            assert message is not None  # _check_usage made sure
            formats = _content_formats(args, message, as_is)
        meta = {"sender": args.sender} if args.sender else {}
        meta.update(_pairs(args.meta, "=", "K=V"))
        return Item(
            channel=args.channel,
            id=args.id or None,
            prev_id=args.prev_id or None,
            meta=meta,
            no_seq=args.no_seq,
            http_response=formats[0],
            http_stream=formats[1],
            ws_message=formats[2],
        )
    except LocalProtocolError as exc:
        raise _UsageError(str(exc)) from None


# --- publish: the request ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishResponse:
    """What the publish API answered: status, reason phrase and (at most 64 KiB of) body."""

    status: int
    reason: str
    body: bytes

    @property
    def ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @property
    def text(self) -> str:
        """The body as one line of text, or the status line when the body is empty."""
        text = self.body.decode("utf-8", "replace").strip()
        return " ".join(text.split()) if text else f"{self.status} {self.reason}"


def _jwt(iss: str, key: str) -> str:
    """A GRIP publisher JWT (HS256; `iss`, `exp`). `key` is a secret or `base64:<secret>`."""
    if key.startswith("base64:"):
        try:
            secret = base64.b64decode(key.removeprefix("base64:"), validate=True)
        except ValueError:
            raise ConfigError("its key is not valid base64", source="GRIP URL") from None
    else:
        secret = key.encode("utf-8", "surrogateescape")
    if not secret:
        raise ConfigError("its key is empty", source="GRIP URL")
    claims = {"iss": iss, "exp": datetime.now(tz=UTC) + _JWT_LIFETIME}
    with warnings.catch_warnings():
        # The key is the server's, not chosen here: a short one is not this command's to refuse.
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode(claims, secret, algorithm="HS256")


def publish_endpoint(grip_url: str) -> tuple[str, str | None]:
    """The publish endpoint of a GRIP URL (`<url>/publish/`, its query dropped) and the
    `Authorization` value its query asks for: `?key=K` gives `Bearer K` (Fastly Fanout's form),
    `?iss=I&key=K` a `Bearer` JWT (HS256, claims `iss` and `exp`, key `K` or `base64:...`).

    Raises `ConfigError` for a URL that is not `http(s)://HOST[:PORT][/PATH]`.
    """
    parts = urlsplit(grip_url)
    try:
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - the property checks the port
    except ValueError:
        valid = False
    if not valid:
        raise ConfigError(f"{grip_url!r} is not an http:// or https:// URL", source="GRIP URL")
    endpoint = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/publish/"
    query = parse_qs(parts.query)
    key = query.get("key", [None])[0]
    iss = query.get("iss", [None])[0]
    if key is None:
        return endpoint, None
    if iss is None:
        return endpoint, f"Bearer {key}"
    return endpoint, f"Bearer {_jwt(iss, key)}"


def post_publish(
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_PUBLISH_TIMEOUT,
) -> PublishResponse:
    """POST `body` (JSON) to the publish endpoint `url` (http or https) and return the answer.

    Raises `OSError` when the server cannot be reached (`ConnectionRefusedError`, `TimeoutError`,
    `ssl.SSLError`...) and `http.client.HTTPException` when it answers with something that is not
    HTTP.
    """
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request_headers = {
        "Content-Type": "application/json",
        "Accept": "text/plain",
        "User-Agent": f"{_PROG}/{__version__}",
        **(headers or {}),
    }
    try:
        connection.request("POST", target, body=body, headers=request_headers)
        response = connection.getresponse()
        return PublishResponse(response.status, response.reason, response.read(MAX_RESPONSE_BODY))
    finally:
        connection.close()


def _publish_zmq(spec: str, item: Item, timeout: float) -> int:
    """Push the item to a ZeroMQ PULL socket (gripcore's or Pushpin's push_in_spec) as one
    `J` + JSON message, as pushpin-publish --spec tcp://... does (with a tnetstring)."""
    zmq_support = importlib.import_module("gripcore.adapters._zmqload")
    try:
        zmq_support.push_message(spec, encode_pull_message(item), timeout)
    except OSError as exc:
        _error("publish", f"publishing to {spec} failed: {exc}")
        return 1
    print("Published")
    return 0


def _publish(args: argparse.Namespace, environ: Mapping[str, str], stdin: IO[bytes]) -> int:
    message, as_is = _read_message(args.message, stdin)
    item = _build_item(args, message, as_is)
    body = encode_publish_body([item])
    if args.dry_run:
        print(body.decode("utf-8"))
        return 0
    grip_url = args.url or environ.get("GRIP_URL") or DEFAULT_GRIP_URL
    if grip_url.startswith(_ZMQ_SCHEMES):
        return _publish_zmq(grip_url, item, args.timeout)
    try:
        endpoint, authorization = publish_endpoint(grip_url)
    except ConfigError as exc:
        raise _UsageError(str(exc)) from None
    if args.key:
        authorization = f"Bearer {args.key}"
    elif args.user:
        authorization = "Basic " + base64.b64encode(args.user.encode()).decode("ascii")
    headers = {"Authorization": authorization} if authorization else {}
    try:
        response = post_publish(endpoint, body, headers=headers, timeout=args.timeout)
    except ConnectionRefusedError:
        _error("publish", f"cannot connect to {endpoint}: connection refused (is the server up?)")
        return 1
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # ValueError: http.client refusing a header value, or a host name that is not IDNA.
        _error("publish", f"publishing to {endpoint} failed: {exc!s} ({type(exc).__name__})")
        return 1
    if not response.ok:
        _error("publish", f"{response.status} {response.reason}: {response.text}")
        return 1
    print(response.text)
    return 0


# --- main ----------------------------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
) -> int:
    """Run the `gripcore` command line and return its exit code (the console script exits with it).

    `argv` defaults to `sys.argv[1:]`, `environ` to `os.environ`, `stdin` to the binary standard
    input. Never raises for bad usage: it prints the reason to standard error and returns 2.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's own usage errors
        return exc.code if isinstance(exc.code, int) else 2
    if environ is None:
        environ = os.environ
    try:
        if args.command == "serve":
            return _serve(args, environ)
        if args.command == "publish":
            return _publish(args, environ, stdin if stdin is not None else sys.stdin.buffer)
        if args.command == "check" and args.check_target is not None:
            checker = importlib.import_module("gripcore.adapters.checker")
            return int(checker.run_check(args))
    except _UsageError as exc:
        _error(args.command, str(exc))
        return 2
    parser.print_help(sys.stderr)
    return 2
