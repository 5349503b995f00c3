"""One suite for both hot-path implementations (`_fast_py`, the reference, and `_fast`)."""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder, Opcode

from gripcore import _fast_py, _speedups

from .conftest import IMPLEMENTATIONS

CHUNK_VECTORS = [
    (b"", b""),
    (b"a", b"1\r\na\r\n"),
    (b"hello", b"5\r\nhello\r\n"),
    (b"x" * 16, b"10\r\n" + b"x" * 16 + b"\r\n"),
    (b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n"),
    (b"\r\n0\r\n\r\n", b"7\r\n\r\n0\r\n\r\n\r\n"),
]

WS_HEADER_VECTORS = [
    (1, 0, b"\x81\x00"),
    (2, 125, b"\x82\x7d"),
    (1, 126, b"\x81\x7e\x00\x7e"),
    (1, 0xFFFF, b"\x81\x7e\xff\xff"),
    (2, 0x10000, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    (8, 2, b"\x88\x02"),
    (9, 0, b"\x89\x00"),
    (0xA, 3, b"\x8a\x03"),
]

WOH_VECTORS = [
    (b"OPEN", None, b"OPEN\r\n"),
    (b"TEXT", b"hello", b"TEXT 5\r\nhello\r\n"),
    (b"BINARY", b"\x00" * 26, b"BINARY 1a\r\n" + b"\x00" * 26 + b"\r\n"),
    (b"CLOSE", b"\x03\xe8", b"CLOSE 2\r\n\x03\xe8\r\n"),
    (b"PING", b"", b"PING 0\r\n\r\n"),
]


@pytest.mark.parametrize(("data", "expected"), CHUNK_VECTORS)
def test_encode_chunk(fast: ModuleType, data: bytes, expected: bytes) -> None:
    assert fast.encode_chunk(data) == expected


@pytest.mark.parametrize(("opcode", "length", "expected"), WS_HEADER_VECTORS)
def test_ws_frame_header(fast: ModuleType, opcode: int, length: int, expected: bytes) -> None:
    assert fast.ws_frame_header(opcode, length) == expected


@pytest.mark.parametrize(("opcode", "length"), [(-1, 0), (16, 0), (1, -1)])
def test_ws_frame_header_rejects(fast: ModuleType, opcode: int, length: int) -> None:
    with pytest.raises(ValueError):
        fast.ws_frame_header(opcode, length)


@pytest.mark.parametrize(("event_type", "content", "expected"), WOH_VECTORS)
def test_encode_woh_event(
    fast: ModuleType, event_type: bytes, content: bytes | None, expected: bytes
) -> None:
    assert fast.encode_woh_event(event_type, content) == expected


@given(payload=st.binary(max_size=70_000), opcode=st.sampled_from([Opcode.TEXT, Opcode.BINARY]))
def test_ws_frames_decode_with_wsproto(payload: bytes, opcode: Opcode) -> None:
    """Whatever either implementation encodes, wsproto's own frame decoder reads back."""
    if opcode is Opcode.TEXT:
        payload = payload.decode("latin-1").encode("utf-8")
    for impl in IMPLEMENTATIONS:
        frame = impl.encode_ws_frame(int(opcode), payload)
        decoder = FrameDecoder(client=True)
        decoder.receive_bytes(frame)
        decoded = decoder.process_buffer()
        assert decoded is not None
        assert decoded.opcode is opcode
        assert decoded.message_finished and decoded.frame_finished
        got = decoded.payload
        assert (got.encode("utf-8") if isinstance(got, str) else bytes(got)) == payload


@given(data=st.binary(max_size=5000))
def test_twins_agree_on_encoders(data: bytes) -> None:
    results = [
        (
            impl.encode_chunk(data),
            impl.encode_ws_frame(2, data),
            impl.encode_woh_event(b"TEXT", data),
        )
        for impl in IMPLEMENTATIONS
    ]
    assert all(r == results[0] for r in results)
    assert results[0][0] == (b"%x\r\n%b\r\n" % (len(data), data) if data else b"")


def test_fanout_appends_and_reports_woken(fast: ModuleType) -> None:
    a, b, c = bytearray(), bytearray(b"pending"), bytearray()
    targets: dict[object, bytearray] = {"a": a, "b": b, "c": c}
    woken: list[object] = []
    overflowed: list[object] = []
    assert fast.fanout(targets, b"xyz", woken, overflowed, 0) == 3
    assert (a, b, c) == (bytearray(b"xyz"), bytearray(b"pendingxyz"), bytearray(b"xyz"))
    assert woken == ["a", "c"]
    assert overflowed == []


def test_fanout_limit_skips_overflowing_buffers(fast: ModuleType) -> None:
    full, roomy = bytearray(b"12345678"), bytearray(b"1")
    targets: dict[object, bytearray] = {"full": full, "roomy": roomy}
    woken: list[object] = []
    overflowed: list[object] = []
    assert fast.fanout(targets, b"abc", woken, overflowed, 10) == 1
    assert full == bytearray(b"12345678")
    assert roomy == bytearray(b"1abc")
    assert overflowed == ["full"]
    assert woken == []
    # exactly at the limit is allowed
    assert fast.fanout({"x": bytearray(b"1234567")}, b"abc", woken, overflowed, 10) == 1


def test_fanout_empty_payload_still_counts(fast: ModuleType) -> None:
    buf = bytearray()
    woken: list[object] = []
    assert fast.fanout({"k": buf}, b"", woken, [], 0) == 1
    assert buf == bytearray()
    assert woken == ["k"]


def test_fanout_rejects_non_bytearray(fast: ModuleType) -> None:
    with pytest.raises(TypeError):
        fast.fanout({"k": b"immutable"}, b"x", [], [], 0)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    payload=st.binary(max_size=30),
    limit=st.integers(min_value=0, max_value=80),
)
def test_fanout_twins_agree(sizes: list[int], payload: bytes, limit: int) -> None:
    outcomes = []
    for impl in IMPLEMENTATIONS:
        targets = {i: bytearray(b"p" * n) for i, n in enumerate(sizes)}
        woken: list[object] = []
        overflowed: list[object] = []
        count = impl.fanout(targets, payload, woken, overflowed, limit)
        outcomes.append((count, {k: bytes(v) for k, v in targets.items()}, woken, overflowed))
    assert all(o == outcomes[0] for o in outcomes)


def test_selector_exports_match_the_reference_twin() -> None:
    for name in _fast_py.__all__:
        assert getattr(_speedups, name) is getattr(_speedups.impl, name)
    for impl in IMPLEMENTATIONS:
        assert set(_fast_py.__all__) <= set(dir(impl))


@pytest.mark.skipif(
    os.environ.get("GRIPCORE_REQUIRE_EXTENSIONS") != "1",
    reason="only the accelerated leg (GRIPCORE_REQUIRE_EXTENSIONS=1) requires the compiled module",
)
def test_compiled_hot_path_is_live() -> None:
    assert _speedups.COMPILED
    assert _speedups.impl.__name__ == "gripcore._fast"
    assert _speedups.impl.__file__ is not None
    assert not _speedups.impl.__file__.endswith(".py")


@pytest.mark.skipif(
    os.environ.get("GRIPCORE_NO_EXTENSIONS") != "1",
    reason="only the pure leg (GRIPCORE_NO_EXTENSIONS=1) forces the twin",
)
def test_pure_twin_is_live() -> None:
    assert not _speedups.COMPILED
    assert _speedups.impl is _fast_py


def test_selector_honours_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIPCORE_NO_EXTENSIONS", "1")
    assert _speedups._select() is _fast_py
    monkeypatch.delenv("GRIPCORE_NO_EXTENSIONS")
    monkeypatch.delenv("GRIPCORE_REQUIRE_EXTENSIONS", raising=False)
    # a missing compiled module falls back silently unless extensions are required
    import gripcore

    monkeypatch.delattr(gripcore, "_fast", raising=False)
    monkeypatch.setitem(sys.modules, "gripcore._fast", None)
    assert _speedups._select() is _fast_py
    monkeypatch.setenv("GRIPCORE_REQUIRE_EXTENSIONS", "1")
    with pytest.raises(ImportError):
        _speedups._select()


def test_selector_picks_compiled_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = ModuleType("gripcore._fast")
    monkeypatch.delenv("GRIPCORE_NO_EXTENSIONS", raising=False)
    monkeypatch.setitem(sys.modules, "gripcore._fast", stand_in)
    import gripcore

    monkeypatch.setattr(gripcore, "_fast", stand_in, raising=False)
    assert _speedups._select() is stand_in


# --- flush_connections: one slice of a fan-out pass, on real core connections -------------------


class InProcessIO:
    """A driver for one core connection that keeps what is written (the sans-IO boundary: the
    bytes the connection hands its socket), and runs flows at once (the starter kit's origin
    answers in process, so its flows need no I/O)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.timers: list[float] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def set_timer(self, deadline: float) -> None:
        self.timers.append(deadline)

    def cancel_timer(self) -> None:
        self.timers.clear()

    def spawn(self, flow: Any) -> None:
        from gripcore._node import run_flow_step

        assert run_flow_step(flow, None, None) is None


def held_stream(node: Any, path: str = "/test/stream") -> tuple[Any, InProcessIO]:
    from gripcore._connection import ProxyConnection

    io = InProcessIO()
    conn = ProxyConnection(node, io, "127.0.0.1")
    assert conn.connection_made()
    conn.receive_data(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert io.written and io.written[0].startswith(b"HTTP/1.1 200 OK\r\n")
    io.written.clear()
    return conn, io


def make_node() -> Any:
    from gripcore._config import Config
    from gripcore._node import ProxyNode

    return ProxyNode(
        Config(),
        clock=lambda: 50.0,
        wall_clock=lambda: 1_700_000_000.0,
        read_file=lambda path: b"",
        is_file=os.path.isfile,
        random_bytes=os.urandom,
    )


def stream_item(content: bytes) -> Any:
    from gripcore._items import HttpStreamFormat, Item

    return Item(channel="test", http_stream=HttpStreamFormat(content=content))


def test_flush_connections_writes_each_pending_buffer_once(fast: ModuleType) -> None:
    node = make_node()
    (a, io_a), (b, io_b), (c, io_c) = (held_stream(node) for _ in range(3))
    node.broker.publish([stream_item(b"one\n"), stream_item(b"two\n")], 50.0)
    b.pause_writing()  # its transport is full: nothing is written, the bytes wait
    fast.flush_connections([a, b, c], 51.0)
    assert io_a.written == io_c.written == [b"4\r\none\n\r\n4\r\ntwo\n\r\n"]  # one write each
    assert io_b.written == []
    fast.flush_connections([a, c], 52.0)  # nothing pending: nothing written
    assert io_a.written == io_c.written == [b"4\r\none\n\r\n4\r\ntwo\n\r\n"]
    b.resume_writing()
    assert io_b.written == [b"4\r\none\n\r\n4\r\ntwo\n\r\n"]


def test_flush_connections_moves_an_idle_keep_alive(fast: ModuleType) -> None:
    node = make_node()
    conn, io = held_stream(node, "/test/sse")  # the starter's SSE stream keeps alive when idle
    deadline = conn.session.next_deadline()
    assert deadline is not None
    node.broker.publish([stream_item(b"data: x\n\n")], 50.0)
    fast.flush_connections([conn], 60.0)
    assert io.written == [b"9\r\ndata: x\n\n\r\n"]
    assert conn.session.next_deadline() == deadline + 10.0  # counted again from the write


def test_flush_connections_hands_events_and_ended_connections_to_flush(fast: ModuleType) -> None:
    from gripcore._items import HttpStreamFormat, Item

    node = make_node()
    (a, io_a), (b, io_b) = held_stream(node), held_stream(node)
    # a close item: an event for the session, which ends the stream with its last chunk
    node.broker.publish([Item(channel="test", http_stream=HttpStreamFormat(action="close"))], 50.0)
    b.connection_lost()  # gone: no session left, nothing to write
    fast.flush_connections([a, b], 51.0)
    assert io_a.written == [b"0\r\n\r\n"]  # the last chunk; nothing else was pending
    assert io_b.written == []


class BrokenIO(InProcessIO):
    """A transport whose writes fail (a driver bug, say)."""

    def write(self, data: bytes) -> None:
        raise OSError("write failed")


def test_flush_connections_goes_on_after_one_connection_fails(fast: ModuleType) -> None:
    node = make_node()
    (a, io_a), (b, _), (c, io_c) = (held_stream(node) for _ in range(3))
    b.io = BrokenIO()
    node.broker.publish([stream_item(b"one\n")], 50.0)
    fast.flush_connections([a, b, c], 51.0)
    assert io_a.written == io_c.written == [b"4\r\none\n\r\n"]  # the slice went on
    assert b.closed and b.session is None and b.io.closed  # the failing one ended, alone
    assert node.connection_errors.values == {(): 1.0}


def test_a_flush_pass_measures_from_the_publish_to_its_last_write() -> None:
    node = make_node()
    (_, io_a), (_, io_b) = held_stream(node), held_stream(node)
    times = iter([10.0, 10.5, 12.25])  # wake, the slice's clock read, after the last write
    node.clock = lambda: next(times)
    node.wake(node.broker.publish([stream_item(b"x\n")], 10.0).woken)
    node.flush_pass()
    assert io_a.written == io_b.written == [b"2\r\nx\n\r\n"]
    series = node.write_latency.series[()]
    assert (series[-2], series[-1]) == (1, 2.25)  # one pass, 2.25 s from wake to last write
    node.clock = lambda: 20.0
    node.flush_pass()  # nothing was dirty: nothing written, nothing measured
    assert (series[-2], io_a.written) == (1, [b"2\r\nx\n\r\n"])


# --- the twins' contract on wrong arguments ------------------------------------------------------
#
# Each function either returns the same value in both twins or raises the same exception type:
# None, the other byte-like types, str, floats and integers past C's ranges included. (A typed
# Cython argument would otherwise take None into a NULL dereference, a float into a truncated
# int, and a bytearray where the twin took it.)

ODD_VALUES: list[Any] = [
    None,
    b"ab",
    b"",
    bytearray(b"ab"),
    memoryview(b"ab"),
    "ab",
    0,
    1,
    15,
    16,
    -1,
    True,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    2**100,
    1.5,
    [],
    {},
]


def _outcome(fn: Any, *args: Any) -> tuple[str, object]:
    try:
        return "value", fn(*args)
    except Exception as exc:  # the contract compares exception types
        return "raises", type(exc)


def _same_everywhere(name: str, *args: Any) -> None:
    outcomes = [_outcome(getattr(impl, name), *args) for impl in IMPLEMENTATIONS]
    assert all(o == outcomes[0] for o in outcomes), (name, args, outcomes)


def test_twins_agree_on_odd_arguments() -> None:
    """Every pair of odd values, exhaustively (a few hundred calls per function)."""
    for a in ODD_VALUES:
        _same_everywhere("encode_chunk", a)
        _same_everywhere("encode_woh_event", b"TEXT", a)
        _same_everywhere("flush_connections", a, 0.0)
        for args in (
            ({"k": bytearray()}, a, [], [], 0),
            ({"k": bytearray(b"x")}, b"y", [], [], a),
            (a, b"y", [], [], 0),
            ({"k": bytearray()}, b"y", a, [], 0),
            ({"k": bytearray()}, b"y", [], a, 0),
            ({"k": a}, b"y", [], [], 0),
        ):
            _same_everywhere("fanout", *args)
        for b in ODD_VALUES:
            _same_everywhere("ws_frame_header", a, b)
            _same_everywhere("encode_ws_frame", a, b)
            _same_everywhere("encode_woh_event", a, b)


def test_fanout_a_buffer_held_by_a_view_raises_and_is_left_as_it_was(fast: ModuleType) -> None:
    buf = bytearray(b"held")
    view = memoryview(buf)
    with pytest.raises(BufferError):
        fast.fanout({"k": buf}, b"more", [], [], 0)
    view.release()
    assert buf == bytearray(b"held")
