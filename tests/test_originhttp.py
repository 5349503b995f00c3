"""The core's rules for HTTP toward origins (gripcore._originhttp), without sockets."""

from __future__ import annotations

import errno
import socket
import ssl

import h11
import pytest

from gripcore._originhttp import (
    NEED_DATA,
    OriginError,
    OriginHttp,
    StaleConnectionError,
    build_origin_request,
    describe_os_error,
)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (ssl.SSLError(1, "certificate verify failed"), "TLS handshake failed: "),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "Name or service"),
        (OSError(errno.ECONNREFUSED, "Connect call failed"), "Connection refused"),
        (OSError("Multiple exceptions: [one], [two]"), "Multiple exceptions"),
    ],
)
def test_describe_os_error(exc: OSError, text: str) -> None:
    assert describe_os_error(exc).startswith(text)


def _request(http: OriginHttp) -> bytes:
    request = build_origin_request(b"origin", 8080, b"GET", b"/x", [], b"", False)
    return http.send_request(request, b"")


def test_exchange_reads_head_then_body_then_can_pool() -> None:
    http = OriginHttp("origin:8080")
    assert _request(http) == b"GET /x HTTP/1.1\r\nHost: origin:8080\r\n\r\n"
    assert http.read_head() is None
    http.receive_data(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe"
    )
    head = http.read_head()
    assert head is not None and head.status_code == 200
    assert http.next_chunk() == b"he"
    assert http.next_chunk() is NEED_DATA
    http.receive_data(b"llo")
    assert http.next_chunk() == b"llo"
    assert http.next_chunk() is None
    assert http.can_pool(unread=False)
    assert not http.can_pool(unread=True)
    http.start_next_cycle()
    assert _request(http).startswith(b"GET /x ")


def test_close_before_any_byte_is_stale_and_a_banner_is_refused_early() -> None:
    http = OriginHttp("origin:22")
    _request(http)
    with pytest.raises(StaleConnectionError):
        http.receive_data(b"")
    http = OriginHttp("origin:22")
    _request(http)
    with pytest.raises(OriginError) as info:
        http.receive_data(b"SSH-2.0-OpenSSH\r\n")
    assert info.value.kind == "protocol"
    assert "expected b'HTTP/'" in str(info.value)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "protocol"),
    ],
)
def test_broken_bodies_are_origin_errors(data: bytes, kind: str) -> None:
    http = OriginHttp("origin:80")
    _request(http)
    http.receive_data(data)
    assert http.read_head() is not None
    with pytest.raises(OriginError) as info:
        while http.next_chunk() is not None:
            http.receive_data(b"")
    assert info.value.kind == kind


def test_oversized_head_is_too_large() -> None:
    http = OriginHttp("origin:80")
    _request(http)
    http.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70_000 + b"\r\n")
    with pytest.raises(OriginError) as info:
        http.read_head()
    assert info.value.kind == "too-large"
    assert isinstance(http.h11, h11.Connection)
