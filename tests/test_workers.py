"""`gripcore serve --workers N` as real processes: clients spread over the workers, every
publish reaching all of them in one order, signals reaching every worker, crashes and a lost
supervisor ending everything, and no process left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .e2e_support import Origin, RawClient, publish
from .test_serve_process import start_serve

pytestmark = pytest.mark.e2e

CHANNEL = "w"


def hold_origin() -> Origin:
    return Origin(
        routes={
            "/hold": lambda r: (200, [("Grip-Hold", "stream"), ("Grip-Channel", CHANNEL)], b""),
            "/x": lambda r: (200, [("Content-Type", "text/plain")], b"first\n"),
        }
    ).start()


def workers_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped by a live parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_gone(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)


def stream_connections(publish_port: int) -> int:
    """Held streams of worker 0 (it answers the publish API, so /metrics is its view)."""
    with socket.create_connection(("127.0.0.1", publish_port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b"\ngripcore_workers 2\n" in data
    match = re.search(rb'gripcore_connections\{transport="stream"\} (\d+)', data)
    assert match is not None
    return int(match.group(1))


def hold(port: int) -> RawClient:
    client = RawClient(port)
    client.get("/hold")
    head = client.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    return client


def spread_clients(port: int, publish_port: int) -> list[RawClient]:
    """Held streams until both workers hold some (the kernel hashes each connect to one)."""
    clients = [hold(port) for _ in range(8)]
    while True:
        on_worker0 = stream_connections(publish_port)
        if 0 < on_worker0 < len(clients):
            return clients
        assert len(clients) < 64, "every connection went to one worker"
        clients.append(hold(port))


@pytest.fixture
def two_workers() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    with serve_two_workers() as served:
        yield served


@contextlib.contextmanager
def serve_two_workers(*extra: str) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    origin = hold_origin()
    proc, port, publish_port = start_serve(
        "--workers", "2", "--route", f"* 127.0.0.1:{origin.port}", *extra
    )
    try:
        yield proc, port, publish_port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=10)
        if proc.poll() is None:
            for pid in workers_of(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.communicate()
        origin.stop()


def item(content: str, **fields: str) -> dict[str, object]:
    return {"channel": CHANNEL, **fields, "formats": {"http-stream": {"content": content}}}


def chunk(content: str) -> bytes:
    return f"{len(content):x}\r\n{content}\r\n".encode()


def test_every_publish_reaches_the_clients_of_every_worker_in_one_order(
    two_workers: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, port, publish_port = two_workers
    assert len(workers_of(proc.pid)) == 2
    clients = spread_clients(port, publish_port)
    # one batch with a duplicate id and a prev-id chain, then single posts in sequence
    status, _ = publish(
        publish_port,
        [
            item("a\n", id="1"),
            item("dup\n", id="1"),  # same id: dropped by every worker
            item("b\n", id="2", **{"prev-id": "1"}),
        ],
    )
    assert status == 200
    for n in range(20):
        assert publish(publish_port, [item(f"m{n}\n")])[0] == 200
    expected = chunk("a\n") + chunk("b\n") + b"".join(chunk(f"m{n}\n") for n in range(20))
    for client in clients:
        assert client.read_until(chunk("m19\n")) == expected
    # a later duplicate of an id still in every worker's id cache reaches nobody
    assert publish(publish_port, [item("again\n", id="2"), item("end\n")])[0] == 200
    for client in clients:
        assert client.read_until(chunk("end\n")) == chunk("end\n")


PULL_PATH = f"/tmp/gripcore-test-workers-pull-{os.getpid()}"


def test_zeromq_items_reach_the_clients_of_every_worker() -> None:
    zmq = pytest.importorskip("zmq")
    with serve_two_workers("--push-in-spec", f"ipc://{PULL_PATH}") as (_, port, publish_port):
        _zeromq_to_every_worker(zmq, port, publish_port)


def _zeromq_to_every_worker(zmq: Any, port: int, publish_port: int) -> None:
    clients = spread_clients(port, publish_port)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    try:
        push.linger = 0
        push.connect(f"ipc://{PULL_PATH}")  # bound by worker 0, with the publish API
        for n in range(5):
            push.send(b"J" + json.dumps(item(f"z{n}\n", id=f"z{n % 3}")).encode())
    finally:
        push.close(linger=5000)
        context.term()
    expected = chunk("z0\n") + chunk("z1\n") + chunk("z2\n")  # z3, z4: ids seen already
    assert publish(publish_port, [item("end\n")])[0] == 200
    for client in clients:
        assert client.read_until(chunk("end\n")) == expected + chunk("end\n")


def test_sigterm_ends_every_worker_cleanly(
    two_workers: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, port, publish_port = two_workers
    pids = workers_of(proc.pid)
    clients = spread_clients(port, publish_port)
    proc.send_signal(signal.SIGTERM)
    for client in clients:  # each worker ends its own streams with the last chunk
        assert client.read_to_close().endswith(b"0\r\n\r\n")
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "ERROR" not in stderr and "Traceback" not in stderr
    wait_gone(pids)


def test_json_log_lines_name_their_worker() -> None:
    """--log-format json with --workers: every line is one JSON object, and each worker's lines
    say which worker wrote them."""
    with serve_two_workers("--log-format", "json") as (proc, port, publish_port):
        clients = spread_clients(port, publish_port)
        proc.send_signal(signal.SIGTERM)
        for client in clients:
            client.read_to_close()
        _, stderr = proc.communicate(timeout=10)
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(doc) for doc in lines)
    assert {doc.get("worker") for doc in lines} >= {0, 1}


def test_sighup_reloads_routes_in_every_worker(tmp_path: Path) -> None:
    first = hold_origin()
    second = Origin(
        routes={"/x": lambda r: (200, [("Content-Type", "text/plain")], b"second\n")}
    ).start()
    routes = tmp_path / "routes"
    routes.write_text(f"* 127.0.0.1:{first.port}\n")
    proc, port, publish_port = start_serve("--workers", "2", "--routes", str(routes))
    try:
        spread_clients(port, publish_port)  # both workers are up and serving
        routes.write_text(f"* 127.0.0.1:{second.port}\n")
        proc.send_signal(signal.SIGHUP)
        # new connections, hashed over both workers: 32 in a row from the new origin (a worker
        # that missed the reload would answer "first" about every other time)
        deadline = time.monotonic() + 10
        in_a_row = 0
        while in_a_row < 32:
            assert time.monotonic() < deadline, "not every worker reloaded its routes"
            c = RawClient(port)
            c.get("/x")
            in_a_row = in_a_row + 1 if c.read_response()[1] == b"second\n" else 0
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        first.stop()
        second.stop()
    assert proc.returncode == 0


def test_a_worker_crash_stops_the_server_with_an_error(
    two_workers: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, port, publish_port = two_workers
    _, worker1 = pids = workers_of(proc.pid)
    clients = spread_clients(port, publish_port)
    on_worker0 = stream_connections(publish_port)
    os.kill(worker1, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert f"worker 1 (pid {worker1}) exited on signal 9; stopping the other workers" in stderr
    wait_gone(pids)
    # worker 0 was stopped: its streams end with the last chunk; worker 1's were cut short
    ended = [client.read_to_close(timeout=10).endswith(b"0\r\n\r\n") for client in clients]
    assert sum(ended) == on_worker0


def test_workers_stop_when_the_supervisor_is_gone(
    two_workers: tuple[subprocess.Popen[str], int, int],
) -> None:
    proc, port, publish_port = two_workers
    pids = workers_of(proc.pid)
    clients = spread_clients(port, publish_port)
    proc.kill()  # SIGKILL: nothing forwards anything
    proc.communicate(timeout=10)
    wait_gone(pids)
    for client in clients:
        assert client.read_to_close().endswith(b"0\r\n\r\n")


def test_a_port_in_use_fails_the_start() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gripcore",
                "serve",
                "--workers",
                "2",
                "--listen",
                f"127.0.0.1:{port}",
                "--publish-listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert "gripcore serve: cannot start: " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--adapter", "gevent"], 2, "only the asyncio adapter runs several workers"),
        (["--routes", "/nonexistent/routes"], 2, "cannot start"),
        (
            ["--push-in-sub-spec", "tcp://127.0.0.1:*"],
            2,
            "--push-in-sub-spec: not available with --workers above 1",
        ),
    ],
)
def test_what_workers_cannot_do_is_refused(args: list[str], status: int, message: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gripcore",
            "serve",
            "--workers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == status
    assert message in result.stderr
    assert "Traceback" not in result.stderr
