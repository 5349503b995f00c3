"""Embedded mode: the GRIP proxy and the broker inside an ASGI application's own process.

`GripMiddleware(app)` stands where a GRIP proxy would stand in front of `app`, an ordinary GRIP
origin. Everything that decides anything is the sans-IO core, driven here as the asyncio
adapter drives it; this module only moves ASGI messages and arms timers:

* HTTP: the app is called with the client's request (`_proxy.app_request_headers`). A plain
  answer is relayed message by message as the app sends it (nothing buffered). A GRIP answer
  (`_instruct.is_grip_response`) is buffered (`instruct_body_limit`) and parsed
  (`_proxy.classify_response`); a hold becomes a `ResponseHold` or `StreamHold` whose actions
  are performed here: `Respond` -> one whole response, `EndStream` -> the last body message,
  `Retry` -> the app is called again with `Grip-Last` and the recorded request body.
* WebSocket: an ASGI `websocket` scope becomes a `WebSocketGateway` session; each `OriginPost`
  calls the app in process with an HTTP POST scope carrying `application/websocket-events`,
  exactly as a proxy would POST to an origin, and the answer goes back to the gateway.
* Output: the hub writes framed bytes into each subscriber's `outbuf` (raw body bytes for
  streams, WebSocket frames for WebSockets); the node (`gripcore._node.ProxyNode`, as in
  `gripcore serve`) marks their sessions and asks for one flush pass per loop iteration, and each session
  then sends everything pending in one ASGI message (`http.response.body` with
  `more_body=True`; for WebSockets, the frames are split back into messages with
  `_hub.split_ws_messages`, as ASGI sends messages, not frames).
* Timers: each session sleeps until its core session's `next_deadline()`, on the server's loop.

Publishing: `middleware.publish(items)` (and the `publish_sse`, `publish_ws`, ... builders of
`PublishConveniences`) from anywhere: on the server's loop it delivers at once; from another
thread it hands the items to the loop. The app finds the middleware in
`scope["state"]["gripcore"]` (Starlette: `request.state.gripcore`) or with
`current_middleware()`. An optional publish API path takes Pushpin's / Fanout's publish body
(`_publishapi.handle_publish_request`).

`Grip-Link` next and gone links are requests to the app itself (`_proxy.local_link_target`:
only links back to the request's own scheme, host and port are followed). Not supported in
embedded mode (docs/asgi.md): WebSocket pings and pongs (ASGI carries neither), routes, and
the Redis engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any
from urllib.parse import unquote

from gripcore._config import Config
from gripcore._engine import MemoryEngine
from gripcore._errors import InstructError, LocalProtocolError
from gripcore._holds import (
    EndStream,
    FetchNextLink,
    HoldAction,
    PostGoneLink,
    Respond,
    ResponseHold,
    Retry,
    StreamHold,
)
from gripcore._hub import Framing, Subscriber, Transport, split_ws_messages
from gripcore._instruct import Instruct, instruct_body_limit, is_grip_response, reason_phrase
from gripcore._items import Item, parse_item
from gripcore._proxy import (
    app_request_headers,
    classify_response,
    link_client_headers,
    local_link_target,
    next_link_instruct,
    origin_request_headers,
)
from gripcore._publishapi import handle_publish_request
from gripcore._publishing import PublishConveniences
from gripcore._wsgateway import OriginPost, WebSocketGateway
from gripcore._wsgrip import (
    AcceptClient,
    CloseClient,
    RejectClient,
    WebSocketAction,
    handshake_refusal,
    parse_close_payload,
)
from gripcore.middleware import AsgiApp, AsgiMessage, AsgiReceive, AsgiScope, AsgiSend

from .._system import system_node
from ..asyncio._scheduling import LoopScheduling

__all__ = ["GripMiddleware", "current_middleware"]

log = logging.getLogger("gripcore.asgi")

_DEFAULTS = Config()

# A GRIP answer whose body may be streamed by a proxy (a stream hold) is still buffered here,
# up to this much: the asyncio adapter's bound for the same case.
MAX_STREAM_INSTRUCT_BODY = 16 * 1024 * 1024
# The app's answer to one WebSocket-over-HTTP request (Pushpin's cap on those responses).
MAX_WS_RESPONSE_BODY = 1_000_000
# A client WebSocket message larger than this closes the session with 1009 (the asyncio
# adapter's bound; the gateway batches at most 200,000 bytes of client data anyway).
MAX_CLIENT_MESSAGE = 200_000
# How long `shutdown()` waits for held sessions to send their last bytes.
SHUTDOWN_WAIT = 5.0

_ERROR_BODY = b"Error while proxying to origin.\n"
_TEXT = [(b"content-type", b"text/plain")]

_current: ContextVar[GripMiddleware] = ContextVar("gripcore_asgi_middleware")


def current_middleware() -> GripMiddleware:
    """The `GripMiddleware` serving the current request (its handlers, sync ones run in a
    thread pool included). Raises `LookupError` outside a request served by one."""
    return _current.get()


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def _lower(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """ASGI header names are lower-case."""
    return [(n.lower(), v) for n, v in headers]


def _scope_headers(scope: AsgiScope) -> list[tuple[bytes, bytes]]:
    return [(bytes(n), bytes(v)) for n, v in scope.get("headers", ())]


def _request_uri(scope: AsgiScope, headers: Sequence[tuple[bytes, bytes]]) -> str:
    """The request's URI, against which relative `Grip-Link`s are resolved."""
    host = (_header(headers, b"host") or b"localhost").decode("latin-1")
    query = scope.get("query_string", b"")
    path = scope.get("raw_path") or scope["path"].encode("utf-8")
    target = bytes(path).decode("latin-1") + ("?" + bytes(query).decode("latin-1") if query else "")
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}{target}"


