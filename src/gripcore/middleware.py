"""WSGI and ASGI middlewares that attach GRIP to each request, with no I/O of their own.

They wrap an application and do, per request, what every origin behind a GRIP proxy repeats:

* **Grip-Sig.** With a `key`, the request's `Grip-Sig` is checked (`verify_request`): `signed` is
  True when a valid token was present, and `claims` are its claims. An invalid token counts as
  absent, as the GRIP spec asks. Without a key nothing is checked: `signed` is False. The wall
  clock comes in through `clock`, a function the caller passes (`time.time`): this module reads
  no clock itself, so tests can pass a fixed one.
* **WebSocket-over-HTTP.** For a request whose Content-Type is `application/websocket-events`,
  the body is read (bounded: `MAX_BODY_SIZE`, over it the middleware answers 413 and the app is
  not called), decoded into a `WebSocketContext` for the app, and handed on to the app unchanged
  (WSGI: `wsgi.input` is replaced by the bytes read; ASGI: the body is replayed by `receive`).
  When the app has *used* the context (its `response()` differs from what an untouched context
  would answer: accepted, sent, subscribed, closed, set meta...) and did not answer with a GRIP
  response of its own (Content-Type `application/websocket-events`, or a `Grip-*` header), the
  middleware sends `ctx.response()` instead of the app's answer: the pattern django-grip uses.
  To decide that, the app's answer to such a request is buffered (also bounded by
  `MAX_BODY_SIZE`, the proxy's own cap on WebSocket-over-HTTP responses; over it: 502). Other
  requests pass through untouched and unbuffered.

Where the app finds it:

* WSGI: `environ["grip.signed"]` (bool), `environ["grip.claims"]` (dict or None) and
  `environ["grip.wscontext"]` (`WebSocketContext`, or None when not WebSocket-over-HTTP).
* ASGI (HTTP scopes only; others pass through): `scope["state"]["grip"]`, a `GripRequest`
  (`signed`, `claims`, `wscontext`). The scope is copied with a copied `state`, so Starlette and
  FastAPI read it as `request.state.grip`. (`scope["extensions"]` is left to the server: it
  lists what the server supports.)

Errors: the constructors raise `LocalProtocolError` for a key that does not parse. Bad requests
never raise: an invalid `Content-Length` or an undecodable events body is answered 400, a body
over the limit 413. A WSGI app that never calls `start_response` for a WebSocket-over-HTTP
request it did not answer through the context raises `LocalProtocolError`.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, TypeAlias

from ._errors import LocalProtocolError, WebSocketEventsError
from ._sig import SigningKey, VerifyKey
from .origin import (
    WEBSOCKET_EVENTS_CONTENT_TYPE,
    GripResponse,
    WebSocketContext,
    _verify_key,
    is_websocket_over_http,
    verify_request,
)

__all__ = [
    "MAX_BODY_SIZE",
    "GripAsgiMiddleware",
    "GripRequest",
    "GripWsgiMiddleware",
]

# Pushpin's cap on a WebSocket-over-HTTP response body; requests batch no more than that either.
MAX_BODY_SIZE: Final = 1_000_000

KeyArg: TypeAlias = VerifyKey | SigningKey | str | bytes | Mapping[str, Any] | None
Clock: TypeAlias = Callable[[], float]
WsgiStartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
WsgiApp: TypeAlias = Callable[[dict[str, Any], WsgiStartResponse], Iterable[bytes]]
AsgiScope: TypeAlias = MutableMapping[str, Any]
AsgiMessage: TypeAlias = MutableMapping[str, Any]
AsgiReceive: TypeAlias = Callable[[], Awaitable[AsgiMessage]]
AsgiSend: TypeAlias = Callable[[AsgiMessage], Awaitable[None]]
AsgiApp: TypeAlias = Callable[[AsgiScope, AsgiReceive, AsgiSend], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GripRequest:
    """What the middleware learnt about a request: whether a valid `Grip-Sig` was present, its
    claims, and the WebSocket-over-HTTP context (None for other requests)."""

    signed: bool
    claims: dict[str, Any] | None
    wscontext: WebSocketContext | None


def _text_response(status: int, text: str) -> GripResponse:
    return GripResponse(status, [("Content-Type", "text/plain")], text.encode() + b"\n")


_TOO_LARGE: Final = _text_response(413, "Request body too large.")
_BAD_LENGTH: Final = _text_response(400, "Invalid Content-Length.")
_RESPONSE_TOO_LARGE: Final = _text_response(
    502, "WebSocket-over-HTTP response from the application too large."
)


def _parse_key(key: KeyArg) -> VerifyKey | None:
    """The key as `origin.verify_request` takes it, parsed once; None: no checking."""
    return None if key is None else _verify_key(key)


class _Grip:
    """What both middlewares share: the key, the issuer and the clock."""

    def __init__(self, key: KeyArg, iss: str | None, clock: Clock) -> None:
        self._key = _parse_key(key)
        self._iss = iss
        self._clock = clock

    def _claims(self, headers: list[tuple[bytes, bytes]]) -> dict[str, Any] | None:
        if self._key is None:
            return None
        return verify_request(headers, self._key, self._clock(), iss=self._iss)


def _declared_length(value: bytes | None) -> int | None:
    """The Content-Length: None when absent, -1 when not a decimal number."""
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        return -1
    return int(value)


def _decode(headers: list[tuple[bytes, bytes]], body: bytes) -> WebSocketContext | GripResponse:
    try:
        return WebSocketContext(headers, body)
    except WebSocketEventsError as exc:
        return _text_response(400, f"Invalid WebSocket-over-HTTP request body: {exc.msg}")


def _replacement(
    ctx: WebSocketContext,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    app_headers: Iterable[tuple[bytes, bytes]] | None,
) -> GripResponse | None:
    """`ctx.response()` when the app used the context and gave no GRIP answer, else None."""
    if app_headers is not None:
        for name, value in app_headers:
            name = name.lower()
            if name.startswith(b"grip-"):
                return None
            content_type = value.split(b";", 1)[0].strip().lower()
            if name == b"content-type" and content_type == WEBSOCKET_EVENTS_CONTENT_TYPE.encode():
                return None
    response = ctx.response()
    if response == WebSocketContext(headers, body).response():
        return None
    return response


# --- WSGI --------------------------------------------------------------------------------------


def _environ_headers(environ: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The request headers of a WSGI environ, as latin-1 byte pairs (PEP 3333)."""
    out = []
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            header = name[5:]
        elif name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            header = name
        else:
            continue
        out.append((header.replace("_", "-").encode("latin-1"), str(value).encode("latin-1")))
    return out


