"""One bad request, publish or peer harms only itself (issue 13, points 2, 6, 7 and 8).

Real loopback sockets, both adapters: a client that does not read a large relayed answer
holds back only its own origin read (backpressure); slow or idle sockets on either listener are
closed by the request-head and keep-alive timeouts; an early 413/431 is read by a client that
sends its whole body first (lingering close); at the descriptor limit the listener backs off
and the publish API stays serviceable (that one in a subprocess, tests/test_serve_process.py
style).
"""

from __future__ import annotations

import hashlib
import json
import resource
import socket
import threading
import time

import pytest

from .e2e_support import (
    Origin,
    RawClient,
    publish,
    running_proxy,
    subscribers,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("proxy_adapter")]

# --- a large plain answer, made lazily -----------------------------------------------------------

BIG = 96 * 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB


class LazyOrigin:
    """An origin answering every request with BIG bytes of BLOCK, generated as it sends, and
    counting how many the kernel took (what the proxy read, plus what sockets hold)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(sock,), daemon=True).start()

    def _answer(self, sock: socket.socket) -> None:
        with sock:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                data += chunk
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: " + str(BIG).encode() + b"\r\n\r\n"
            )
            try:
                sock.sendall(head)
                for _ in range(BIG // len(BLOCK)):
                    sock.sendall(BLOCK)
                    self.sent += len(BLOCK)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()


def _settled(read: object, interval: float = 0.5, timeout: float = 30.0) -> int:
    """The value `read()` settles at: unchanged over `interval` (waited for, not asserted)."""
    assert callable(read)
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = read()
        if now == last:
            return int(now)
        last = now
    return int(last)


def _stream_origin() -> Origin:
    grip = [("Content-Type", "text/plain"), ("Grip-Hold", "stream"), ("Grip-Channel", "iso")]
    return Origin(routes={"/stream": lambda request: (200, grip, b"")}).start()


def test_relayed_answer_to_a_stalled_client_is_read_only_as_fast_as_it_reads() -> None:
    big = LazyOrigin()
    streams = _stream_origin()
    try:
        routes = (f"big 127.0.0.1:{big.port}", f"* 127.0.0.1:{streams.port},over_http")
        with running_proxy(routes=routes) as proxy:
            healthy = RawClient(proxy.port)
            healthy.get("/stream")
            healthy.read_until(b"\r\n\r\n")
            wait_for(lambda: subscribers(proxy, "iso") == 1)

            stalled = RawClient(proxy.port, timeout=30)
            stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            stalled.get("/file", host="big")
            held = _settled(lambda: big.sent)
            # socket buffers on the way (a few MiB each on loopback) and one write-buffer mark:
            # not the whole answer
            assert held < BIG // 3, f"the proxy read {held} bytes for a client reading none"

            # the stalled reader costs nobody else: the subscriber gets every publish
            for n in range(5):
                status, _ = publish(
                    proxy.publish_port,
                    [{"channel": "iso", "formats": {"http-stream": {"content": f"m{n}\n"}}}],
                )
                assert status == 200
                assert healthy.read_until(f"m{n}\n".encode()).endswith(f"m{n}\n".encode())

            # then the client reads: the whole answer, intact
            head = stalled.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert f"Content-Length: {BIG}".encode() in head or b"chunked" in head.lower()
            digest = hashlib.sha256()
            expected = hashlib.sha256()
            for _ in range(BIG // len(BLOCK)):
                expected.update(BLOCK)
            received = len(stalled.buffer)
            digest.update(stalled.buffer)
            stalled.buffer = b""
            while received < BIG:
                chunk = stalled.sock.recv(1 << 20)
                assert chunk, f"closed after {received} bytes"
                digest.update(chunk)
                received += len(chunk)
            assert received == BIG
            assert digest.hexdigest() == expected.hexdigest()
    finally:
        big.close()
        streams.stop()


# --- lingering close after an early error --------------------------------------------------------


def _send_all_then_read(port: int, head: bytes, body: bytes) -> bytes:
    """Send `head` and all of `body` (as a client that does not look before it is done), then
    read the answer to its end."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with sock:
        sock.sendall(head)
        view = memoryview(body)
        try:
            while view:
                sent = sock.send(view[: 1 << 16])
                view = view[sent:]
        except OSError as exc:  # reset while sending: the bug
            return f"send failed: {exc!r}".encode()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError as exc:
            return answer + f"\nrecv failed: {exc!r}".encode()
        return answer


