"""Publishing to a GRIP service, without I/O: targets, requests, batching, retries and errors.

A publisher POSTs `{"items": [...]}` to a GRIP service's publish endpoint. Three targets:

* **gripcore or Pushpin**: `POST {url}/publish/`, unauthenticated (Pushpin relies on binding to
  loopback), or with `Authorization: Bearer KEY` (gripcore's `publish_key`), or with a JWT
  minted from `iss` and `key` for every request (HS256, claims `iss` and `exp = now + 3600`), as
  pubcontrol does for services that check it.
* **Fastly Fanout**: `POST https://api.fastly.com/service/{service_id}/publish/` (the trailing
  slash is required) with `Fastly-Key: TOKEN`. gripcore's own publish API answers on the same
  path, so a Fanout publisher can be tested against a local gripcore.

Strategy. `PublishPlan` is the whole publish of some items as a small state machine that both
adapters drive identically (sync `http.client`, asyncio):

    plan = PublishPlan(target, items)
    while (request := plan.next_request(now=time.time())) is not None:
        try:
            status, headers, body = send(request)       # the adapter's I/O
        except OSError as exc:
            delay = plan.connection_failed(str(exc))    # raises PublishFailed when exhausted
        else:
            delay = plan.response_received(status, headers, body)  # raises PublishFailed
        sleep(delay)

Items are split into batches of at most `max_batch_items` items and `max_batch_bytes` bytes of
body, each item encoded once (linear in the input). A batch that fails transiently (a connection
error, 429, any 5xx) is retried after an exponential backoff (`RetryPolicy`: base * 2**n, capped,
plus injected jitter, and at least what `Retry-After` asks, within bounds); other statuses (4xx
but 429, 3xx) are final. A final failure raises `PublishFailed` with the status, the server's
message (Pushpin's text body, gripcore's or Fastly's JSON) and how many items earlier batches
already published. Nothing is swallowed and nothing runs in the background, unlike pubcontrol.

The convenience builders (`sse_item`, `stream_item`, `ws_item`, `response_item`, `close_item`,
`hint_item`, `refresh_item`) return validated `Item`s for the common publishes.

Errors: arguments that cannot make a valid target, item or request raise `LocalProtocolError`;
a publish that the service refused or that could not reach it raises `PublishFailed` (a
`PublishError`). The core never reads the clock (`now` comes in, for the JWT) nor a random
source (jitter comes from an injected callable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

from ._errors import LocalProtocolError, PublishError
from ._items import (
    HttpResponseFormat,
    HttpStreamFormat,
    Item,
    WsMessageFormat,
    item_to_json,
)
from ._sig import DEFAULT_SIG_TTL, SigningKey, mint_sig, parse_key_spec

__all__ = [
    "DEFAULT_BASE_DELAY",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_ITEMS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "FASTLY_API_URL",
    "MAX_ERROR_MESSAGE",
    "MAX_RESPONSE_BODY",
    "MAX_RETRY_AFTER",
    "PublishConveniences",
    "PublishFailed",
    "PublishPlan",
    "PublishRequest",
    "PublishTarget",
    "RetryPolicy",
    "batch_bodies",
    "build_request",
    "close_item",
    "hint_item",
    "publish_target",
    "refresh_item",
    "response_item",
    "sse_event",
    "sse_item",
    "stream_item",
    "ws_item",
]

FASTLY_API_URL: Final = "https://api.fastly.com"

# Pushpin's push_in_http_max_body_size (and gripcore's DEFAULT_MAX_PUBLISH_BODY): a larger body
# is refused whole.
DEFAULT_MAX_BATCH_BYTES: Final = 1_000_000
# The service validates a batch as a whole and rejects it for one bad item; 100 items bounds what
# one bad item takes down with it and how long one request takes.
DEFAULT_MAX_BATCH_ITEMS: Final = 100
# Three retries ride out a proxy restart or a short overload (0.5 + 1 + 2 s plus jitter).
DEFAULT_RETRIES: Final = 3
# First backoff: long enough for a restarting local proxy, short for an interactive caller.
DEFAULT_BASE_DELAY: Final = 0.5
# Backoff cap: past 8 s a caller is better told than kept waiting.
DEFAULT_MAX_DELAY: Final = 8.0
# Up to half a second of random extra delay keeps many publishers from retrying in lockstep.
DEFAULT_JITTER: Final = 0.5
# A Retry-After is honoured up to a minute; a longer one is the server asking us to give up.
MAX_RETRY_AFTER: Final = 60.0
# Socket timeout per request, in seconds (adapters): a publish API answers in milliseconds.
DEFAULT_TIMEOUT: Final = 10.0
# A publish answer is a short message; adapters read at most this much of a response body.
MAX_RESPONSE_BODY: Final = 65_536
# The server's message is quoted in PublishFailed up to this many characters (one log line).
MAX_ERROR_MESSAGE: Final = 500

_USER_AGENT: Final = "gripcore-publisher"
_FASTLY_SERVICE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HEADER_VALUE: Final = re.compile(r"[\x21-\x7e](?:[ \t]*[\x21-\x7e])*")
_SSE_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")


def _fail(message: str) -> LocalProtocolError:
    return LocalProtocolError(message)


# --- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishTarget:
    """Where and how to publish: `scheme://host:port` + `path`, and the credentials to send.

    At most one of `bearer` (static `Authorization: Bearer`), `jwt_key` (a JWT minted per request
    with issuer `jwt_iss`) and `fastly_key` (`Fastly-Key`). Build it with `publish_target`.
    Raises `LocalProtocolError` for invalid fields.
    """

    scheme: Literal["http", "https"]
    host: str
    port: int
    path: str
    bearer: str | None = field(default=None, repr=False)
    jwt_iss: str | None = None
    jwt_key: SigningKey | None = field(default=None, repr=False)
    fastly_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise _fail(f"publish URL scheme must be http or https, not {self.scheme!r}")
        if not isinstance(self.host, str) or not self.host or not self.host.isprintable():
            raise _fail(f"publish URL host is invalid: {self.host!r}")
        if type(self.port) is not int or not 0 < self.port < 65536:
            raise _fail(f"publish URL port must be 1..65535, not {self.port!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise _fail(f"publish path must start with '/', not {self.path!r}")
        for name, value in (("key", self.bearer), ("fastly_key", self.fastly_key)):
            if value is not None and not (
                isinstance(value, str) and _HEADER_VALUE.fullmatch(value)
            ):
                raise _fail(f"{name} must be visible ASCII text a header can carry")
        if (self.jwt_key is None) != (self.jwt_iss is None):
            raise _fail("a minted JWT needs both iss and key")
        if sum(x is not None for x in (self.bearer, self.jwt_key, self.fastly_key)) > 1:
            raise _fail("give one kind of credentials: key, iss+key, or fastly_key")

    @property
    def url(self) -> str:
        """The publish endpoint's URL, for messages."""
        return f"{self.scheme}://{self._authority}{self.path}"

    @property
    def _authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _hs256_key(key: str | bytes) -> SigningKey:
    if isinstance(key, bytes):
        if not key:
            raise _fail("key must not be empty")
        return SigningKey("HS256", key)
    signing = parse_key_spec(key)  # `base64:...` as in GRIP URLs, else the UTF-8 secret
    if signing is None:
        raise _fail("key must not be empty")
    return signing