class GripMiddleware(PublishConveniences[int], LoopScheduling):
    """`app = GripMiddleware(inner_app)`: GRIP holds, WebSocket-over-HTTP and publishing in the
    ASGI server's own process.

    `publish_path`: also serve the publish API (`POST` with a Pushpin/Fanout body) at this
    path (default None: off); `publish_key`/`publish_iss` protect it as `gripcore serve`'s.
    `sig_key`/`sig_iss`: sign the requests the app sees with a `Grip-Sig` (what
    `gripcore.middleware.GripAsgiMiddleware(key=...)` checks). `debug`: error details in 502s,
    as `--debug`. The limits and the slow-consumer policy are `gripcore serve`'s options of
    the same names, with the same defaults. `handle_signals`: start `shutdown()` on SIGINT and
    SIGTERM, before the server's own handlers run (see `_hook_signals`).

    Raises `ConfigError` for a value `gripcore serve` would refuse (the same checks), and
    `ProtocolError` for a `sig_key` that does not parse.
    """

    def __init__(
        self,
        app: AsgiApp,
        *,
        publish_path: str | None = None,
        publish_key: str | None = None,
        publish_iss: str | None = None,
        sig_key: str | None = None,
        sig_iss: str = _DEFAULTS.sig_iss,
        debug: bool = False,
        max_request_body: int = _DEFAULTS.max_request_body,
        max_publish_body: int = _DEFAULTS.max_publish_body,
        max_content_size: int = _DEFAULTS.max_content_size,
        max_channels_per_connection: int = _DEFAULTS.max_channels_per_connection,
        max_output_buffer: int = _DEFAULTS.max_output_buffer,
        slow_consumer_policy: str = _DEFAULTS.slow_consumer_policy,
        id_cache_ttl: float = _DEFAULTS.id_cache_ttl,
        message_wait: float = _DEFAULTS.message_wait,
        handle_signals: bool = True,
    ) -> None:
        self.app = app
        self.handle_signals = handle_signals
        self.publish_path = publish_path.rstrip("/") if publish_path is not None else None
        # the options `gripcore serve` has, checked by the same rules (ConfigError)
        config = self.config = Config(
            sig_key=sig_key,
            sig_iss=sig_iss,
            publish_key=publish_key,
            publish_iss=publish_iss,
            debug=debug,
            max_request_body=max_request_body,
            max_publish_body=max_publish_body,
            max_content_size=max_content_size,
            max_channels_per_connection=max_channels_per_connection,
            max_output_buffer=max_output_buffer,
            slow_consumer_policy=slow_consumer_policy,
            id_cache_ttl=id_cache_ttl,
            message_wait=message_wait,
        )
        self.publish_key = config.publish_key
        self.publish_iss = config.publish_iss
        self.debug = config.debug
        self.max_request_body = config.max_request_body
        self.max_publish_body = config.max_publish_body
        self.max_content_size = config.max_content_size
        # the node of `gripcore serve` without its listeners: engine (hub, sequencer), signing,
        # metrics, and the flush passes and broker timer this driver schedules on the loop
        self.node = system_node(config, _clock, accepts=False)
        self.node.schedule_flush = self._schedule_flush
        self.node.set_broker_timer = self._set_broker_timer
        broker = self.node.broker
        assert isinstance(broker, MemoryEngine)  # embedded mode has the in-process engine
        self.broker = broker
        self.hub = self.broker.hub
        self.closing = False
        self.sessions: set[_Session] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._broker_timer: asyncio.TimerHandle | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    # --- ASGI ---

    async def __call__(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self._loop = asyncio.get_running_loop()
        scope = {**scope, "state": {**scope.get("state", {}), "gripcore": self}}
        token = _current.set(self)
        try:
            if kind == "websocket":
                await _WebSocketSession(self, scope, receive, send).run()
            elif self.publish_path is not None and scope["path"].rstrip("/") == self.publish_path:
                await self._publish_api(scope, receive, send)
            else:
                await _HttpRequest(self, scope, receive, send).run()
        finally:
            _current.reset(token)

    async def _lifespan(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        """Passed through to the app; on `lifespan.shutdown` the held sessions end first. An app
        that does not speak lifespan (it raises or returns without answering startup) gets it
        spoken for it, so that the middleware still hears the shutdown."""
        startup_received = answered = False

        async def app_receive() -> AsgiMessage:
            nonlocal startup_received
            message = await receive()
            if message["type"] == "lifespan.startup":
                startup_received = True
                self._hook_signals()
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
            return message

        async def app_send(message: AsgiMessage) -> None:
            nonlocal answered
            if message["type"].startswith("lifespan.startup."):
                answered = True
            await send(message)

        try:
            await self.app(scope, app_receive, app_send)
        except Exception:
            if answered:
                raise
            log.debug("the application does not support lifespan; the middleware answers it")
        if answered:
            return
        if not startup_received:
            await receive()
            self._hook_signals()
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await self.shutdown()
            await send({"type": "lifespan.shutdown.complete"})

    def _hook_signals(self) -> None:
        """Begin `shutdown()` as soon as SIGINT or SIGTERM arrives, then let the server's own
        handler run. Servers such as uvicorn send `lifespan.shutdown` only once every
        connection closed, and held requests would keep them waiting for good. Only where the
        server installed Python handlers (uvicorn run in the main thread does); they stay in
        charge, and restore what was there before when they stop."""
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if callable(previous):
                signal.signal(sig, partial(self._on_signal, loop, previous))

    def _on_signal(
        self,
        loop: asyncio.AbstractEventLoop,
        previous: Callable[[int, Any], Any],
        signum: int,
        frame: Any,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is held any more
            loop.call_soon_threadsafe(self._begin_shutdown)
        previous(signum, frame)

    def _begin_shutdown(self) -> None:
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self.shutdown())

    async def shutdown(self) -> None:
        """End every held session cleanly: streams with the end of their body, long-polls with
        their timeout response, WebSockets with 1001. Later GRIP answers end the same way at
        once. Called on `lifespan.shutdown`; call it yourself where the server sends that only
        after the connections closed (uvicorn: see docs/asgi.md)."""
        self.closing = True
        sessions = list(self.sessions)
        for session in sessions:
            session.request_shutdown()
        waits = [asyncio.ensure_future(s.ended.wait()) for s in sessions]
        if waits:
            await asyncio.wait(waits, timeout=SHUTDOWN_WAIT)
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._broker_timer is not None:
            self._broker_timer.cancel()
            self._broker_timer = None

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def sign(self) -> bytes | None:
        return self.node.sign(None)

    # --- publishing and fan-out ---

    def publish(self, items: Item | Mapping[str, Any] | Iterable[Item | Mapping[str, Any]]) -> int:
        """Publish items: `Item`s (the `gripcore._publishing` builders make them) or item
        objects as in a publish API body (`{"channel": ..., "formats": {...}}`). Returns how
        many were published. Validation happens here, in the caller: raises `PublishError` for
        an invalid item object (nothing is published then). Callable from any thread."""
        if isinstance(items, Item | Mapping):
            items = [items]
        parsed = [
            item
            if isinstance(item, Item)
            else parse_item(item, index=i, max_content_size=self.max_content_size)
            for i, item in enumerate(items)
        ]
        loop = self._loop
        if loop is None or loop.is_closed():
            # no request served yet, so nobody is subscribed: only the sequencer hears of them
            self.broker.publish(parsed, time.monotonic())
        elif _running_loop() is loop:
            self._publish_now(parsed)
        else:
            loop.call_soon_threadsafe(self._publish_now, parsed)
        return len(parsed)

    def _publish_now(self, items: Sequence[Item]) -> None:
        self.node.publish(items)

    def _schedule_flush(self) -> None:
        asyncio.get_running_loop().call_soon(self._wake_sessions)

    def _wake_sessions(self) -> None:
        """The node's dirty sessions (a slice at a time) are woken; each sends what is due in
        its own task, as ASGI sends are awaited (not the node's write pass)."""
        batch, more = self.node.take_flush_batch()
        sessions: list[Any] = batch  # the owners of this driver's subscribers: _Session
        for session in sessions:
            session.kick()
        if more:
            self._schedule_flush()

    # --- the publish API ---

    async def _publish_api(self, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
        limit = self.max_publish_body
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            if len(body) <= limit:
                body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        query = bytes(scope.get("query_string", b""))
        response = handle_publish_request(
            scope["method"].encode("ascii"),
            b"/publish/" + (b"?" + query if query else b""),
            _scope_headers(scope),
            bytes(body[: limit + 1]),
            publish_key=self.publish_key,
            max_body=limit,
            max_content_size=self.max_content_size,
            publish_iss=self.publish_iss,
            now=time.time(),
        )
        if response.items:
            self._publish_now(response.items)
            log.info("publish items=%d", len(response.items))
        await _send_whole(send, response.status, response.headers, response.body)


def _clock() -> float:
    loop = _running_loop()
    return loop.time() if loop is not None else time.monotonic()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _send_whole(
    send: AsgiSend, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes
) -> None:
    out = [(n, v) for n, v in _lower(headers) if n != b"content-length"]
    out.append((b"content-length", str(len(body)).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Answer:
    """The app's answer to one call: relayed to the client as it comes when it is not GRIP
    (`relay`), else buffered up to `limit` for the core to parse."""

    def __init__(self, relay: AsgiSend | None, limit: int | None = None) -> None:
        self._relay = relay
        self.limit = limit
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.grip = False
        self.relayed = False
        self.body = bytearray()
        self.too_large = False

    async def send(self, message: AsgiMessage) -> None:
        kind = message["type"]
        if kind == "http.response.start" and self.status is None:
            self.status = int(message["status"])
            self.headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
            self.grip = is_grip_response(self.headers)
            if not self.grip and self._relay is not None:
                self.relayed = True
                await self._relay(message)
                return
            if self.limit is None:
                limit = instruct_body_limit(self.headers)
                self.limit = limit if limit is not None else MAX_STREAM_INSTRUCT_BODY
        elif self.relayed and self._relay is not None:
            await self._relay(message)
        elif kind == "http.response.body" and self.status is not None and not self.too_large:
            self.body += message.get("body", b"")
            if self.limit is not None and len(self.body) > self.limit:
                self.too_large = True
                self.body.clear()
        elif self._relay is not None and self.status is None:
            await self._relay(message)  # out of order: the server says what is wrong with it


class _Session:
    """What the middleware knows of a held session: it can be woken and told to shut down."""

    def __init__(self) -> None:
        self.wakeup = asyncio.Event()
        self.ended = asyncio.Event()
        self.shutting_down = False
        self._timer: asyncio.TimerHandle | None = None

    def kick(self) -> None:
        self.wakeup.set()

    def request_shutdown(self) -> None:
        self.shutting_down = True
        self.wakeup.set()

    def arm_timer(self, deadline: float | None) -> None:
        self.cancel_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self.wakeup.set)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def sleep(self) -> None:
        await self.wakeup.wait()
        self.wakeup.clear()


class _HttpRequest(_Session):
    """One HTTP request: the app's answer relayed, or held as the core's hold says."""

    def __init__(
        self, mw: GripMiddleware, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend
    ) -> None:
        super().__init__()
        self.mw = mw
        self.scope = scope
        self._receive = receive
        self._send = send
        self.client_headers = _scope_headers(scope)
        self.body = bytearray()
        self.body_complete = False
        self.body_too_large = False
        self.gone = False
        self.left = asyncio.Event()
        self.done = False  # the response is complete
        self.started = False  # a response head went out
        self.hold: ResponseHold | StreamHold | None = None
        self.sub: Subscriber | None = None

    # --- the client ---

    async def receive(self) -> AsgiMessage:
        """The client's next message, with the body recorded (for a `Retry`)."""
        message = await self._receive()
        if message["type"] == "http.request":
            if not self.body_too_large:
                self.body += message.get("body", b"")
                if len(self.body) > self.mw.max_request_body:
                    self.body_too_large = True
                    self.body.clear()
            if not message.get("more_body", False):
                self.body_complete = True
        elif message["type"] == "http.disconnect":
            self._left()
        return message

    def _left(self) -> None:
        self.gone = True
        self.left.set()
        self.wakeup.set()

    async def _watch(self) -> None:
        while not self.gone:
            await self.receive()

    async def send(self, message: AsgiMessage) -> None:
        if self.gone:
            return
        try:
            await self._send(message)
        except OSError:  # the client went away (uvicorn's ClientDisconnected is one)
            self._left()

    async def respond(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self.done = True
        await _send_whole(self.send, status, headers, body)

    async def _fail(self, status: int, detail: str) -> None:
        log.warning("%s %s: %s", self.scope["method"], self.scope["path"], detail)
        body = f"{detail}\n".encode() if self.mw.debug else _ERROR_BODY
        await self.respond(status, _TEXT, body)

    # --- calling the app ---

    async def call_app(
        self, extra: Sequence[tuple[bytes, bytes]] = (), *, replay: bytes | None = None
    ) -> Instruct | None:
        """Call the app. A plain answer is relayed as it comes and None returned; a GRIP answer
        is parsed (None after answering a 502 when it does not parse)."""
        headers = app_request_headers(self.client_headers, sig_token=self.mw.sign(), extra=extra)
        scope = {**self.scope, "headers": _lower(headers)}
        receive = self.receive if replay is None else _replayer(replay, self)
        answer = _Answer(self.send)
        await self.mw.app(scope, receive, answer.send)
        if answer.relayed:
            self.done = True
            return None
        if answer.status is None:
            raise LocalProtocolError("the ASGI application returned without a response")
        if answer.too_large:
            await self._fail(502, "GRIP instruct response too large")
            return None
        try:
            result = classify_response(
                answer.status,
                b"",
                answer.headers,
                bytes(answer.body),
                request_uri=_request_uri(self.scope, self.client_headers),
            )
        except InstructError as exc:
            await self._fail(502, f"Failed to parse accept instructions: {exc.msg}")
            return None
        assert isinstance(result, Instruct)
        return result

    # --- the request ---

    async def run(self) -> None:
        instruct = await self.call_app()
        if instruct is None:
            return
        if instruct.hold is None and instruct.next_link is None:
            await self.respond(instruct.status, instruct.headers, instruct.body)
            return
        mw = self.mw
        loop = asyncio.get_running_loop()
        actions: list[HoldAction] = []
        if instruct.hold == "response":
            sub = Subscriber(Transport.RESPONSE, owner=self)
            self.hold = ResponseHold(
                mw.hub, sub, instruct, loop.time(), last_ids=mw.broker.sequencer
            )
            actions = self.hold.take_actions()
        else:
            headers = [(n, v) for n, v in _lower(instruct.headers) if n != b"content-length"]
            await self.send(
                {"type": "http.response.start", "status": instruct.status, "headers": headers}
            )
            self.started = True
            sub = Subscriber(Transport.STREAM, owner=self, framing=Framing.RAW)
            self.hold = StreamHold(
                mw.hub,
                sub,
                instruct,
                loop.time(),
                debug=mw.debug,
                last_ids=mw.broker.sequencer,
            )
            actions = self.hold.take_actions()
        self.sub = sub
        mw.sessions.add(self)
        if mw.closing:
            self.shutting_down = True
        watcher = asyncio.ensure_future(self._watch())
        try:
            await self._perform(actions)
            await self._serve()
        except asyncio.CancelledError:
            # the server gave up waiting (uvicorn's timeout_graceful_shutdown): end the
            # response as a shutdown would, best effort, before letting the task go
            if not self.done and not self.gone:
                with contextlib.suppress(Exception):
                    await self._shutdown()
            raise
        finally:
            watcher.cancel()
            self.cancel_timer()
            if not self.hold.done:
                self.hold.client_gone()
            mw.sessions.discard(self)
            mw.hub.remove(sub)
            mw.broker.sync()
            self.ended.set()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _serve(self) -> None:
        hold = self.hold
        assert hold is not None
        loop = asyncio.get_running_loop()
        while not self.done:
            if self.gone:
                await self._perform(hold.client_gone())
                return
            if self.shutting_down:
                await self._shutdown()
                return
            deadline = hold.next_deadline()
            if deadline is not None and loop.time() >= deadline:
                await self._perform(hold.handle_timer(loop.time()))
            await self._drain()
            if self.finished():
                return
            self.arm_timer(hold.next_deadline())
            await self.sleep()

    def finished(self) -> bool:
        """Whether the response is complete (a method: it changes under every await)."""
        return self.done

    async def _drain(self) -> None:
        """Act on hub events, then send what waits in the output buffer, in one message."""
        hold, sub = self.hold, self.sub
        assert hold is not None and sub is not None
        if sub.events:
            await self._perform(hold.handle_events(sub.take_events()))
            if self.done:
                return
        if sub.outbuf and self.started:
            await self.send(
                {"type": "http.response.body", "body": sub.take_output(), "more_body": True}
            )
            hold.wrote(asyncio.get_running_loop().time())

    async def _perform(self, actions: Sequence[HoldAction]) -> None:
        for action in actions:
            if isinstance(action, Respond):
                self.mw.broker.sync()
                await self.respond(action.status, action.headers, action.body)
            elif isinstance(action, EndStream):
                await self._end_stream()
            elif isinstance(action, Retry):
                await self._retry(action)
            elif isinstance(action, FetchNextLink):
                await self._fetch_next_link(action)
            elif isinstance(action, PostGoneLink):
                self.mw.spawn(self._post_gone_link(action.url))
        self.mw.broker.sync()

    # --- links: requests to the app itself ---

    async def _call_link(
        self, method: bytes, target: bytes, extra: Sequence[tuple[bytes, bytes]]
    ) -> _Answer | None:
        """Call the app with a bodyless request for `target`; its whole answer, or None when
        the app failed or answered with too much."""
        path, _, query = target.partition(b"?")
        # none of the client's headers but its Host, as Pushpin makes link requests
        client = link_client_headers(self.client_headers, "")
        headers = app_request_headers(client, sig_token=self.mw.sign(), extra=extra)
        if method == b"POST":
            headers.append((b"content-length", b"0"))
        scope = {
            **self.scope,
            "method": method.decode("ascii"),
            "path": unquote(path.decode("latin-1")),
            "raw_path": path,
            "query_string": query,
            "headers": _lower(headers),
        }
        answer = _Answer(None, MAX_STREAM_INSTRUCT_BODY)
        try:
            await self.mw.app(scope, _replay_once(b""), answer.send)
        except Exception:
            log.exception("%s %s: the application failed", method.decode(), target.decode())
            return None
        if answer.status is None or answer.too_large:
            return None
        return answer

    async def _fetch_next_link(self, action: FetchNextLink) -> None:
        hold = self.hold
        assert isinstance(hold, StreamHold)
        uri = _request_uri(self.scope, self.client_headers)
        target = local_link_target(action.url, request_uri=uri)
        instruct: Instruct | None = None
        if target is None:
            log.warning("next link %s refused: it is not this application", action.url)
        else:
            answer = await self._call_link(b"GET", target, action.grip_last)
            if answer is not None:
                try:
                    instruct = next_link_instruct(
                        answer.status or 0, b"", answer.headers, bytes(answer.body), request_uri=uri
                    )
                except InstructError as exc:
                    log.info("next link %s failed: %s", action.url, exc)
        now = asyncio.get_running_loop().time()
        await self._perform(hold.next_link_response(instruct, now))

    async def _post_gone_link(self, url: str) -> None:
        target = local_link_target(url, request_uri=_request_uri(self.scope, self.client_headers))
        if target is None:
            log.warning("gone link %s refused: it is not this application", url)
            return
        await self._call_link(b"POST", target, ())

    async def _end_stream(self) -> None:
        assert self.sub is not None
        self.done = True
        await self.send(
            {"type": "http.response.body", "body": self.sub.take_output(), "more_body": False}
        )

    async def _retry(self, action: Retry) -> None:
        """A long-poll asks the app again (a hint, or a gap in the ids), with `Grip-Last`."""
        hold = self.hold
        assert isinstance(hold, ResponseHold)
        if self.body_too_large or not self.body_complete:
            hold.client_gone()
            await self._fail(502, "the request body cannot be replayed for a retry")
            return
        instruct = await self.call_app(action.grip_last, replay=bytes(self.body))
        now = asyncio.get_running_loop().time()
        if instruct is None:  # relayed, or answered with an error
            hold.retry_response(None, now)
            self.done = True
            return
        await self._perform(hold.retry_response(instruct, now))

    async def _shutdown(self) -> None:
        hold = self.hold
        if isinstance(hold, StreamHold):
            hold.client_gone()
            await self._end_stream()
        elif isinstance(hold, ResponseHold):
            response = hold.timeout_response()
            hold.client_gone()
            await self.respond(response.status, response.headers, response.body)


def _replayer(body: bytes, request: _HttpRequest) -> AsgiReceive:
    """A `receive` that gives the recorded body, then waits for the client to leave."""
    sent = False

    async def receive() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await request.left.wait()
        return {"type": "http.disconnect"}

    return receive


class _WebSocketSession(_Session):
    """One client WebSocket, bridged to the app over WebSocket-over-HTTP by the gateway."""

    def __init__(
        self, mw: GripMiddleware, scope: AsgiScope, receive: AsgiReceive, send: AsgiSend
    ) -> None:
        super().__init__()
        self.mw = mw
        self.scope = scope
        self._receive = receive
        self._send = send
        self.client_headers = _scope_headers(scope)
        self.accepted = False
        self.closed = False  # we closed (or refused) the client
        self.disconnected = False  # the client left
        self.inbox: list[Callable[[float], list[WebSocketAction]]] = []
        self.sub = Subscriber(Transport.WEBSOCKET, owner=self)
        self.gateway = WebSocketGateway(
            mw.hub,
            self.sub,
            connection_id=os.urandom(16).hex(),
            debug=mw.debug,
            max_pending=MAX_CLIENT_MESSAGE,
            jitter=lambda: int.from_bytes(os.urandom(2), "big") / 65536,
        )

    async def send(self, message: AsgiMessage) -> None:
        if self.disconnected:
            return
        try:
            await self._send(message)
        except OSError:  # uvicorn's ClientDisconnected
            self._client_left(1006, "")

    def _client_left(self, code: int, reason: str) -> None:
        """The client closed (a code) or vanished (1006): the gateway tells the app."""
        if self.disconnected:
            return
        self.disconnected = True
        if code == 1006:
            self.inbox.append(self.gateway.client_gone)
        else:
            code_or_none = None if code == 1005 else code
            self.inbox.append(lambda now: self.gateway.client_close(code_or_none, reason, now))
        self.wakeup.set()

    async def run(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return
        # the ASGI server did the handshake; some (uvicorn with wsproto) take any key
        refusal = handshake_refusal([(bytes(n), bytes(v)) for n, v in self.scope["headers"]])
        if refusal is not None:
            await self._reject(refusal)
            return
        mw = self.mw
        gateway = self.gateway
        loop = asyncio.get_running_loop()
        mw.sessions.add(self)
        if mw.closing:
            self.shutting_down = True
        reader: asyncio.Task[None] | None = None
        try:
            await self._perform(gateway.start(loop.time()))
            while not gateway.closed or self.inbox:
                if self.shutting_down:
                    self.shutting_down = False
                    await self._perform(gateway.shutdown())
                inbox, self.inbox = self.inbox, []
                for step in inbox:
                    await self._perform(step(loop.time()))
                deadline = gateway.next_deadline()
                if deadline is not None and loop.time() >= deadline:
                    await self._perform(gateway.handle_timer(loop.time()))
                await self._drain()
                if gateway.closed and not self.inbox:
                    break
                if self.accepted and reader is None and not self.disconnected:
                    reader = asyncio.ensure_future(self._read())
                self.arm_timer(gateway.next_deadline())
                await self.sleep()
        finally:
            self.cancel_timer()
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            if not gateway.closed:
                await self._perform(gateway.client_gone(loop.time()))
            mw.sessions.discard(self)
            mw.hub.remove(self.sub)
            mw.broker.sync()
            self.ended.set()

    async def _read(self) -> None:
        """The client's messages, to the gateway (through the inbox: one task sends)."""
        gateway = self.gateway
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code", 1005))
                if "reason" not in message and code == 1005:
                    # uvicorn reports a connection lost without a close frame as 1005 without
                    # a reason; a close frame always comes with one
                    code = 1006
                self._client_left(code, message.get("reason") or "")
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            data = text.encode("utf-8") if text is not None else bytes(message.get("bytes") or b"")
            if len(data) > MAX_CLIENT_MESSAGE:
                self.inbox.append(lambda now: gateway.client_close(1009, "message too big", now))
            else:
                self.inbox.append(partial(gateway.client_message, data, text is not None))
            self.wakeup.set()

    async def _drain(self) -> None:
        """Act on hub events, then send the messages waiting in the output buffer."""
        sub = self.sub
        if sub.events:
            now = asyncio.get_running_loop().time()
            await self._perform(self.gateway.handle_events(sub.take_events(), now))
        await self._send_output()

    async def _send_output(self) -> None:
        sub = self.sub
        if not sub.outbuf or not self.accepted or self.closed:
            return
        for opcode, payload in split_ws_messages(sub.take_output()):
            if opcode == 0x1:
                await self.send(
                    {"type": "websocket.send", "text": payload.decode("utf-8", "replace")}
                )
            elif opcode == 0x2:
                await self.send({"type": "websocket.send", "bytes": payload})
            elif opcode == 0x8:
                code, reason = parse_close_payload(payload)
                await self._close(code if code is not None else 1000, reason)
                return
            # 0x9 / 0xA: ASGI carries no pings or pongs
        self.gateway.wrote(asyncio.get_running_loop().time())

    async def _close(self, code: int, reason: str) -> None:
        if not self.closed:
            self.closed = True
            await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def _perform(self, actions: Sequence[WebSocketAction]) -> None:
        for action in actions:
            if isinstance(action, OriginPost):
                self.mw.spawn(self._post(action))
            elif isinstance(action, AcceptClient):
                await self._accept(action.headers)
            elif isinstance(action, RejectClient):
                await self._reject(action)
            elif isinstance(action, CloseClient):
                await self._send_output()
                # no close frame was written (an abort, or the app's DISCONNECT): ASGI cannot
                # drop a connection, so it closes; 1013 tells a slow consumer to come back later
                await self._close(1013 if action.abort else 1000, "")
        self.mw.broker.sync()

    async def _accept(self, headers: Sequence[tuple[bytes, bytes]]) -> None:
        extra = _lower(headers)
        message: AsgiMessage = {"type": "websocket.accept"}
        subprotocol = _header(extra, b"sec-websocket-protocol")
        if subprotocol is not None:
            message["subprotocol"] = subprotocol.decode("latin-1")
        message["headers"] = [(n, v) for n, v in extra if n != b"sec-websocket-protocol"]
        self.accepted = True
        await self.send(message)

    async def _reject(self, action: RejectClient) -> None:
        self.closed = True
        if "websocket.http.response" in self.scope.get("extensions", {}):
            headers = [(n, v) for n, v in _lower(action.headers) if n != b"content-length"]
            headers.append((b"content-length", str(len(action.body)).encode("ascii")))
            await self.send(
                {
                    "type": "websocket.http.response.start",
                    "status": action.status,
                    "headers": headers,
                }
            )
            await self.send({"type": "websocket.http.response.body", "body": action.body})
        else:
            await self.send({"type": "websocket.close", "code": 1008, "reason": ""})

    async def _post(self, action: OriginPost) -> None:
        """One WebSocket-over-HTTP request, made by calling the app in this process."""
        gateway = self.gateway
        scope = self.scope
        headers = origin_request_headers(
            self.client_headers,
            body_length=len(action.body),
            websocket=True,
            sig_token=self.mw.sign(),
            extra=action.headers,
        )
        post_scope: AsgiScope = {
            **scope,
            "type": "http",
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https" if scope.get("scheme") == "wss" else "http",
            "headers": _lower(headers),
        }
        post_scope.pop("subprotocols", None)
        answer = _Answer(None, MAX_WS_RESPONSE_BODY)
        problem: str | None = None
        try:
            await self.mw.app(post_scope, _replay_once(action.body), answer.send)
        except Exception as exc:
            log.exception("WebSocket-over-HTTP request to the application failed")
            problem = f"application error: {exc}"
        if problem is None and answer.status is None:
            problem = "the application returned without a response"
        elif problem is None and answer.too_large:
            problem = "WebSocket-over-HTTP response too large"
        if not action.expect_answer or gateway.closed:
            return
        if problem is not None:
            failed = problem
            self.inbox.append(lambda now: gateway.origin_failed(failed, now))
        else:
            status = answer.status
            assert status is not None
            body = bytes(answer.body)
            self.inbox.append(
                lambda now: gateway.origin_response(
                    status, reason_phrase(status), answer.headers, body, now
                )
            )
        self.wakeup.set()


def _replay_once(body: bytes) -> AsgiReceive:
    """The receive of an in-process request: its body, then the end of the request."""
    sent = False

    async def receive() -> AsgiMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
