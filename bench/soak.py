"""Soak: open and close many SSE connections in cycles while publishing; watch proxy memory.

Strategy. One ``gripcore serve`` process (with ``bench/origin.py`` as its origin) runs for the
whole soak, so anything a connection leaves behind accumulates. Each cycle:

1. the compiled load client (``bench/loadclient.c``, ``sub`` mode, one process per cycle) opens
   ``--conns`` SSE connections to ``/stream/bench`` at ``--rate`` per second;
2. once the proxy's ``/metrics`` counts them all as subscribed, ``--messages`` items are
   published (one ``POST /publish/`` each, sequence numbers continuing across cycles) and the
   client checks that every open connection received every one of them, in order;
3. the client closes every connection (RST, as ``run_bench.py`` does) and exits;
4. the script polls ``GET /metrics`` on the publish port until
   ``gripcore_connections{transport="stream"}`` and ``gripcore_subscriptions`` are back to 0,
   then records the proxy's resident memory (``VmRSS`` in ``/proc/PID/status``) and its open
   file descriptors (``/proc/PID/fd``).

The first cycle warms caches, pools and the allocator's arenas, so the verdict compares cycle
2 with the last: memory is "flat" when it grew by less than ``FLAT_MB_PER_CYCLE`` per cycle.

Every wait is bounded (the client has its own ``--max-time``; metric polls have deadlines);
loopback only; every process started here is in its own session and is killed in ``finally``.

Run: ``.venv/bin/python bench/soak.py [--cycles 10] [--conns 10000] [--rate 3000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Run as a script (``python bench/soak.py``): this directory is on sys.path.
import run_bench as rb

CHANNEL = rb.CHANNEL
# Verdict threshold: growth per cycle below this many MB (after the warm-up cycle) is "flat".
FLAT_MB_PER_CYCLE = 1.0
# Longest wait for the proxy to count a cycle's connections as subscribed, or as gone.
METRICS_TIMEOUT = 60.0
# Poll interval for /metrics while waiting.
METRICS_POLL = 0.2
# Pause after the counts reach 0 before reading memory: lets deferred frees (closing
# transports, callbacks scheduled by close) run first.
SETTLE = 1.0
# Largest /metrics answer read (it is a few KB; a bound, not an expectation).
MAX_METRICS_ANSWER = 1 << 20
# Most connections per cycle: the load client's own limit (one fd each, ~19,000 allowed).
MAX_CONNS = 18000


@dataclass
class Cycle:
    """The figures of one cycle."""

    cycle: int
    opened: int
    errors: int  # connections that failed to open or were closed by the proxy
    publish_errors: int
    delivered: int
    expected: int
    missing: int
    gone_s: float  # from the client's exit to the proxy reporting 0 connections
    rss_mb: float
    fds: int
    load1: float


# ---------------------------------------------------------------- the proxy and its metrics


@contextmanager
def run_gripcore(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    """Origin + ``gripcore serve`` on fresh loopback ports; yields (process, http, publish)."""
    with rb.origin(workdir) as (origin_port, _origin_pid):
        http_port, publish_port = rb.free_port(), rb.free_port()
        args = [
            str(rb.VENV_BIN / "gripcore"),
            "serve",
            "--listen",
            f"127.0.0.1:{http_port}",
            "--publish-listen",
            f"127.0.0.1:{publish_port}",
            "--route",
            f"* 127.0.0.1:{origin_port}",
            "--log-level",
            "warning",
            "--shutdown-grace",
            "1",
        ]
        # gripcore reads GRIPCORE_* settings from the environment: run it with defaults only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIPCORE_")}
        proc = rb.spawn(args, workdir / "gripcore.log", env)
        try:
            rb.wait_port(publish_port)
            rb.wait_port(http_port)
            yield proc, http_port, publish_port
        finally:
            rb.kill_group(proc, signal.SIGTERM)


def metrics(publish_port: int) -> dict[str, float]:
    """``GET /metrics`` (``Connection: close``): every sample line as {name-with-labels: value}."""
    request = (
        f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{publish_port}\r\nConnection: close\r\n\r\n"
    )
    data = b""  # the answer is a few KB: concatenation stays cheap
    with socket.create_connection(("127.0.0.1", publish_port), timeout=10) as sock:
        sock.sendall(request.encode())
        # Read by Content-Length: the publish listener says "Connection: close" but leaves the
        # connection open, so EOF never comes; this side closes it.
        while len(data) <= MAX_METRICS_ANSWER and not answer_complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200") or not answer_complete(data):
        raise RuntimeError(f"/metrics answered {head[:40]!r}, {len(body)} body bytes")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def answer_complete(data: bytes) -> bool:
    """Whether `data` holds a whole response head and its Content-Length body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def wait_metrics(publish_port: int, want_stream: int, want_subs: int) -> tuple[bool, float]:
    """Poll until the stream-connection and subscription gauges equal the wanted values.

    Returns (reached, seconds waited); gives up after METRICS_TIMEOUT.
    """
    t0 = time.monotonic()
    deadline = t0 + METRICS_TIMEOUT
    while True:
        m = metrics(publish_port)
        stream = m.get('gripcore_connections{transport="stream"}', -1)
        subs = m.get("gripcore_subscriptions", -1)
        if stream == want_stream and subs == want_subs:
            return True, time.monotonic() - t0
        if time.monotonic() >= deadline:
            print(
                f"  /metrics: stream={stream:.0f} subscriptions={subs:.0f}, wanted "
                f"{want_stream}/{want_subs} after {METRICS_TIMEOUT:.0f} s",
                file=sys.stderr,
            )
            return False, time.monotonic() - t0
        time.sleep(METRICS_POLL)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# ---------------------------------------------------------------- one cycle


