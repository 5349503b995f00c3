"""The error family of the core.

Every error the core raises about input it was given is a `ProtocolError`. Each says who broke
what: `RemoteProtocolError` means a peer (the origin, a client, a publisher) sent something
invalid; `LocalProtocolError` means our caller (an adapter or a user of the library) misused the
API. Each carries hints of how to answer: `error_status_hint` (an HTTP status) and
`close_code_hint` (a WebSocket close code), as h11's `error_status_hint` and wsproto's event hints.

The domain subclasses below are what callers catch; the messages use the reference
implementation's wording wherever it has one, so that debug bodies match Pushpin's.
"""

from __future__ import annotations

__all__ = [
    "ContentTooLargeError",
    "ControlMessageError",
    "FilterError",
    "InstructError",
    "LocalProtocolError",
    "ProtocolError",
    "PublishError",
    "RemoteProtocolError",
    "RoutesError",
    "SigError",
    "WebSocketEventsError",
]


class ProtocolError(Exception):
    """Base of every error the core raises about input it was given.

    `error_status_hint` is the HTTP status an adapter should answer with when this error ends an
    HTTP exchange; `close_code_hint` is the WebSocket close code when it ends a WebSocket.
    """

    error_status_hint: int = 400
    close_code_hint: int = 1002

    def __init__(
        self,
        msg: str,
        *,
        error_status_hint: int | None = None,
        close_code_hint: int | None = None,
    ) -> None:
        super().__init__(msg)
        self.msg = msg
        if error_status_hint is not None:
            self.error_status_hint = error_status_hint
        if close_code_hint is not None:
            self.close_code_hint = close_code_hint

    def __str__(self) -> str:
        return self.msg


class LocalProtocolError(ProtocolError):
    """Our caller misused the API (a bug or a misconfiguration on this side)."""

    error_status_hint = 500
    close_code_hint = 1011


class RemoteProtocolError(ProtocolError):
    """A peer sent something invalid."""


class InstructError(RemoteProtocolError):
    """The origin's GRIP instructions are malformed (headers or application/grip-instruct)."""

    error_status_hint = 502
    close_code_hint = 1011


class WebSocketEventsError(RemoteProtocolError):
    """An `application/websocket-events` body does not decode."""

    error_status_hint = 502
    close_code_hint = 1011


class ControlMessageError(RemoteProtocolError):
    """A GRIP WebSocket control message (`c:{...}`) is invalid. Pushpin ignores such messages."""

    close_code_hint = 1011


class PublishError(RemoteProtocolError):
    """A publish body or one of its items is invalid; the whole batch is rejected (400)."""

    error_status_hint = 400


class ContentTooLargeError(PublishError):
    """A published format's content is over the configured size limit (413)."""

    error_status_hint = 413


class FilterError(RemoteProtocolError):
    """A message filter could not run (for example an unknown var-subst variable)."""

    close_code_hint = 1011


class RoutesError(LocalProtocolError):
    """A routes file (or --route line) is invalid. `line` is 1-based, 0 when not from a file."""

    def __init__(self, msg: str, *, line: int = 0) -> None:
        super().__init__(f"line {line}: {msg}" if line else msg)
        self.line = line
        self.reason = msg


class SigError(RemoteProtocolError):
    """A Grip-Sig token is missing, malformed, expired or signed with another key.

    The GRIP spec asks origins to treat an invalid signature as an absent one; `reason` says which.
    """

    error_status_hint = 401

    def __init__(self, msg: str, *, reason: str = "invalid") -> None:
        super().__init__(msg)
        self.reason = reason