def test_publish_over_the_limit_gets_its_413_after_sending_everything() -> None:
    body = json.dumps(
        {"items": [{"channel": "x", "formats": {"http-stream": {"content": "a" * 5_000_000}}}]}
    ).encode()
    with running_proxy() as proxy:
        head = (
            b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        answer = _send_all_then_read(proxy.publish_port, head, body)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        # the publish listener still serves
        status, _ = publish(
            proxy.publish_port, [{"channel": "x", "formats": {"http-stream": {"content": "x"}}}]
        )
        assert status == 200


def test_client_request_over_the_body_limit_gets_its_413_after_sending_everything() -> None:
    with running_proxy(max_request_body=1000) as proxy:
        body = b"b" * 5_000_000
        head = (
            b"POST /x HTTP/1.1\r\nHost: example.com\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        answer = _send_all_then_read(proxy.port, head, body)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_client_head_over_the_limit_gets_its_431_after_sending_everything() -> None:
    with running_proxy(max_request_header_size=1000) as proxy:
        head = b"GET /x HTTP/1.1\r\nHost: example.com\r\n"
        filler = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"f" * 1000) for n in range(3000))
        answer = _send_all_then_read(proxy.port, head, filler + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_lingering_is_bounded_for_a_client_that_never_stops_sending() -> None:
    with running_proxy(max_request_body=1000, linger_timeout=0.5) as proxy:
        client = RawClient(proxy.port, timeout=10)
        client.send(b"POST /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 100000000\r\n\r\n")
        client.send(b"b" * 2000)
        head = client.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")

        def closed() -> bool:
            try:
                client.send(b"b" * 65536)
            except OSError:
                return True
            return False

        wait_for(closed, timeout=10)


# --- request-head and keep-alive timeouts --------------------------------------------------------


def _closed_by_server(client: RawClient, timeout: float = 10.0) -> bytes:
    """What the server sent before closing (it must close within `timeout`)."""
    return client.read_to_close(timeout)


def test_slow_request_head_is_closed_after_the_head_timeout() -> None:
    with running_proxy(client_header_timeout=0.5, keepalive_timeout=30) as proxy:
        slow = RawClient(proxy.port)
        slow.send(b"GET /x HTTP/1.1\r\n")
        silent = RawClient(proxy.port)  # never sends a byte
        assert _closed_by_server(slow).startswith(b"HTTP/1.1 408 ")
        assert _closed_by_server(silent) == b""
        wait_for(lambda: proxy.call(lambda: len(proxy.server.connections)) == 0, timeout=30)


def test_a_body_trickled_a_byte_at_a_time_gets_408() -> None:
    with running_proxy(client_header_timeout=0.5, keepalive_timeout=30) as proxy:
        client = RawClient(proxy.port)
        client.send(b"POST /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 1000\r\n\r\n")
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in client.buffer and time.monotonic() < deadline:
            try:
                client.send(b"b")  # each byte in time, the body as a whole not
            except OSError:
                break
            client.nothing_for(0.1)
        assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 408 ")


def test_idle_keep_alive_connection_is_closed_but_held_ones_are_not() -> None:
    streams = _stream_origin()
    try:
        streams.routes["/plain"] = lambda request: (200, [("Content-Type", "text/plain")], b"ok")
        routes = (f"* 127.0.0.1:{streams.port},over_http",)
        with running_proxy(routes=routes, keepalive_timeout=0.5, client_header_timeout=30) as p:
            held = RawClient(p.port)
            held.get("/stream")
            held.read_until(b"\r\n\r\n")
            idle = RawClient(p.port)
            idle.get("/plain")
            _, body = idle.read_response()
            assert body == b"ok"
            assert _closed_by_server(idle) == b""
            # the held stream outlived the idle timeout and still delivers
            status, _ = publish(
                p.publish_port, [{"channel": "iso", "formats": {"http-stream": {"content": "z\n"}}}]
            )
            assert status == 200
            assert held.read_until(b"z\n").endswith(b"z\n")
    finally:
        streams.stop()


def test_publish_listener_has_the_same_timeouts() -> None:
    with running_proxy(client_header_timeout=0.5, keepalive_timeout=0.5) as proxy:
        slow = RawClient(proxy.publish_port)
        slow.send(b"POST /publish/ HTTP/1.1\r\n")
        assert _closed_by_server(slow).startswith(b"HTTP/1.1 408 ")
        idle = RawClient(proxy.publish_port)
        idle.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = idle.read_response()
        assert head.startswith(b"HTTP/1.1 200 ")
        assert _closed_by_server(idle) == b""


def test_publish_listener_connection_cap() -> None:
    with running_proxy(max_publish_connections=2) as proxy:
        first = RawClient(proxy.publish_port)
        second = RawClient(proxy.publish_port)
        for c in (first, second):
            c.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _ = c.read_response()
            assert head.startswith(b"HTTP/1.1 200 ")
        third = RawClient(proxy.publish_port)
        answer = third.read_to_close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        first.close()
        second.close()

        def serves() -> bool:
            try:
                status, _ = publish(
                    proxy.publish_port,
                    [{"channel": "x", "formats": {"http-stream": {"content": "x"}}}],
                )
            except (OSError, ValueError, IndexError):
                return False
            return status == 200

        wait_for(serves)


# --- at the descriptor limit (a real `gripcore serve` under a low RLIMIT_NOFILE) -----------------

NOFILE = 200


def _low_nofile() -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))


