"""The error family: who broke what, and the hints for answering."""

from __future__ import annotations

import pytest

from gripcore import (
    ContentTooLargeError,
    ControlMessageError,
    FilterError,
    InstructError,
    LocalProtocolError,
    ProtocolError,
    PublishError,
    RemoteProtocolError,
    RoutesError,
    SigError,
    WebSocketEventsError,
)

HINTS = [
    (LocalProtocolError, 500, 1011),
    (RemoteProtocolError, 400, 1002),
    (InstructError, 502, 1011),
    (WebSocketEventsError, 502, 1011),
    (ControlMessageError, 400, 1011),
    (PublishError, 400, 1002),
    (ContentTooLargeError, 413, 1002),
    (FilterError, 400, 1011),
]


@pytest.mark.parametrize(("cls", "status", "close"), HINTS)
def test_default_hints(cls: type[ProtocolError], status: int, close: int) -> None:
    exc = cls("what went wrong")
    assert (exc.error_status_hint, exc.close_code_hint) == (status, close)
    assert str(exc) == exc.msg == "what went wrong"
    assert isinstance(exc, ProtocolError)


def test_hints_can_be_overridden_per_error() -> None:
    exc = RemoteProtocolError("too big", error_status_hint=431, close_code_hint=1009)
    assert (exc.error_status_hint, exc.close_code_hint) == (431, 1009)
    assert RemoteProtocolError.error_status_hint == 400  # the class default is untouched


def test_routes_error_names_the_line() -> None:
    exc = RoutesError("no target", line=3)
    assert (str(exc), exc.line, exc.reason) == ("line 3: no target", 3, "no target")
    assert str(RoutesError("bad")) == "bad"
    assert isinstance(exc, LocalProtocolError)


def test_sig_error_reason() -> None:
    exc = SigError("token expired", reason="expired")
    assert (exc.reason, exc.error_status_hint) == ("expired", 401)
    assert SigError("x").reason == "invalid"
