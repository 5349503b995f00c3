"""The HTTP publish API, as a pure function from a request to a response and items.

Paths (pushpin-behaviour.md section 5.2, plus Fastly Fanout's): `POST /publish` (one trailing
slash ignored) and `POST /service/{SERVICE_ID}/publish/`; `GET /` answers a short text so that
health checks have something to hit. Both adapters call `handle_publish_request` and then hand
the items to the broker: the 200 goes out only after every item validated, never before.

Answers follow Pushpin: `Published\\n` as text, or `{"message": "Published"}` when the client
prefers JSON (`Accept` negotiation: the last recognised media range wins; none recognised ->
406); 400 with the validation message; 405 with `Allow: POST`; 411 without Content-Length (the
adapter tells us); 413 for an over-limit body (Pushpin answers 400 there; 413 is the honest
status, a deliberate difference). Optional authentication (off by default, as Pushpin, which
relies on binding to loopback): a static key given as `Authorization: Bearer KEY`, a JWT
signed with that key (HS256; `exp` and, when configured, `iss` checked), or `Fastly-Key: KEY`
on the Fastly path; anything else is 401 and nothing is published. When the engine cannot take
the items (the Redis engine without its Redis), the adapter answers with
`engine_unavailable_response`: 503 and the reason, never a silent drop.
`GET /metrics` serves the Prometheus text the adapter renders (no authentication: like the
publish API itself, the listener is meant for loopback or a private network).
Health, for process managers and load balancers (docs/operations.md): `GET /healthz` answers
200 whenever the process can answer at all (liveness); `GET /readyz` answers 200 when the
node says it is ready, else 503 with the node's reason (`readiness`: listeners not yet bound,
the engine's Redis unreachable, shutting down), so a load balancer stops sending.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._errors import PublishError
from ._items import DEFAULT_MAX_CONTENT_SIZE, Item, parse_publish_body
from ._sig import SigningKey, is_valid_sig

__all__ = [
    "DEFAULT_MAX_PUBLISH_BODY",
    "METRICS_CONTENT_TYPE",
    "PublishResponse",
    "engine_unavailable_response",
    "handle_publish_request",
]

METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

# Pushpin's push_in_http_max_body_size: a batch of ~30 maximum-size items.
DEFAULT_MAX_PUBLISH_BODY = 1_000_000

_FASTLY_PATH = re.compile(r"/service/([A-Za-z0-9_-]{1,64})/publish/?")
_TEXT = ("text/plain", "text/*", "*/*", "*")
_JSON = ("application/json", "application/*")


@dataclass(frozen=True, slots=True)
class PublishResponse:
    """What to answer, and the validated items to publish (empty unless status is 200)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    items: list[Item] = field(default_factory=list)


def _wants_json(headers: Sequence[tuple[bytes, bytes]]) -> bool | None:
    """False for text, True for JSON, None when nothing acceptable was asked for."""
    accepts = [v for n, v in headers if n.lower() == b"accept"]
    if not accepts:
        return False
    choice: bool | None = None
    for value in accepts:
        for part in value.decode("latin-1").split(","):
            media = part.split(";", 1)[0].strip().lower()
            if media in _TEXT:
                choice = False
            elif media in _JSON:
                choice = True
    return choice


def _answer(
    status: int, message: str, as_json: bool, extra: list[tuple[bytes, bytes]] | None = None
) -> PublishResponse:
    if as_json:
        body = json.dumps({"message": message}).encode() + b"\n"
        ctype = b"application/json"
    else:
        body = message.encode() + b"\n"
        ctype = b"text/plain"
    return PublishResponse(status, [(b"Content-Type", ctype), *(extra or [])], body)


