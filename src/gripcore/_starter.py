"""The embedded starter kit: a built-in GRIP origin and a demo page for `gripcore serve`.

When `gripcore serve` runs without routes, the proxy sends every request to `handle()` in
process (no socket). `handle()` answers exactly as a user's origin would: with GRIP instructions
that the proxy acts on, so the starter kit exercises the real holding and publishing paths.

Paths (`?channel=NAME` picks another channel than `test`; NAME is 1-64 characters of
`[A-Za-z0-9_.:-]`, anything else is a 400; the channel is the same for every path):

- `GET /`: the demo page (`starter/index.html`, package data, read once on first use).
- `GET /test/sse`: a stream hold for Server-Sent Events. Headers `Content-Type: text/event-stream`,
  `Cache-Control: no-cache`, `Grip-Hold: stream`, `Grip-Channel: test` and
  `Grip-Keep-Alive: :\\n\\n; format=cstring; timeout=20` (an SSE comment every 20 s of silence).
  The initial body is the SSE comment `: subscribed to test\\n\\n`: a comment, because
  EventSource ignores comments, so the page shows only published events.
- `GET /test/stream`: a plain HTTP stream hold (`text/plain`), initial body
  `[stream open on channel test]\\n` and `Grip-Keep-Alive: \\n; format=cstring; timeout=20`
  (an empty line every 20 s of silence). It receives the `http-stream` format, the same
  SSE-framed chunks as `/test/sse`; the page parses them as SSE, where an empty line between
  events dispatches nothing, so the keep-alive is invisible there and harmless to `curl -N`.
- `GET /test/long-poll`: a response hold with `Grip-Timeout: 30`; the timeout response is
  `{"messages": []}\\n` (application/json), which the `http-response` format replaces.
- `POST /test/websocket` (`Content-Type: application/websocket-events`): WebSocket-over-HTTP.
  `OPEN` is answered with `OPEN`, `Sec-WebSocket-Extensions: grip` and the control message
  `c:{"type":"subscribe","channel":"test"}`; each TEXT or BINARY message from the client is
  echoed back with the `m:` prefix (so the proxy relays it to the client: the page shows the
  echo); `CLOSE` is answered with `CLOSE` with the same code; `DISCONNECT` with an empty body;
  `PING`/`PONG` are ignored. A plain `GET` is a 400 explaining that this is a WebSocket endpoint.
- `POST /test/publish`: the page's publish form, JSON `{"channel": ..., "text": ...}`.
  The publish API listens on another port, so the page posts here instead. `handle()` cannot
  publish (it is an origin, not the broker): it answers 202 with the publish body
  (`{"items": [...]}`) built by `parse_publish_form()`. The proxy intercepts `POST /test/publish`
  before `handle()`: it calls `parse_publish_form(body)`, publishes the result in process and
  answers 200 `{"published": true}` (or 400 with the `PublishError` message).

One publish reaches all four transports because it carries all three formats: `http-stream`
content `data: <text>\\n\\n` (SSE and the plain stream), `ws-message` content `<text>` and
`http-response` body `{"messages": ["<text>"]}\\n` (long-poll). A form publish also carries a
random `id` (the proxy draws it), sent as the SSE `id:` field and as `"id"` in the long-poll
body: the page's next poll names it (`?last-event-id=`), and the proxy, which keeps a history of
STARTER_HISTORY items per channel for the starter kit, answers at once with what came after it.

Unknown paths are a 404 and other methods a 405 with `Allow`. `banner()` is the text the CLI
prints at start; `STARTER_PATHS` lists the paths for it.

Error contract: `handle()` never raises for well-typed arguments; bad requests become 4xx
responses (text/plain, with a message saying what was wrong). `parse_publish_form()` raises
`PublishError` for a bad form body. A page missing from the installed package (a packaging
bug) raises `LocalProtocolError`.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib.resources import files
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qsl

from ._errors import LocalProtocolError, PublishError, WebSocketEventsError
from ._wscontrol import DEFAULT_MESSAGE_PREFIX, Subscribe, encode_control_message
from ._wsevents import (
    Binary,
    Close,
    Disconnect,
    Open,
    Text,
    WebSocketEvent,
    decode_events,
    encode_events,
)

__all__ = [
    "KEEP_ALIVE_TIMEOUT",
    "LONG_POLL_TIMEOUT",
    "MAX_CHANNEL_LENGTH",
    "MAX_PUBLISH_FORM_SIZE",
    "MAX_PUBLISH_TEXT_SIZE",
    "STARTER_CHANNEL",
    "STARTER_HISTORY",
    "STARTER_PATHS",
    "StarterResponse",
    "banner",
    "handle",
    "parse_publish_form",
]

StarterResponse = tuple[int, bytes, list[tuple[bytes, bytes]], bytes]
"""What `handle()` returns: status, reason phrase, headers, body."""

STARTER_CHANNEL: Final = "test"

# Channel names travel unquoted in Grip-Channel headers and URLs; this alphabet needs no quoting
# in either, and 64 characters is plenty for a demo while keeping headers short.
MAX_CHANNEL_LENGTH: Final = 64
_CHANNEL = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_CHANNEL_LENGTH}}}")

# Both stream holds: under the 30-60 s idle timeouts common in proxies and load balancers
# between browser and us.
KEEP_ALIVE_TIMEOUT: Final = 20

# Long enough to show that the request is held, short enough to see the timeout response.
LONG_POLL_TIMEOUT: Final = 30

# Items per channel the proxy keeps for the starter kit when --history is not set: the page's
# long-poll names the last item it showed on each poll, and whatever was published between two
# polls is answered from here at once. A person clicking "publish" never gets 100 ahead.
STARTER_HISTORY: Final = 100

# A demo message: 4 KiB of UTF-8 fits any panel and keeps each publish small.
MAX_PUBLISH_TEXT_SIZE: Final = 4096

# The largest honest form: the text JSON-escaped at worst 6 characters per byte (`\\u001f`),
# plus the channel and the braces.
MAX_PUBLISH_FORM_SIZE: Final = 6 * MAX_PUBLISH_TEXT_SIZE + 1024

STARTER_PATHS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "/": "the demo page: all four transports and a publish form",
        "/test/sse": "Server-Sent Events (stream hold)",
        "/test/stream": "plain HTTP streaming (stream hold)",
        "/test/long-poll": "long-polling (response hold)",
        "/test/websocket": "WebSocket (WebSocket-over-HTTP with GRIP control messages)",
        "/test/publish": "POST {channel, text} as JSON: publish from the page",
    }
)

_WOH_CONTENT_TYPE: Final = b"application/websocket-events"
_TEXT_PLAIN: Final = (b"Content-Type", b"text/plain; charset=utf-8")
_SSE_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# --- requests and routing --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    channel: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Route:
    methods: tuple[str, ...]  # dispatched to the handler
    allow: tuple[str, ...]  # advertised in a 405's Allow header
    handler: Callable[[_Request], StarterResponse]


def handle(
    method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> StarterResponse:
    """Answer one request to the starter origin (see the module docstring for the paths).

    `path` is the request target in origin form, query string included. Never raises for
    well-typed arguments: unknown paths are 404, other methods 405, a bad `?channel=` 400.
    """
    route_path, _, query = path.partition("?")
    route = _ROUTES.get(route_path)
    if route is None:
        return _text(
            404, f"no such path {route_path!r}: the starter kit serves {', '.join(STARTER_PATHS)}"
        )
    if method not in route.methods:
        response = _text(405, f"{route_path} accepts {' and '.join(route.allow)}, not {method!r}")
        response[2].append((b"Allow", ", ".join(route.allow).encode("ascii")))
        return response
    channel = _query_channel(query)
    if not _CHANNEL.fullmatch(channel):
        return _text(400, _channel_problem(channel))
    return route.handler(_Request(method, channel, headers, body))


def _query_channel(query: str) -> str:
    """The `channel` query parameter, STARTER_CHANNEL when absent; "" (invalid) if repeated."""
    values = [
        value for name, value in parse_qsl(query, keep_blank_values=True) if name == "channel"
    ]
    if not values:
        return STARTER_CHANNEL
    return values[0] if len(values) == 1 else ""


def _channel_problem(channel: str) -> str:
    return (
        f"invalid channel {channel!r}: expected 1-{MAX_CHANNEL_LENGTH} characters of "
        "A-Z a-z 0-9 _ . : - (and ?channel= given at most once)"
    )


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> StarterResponse:
    return status, HTTPStatus(status).phrase.encode("ascii"), headers, body


def _text(status: int, msg: str) -> StarterResponse:
    return _response(status, [_TEXT_PLAIN], msg.encode("utf-8", "backslashreplace") + b"\n")


# --- the page --------------------------------------------------------------------------------


@functools.cache
def _page() -> bytes:
    resource = files("gripcore").joinpath("starter", "index.html")
    try:
        return resource.read_bytes()
    except OSError as exc:
        raise LocalProtocolError(
            f"the starter page is missing from the gripcore package ({exc}): "
            "starter/*.html must be installed as package data"
        ) from None


def _get_page(request: _Request) -> StarterResponse:
    return _response(200, [(b"Content-Type", b"text/html; charset=utf-8")], _page())


# --- the GRIP holds --------------------------------------------------------------------------


def _get_sse(request: _Request) -> StarterResponse:
    channel = request.channel.encode("ascii")
    headers = [
        (b"Content-Type", b"text/event-stream"),
        (b"Cache-Control", b"no-cache"),
        (b"Grip-Hold", b"stream"),
        (b"Grip-Channel", channel),
        (b"Grip-Keep-Alive", b":\\n\\n; format=cstring; timeout=%d" % KEEP_ALIVE_TIMEOUT),
    ]
    return _response(200, headers, b": subscribed to " + channel + b"\n\n")


def _get_stream(request: _Request) -> StarterResponse:
    channel = request.channel.encode("ascii")
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Grip-Hold", b"stream"),
        (b"Grip-Channel", channel),
        (b"Grip-Keep-Alive", b"\\n; format=cstring; timeout=%d" % KEEP_ALIVE_TIMEOUT),
    ]
    return _response(200, headers, b"[stream open on channel " + channel + b"]\n")


def _get_long_poll(request: _Request) -> StarterResponse:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Grip-Hold", b"response"),
        (b"Grip-Channel", request.channel.encode("ascii")),
        (b"Grip-Timeout", b"%d" % LONG_POLL_TIMEOUT),
    ]
    return _response(200, headers, b'{"messages": []}\n')


# --- WebSocket-over-HTTP ---------------------------------------------------------------------


def _websocket(request: _Request) -> StarterResponse:
    if request.method != "POST" or not _is_websocket_events(request.headers):
        return _text(
            400,
            "this is a WebSocket endpoint: open it with a WebSocket client through gripcore "
            "(which speaks WebSocket-over-HTTP to this origin: POST with Content-Type "
            "application/websocket-events)",
        )
    try:
        events = decode_events(request.body)
    except WebSocketEventsError as exc:
        return _text(400, f"invalid application/websocket-events body: {exc}")
    out: list[WebSocketEvent] = []
    for index, event in enumerate(events):
        match event:
            case Open() if index == 0:
                subscribe = encode_control_message(Subscribe(request.channel))
                out += [Open(), Text(subscribe)]
            case Open():
                return _text(400, "OPEN must be the first event of a connection's first request")
            case Text(data):
                out.append(Text(DEFAULT_MESSAGE_PREFIX + data))
            case Binary(data):
                out.append(Binary(DEFAULT_MESSAGE_PREFIX + data))
            case Close(code):
                out.append(Close(code))
                break  # nothing after a close handshake means anything
            case Disconnect():
                out = []  # the client is gone: nobody reads this response
                break
            case _:
                pass  # PING and PONG: the proxy answers the client's pings itself
    headers = [(b"Content-Type", _WOH_CONTENT_TYPE)]
    if out and isinstance(out[0], Open):
        headers.append((b"Sec-WebSocket-Extensions", b"grip"))
    return _response(200, headers, encode_events(out))


def _is_websocket_events(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.partition(b";")[0].strip().lower() == _WOH_CONTENT_TYPE
    return False


# --- publishing from the page ----------------------------------------------------------------


def _post_publish(request: _Request) -> StarterResponse:
    try:
        items = parse_publish_form(request.body)
    except PublishError as exc:
        return _text(exc.error_status_hint, str(exc))
    return _response(202, [(b"Content-Type", b"application/json")], items)


def parse_publish_form(body: bytes, *, item_id: str | None = None) -> bytes:
    """Turn the page's form body `{"channel": ..., "text": ...}` into a publish body.

    Both fields are required strings: the channel as for `?channel=`, the text non-empty and at
    most MAX_PUBLISH_TEXT_SIZE bytes of UTF-8. Returns compact JSON `{"items": [item]}` whose
    item carries all three formats (see the module docstring). With `item_id` (the proxy gives
    each form publish a random one), the item, its SSE event and its long-poll body carry that
    id, so a long-poll or a reconnecting EventSource can resume after it from the history. Raises `PublishError` for a
    body over MAX_PUBLISH_FORM_SIZE, invalid JSON, a missing, unknown or mistyped field, a bad
    channel or a bad text, and `LocalProtocolError` if `body` is not bytes.
    """
    if not isinstance(body, bytes):
        raise LocalProtocolError(f"a publish form body must be bytes, not {type(body).__name__}")
    if len(body) > MAX_PUBLISH_FORM_SIZE:
        raise PublishError(
            f"publish form body of {len(body)} bytes is over the limit of "
            f"{MAX_PUBLISH_FORM_SIZE} bytes"
        )
    try:
        form = json.loads(str(body, "utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise PublishError(f"Body is not valid JSON: {exc}") from None
    if not isinstance(form, dict):
        raise PublishError(
            'publish form must be a JSON object {"channel": ..., "text": ...}, '
            f"not {type(form).__name__}"
        )
    unknown = sorted(set(form) - {"channel", "text"})
    if unknown:
        raise PublishError(f"publish form has unknown fields {unknown}: only channel and text")
    channel = _form_string(form, "channel")
    if not _CHANNEL.fullmatch(channel):
        raise PublishError(f"publish form field 'channel': {_channel_problem(channel)}")
    text = _form_string(form, "text")
    if not text:
        raise PublishError("publish form field 'text' is empty")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PublishError(
            "publish form field 'text' is not valid Unicode (lone surrogate)"
        ) from None
    if size > MAX_PUBLISH_TEXT_SIZE:
        raise PublishError(
            f"publish form field 'text' is {size} bytes of UTF-8, over the limit of "
            f"{MAX_PUBLISH_TEXT_SIZE}"
        )
    return _publish_body(channel, text, item_id)


def _form_string(form: dict[str, object], name: str) -> str:
    value = form.get(name)
    if not isinstance(value, str):
        problem = "missing" if name not in form else f"a {type(value).__name__}"
        raise PublishError(f"publish form field {name!r} must be a string, not {problem}")
    return value


def _publish_body(channel: str, text: str, item_id: str | None = None) -> bytes:
    # SSE ends a field at CR, LF or CRLF: one `data:` line per line keeps the text one event,
    # which EventSource rejoins with "\n".
    sse = "".join(f"data: {line}\n" for line in _SSE_LINE_BREAK.split(text)) + "\n"
    poll: dict[str, object] = {"messages": [text]}
    if item_id is not None:
        sse = f"id: {item_id}\n" + sse
        poll["id"] = item_id
    item: dict[str, object] = {
        "channel": channel,
        "formats": {
            "http-stream": {"content": sse},
            "ws-message": {"content": text},
            "http-response": {"body": json.dumps(poll) + "\n"},
        },
    }
    if item_id is not None:
        item = {"id": item_id, **item}
    return json.dumps({"items": [item]}, separators=(",", ":")).encode("ascii")


# --- the CLI banner --------------------------------------------------------------------------


def banner(listen_url: str, publish_url: str) -> str:
    """The text `gripcore serve` prints at start when running the starter kit.

    `listen_url` is the proxy's base URL (`http://127.0.0.1:7999`); `publish_url` the full URL
    of the publish endpoint (`http://127.0.0.1:5561/publish/`), used as given. Raises
    `LocalProtocolError` if either is not an http:// or https:// URL.
    """
    for what, url in (("listen_url", listen_url), ("publish_url", publish_url)):
        if not url.startswith(("http://", "https://")):
            raise LocalProtocolError(f"{what} must be an http:// or https:// URL, not {url!r}")
    base = listen_url.rstrip("/")
    ws_base = "ws" + base.removeprefix("http")
    publish = _publish_body(STARTER_CHANNEL, "hello").decode("ascii")
    form = json.dumps({"channel": STARTER_CHANNEL, "text": "hello"})
    return "\n".join(
        [
            "gripcore starter kit: no routes configured, serving the built-in demo origin.",
            "",
            f"  Open the demo page:  {base}/",
            "",
            "  Subscribe from a terminal:",
            f"    Server-Sent Events:  curl -N {shlex.quote(base + '/test/sse')}",
            f"    HTTP streaming:      curl -N {shlex.quote(base + '/test/stream')}",
            f"    long-polling:        curl -N {shlex.quote(base + '/test/long-poll')}",
            f"    WebSocket:           {ws_base}/test/websocket  (echoes what you send)",
            "",
            "  Publish to channel 'test' (one item with all three formats reaches all four",
            "  transports):",
            f"    curl -d {shlex.quote(publish)} {shlex.quote(publish_url)}",
            "",
            "  or through the proxy, as the page's form does:",
            f"    curl -d {shlex.quote(form)} {shlex.quote(base + '/test/publish')}",
            "",
            "  Add ?channel=NAME to the page and subscribe URLs for another channel.",
            "",
        ]
    )


_ROUTES: Final[Mapping[str, _Route]] = MappingProxyType(
    {
        "/": _Route(("GET",), ("GET",), _get_page),
        "/test/sse": _Route(("GET",), ("GET",), _get_sse),
        "/test/stream": _Route(("GET",), ("GET",), _get_stream),
        "/test/long-poll": _Route(("GET",), ("GET",), _get_long_poll),
        "/test/websocket": _Route(("GET", "POST"), ("POST",), _websocket),
        "/test/publish": _Route(("POST",), ("POST",), _post_publish),
    }
)
