"""Read timeouts, lingering close and relay backpressure, sans-IO (issue 13, points 2, 6, 8).

The rule (gripcore._timeouts.ReadDeadlines) on its own, then as the client connection and the
publish API apply it, on a hand-advanced clock. The same behaviour on real sockets, on both
adapters: tests/test_isolation.py.
"""

from __future__ import annotations

import pytest

from gripcore._config import Config
from gripcore._connection import LINGER_DISCARD_LIMIT
from gripcore._node import PUBLISH_LINGER_LIMIT, PublishConnection
from gripcore._timeouts import ReadDeadlines, ReadPhase

from .sansio_support import Harness, get, post, reply

ROUTE = "* 127.0.0.1:9"
TIMEOUTS = {"client_header_timeout": 10.0, "keepalive_timeout": 20.0, "linger_timeout": 3.0}
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\n"


def test_read_deadlines_phase_by_phase() -> None:
    reads = ReadDeadlines(Config(**TIMEOUTS), 100.0)  # type: ignore[arg-type]
    assert reads.phase is ReadPhase.FIRST and reads.deadline() == 110.0
    assert reads.expired(109.9) is None and reads.expired(110.0) is ReadPhase.FIRST
    reads.bytes_received(105.0)  # a head begins: its own time
    assert reads.phase is ReadPhase.HEAD and reads.deadline() == 115.0
    reads.bytes_received(107.0)  # more of the head: no extension
    assert reads.deadline() == 115.0
    reads.head_received(108.0)
    assert reads.phase is ReadPhase.BODY and reads.deadline() == 118.0
    reads.bytes_received(112.0)  # a body read does not move it: a whole body has its time
    assert reads.deadline() == 118.0
    reads.busy()
    assert reads.deadline() is None and reads.expired(1e9) is None
    reads.bytes_received(200.0)  # pipelined bytes while busy change nothing
    assert reads.phase is ReadPhase.BUSY
    reads.idle(300.0)
    assert reads.phase is ReadPhase.IDLE and reads.deadline() == 320.0
    assert reads.expired(320.0) is ReadPhase.IDLE
    reads.linger(400.0)
    assert reads.deadline() == 403.0 and reads.expired(403.0) is ReadPhase.LINGER


# --- the client connection ---


def test_a_connection_that_sends_nothing_is_closed_quietly() -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    conn, io = h.connect()
    assert io.timers == [h.clock.now + 10]
    h.clock.advance(5)
    conn.on_timer()  # early (a timer kept from before): re-armed, nothing else
    assert not io.closed and io.out == b""
    h.clock.advance(5)
    conn.on_timer()
    assert io.closed and io.out == b""


def test_a_slow_request_head_gets_408() -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    conn, io = h.connect()
    h.clock.advance(8)
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    h.clock.advance(3)
    conn.on_timer()  # the connection's first deadline: the head has 7 s left
    assert not io.closed and io.timers[-1] == h.clock.now + 7
    h.clock.advance(7)
    conn.on_timer()
    assert io.take().startswith(REQUEST_TIMEOUT) and io.half_closed and not io.closed
    conn.receive_data(b"Host: x\r\n")  # lingering: discarded
    assert io.out == b""
    h.clock.advance(3)
    conn.on_timer()
    assert io.closed


def test_a_stalled_request_body_gets_408() -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    conn, io = h.connect()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    h.clock.advance(10)
    conn.on_timer()
    assert io.take().startswith(REQUEST_TIMEOUT) and io.half_closed
    conn.eof_received()
    assert io.closed


def test_idle_keep_alive_is_closed_after_its_timeout_not_the_head_timeout() -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    conn, io = h.connect()
    h.origin.queue(reply(200, b"ok"))
    assert h.request(conn, io, get()).endswith(b"ok")
    assert io.timers[-1] == h.clock.now + 20
    h.clock.advance(10)
    conn.on_timer()
    assert not io.closed
    h.clock.advance(10)
    conn.on_timer()
    assert io.closed and io.out == b""


def test_a_held_connection_has_no_read_timeout() -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    conn, io = h.connect()
    hold = [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"ch")]
    h.origin.queue(reply(200, b"", hold))
    h.request(conn, io, get())
    assert conn.session is not None
    h.clock.advance(1000)
    conn.on_timer()  # a keep-alive-less stream: nothing due, nothing closed
    assert not io.closed and conn.session is not None


def test_lingering_ends_at_its_timeout() -> None:
    h = Harness(routes=(ROUTE,), max_request_body=5, **TIMEOUTS)
    conn, io = h.connect()
    conn.receive_data(post(b"/", b"x" * 10))
    assert io.take().startswith(b"HTTP/1.1 413 ") and io.half_closed
    assert io.timers[-1] == h.clock.now + 3
    h.clock.advance(3)
    conn.on_timer()
    assert io.closed


def test_lingering_ends_past_its_byte_bound() -> None:
    h = Harness(routes=(ROUTE,), max_request_body=5, **TIMEOUTS)
    conn, io = h.connect()
    conn.receive_data(post(b"/", b"x" * 10))
    conn.receive_data(b"y" * LINGER_DISCARD_LIMIT)
    assert not io.closed
    conn.receive_data(b"y")
    assert io.closed