def publish_target(
    url: str | None = None,
    *,
    key: str | bytes | None = None,
    iss: str | None = None,
    fastly_service: str | None = None,
    fastly_key: str | None = None,
) -> PublishTarget:
    """Build a `PublishTarget`.

    gripcore/Pushpin: `url` is the service's base URL (`http://localhost:5561`); `/publish/` is
    appended unless the path already ends with `/publish` (a GRIP URL's `iss` and `key` query
    parameters are read, as gripcontrol's `parse_grip_uri` does). `key` alone is sent as
    `Authorization: Bearer KEY`; with `iss` a JWT is minted from them for each request (a
    `base64:` key is decoded). Fastly: `fastly_service` and `fastly_key` (`url` defaults to
    `https://api.fastly.com`). Raises `LocalProtocolError` for an unusable combination or URL.
    """
    if fastly_service is not None:
        if not isinstance(fastly_service, str) or not _FASTLY_SERVICE.fullmatch(fastly_service):
            raise _fail(f"fastly_service must be a Fastly service id, not {fastly_service!r}")
        if fastly_key is None:
            raise _fail("publishing to Fastly needs fastly_key (an API token)")
        if key is not None or iss is not None:
            raise _fail("Fastly takes fastly_key; key and iss are for gripcore and Pushpin")
        url = FASTLY_API_URL if url is None else url
    elif fastly_key is not None:
        raise _fail("fastly_key needs fastly_service")
    if not isinstance(url, str):
        raise _fail("a publish URL is required (or fastly_service)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _fail(f"publish URL {url!r} is invalid: {exc}") from None
    if parts.fragment or parts.username is not None or not parts.hostname:
        raise _fail(f"publish URL {url!r} must be scheme://host[:port][/path] with no userinfo")
    if parts.scheme.lower() not in ("http", "https"):
        raise _fail(f"publish URL scheme must be http or https, not {parts.scheme!r}")
    scheme: Literal["http", "https"] = "https" if parts.scheme.lower() == "https" else "http"
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"iss", "key"}
    if unknown:
        raise _fail(f"publish URL has unknown query parameters: {sorted(unknown)}")
    if "iss" in query:
        iss = iss or query["iss"][0]
    if "key" in query:
        # parse_qs turns a base64 `+` into a space, as gripcontrol works around.
        key = key or query["key"][0].replace(" ", "+")
    path = parts.path.rstrip("/")
    if fastly_service is not None:
        path = f"{path}/service/{fastly_service}/publish/"
    elif not path.endswith("/publish"):
        path += "/publish/"
    else:
        path += "/"
    bearer = jwt_key = None
    if key is not None and iss is not None:
        jwt_key = _hs256_key(key)
    elif key is not None:
        bearer = key.decode("latin-1") if isinstance(key, bytes) else key
    elif iss is not None:
        raise _fail("iss needs a key to sign the JWT with")
    return PublishTarget(
        scheme,
        parts.hostname,
        port if port is not None else (443 if scheme == "https" else 80),
        quote(path, safe="/%:@!$&'()*+,;=-._~"),
        bearer=bearer,
        jwt_iss=iss if jwt_key is not None else None,
        jwt_key=jwt_key,
        fastly_key=fastly_key,
    )