class _Serve:
    """`gripcore serve` under NOFILE descriptors, its log collected as it is written."""

    def __init__(self, adapter: str, *args: str) -> None:
        from .test_serve_process import start_serve

        self.proc, self.port, self.publish_port = start_serve(
            "--adapter", adapter, "--max-publish-connections", "8", *args, preexec_fn=_low_nofile
        )
        self.lines: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._drainer.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def serves_a_new_client(self) -> bool:
        try:
            client = RawClient(self.port, timeout=2)
            client.get("/")
            head, _ = client.read_response(timeout=2)
            client.close()
        except OSError:
            return False
        # served: the starter kit's page, or the origin's 502 (not the 503 of a full house)
        return head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.1 502 "))


def _metric(port: int, name: str) -> float:
    client = RawClient(port)
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    _, body = client.read_response()
    client.close()
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_max_connections_fits_the_descriptor_limit(proxy_adapter: str) -> None:
    serve = _Serve(proxy_adapter)
    clients: list[RawClient] = []
    try:
        # NOFILE 200, minus 64 kept back and 8 publish connections: 128, half for origins
        clients.extend(RawClient(serve.port) for _ in range(98))
        refused = 0
        for client in clients[64:]:
            assert client.read_to_close().startswith(b"HTTP/1.1 503 ")
            refused += 1
        assert refused == 34
        # the publish API is served meanwhile
        status, _ = publish(
            serve.publish_port, [{"channel": "x", "formats": {"http-stream": {"content": "x"}}}]
        )
        assert status == 200
        for client in clients:
            client.close()
        wait_for(serve.serves_a_new_client)
        assert _metric(serve.publish_port, "gripcore_accept_pauses_total") == 0
        assert len(serve.lines) < 100, "".join(serve.lines[-20:])
    finally:
        serve.stop()


def test_out_of_descriptors_the_listener_pauses_and_logs_once(proxy_adapter: str) -> None:
    """Each proxied request holds a descriptor toward its origin as well (this origin accepts
    and never answers). --max-connections is fitted at start so that this cannot exhaust the
    descriptors; here the limit is lowered under the running process (as `prlimit` by an
    operator would), so accepts fail with EMFILE and the listener must back off."""
    black_hole = socket.create_server(("127.0.0.1", 0), backlog=1024)
    serve = _Serve(proxy_adapter, "--route", f"* 127.0.0.1:{black_hole.getsockname()[1]}")
    resource.prlimit(serve.proc.pid, resource.RLIMIT_NOFILE, (120, 120))  # fitted for 200
    clients: list[RawClient] = []
    try:
        for _ in range(100):  # 64 held at the origin (with as many origin sockets), 36 get 503
            client = RawClient(serve.port)
            client.get("/")
            clients.append(client)

        def accepts_fail() -> bool:
            clients.append(RawClient(serve.port))  # the kernel completes it; accept() fails
            return any("cannot accept" in line for line in serve.lines)

        wait_for(accepts_fail, timeout=15)
        time.sleep(1.0)  # a second out of descriptors: time to spin, if it would
        log = [line for line in serve.lines if "cannot accept" in line]
        assert len(log) <= 2, "".join(log[:5])  # once per listener per interval
        assert len(serve.lines) < 400, "".join(serve.lines[-20:])
        for client in clients:
            client.close()
        black_hole.close()
        wait_for(serve.serves_a_new_client, timeout=15)
        assert _metric(serve.publish_port, "gripcore_accept_pauses_total") >= 1
    finally:
        serve.stop()
        black_hole.close()