def _authorized(
    headers: Sequence[tuple[bytes, bytes]],
    key: str | None,
    fastly_path: bool,
    *,
    iss: str | None,
    now: float | None,
) -> bool:
    """The static key as a bearer token (or `Fastly-Key` on the Fastly path), or a JWT signed
    with it (HS256, as GRIP publishers such as pubcontrol send: `exp` checked against `now`,
    `iss` against `iss` when one is configured)."""
    if key is None:
        return True
    want = key.encode()
    for name, value in headers:
        lower = name.lower()
        if lower == b"authorization" and value[:7].lower() == b"bearer ":
            token = value[7:].strip()
            if hmac.compare_digest(token, want):
                return True
            if now is not None and token.count(b".") == 2:
                signing = SigningKey("HS256", want)
                if is_valid_sig(token, signing.verify_key, now=now, iss=iss):
                    return True
        elif lower == b"fastly-key" and fastly_path and hmac.compare_digest(value.strip(), want):
            return True
    return False


def handle_publish_request(
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    *,
    publish_key: str | None = None,
    max_body: int = DEFAULT_MAX_PUBLISH_BODY,
    max_content_size: int = DEFAULT_MAX_CONTENT_SIZE,
    metrics: Callable[[], bytes] | None = None,
    publish_iss: str | None = None,
    now: float | None = None,
    readiness: Callable[[], str | None] | None = None,
) -> PublishResponse:
    """Answer one publish API request. Never raises for what the client sent. `metrics`, when
    given, renders the Prometheus text served at `GET /metrics`. `now` (wall-clock seconds)
    enables JWT bearer tokens signed with `publish_key`; `publish_iss` is the issuer they
    must carry. `readiness`, when given, enables `GET /healthz` and `GET /readyz`: it returns
    None when ready, else why not."""
    wants_json = _wants_json(headers)
    as_json = bool(wants_json)
    path = target.split(b"?", 1)[0].decode("latin-1")
    if path == "/":
        return _answer(200, "gripcore API", as_json)
    if path == "/metrics" and metrics is not None:
        if method not in (b"GET", b"HEAD"):
            return _answer(405, "Method Not Allowed", as_json, [(b"Allow", b"GET")])
        return PublishResponse(200, [(b"Content-Type", METRICS_CONTENT_TYPE)], metrics())
    if path in ("/healthz", "/readyz") and readiness is not None:
        if method not in (b"GET", b"HEAD"):
            return _answer(405, "Method Not Allowed", as_json, [(b"Allow", b"GET")])
        if path == "/healthz":
            return _answer(200, "ok", as_json)
        reason = readiness()
        if reason is None:
            return _answer(200, "ready", as_json)
        return _answer(503, f"not ready: {reason}", as_json)
    fastly = _FASTLY_PATH.fullmatch(path) is not None
    if (path.rstrip("/") != "/publish" or path.endswith("//")) and not fastly:
        return _answer(404, "Not Found", as_json)
    if method != b"POST":
        return _answer(405, "Method Not Allowed", as_json, [(b"Allow", b"POST")])
    if wants_json is None:
        return _answer(
            406, "Not Acceptable. Supported formats are text/plain and application/json.", False
        )
    if not _authorized(headers, publish_key, fastly, iss=publish_iss, now=now):
        return _answer(
            401, "Unauthorized", as_json, [(b"WWW-Authenticate", b'Bearer realm="gripcore"')]
        )
    if max_body and len(body) > max_body:
        return _answer(413, f"Request body too large (limit {max_body} bytes).", as_json)
    try:
        items = parse_publish_body(body, max_content_size=max_content_size)
    except PublishError as exc:
        return _answer(exc.error_status_hint, exc.msg, as_json)
    response = _answer(200, "Published", as_json)
    return PublishResponse(response.status, response.headers, response.body, items)


def engine_unavailable_response(
    headers: Sequence[tuple[bytes, bytes]], reason: str
) -> PublishResponse:
    """The 503 for a publish whose items the engine could not take (`reason` says why), in the
    format the request asked for. The items may have reached some nodes (a batch cut short by
    the outage), so the message says to retry: items with ids are deduplicated."""
    message = (
        f"Service Unavailable: the engine cannot take items now ({reason}); "
        "they may not have been published, retry later"
    )
    return _answer(503, message, bool(_wants_json(headers)), [(b"Retry-After", b"1")])