def _read_wsgi_body(environ: Mapping[str, Any]) -> bytes | GripResponse:
    raw = environ.get("CONTENT_LENGTH") or None
    length = _declared_length(None if raw is None else str(raw).encode("latin-1"))
    if length == -1:
        return _BAD_LENGTH
    stream = environ["wsgi.input"]
    if length is None:
        if not environ.get("wsgi.input_terminated"):
            return b""
        length = MAX_BODY_SIZE + 1  # read to the end, one byte past the limit at most
    elif length > MAX_BODY_SIZE:
        return _TOO_LARGE
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    body = b"".join(chunks)
    return _TOO_LARGE if len(body) > MAX_BODY_SIZE else body


def _send_wsgi(start_response: WsgiStartResponse, response: GripResponse) -> list[bytes]:
    headers = [*response.headers, ("Content-Length", str(len(response.body)))]
    start_response(f"{response.status} {HTTPStatus(response.status).phrase}", headers)
    return [response.body]


class _CapturedResponse:
    """A WSGI app's answer, held until the middleware knows whether to send or replace it."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None
        self.chunks: list[bytes] = []
        self.size = 0

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status, self.headers, self.exc_info = status, headers, exc_info
        return self.write

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size <= MAX_BODY_SIZE:
            self.chunks.append(data)

    def header_bytes(self) -> list[tuple[bytes, bytes]] | None:
        if self.status is None:
            return None
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]


class GripWsgiMiddleware(_Grip):
    """WSGI middleware: `app = GripWsgiMiddleware(app, key="secret", clock=time.time)`.

    Sets `environ["grip.signed"]`, `environ["grip.claims"]` and `environ["grip.wscontext"]`, and
    answers a WebSocket-over-HTTP request with the context's response when the app used it (see
    the module docs). `key`: an HS256 secret, a public key (PEM or JWK) or a parsed key, or None
    to check nothing; `iss`: the issuer the token must name; `clock`: wall-clock epoch seconds.
    Raises `LocalProtocolError` for a key that does not parse.
    """

    def __init__(
        self, app: WsgiApp, *, key: KeyArg = None, iss: str | None = None, clock: Clock
    ) -> None:
        super().__init__(key, iss, clock)
        self.app = app

    def __call__(
        self, environ: dict[str, Any], start_response: WsgiStartResponse
    ) -> Iterable[bytes]:
        headers = _environ_headers(environ)
        claims = self._claims(headers)
        environ["grip.signed"] = claims is not None
        environ["grip.claims"] = claims
        environ["grip.wscontext"] = None
        if not is_websocket_over_http(headers):
            return self.app(environ, start_response)
        body = _read_wsgi_body(environ)
        if isinstance(body, GripResponse):
            return _send_wsgi(start_response, body)
        ctx = _decode(headers, body)
        if isinstance(ctx, GripResponse):
            return _send_wsgi(start_response, ctx)
        environ["grip.wscontext"] = ctx
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        captured = _CapturedResponse()
        result = self.app(environ, captured.start_response)
        try:
            for chunk in result:
                captured.write(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        replacement = _replacement(ctx, headers, body, captured.header_bytes())
        if replacement is not None:
            return _send_wsgi(start_response, replacement)
        if captured.status is None:
            raise LocalProtocolError("the WSGI application did not call start_response")
        if captured.size > MAX_BODY_SIZE:
            return _send_wsgi(start_response, _RESPONSE_TOO_LARGE)
        start_response(captured.status, captured.headers, captured.exc_info)
        return captured.chunks


# --- ASGI --------------------------------------------------------------------------------------


async def _send_asgi(send: AsgiSend, response: GripResponse) -> None:
    headers = [*response.header_bytes(), (b"content-length", str(len(response.body)).encode())]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _read_asgi_body(
    headers: list[tuple[bytes, bytes]], receive: AsgiReceive
) -> bytes | GripResponse | None:
    """The request body; an error response; None when the client went away first."""
    length = _declared_length(next((v for k, v in headers if k == b"content-length"), None))
    if length == -1:
        return _BAD_LENGTH
    if length is not None and length > MAX_BODY_SIZE:
        return _TOO_LARGE
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_SIZE:
            return _TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class GripAsgiMiddleware(_Grip):
    """ASGI middleware: `app = GripAsgiMiddleware(app, key="secret", clock=time.time)`.

    For HTTP scopes, puts a `GripRequest` in `scope["state"]["grip"]` (Starlette/FastAPI:
    `request.state.grip`) and answers a WebSocket-over-HTTP request with the context's response
    when the app used it (see the module docs); other scopes pass through. Arguments and errors
    as `GripWsgiMiddleware`.
    """

    def __init__(
        self, app: AsgiApp, *, key: KeyArg = None, iss: str | None = None, clock: Clock
    ) -> None:
        super().__init__(key, iss, clock)
        self.app = app

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(bytes(k).lower(), bytes(v)) for k, v in scope.get("headers", ())]
        claims = self._claims(headers)
        if not is_websocket_over_http(headers):
            info = GripRequest(claims is not None, claims, None)
            await self.app(_with_grip(scope, info), receive, send)
            return
        body = await _read_asgi_body(headers, receive)
        if body is None:
            return
        if isinstance(body, GripResponse):
            await _send_asgi(send, body)
            return
        ctx = _decode(headers, body)
        if isinstance(ctx, GripResponse):
            await _send_asgi(send, ctx)
            return
        info = GripRequest(claims is not None, claims, ctx)
        await self._call_ws(_with_grip(scope, info), headers, body, ctx, receive, send)

    async def _call_ws(
        self,
        scope: AsgiScope,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        ctx: WebSocketContext,
        receive: AsgiReceive,
        send: AsgiSend,
    ) -> None:
        replayed = False
        start: AsgiMessage | None = None
        messages: list[AsgiMessage] = []
        size = 0

        async def replay() -> AsgiMessage:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: AsgiMessage) -> None:
            nonlocal start, size
            if message["type"] == "http.response.start":
                start = message
                return
            size += len(message.get("body", b""))
            if size <= MAX_BODY_SIZE:
                messages.append(message)

        await self.app(scope, replay, capture)
        app_headers = None
        if start is not None:
            app_headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", ())]
        replacement = _replacement(ctx, headers, body, app_headers)
        if replacement is not None:
            await _send_asgi(send, replacement)
        elif size > MAX_BODY_SIZE:
            await _send_asgi(send, _RESPONSE_TOO_LARGE)
        elif start is not None:
            await send(start)
            for message in messages:
                await send(message)


def _with_grip(scope: AsgiScope, info: GripRequest) -> AsgiScope:
    return {**scope, "state": {**scope.get("state", {}), "grip": info}}
