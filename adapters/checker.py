"""The I/O driver of `gripcore check`: sockets, the checker's origin server, the clock.

Everything that decides (the catalogue, the origin's answers, how an answer is judged, the report)
is `gripcore._check`; this module only moves bytes. Clients speak HTTP/1.1 through h11 and
WebSocket through wsproto over plain sockets, so what is checked is exactly what a client gets.

A proxy needs a moment to subscribe a held request (Pushpin's handler is another process), so a
check never sleeps a fixed time before publishing: it publishes, waits briefly for the effect,
and publishes again until the effect shows or the step timeout passes. Channels and item ids
carry a random run id, so repeated runs against one proxy (whose dedup window remembers ids for
a minute) do not interfere.

    from gripcore.adapters.checker import CheckerOriginServer, run_proxy_checks
    with CheckerOriginServer(("127.0.0.1", 0)) as origin:   # route the proxy to origin.port
        results = run_proxy_checks("http://127.0.0.1:7999", "http://127.0.0.1:5561", origin)
"""

from __future__ import annotations

import argparse
import http.client
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import h11
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    Request,
    TextMessage,
)

from gripcore._check import (
    ECHO_PREFIX,
    HINT_RETRY_BODY,
    KEEP_ALIVE_DATA,
    LONG_POLL_TIMEOUT,
    ORIGIN_CHECKS,
    PROXY_CHECKS,
    REFRESH_TEXT,
    REJECTED_PUBLISH_BODIES,
    STATUS_CODE,
    STATUS_REASON,
    STREAM_START,
    TIMEOUT_BODY,
    CheckerOrigin,
    CheckResult,
    check_websocket_answer,
    describe_origin_response,
    exit_status,
    failed,
    passed,
    report_json,
    report_lines,
)
from gripcore._errors import ProtocolError
from gripcore._sig import mint_sig, parse_key_spec, parse_verify_key, validate_sig
from gripcore._wsevents import Close, Open, Text, encode_events

__all__ = ["CheckerOriginServer", "run_check", "run_origin_checks", "run_proxy_checks"]

# Seconds between repeated publishes while waiting for a subscription to settle.
RETRY_INTERVAL = 0.25
# Bytes read per recv; answers here are small.
READ_SIZE = 65536
# An origin's answer is read up to this size: a check looks at heads and short bodies.
MAX_ANSWER_BODY = 1024 * 1024


class CheckFailed(Exception):
    """A check's expectation was not met; the message is the reason."""


def _expect(condition: bool, reason: str) -> None:
    if not condition:
        raise CheckFailed(reason)


# --- the checker's origin ------------------------------------------------------------------------


