"""HTTP/1.1 toward origins, sans-IO: the request a proxy sends and how it reads the answer.

Both drivers' origin clients (asyncio and gevent) move bytes only; what counts as a valid
request, how an answer is read and which failure is which kind of `OriginError` is decided
here, once. h11 does the HTTP framing; `OriginHttp` adds the proxy's rules on top of it:

* A reused keep-alive connection that ends before a single response byte arrived is *stale*
  (the origin's idle timer fired as the request went out): `StaleConnectionError`, which the
  client answers by sending the request once more on a fresh connection.
* A peer that greets us with something that is not `HTTP/` (an SSH or SMTP banner) is refused
  after five bytes, instead of looking like a slow origin until the response timeout.
* Every h11 error becomes an `OriginError` with a kind: `closed` (EOF mid-response),
  `too-large` (head over `MAX_RESPONSE_HEAD_SIZE`), `protocol` (anything else).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Literal

import h11

from ._errors import LocalProtocolError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_IDLE_PER_HOST",
    "DEFAULT_RESPONSE_TIMEOUT",
    "MAX_RESPONSE_HEAD_SIZE",
    "NEED_DATA",
    "OriginError",
    "OriginErrorKind",
    "OriginHttp",
    "OriginStats",
    "PoolKey",
    "StaleConnectionError",
    "build_origin_request",
    "content_length",
    "describe_os_error",
    "origin_label",
    "prepare_request",
    "too_large",
]

OriginErrorKind = Literal["connect", "timeout", "protocol", "closed", "too-large"]

# Response heads carry one Grip-Channel header per channel and long Grip-Link URLs; 64 KiB is four
# times h11's 16 KiB default and still small next to the 100,000-byte instruct body limit.
MAX_RESPONSE_HEAD_SIZE = 64 * 1024

# Request methods whose empty body is still announced with "Content-Length: 0": RFC 9110 section
# 8.6 says a user agent SHOULD, and origins that require a length answer 411 otherwise.
_METHODS_WITH_BODY = frozenset({b"POST", b"PUT", b"PATCH"})

_HTTP_PREFIX = b"HTTP/"

# A local or LAN origin accepts in milliseconds; 5 s covers a slow TLS handshake on a loaded host
# without keeping a client waiting much longer than a browser user would tolerate.
DEFAULT_CONNECT_TIMEOUT = 5.0

# Above Pushpin's 55 s default hold timeout so that an origin slow to decide is not cut short,
# yet a hung origin still frees the client within about a minute.
DEFAULT_RESPONSE_TIMEOUT = 60.0

# Enough idle connections to absorb a burst of requests to one origin without reconnecting, few
# enough that an idle proxy holds a handful of file descriptors per origin, not hundreds.
DEFAULT_MAX_IDLE_PER_HOST = 32

# Below the keep-alive timeouts of common origin servers (nginx 75 s, Apache 5 s is shorter and is
# what the stale-connection retry is for), so that most idle connections end on our side.
DEFAULT_IDLE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class OriginStats:
    """Connection counts of an `OriginClient`, for tests and metrics."""

    open_connections: int
    """Connections not yet closed: idle in the pool or serving a request."""
    idle_connections: int
    """Connections waiting in the pool for reuse."""


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Which origin connections may be shared: one pool per key."""

    host: str
    port: int
    ssl: bool
    insecure: bool
    server_hostname: str | None


NEED_DATA = h11.NEED_DATA
"""`OriginHttp.next_chunk` needs more bytes before it can say."""


class OriginError(Exception):
    """The exchange with an origin failed; `kind` says how and `message` says where."""

    def __init__(self, kind: OriginErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: OriginErrorKind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


class StaleConnectionError(Exception):
    """The origin closed the connection before sending a single response byte."""


def origin_label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_os_error(exc: OSError) -> str:
    """A short reason for a failed connect, whichever driver's socket raised it."""
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc}"
    if exc.errno is not None and exc.errno < 0:  # getaddrinfo's EAI_* codes (socket.gaierror)
        return str(exc.strerror)
    if exc.errno:
        # asyncio replaces strerror with "Connect call failed (...)"; the errno says why.
        return os.strerror(exc.errno)
    # asyncio's summary when several addresses of one name failed in different ways.
    return str(exc)


def too_large(origin: str, limit: int) -> OriginError:
    return OriginError("too-large", f"response body from {origin} exceeds {limit} bytes")


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length of a response head that h11 has validated (digits, duplicates agree)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            return int(value)
    return None