def publish(publish_port: int, seqs: range) -> int:
    """Publish one item per sequence number, one POST each; returns the failed POSTs."""
    conn = rb.HttpConn(publish_port)
    errors = 0
    try:
        for seq in seqs:
            status = conn.request(
                rb.publish_request("gripcore", publish_port, "sse", range(seq, seq + 1)), 10.0
            )
            errors += not 200 <= status < 300
    finally:
        conn.close()
    return errors


def run_cycle(
    args: argparse.Namespace,
    exe: Path,
    pid: int,
    http_port: int,
    publish_port: int,
    number: int,
    first_seq: int,
) -> Cycle:
    sub = [
        "sub",
        "--port",
        str(http_port),
        "--path",
        f"/stream/{CHANNEL}",
        "--conns",
        str(args.conns),
        "--rate",
        str(args.rate),
        "--connect-timeout",
        "10",
        "--drain-timeout",
        "10",
    ]
    client = rb.Client(exe, sub, max_time=args.conns / args.rate + METRICS_TIMEOUT + 60)
    try:
        ready = client.ready()
        opened = ready["conns_opened"]
        wait_metrics(publish_port, opened, opened)  # every connection subscribed
        seqs = range(first_seq, first_seq + args.messages)
        publish_errors = publish(publish_port, seqs)
        summary = client.finish(seqs[0], seqs[-1])
    finally:
        client.kill()
    gone, gone_s = wait_metrics(publish_port, 0, 0)
    if not gone:
        print(f"  cycle {number}: the proxy still counts connections", file=sys.stderr)
    time.sleep(SETTLE)
    return Cycle(
        cycle=number,
        opened=opened,
        errors=summary["conns_failed"] + summary["closed_after_open"],
        publish_errors=publish_errors,
        delivered=summary["messages_in_order"] + summary["out_of_order"],
        expected=opened * args.messages,
        missing=summary["missing"],
        gone_s=gone_s if gone else float("nan"),
        rss_mb=rss_mb(pid),
        fds=open_fds(pid),
        load1=load1(),
    )


# ---------------------------------------------------------------- report