class CheckerOriginServer:
    """`gripcore._check.CheckerOrigin` served over HTTP/1.1 on `address`, in daemon threads."""

    def __init__(self, address: tuple[str, int], app: CheckerOrigin | None = None) -> None:
        self.app = app or CheckerOrigin()
        app_ref = self.app

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_ANSWER_BODY)) if length else b""
                answer = app_ref.handle(self.command, self.path, self.headers.items(), body)
                self.send_response_only(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(address, Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def __enter__(self) -> CheckerOriginServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- clients -------------------------------------------------------------------------------------


def _address(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise CheckFailed(f"{url!r} is not an http:// URL")
    return parts.hostname, parts.port or 80, parts.netloc


class HttpExchange:
    """One HTTP/1.1 request on its own connection, read incrementally (streams, long-polls)."""

    def __init__(self, url: str, target: str, headers: list[tuple[str, str]] | None = None) -> None:
        host, port, netloc = _address(url)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = h11.Connection(h11.CLIENT)
        self.response: h11.Response | None = None
        self.body = bytearray()
        self.ended = False
        request = h11.Request(
            method="GET", target=target, headers=[("Host", netloc), *(headers or [])]
        )
        self.sock.sendall(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Read until `predicate()` holds (True) or `timeout` passes or the peer closes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.ended:
                return predicate()
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.sock.settimeout(remaining)
                try:
                    data = self.sock.recv(READ_SIZE)
                except TimeoutError:
                    return predicate()
                self.conn.receive_data(data)
                if not data:
                    self.ended = True
            elif isinstance(event, h11.Response):
                self.response = event
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = True
        return True

    def header(self, name: str) -> str | None:
        assert self.response is not None
        wanted = name.lower().encode()
        return next((v.decode() for k, v in self.response.headers if k == wanted), None)

    def close(self) -> None:
        self.sock.close()


class WsExchange:
    """A WebSocket client connection (wsproto) to the proxy."""

    def __init__(self, url: str, target: str) -> None:
        host, port, netloc = _address(url)
        self.sock = socket.create_connection((host, port), timeout=10)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[Any] = []
        self.sock.sendall(self.ws.send(Request(host=netloc, target=target)))

    def next_event(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self.events:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(READ_SIZE)
            except TimeoutError:
                return None
            if not data:
                raise CheckFailed("the proxy closed the connection")
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.pop(0)

    def message(self, timeout: float) -> str | bytes | None:
        """The next whole message (None on timeout); a close frame is a failure."""
        parts: list[Any] = []
        while True:
            event = self.next_event(timeout)
            if event is None:
                return None
            if isinstance(event, CloseConnection):
                raise CheckFailed(f"closed by the proxy with {event.code} {event.reason!r}")
            if isinstance(event, TextMessage | BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)

    def wait_message(self, wanted: str, timeout: float) -> bool:
        """Skip messages until `wanted` arrives (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self.message(remaining)
            if message == wanted:
                return True
            if message is None:
                return False
        return False

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def close(self) -> None:
        self.sock.close()


def _post(
    url: str, body: bytes, headers: dict[str, str], timeout: float
) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
    """POST to `url`; returns (status, reason, headers, body)."""
    host, port, _ = _address(url)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()]
        return response.status, response.reason.encode("latin-1"), pairs, response.read()
    finally:
        connection.close()


# --- proxy checks --------------------------------------------------------------------------------


class ProxyChecker:
    """Runs the `PROXY_CHECKS` against one proxy through one checker origin."""

    def __init__(
        self,
        proxy_url: str,
        publish_url: str,
        origin: CheckerOriginServer,
        *,
        sig_key: str | None = None,
        timeout: float = 5.0,
        run_id: str | None = None,
    ) -> None:
        self.proxy_url = proxy_url
        parts = urlsplit(publish_url)
        path = parts.path.rstrip("/")
        self.publish_url = (
            publish_url
            if path.endswith("/publish")
            else (f"{parts.scheme}://{parts.netloc}{path}/publish/")
        )
        self.origin = origin.app
        self.sig_key = sig_key
        self.timeout = timeout
        self.run_id = run_id or secrets.token_hex(4)
        self.results: dict[str, CheckResult] = {}
        self._opened: list[HttpExchange | WsExchange] = []

    # helpers

    def channel(self, name: str) -> str:
        return f"check-{self.run_id}-{name}"

    def publish_raw(self, body: bytes) -> tuple[int, bytes]:
        status, _, _, answer = _post(
            self.publish_url, body, {"Content-Type": "application/json"}, self.timeout
        )
        return status, answer

    def publish(self, *items: dict[str, Any]) -> None:
        status, answer = self.publish_raw(json.dumps({"items": list(items)}).encode())
        _expect(status == 200, f"publish answered {status}: {answer[:200]!r}")

    def until(self, publish: Callable[[], None], done: Callable[[float], bool]) -> bool:
        """Publish, wait a little for `done`, repeat until the step timeout passes."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            publish()
            if done(min(RETRY_INTERVAL, max(0.0, deadline - time.monotonic()))):
                return True
        return False

    def get(self, target: str, headers: list[tuple[str, str]] | None = None) -> HttpExchange:
        exchange = HttpExchange(self.proxy_url, target, headers)
        self._opened.append(exchange)
        return exchange

    def hold_stream(self, scenario: str, channel: str) -> HttpExchange:
        exchange = self.get(f"/{scenario}/{channel}")
        exchange.wait(lambda: STREAM_START in exchange.body, self.timeout)
        _expect(exchange.response is not None, "no response to the stream request")
        assert exchange.response is not None
        _expect(
            exchange.response.status_code == 200,
            f"stream answered {exchange.response.status_code}, expected 200",
        )
        _expect(
            STREAM_START in exchange.body, f"initial body not received: {bytes(exchange.body)!r}"
        )
        return exchange

    def subscribed_stream(self, scenario: str, channel: str) -> HttpExchange:
        """A held stream, with a probe published until it arrives (the subscription is live)."""
        exchange = self.hold_stream(scenario, channel)
        probe = {"channel": channel, "formats": {"http-stream": {"content": "probe\n"}}}
        ok = self.until(
            lambda: self.publish(probe),
            lambda t: exchange.wait(lambda: b"probe\n" in exchange.body, t),
        )
        _expect(ok, "published http-stream content never reached the client")
        return exchange

    def run(self, name: str, check: Callable[[], str | None]) -> None:
        try:
            note = check()
        except CheckFailed as exc:
            self.results[name] = failed(name, str(exc))
        except (OSError, h11.ProtocolError, http.client.HTTPException) as exc:
            self.results[name] = failed(name, f"{type(exc).__name__}: {exc}")
        else:
            self.results[name] = passed(name, note or "")

    # the checks

    def stream_hold(self) -> str | None:
        channel = self.channel("stream")
        exchange = self.subscribed_stream("stream", channel)
        item = {"channel": channel, "formats": {"http-stream": {"content": "data: one\n\n"}}}
        self.publish(item)
        _expect(
            exchange.wait(lambda: b"data: one\n\n" in exchange.body, self.timeout),
            "published content not received",
        )
        assert exchange.response is not None
        _expect(
            not any(k.startswith(b"grip-") for k, _ in exchange.response.headers),
            "a Grip-* header reached the client",
        )
        return None

    def stream_close(self) -> str | None:
        channel = self.channel("close")
        exchange = self.subscribed_stream("stream", channel)
        self.publish({"channel": channel, "formats": {"http-stream": {"action": "close"}}})
        _expect(exchange.wait(lambda: exchange.ended, self.timeout), "the stream did not end")
        return None

    def keep_alive(self) -> str | None:
        exchange = self.hold_stream("keep-alive", self.channel("keep-alive"))
        _expect(
            exchange.wait(lambda: KEEP_ALIVE_DATA in exchange.body, self.timeout),
            f"no keep-alive data within {self.timeout:g} s",
        )
        return None

    def long_poll(self, scenario: str, fmt: dict[str, Any]) -> HttpExchange:
        channel = self.channel(scenario)
        exchange = self.get(f"/{scenario}/{channel}")
        item = {"channel": channel, "formats": {"http-response": fmt}}
        ok = self.until(
            lambda: self.publish(item), lambda t: exchange.wait(lambda: exchange.ended, t)
        )
        _expect(ok, "the held request was not answered after the publish")
        assert exchange.response is not None
        return exchange

    def long_poll_send(self) -> str | None:
        fmt = {"code": 202, "headers": {"X-Published": "yes"}, "body": "published\n"}
        exchange = self.long_poll("poll", fmt)
        assert exchange.response is not None
        _expect(
            exchange.response.status_code == 202,
            f"status {exchange.response.status_code}, expected 202",
        )
        _expect(exchange.header("X-Published") == "yes", "published header missing")
        _expect(bytes(exchange.body) == b"published\n", f"body {bytes(exchange.body)!r}")
        return None

    def long_poll_hint(self) -> str | None:
        exchange = self.long_poll("hint", {"action": "hint"})
        _expect(
            bytes(exchange.body) == HINT_RETRY_BODY,
            f"body {bytes(exchange.body)!r}, expected the origin's answer to the retried request",
        )
        return None

    def instruct_json(self) -> str | None:
        exchange = self.long_poll("json", {"body": "published json\n"})
        _expect(bytes(exchange.body) == b"published json\n", f"body {bytes(exchange.body)!r}")
        _expect(exchange.header("X-Check") == "json", "the instruct's response header was lost")
        return None

    def start_long_poll_timeout(self) -> Callable[[], str | None]:
        """Start the 5-second long-poll now; the returned function finishes the check."""
        started = time.monotonic()
        exchange = self.get(f"/poll-timeout/{self.channel('poll-timeout')}")

        def finish() -> str | None:
            limit = LONG_POLL_TIMEOUT + self.timeout - (time.monotonic() - started)
            _expect(exchange.wait(lambda: exchange.ended, limit), "no response after the timeout")
            elapsed = time.monotonic() - started
            assert exchange.response is not None
            _expect(elapsed >= LONG_POLL_TIMEOUT - 1, f"answered after {elapsed:.1f} s, too early")
            _expect(exchange.response.status_code == 200, f"status {exchange.response.status_code}")
            _expect(
                exchange.header("X-Check") == "timeout", "the timeout response's header is missing"
            )
            _expect(bytes(exchange.body) == TIMEOUT_BODY, f"body {bytes(exchange.body)!r}")
            return f"answered after {elapsed:.1f} s"

        return finish

    def grip_status(self) -> str | None:
        exchange = self.get(f"/status/{self.channel('status')}")
        _expect(exchange.wait(lambda: exchange.ended, self.timeout), "no complete response")
        assert exchange.response is not None
        status = exchange.response.status_code
        reason = exchange.response.reason.decode("latin-1")
        _expect(
            (status, reason) == (STATUS_CODE, STATUS_REASON),
            f"status line {status} {reason!r}, expected {STATUS_CODE} {STATUS_REASON!r}",
        )
        _expect(
            not any(k.startswith(b"grip-") for k, _ in exchange.response.headers),
            "a Grip-* header reached the client",
        )
        return None

    def stream_body(self, scenario: str, publishes: list[dict[str, Any]], end: bytes) -> bytes:
        channel = self.channel(scenario)
        exchange = self.subscribed_stream("stream", channel)
        for item in publishes:
            self.publish({"channel": channel, **item})
        _expect(exchange.wait(lambda: end in exchange.body, self.timeout), f"{end!r} not received")
        return bytes(exchange.body)

    def dedup(self) -> str | None:
        item = {"id": f"dup-{self.run_id}", "formats": {"http-stream": {"content": "dup\n"}}}
        end = {"formats": {"http-stream": {"content": "end\n"}}}
        body = self.stream_body("dedup", [item, item, end], b"end\n")
        _expect(body.count(b"dup\n") == 1, f"delivered {body.count(b'dup' + bytes([10]))} times")
        return None

    def prev_id(self) -> str | None:
        def item(name: str, prev: str | None) -> dict[str, Any]:
            fields: dict[str, Any] = {"id": f"{name}-{self.run_id}"}
            if prev:
                fields["prev-id"] = f"{prev}-{self.run_id}"
            return {**fields, "formats": {"http-stream": {"content": f"seq-{name}\n"}}}

        body = self.stream_body(
            "prev-id", [item("a", None), item("c", "b"), item("b", "a")], b"seq-c\n"
        )
        _expect(b"seq-b\n" in body, "seq-b not received")
        order = sorted(
            (body.index(f"seq-{n}\n".encode()), n) for n in "abc" if f"seq-{n}\n".encode() in body
        )
        names = "".join(n for _, n in order)
        _expect(names == "abc", f"delivered in the order {', '.join(names)}")
        return None

    def websocket(self) -> None:
        channel = self.channel("ws")
        names = ("websocket-echo", "websocket-publish", "websocket-refresh", "websocket-close")
        try:
            ws = WsExchange(self.proxy_url, f"/ws/{channel}")
            self._opened.append(ws)
            event = ws.next_event(self.timeout)
            _expect(event is not None, "no handshake answer")
            _expect(
                not isinstance(event, RejectConnection),
                f"handshake rejected with {getattr(event, 'status_code', '?')}",
            )
            _expect(isinstance(event, AcceptConnection), f"unexpected {event!r}")
        except (CheckFailed, OSError) as exc:
            self.results["websocket-over-http"] = failed("websocket-over-http", str(exc))
            for name in names:
                self.results[name] = failed(name, "no connection (websocket-over-http failed)")
            return
        self.results["websocket-over-http"] = passed("websocket-over-http")

        def echo() -> str | None:
            ws.send_text("hello")
            _expect(ws.wait_message(ECHO_PREFIX + "hello", self.timeout), "no echo from the origin")
            return None

        def publish() -> str | None:
            counter = iter(range(1_000_000))
            ok = self.until(
                lambda: self.publish(
                    {
                        "channel": channel,
                        "formats": {"ws-message": {"content": f"pushed {next(counter)}"}},
                    }
                ),
                lambda t: isinstance(m := ws.message(t), str) and m.startswith("pushed "),
            )
            _expect(ok, "published ws-message never reached the client")
            return None

        def refresh() -> str | None:
            body = {
                "items": [{"channel": channel, "formats": {"ws-message": {"action": "refresh"}}}]
            }
            status, answer = self.publish_raw(json.dumps(body).encode())
            if status == 400:
                return "the proxy rejects the refresh action with 400, as Pushpin before 1.37 does"
            _expect(status == 200, f"publish answered {status}: {answer[:200]!r}")
            _expect(ws.wait_message(REFRESH_TEXT, self.timeout), "no origin request after refresh")
            return None

        def close() -> str | None:
            fmt = {"action": "close", "code": 4001, "reason": "checker close"}
            self.publish({"channel": channel, "formats": {"ws-message": fmt}})
            deadline = time.monotonic() + self.timeout
            while (remaining := deadline - time.monotonic()) > 0:
                event = ws.next_event(remaining)
                if isinstance(event, CloseConnection):
                    _expect(event.code == 4001, f"closed with {event.code}, expected 4001")
                    return None
                if event is None:
                    break
            raise CheckFailed("no close frame")

        self.run("websocket-echo", echo)
        self.run("websocket-publish", publish)
        self.run("websocket-refresh", refresh)
        self.run("websocket-close", close)

    def websocket_client_close(self) -> str | None:
        ws = WsExchange(self.proxy_url, f"/ws/{self.channel('ws-close')}")
        self._opened.append(ws)
        _expect(isinstance(ws.next_event(self.timeout), AcceptConnection), "handshake failed")
        ws.sock.sendall(ws.ws.send(CloseConnection(code=1000, reason="bye")))
        deadline = time.monotonic() + self.timeout
        while (remaining := deadline - time.monotonic()) > 0:
            event = ws.next_event(remaining)
            if isinstance(event, CloseConnection):
                return f"closed with {event.code}"
            if event is None:
                break
        raise CheckFailed("no close frame back")

    def headers_request(self, name: str, headers: list[tuple[str, str]]) -> Any:
        path = f"/headers/{self.channel(name)}"
        exchange = self.get(path, headers)
        _expect(exchange.wait(lambda: exchange.ended, self.timeout), "no complete response")
        recorded = self.origin.find(path)
        _expect(bool(recorded), "the request did not reach the checker's origin")
        return recorded[-1]

    def grip_sig(self) -> str | None:
        recorded = self.headers_request("sig", [])
        token = recorded.header("grip-sig")
        _expect(token is not None, "no Grip-Sig on the proxy's request to the origin")
        if self.sig_key is None:
            return "present; not validated (no --sig-key)"
        try:
            key = parse_key_spec(self.sig_key) or parse_verify_key(self.sig_key)
            assert key is not None
            claims = validate_sig(token, key, now=time.time())
        except ProtocolError as exc:
            raise CheckFailed(f"Grip-Sig does not validate: {exc}") from None
        return f"valid, iss {claims.get('iss')!r}"

    def strip(self) -> str | None:
        forged = [("Grip-Last", "x; last-id=1"), ("Grip-Foo", "bar"), ("Grip-Sig", "forged")]
        recorded = self.headers_request("strip", forged)
        leaked = [
            f"{k}: {v}"
            for k, v in recorded.headers
            if (k, v) in {(n.lower(), v) for n, v in forged}
        ]
        _expect(not leaked, f"client headers reached the origin: {', '.join(leaked)}")
        return None

    def invalid_instruct(self) -> str | None:
        exchange = self.get(f"/invalid/{self.channel('invalid')}")
        _expect(exchange.wait(lambda: exchange.response is not None, self.timeout), "no response")
        assert exchange.response is not None
        _expect(
            exchange.response.status_code == 502,
            f"status {exchange.response.status_code}, expected 502",
        )
        return None

    def publish_errors(self) -> str | None:
        wrong = []
        for what, body in REJECTED_PUBLISH_BODIES:
            status, _ = self.publish_raw(body)
            if status != 400:
                wrong.append(f"{what}: {status}")
        _expect(not wrong, "expected 400; " + "; ".join(wrong))
        return f"{len(REJECTED_PUBLISH_BODIES)} invalid batches answered 400"

    def run_all(self) -> list[CheckResult]:
        finish_timeout: Callable[[], str | None] | None = None
        try:
            try:
                finish_timeout = self.start_long_poll_timeout()
            except OSError as exc:
                self.results["long-poll-timeout"] = failed("long-poll-timeout", str(exc))
            self.run("stream-hold", self.stream_hold)
            self.run("stream-close", self.stream_close)
            self.run("stream-keep-alive", self.keep_alive)
            self.run("long-poll", self.long_poll_send)
            self.run("long-poll-hint", self.long_poll_hint)
            self.run("instruct-json", self.instruct_json)
            self.run("grip-status", self.grip_status)
            self.run("dedup", self.dedup)
            self.run("prev-id-ordering", self.prev_id)
            self.websocket()
            self.run("websocket-client-close", self.websocket_client_close)
            self.run("grip-sig", self.grip_sig)
            self.run("client-grip-headers-stripped", self.strip)
            self.run("invalid-instruct", self.invalid_instruct)
            self.run("publish-errors", self.publish_errors)
            if finish_timeout is not None:
                self.run("long-poll-timeout", finish_timeout)
        finally:
            for opened in self._opened:
                opened.close()
        return [self.results[spec.name] for spec in PROXY_CHECKS]


def run_proxy_checks(
    proxy_url: str,
    publish_url: str,
    origin: CheckerOriginServer,
    *,
    sig_key: str | None = None,
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Run every proxy check; the proxy must route to `origin` (started). Results in catalogue
    order."""
    return ProxyChecker(proxy_url, publish_url, origin, sig_key=sig_key, timeout=timeout).run_all()


# --- origin checks -------------------------------------------------------------------------------


def run_origin_checks(
    url: str,
    *,
    ws_url: str | None = None,
    sig_key: str = "changeme",
    sig_iss: str = "pushpin",
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Exercise an origin as a proxy would: a signed GET, then WebSocket-over-HTTP OPEN, TEXT and
    CLOSE on one connection id. Results in catalogue order."""
    key = parse_key_spec(sig_key)
    results: list[CheckResult] = []

    def signed(extra: dict[str, str]) -> dict[str, str]:
        headers = {"Grip-Feature": "status, link:next, link:gone", **extra}
        if key is not None:
            headers["Grip-Sig"] = mint_sig(key, sig_iss, time.time())
        return headers

    def attempt(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
        try:
            return fn()
        except (OSError, http.client.HTTPException, CheckFailed) as exc:
            return failed(name, f"{type(exc).__name__}: {exc}")

    def get() -> CheckResult:
        host, port, _ = _address(url)
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            connection.request("GET", target, headers=signed({}))
            response = connection.getresponse()
            pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.getheaders()]
            # A stream hold's initial body may not end: take what is there.
            body = response.read(MAX_ANSWER_BODY) if response.length is not None else b""
            return describe_origin_response(
                "origin-get", response.status, response.reason.encode("latin-1"), pairs, body
            )
        finally:
            connection.close()

    results.append(attempt("origin-get", get))
    connection_id = secrets.token_hex(8)
    ws_headers = {
        "Connection-Id": connection_id,
        "Content-Type": "application/websocket-events",
        "Accept": "application/websocket-events",
        "Sec-WebSocket-Extensions": "grip",
    }
    grip = True
    steps = (
        ("websocket-open", "open", encode_events([Open()])),
        ("websocket-text", "text", encode_events([Text(b"hello from gripcore check")])),
        ("websocket-close", "close", encode_events([Close(1000, "")])),
    )
    for name, step, body in steps:

        def ws_step(name: str = name, step: Any = step, body: bytes = body) -> CheckResult:
            nonlocal grip
            status, _, headers, answer = _post(ws_url or url, body, signed(ws_headers), timeout)
            if step == "open":
                extensions = next(
                    (v for k, v in headers if k.lower() == b"sec-websocket-extensions"), b""
                )
                grip = b"grip" in extensions
            return check_websocket_answer(name, step, status, headers, answer, grip=grip)

        results.append(attempt(name, ws_step))
    by_name = {result.name: result for result in results}
    return [by_name[spec.name] for spec in ORIGIN_CHECKS]


# --- the command ---------------------------------------------------------------------------------


def _print_report(target: str, results: list[CheckResult], as_json: bool, out: IO[str]) -> int:
    if as_json:
        print(report_json(target, results), file=out)
    else:
        for line in report_lines(results):
            print(line, file=out)
    return exit_status(results)


def run_check(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Run `gripcore check proxy|origin` as parsed by `gripcore._check.add_check_parser`."""
    out = out or sys.stdout
    if args.check_target == "origin":
        results = run_origin_checks(
            args.url,
            ws_url=args.ws_url,
            sig_key=args.sig_key,
            sig_iss=args.sig_iss,
            timeout=args.timeout,
        )
        return _print_report("origin", results, args.json, out)
    with CheckerOriginServer(args.origin_listen) as origin:
        message = (
            f"checker origin listening on {origin.host}:{origin.port} "
            f"(route the proxy to it, with over_http for WebSockets)"
        )
        print(message, file=sys.stderr if args.json else out, flush=True)
        results = run_proxy_checks(
            args.proxy, args.publish, origin, sig_key=args.sig_key, timeout=args.timeout
        )
    return _print_report("proxy", results, args.json, out)