def build_origin_request(
    host: bytes,
    port: int,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    use_ssl: bool,
) -> h11.Request:
    """The request event, with Host and Content-Length added when missing; validated.

    `host` is the origin host already encoded for the wire (IDNA). Raises `LocalProtocolError`
    for a request that cannot be sent as given.
    """
    names = {name.lower() for name, _ in headers}
    extra: list[tuple[bytes, bytes]] = []
    if b"host" not in names:
        default_port = 443 if use_ssl else 80
        host_value = b"[%s]" % host if b":" in host else host
        if port != default_port:
            host_value = b"%s:%d" % (host_value, port)
        extra.append((b"Host", host_value))
    framed = b"content-length" in names or b"transfer-encoding" in names
    if not framed and (body or method.upper() in _METHODS_WITH_BODY):
        extra.append((b"Content-Length", b"%d" % len(body)))
    try:
        request = h11.Request(method=method, target=target, headers=[*headers, *extra])
    except h11.LocalProtocolError as exc:
        raise LocalProtocolError(f"invalid request to origin: {exc}") from exc
    if b"content-length" in names:
        if b"transfer-encoding" in names:
            raise LocalProtocolError(
                "invalid request to origin: both Content-Length and Transfer-Encoding are set"
            )
        declared = next(int(v) for n, v in request.headers if n == b"content-length")
        if declared != len(body):
            raise LocalProtocolError(
                f"invalid request to origin: Content-Length is {declared} "
                f"but the body has {len(body)} bytes"
            )
    return request


def prepare_request(
    host: str,
    port: int,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    ssl: bool,
    insecure: bool,
    server_hostname: str | None,
) -> tuple[h11.Request, PoolKey]:
    """An origin client's checks before it sends anything: the request event (see
    `build_origin_request`) and the pool its connection belongs to. Raises
    `LocalProtocolError` for a port, host or request that cannot be sent as given."""
    if not 0 < port < 65536:
        raise LocalProtocolError(f"invalid origin port {port}: must be 1 to 65535")
    try:
        wire_host = host.encode("idna")
    except UnicodeError as exc:
        raise LocalProtocolError(f"invalid origin host {host!r}: {exc}") from exc
    request = build_origin_request(wire_host, port, method, target, headers, body, ssl)
    return request, PoolKey(host, port, ssl, insecure, server_hostname if ssl else None)


class OriginHttp:
    """One client-side HTTP/1.1 connection to an origin, without the socket.

    Per exchange: `send_request()` gives the bytes to write; feed what the socket reads with
    `receive_data()` (`b""` at EOF) until `read_head()` returns the response head, then call
    `next_chunk()` for the body (bytes, `None` at its end, `NEED_DATA` for more input). After a
    complete exchange `can_pool()` says whether the connection may carry another one
    (`start_next_cycle()` first).
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_HEAD_SIZE)
        self._eof_fed = False
        self._prefix = b""
        self._head_done = False

    def send_request(self, request: h11.Request, body: bytes) -> bytes:
        self._prefix = b""
        self._head_done = False
        parts = [self.h11.send(request)]
        if body:
            parts.append(self.h11.send(h11.Data(data=body)))
        parts.append(self.h11.send(h11.EndOfMessage()))
        return b"".join(p for p in parts if p)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the origin (`b""`: it closed). Before the head is complete this
        raises `StaleConnectionError` (closed before any byte) or `OriginError("protocol")`
        (the first bytes are not `HTTP/`)."""
        if not self._head_done and len(self._prefix) < len(_HTTP_PREFIX):
            # h11 judges a head only once it is complete; a server that greets us with a
            # banner (SSH, SMTP) and waits would otherwise look like a slow origin.
            if not data and not self._prefix:
                raise StaleConnectionError
            self._prefix += data[: len(_HTTP_PREFIX) - len(self._prefix)]
            if not _HTTP_PREFIX.startswith(self._prefix):
                raise OriginError(
                    "protocol",
                    f"{self.origin} sent an invalid HTTP response: "
                    f"expected {_HTTP_PREFIX!r}, got {self._prefix!r}",
                )
        self._eof_fed = not data
        self.h11.receive_data(data)

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        """h11's next event from data already fed, with its errors turned into `OriginError`."""
        try:
            return self.h11.next_event()
        except h11.RemoteProtocolError as exc:
            if self._eof_fed:
                raise OriginError(
                    "closed", f"{self.origin} closed the connection mid-response ({exc})"
                ) from exc
            if exc.error_status_hint == 431:
                raise OriginError(
                    "too-large",
                    f"response head from {self.origin} exceeds {MAX_RESPONSE_HEAD_SIZE} bytes",
                ) from exc
            raise OriginError(
                "protocol", f"{self.origin} sent an invalid HTTP response: {exc}"
            ) from exc

    def read_head(self) -> h11.Response | None:
        """The final (non-1xx) response head, or None until more data is fed."""
        while True:
            event = self.next_event()
            if isinstance(event, h11.Response):
                self._head_done = True
                return event
            if event is h11.NEED_DATA:
                return None
            # An InformationalResponse (100 Continue, 103 Early Hints) means nothing to a proxy
            # that already sent the whole request: wait for the final response.

    def next_chunk(self) -> bytes | type[h11.NEED_DATA] | None:
        """The next piece of the body, None at its end, or NEED_DATA."""
        event = self.next_event()
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        # Only NEED_DATA remains possible while h11 reads a response body.
        return NEED_DATA

    def can_pool(self, *, unread: bool) -> bool:
        """Whether the exchange ended cleanly with keep-alive on both sides and nothing extra
        (`unread`: the driver holds bytes it has not fed)."""
        return (
            not unread
            and not self._eof_fed
            and self.h11.our_state is h11.DONE
            and self.h11.their_state is h11.DONE
            and not self.h11.trailing_data[0]
        )

    def start_next_cycle(self) -> None:
        self.h11.start_next_cycle()