def test_a_relay_waits_for_a_paused_client_before_reading_on() -> None:
    h = Harness(routes=(ROUTE,))
    conn, io = h.connect()
    chunks = [b"a" * 1000, b"b" * 1000, b"c" * 1000]
    h.origin.queue(reply(200, b"", [(b"Transfer-Encoding", b"chunked")]))
    h.origin.replies[0].chunks = list(chunks)  # type: ignore[union-attr]

    def drained() -> None:
        conn.resume_writing()

    h.origin.on_wait_writable = drained
    conn.pause_writing()
    out = h.request(conn, io, get())
    assert h.origin.waited_writable == 1  # once, before the first chunk; not again after
    assert out.endswith(b"0\r\n\r\n") and b"a" * 1000 in out and b"c" * 1000 in out


# --- the publish API ---


def test_publish_connections_are_capped() -> None:
    h = Harness(routes=(ROUTE,), max_publish_connections=1)
    first = PublishConnection(h.node)
    assert first.connection_made() == (b"", False)
    second = PublishConnection(h.node)
    out, close = second.connection_made()
    assert out.startswith(b"HTTP/1.1 503 ") and close
    second.connection_lost()  # never counted: nothing to give back
    first.connection_lost()
    first.connection_lost()
    assert h.node.publish_connections == 0
    third = PublishConnection(h.node)
    assert third.connection_made() == (b"", False)


@pytest.mark.parametrize(
    ("data", "answer"),
    [(b"", b""), (b"POST /publish/ HTTP/1.1\r\n", REQUEST_TIMEOUT)],
    ids=["silent", "slow-head"],
)
def test_publish_read_timeouts(data: bytes, answer: bytes) -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    pc = PublishConnection(h.node)
    pc.connection_made()
    if data:
        pc.receive_data(data)
    assert pc.next_deadline() == h.clock.now + 10
    assert pc.handle_timer(h.clock.now + 5) == (b"", False)
    out, close = pc.handle_timer(h.clock.now + 10)
    assert out.startswith(answer)
    if answer:  # a 408, then lingering until EOF or --linger-timeout
        assert not close and pc.take_half_close()
        assert pc.next_deadline() == h.clock.now + 13
        out, close = pc.handle_timer(h.clock.now + 13)
    assert out == b"" or out.startswith(answer)
    assert close
    assert pc.next_deadline() is None
    assert pc.handle_timer(h.clock.now + 100) == (b"", False)


def test_publish_idle_keep_alive_and_linger_bound() -> None:
    h = Harness(routes=(ROUTE,), max_publish_body=10, **TIMEOUTS)
    pc = PublishConnection(h.node)
    out, close = pc.receive_data(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and not close
    assert pc.next_deadline() == h.clock.now + 20
    assert pc.handle_timer(h.clock.now + 20) == (b"", True)

    pc = PublishConnection(h.node)
    out, close = pc.receive_data(
        b"POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 413 ") and not close and pc.take_half_close()
    assert pc.next_deadline() == h.clock.now + 3
    assert pc.receive_data(b"z" * PUBLISH_LINGER_LIMIT) == (b"", False)
    assert pc.receive_data(b"z") == (b"", True)


def test_an_error_in_a_flow_after_the_client_left_answers_nothing() -> None:
    h = Harness(routes=(ROUTE,))
    conn, io = h.connect()
    conn.receive_data(get())
    [flow] = io.flows
    next(flow)  # the origin request is out
    conn.connection_lost()
    h.fail(flow, ValueError("a driver bug"))
    assert io.out == b"" and not io.half_closed


def test_bytes_pipelined_while_busy_do_not_start_a_head_timeout() -> None:
    h = Harness(routes=(ROUTE,), **TIMEOUTS)
    conn, io = h.connect()
    h.origin.queue(reply(200, b"one"), reply(200, b"two"))
    conn.receive_data(get())
    conn.receive_data(b"GET /second HTTP/1.1\r\n")  # the next request's head, in part
    assert conn.reads.phase is ReadPhase.BUSY
    h.run(io)
    assert io.take().endswith(b"one")
    conn.receive_data(b"Host: x\r\n\r\n")
    h.run(io)
    assert io.take().endswith(b"two")


# --- the descriptor limit ---


def test_max_connections_is_fitted_to_the_descriptor_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(routes=(ROUTE,), max_connections=1000, max_publish_connections=8)
    h.node.fit_descriptor_limit(None)  # unlimited
    assert h.node.max_connections == 1000
    h.node.fit_descriptor_limit(100_000)  # room for more than asked
    assert h.node.max_connections == 1000
    with caplog.at_level("INFO", logger="gripcore"):
        h.node.fit_descriptor_limit(200)  # 200 - 64 - 8 = 128, half of it for origins
        assert h.node.max_connections == 64
        h.node.fit_descriptor_limit(10)
        assert h.node.max_connections == 1
        default = Harness(routes=(ROUTE,), max_publish_connections=8)
        default.node.fit_descriptor_limit(200)
        assert default.node.max_connections == 64
    # lowering a value someone chose is a warning; fitting the default ceiling is not
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING", "INFO"]


def test_accept_failures_pause_and_log_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from gripcore._node import ACCEPT_LOG_INTERVAL, ACCEPT_PAUSE

    h = Harness(routes=(ROUTE,))
    error = OSError(errno.EMFILE, "Too many open files")
    with caplog.at_level("WARNING", logger="gripcore"):
        for _ in range(100):
            assert h.node.accept_failed("client", error) == ACCEPT_PAUSE
        h.node.accept_failed("publish", error)
        h.clock.advance(ACCEPT_LOG_INTERVAL)
        h.node.accept_failed("client", error)
    logged = [r.getMessage() for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(logged) == 3 and "Too many open files" in logged[0]
    assert b"gripcore_accept_pauses_total 102" in h.node.metrics.render()
