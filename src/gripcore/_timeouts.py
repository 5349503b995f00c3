"""When a connection that is reading a request, or waiting for one, gives up: sans-IO.

Both listeners (client and publish API) read HTTP/1.1 requests, and a socket that trickles a
byte a second, or opens and stays silent, would otherwise hold a descriptor and a
`--max-connections` slot for ever. `ReadDeadlines` is the one rule both use, in phases:

    FIRST    a new connection, nothing read yet       client_header_timeout, then close quietly
    HEAD     part of a request head read              client_header_timeout, then 408 and close
    BODY     reading a request body                   client_header_timeout since the head, 408
    IDLE     between requests (keep-alive)            keepalive_timeout, then close quietly
    BUSY     a request is being answered, or held     none: holds have timers of their own
    LINGER   after an early error answer              linger_timeout, then close

The body gets its own whole timeout rather than one per read (nginx's client_body_timeout):
a client trickling a byte a second would otherwise hold a connection for as many seconds as
the body limit has bytes; bodies are bounded (--max-request-body, --max-publish-body), so any
real client sends one well within a minute.

Time is the caller's `now` (the driver's clock); `deadline()` says when to look again and
`expired(now)` which phase ran out (None before its deadline). The caller arms one timer.
"""

from __future__ import annotations

import enum

from ._config import Config

__all__ = ["ReadDeadlines", "ReadPhase"]


class ReadPhase(enum.Enum):
    FIRST = "first"
    HEAD = "head"
    BODY = "body"
    IDLE = "idle"
    BUSY = "busy"
    LINGER = "linger"


class ReadDeadlines:
    """The read timeouts of one HTTP/1.1 server connection (see the module header)."""

    __slots__ = ("_header", "_keepalive", "_linger", "phase", "since")

    def __init__(self, config: Config, now: float) -> None:
        self._header = config.client_header_timeout
        self._keepalive = config.keepalive_timeout
        self._linger = config.linger_timeout
        self.phase = ReadPhase.FIRST
        self.since = now

    def bytes_received(self, now: float) -> None:
        """Request bytes arrived: a head begins (nothing moves within a head or a body)."""
        phase = self.phase
        if phase is ReadPhase.FIRST or phase is ReadPhase.IDLE:
            self.phase, self.since = ReadPhase.HEAD, now

    def head_received(self, now: float) -> None:
        """A whole request head was read: its body (if any) follows."""
        self.phase, self.since = ReadPhase.BODY, now

    def busy(self) -> None:
        """The request is complete (or held): no read timeout until it is answered."""
        self.phase = ReadPhase.BUSY

    def idle(self, now: float) -> None:
        """The answer went out: the connection waits for its next request."""
        self.phase, self.since = ReadPhase.IDLE, now

    def linger(self, now: float) -> None:
        """An early error answer went out: discard what still arrives, for a while."""
        self.phase, self.since = ReadPhase.LINGER, now

    def deadline(self) -> float | None:
        phase = self.phase
        if phase is ReadPhase.BUSY:
            return None
        if phase is ReadPhase.IDLE:
            return self.since + self._keepalive
        if phase is ReadPhase.LINGER:
            return self.since + self._linger
        return self.since + self._header

    def expired(self, now: float) -> ReadPhase | None:
        """The phase whose time ran out by `now`, or None."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        return self.phase