def table(cycles: Sequence[Cycle], rss0: float, fds0: int) -> str:
    lines = [
        "| cycle | opened | errors | delivered | missing | gone after s | RSS MB | fds | load1 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| start | - | - | - | - | - | {rss0:.1f} | {fds0} | - |",
    ]
    lines.extend(
        f"| {c.cycle} | {c.opened:,} | {c.errors + c.publish_errors:,} | "
        f"{c.delivered:,} / {c.expected:,} | {c.missing:,} | {c.gone_s:.1f} | "
        f"{c.rss_mb:.1f} | {c.fds} | {c.load1:.2f} |"
        for c in cycles
    )
    return "\n".join(lines)


def verdict(cycles: Sequence[Cycle]) -> str:
    """RSS growth from cycle 2 to the last; flat when under FLAT_MB_PER_CYCLE per cycle."""
    if len(cycles) < 3:
        return "verdict: n/a (needs 3 cycles or more: cycle 1 is warm-up)"
    growth = cycles[-1].rss_mb - cycles[1].rss_mb
    per_cycle = growth / (len(cycles) - 2)
    fds = cycles[-1].fds - cycles[1].fds
    flat = "FLAT" if per_cycle < FLAT_MB_PER_CYCLE else "GROWING"
    total = sum(c.opened for c in cycles)
    clean = all(c.errors == c.publish_errors == c.missing == 0 for c in cycles)
    return (
        f"verdict: {flat}: RSS {growth:+.1f} MB from cycle 2 to cycle {cycles[-1].cycle} "
        f"({per_cycle:+.2f} MB/cycle; flat means < {FLAT_MB_PER_CYCLE:g}); fds {fds:+d}; "
        f"{total:,} connections opened and closed; "
        f"{'no errors, nothing missing' if clean else 'ERRORS or MISSING messages, see table'}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak gripcore: open and close SSE connections in cycles, watch memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument(
        "--conns", type=int, default=10000, help=f"connections per cycle (<= {MAX_CONNS})"
    )
    p.add_argument("--rate", type=float, default=3000.0, help="connections opened per second")
    p.add_argument("--messages", type=int, default=3, help="items published per cycle")
    p.add_argument("--out", help="also write every figure here (JSON)")
    args = p.parse_args(argv)
    if not 1 <= args.cycles <= 1000:
        p.error("--cycles must be 1..1000")
    if not 1 <= args.conns <= MAX_CONNS:
        p.error(f"--conns must be 1..{MAX_CONNS}")
    if not 1 <= args.messages <= 1000 or args.rate <= 0:
        p.error("--messages must be 1..1000 and --rate positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, rb.MAX_FDS + 500), hard))
    machine = rb.machine_info()
    print(json.dumps(machine, indent=1), flush=True)
    cycles: list[Cycle] = []
    with tempfile.TemporaryDirectory(prefix="gripcore-soak-") as tmp:
        workdir = Path(tmp)
        exe = rb.build_client(workdir)
        with run_gripcore(workdir) as (proc, http_port, publish_port):
            time.sleep(SETTLE)
            rss0, fds0 = rss_mb(proc.pid), open_fds(proc.pid)
            seq = 1
            for n in range(1, args.cycles + 1):
                c = run_cycle(args, exe, proc.pid, http_port, publish_port, n, seq)
                seq += args.messages
                cycles.append(c)
                print(
                    f"  cycle {n}: opened {c.opened:,}, errors {c.errors + c.publish_errors}, "
                    f"missing {c.missing}, RSS {c.rss_mb:.1f} MB, fds {c.fds}",
                    file=sys.stderr,
                    flush=True,
                )
                if proc.poll() is not None:
                    raise RuntimeError(f"gripcore exited with {proc.returncode}")
        log = (workdir / "gripcore.log").read_text(errors="replace").splitlines()
    report = "\n".join([table(cycles, rss0, fds0), "", verdict(cycles)])
    print(report)
    print(f"uptime after: {rb.machine_info()['uptime_load']}")
    if log:
        print(f"gripcore log: {len(log)} lines (warning and above); last: {log[-1][:200]}")
    if args.out:
        results: dict[str, Any] = {
            "machine": machine,
            "args": vars(args),
            "start": {"rss_mb": rss0, "fds": fds0},
            "cycles": [asdict(c) for c in cycles],
            "report": report,
        }
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
