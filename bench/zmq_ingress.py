"""Publish ingress over ZeroMQ: items/s a proxy takes on its PULL socket (push_in_spec).

One PUSH socket sends N items, one item per message, to a channel nobody is subscribed to,
then one last item to a channel a stream subscriber holds. A PUSH socket's messages arrive in
order, so when the subscriber receives the last item the proxy has taken all N: items/s is
N / (time from the first send to that delivery). Run against gripcore (asyncio or gevent
adapter) and, when it can be started, Pushpin (../shared/tools/run-pushpin), in one run.

    .venv/bin/python bench/zmq_ingress.py [--items 100000] [--no-pushpin]

Ports: gripcore 21999 (HTTP), 21561 (publish API), 21560 (PULL); Pushpin 24999/24561, PULL
24560; the origin 21191.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent
RUN_PUSHPIN = ROOT.parent / "shared" / "tools" / "run-pushpin"
ORIGIN_PORT = 21191
GRIPCORE_HTTP, GRIPCORE_PUBLISH, GRIPCORE_PULL = 21999, 21561, 21560
PUSHPIN_HTTP, PUSHPIN_PUBLISH, PUSHPIN_PULL = 24999, 24561, 24560


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _subscribe(http_port: int, timeout: float = 30.0) -> socket.socket:
    """A stream subscriber on channel `end` (the origin holds every GET on its channel)."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.create_connection(("127.0.0.1", http_port))
        sock.sendall(b"GET /end HTTP/1.1\r\nHost: bench\r\n\r\n")
        sock.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        if head.startswith(b"HTTP/1.1 200"):
            return sock
        sock.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stream from port {http_port}: {head[:100]!r}")
        time.sleep(0.2)


def _frame(channel: str, content: str) -> bytes:
    item = {"channel": channel, "formats": {"http-stream": {"content": content}}}
    return b"J" + json.dumps(item, separators=(",", ":")).encode()


def measure(pull_port: int, http_port: int, items: int) -> float:
    """Items/s taken by the proxy whose PULL socket is at `pull_port`."""
    subscriber = _subscribe(http_port)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{pull_port}")
    try:
        # the subscription reaches a separate handler process (Pushpin) a moment later: wait
        # until a marker published to `end` comes back
        subscriber.settimeout(0.5)
        while True:
            push.send(_frame("end", "ready\n"))
            try:
                if b"ready" in subscriber.recv(4096):
                    break
            except TimeoutError:
                continue
        subscriber.settimeout(60)
        frame = _frame("nobody", "data: x\n\n")
        start = time.perf_counter()
        for _ in range(items):
            push.send(frame)
        push.send(_frame("end", "done\n"))
        received = b""
        while b"done" not in received:
            received += subscriber.recv(65536)
        elapsed = time.perf_counter() - start
    finally:
        push.close(linger=0)
        context.term()
        subscriber.close()
    return items / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--no-pushpin", action="store_true")
    args = parser.parse_args()
    origin = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "origin.py"),
            "--port",
            str(ORIGIN_PORT),
            "--channel",
            "end",
        ]
    )
    results: dict[str, float] = {}
    try:
        _wait_port(ORIGIN_PORT)
        for adapter in ("asyncio", "gevent"):
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gripcore",
                    "serve",
                    "--adapter",
                    adapter,
                    "--listen",
                    f"127.0.0.1:{GRIPCORE_HTTP}",
                    "--publish-listen",
                    f"127.0.0.1:{GRIPCORE_PUBLISH}",
                    "--route",
                    f"* 127.0.0.1:{ORIGIN_PORT}",
                    "--push-in-spec",
                    f"tcp://127.0.0.1:{GRIPCORE_PULL}",
                    "--log-level",
                    "error",
                ]
            )
            try:
                _wait_port(GRIPCORE_PUBLISH)
                results[f"gripcore ({adapter})"] = measure(GRIPCORE_PULL, GRIPCORE_HTTP, args.items)
            finally:
                proxy.terminate()
                proxy.wait(30)
        if not args.no_pushpin and RUN_PUSHPIN.exists():
            workdir = "/tmp/ref-pushpin-zmq-bench"
            target = f"127.0.0.1:{ORIGIN_PORT},over_http"
            started = subprocess.run(
                [
                    "bash",
                    str(RUN_PUSHPIN),
                    "start",
                    target,
                    str(PUSHPIN_HTTP),
                    str(PUSHPIN_PUBLISH),
                    workdir,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if started.returncode == 0:
                try:
                    _wait_port(PUSHPIN_HTTP)
                    results["pushpin"] = measure(PUSHPIN_PULL, PUSHPIN_HTTP, args.items)
                finally:
                    subprocess.run(["bash", str(RUN_PUSHPIN), "stop", workdir], check=False)
            else:
                print(f"pushpin not started: {started.stderr.strip()[-200:]}", file=sys.stderr)
    finally:
        origin.terminate()
        origin.wait(30)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; "
        f"Python {platform.python_version()}, pyzmq {zmq.__version__} (libzmq "
        f"{zmq.zmq_version()}); {args.items:,} items, one per message, no subscribers"
    )
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