# --- requests and batches ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """One HTTP request to send: `method` `path` to `target`, with `headers` and `body`."""

    target: PublishTarget
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    items: int


def build_request(
    target: PublishTarget, body: bytes, *, now: float, items: int = 0
) -> PublishRequest:
    """The POST carrying `body` (a publish body) to `target`; `now` (epoch seconds) dates a
    minted JWT. Raises `LocalProtocolError` for a non-target or non-bytes body."""
    if not isinstance(target, PublishTarget):
        raise _fail(f"target must be a PublishTarget, not {type(target).__name__}")
    if not isinstance(body, bytes):
        raise _fail(f"body must be bytes, not {type(body).__name__}")
    headers = [
        ("Host", target._authority),
        ("User-Agent", _USER_AGENT),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    if target.bearer is not None:
        headers.append(("Authorization", f"Bearer {target.bearer}"))
    elif target.jwt_key is not None:
        assert target.jwt_iss is not None  # PublishTarget checks they come together
        token = mint_sig(target.jwt_key, target.jwt_iss, now, ttl=DEFAULT_SIG_TTL)
        headers.append(("Authorization", f"Bearer {token}"))
    elif target.fastly_key is not None:
        headers.append(("Fastly-Key", target.fastly_key))
    return PublishRequest(target, "POST", target.path, tuple(headers), body, items)


_BODY_START: Final = b'{"items":['
_BODY_END: Final = b"]}"


def _encode_item(item: Item) -> bytes:
    return json.dumps(item_to_json(item), ensure_ascii=False, separators=(",", ":")).encode()


def batch_bodies(
    items: Iterable[Item],
    *,
    max_items: int = DEFAULT_MAX_BATCH_ITEMS,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> list[tuple[int, bytes]]:
    """Split `items` into publish bodies, in order: `(item count, body)` pairs, each body at most
    `max_bytes` long and carrying at most `max_items` items; each item is encoded once.

    Raises `LocalProtocolError` for a non-item, invalid limits, or an item that alone would make a
    body over `max_bytes`.
    """
    if type(max_items) is not int or max_items < 1:
        raise _fail(f"max_batch_items must be an int >= 1, not {max_items!r}")
    overhead = len(_BODY_START) + len(_BODY_END)
    if type(max_bytes) is not int or max_bytes <= overhead:
        raise _fail(f"max_batch_bytes must be an int > {overhead}, not {max_bytes!r}")
    bodies: list[tuple[int, bytes]] = []
    batch: list[bytes] = []
    size = overhead
    for index, item in enumerate(items):
        if not isinstance(item, Item):
            raise _fail(f"item {index} must be an Item, not {type(item).__name__}")
        encoded = _encode_item(item)
        if overhead + len(encoded) > max_bytes:
            raise _fail(
                f"item {index} (channel {item.channel!r}) encodes to {len(encoded)} bytes,"
                f" over the {max_bytes}-byte batch limit"
            )
        if batch and (len(batch) == max_items or size + 1 + len(encoded) > max_bytes):
            bodies.append((len(batch), _BODY_START + b",".join(batch) + _BODY_END))
            batch, size = [], overhead
        size += len(encoded) + (1 if batch else 0)
        batch.append(encoded)
    if batch:
        bodies.append((len(batch), _BODY_START + b",".join(batch) + _BODY_END))
    return bodies


# --- retries and errors ------------------------------------------------------------------------


def _check_seconds(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise _fail(f"{what} must be a number of seconds >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure.

    The wait before retry n (0-based) is `min(max_delay, base_delay * 2**n) + jitter * r` with
    `r` in [0, 1) from the injected random source. Raises `LocalProtocolError` for invalid values.
    """

    retries: int = DEFAULT_RETRIES
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if type(self.retries) is not int or not 0 <= self.retries <= 100:
            raise _fail(f"retries must be an int in 0..100, not {self.retries!r}")
        _check_seconds("base_delay", self.base_delay)
        _check_seconds("max_delay", self.max_delay)
        _check_seconds("jitter", self.jitter)

    def backoff(self, retry: int, random_fraction: float = 0.0) -> float:
        """Seconds to wait before retry number `retry` (0-based)."""
        fraction = min(max(float(random_fraction), 0.0), 1.0)
        return min(self.max_delay, self.base_delay * 2.0 ** min(retry, 64)) + self.jitter * fraction


class PublishFailed(PublishError):
    """A publish the service refused, or could not be reached for.

    `status` is the HTTP status (None: no answer, e.g. connection refused), `message` the
    server's message (or the connection error), `retryable` whether it was a transient failure
    (retries ran out), `attempts` how many times the failing batch was tried, and `published`
    how many items earlier batches of the same call had already published.
    """

    error_status_hint = 502

    def __init__(
        self,
        url: str,
        status: int | None,
        message: str,
        *,
        retryable: bool,
        attempts: int = 1,
        published: int = 0,
    ) -> None:
        what = f"{status}" if status is not None else "no response"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"publish to {url} failed{tries}: {what}: {message}")
        self.url = url
        self.status = status
        self.message = message
        self.retryable = retryable
        self.attempts = attempts
        self.published = published


def _header(headers: Sequence[tuple[str | bytes, str | bytes]], name: str) -> str | None:
    for key, value in headers:
        key_text = key.decode("latin-1") if isinstance(key, bytes) else key
        if key_text.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _server_message(body: bytes) -> str:
    text = body[:MAX_RESPONSE_BODY].decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        # gripcore: {"message"}; Fastly: {"msg", "detail"}; others: {"error"}.
        parts = [str(doc[k]) for k in ("message", "msg", "detail", "error") if doc.get(k)]
        if parts:
            text = ": ".join(parts)
    text = " ".join(text.split())  # one line
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 3] + "..."
    return text or "(empty response)"


def _retry_after(headers: Sequence[tuple[str | bytes, str | bytes]]) -> float:
    value = _header(headers, "retry-after")
    text = value.strip() if value is not None else ""
    # ASCII digits only: str.isdigit() also accepts "²" and other digits float() refuses
    if not text.isascii() or not text.isdigit():
        return 0.0  # absent, or an HTTP date: reading it would need the clock
    return min(float(text), MAX_RETRY_AFTER)


def _no_jitter() -> float:
    return 0.0


_State = Literal["ready", "waiting", "done"]


class PublishPlan:
    """The publish of some items, as a state machine the adapters drive (see module docstring).

    States: `ready` (next_request() gives a request), `waiting` (a request is out: report its
    outcome with response_received() or connection_failed()), `done`. `published` counts the items
    of batches that succeeded. Calls out of order raise `LocalProtocolError`.
    """

    def __init__(
        self,
        target: PublishTarget,
        items: Iterable[Item],
        *,
        policy: RetryPolicy | None = None,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        random: Callable[[], float] = _no_jitter,
    ) -> None:
        if not isinstance(target, PublishTarget):
            raise _fail(f"target must be a PublishTarget, not {type(target).__name__}")
        self.target = target
        self.policy = RetryPolicy() if policy is None else policy
        if not isinstance(self.policy, RetryPolicy):
            raise _fail(f"policy must be a RetryPolicy, not {type(policy).__name__}")
        self._bodies = batch_bodies(items, max_items=max_batch_items, max_bytes=max_batch_bytes)
        self._random = random
        self._index = 0
        self._attempts = 0
        self.published = 0
        self._state: _State = "ready" if self._bodies else "done"

    @property
    def done(self) -> bool:
        """Whether every batch was published."""
        return self._state == "done"

    def next_request(self, *, now: float) -> PublishRequest | None:
        """The request to send now, or None when all is published. `now` is epoch seconds."""
        if self._state == "done":
            return None
        if self._state != "ready":
            raise _fail("next_request() called while a request is out; report its outcome first")
        self._state = "waiting"
        self._attempts += 1
        count, body = self._bodies[self._index]
        return build_request(self.target, body, now=now, items=count)

    def _check_waiting(self, method: str) -> None:
        if self._state != "waiting":
            raise _fail(f"{method}() called with no request out")

    def _retry_or_raise(self, status: int | None, message: str, minimum: float) -> float:
        if self._attempts > self.policy.retries:
            self._state = "done"
            raise PublishFailed(
                self.target.url,
                status,
                message,
                retryable=True,
                attempts=self._attempts,
                published=self.published,
            )
        self._state = "ready"
        delay = self.policy.backoff(self._attempts - 1, self._random())
        return max(delay, minimum)

    def response_received(
        self, status: int, headers: Sequence[tuple[str | bytes, str | bytes]], body: bytes
    ) -> float:
        """Report the answer; returns the seconds to wait before the next request (0 after a
        success). Raises `PublishFailed` for a final failure (a 4xx other than 429, a 3xx, or a
        transient one when the retries are spent)."""
        self._check_waiting("response_received")
        if type(status) is not int or not 100 <= status <= 999:
            raise _fail(f"status must be an int in 100..999, not {status!r}")
        if 200 <= status < 300:
            self.published += self._bodies[self._index][0]
            self._index += 1
            self._attempts = 0
            self._state = "ready" if self._index < len(self._bodies) else "done"
            return 0.0
        message = _server_message(body)
        if status == 429 or status >= 500:
            return self._retry_or_raise(status, message, _retry_after(headers))
        self._state = "done"
        raise PublishFailed(
            self.target.url,
            status,
            message,
            retryable=False,
            attempts=self._attempts,
            published=self.published,
        )

    def connection_failed(self, reason: str) -> float:
        """Report that the request got no answer (refused, reset, timed out); returns the seconds
        to wait before retrying, or raises `PublishFailed` when the retries are spent."""
        self._check_waiting("connection_failed")
        return self._retry_or_raise(None, str(reason) or "connection failed", 0.0)


# --- convenience builders ----------------------------------------------------------------------


def _text(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(f"{what} must be a str, not {type(value).__name__}")
    return value


def _bytes(what: str, value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return _text(what, value).encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(f"{what} is not encodable as UTF-8 (lone surrogate)") from None


def sse_event(
    data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None
) -> bytes:
    """One Server-Sent Event: `event:`, `id:`, `retry:` fields, then one `data:` line per line of
    `data` (split on CR, LF or CRLF), then a blank line. Raises `LocalProtocolError` for an
    `event` or `id` with a line break (or an `id` with NUL), or a negative `retry`."""
    lines: list[str] = []
    for name, value in (("event", event), ("id", id)):
        if value is not None:
            if _SSE_LINE_BREAK.search(_text(name, value)) or (name == "id" and "\0" in value):
                raise _fail(f"SSE {name} must be one line without NUL: {value!r}")
            lines.append(f"{name}: {value}")
    if retry is not None:
        if type(retry) is not int or retry < 0:
            raise _fail(f"SSE retry must be an int >= 0 (milliseconds), not {retry!r}")
        lines.append(f"retry: {retry}")
    lines.extend(f"data: {line}" for line in _SSE_LINE_BREAK.split(_text("data", data)))
    return _bytes("SSE event", "\n".join(lines) + "\n\n")


def _item(
    channel: str,
    id: str | None,
    prev_id: str | None,
    meta: Mapping[str, str] | None,
    **formats: Any,
) -> Item:
    return Item(channel=channel, id=id, prev_id=prev_id, meta=meta or {}, **formats)


def sse_item(
    channel: str,
    data: str,
    *,
    event: str | None = None,
    event_id: str | None = None,
    retry: int | None = None,
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """An `http-stream` item carrying one SSE event (see `sse_event`; `event_id` is its `id:`
    field, `id`/`prev_id` the item's sequencing ids). Raises `LocalProtocolError`."""
    content = sse_event(data, event=event, id=event_id, retry=retry)
    return _item(channel, id, prev_id, meta, http_stream=HttpStreamFormat(content=content))


def stream_item(
    channel: str,
    content: bytes | str,
    *,
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """An `http-stream` item: `content` appended verbatim to held streams (str as UTF-8)."""
    fmt = HttpStreamFormat(content=_bytes("content", content))
    return _item(channel, id, prev_id, meta, http_stream=fmt)


def ws_item(
    channel: str,
    message: str | bytes,
    *,
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """A `ws-message` item: a text message for a str, a binary message for bytes."""
    if isinstance(message, bytes):
        fmt = WsMessageFormat(type="binary", content=message)
    else:
        fmt = WsMessageFormat(type="text", content=_bytes("message", message))
    return _item(channel, id, prev_id, meta, ws_message=fmt)


def response_item(
    channel: str,
    body: bytes | str,
    *,
    code: int = 200,
    reason: str | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """An `http-response` item: the whole response held long-polls get."""
    pairs = tuple(headers.items() if isinstance(headers, Mapping) else headers)
    fmt = HttpResponseFormat(code=code, reason=reason, headers=pairs, body=_bytes("body", body))
    return _item(channel, id, prev_id, meta, http_response=fmt)


def close_item(
    channel: str,
    *,
    code: int | None = None,
    reason: str | None = None,
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """Close held streams and WebSockets on `channel` (WebSockets with `code`/`reason`)."""
    return _item(
        channel,
        id,
        prev_id,
        meta,
        http_stream=HttpStreamFormat(action="close"),
        ws_message=WsMessageFormat(action="close", code=code, reason=reason),
    )


def hint_item(
    channel: str,
    *,
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """Hint held long-polls and streams on `channel`: the proxy re-fetches from the origin."""
    return _item(
        channel,
        id,
        prev_id,
        meta,
        http_response=HttpResponseFormat(action="hint"),
        http_stream=HttpStreamFormat(action="hint"),
    )


def refresh_item(
    channel: str,
    *,
    id: str | None = None,
    prev_id: str | None = None,
    meta: Mapping[str, str] | None = None,
) -> Item:
    """Refresh WebSocket-over-HTTP sessions on `channel`: the proxy calls the origin now."""
    return _item(channel, id, prev_id, meta, ws_message=WsMessageFormat(action="refresh"))


R = TypeVar("R")


class PublishConveniences(Generic[R]):
    """The item builders as methods, shared by the sync and the asyncio publisher: each builds
    one item and hands it to `publish`, returning what `publish` returns (the number of items
    published, or an awaitable of it)."""

    def publish(self, items: Item | Iterable[Item]) -> R:
        raise NotImplementedError

    def publish_sse(
        self,
        channel: str,
        data: str,
        *,
        event: str | None = None,
        event_id: str | None = None,
        retry: int | None = None,
        id: str | None = None,
        prev_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> R:
        """Publish one Server-Sent Event to held streams (see `sse_item`)."""
        return self.publish(
            sse_item(
                channel,
                data,
                event=event,
                event_id=event_id,
                retry=retry,
                id=id,
                prev_id=prev_id,
                meta=meta,
            )
        )

    def publish_stream(
        self,
        channel: str,
        content: bytes | str,
        *,
        id: str | None = None,
        prev_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> R:
        """Append `content` to held HTTP streams."""
        return self.publish(stream_item(channel, content, id=id, prev_id=prev_id, meta=meta))

    def publish_ws(
        self,
        channel: str,
        message: str | bytes,
        *,
        id: str | None = None,
        prev_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> R:
        """Send a WebSocket message (str: text, bytes: binary)."""
        return self.publish(ws_item(channel, message, id=id, prev_id=prev_id, meta=meta))

    def publish_response(
        self,
        channel: str,
        body: bytes | str,
        *,
        code: int = 200,
        reason: str | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        id: str | None = None,
        prev_id: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> R:
        """Answer held long-polls with this response."""
        return self.publish(
            response_item(
                channel,
                body,
                code=code,
                reason=reason,
                headers=headers,
                id=id,
                prev_id=prev_id,
                meta=meta,
            )
        )

    def publish_close(
        self, channel: str, *, code: int | None = None, reason: str | None = None
    ) -> R:
        """Close held streams and WebSockets on `channel`."""
        return self.publish(close_item(channel, code=code, reason=reason))

    def publish_hint(self, channel: str) -> R:
        """Tell held requests on `channel` to re-fetch from the origin."""
        return self.publish(hint_item(channel))

    def publish_refresh(self, channel: str) -> R:
        """Make WebSocket-over-HTTP sessions on `channel` call the origin now."""
        return self.publish(refresh_item(channel))
